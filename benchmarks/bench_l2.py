"""Benchmark: L1 -> L2 for one full SCA (4096 x 4096 frame), MA table 4, per fitter.

First simulates one full-SCA L1 (the scene of ``bench_l1.py``: sky, 400
bright stars, cosmic rays; synthetic detector) and keeps it in a temporary
file.  Then, for each ramp fitter, a fresh process loads (or compiles) the
compiled kernels on a small frame, then calibrates the SCA tile by tile
exactly as the survey graph does (``calibrate_frame``: the reference-pixel
reduction, then one block per tile with its halo) and prints, in core-seconds
(CPU time of the process, one thread):

* the kernels' load or compilation (on the small frame, before the SCA);
* the whole calibration of the SCA, and its parts: the detector model's
  reference data (each block's region and bias correction, and the
  reference rows' region), the rest of the exposure's reference-pixel
  reduction, steps 1-6 (saturation, reference pixels, bias,
  linearity, gain, IPC: one compiled pass), the ramp fit, the output pass
  (local rate, dark, flat, area, dq), and the rest (the Python around them);
* the total beyond the reference data;
* peak RSS of that process.

    python benchmarks/bench_l2.py [--tile 1024] [--fitters fixed,ols_cas22,likely]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def simulate(path: Path, tile: int) -> None:
    sys.path.insert(0, str(HERE))
    from bench_l1 import scene

    from romandask import rng
    from romandask.config import DetectorConfig
    from romandask.detector.l1 import L1Tile, simulate_tile
    from romandask.detector.model import detector_model
    from romandask.detector.readout import make_readout
    from romandask.instrument.matables import MATable
    from romandask.pipeline import frame_edges

    window, table, seed = 4088, MATable.numbered(4), 5
    det = DetectorConfig(window=window, tile=tile)
    model = detector_model(det, seed, 1)
    expected = scene(window, 0.7, table.exposure_time)
    readout = make_readout(model, table, rng.generator(seed, "readout", 1, 1), 8.0)
    n = window + 8
    data = np.zeros((table.nresultants, n, n), np.uint16)
    edges = frame_edges(window, tile)
    for ty, rows in enumerate(edges):
        for tx, cols in enumerate(edges):
            spec = L1Tile(seed, 1, 1, ty * len(edges) + tx, rows, cols, window, table,
                          table.nresultants)
            block = expected[rows[0]:rows[1] + 2, cols[0]:cols[1] + 2]
            d, _ = simulate_tile(spec, model, block, readout)
            data[:, rows[0]:rows[1], cols[0]:cols[1]] = d
    np.savez(path, data=data, amp33=readout.amp33)


PARTS = ("reference data", "reference rows", "steps 1-6", "ramp fit", "output")


def calibrate(path: Path, fitter: str, tile: int) -> None:
    from romandask.calibrate import core, steps
    from romandask.calibrate.core import CalOptions, calibrate_frame
    from romandask.config import DetectorConfig
    from romandask.detector import l1 as l1mod
    from romandask.detector.model import detector_model
    from romandask.instrument.matables import MATable

    f = np.load(path)
    data, amp33 = f["data"], f["amp33"]
    table = MATable.numbered(4)
    options = CalOptions(fitter=fitter)
    # load (or compile) the kernels on a small synthetic frame, outside the timing
    t = time.process_time()
    small = detector_model(DetectorConfig(window=64, tile=tile), 5, 1)
    calibrate_frame(np.full((table.nresultants, 72, 72), 10000, np.uint16), None, small, table,
                    options, tile=32)
    warm = time.process_time() - t

    model = detector_model(DetectorConfig(window=4088, tile=tile), 5, 1)
    clock = dict.fromkeys(PARTS, 0.0)
    inner = [0.0]   # time of the timed calls within the current one

    def timed(name, fn):
        # each part's own time: a timed call within another counts for its own part
        def wrapper(*a, **k):
            outer, inner[0] = inner[0], 0.0
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent = time.process_time() - t
                clock[name] += spent - inner[0]
                inner[0] = outer + spent
        return wrapper

    core.extended_region = timed("reference data", l1mod.extended_region)
    model.region = timed("reference data", model.region)
    model.biascorr = timed("reference data", model.biascorr)
    core.exposure_reference = timed("reference rows", core.exposure_reference)
    steps.raw_to_collected_charge = timed("steps 1-6", steps.raw_to_collected_charge)
    core.fit_ramp = timed("ramp fit", core.fit_ramp)
    core._finish = timed("output", core._finish)
    t0 = time.process_time()
    w0 = time.perf_counter()
    out = calibrate_frame(data, amp33, model, table, options, tile=tile)
    total = time.process_time() - t0
    wall = time.perf_counter() - w0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    finite = np.isfinite(out["data"]).mean()
    jumps = ((out["dq"] & 4) != 0).mean()
    rest = total - sum(clock.values())
    parts = " + ".join(f"{name} {clock[name]:.2f}" for name in PARTS)
    print(f"{fitter:>10}: {total:6.2f} core-s ({wall:5.1f} s wall) = {parts} + rest {rest:.2f}; "
          f"beyond the reference data {total - clock['reference data']:.2f} core-s; kernels "
          f"loaded or compiled in {warm:.1f} core-s before; peak RSS {rss:6.0f} MiB; "
          f"{finite:.4f} of pixels with a rate, {jumps:.4f} with jumps", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--fitters", default="fixed,ols_cas22,likely")
    p.add_argument("--calibrate", nargs=2, metavar=("FILE", "FITTER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.calibrate:
        calibrate(Path(args.calibrate[0]), args.calibrate[1], args.tile)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l1.npz"
        t = time.perf_counter()
        simulate(path, args.tile)
        print(f"simulated one full-SCA L1 (MA table 4) in {time.perf_counter() - t:.0f} s",
              flush=True)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        for fitter in args.fitters.split(","):
            # each fitter in a fresh process: its own peak RSS, and numba caches loaded
            subprocess.run([sys.executable, __file__, "--tile", str(args.tile), "--calibrate",
                            str(path), fitter], check=True, env=env)


if __name__ == "__main__":
    main()

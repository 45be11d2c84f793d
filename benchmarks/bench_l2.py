"""Benchmark: L1 -> L2 for one full SCA (4096 x 4096 frame), MA table 4, per fitter.

First simulates one full-SCA L1 (the scene of ``bench_l1.py``: sky, 400
bright stars, cosmic rays; synthetic detector) and keeps it in a temporary
file.  Then, for each ramp fitter, a fresh process calibrates it tile by tile
exactly as the survey graph does (``calibrate_frame``: the reference-pixel
reduction, then one block per tile with its halo) and prints:

* core-seconds of the whole calibration, and of its parts: the detector
  model's reference data (read from the SCA's store, drawn there by the L1
  stage), the steps before the fit (saturation, reference pixels, bias,
  linearity, IPC), the ramp fit, and the rest;
* peak RSS of that process.

Before the fitters, it prints what the same reference data cost drawn
lazily per calibration tile, as a run without the store did (``--no-lazy``
skips it).  CPU time (``time.process_time``) is what is measured.

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


SEED, SCA, WINDOW = 5, 1, 4088


def simulate(path: Path, tile: int, store: Path) -> None:
    sys.path.insert(0, str(HERE))
    from bench_l1 import scene

    from romandask import rng
    from romandask.detector.l1 import L1Tile, simulate_tile
    from romandask.detector.readout import make_readout
    from romandask.detector.stored import stored_model
    from romandask.instrument.matables import MATable
    from romandask.pipeline import frame_edges

    window, table, seed = WINDOW, MATable.numbered(4), SEED
    model = stored_model(seed, SCA, window, store)
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


def lazy_reference_data(tile: int) -> float:
    """Core-s of every calibration tile's reference data drawn lazily (no store)."""
    from romandask.calibrate.core import HALO, science_part
    from romandask.detector.l1 import extended_region, grown_rectangle
    from romandask.detector.reference import SyntheticModel
    from romandask.instrument.matables import MATable

    model, table, n = SyntheticModel(SEED, SCA, WINDOW), MATable.numbered(4), WINDOW + 8
    t = time.process_time()
    for y0 in range(0, n, tile):
        for x0 in range(0, n, tile):
            rows, cols = (y0, min(y0 + tile, n)), (x0, min(x0 + tile, n))
            if science_part(rows, cols, n) is None:
                continue
            extended_region(model, rows, cols, HALO)
            model.biascorr(*grown_rectangle(rows, cols, HALO, n)[0], table)
    return time.process_time() - t


def calibrate(path: Path, fitter: str, tile: int, store: Path) -> None:
    from romandask.calibrate import core
    from romandask.calibrate.core import CalOptions, calibrate_frame
    from romandask.detector import l1 as l1mod
    from romandask.detector.stored import stored_model
    from romandask.instrument.matables import MATable

    f = np.load(path)
    data, amp33 = f["data"], f["amp33"]
    table = MATable.numbered(4)
    model = stored_model(SEED, SCA, WINDOW, store)  # drawn by simulate()
    # warm up the compiled kernels outside the timing
    small = CalOptions(fitter=fitter)
    clock = {"reference data": 0.0, "ramp fit": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                clock[name] += time.process_time() - t
        return wrapper

    core.extended_region = timed("reference data", l1mod.extended_region)
    model.biascorr = timed("reference data", model.biascorr)
    core.fit_ramp = timed("ramp fit", core.fit_ramp)
    t0 = time.process_time()
    w0 = time.perf_counter()
    out = calibrate_frame(data, amp33, model, table, small, tile=tile)
    total = time.process_time() - t0
    wall = time.perf_counter() - w0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    finite = np.isfinite(out["data"]).mean()
    jumps = ((out["dq"] & 4) != 0).mean()
    rest = total - clock["reference data"] - clock["ramp fit"]
    print(f"{fitter:>10}: {total:6.1f} core-s ({wall:5.1f} s wall) = reference data "
          f"{clock['reference data']:5.1f} + ramp fit {clock['ramp fit']:5.1f} + steps and "
          f"rest {rest:5.1f}; peak RSS {rss:6.0f} MiB; {finite:.4f} of pixels with a rate, "
          f"{jumps:.4f} with jumps", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--fitters", default="fixed,ols_cas22,likely")
    p.add_argument("--no-lazy", action="store_true",
                   help="skip timing the lazily drawn reference data (a run without a store)")
    p.add_argument("--calibrate", nargs=3, metavar=("FILE", "FITTER", "STORE"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.calibrate:
        calibrate(Path(args.calibrate[0]), args.calibrate[1], args.tile,
                  Path(args.calibrate[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path, store = Path(tmp) / "l1.npz", Path(tmp) / "models"
        t = time.perf_counter()
        simulate(path, args.tile, store)
        print(f"simulated one full-SCA L1 (MA table 4) in {time.perf_counter() - t:.0f} s",
              flush=True)
        if not args.no_lazy:
            print(f"without a store, the reference data drawn per calibration tile: "
                  f"{lazy_reference_data(args.tile):5.1f} core-s", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        for fitter in args.fitters.split(","):
            # each fitter in a fresh process: its own peak RSS, and numba caches loaded
            subprocess.run([sys.executable, __file__, "--tile", str(args.tile), "--calibrate",
                            str(path), fitter, str(store)], check=True, env=env)


if __name__ == "__main__":
    main()

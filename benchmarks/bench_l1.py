"""Benchmark: counts -> L1 for one full SCA (4096 x 4096 frame), MA table 4.

Runs the L1 stage of one SCA tile by tile in this process, exactly as the
survey graph does (one readout task, the SCA's detector model task, then one
task per tile with its one-pixel halo), and prints:

* core-seconds of the readout task (correlated noise, amp33, cosmic rays);
* for the synthetic model, core-seconds of drawing it into its store (once per
  SCA and run, shared by every L1 and L2 tile of every exposure), and of
  drawing each tile's reference data lazily, as a run without the store did
  (``--no-lazy`` skips that comparison);
* core-seconds per tile, split into the reference data read from the store,
  the compiled charge kernel and the finishing (bias, noise, ADC, DQ);
* the total for the SCA and the cost per pixel-read;
* peak RSS of this process.

    python benchmarks/bench_l1.py [--tile 1024] [--model synthetic|scalar] [--rate 0.7]

The scene is a sky of ``--rate`` e-/s per pixel (0.7 e-/s is the F158 zodi +
thermal level of the quick-start field) with 400 bright stars (Gaussian
cores up to 3e5 e-, so some saturate); cosmic rays at 8 /cm^2/s.  The numba
kernels are compiled (or loaded from their cache) before timing starts.
CPU time (``time.process_time``) is what is measured, not wall time.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from romandask import rng
from romandask.config import DetectorConfig, ScalarDetectorConfig
from romandask.detector import forward
from romandask.detector.l1 import L1Tile, simulate_tile
from romandask.detector.model import detector_model
from romandask.detector.readout import make_readout
from romandask.detector.stored import stored_model
from romandask.instrument.matables import MATable
from romandask.pipeline import frame_edges


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def scene(window: int, rate: float, t_exp: float, seed: int = 3) -> np.ndarray:
    """Expected electrons on the frame grown by one pixel (science pixels only)."""
    gen = np.random.default_rng(seed)
    frame = window + 8
    image = np.zeros((frame + 2, frame + 2))
    image[5:-5, 5:-5] = rate * t_exp
    y, x = np.mgrid[-6:7, -6:7]
    core = np.exp(-(x ** 2 + y ** 2) / (2 * 1.2 ** 2))
    core /= core.sum()
    for _ in range(400):
        cy, cx = gen.integers(20, frame - 20, 2)
        image[cy - 6:cy + 7, cx - 6:cx + 7] += 10 ** gen.uniform(4, 6.3) * core
    return image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--model", choices=("synthetic", "scalar"), default="synthetic")
    p.add_argument("--rate", type=float, default=0.7, help="sky e-/s per pixel [0.7]")
    p.add_argument("--sca", type=int, default=7)
    p.add_argument("--no-lazy", action="store_true",
                   help="skip timing the lazily drawn reference data (a run without a store)")
    args = p.parse_args()

    window = 4088
    table = MATable.numbered(4)
    det = DetectorConfig(window=window, tile=args.tile, model=args.model,
                         scalar=ScalarDetectorConfig())
    expected = scene(window, args.rate, table.exposure_time)

    # compile (or load) the kernels on a small tile first
    small = L1Tile(1, 0, args.sca, 0, (0, 40), (0, 40), 32, table, 9)
    simulate_tile(small, detector_model(DetectorConfig(window=32, model="scalar"), 1, 1),
                  np.zeros((42, 42)), make_readout(detector_model(
                      DetectorConfig(window=32, model="scalar"), 1, 1), table,
                      rng.generator(0, "readout", 0, 1), 0.0))
    rss0 = _peak_rss_mib()

    edges = frame_edges(window, args.tile)
    ntiles = len(edges) ** 2
    frame = window + 8

    def grown(rows, cols):
        return (slice(max(rows[0] - 1, 0), min(rows[1] + 1, frame)),
                slice(max(cols[0] - 1, 0), min(cols[1] + 1, frame)))

    with tempfile.TemporaryDirectory() as tmp:
        t_store = c_lazy = None
        if args.model == "synthetic":
            lazy = detector_model(det, 1, args.sca)
            if not args.no_lazy:
                # each tile's reference data drawn for the first time, as without a store
                c_lazy = 0.0
                for rows in edges:
                    for cols in edges:
                        t = time.process_time()
                        lazy.region(*grown(rows, cols))
                        lazy.biascorr(slice(*rows), slice(*cols), table)
                        c_lazy += time.process_time() - t
            t = time.process_time()
            model = stored_model(1, args.sca, window, Path(tmp))
            t_store = time.process_time() - t
        else:
            model = detector_model(det, 1, args.sca)

        c0 = time.process_time()
        readout = make_readout(model, table, rng.generator(1, "readout", 0, args.sca), 8.0)
        t_readout = time.process_time() - c0
        n_cr = len(readout.cosmic_rays.y)

        # split each tile's cost: reference data / kernel / the rest
        timers = {"kernel": 0.0, "reference": 0.0}
        kernel, region, biascorr = forward._ramp_kernel, model.region, model.biascorr

        def timed(name, fn):
            def wrapper(*a):
                t = time.process_time()
                try:
                    return fn(*a)
                finally:
                    timers[name] += time.process_time() - t
            return wrapper

        forward._ramp_kernel = timed("kernel", kernel)
        model.region, model.biascorr = timed("reference", region), timed("reference", biascorr)
        c_total = 0.0
        saturated = 0
        for ty, rows in enumerate(edges):
            for tx, cols in enumerate(edges):
                spec = L1Tile(1, 0, args.sca, ty * len(edges) + tx, rows, cols, window, table,
                              9)
                t = time.process_time()
                data, dq = simulate_tile(spec, model, expected[rows[0]:rows[1] + 2,
                                                                cols[0]:cols[1] + 2], readout)
                c_total += time.process_time() - t
                saturated += int((dq[-1] & 2).astype(bool).sum())
        forward._ramp_kernel = kernel
        del model.region, model.biascorr

    pix_reads = frame ** 2 * table.nreads
    rest = c_total - timers["kernel"] - timers["reference"]
    total = t_readout + c_total
    print(f"counts -> L1, one SCA (4096 x 4096), MA table 4 ({table.nresultants} resultants, "
          f"{table.nreads} reads), model {args.model}, tile {args.tile} ({ntiles} tiles), "
          f"sky {args.rate} e-/s")
    print(f"  readout task (1/f noise, amp33, {n_cr} CR deposits): {t_readout:6.2f} core-s")
    if c_lazy is not None:
        print(f"  [without a store: reference data drawn per tile:   {c_lazy:6.2f} core-s, "
              f"{c_lazy / ntiles:.2f} per tile]")
    print(f"  reference data of the tiles (read from the store):  {timers['reference']:6.2f} "
          f"core-s, {timers['reference'] / ntiles:.3f} per tile")
    print(f"  charge kernel (Poisson, CRs, IPC, non-linearity):  {timers['kernel']:6.2f} core-s"
          f"  ({timers['kernel'] / pix_reads * 1e9:.1f} ns per pixel-read)")
    print(f"  rest of the tiles (inputs, bias, noise, ADC, DQ):  {rest:6.2f} core-s")
    print(f"  total (readout + tiles):                           {total:6.2f} core-s")
    if t_store is not None:
        print(f"  detector model drawn into its store, once per SCA and run (shared with "
              f"L2 and every exposure): {t_store:6.2f} core-s")
        print(f"  total with the model drawn:                        {total + t_store:6.2f} "
              f"core-s")
    print(f"  saturated pixels in the last resultant: {saturated}")
    print(f"  peak RSS: {_peak_rss_mib():.0f} MiB (after the warm-up: {rss0:.0f} MiB)")


if __name__ == "__main__":
    main()

"""Benchmark: counts -> L1 for one full SCA (4096 x 4096 frame), MA table 4.

Runs the L1 stage of one SCA tile by tile in this process, exactly as the
survey graph does (one readout task, then one task per tile with its
one-pixel halo), and prints:

* core-seconds of the readout task (correlated noise, amp33, cosmic rays);
* core-seconds per tile, split into the detector model's reference data, the
  compiled charge kernel and the finishing steps (bias, noise, ADC);
* the total for the SCA and the cost per pixel-read;
* peak RSS of this process.

    python benchmarks/bench_l1.py [--tile 1024] [--model synthetic|scalar] [--rate 0.7]

The scene is a sky of ``--rate`` e-/s per pixel (0.7 e-/s is the F158 zodi +
thermal level of the quick-start field) with 400 bright stars (Gaussian
cores up to 3e5 e-, so some saturate); cosmic rays at 8 /cm^2/s.  The numba
kernel is compiled (or loaded from its cache) before timing starts.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from romandask import rng
from romandask.config import DetectorConfig, ScalarDetectorConfig
from romandask.detector import forward
from romandask.detector.l1 import L1Tile, simulate_tile
from romandask.detector.model import detector_model
from romandask.detector.readout import make_readout
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
    args = p.parse_args()

    window = 4088
    table = MATable.numbered(4)
    det = DetectorConfig(window=window, tile=args.tile, model=args.model,
                         scalar=ScalarDetectorConfig())
    model = detector_model(det, 1, args.sca)
    expected = scene(window, args.rate, table.exposure_time)

    # compile (or load) the kernel on a small tile first
    small = L1Tile(1, 0, args.sca, 0, (0, 40), (0, 40), 32, table, 9)
    simulate_tile(small, detector_model(DetectorConfig(window=32, model="scalar"), 1, 1),
                  np.zeros((42, 42)), make_readout(detector_model(
                      DetectorConfig(window=32, model="scalar"), 1, 1), table,
                      rng.generator(0, "readout", 0, 1), 0.0))
    rss0 = _peak_rss_mib()

    c0 = time.process_time()
    readout = make_readout(model, table, rng.generator(1, "readout", 0, args.sca), 8.0)
    t_readout = time.process_time() - c0
    n_cr = len(readout.cosmic_rays.y)

    # split each tile's cost: reference data / kernel / the rest
    timers = {"kernel": 0.0}
    kernel = forward._ramp_kernel

    def timed_kernel(*a):
        t = time.process_time()
        kernel(*a)
        timers["kernel"] += time.process_time() - t

    forward._ramp_kernel = timed_kernel
    edges = frame_edges(window, args.tile)
    ntiles = len(edges) ** 2
    c_model = c_total = 0.0
    saturated = 0
    for ty, rows in enumerate(edges):
        for tx, cols in enumerate(edges):
            spec = L1Tile(1, 0, args.sca, ty * len(edges) + tx, rows, cols, window, table, 9)
            t = time.process_time()
            model.region(slice(max(rows[0] - 1, 0), min(rows[1] + 1, window + 8)),
                         slice(max(cols[0] - 1, 0), min(cols[1] + 1, window + 8)))
            model.biascorr(slice(*rows), slice(*cols), table)
            c_model += time.process_time() - t  # first draw; the tile below reuses the cache
            t = time.process_time()
            data, dq = simulate_tile(spec, model, expected[rows[0]:rows[1] + 2,
                                                            cols[0]:cols[1] + 2], readout)
            c_total += time.process_time() - t
            saturated += int((dq[-1] & 2).astype(bool).sum())
    forward._ramp_kernel = kernel

    pix_reads = (window + 8) ** 2 * table.nreads
    total = t_readout + c_model + c_total
    print(f"counts -> L1, one SCA (4096 x 4096), MA table 4 ({table.nresultants} resultants, "
          f"{table.nreads} reads), model {args.model}, tile {args.tile} ({ntiles} tiles), "
          f"sky {args.rate} e-/s")
    print(f"  readout task (1/f noise, amp33, {n_cr} CR deposits): {t_readout:6.2f} core-s")
    print(f"  detector model reference data (first draw):      {c_model:6.2f} core-s")
    print(f"  charge kernel (Poisson, CRs, IPC, non-linearity): {timers['kernel']:6.2f} core-s"
          f"  ({timers['kernel'] / pix_reads * 1e9:.1f} ns per pixel-read)")
    print(f"  rest of the tiles (inputs, bias, noise, ADC, DQ): "
          f"{c_total - timers['kernel']:6.2f} core-s")
    print(f"  total:                                            {total:6.2f} core-s")
    print(f"  saturated pixels in the last resultant: {saturated}")
    print(f"  peak RSS: {_peak_rss_mib():.0f} MiB (after the warm-up: {rss0:.0f} MiB)")


if __name__ == "__main__":
    main()

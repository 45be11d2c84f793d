"""Benchmark: stcal's cas22 and likely ramp fitters on a 1024 x 1024 cube.

Simulates a 6-resultant ramp (reads [[1], [2], [3, 4], [5..9], [10..17],
[18..25]], frame time 3.04 s, 5 e- read noise) with count rates drawn
log-uniformly from 0.5 to 1000 e-/s, fits it with each wrapper in
``romandask.calibrate.stcal_fitters`` and prints, per fitter:

* core-seconds (``time.process_time``) and wall seconds for the cube;
* the same extrapolated to a 4088 x 4088 SCA (x 16 pixels);
* a GIL probe: the longest stretch a pure-Python thread could not run while
  the fit ran (seconds), and the wall-time speed-up of ``--threads`` threads
  each fitting a band of rows.

    python benchmarks/bench_stcal_fitters.py [--size 1024] [--threads 2] [--no-jump]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from romandask.calibrate.stcal_fitters import fit_likely, fit_ols_cas22

PATTERN = [[1], [2], [3, 4], [5, 6, 7, 8, 9], list(range(10, 18)), list(range(18, 26))]
FRAME_TIME = 3.04
READ_NOISE = 5.0
FULL_SCA = 4088
FITTERS = {"ols_cas22": fit_ols_cas22, "likely": fit_likely}


def simulate(size: int, seed: int = 1):
    """Resultants (6, size, size) in electrons, read by read to bound memory."""
    rng = np.random.default_rng(seed)
    rate = np.exp(rng.uniform(np.log(0.5), np.log(1000.0), (size, size)))
    resultants = np.zeros((len(PATTERN), size, size), np.float64)
    charge = np.zeros((size, size))
    index = {read: i for i, reads in enumerate(PATTERN) for read in reads}
    for read in range(1, PATTERN[-1][-1] + 1):
        charge += rng.poisson(rate * FRAME_TIME)
        if read in index:
            resultants[index[read]] += charge + rng.normal(0.0, READ_NOISE, charge.shape)
    resultants /= np.array([len(r) for r in PATTERN])[:, None, None]
    return resultants.astype(np.float32), rate


class Ticker(threading.Thread):
    """Pure-Python thread that watches the clock and records its own stalls.

    It needs the GIL to run, so the longest stall it sees while a fit runs in
    the main thread is the longest stretch the fit held the GIL (or the OS
    descheduled it, which on a busy machine takes milliseconds, not seconds).
    """

    def __init__(self, min_gap: float = 1e-3):
        super().__init__(daemon=True)
        self.min_gap = min_gap
        self.gaps: list[tuple[float, float]] = []
        self.stop = False

    def run(self):
        clock = time.perf_counter
        last = clock()
        while not self.stop:
            now = clock()
            if now - last > self.min_gap:
                self.gaps.append((last, now))
            last = now

    def longest_hold(self, t0: float, t1: float) -> float:
        """Longest stall overlapping [t0, t1], clipped to it, seconds."""
        return max([min(b, t1) - max(a, t0) for a, b in self.gaps if b > t0 and a < t1],
                   default=0.0)


def timed(fn, *args, **kwargs):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--no-jump", action="store_true", help="disable jump detection")
    args = ap.parse_args()
    use_jump = not args.no_jump

    w0 = time.perf_counter()
    res, rate = simulate(args.size)
    dq = np.zeros(res.shape, np.uint8)
    rn = np.full(res.shape[1:], READ_NOISE, np.float32)
    scale = (FULL_SCA / args.size) ** 2
    print(f"cube {res.shape} simulated in {time.perf_counter() - w0:.1f} s; "
          f"use_jump={use_jump}; {os.cpu_count()} CPUs; extrapolation x{scale:.2f}")

    # Warm-up on a few rows (imports, first-call overheads).
    for fitter in FITTERS.values():
        fitter(res[:, :8], dq[:, :8], rn[:8], PATTERN, FRAME_TIME, use_jump=use_jump)

    print(f"\n{'fitter':10s} {'core-s':>8s} {'wall-s':>8s} {'SCA core-s':>11s} "
          f"{'SCA wall-s':>11s} {'GIL hold-s':>11s} {'threads':>8s} {'speed-up':>9s}")
    for name, fitter in FITTERS.items():
        fit, cpu, wall = timed(fitter, res, dq, rn, PATTERN, FRAME_TIME,
                               use_jump=use_jump)
        assert np.nanmedian(np.abs(fit.slope / rate - 1)) < 0.1

        # GIL probe: the same fit with a pure-Python thread competing.
        ticker = Ticker()
        ticker.start()
        time.sleep(0.05)
        t0 = time.perf_counter()
        fitter(res, dq, rn, PATTERN, FRAME_TIME, use_jump=use_jump)
        t1 = time.perf_counter()
        ticker.stop = True
        ticker.join()
        hold = ticker.longest_hold(t0, t1)

        # Threaded: one band of rows per thread.
        bands = np.array_split(np.arange(args.size), args.threads)

        def band(rows, fitter=fitter):
            sl = slice(rows[0], rows[-1] + 1)
            return fitter(res[:, sl], dq[:, sl], rn[sl], PATTERN, FRAME_TIME,
                          use_jump=use_jump)
        w1 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(band, bands))
        speedup = wall / (time.perf_counter() - w1)

        print(f"{name:10s} {cpu:8.2f} {wall:8.2f} {cpu * scale:11.1f} {wall * scale:11.1f} "
              f"{hold:11.2f} {args.threads:8d} {speedup:9.2f}")
    print(f"\nSCA: x{scale:.2f} pixels.  GIL hold-s: longest time a pure-Python thread "
          "could not run during the fit (close to core-s: the fit holds the GIL for its "
          "whole core loop).  speed-up: serial wall / wall with --threads threads on row "
          "bands (meaningless on a machine with fewer idle cores).")


if __name__ == "__main__":
    main()

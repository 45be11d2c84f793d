"""Benchmark: full SCAs of one pointing on 1 and 2 workers, and the speed-up.

``romandask run`` of one exposure (F158, MA table 4, full SCAs of 4088^2,
tile 1024, synthetic detector model drawn in the run, every product of a
run: counts, truth, ramps, L1 and L2 files), over the synthetic sky at a
quarter of full density (about 1,000 objects per SCA), on a local cluster of
one-thread workers, first with one worker, then with two, each in a fresh
output directory.  Prints the wall time of each, the speed-up, the time per
SCA, and the wall time of a whole pointing (18 SCAs) on two workers that
these figures imply.  The two runs' L1 and L2 files are compared byte for byte.

    python benchmarks/bench_pointing.py [--scas 2] [--window 4088]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path


def config(out: Path, scas: list[int], window: int, workers: int) -> dict:
    return {
        "seed": 2027,
        "survey": {"scas": scas,
                   "exposures": [{"ra": 9.70, "dec": -44.00, "pa": 0.0, "filter": "F158",
                                  "ma_table": 4, "start_time": "2027-06-01T00:00:00"}]},
        "catalog": {"synthetic": {"density_scale": 0.25}},
        "detector": {"window": window, "tile": min(1024, window)},
        "output": {"directory": str(out), "products": ["counts", "truth", "ramps", "l1", "l2"]},
        "cluster": {"type": "local", "n_workers": workers, "threads_per_worker": 1,
                    "memory_limit": "5GiB", "progress": False},
    }


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("l1", "l2") for p in sorted((directory / sub).glob("*.asdf"))}


def main() -> None:
    from romandask.config import parse_config
    from romandask.pipeline import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scas", type=int, default=2, help="SCAs of the pointing to run [2]")
    ap.add_argument("--window", type=int, default=4088)
    args = ap.parse_args()
    scas = list(range(1, args.scas + 1))
    walls = {}
    with tempfile.TemporaryDirectory(prefix="bench_pointing_") as name:
        tmp = Path(name)
        digests = {}
        for workers in (1, 2):
            out = tmp / f"w{workers}"
            cfg = parse_config(config(out, scas, args.window, workers), tmp)
            t0 = time.perf_counter()
            run(cfg, say=lambda s: None)
            walls[workers] = time.perf_counter() - t0
            digests[workers] = digest(out)
            print(f"{workers} worker(s): {len(scas)} SCAs of {args.window}^2 in "
                  f"{walls[workers]:.1f} s wall ({walls[workers] / len(scas):.1f} s per SCA)")
    speedup = walls[1] / walls[2]
    same = digests[1] == digests[2] and len(digests[1]) == 2 * len(scas)
    print(f"speed-up 1 -> 2 workers: {speedup:.2f} (target >= 1.8); L1 and L2 files "
          f"{'identical' if same else 'DIFFERENT'} with 1 and 2 workers")
    per_sca = walls[2] / len(scas)
    print(f"a pointing of 18 SCAs on 2 workers at this rate: {18 * per_sca / 60:.1f} min wall "
          f"(target <= 8 min)")


if __name__ == "__main__":
    main()

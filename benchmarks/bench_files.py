"""Benchmark: the fixed cost of an (exposure, SCA)'s files at a small window.

Runs 3 exposures x 18 SCAs at window 32 with every product (threads, in this
process), then writes each image's L1, L2 and FITS files again, timing in CPU
time of this thread (a busy machine does not inflate it) what reading its
chunks back from the store costs (what the staged graph's file tasks do) and
what building, validating and writing the file costs (all a one-task image
does: it hands its arrays to the writers).

    python benchmarks/bench_files.py [--exposures 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scale  # noqa: E402  (the survey grid of the scale benchmark)


def main() -> None:
    from romandask.config import parse_config
    from romandask.export import visits_metadata
    from romandask.pipeline import (FILE_READS, file_writers, image_arrays, image_truth,
                                    prepare, run)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exposures", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_files_") as name:
        tmp = Path(name)
        data = bench_scale.config_for(tmp, args.exposures, bench_scale.EVERY_PRODUCT)
        data["cluster"] = {"type": "threads", "n_workers": 1, "progress": False}
        config = parse_config(data, tmp)
        run(config, say=lambda s: None)  # the store, and every cache warm
        survey = prepare(config)
        store_path = config.output.directory / "romandask.zarr"
        visits = visits_metadata(survey.exposures)
        again = tmp / "again"
        again.mkdir()
        spent = {kind: [0.0, 0.0] for kind in FILE_READS}
        nsca = len(survey.scas)
        for k, view in enumerate(survey.views):
            ie, isca = divmod(k, nsca)
            truth = image_truth(view, survey.sky.select(view))
            for kind, task, _ in file_writers(config):
                c0 = time.thread_time()
                arrays = image_arrays(store_path, ie, isca, FILE_READS[kind])
                c1 = time.thread_time()
                task(arrays, view, config.detector, config.seed, truth,
                     visits[view.exposure.id], again)
                spent[kind][0] += c1 - c0
                spent[kind][1] += time.thread_time() - c1
        n = len(survey.views)
        print(f"window {config.detector.window}, {n} images, CPU-s per file:")
        for kind, (read, write) in spent.items():
            print(f"  {kind.upper():>4}: read back from the store {read / n:.3f}, build, "
                  f"validate and write {write / n:.3f}, together {(read + write) / n:.3f}")


if __name__ == "__main__":
    main()

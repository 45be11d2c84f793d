"""Benchmark: the staged graph (frames of several tiles) on the driver.

Surveys of N exposures x 18 SCAs of full frames (window 4088, tiles of
1022: 16 tiles a frame), every product but the mosaic, the synthetic sky
partitioned by HEALPix.  Each size is measured in a fresh subprocess:

* ``build``: the footprint and sky (``prepare``), then the store's dataset
  and the per-image jobs ``run`` computes (``survey_dataset`` and
  ``product_tasks``), nothing run: wall and CPU seconds of building, the
  graph's layers, and the driver's peak RSS;
* ``materialise``: the same jobs' graph turned into its task dictionary (what
  the scheduler is sent): seconds, tasks, tasks per SCA-image, peak RSS.

The graph's stages are Dask arrays (``da.blockwise``), so building it costs
O(images) Python objects and no tasks; its tasks exist once the scheduler
asks for them.

    python benchmarks/bench_graph.py [--sizes 5 10 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import EVERY_PRODUCT, _cpu_self, _peak_gb  # noqa: E402
from bench_scale import config_for as scale_config  # noqa: E402  (the same pointings)


def config_for(tmp: Path, n: int) -> dict:
    """bench_scale's survey of ``n`` exposures, of full SCAs, every product."""
    config = scale_config(tmp, n, EVERY_PRODUCT)
    config["detector"] = {"window": 4088, "tile": 1022}
    config["cluster"]["memory_limit"] = "12GiB"
    return config


def child(n: int, tmp: Path) -> dict:
    from dask.highlevelgraph import HighLevelGraph

    from romandask.config import parse_config
    from romandask.pipeline import prepare, product_tasks, survey_dataset, task_needs
    from romandask.resume import Progress

    config = parse_config(config_for(tmp, n), tmp)
    out = {"exposures": n, "images": n * 18}
    t0 = time.perf_counter()
    survey = prepare(config)
    out["prepare_s"] = time.perf_counter() - t0
    w0, c0 = time.perf_counter(), _cpu_self()
    needs = task_needs(survey)
    ds, _, _ = survey_dataset(survey, needs)
    pending = [(ie, isca) for ie in range(len(survey.exposures))
               for isca in range(len(survey.scas))]
    nowhere = Path("/nonexistent")
    jobs = product_tasks(survey, ds, nowhere, Progress(nowhere), pending, needs)
    out["build_s"] = time.perf_counter() - w0
    out["build_cpu_s"] = _cpu_self() - c0
    graphs = {id(g): g for g in (job.__dask_graph__() for job in jobs)}
    merged = HighLevelGraph.merge(*graphs.values())
    out["layers"] = len(merged.layers)
    out["build_peak_gb"] = _peak_gb()
    m0 = time.perf_counter()
    out["tasks"] = len(merged.to_dict())
    out["materialise_s"] = time.perf_counter() - m0
    out["peak_gb"] = _peak_gb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[5, 10, 20])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), Path(args.child[1]))))
        return
    print("staged graph, full frames (window 4088, 16 tiles), every product but the mosaic:")
    with tempfile.TemporaryDirectory(prefix="bench_graph_") as name:
        for n in args.sizes:
            proc = subprocess.run([sys.executable, __file__, "--child", str(n), name],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                print(f"  {n:>4} exposures: failed: {tail}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            per = r["tasks"] / r["images"]
            print(f"  {n:>4} exposures ({r['images']:>5} SCA-images): built in "
                  f"{r['build_s']:.2f} s ({1e3 * r['build_s'] / r['images']:.2f} ms per "
                  f"SCA-image), {r['layers']} layers, peak {r['build_peak_gb']:.2f} GB; "
                  f"materialised: {r['tasks']} tasks ({per:.0f} per SCA-image) in "
                  f"{r['materialise_s']:.2f} s, peak {r['peak_gb']:.2f} GB")


if __name__ == "__main__":
    main()

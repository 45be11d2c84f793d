"""Benchmark: how the driver's cost grows with the size of a survey.

Surveys of N exposures x 18 SCAs at window 32 (tile 32), pointed on a grid
over a 3 deg x 3 deg field (F158, MA table 4, the synthetic sky at full
density, partitioned by HEALPix), each measured in a fresh subprocess:

* ``plan``: ``prepare`` (footprint and sky) and ``plan(measure=False)``: wall and CPU seconds, the
  driver's peak RSS, the tasks the plan counts;
* ``graph``: the whole run's Dask graph built and counted (not run);
* ``run``: ``romandask run`` (counts and truth; ``--run-all``: every
  product but the mosaic) on a local cluster of two one-thread workers: wall, the driver's CPU while the graph computes (its
  scheduler and client: the overhead per SCA-image), the workers' CPU, and
  the scheduler's share of all CPU.

Then the exponent of wall time against size between the sizes measured
(1: linear) and the issue's targets.

    python benchmarks/bench_scale.py [--plan 100 1000 10000] [--graph 100 1000]
        [--run 100 1000] [--run-all 100]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIELD = dict(ra=(8.2, 11.2), dec=(-45.5, -42.5))  # about 3 x 3 deg (6.5 deg^2 x cos dec)
START = np.datetime64("2027-06-01T00:00:00")
CADENCE_S = 150
#: What ``--run-all`` makes (all but the mosaic, which is its own step, and the plot).
EVERY_PRODUCT = ["counts", "truth", "ramps", "l1", "l2", "fits"]


def _cpu_self() -> float:
    t = resource.getrusage(resource.RUSAGE_SELF)
    return t.ru_utime + t.ru_stime


def _cpu_children() -> float:
    t = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t.ru_utime + t.ru_stime


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 ** 2


def pointing_table(path: Path, n: int) -> None:
    """``n`` exposures on a grid over FIELD (rows then columns, repeated as needed)."""
    from astropy.table import Table

    side = max(int(math.ceil(math.sqrt(min(n, 400)))), 1)
    ras = np.linspace(*FIELD["ra"], side)
    decs = np.linspace(*FIELD["dec"], side)
    k = np.arange(n)
    cell = k % (side * side)
    table = Table({
        "ra": ras[cell % side], "dec": decs[cell // side], "pa": np.zeros(n),
        "filter": np.full(n, "F158"), "ma_table": np.full(n, 4),
        "start_time": [str(START + np.timedelta64(int(i * CADENCE_S), "s")) for i in k],
    })
    table.write(path, format="ascii.ecsv", overwrite=True)


def config_for(tmp: Path, n: int, products: list[str]) -> dict:
    table = tmp / f"pointings-{n}.ecsv"
    if not table.exists():
        pointing_table(table, n)
    return {
        "seed": 2027,
        "survey": {"pointings": str(table)},
        "catalog": {"synthetic": {"partition": "healpix"}},
        "detector": {"window": 32, "tile": 32},
        "output": {"directory": str(tmp / f"out-{n}-{len(products)}"), "products": products},
        "cluster": {"type": "local", "n_workers": 2, "threads_per_worker": 1,
                    "progress": False},
    }


def child(kind: str, n: int, tmp: Path) -> dict:
    """One measurement, in this (fresh) process."""
    from romandask import cluster
    from romandask.config import parse_config
    from romandask.pipeline import prepare, run
    from romandask.plan import graph_size, plan

    from dask.highlevelgraph import HighLevelGraph

    products = EVERY_PRODUCT if kind == "runall" else ["counts", "truth"]
    config = parse_config(config_for(tmp, n, products), tmp)
    out = {"kind": kind, "exposures": n, "images": n * 18}
    w0, c0 = time.perf_counter(), _cpu_self()
    if kind in ("plan", "graph"):
        survey = prepare(config)
        out["prepare_s"] = time.perf_counter() - w0
        if kind == "plan":
            text = plan(survey, measure=False, show_rows=0)
            line = next(ln for ln in text.splitlines() if ln.startswith("dask tasks:"))
            out["tasks"] = int(line.split()[2])
        else:
            g0 = time.perf_counter()
            out["tasks"] = graph_size(survey)
            out["graph_s"] = time.perf_counter() - g0
    else:
        spent = {}
        real = cluster.compute

        def timed(jobs, client, *args, **kwargs):
            # every compute of the run (its products, then its truth chunks)
            t, c = time.perf_counter(), _cpu_self()
            try:
                return real(jobs, client, *args, **kwargs)
            finally:
                spent["wall"] = spent.get("wall", 0.0) + time.perf_counter() - t
                spent["cpu"] = spent.get("cpu", 0.0) + _cpu_self() - c
                graphs = {id(g): g for g in (job.__dask_graph__() for job in jobs)}
                spent["tasks"] = spent.get("tasks", 0) + len(
                    HighLevelGraph.merge(*graphs.values()))

        cluster.compute = timed
        said = []
        run(config, say=said.append)
        out["psf_cache"] = next((ln for ln in said if ln.startswith("PSF models:")), "")
        out["compute_s"] = spent["wall"]
        out["driver_compute_cpu"] = spent["cpu"]
        out["tasks"] = spent["tasks"]
    out["wall_s"] = time.perf_counter() - w0
    out["cpu_s"] = _cpu_self() - c0
    out["workers_cpu_s"] = _cpu_children()
    out["peak_gb"] = _peak_gb()
    return out


def measure(kind: str, n: int, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(n), str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return {"kind": kind, "exposures": n, "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measured(kind: str, sizes: list[int], tmp: Path):
    """Each size measured in turn; a failed one is said and kept (with its error)."""
    for n in sizes:
        row = measure(kind, n, tmp)
        if "error" in row:
            print(f"  {n:>6} exposures: failed: {row['error']}")
        yield row


def exponent(rows: list[dict], key: str = "wall_s") -> str:
    ok = [r for r in rows if "error" not in r]
    if len(ok) < 2:
        return "n/a"
    parts = []
    for a, b in zip(ok, ok[1:]):
        slope = math.log(b[key] / a[key]) / math.log(b["exposures"] / a["exposures"])
        parts.append(f"{a['exposures']}->{b['exposures']}: {slope:.2f}")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", type=int, nargs="*", default=[100, 1000, 10000])
    ap.add_argument("--graph", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--run", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--run-all", type=int, nargs="*", default=[100])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, n, tmp = args.child
        print(json.dumps(child(kind, int(n), Path(tmp))))
        return

    with tempfile.TemporaryDirectory(prefix="bench_scale_") as name:
        tmp = Path(name)
        plans, runs = [], []
        print("plan --no-measure, window 32, synthetic sky (HEALPix), one process:")
        for r in measured("plan", args.plan, tmp):
            plans.append(r)
            if "error" in r:
                continue
            n = r["exposures"]
            print(f"  {n:>6} exposures ({r['images']:>7} SCA-images): {r['wall_s']:7.1f} s wall "
                  f"({r['prepare_s']:.1f} s footprint and sky), "
                  f"{r['cpu_s']:7.1f} CPU-s, peak {r['peak_gb']:.2f} GB, "
                  f"{r['tasks']} tasks planned")
        print(f"  exponent of wall time against size: {exponent(plans)}")
        if args.graph:
            print("the run's whole graph built (not run), counts and truth:")
        for r in measured("graph", args.graph, tmp):
            if "error" in r:
                continue
            print(f"  {r['exposures']:>6} exposures: {r['tasks']} tasks, graph built in {r['graph_s']:.1f} s "
                  f"({1e3 * r['graph_s'] / r['images']:.2f} ms per SCA-image), peak "
                  f"{r['peak_gb']:.2f} GB")
        measured_runs = [("run", n) for n in args.run] + [("runall", n) for n in args.run_all]
        for kind, n in measured_runs:
            what = ("counts and truth" if kind == "run" else
                    "every product (" + ", ".join(EVERY_PRODUCT) + ")")
            print(f"romandask run, {what}, local cluster of 2 one-thread workers:")
            r = measure(kind, n, tmp)
            runs.append(r)
            if "error" in r:
                print(f"  {n:>6} exposures: failed: {r['error']}")
                continue
            n = r["exposures"]
            share = r["driver_compute_cpu"] / (r["driver_compute_cpu"] + r["workers_cpu_s"])
            print(f"  {n:>6} exposures: {r['wall_s']:.1f} s wall ({r['compute_s']:.1f} s "
                  f"computing {r['tasks']} tasks, {r['tasks'] / r['images']:.1f} per SCA-image); "
                  f"driver {r['cpu_s']:.1f} CPU-s, of which {r['driver_compute_cpu']:.1f} while "
                  f"computing ({r['driver_compute_cpu'] / r['images']:.4f} s per SCA-image); "
                  f"workers {r['workers_cpu_s']:.1f} CPU-s; scheduler share {100 * share:.1f} %; "
                  f"driver peak {r['peak_gb']:.2f} GB")
            print(f"         {r['psf_cache']}")
        print("targets:")
        by = {r["exposures"]: r for r in plans if "error" not in r}
        if 1000 in by:
            r = by[1000]
            print(f"  plan(1000) < 60 s wall: {r['wall_s']:.1f} -> "
                  f"{'met' if r['wall_s'] < 60 else 'NOT met'}; driver < 2 GB: "
                  f"{r['peak_gb']:.2f} -> {'met' if r['peak_gb'] < 2 else 'NOT met'}")
        if 100 in by and 1000 in by:
            ratio = by[1000]["wall_s"] / by[100]["wall_s"]
            print(f"  plan(1000) / plan(100) <= 12: {ratio:.1f} -> "
                  f"{'met' if ratio <= 12 else 'NOT met'}")
        if 10000 in by:
            r = by[10000]
            print(f"  plan(10000) with the driver < 4 GB: {r['peak_gb']:.2f} -> "
                  f"{'met' if r['peak_gb'] < 4 else 'NOT met'} ({r['wall_s']:.0f} s)")
        for r in runs:
            if "error" in r:
                continue
            per = r["driver_compute_cpu"] / r["images"]
            share = r["driver_compute_cpu"] / (r["driver_compute_cpu"] + r["workers_cpu_s"])
            if r["kind"] == "run":
                print(f"  run({r['exposures']}), counts and truth: scheduler < 0.05 s per "
                      f"SCA-image: {per:.4f} -> {'met' if per < 0.05 else 'NOT met'}; driver "
                      f"< 3 GB: {r['peak_gb']:.2f}; < 20 min: {r['wall_s'] / 60:.1f} min")
            else:
                print(f"  run({r['exposures']}), every product: scheduler share < 5 %: "
                      f"{100 * share:.1f} % -> {'met' if share < 0.05 else 'NOT met'}; driver "
                      f"< 2 GB: {r['peak_gb']:.2f}")


if __name__ == "__main__":
    main()

"""Benchmark: memory of a full-frame run, per worker and per kind of task.

Runs one full SCA (4088^2, MA table 4, every product) on two local worker
processes of one thread each, with a memory limit per worker
(``--memory-limit``, default 4 GiB), offering ``MEMORY`` as romandask's own
clusters do.  A worker plugin samples each worker's RSS every 5 ms and
charges each task with the peak RSS it added over the worker's RSS when it
started (one thread per worker: one task at a time).  Prints

* per kind of task: how many ran, the largest measured increase, the
  largest declared need (the task's ``MEMORY`` resource) and their ratio;
* per worker: peak RSS against its memory limit, and whether the worker was
  ever restarted.

    python benchmarks/bench_memory.py [--memory-limit 4GiB] [--tile 1022] [--scas 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import yaml
from dask.utils import format_bytes, key_split, parse_bytes
from distributed import Client, LocalCluster, WorkerPlugin


class MemoryProbe(WorkerPlugin):
    """Samples RSS; records each task's peak increase and its declared MEMORY."""

    name = "memory-probe"

    def setup(self, worker):
        import psutil

        self.worker = worker
        self.proc = psutil.Process()
        self.start_rss = self.peak_rss = self.proc.memory_info().rss
        self.pid = os.getpid()
        self.current = None
        self.tasks = {}  # key -> (kind, increase, declared)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.stop.is_set():
            rss = self.proc.memory_info().rss
            self.peak_rss = max(self.peak_rss, rss)
            current = self.current
            if current is not None:
                current[2] = max(current[2], rss)
            time.sleep(0.005)

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing":
            ts = self.worker.state.tasks.get(key)
            declared = (ts.resource_restrictions or {}).get("MEMORY", 0) if ts else 0
            rss = self.proc.memory_info().rss
            self.current = [key, rss, rss, declared]
        elif start == "executing" and self.current is not None and self.current[0] == key:
            key, base, peak, declared = self.current
            self.current = None
            self.tasks[str(key)] = (key_split(key), peak - base, declared)

    def teardown(self, worker):
        self.stop.set()


def report(dask_worker):
    probe = dask_worker.plugins["memory-probe"]
    return {"pid": probe.pid, "peak_rss": probe.peak_rss, "start_rss": probe.start_rss,
            "tasks": probe.tasks, "memory_limit": dask_worker.memory_manager.memory_limit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memory-limit", default="4GiB")
    parser.add_argument("--tile", type=int, default=1022)
    parser.add_argument("--scas", type=int, default=1, help="how many SCAs (1-18)")
    args = parser.parse_args()

    from romandask.config import load_config
    from romandask.memory import RESOURCE, worker_budget
    from romandask.pipeline import prepare, run, task_needs

    limit = parse_bytes(args.memory_limit)
    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit=limit,
                      resources={RESOURCE: worker_budget(limit)},
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.register_plugin(MemoryProbe())
        pids = client.run(lambda: os.getpid())
        data = {
            "seed": 11,
            "survey": {"exposures": [{"ra": 9.70, "dec": -44.0, "pa": 0.0, "filter": "F158",
                                      "ma_table": 4, "start_time": "2027-06-01T00:00:00"}],
                       "scas": list(range(1, args.scas + 1))},
            "catalog": {"synthetic": {"density_scale": 0.5}},
            "detector": {"window": 4088, "tile": args.tile},
            "output": {"directory": str(tmp / "out")},
            "cluster": {"type": "address", "address": cluster.scheduler_address,
                        "progress": False},
        }
        path = tmp / "bench.yaml"
        path.write_text(yaml.safe_dump(data))
        config = load_config(path)
        t0 = time.perf_counter()
        run(config, say=lambda s: print("  " + s, flush=True))
        wall = time.perf_counter() - t0
        reports = client.run(report)
        restarted = client.run(lambda: os.getpid()) != pids
        needs = task_needs(prepare(config))

    print(f"\nfull SCA 4088^2 x {args.scas} SCA(s), tile {args.tile}, MA table 4, "
          f"2 workers x 1 thread, memory limit {format_bytes(limit)} each, "
          f"wall {wall:.0f} s")
    print("declared needs: " + ", ".join(f"{k} {format_bytes(v)}"
                                         for k, v in vars(needs).items()))
    kinds: dict[str, list] = {}
    for rep in reports.values():
        for kind, increase, declared in rep["tasks"].values():
            kinds.setdefault(kind, []).append((increase, declared))
    print(f"\n{'task kind':<28} {'n':>5} {'max measured':>13} {'max declared':>13} "
          f"{'measured/declared':>18}")
    for kind, rows in sorted(kinds.items(), key=lambda kv: -max(r[0] for r in kv[1])):
        measured = max(r[0] for r in rows)
        declared = max(r[1] for r in rows)
        worst = max((r[0] / r[1] for r in rows if r[1]), default=float("nan"))
        print(f"{kind[:28]:<28} {len(rows):>5} {format_bytes(max(measured, 0)):>13} "
              f"{format_bytes(declared) if declared else '-':>13} {worst:>18.2f}")
    print(f"\n{'worker':<28} {'RSS at start':>12} {'peak RSS':>10} {'limit':>10} "
          f"{'peak/limit':>11}")
    for address, rep in reports.items():
        print(f"{address:<28} {format_bytes(rep['start_rss']):>12} "
              f"{format_bytes(rep['peak_rss']):>10} "
              f"{format_bytes(rep['memory_limit']):>10} "
              f"{rep['peak_rss'] / rep['memory_limit']:>11.2f}")
    print(f"workers restarted during the run: {'yes' if restarted else 'no'}")


if __name__ == "__main__":
    main()

"""Where the Dask work runs: a local cluster, threads, or an existing scheduler.

``local`` (the default) starts a LocalCluster of worker processes with one
thread each, listening on 127.0.0.1 only, with the dashboard on loopback.
Its workers start with ``OMP_NUM_THREADS=1`` (distributed's pre-spawn
environment), so NumPy and FFTW do not oversubscribe the cores.
``threads`` uses Dask's threaded scheduler in this process (no dashboard).
``address`` connects to a running scheduler (``tcp://host:port``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Callable, Iterator

import dask

from .config import ClusterConfig


@contextlib.contextmanager
def dask_client(cfg: ClusterConfig, say: Callable[[str], None] = print) -> Iterator[object]:
    """Yield a ``distributed.Client`` (or None for ``threads``) for the run."""
    if cfg.type == "threads":
        with dask.config.set(scheduler="threads", num_workers=cfg.n_workers):
            say(f"dask: threaded scheduler, {cfg.n_workers} threads")
            yield None
        return

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if cfg.type == "local":
        with LocalCluster(n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker,
                          processes=True, host="127.0.0.1",
                          dashboard_address=cfg.dashboard_address,
                          memory_limit=cfg.memory_limit, silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            say(f"dask: local cluster, {cfg.n_workers} workers x {cfg.threads_per_worker} "
                f"thread(s); dashboard {client.dashboard_link}")
            yield client
        return

    with Client(cfg.address) as client:
        n = len(client.scheduler_info().get("workers", {}))
        say(f"dask: scheduler {cfg.address} ({n} workers); dashboard {client.dashboard_link}")
        yield client


def compute(collection, client, progress: bool = True):
    """Compute ``collection`` on ``client`` (or the current scheduler).

    A progress bar is drawn when stderr is a terminal (not in logs or CI).
    """
    show = progress and sys.stderr is not None and sys.stderr.isatty()
    if client is None:
        if show:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr, dt=1.0):
                return dask.compute(collection)[0]
        return dask.compute(collection)[0]
    future = client.compute(collection)
    if show:
        from distributed import progress as _progress

        _progress(future, notebook=False)
        print(file=sys.stderr, flush=True)
    return future.result()

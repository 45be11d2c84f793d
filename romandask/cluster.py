"""Where the Dask work runs: a local cluster, threads, or an existing scheduler.

``local`` (the default) starts a LocalCluster of worker processes with one
thread each, listening on 127.0.0.1 only, with the dashboard on loopback.
Its workers start with ``OMP_NUM_THREADS=1`` (distributed's pre-spawn
environment), so NumPy and FFTW do not oversubscribe the cores.
``threads`` uses Dask's threaded scheduler in this process (no dashboard).
``address`` connects to a running scheduler (``tcp://host:port``, or
``tls://host:port`` with the user's certificates).
``slurm`` starts a dask-jobqueue ``SLURMCluster``: batch jobs of worker
processes, scaled adaptively between ``minimum_jobs`` and ``maximum_jobs``.
Settings the config leaves out come from dask-jobqueue's own configuration
(``jobqueue.slurm`` in a ``jobqueue.yaml``).  Workers get ``--lifetime`` (by
default ten minutes short of the walltime, staggered) so that they hand
their work back and leave before SLURM kills the job.  The scheduler and
workers talk TLS: temporary certificates by default (written, readable by
the user only, to ``shared_directory``), or the user's.  The dashboard stays
on loopback unless ``dashboard_address`` says otherwise.

Workers of ``local`` and ``slurm`` clusters offer the resource ``MEMORY``
(their memory limit less a baseline, :mod:`romandask.memory`) that the
survey's tasks declare; workers of an ``address`` scheduler take part in
this when they are started with ``--resources MEMORY=<bytes>``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Callable, Iterator

import dask

from .config import ClusterConfig, walltime_seconds
from .errors import ConfigError
from .memory import RESOURCE, worker_budget


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
        # a task's error reaches the driver, which reports it; the workers' own
        # logs would only repeat it, or tell of their shutdown after a Ctrl-C
        with _workers_ignore_sigint():
            cluster = LocalCluster(n_workers=cfg.n_workers,
                                   threads_per_worker=cfg.threads_per_worker,
                                   processes=True, host="127.0.0.1",
                                   dashboard_address=cfg.dashboard_address,
                                   memory_limit=cfg.memory_limit, silence_logs=logging.CRITICAL,
                                   resources={RESOURCE: memory_budget(cfg)})
        with cluster, Client(cluster) as client:
            say(f"dask: local cluster, {cfg.n_workers} workers x {cfg.threads_per_worker} "
                f"thread(s); dashboard {client.dashboard_link}")
            yield client
        return

    if cfg.type == "slurm":
        from dask_jobqueue import SLURMCluster

        kwargs = slurm_kwargs(cfg)
        try:
            cluster = SLURMCluster(**kwargs)
        except ValueError as exc:  # dask-jobqueue: cores or memory set nowhere
            raise ConfigError("cluster", f"cannot start a SLURM cluster ({exc})",
                              "set cluster.cores and cluster.memory, or give them in a "
                              "jobqueue.yaml") from None
        with cluster, Client(cluster, security=kwargs.get("security")) as client:
            slurm = cfg.slurm
            cluster.adapt(minimum_jobs=slurm.minimum_jobs, maximum_jobs=slurm.maximum_jobs)
            say(f"dask: SLURM cluster, {slurm.minimum_jobs} to {slurm.maximum_jobs} job(s); "
                f"scheduler {cluster.scheduler_address}; dashboard {client.dashboard_link}")
            yield client
        return

    try:
        client = Client(cfg.address, security=user_security(cfg))
    except (OSError, TimeoutError) as exc:
        raise ConfigError("cluster.address (or --scheduler)",
                          f"cannot reach the scheduler {cfg.address} ({exc})",
                          "start the scheduler, or check its address and TLS "
                          "certificates") from None
    with client:
        n = len(client.scheduler_info().get("workers", {}))
        say(f"dask: scheduler {cfg.address} ({n} workers); dashboard {client.dashboard_link}")
        yield client


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Start worker processes that ignore SIGINT.

    Ctrl-C reaches every process of the terminal's process group; the driver
    alone handles it (it stops the run and closes the cluster, which ends its
    workers), so that workers do not each print the traceback of their own
    interruption.  A disposition of SIG_IGN is inherited by the processes
    started meanwhile, and Python then installs no KeyboardInterrupt handler
    in them.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def worker_memory(cfg: ClusterConfig) -> int | None:
    """Memory limit (bytes) of each of romandask's own workers (None: not ours)."""
    from dask.utils import parse_bytes
    from distributed.worker_memory import parse_memory_limit

    if cfg.type == "local":
        return parse_memory_limit(cfg.memory_limit, cfg.threads_per_worker,
                                  total_cores=cfg.n_workers * cfg.threads_per_worker,
                                  logger=logging.getLogger("distributed"))
    if cfg.type == "slurm":
        memory = cfg.slurm.memory or dask.config.get("jobqueue.slurm.memory", None)
        processes = (cfg.slurm.processes or dask.config.get("jobqueue.slurm.processes", None)
                     or 1)
        return parse_bytes(memory) // processes if memory else None
    return None


def memory_budget(cfg: ClusterConfig) -> int | None:
    """``MEMORY`` each of romandask's own workers offers (None: not known before the run)."""
    memory = worker_memory(cfg)
    return None if memory is None else worker_budget(memory)


def offered_memory(client) -> int | None:
    """The largest ``MEMORY`` the connected workers offer; None if any offers none."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values() \
        if client is not None else ()
    offers = [w.get("resources", {}).get(RESOURCE) for w in workers]
    if not offers or any(o is None for o in offers):
        return None
    return int(max(offers))


def user_security(cfg: ClusterConfig):
    """A ``distributed.Security`` from the user's certificates (None without them)."""
    if cfg.tls is None:
        return None
    from distributed import Security

    return Security(tls_ca_file=str(cfg.tls.ca_file), tls_client_cert=str(cfg.tls.cert),
                    tls_client_key=str(cfg.tls.key), tls_scheduler_cert=str(cfg.tls.cert),
                    tls_scheduler_key=str(cfg.tls.key), tls_worker_cert=str(cfg.tls.cert),
                    tls_worker_key=str(cfg.tls.key), require_encryption=True)


def worker_lifetime(walltime: str | None, lifetime: str | None,
                    stagger: str | None) -> tuple[str | None, str | None]:
    """``--lifetime`` and ``--lifetime-stagger`` of SLURM workers.

    Given, they are used; otherwise, from the walltime: ten minutes short of it
    (a fifth short for walltimes under an hour), staggered by a tenth of the
    lifetime up to 4 minutes, so that workers do not all leave at once.
    """
    if lifetime is None and walltime is not None:
        seconds = walltime_seconds(walltime)
        life = seconds - 600 if seconds >= 3600 else int(seconds * 0.8)
        lifetime = f"{life}s"
        if stagger is None:
            stagger = f"{min(240, life // 10)}s"
    return lifetime, stagger


def slurm_kwargs(cfg: ClusterConfig) -> dict:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for ``cfg`` (type slurm)."""
    import os

    slurm = cfg.slurm
    kwargs: dict = {}
    for name in ("queue", "account", "cores", "processes", "memory", "walltime", "interface"):
        value = getattr(slurm, name)
        if value is not None:
            kwargs[name] = value
    if slurm.job_extra_directives:
        kwargs["job_extra_directives"] = list(slurm.job_extra_directives)
    extra = []
    walltime = slurm.walltime or dask.config.get("jobqueue.slurm.walltime", None)
    lifetime, stagger = worker_lifetime(walltime, slurm.lifetime, slurm.lifetime_stagger)
    if lifetime is not None:
        extra += ["--lifetime", lifetime]
        if stagger is not None:
            extra += ["--lifetime-stagger", stagger]
    budget = memory_budget(cfg)
    if budget is not None:
        extra += ["--resources", f"{RESOURCE}={budget}"]
    if extra:
        kwargs["worker_extra_args"] = extra
    # one thread per worker process, no oversubscribed BLAS/FFTW (after the
    # site's own prologue: module loads, environments)
    kwargs["job_script_prologue"] = [
        *(dask.config.get("jobqueue.slurm.job-script-prologue", None) or []),
        "export OMP_NUM_THREADS=1"]
    kwargs["scheduler_options"] = {"dashboard_address": cfg.dashboard_address}
    if cfg.tls is not None:
        kwargs["security"] = user_security(cfg)
    elif slurm.tls:
        from distributed import Security

        kwargs["security"] = Security.temporary()
        kwargs["shared_temp_directory"] = str(slurm.shared_directory or os.getcwd())
    if "security" in kwargs:
        kwargs["protocol"] = "tls://"
    return kwargs


#: Seconds between progress lines when stderr is not a terminal (a log, a
#: SLURM output file); ``ROMANDASK_PROGRESS_SECONDS`` sets another.
PROGRESS_SECONDS = 30.0


def format_duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``1 h 05 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(int(round(seconds / 60)), 60)
    return f"{hours} h {minutes:02d} min"


class ProgressLines:
    """While its block runs, a line every ``interval`` seconds: how many of
    ``total`` ``unit`` are done (``count()``), the time elapsed and an estimate
    of the time to go (at the pace so far)."""

    def __init__(self, count: Callable[[], int], total: int, unit: str,
                 say: Callable[[str], None] | None = None, interval: float | None = None,
                 label: str = "progress"):
        import os
        import threading

        if interval is None:
            interval = float(os.environ.get("ROMANDASK_PROGRESS_SECONDS", PROGRESS_SECONDS))
        self.count, self.total, self.unit, self.label = count, total, unit, label
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name="romandask-progress")

    def line(self, elapsed: float) -> str:
        done = self.count()
        text = (f"{self.label}: {done} of {self.total} {self.unit} done, "
                f"{format_duration(elapsed)} elapsed")
        if 0 < done < self.total:
            text += f", about {format_duration(elapsed / done * (self.total - done))} to go"
        return text

    def _beat(self) -> None:
        import time

        t0 = time.perf_counter()
        while not self._stop.wait(self.interval):
            self.say(self.line(time.perf_counter() - t0))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def compute(jobs, client, progress: bool = True, unit: str = "products"):
    """Compute ``jobs`` (a list of Dask collections) on ``client`` (or the
    current scheduler); returns their results as a list.

    With ``progress``: a progress bar when stderr is a terminal, otherwise
    (a log, a batch job) a line every :data:`PROGRESS_SECONDS` with the
    ``unit`` done, the time elapsed and an estimate of the time to go.
    """
    jobs = list(jobs)
    tty = sys.stderr is not None and sys.stderr.isatty()
    bar, lines = progress and tty, progress and not tty
    if client is None:
        if bar:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr, dt=1.0):
                return list(dask.compute(*jobs))
        if lines:
            from dask.callbacks import Callback

            keys = {job.key for job in jobs}
            finished = set()

            def posttask(key, result, dsk, state, worker_id):
                if key in keys:
                    finished.add(key)

            with Callback(posttask=posttask), \
                    ProgressLines(lambda: len(finished), len(jobs), unit):
                return list(dask.compute(*jobs))
        return list(dask.compute(*jobs))
    from distributed import wait

    futures = client.compute(jobs)
    if bar:
        from distributed import progress as _progress

        _progress(futures, notebook=False)
        print(file=sys.stderr, flush=True)
    elif lines:
        with ProgressLines(lambda: sum(f.done() for f in futures), len(futures), unit):
            wait(futures)
    else:
        wait(futures)  # a Ctrl-C here stops the run quietly (not inside a gather)
    return client.gather(futures)

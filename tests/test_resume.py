"""Interrupted runs: resume after the driver is killed, survive a killed worker.

Each run is a real ``romandask run`` process on a local cluster of two
worker processes; the products are compared byte for byte with an
uninterrupted run of the same config.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import roman_datamodels.datamodels as rdm
import yaml

from romandask import cli
from romandask.resume import PROGRESS_NAME, Progress

from conftest import BASE, merge

N_PRODUCTS = 6  # 2 exposures x 3 SCAs
OVERRIDES = {
    "survey": {"scas": [1, 2, 3]},
    "detector": {"window": 128, "tile": 64},
    "cluster": {"type": "local", "n_workers": 2, "progress": False},
}


def _write_config(directory: Path, out: Path, **extra) -> Path:
    data = merge(BASE, merge(OVERRIDES, {"output": {"directory": str(out)}, **extra}))
    path = directory / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "romandask.cli", "run", str(config), *args],
                          capture_output=True, text=True, timeout=600)


def _start(config: Path) -> subprocess.Popen:
    # its own session, so that the driver and its workers can be killed together
    return subprocess.Popen([sys.executable, "-m", "romandask.cli", "run", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before the point of the test:\n"
                        + proc.stdout.read())
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, str]:
    """The products of an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "ref"
    result = _run(_write_config(tmp, out))
    assert result.returncode == 0, result.stdout + result.stderr
    digest = _digest(out)
    assert sum(k.endswith("_uncal.asdf") for k in digest) == N_PRODUCTS
    assert sum(k.endswith("_cal.asdf") for k in digest) == N_PRODUCTS
    assert not (out / PROGRESS_NAME).exists()
    return digest


@pytest.mark.slow  # a long run (with the reference run, 1-2 minutes)
def test_rerun_after_sigkill_finishes_the_rest_with_identical_bytes(tmp_path, reference):
    out = tmp_path / "run"
    config = _write_config(tmp_path, out)
    progress = Progress(out)
    proc = _start(config)
    _wait_for(lambda: progress.exists() and len(progress.done()) >= 1, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    done = progress.done()
    assert 1 <= len(done) < N_PRODUCTS, "killed too late to test resuming"
    # nothing that looks finished is partial: no store under its final name, and
    # every file under its final name is the finished file
    assert not (out / "romandask.zarr").exists()
    finished = {k: v for k, v in _digest(out).items()
                if k.endswith(("_uncal.asdf", "_cal.asdf"))}
    assert len(finished) >= 2 * len(done)
    for name, sha in finished.items():
        assert reference[name] == sha, name
    kept = {p: p.stat().st_mtime_ns for p in out.glob("l[12]/*.asdf")}

    again = _run(config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming: {len(done)} of {N_PRODUCTS} (exposure, SCA) products" in again.stdout
    assert _digest(out) == reference
    assert not (out / PROGRESS_NAME).exists()
    # the products recorded as done were not made again
    names = sorted(p.name for p in out.glob("l1/*_uncal.asdf"))
    for ie, isca in done:
        path = out / "l1" / names[ie * 3 + isca]
        assert kept[path] == path.stat().st_mtime_ns
    # a finished run is not resumed again, nor overwritten
    assert _run(config).returncode == 2
    assert _digest(out) == reference


@pytest.mark.slow  # a long run (with the reference run, 1-2 minutes)
def test_killed_worker_does_not_change_the_products(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(_write_config(tmp_path, out))
    progress = Progress(out)
    _wait_for(lambda: progress.exists() and len(progress.done()) >= 1, proc)
    driver = psutil.Process(proc.pid)
    workers = [p for p in driver.children(recursive=True)
               if any("spawn_main" in part for part in p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in driver.children(recursive=True)]
    workers[0].send_signal(signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, proc.stdout.read()
    assert len(progress.done()) == 0 and not progress.path.exists()
    assert _digest(out) == reference


def test_interrupted_run_of_another_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    config = _write_config(tmp_path, out)
    proc = _start(config)
    progress = Progress(out)
    _wait_for(progress.exists, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _digest(out)
    other = _write_config(tmp_path, out, seed=8)
    other = other.rename(tmp_path / "other.yaml")
    capsys.readouterr()
    assert cli.main(["run", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted run of another config" in err
    assert _digest(out) == before
    # --overwrite starts the other config afresh
    assert cli.main(["run", str(other), "--no-progress", "--overwrite"]) == 0
    assert not progress.path.exists()
    files = sorted(out.glob("l2/*_cal.asdf"))
    assert len(files) == N_PRODUCTS
    with rdm.open(files[0]) as model:
        assert model["romandask"]["detector"]["seed"] == 8


@pytest.mark.slow
def test_ctrl_c_stops_quietly_and_the_rerun_resumes(tmp_path, reference):
    """SIGINT to the whole process group (Ctrl-C in a terminal): the driver
    says one word, its workers say nothing, and the rerun finishes the run."""
    out = tmp_path / "run"
    config = _write_config(tmp_path, out)
    # every L2 file but the first takes 3 s more to write, so that the Ctrl-C
    # lands while the run is computing, however busy the machine
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SLOW_L2_WRITES)
    env = {**os.environ, "ROMANDASK_TEST_FIRST_L2": str(tmp_path / "first-l2"),
           "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "romandask.cli", "run", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    progress = Progress(out)
    _wait_for(lambda: progress.exists() and len(progress.done()) >= 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["interrupted"], err
    assert not (out / "romandask.zarr").exists()

    again = _run(config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming: " in again.stdout
    assert _digest(out) == reference


#: Loaded by every process of the run (through PYTHONPATH): every L2 file but
#: the first is written 3 s late.
_SLOW_L2_WRITES = '''
import os, time
import asdf

_write_to = asdf.AsdfFile.write_to


def write_to(self, fd, *args, **kwargs):
    if str(getattr(fd, "name", "")).endswith("_cal.asdf.partial"):
        try:
            os.close(os.open(os.environ["ROMANDASK_TEST_FIRST_L2"],
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            time.sleep(3.0)
    return _write_to(self, fd, *args, **kwargs)


asdf.AsdfFile.write_to = write_to
'''

#: Loaded by every process of the run (the driver and its workers, through
#: PYTHONPATH): the first L2 file written fails as a full disk fails.
_DISK_FULL = '''
import errno, os
import asdf

_write_to = asdf.AsdfFile.write_to


def write_to(self, fd, *args, **kwargs):
    name = str(getattr(fd, "name", ""))
    if name.endswith("_cal.asdf.partial"):
        try:
            os.close(os.open(os.environ["ROMANDASK_TEST_FULL_ONCE"],
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            fd.write(b"#ASDF 1.0.0\\n")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _write_to(self, fd, *args, **kwargs)


asdf.AsdfFile.write_to = write_to
'''


@pytest.mark.parametrize("cluster", [
    {"type": "threads", "n_workers": 2},
    pytest.param({"type": "local", "n_workers": 2}, marks=pytest.mark.slow)],
    ids=["threads", "processes"])
def test_rerun_after_a_write_error_resumes_with_identical_bytes(tmp_path, reference, cluster):
    """A write that fails during the run (a full disk, as the L2 files are
    written; in the driver's threads, or on a worker process whose error
    reaches the driver): one line, exit 2, no partial file; the rerun
    completes the run with the reference's bytes."""
    out = tmp_path / "run"
    config = _write_config(tmp_path, out, cluster={**cluster, "progress": False})
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_DISK_FULL)
    flag = tmp_path / "failed-once"
    env = {**os.environ, "ROMANDASK_TEST_FULL_ONCE": str(flag),
           "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    failed = subprocess.run([sys.executable, "-m", "romandask.cli", "run", str(config)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert flag.exists(), "the write error was not simulated"
    assert failed.returncode == 2, failed.stdout + failed.stderr
    lines = failed.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert "_cal.asdf" in lines[0] and "No space left on device" in lines[0], lines[0]
    # a partial tree: the store not final, no temporary file, no file that is not whole
    assert not (out / "romandask.zarr").exists() and (out / PROGRESS_NAME).exists()
    assert not list(out.glob("l[12]/*.partial"))
    for name, sha in _digest(out).items():
        if name.endswith((".asdf")):
            assert reference[name] == sha, name

    again = _run(config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming: " in again.stdout
    assert _digest(out) == reference

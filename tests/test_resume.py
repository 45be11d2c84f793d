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

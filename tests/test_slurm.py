"""Runs on a real SLURM: dask-jobqueue workers, and a whole survey in one sbatch job.

Needs a SLURM the tests can submit to (``deploy/slurm/start-local-slurm.sh``
starts a single-node one); CI starts it and sets ``ROMANDASK_REQUIRE_SLURM=1``,
which turns a missing SLURM into a failure instead of a skip.  Marked
``slurm`` (``pytest -m slurm``).  The products are compared byte for byte
with a run of the same config on a local cluster.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm


def _slurm_up() -> str | None:
    """None if jobs can be submitted, else why not."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no sbatch/sinfo on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.startswith(("idle", "mixed", "alloc")) for s in states):
        return f"no usable SLURM node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm():
    reason = _slurm_up()
    if reason is not None:
        if os.environ.get("ROMANDASK_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM is required here but {reason}")
        pytest.skip(reason)


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _config(tmp_path: Path, name: str, data: dict, cluster: dict) -> Path:
    data = {**data, "output": {**data["output"], "directory": str(tmp_path / name)},
            "cluster": cluster}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _romandask(tmp_path: Path, *args: str, timeout: float = 1200) -> str:
    result = subprocess.run([sys.executable, "-m", "romandask.cli", *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


LOCAL = {"type": "local", "n_workers": 2, "progress": False}


def test_quickstart_on_slurm_jobs_matches_a_local_run(tmp_path):
    """``cluster: {type: slurm}``: dask-jobqueue worker jobs, TLS between them."""
    data = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    slurm = {"type": "slurm", "queue": "debug", "cores": 1, "processes": 1,
             "memory": "4GB", "walltime": "00:30:00", "minimum_jobs": 2, "maximum_jobs": 2,
             "shared_directory": str(tmp_path), "progress": False}
    out = _romandask(tmp_path, "run", str(_config(tmp_path, "slurm", data, slurm)))
    assert "dask: SLURM cluster, 2 to 2 job(s); scheduler tls://" in out
    _romandask(tmp_path, "run", str(_config(tmp_path, "local", data, LOCAL)))
    slurm_files, local_files = _digest(tmp_path / "slurm"), _digest(tmp_path / "local")
    assert sum(k.endswith("_cal.asdf") for k in local_files) == 36
    assert slurm_files == local_files
    # the worker jobs ran under SLURM and are gone
    logs = list(tmp_path.glob("slurm-*.out"))
    assert logs, "no SLURM job output in the driver's directory"
    assert any("dask worker" in p.read_text() or "Start worker" in p.read_text() for p in logs)


def test_survey_in_one_sbatch_allocation_matches_a_local_run(tmp_path):
    """``deploy/slurm/romandask-survey.sbatch``: scheduler, workers and driver in one job."""
    data = yaml.safe_load((REPO / "tests" / "data" / "small-survey.yaml").read_text())
    config = _config(tmp_path, "sbatch", data, {"type": "threads"})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["sbatch", "--wait", "--cpus-per-task=2", "--mem=6G",
                             "--time=20", "--output", str(tmp_path / "job-%j.log"),
                             str(REPO / "deploy" / "slurm" / "romandask-survey.sbatch"),
                             str(config)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=1200)
    log = "".join(p.read_text() for p in tmp_path.glob("job-*.log"))
    assert result.returncode == 0, result.stdout + result.stderr + log
    assert "2 workers on 1 node(s)" in log and "scheduler tls://" in log
    assert "workers offer" in log  # the workers offer MEMORY: tasks declare theirs
    assert not list(tmp_path.glob(".romandask-job-*"))  # certificates removed
    _romandask(tmp_path, "run", str(_config(tmp_path, "local", data, LOCAL)))
    assert _digest(tmp_path / "sbatch") == _digest(tmp_path / "local")
    assert sum(k.endswith("_uncal.asdf") for k in _digest(tmp_path / "local")) == 6

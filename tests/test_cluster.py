"""Clusters: SLURM job scripts through dask-jobqueue, TLS, loopback defaults, config errors."""

from __future__ import annotations

import stat
from pathlib import Path

import dask
import pytest
import yaml

from romandask.config import ClusterConfig, _cluster
from romandask.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "slurm"


def _job_script(cfg: ClusterConfig, shared: Path | None = None) -> tuple[str, str, list]:
    """The worker job script, the scheduler address and (while the cluster is up)
    the permission bits of the temporary key files in ``shared``."""
    from dask_jobqueue import SLURMCluster

    from romandask.cluster import slurm_kwargs

    with SLURMCluster(**slurm_kwargs(cfg)) as cluster:
        modes = [stat.S_IMODE(p.stat().st_mode) for p in (shared.iterdir() if shared else ())
                 if ".key." in p.name]
        return cluster.job_script(), cluster.scheduler_address, modes


def test_slurm_job_script_has_the_config(tmp_path):
    cfg = _cluster({"type": "slurm", "queue": "debug", "account": "proj", "cores": 4,
                    "processes": 4, "memory": "16GB", "walltime": "02:00:00",
                    "job_extra_directives": ["--constraint=cpu"], "maximum_jobs": 3,
                    "shared_directory": str(tmp_path)})
    script, address, key_modes = _job_script(cfg, tmp_path)
    for line in ("#SBATCH -p debug", "#SBATCH -A proj", "#SBATCH --cpus-per-task=4",
                 "#SBATCH -t 02:00:00", "#SBATCH --constraint=cpu", "OMP_NUM_THREADS=1",
                 "--nworkers 4", "--nthreads 1",
                 # workers leave ten minutes before the walltime, staggered
                 "--lifetime 6600s", "--lifetime-stagger 240s",
                 # scheduler <-> workers over TLS, temporary certificates
                 "--protocol tls://", "--tls-ca-file", "--tls-key"):
        assert line in script, line
    assert address.startswith("tls://")
    assert key_modes and all(mode & 0o077 == 0 for mode in key_modes)  # the user's only


def test_slurm_defaults_come_from_jobqueue_yaml(tmp_path):
    """Keys the run config leaves out come from the deploy example's jobqueue.yaml."""
    site = yaml.safe_load((DEPLOY / "jobqueue.yaml").read_text())["jobqueue"]["slurm"]
    site["local-directory"] = str(tmp_path)
    site["job-script-prologue"] = ["source /opt/site/env.sh"]
    cfg = _cluster({"type": "slurm", "tls": False})
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in site.items()}):
        script, address, _ = _job_script(cfg)
        # the run config's own values win
        override, _, _ = _job_script(_cluster({"type": "slurm", "walltime": "00:30:00",
                                               "lifetime": "20m", "tls": False}))
    assert "#SBATCH -p normal" in script and "#SBATCH --cpus-per-task=32" in script
    # the lifetime follows the site's walltime; the site's prologue is kept
    assert "-t 04:00:00" in script and "--lifetime 13800s" in script
    assert script.index("source /opt/site/env.sh") < script.index("OMP_NUM_THREADS=1")
    assert "-t 00:30:00" in override and "--lifetime 20m" in override
    assert "--nworkers 32" in script and "tls" not in script and address.startswith("tcp://")


def test_worker_lifetime_defaults():
    from romandask.cluster import worker_lifetime

    assert worker_lifetime("04:00:00", None, None) == ("13800s", "240s")
    assert worker_lifetime("00:30:00", None, None) == ("1440s", "144s")
    assert worker_lifetime("04:00:00", "3h", "1m") == ("3h", "1m")
    assert worker_lifetime(None, None, None) == (None, None)


def test_local_cluster_listens_on_loopback_only():
    from romandask.cluster import dask_client

    with dask_client(ClusterConfig(n_workers=1), say=lambda s: None) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert "127.0.0.1" in client.dashboard_link
        workers = client.scheduler_info()["workers"]
        assert workers and all(a.startswith("tcp://127.0.0.1:") for a in workers)


@pytest.mark.parametrize("section, where, needle", [
    ({"type": "local", "queue": "debug"}, "cluster.queue", "SLURM setting"),
    ({"type": "slurm", "walltime": "2 hours"}, "cluster.walltime", "HH:MM:SS"),
    ({"type": "slurm", "cores": 4, "processes": 8}, "cluster.processes", "per core"),
    ({"type": "slurm", "lifetime": "soon"}, "cluster.lifetime", "50m"),
    ({"type": "slurm", "minimum_jobs": 3, "maximum_jobs": 2}, "cluster.maximum_jobs", ">="),
    ({"type": "slurm", "job_extra_directives": ["constraint=cpu"]},
     "cluster.job_extra_directives[0]", "--constraint"),
    ({"type": "address", "address": "tls://10.0.0.1:8786"}, "cluster.certificates", "PEM"),
    ({"type": "address", "address": "tcp://10.0.0.1:8786",
      "certificates": {"ca_file": "/nope.pem", "cert": "/nope.pem", "key": "/nope.pem"}},
     "cluster.certificates.ca_file", "does not exist"),
])
def test_cluster_config_errors(section, where, needle):
    with pytest.raises(ConfigError) as err:
        _cluster(section)
    assert err.value.where == where and needle in err.value.one_line()


def test_unsafe_yaml_tags_are_refused(tmp_path):
    """Configs are read with a safe loader: no Python objects from user input."""
    from romandask.config import read_yaml

    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert "YAML" in err.value.one_line()


def _digest(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_unreachable_scheduler_is_one_line_and_leaves_outputs_alone(make_config, capsys):
    from romandask import cli
    from romandask.pipeline import run

    config, path = make_config()
    run(config, say=lambda s: None)
    before = _digest(config.output.directory)
    capsys.readouterr()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        status = cli.main(["run", str(path), "--overwrite", "--no-progress",
                           "--scheduler", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0
    assert "cluster.address (or --scheduler)" in err and "cannot reach" in err
    # --overwrite did not remove the earlier run: the cluster never came up
    assert _digest(config.output.directory) == before

"""Memory declarations: tasks carry their needs, workers offer theirs, too-big runs refused."""

from __future__ import annotations

import dataclasses

from dask.utils import parse_bytes

from romandask import cli
from romandask.cluster import dask_client, memory_budget, slurm_kwargs
from romandask.config import ClusterConfig, SlurmConfig
from romandask.memory import BASELINE, RESOURCE, needs
from romandask.pipeline import Survey, prepare, product_tasks, survey_dataset, task_needs
from romandask.resume import Progress


def test_needs_grow_with_the_arrays():
    small = needs(window=512, tile=256, frame_tile=256, cal_tile=256, nresultants=6,
                  cal_halo=4)
    tile = needs(window=512, tile=1024, frame_tile=1024, cal_tile=1024, nresultants=6,
                 cal_halo=4)
    deep = needs(window=512, tile=256, frame_tile=256, cal_tile=256, nresultants=12,
                 cal_halo=4)
    for kind in ("render", "l1_tile", "calibrate", "write"):
        assert getattr(tile, kind) > getattr(small, kind), kind
    for kind in ("l1_tile", "calibrate", "readout", "files"):
        assert getattr(deep, kind) > getattr(small, kind), kind
    full = needs(window=4088, tile=1022, frame_tile=1022, cal_tile=1022, nresultants=9,
                 cal_halo=4)
    # the ASDF writers hold a whole SCA's ramps and L2 arrays
    assert full.largest()[0] == "files"
    assert full.files > 9 * 4096**2 * 2 + 5 * 4088**2 * 4


def test_every_heavy_layer_declares_its_need(make_config, tmp_path):
    config, _ = make_config()
    survey: Survey = prepare(config)
    expected = task_needs(survey)
    ds, _, _ = survey_dataset(survey, expected)
    jobs = product_tasks(survey, ds, tmp_path / "store",
                         Progress(tmp_path), [(0, 0), (1, 1)], expected)
    graph = jobs[0].__dask_graph__()
    declared = {}
    for name, layer in graph.layers.items():
        resources = (layer.annotations or {}).get("resources")
        declared[name.split("-")[0]] = resources[RESOURCE] if resources else None
    assert declared["select"] == expected.select
    assert declared["expected"] == expected.render
    assert declared["counts"] == expected.counts
    assert declared["readout"] == expected.readout
    assert declared["l1tile"] == expected.l1_tile
    assert declared["refpix"] == expected.reference
    assert declared["caltile"] == expected.calibrate
    assert declared["store"] == expected.write
    assert declared["files"] == expected.files
    assert declared["mark"] is None  # bookkeeping declares nothing
    # without declarations, no layer carries resources
    ds, _, _ = survey_dataset(survey, None)
    jobs = product_tasks(survey, ds, tmp_path / "store",
                         Progress(tmp_path), [(0, 0)], None)
    assert not any((layer.annotations or {}).get("resources")
                   for layer in jobs[0].__dask_graph__().layers.values())


def test_workers_offer_their_memory_less_the_baseline():
    cfg = ClusterConfig(type="local", n_workers=1, memory_limit="2GiB", progress=False)
    assert memory_budget(cfg) == parse_bytes("2GiB") - BASELINE
    with dask_client(cfg, say=lambda s: None) as client:
        workers = client.scheduler_info()["workers"].values()
        assert [w["resources"] for w in workers] == [{RESOURCE: memory_budget(cfg)}]
    slurm = ClusterConfig(type="slurm", slurm=SlurmConfig(cores=8, processes=4,
                                                          memory="16GiB"))
    args = slurm_kwargs(slurm)["worker_extra_args"]
    assert args[args.index("--resources") + 1] == \
        f"{RESOURCE}={parse_bytes('4GiB') - BASELINE}"
    assert memory_budget(dataclasses.replace(cfg, type="threads")) is None


def test_a_task_too_big_for_the_workers_is_refused_before_anything(make_config, capsys):
    _, path = make_config({"detector": {"window": 1024, "tile": 1024},
                           "cluster": {"type": "local", "n_workers": 1,
                                       "memory_limit": "1GiB"}})
    out = path.parent / "out"
    assert cli.main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "task needs" in err and "detector.tile" in err
    assert not out.exists()

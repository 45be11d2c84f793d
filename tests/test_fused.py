"""One task per (exposure, SCA) for windows of one tile: the same bytes as the
graph of per-stage tasks, a few tasks per image, and their memory declared."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from romandask import pipeline
from romandask.memory import RESOURCE
from romandask.pipeline import fused, prepare, run, task_needs
from romandask.plan import graph_size

PRODUCTS = ["counts", "truth", "ramps", "l1", "l2", "fits"]


def _digest(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _in(config, directory: Path):
    return dataclasses.replace(config, output=dataclasses.replace(config.output,
                                                                   directory=directory))


def test_fused_run_gives_the_bytes_of_the_staged_graph(make_config, tmp_path, monkeypatch):
    config, _ = make_config({"detector": {"window": 48, "tile": 64},
                             "output": {"products": PRODUCTS}})
    assert fused(config)
    run(_in(config, tmp_path / "fused"), say=lambda s: None)
    monkeypatch.setattr(pipeline, "fused", lambda config: False)
    run(_in(config, tmp_path / "staged"), say=lambda s: None)
    one, other = _digest(tmp_path / "fused"), _digest(tmp_path / "staged")
    assert len(one) > 20 and any(name.endswith("_cal.asdf") for name in one)
    assert one.keys() == other.keys()
    differ = [name for name in one if one[name] != other[name]]
    assert not differ, differ[:5]


@pytest.mark.parametrize("products, per_image", [(["counts", "truth"], 1), (PRODUCTS, 1)])
def test_fused_graph_is_one_task_per_image(make_config, products, per_image):
    config, _ = make_config({"detector": {"window": 32, "tile": 32},
                             "output": {"products": products},
                             "survey": {"scas": [1, 2, 3]}})
    survey = prepare(config)
    models = 3 if "l1" in products else 0  # one synthetic detector model per SCA
    assert graph_size(survey) == per_image * len(survey.views) + models


def test_fused_tasks_declare_their_memory(make_config, tmp_path):
    from romandask.resume import Progress

    config, _ = make_config({"detector": {"window": 32, "tile": 32},
                             "output": {"products": PRODUCTS}})
    survey = prepare(config)
    needs = task_needs(survey)
    assert needs.largest() == ("image", needs.image)
    assert needs.image > max(needs.render, needs.calibrate, needs.files)
    ds, _, _ = pipeline.survey_dataset(survey, needs)
    jobs = pipeline.image_tasks(survey, ds, tmp_path / "store", Progress(tmp_path),
                                [(0, 0), (1, 1)], needs)
    declared = {}
    for job in jobs:
        for name, layer in job.__dask_graph__().layers.items():
            resources = (layer.annotations or {}).get("resources")
            declared[name.split("-")[0]] = resources[RESOURCE] if resources else None
    assert declared == {"image": needs.image, "detmodel": needs.model}

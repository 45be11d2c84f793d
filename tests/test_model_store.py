"""The synthetic detector drawn once per (seed, SCA) into a store and read back.

The stored model must be the lazily drawn one bit for bit on any rectangle;
its entry appears complete or not at all, whoever writes it and however the
writing ends; a run draws each SCA once, every tile reads it, and a run that
finds its models already stored writes the same bytes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import pickle
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from romandask.detector import stored
from romandask.detector.reference import NBORDER, NSCI, STORED_FIELDS, SyntheticModel
from romandask.detector.stored import (BYTES_PER_PIXEL, StoredModel, entry_bytes, entry_name,
                                       remove_partial_entries, stored_model)
from romandask.errors import InputError, OutputError
from romandask.instrument.matables import MATable

SEED, SCA = 11, 5


def assert_same_region(a, b):
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and x.shape == y.shape, f.name
        assert np.array_equal(x, y), f.name


def rectangles(n: int, count: int, rng) -> list[tuple[slice, slice]]:
    """Random frame rectangles of an n-pixel frame, with the corners, the border
    and the window's first pixel among them."""
    out = [(slice(0, n), slice(0, n)), (slice(0, NBORDER), slice(0, n)),
           (slice(n - NBORDER, n), slice(n - 1, n)), (slice(NBORDER, NBORDER + 1),
                                                      slice(NBORDER, NBORDER + 1)),
           (slice(NBORDER - 1, NBORDER + 2), slice(n - NBORDER - 2, n - NBORDER + 1))]
    for _ in range(count):
        r0, c0 = rng.integers(0, n, 2)
        r1, c1 = rng.integers(r0 + 1, n + 1), rng.integers(c0 + 1, n + 1)
        out.append((slice(int(r0), int(r1)), slice(int(c0), int(c1))))
    return out


@pytest.mark.parametrize("window", [16, 250])
def test_stored_regions_equal_the_lazy_model_bit_for_bit(tmp_path, window):
    model = stored_model(SEED, SCA, window, tmp_path)
    lazy = SyntheticModel(SEED, SCA, window)
    n = window + 2 * NBORDER
    table = MATable.numbered(4)
    for rows, cols in rectangles(n, 12, np.random.default_rng(window)):
        assert_same_region(model.region(rows, cols), lazy.region(rows, cols))
        assert np.array_equal(model.biascorr(rows, cols, table), lazy.biascorr(rows, cols, table))
    assert np.array_equal(model.dark_cube(slice(3, 9), slice(0, n), table),
                          lazy.dark_cube(slice(3, 9), slice(0, n), table))
    assert np.array_equal(model.amp33_med(slice(0, n)), lazy.amp33_med(slice(0, n)))
    assert model.reference_gain() == lazy.reference_gain()
    # only the window's frame is stored: 88 bytes a pixel
    entry = tmp_path / entry_name(SEED, SCA, window)
    size = sum(p.stat().st_size for p in entry.glob("*.npy"))
    assert BYTES_PER_PIXEL == 88
    assert entry_bytes(window) < size <= entry_bytes(window) + 128 * len(STORED_FIELDS)
    assert entry_bytes(NSCI) == 88 * 4096 ** 2


def test_a_stored_model_pickles_to_its_path(tmp_path):
    model = stored_model(SEED, SCA, 16, tmp_path)
    blob = pickle.dumps(model)
    assert len(blob) < 1000
    copy = pickle.loads(blob)
    assert isinstance(copy, StoredModel) and copy.entry == model.entry
    every = slice(0, 24)
    assert_same_region(copy.region(every, every), model.region(every, every))


def test_a_second_call_reads_the_entry_without_drawing(tmp_path, monkeypatch):
    stored_model(SEED, SCA, 16, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}

    def no_drawing(*args, **kwargs):
        raise AssertionError("drew the model again")

    monkeypatch.setattr(SyntheticModel, "_draw_block", no_drawing)
    model = stored_model(SEED, SCA, 16, tmp_path)
    model.region(slice(0, 24), slice(0, 24))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes


def test_an_interrupted_write_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = {"n": 0}
    gather = SyntheticModel._gather

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:  # the second strip
            raise KeyboardInterrupt
        return gather(self, *args)

    monkeypatch.setattr(SyntheticModel, "_gather", failing)
    with pytest.raises(KeyboardInterrupt):
        stored_model(SEED, SCA, 250, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(SyntheticModel, "_gather", gather)
    model = stored_model(SEED, SCA, 250, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [model.entry.name]


def test_a_killed_writer_leaves_a_partial_entry_that_is_ignored_and_removed(tmp_path):
    name = entry_name(SEED, SCA, 16)
    stale = tmp_path / f".{name}.partial-0123"
    stale.mkdir()
    (stale / "gain.npy").write_bytes(b"half a file")
    model = stored_model(SEED, SCA, 16, tmp_path)
    assert model.entry == tmp_path / name and stale.exists()
    remove_partial_entries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def _draw(store: str) -> str:
    model = stored_model(SEED, SCA, 250, Path(store))
    every = slice(0, 258)
    region = model.region(every, every)
    return hashlib.sha256(b"".join(getattr(region, f.name).tobytes()
                                   for f in fields(region))).hexdigest()


def test_concurrent_writers_agree_and_one_entry_remains(tmp_path):
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        digests = pool.map(_draw, [str(tmp_path)] * 3)
    assert len(set(digests)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [entry_name(SEED, SCA, 250)]
    assert digests[0] == _draw(str(tmp_path))


def test_an_entry_of_another_model_is_refused_in_one_line(tmp_path):
    model = stored_model(SEED, SCA, 16, tmp_path)
    record = model.entry / "model.json"
    record.write_text(record.read_text().replace(f'"seed": {SEED}', '"seed": 12'))
    with pytest.raises(InputError) as err:
        StoredModel(model.entry, SEED, SCA, 16).region(slice(0, 2), slice(0, 2))
    assert "\n" not in str(err.value) and "another detector model" in str(err.value)
    assert "delete it" in str(err.value)
    (model.entry / "model.json").unlink()
    with pytest.raises(InputError, match="not a complete detector model"):
        StoredModel(model.entry, SEED, SCA, 16).region(slice(0, 2), slice(0, 2))


def test_a_store_that_cannot_be_written_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    with pytest.raises(OutputError) as err:
        stored_model(SEED, SCA, 16, afile / "store")
    assert "\n" not in str(err.value) and "detector.model_store" in str(err.value)
    assert afile.read_text() == "not a directory"


# --------------------------------------------------------------------------
# in a run
# --------------------------------------------------------------------------

def test_every_tile_of_an_sca_depends_on_its_one_model_task(make_config):
    from romandask.pipeline import model_array, prepare, survey_dataset, task_needs

    config, _ = make_config()
    survey = prepare(config)
    needs = task_needs(survey)
    ds, _, _ = survey_dataset(survey, needs)
    graph = ds["l2_data"].data.__dask_graph__()
    name = model_array(survey).name
    assert name.startswith("detmodel-")
    assert graph.layers[name].annotations["resources"]["MEMORY"] == needs.model
    keys = {0: (name, 0), 1: (name, 1)}
    tasks = graph.to_dict()
    for prefix in ("l1tile-", "caltile-", "refpix-"):
        users = [(k, v) for k, v in tasks.items() if isinstance(k, tuple)
                 and str(k[0]).startswith(prefix)]
        assert users, prefix
        for key, task in users:
            isca = key[2]
            assert keys[isca] in _keys_in(task), (prefix, key)
            assert keys[1 - isca] not in _keys_in(task)
    assert len([k for k in tasks if isinstance(k, tuple) and k[0] == name]) == 2


def _keys_in(task) -> set:
    """Every key-like tuple inside a task (legacy tuples or Dask Task objects)."""
    out = set()
    deps = getattr(task, "dependencies", None)
    if deps is not None:
        return set(deps)
    stack = [task]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            out.add(item)
            stack.extend(item)
        elif isinstance(item, (list, dict)):
            stack.extend(item.values() if isinstance(item, dict) else item)
    return out


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_run_draws_each_sca_once_and_a_rerun_reads_the_store(make_config, tmp_path):
    from romandask.pipeline import run

    store = tmp_path / "models"
    config, _ = make_config({"output": {"products": ["l1", "l2"]},
                             "detector": {"model_store": str(store)}})
    run(config, say=lambda s: None)
    entries = sorted(p.name for p in store.iterdir())
    assert entries == [entry_name(7, sca, 64) for sca in (1, 2)]
    out = config.output.directory
    assert not (out / stored.STORE_NAME).exists()
    first = _digest(out)
    mtimes = {p: p.stat().st_mtime_ns for p in store.rglob("*")}

    # the same run with the models already stored: the same bytes, nothing drawn
    again, _ = make_config({"output": {"products": ["l1", "l2"], "overwrite": True},
                            "detector": {"model_store": str(store)}})
    run(again, say=lambda s: None)
    assert _digest(out) == first
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == mtimes

    # and the run's own store (in output.directory) gives the same bytes, then goes
    own, _ = make_config({"output": {"products": ["l1", "l2"], "overwrite": True}})
    run(own, say=lambda s: None)
    assert _digest(out) == first
    assert not (out / stored.STORE_NAME).exists()


def test_overwrite_removes_the_store_of_an_interrupted_run(make_config):
    from romandask.pipeline import clear_outputs

    config, _ = make_config({"output": {"products": ["l1"], "overwrite": True}})
    left = config.output.directory / stored.STORE_NAME
    stored_model(7, 1, 64, left)
    clear_outputs(config)
    assert not left.exists()

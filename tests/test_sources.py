"""Sources cut on the workers: the same rows, in the same order, as a cut over the
whole catalog on one process; truth gathered from the (exposure, SCA) pieces."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from astropy.table import Table

from romandask import cli, store
from romandask.config import load_config
from romandask.pipeline import image_truth, load_catalog, prepare
from romandask.scene import sources as sources_mod
from romandask.scene.select import CatalogIndex, select_sources
from romandask.scene.sources import Sky

REPO = Path(__file__).resolve().parents[1]


def reference_truth(config) -> dict[str, np.ndarray]:
    """The truth table as a cut over the whole catalog, in this process, gives it."""
    survey = prepare(config)
    index = CatalogIndex(load_catalog(config, survey.views))
    parts = [image_truth(v, select_sources(v, index, config.scene.margin))
             for v in survey.views]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def assert_same_truth(path: Path, expected: dict[str, np.ndarray]) -> None:
    truth = xr.open_zarr(path, group="truth").compute()
    assert truth.sizes["source"] == len(expected["id"]) > 0
    for name, values in expected.items():
        got = truth[name].values
        if values.dtype.kind == "U":
            got = got.astype(values.dtype)
        np.testing.assert_array_equal(got, values, err_msg=name)


def test_quickstart_truth_from_the_workers_equals_the_whole_catalog_cut(tmp_path):
    """The quick-start (its sky, footprint, margin and 2-worker local cluster), truth
    only: every (exposure, SCA)'s rows, cut on the workers, are the rows a cut over
    the whole catalog gives, in order."""
    data = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    data["output"] = {"directory": str(tmp_path / "qs"), "products": ["truth"]}
    data["cluster"]["progress"] = False
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert cli.main(["run", str(path)]) == 0
    config = load_config(path)
    assert_same_truth(tmp_path / "qs" / store.STORE_NAME, reference_truth(config))


@pytest.mark.parametrize("partition", ["cap", "healpix", "file", "partitioned"])
def test_sky_select_equals_the_whole_catalog_cut(make_config, tmp_path, partition):
    from romandask.scene.catalog import synthesize_catalog, write_catalog
    from romandask.scene.healpix import write_partitioned

    overrides = {"catalog": {"synthetic": {"partition": "healpix"
                                           if partition == "healpix" else "cap"}},
                 "survey": {"scas": [1, 9, 18]}, "detector": {"window": 256, "tile": 256}}
    if partition in ("file", "partitioned"):
        cat = synthesize_catalog(9.70, -44.0, 0.9, np.random.default_rng(3))
        file = tmp_path / "cat.parquet"
        write_catalog(cat, file)
        where = file if partition == "file" else write_partitioned(cat, tmp_path / "parts", 64)
        overrides["catalog"] = {"synthetic": None, "file": str(where)}
    config, _ = make_config(overrides)
    survey = prepare(config)
    assert survey.sky.kind == partition
    sky = pickle.loads(pickle.dumps(survey.sky))  # what a worker gets
    index = CatalogIndex(load_catalog(config, survey.views))
    for view in survey.views:
        mine = sky.select(view)
        theirs = select_sources(view, index, config.scene.margin)
        assert len(mine["id"]) > 0
        assert mine.keys() == theirs.keys()
        for name in theirs:
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


def test_margin_corners_are_selected(tmp_path):
    """A source near a corner of the margin box (margin pixels out along both axes)
    is the view's, though it lies sqrt(2) margins from the window's corner."""
    from romandask.config import parse_config
    from romandask.pipeline import footprint

    data = {"seed": 1, "survey": {"exposures": [
        {"ra": 9.7, "dec": -44.0, "pa": 0.0, "filter": "F158", "ma_table": 4,
         "start_time": "2027-06-01T00:00:00"}], "scas": [5]},
        "catalog": {"synthetic": {}}, "detector": {"window": 32, "tile": 32},
        "scene": {"margin": 64}, "output": {"directory": "out"}}
    view = footprint(parse_config(data, tmp_path))[0]
    b = view.bounds
    corners = [(b.xmin - 63.0, b.ymin - 63.0), (b.xmax + 63.0, b.ymax + 63.0),
               (b.xmin - 63.0, b.ymax + 63.0), (b.xmax + 63.0, b.ymin - 63.0)]
    ra, dec = view.wcs.toWorld(np.array([c[0] for c in corners]),
                               np.array([c[1] for c in corners]), units="deg")
    k = len(ra)
    catalog = tmp_path / "corners.ecsv"
    Table({"id": np.arange(k), "ra": ra, "dec": dec, "type": ["PSF"] * k, "n": np.ones(k),
           "half_light_radius": np.zeros(k), "pa": np.zeros(k), "ba": np.ones(k),
           "F158": np.full(k, 1e-9)}).write(catalog)
    data["catalog"] = {"file": str(catalog)}
    config = parse_config(data, tmp_path)
    got = Sky.from_config(config, [view]).select(view)
    assert sorted(got["id"]) == [0, 1, 2, 3]


def test_truth_chunks_gather_the_pieces_in_order(make_config, tmp_path, monkeypatch):
    """Truth gathered in chunks smaller than an (exposure, SCA)'s piece, and spanning
    pieces, is the table in one chunk."""
    config, _ = make_config({"output": {"products": ["truth"], "directory": "one"},
                             "detector": {"window": 128, "tile": 128}})
    from romandask.pipeline import run as cli_run

    cli_run(config, say=lambda s: None)
    whole = xr.open_zarr(config.output.directory / store.STORE_NAME, group="truth").compute()
    sizes = whole.groupby(["exposure", "sca"]).count()["id"].values
    chunk = int(sizes.min()) // 2 + 1
    assert whole.sizes["source"] > 3 * chunk
    monkeypatch.setattr(store, "TRUTH_ROWS", chunk)
    config = dataclasses.replace(config, output=dataclasses.replace(
        config.output, directory=tmp_path / "many"))
    cli_run(config, say=lambda s: None)
    path = config.output.directory / store.STORE_NAME
    many = xr.open_zarr(path, group="truth")
    assert many["id"].encoding["chunks"] == (chunk,)
    xr.testing.assert_identical(many.compute(), whole)
    assert not (config.output.directory / "romandask.progress").exists()


def test_pixel_cache_is_bounded(monkeypatch, make_config):
    config, _ = make_config({"catalog": {"synthetic": {"partition": "healpix"}},
                             "survey": {"scas": [1, 18]}})
    survey = prepare(config)
    sky = survey.sky
    sources_mod.clear_cache()
    pixels = np.unique(np.concatenate([sky.pixels(v) for v in survey.views]))
    one = sky.pixel_index(int(pixels[0]))
    budget = sources_mod._index_bytes(one) + 1
    monkeypatch.setattr(sources_mod, "PIXEL_CACHE_BYTES", budget)
    for p in pixels:
        sky.pixel_index(int(p))
    info = sources_mod.cache_info()
    assert len(pixels) > 1 and info["entries"] == 1 and info["bytes"] < budget
    assert info["misses"] == len(pixels) and info["hits"] == 1
    # and a pixel read again after eviction is the same pixel
    again = sky.pixel_index(int(pixels[0]))
    np.testing.assert_array_equal(np.asarray(again.catalog["id"]), np.asarray(one.catalog["id"]))


def test_partitioned_pixels_need_ids(tmp_path):
    from romandask.errors import InputError
    from romandask.scene.catalog import synthesize_catalog
    from romandask.scene.healpix import PartitionedCatalog, write_partitioned

    cat = synthesize_catalog(9.7, -44.0, 0.05, np.random.default_rng(0))
    parts = write_partitioned(cat, tmp_path / "p", 64)
    pixel = next(iter(PartitionedCatalog(parts).counts))
    table = Table.read(parts / f"pixel_{pixel}.parquet")
    del table["id"]
    table.write(parts / f"pixel_{pixel}.parquet", overwrite=True)
    with pytest.raises(InputError, match="has no 'id' column"):
        PartitionedCatalog(parts).read_pixel(pixel, ["F158"])


def test_partitioned_pixel_without_a_flux_column_is_refused_before_the_run(make_config,
                                                                           tmp_path, capsys):
    from romandask.scene.catalog import synthesize_catalog
    from romandask.scene.healpix import PartitionedCatalog, write_partitioned

    cat = synthesize_catalog(9.70, -44.0, 0.5, np.random.default_rng(1))
    parts = write_partitioned(cat, tmp_path / "parts", 64)
    config, path = make_config({"catalog": {"synthetic": None, "file": str(parts)}})
    survey = prepare(config)
    pixel = int(survey.sky.pixels(survey.views[0])[0])
    assert pixel in PartitionedCatalog(parts).counts
    table = Table.read(parts / f"pixel_{pixel}.parquet")
    del table["F158"]
    table.write(parts / f"pixel_{pixel}.parquet", overwrite=True)
    capsys.readouterr()
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"pixel_{pixel}.parquet" in err and "F158" in err
    assert not config.output.directory.exists()


def test_a_bad_value_in_a_partitioned_pixel_is_refused_before_anything_is_written(
        make_config, tmp_path, capsys):
    from romandask.scene.catalog import synthesize_catalog
    from romandask.scene.healpix import PartitionedCatalog, write_partitioned

    cat = synthesize_catalog(9.70, -44.0, 0.5, np.random.default_rng(1))
    parts = write_partitioned(cat, tmp_path / "parts", 64)
    config, path = make_config({"catalog": {"synthetic": None, "file": str(parts)},
                                "detector": {"window": 32, "tile": 32},
                                "output": {"products": ["counts", "truth"]}})
    assert cli.main(["run", str(path)]) == 0
    out = config.output.directory
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert before
    # a NaN flux in a pixel the survey's last image reads (one no other image reads, if any)
    survey = prepare(config)
    counts = PartitionedCatalog(parts).counts
    first = {int(p) for v in survey.views[:-1] for p in survey.sky.pixels(v)}
    last = [int(p) for p in survey.sky.pixels(survey.views[-1]) if int(p) in counts]
    pixel = next((p for p in last if p not in first), last[-1])
    table = Table.read(parts / f"pixel_{pixel}.parquet")
    table["F158"][0] = np.nan
    table.write(parts / f"pixel_{pixel}.parquet", overwrite=True)
    capsys.readouterr()
    assert cli.main(["run", str(path), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"pixel_{pixel}.parquet" in err and "F158" in err
    # the finished run it would have replaced is as it was
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before

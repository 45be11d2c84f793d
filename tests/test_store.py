"""The run's zarr store as xarray sees it: attributes, times, chunks, truth rows,
the windows' WCS, sky look-ups (``romandask.open_store``) and sharded small arrays."""

from __future__ import annotations

import datetime as dt
import math
import time

import dask.array as da
import galsim
import numpy as np
import pytest
import roman_datamodels.datamodels as rdm
import xarray as xr
import zarr

import romandask
from romandask import shards, store
from romandask.config import parse_config
from romandask.errors import InputError
from romandask.export import l1_filename, l2_filename, sim_entries
from romandask.pipeline import run, window_fits_wcs
from romandask.survey.footprint import footprint

from conftest import BASE, merge

WINDOW = 64
#: Two exposures dithered by about 7 pixels (so that most sky is seen twice),
#: a start time with a fraction of a second, two SCAs, a denser synthetic sky
#: and every store product.
OVERRIDES = {
    "survey": {"exposures": [
        {"ra": 9.70, "dec": -44.0, "pa": 0.0, "filter": "F158", "ma_table": 4,
         "start_time": "2027-06-01T00:00:00"},
        {"ra": 9.7003, "dec": -43.9998, "pa": 0.0, "filter": "F158", "ma_table": 4,
         "start_time": "2027-06-01T00:03:00.250000"},
    ], "scas": [1, 2]},
    "catalog": {"synthetic": {"density_scale": 4.0}},
    "detector": {"window": WINDOW, "tile": 32},
    "output": {"products": ["counts", "truth", "ramps", "l1", "l2", "mosaic"]},
    "mosaic": {"pixel_scale": 0.11, "tile_size": 256},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of a small quick-start-like config: (config, store path)."""
    tmp = tmp_path_factory.mktemp("store")
    data = merge(BASE, merge(OVERRIDES, {"output": {"directory": str(tmp / "out")}}))
    config = parse_config(data, tmp, tmp / "config.yaml")
    run(config, say=lambda s: None)
    return config, config.output.directory / store.STORE_NAME


GROUPS = (None, "truth", "mosaic")


def test_every_coordinate_has_units_and_long_name(finished):
    """Every coordinate of every group: ``long_name`` and ``units`` (``start_time``'s
    units are its CF encoding's, which xarray decodes to datetime64)."""
    _, path = finished
    for group in GROUPS:
        ds = xr.open_zarr(path, group=group)
        assert len(ds.coords) >= (1 if group == "truth" else 8), group
        for name, coord in ds.coords.items():
            assert coord.attrs.get("long_name"), (group, name)
            if coord.dtype.kind == "M":
                assert "units" not in coord.attrs
                assert " since " in coord.encoding["units"], (group, name)
            else:
                assert coord.attrs.get("units"), (group, name)
    root = xr.open_zarr(path)
    assert root.ra.attrs["units"] == "deg" and root.exposure_time.attrs["units"] == "s"
    assert root.x.attrs["units"] == "pixel" and root.filter.attrs["units"] == "1"
    for name in ("exposure", "sca", "ra", "dec", "pa", "filter", "ma_table", "start_time",
                 "exposure_time", "ra_center", "dec_center", "ra_corners", "dec_corners",
                 "resultant", "frame_y", "frame_x", "amp33_x", "nresultants", "frame_time",
                 "read_pattern", "y", "x", "corner"):
        assert name in root.coords, name


def test_start_time_is_datetime64_utc(finished):
    config, path = finished
    ds = xr.open_zarr(path)
    assert np.issubdtype(ds.start_time.dtype, np.datetime64)
    expected = np.array([np.datetime64(e.start_time, "us") for e in config.survey.exposures])
    np.testing.assert_array_equal(ds.start_time.values, expected.astype(ds.start_time.dtype))
    assert config.survey.exposures[1].start_time == dt.datetime(2027, 6, 1, 0, 3, 0, 250000)
    assert ds.start_time.attrs["timezone"] == "UTC"
    assert ds.start_time.encoding["units"] == store.TIME_ENCODING["units"]
    assert ds.start_time.encoding["calendar"] == "proleptic_gregorian"


def test_chunks_are_the_data_chunks(finished):
    """``Dataset.chunks`` is defined on every group and is the cubes' chunking."""
    config, path = finished
    ds = xr.open_zarr(path)
    chunks = ds.chunks
    nexp, nsca = len(config.survey.exposures), len(config.survey.scas)
    assert chunks["exposure"] == (1,) * nexp and chunks["sca"] == (1,) * nsca
    assert chunks["y"] == chunks["x"] == (32, 32)
    assert dict(zip(ds.counts.dims, ds.counts.chunks)) == {d: chunks[d] for d in ds.counts.dims}
    assert dict(zip(ds.ramps.dims, ds.ramps.chunks)) == {d: chunks[d] for d in ds.ramps.dims}
    # the small coordinates are chunked like the cubes, several chunks to a file
    assert ds.ra_corners.chunks == ((1,) * nexp, (1,) * nsca, (4,))
    assert ds.ra.chunks == ((1,) * nexp,)
    for name in ("ra", "filter", "start_time", "ra_corners"):
        files = [p for p in (path / name / "c").rglob("*") if p.is_file()]
        assert len(files) == 1, name  # one shard holds every exposure here
    truth = xr.open_zarr(path, group="truth")
    assert truth.chunks["source"] == (truth.sizes["source"],)
    mosaic = xr.open_zarr(path, group="mosaic")
    assert mosaic.chunks["tile"] == (1,) * mosaic.sizes["tile"]
    assert mosaic.chunks["y"] == mosaic.chunks["x"] == (256,)
    assert mosaic.tile_name.chunks == ((1,) * mosaic.sizes["tile"],)


def test_truth_rows_have_a_source_coordinate(finished):
    _, path = finished
    truth = xr.open_zarr(path, group="truth")
    n = truth.sizes["source"]
    assert n > 10 and "source" in truth.xindexes
    np.testing.assert_array_equal(truth.source.values, np.arange(n))
    assert truth.source.dtype == np.int64
    k = n // 2
    row = truth.sel(source=k).compute()
    assert float(row.ra) == float(truth.ra.values[k]) and int(row.id) == truth.id.values[k]


def test_stored_wcs_is_the_files_wcs(finished):
    """``fits_wcs`` of every window is the L1 and L2 files' ``fits_wcs``, and the
    window's WCS made again from its view."""
    config, path = finished
    ds = xr.open_zarr(path)
    out = config.output.directory
    views = footprint(config)
    for k, view in enumerate(views):
        ie, isca = divmod(k, len(config.survey.scas))
        text = str(ds.fits_wcs[ie, isca].values)
        assert text.startswith("WCSAXES") and "CTYPE1  = 'RA---TAN-SIP'" in text
        assert text == window_fits_wcs(view)
        for name in (l1_filename(view.exposure, view.sca), l2_filename(view.exposure, view.sca)):
            folder = "l1" if name.endswith("_uncal.asdf") else "l2"
            with rdm.open(out / folder / name) as model:
                assert str(sim_entries(model)["fits_wcs"]) == text, name


def _brute_force(views, ra: float, dec: float) -> dict[tuple[int, int], tuple[float, float]]:
    """Windows containing (ra, dec) by every view's own GalSim WCS: 0-based x, y."""
    out = {}
    pos = galsim.CelestialCoord(ra * galsim.degrees, dec * galsim.degrees)
    for view in views:
        p = view.wcs.toImage(pos)
        x, y = view.to_array(p.x, p.y)
        if -0.5 <= x < WINDOW - 0.5 and -0.5 <= y < WINDOW - 0.5:
            out[(view.exposure.id, view.sca)] = (x, y)
    return out


def test_images_at_finds_each_truth_source(finished):
    """Each truth row's (ra, dec) is found on its (exposure, SCA) at its x, y, when
    inside the window; sources of the margin, outside it, are not."""
    _, path = finished
    opened = romandask.open_store(path)
    truth = opened.truth.compute()
    assert truth.sizes["source"] > 10
    inside = 0
    for k in range(truth.sizes["source"]):
        rows = opened.images_at(truth.ra.values[k], truth.dec.values[k])
        assert rows.dtype == store.IMAGE_ROW
        mine = rows[(rows["exposure"] == truth.exposure.values[k])
                    & (rows["sca"] == truth.sca.values[k])]
        x, y = truth.x.values[k], truth.y.values[k]
        if -0.5 <= x < WINDOW - 0.5 and -0.5 <= y < WINDOW - 0.5:
            inside += 1
            assert len(mine) == 1, k
            assert abs(mine["x"][0] - x) < 0.01 and abs(mine["y"][0] - y) < 0.01
        else:
            assert len(mine) == 0, k
    assert inside > 10


def test_images_at_agrees_with_every_view(finished):
    """Positions over and around the footprint (edges included): the windows
    images_at returns are those whose own GalSim WCS puts the position inside."""
    config, path = finished
    opened = romandask.open_store(path)
    views = footprint(config)
    rng = np.random.default_rng(5)
    ds = opened.dataset
    lo_ra, hi_ra = ds.ra_corners.values.min(), ds.ra_corners.values.max()
    lo_dec, hi_dec = ds.dec_corners.values.min(), ds.dec_corners.values.max()
    pad = 0.002
    ras = rng.uniform(lo_ra - pad, hi_ra + pad, 150)
    decs = rng.uniform(lo_dec - pad, hi_dec + pad, 150)
    # and points a tenth of a pixel inside and outside a window's edge
    view = views[0]
    for x in (-0.6, -0.4, WINDOW - 0.6, WINDOW - 0.4):
        sky = view.wcs.toWorld(galsim.PositionD(*view.to_galsim(x, WINDOW / 2)))
        ras, decs = np.append(ras, sky.ra.deg), np.append(decs, sky.dec.deg)
    counts = {0: 0, 1: 0, 2: 0}
    for ra, dec in zip(ras, decs):
        rows = opened.images_at(ra, dec)
        truth = _brute_force(views, ra, dec)
        assert {(int(r["exposure"]), int(r["sca"])) for r in rows} == set(truth)
        for r in rows:
            x, y = truth[(int(r["exposure"]), int(r["sca"]))]
            assert abs(r["x"] - x) < 0.01 and abs(r["y"] - y) < 0.01
        counts[min(len(rows), 2)] += 1
    assert counts[0] > 0 and counts[1] > 0 and counts[2] > 0


def test_images_at_off_the_windows_and_on_two_dithers(finished):
    config, path = finished
    opened = romandask.open_store(path)
    for ra, dec in ((189.7, 44.0), (9.70, -43.0), (0.0, 90.0), (0.0, -90.0)):
        rows = opened.images_at(ra, dec)
        assert rows.shape == (0,) and rows.dtype == store.IMAGE_ROW
    # the centre of exposure 0's window on SCA 1 is seen by exposure 1's too
    ds = opened.dataset
    rows = opened.images_at(float(ds.ra_center[0, 0]), float(ds.dec_center[0, 0]))
    assert sorted(rows["exposure"].tolist()) == [0, 1] and set(rows["sca"].tolist()) == {1}
    centre = rows[rows["exposure"] == 0]
    assert abs(centre["x"][0] - (WINDOW - 1) / 2) < 0.01
    assert abs(centre["y"][0] - (WINDOW - 1) / 2) < 0.01
    shift = rows[rows["exposure"] == 1]
    assert 2 < math.hypot(shift["x"][0] - centre["x"][0], shift["y"][0] - centre["y"][0]) < 20


def test_open_store_reads_the_small_coordinates_whole(finished):
    """open_store's coordinates are NumPy and equal xarray's own decoding; the cubes
    are still Dask, chunked as in the store; bad input is one line."""
    _, path = finished
    opened = romandask.open_store(path)
    plain = xr.open_zarr(path)
    for name, coord in opened.dataset.coords.items():
        assert not isinstance(coord.data, da.Array), name
        reference = plain[name].variable.load()
        assert coord.variable.equals(reference) and coord.dtype == reference.dtype, name
        assert coord.attrs == reference.attrs, name
    assert isinstance(opened.dataset.counts.data, da.Array)
    assert opened.dataset.chunks["exposure"] == plain.chunks["exposure"]
    assert opened.mosaic is not None and opened.mosaic.sizes["tile"] > 0
    assert not isinstance(opened.mosaic.tile_name.data, da.Array)
    with pytest.raises(InputError) as err:
        romandask.open_store(path.parent / "nothing.zarr")
    assert "nothing.zarr" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError) as err:
        opened.images_at("north", 3)
    assert "images_at" in str(err.value)


# --------------------------------------------------------------------------
# sharded small arrays
# --------------------------------------------------------------------------

CASES = [  # shape, chunk, shard, dtype
    ((5,), (1,), (2,), "f8"),
    ((7, 3, 4), (1, 1, 4), (2, 3, 4), "f8"),
    ((7, 3), (1, 1), (4, 3), "i4"),
    ((6, 5), (4, 2), (8, 4), "i8"),  # partial chunks at the edges
    ((5,), (1,), (2,), "str"),
    ((3, 2), (1, 1), (2, 2), "str"),
]


def _values(shape, dtype, rng):
    if dtype == "str":
        words = ["", "F158", "é", '[[1], [2, 3]]', "RA---TAN-SIP " * 7]
        return np.array([words[i % len(words)] for i in rng.permutation(math.prod(shape))],
                        dtype=object).reshape(shape)
    values = (rng.normal(size=shape) * 1000).astype(dtype)
    values.flat[::3] = 0  # chunks equal to the fill value, which zarr leaves out
    return values


@pytest.mark.parametrize("shape, chunk, shard, dtype", CASES)
def test_shards_read_and_write_as_zarr_does(tmp_path, shape, chunk, shard, dtype):
    rng = np.random.default_rng(1)
    values = _values(shape, dtype, rng)
    as_read = (lambda a: np.asarray(a, dtype=object)) if dtype == "str" else np.asarray
    for writer in ("zarr", "shards"):
        path = tmp_path / writer
        array = zarr.create_array(str(path), shape=shape, chunks=chunk, shards=shard,
                                  dtype=str if dtype == "str" else dtype, compressors=None)
        assert shards.layout(array) is not None
        if writer == "zarr":
            array[...] = values
        else:
            shards.write_array(path, values)
        np.testing.assert_array_equal(as_read(zarr.open_array(str(path))[...]), values)
        np.testing.assert_array_equal(as_read(shards.read_array(path)), values)
    # the same values, the same bytes
    again = tmp_path / "again"
    zarr.create_array(str(again), shape=shape, chunks=chunk, shards=shard,
                      dtype=str if dtype == "str" else dtype, compressors=None)
    shards.write_array(again, values)
    for first in (tmp_path / "shards" / "c").rglob("*"):
        if first.is_file():
            second = again / first.relative_to(tmp_path / "shards")
            assert first.read_bytes() == second.read_bytes()


def test_shards_leave_other_arrays_to_zarr(tmp_path):
    values = np.arange(12.0).reshape(4, 3)
    compressed = zarr.create_array(str(tmp_path / "z"), shape=(4, 3), chunks=(1, 3),
                                   shards=(2, 3), dtype="f8")  # zstd inside the shards
    assert shards.layout(compressed) is None
    shards.write_array(tmp_path / "z", values)
    np.testing.assert_array_equal(shards.read_array(tmp_path / "z"), values)
    plain = zarr.create_array(str(tmp_path / "p"), shape=(4, 3), chunks=(1, 3), dtype="f8")
    assert shards.layout(plain) is None
    # a damaged shard is not read as data: zarr reads it, and refuses it
    array = zarr.create_array(str(tmp_path / "d"), shape=(4,), chunks=(1,), shards=(4,),
                              dtype="f8", compressors=None)
    shards.write_array(tmp_path / "d", np.arange(4.0))
    shard = tmp_path / "d" / "c" / "0"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        shards.read_array(tmp_path / "d")
    assert array.shape == (4,)


def test_survey_scale_small_arrays(tmp_path):
    """10^4 exposures x 18 SCAs: ``Dataset.chunks`` is defined on opening, each small
    array is a few hundred files at most, and it is written and read whole in seconds
    (zarr itself takes 0.2-0.4 ms per chunk: minutes for these 1.5 10^6 chunks)."""
    nexp, nsca = 10_000, 18
    rng = np.random.default_rng(2)
    start = (np.datetime64("2027-06-01T00:00:00", "us")
             + np.arange(nexp) * np.timedelta64(180_250_001, "us")).astype("datetime64[ns]")
    coords = {
        "exposure": ("exposure", np.arange(nexp)),
        "sca": ("sca", np.arange(1, nsca + 1)),
        "ra": ("exposure", rng.uniform(0, 360, nexp), {"units": "deg", "long_name": "ra"}),
        "filter": ("exposure", np.array(["F158", "F062"] * (nexp // 2), dtype=object)),
        "start_time": xr.Variable("exposure", start, {"long_name": "start"},
                                  dict(store.TIME_ENCODING)),
        "ra_center": (("exposure", "sca"), rng.uniform(0, 360, (nexp, nsca))),
        "ra_corners": (("exposure", "sca", "corner"), rng.uniform(0, 360, (nexp, nsca, 4))),
        "dec_corners": (("exposure", "sca", "corner"), rng.uniform(-90, 90, (nexp, nsca, 4))),
    }
    cube = da.zeros((nexp, nsca, 2, 2), dtype=np.float32, chunks=(1, 1, 2, 2))
    ds = xr.Dataset({"counts": (("exposure", "sca", "y", "x"), cube)}, coords=coords)
    path = tmp_path / "survey.zarr"
    t0 = time.perf_counter()
    store.create(ds, path)
    store.finalise(path, tmp_path / store.STORE_NAME)
    path = tmp_path / store.STORE_NAME
    written = time.perf_counter() - t0
    plain = xr.open_zarr(path)
    assert plain.chunks["exposure"] == (1,) * nexp and plain.chunks["sca"] == (1,) * nsca
    assert plain.ra_corners.chunks[:2] == ((1,) * nexp, (1,) * nsca)
    for name, per_file in (("ra", 1024), ("filter", 1024), ("ra_corners", 1024 // nsca)):
        files = [p for p in (path / name).rglob("*") if p.is_file() and p.name != "zarr.json"]
        assert len(files) == math.ceil(nexp / per_file), name
    t0 = time.perf_counter()
    opened = romandask.open_store(path)
    read = time.perf_counter() - t0
    for name in coords:
        np.testing.assert_array_equal(opened.dataset[name].values, ds[name].values)
    np.testing.assert_array_equal(plain.start_time[-3:].values, start[-3:])
    assert plain.filter[5].values == "F062" and float(plain.ra[7]) == ds.ra.values[7]
    print(f"\n{nexp * nsca} windows: small arrays written in {written:.1f} s, "
          f"read whole in {read:.1f} s")
    assert written < 60 and read < 60

"""The counts stage end to end: store layout, determinism, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import galsim
import pytest
import numpy as np
import roman_datamodels.datamodels as rdm
import xarray as xr
import yaml
from astropy.table import Table

from romandask import cli, store
from romandask.config import ClusterConfig, load_config
from romandask.instrument.filters import electrons_per_maggie
from romandask.pipeline import run
from romandask.scene.catalog import write_catalog
from romandask.survey.footprint import angular_distance, footprint

REPO = Path(__file__).resolve().parents[1]


def _digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``, by relative path."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _with(config, directory: Path, cluster: ClusterConfig):
    return dataclasses.replace(
        config, output=dataclasses.replace(config.output, directory=directory),
        cluster=cluster)


@pytest.mark.slow  # three runs of every product, two on local clusters: 1-2 minutes
def test_same_bytes_with_one_and_two_workers(make_config, tmp_path):
    config, _ = make_config()
    one = _with(config, tmp_path / "one",
                ClusterConfig(type="local", n_workers=1, progress=False))
    two = _with(config, tmp_path / "two",
                ClusterConfig(type="local", n_workers=2, progress=False))
    threads = _with(config, tmp_path / "threads",
                    ClusterConfig(type="threads", n_workers=2, progress=False))
    for cfg in (one, two, threads):
        run(cfg, say=lambda s: None)
    d1, d2, d3 = (_digest(c.output.directory / store.STORE_NAME) for c in (one, two, threads))
    assert len(d1) > 10 and any(k.startswith("ramps/") for k in d1)
    assert d1 == d2 == d3
    l1 = [_digest(c.output.directory / "l1") for c in (one, two, threads)]
    assert len(l1[0]) == 4 and all(k.endswith("_uncal.asdf") for k in l1[0])
    assert l1[0] == l1[1] == l1[2]
    l2 = [_digest(c.output.directory / "l2") for c in (one, two, threads)]
    assert len(l2[0]) == 4 and all(k.endswith("_cal.asdf") for k in l2[0])
    assert l2[0] == l2[1] == l2[2]
    # the footprint PNG does not depend on the run either
    pngs = {hashlib.sha256((c.output.directory / "footprint.png").read_bytes()).hexdigest()
            for c in (one, two, threads)}
    assert len(pngs) == 1


def test_store_layout_and_truth(make_config, tmp_path):
    """Stars planted at known pixels come back in the truth table and in the counts."""
    config, _ = make_config({"detector": {"window": 128, "tile": 64}})
    planted = [(40.3, 50.6), (90.5, 20.2)]  # 0-based window pixels
    rows = []
    for view in footprint(config):
        for x, y in planted:
            sky = view.wcs.toWorld(galsim.PositionD(*view.to_galsim(x, y)))
            rows.append((sky.ra.deg, sky.dec.deg))
    ra, dec = np.array(rows).T
    mag = 19.0
    cat = Table({"ra": ra, "dec": dec, "type": ["PSF"] * len(ra), "n": -np.ones(len(ra)),
                 "half_light_radius": np.zeros(len(ra)), "pa": np.zeros(len(ra)),
                 "ba": np.ones(len(ra)), "F158": np.full(len(ra), 10 ** (-0.4 * mag))})
    write_catalog(cat, tmp_path / "stars.ecsv")
    config, _ = make_config({"detector": {"window": 128, "tile": 64},
                             "catalog": {"synthetic": None, "file": "stars.ecsv"}})
    run(config, say=lambda s: None)

    path = config.output.directory / store.STORE_NAME
    ds = xr.open_zarr(path)
    assert ds.counts.dims == ("exposure", "sca", "y", "x")
    assert ds.counts.shape == (2, 2, 128, 128)
    assert ds.counts.data.chunksize == (1, 1, 64, 64)
    assert list(ds.sca.values) == [1, 2]
    assert list(ds.filter.values) == ["F158", "F158"]
    assert np.allclose(ds.exposure_time.values, 44 * 3.16247)
    counts = ds.counts.values
    assert np.all(counts >= 0) and np.all(counts == np.round(counts))  # Poisson electrons
    # the sky polygon: corners about 128 x 0.11" from each other, centre inside
    for view, (e, s) in zip(footprint(config), np.ndindex(2, 2)):
        ra_c, dec_c = ds.ra_corners.values[e, s], ds.dec_corners.values[e, s]
        np.testing.assert_allclose(ra_c, view.corners()[0] % 360, atol=1e-9)
        side = angular_distance(ra_c[0], dec_c[0], ra_c[1], dec_c[1]) * 3600
        assert 128 * 0.10 < side < 128 * 0.12
        assert ra_c.min() < ds.ra_center.values[e, s] < ra_c.max()

    t = xr.open_zarr(path, group="truth").compute()
    assert set(t.type.values) == {"PSF"}
    flux = 10 ** (-0.4 * mag) * electrons_per_maggie("F158") * 44 * 3.16247
    for e, expo in enumerate(ds.exposure.values):
        for s, sca in enumerate(ds.sca.values):
            mine = (t.exposure.values == expo) & (t.sca.values == sca)
            # each image sees the two stars planted for it (others land elsewhere)
            xy = sorted(zip(t.x.values[mine].round(6), t.y.values[mine].round(6)))
            for x, y in planted:
                assert (round(x, 6), round(y, 6)) in xy
            np.testing.assert_allclose(t.flux.values[mine], flux, rtol=1e-9)
            img = counts[e, s]
            sky = np.median(img)
            for x, y in planted:
                xi, yi = int(round(x)), int(round(y))
                box = img[yi - 16:yi + 17, xi - 16:xi + 17]
                noise = np.sqrt(box.sum())
                # 97.5%+ of a star's light falls within 16 px (1.8")
                assert 0.95 * flux - 3 * noise < (box - sky).sum() < flux + 3 * noise


def test_existing_run_is_not_overwritten(make_config):
    config, path = make_config()
    run(config, say=lambda s: None)
    before = _digest(config.output.directory)
    assert cli.main(["run", str(path)]) == 2
    assert _digest(config.output.directory) == before
    assert cli.main(["run", str(path), "--overwrite", "--no-progress"]) == 0
    assert _digest(config.output.directory) == before  # same config, same bytes


def _quickstart_copy(tmp_path: Path) -> Path:
    data = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    data["output"]["directory"] = str(tmp_path / "quickstart")
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _array_bytes(path: Path) -> int:
    """Bytes of the arrays an L1 or L2 file holds, uncompressed."""
    with rdm.open(path) as model:
        values = model.to_flat_dict().values()
        return sum(int(np.asarray(v).nbytes) for v in values
                   if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0)


def test_quickstart_plan_prints_its_table(tmp_path, capsys):
    from romandask.pipeline import prepare
    from romandask.plan import graph_size

    path = _quickstart_copy(tmp_path)
    assert cli.main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    config = load_config(path)
    rows = [ln for ln in out.splitlines() if ln.split()[:1] and ln.split()[0].isdigit()
            and len(ln.split()) == 9]
    assert len(rows) == len(config.survey.exposures) * 18
    # the whole survey's graph, against the plan's count from its first images
    assert f"dask tasks: {graph_size(prepare(config))} (" in out
    assert "counts (float32): 36.0 MiB" in out
    import re

    (pixel_line,) = re.findall(r"per HEALPix pixel \(nside 256, 0\.0525 deg\^2, (\d+) pixels\): "
                               r"median (\d+), max (\d+) sources", out)
    npix, median, largest = map(int, pixel_line)
    assert npix > 0 and 0 < median <= largest
    assert "core-hours" in out
    assert not (tmp_path / "quickstart").exists()  # plan writes nothing


@pytest.mark.slow  # the whole quick-start: 2-3 minutes
def test_quickstart_run_writes_cube_and_footprint(tmp_path):
    path = _quickstart_copy(tmp_path)
    assert cli.main(["run", str(path), "--no-progress"]) == 0
    out = tmp_path / "quickstart"
    png = (out / "footprint.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    ds = xr.open_zarr(out / store.STORE_NAME)
    assert ds.counts.shape == (2, 18, 512, 512)
    assert ds.ramps.shape == (2, 18, 9, 520, 520)
    assert not list(out.glob("*.partial")) and not list(out.glob("l1/*.partial"))
    files = sorted((out / "l1").glob("*_uncal.asdf"))
    assert len(files) == 36
    with rdm.open(files[-1]) as model:
        model.validate()
        assert model.meta.instrument.detector == "WFI18"
        np.testing.assert_array_equal(model.data, ds.ramps[1, 17].values)
    # every SCA saw sky: the median pixel is the sky + thermal level (~75-110 e-)
    med = ds.counts.median(dim=("y", "x")).values
    assert np.all((med > 50) & (med < 200))
    # L2: 36 files, and rates that match the counts (sky per nominal pixel, DN/s)
    files = sorted((out / "l2").glob("*_cal.asdf"))
    assert len(files) == 36 and not list(out.glob("l2/*.partial"))
    with rdm.open(files[0]) as model:
        model.validate()
        np.testing.assert_array_equal(model.data, ds.l2_data[0, 0].values)
    # (per nominal (0.11")^2 pixel: the SCAs' pixels are 0-12 % smaller)
    rate = ds.l2_data.median(dim=("y", "x")).values
    expected = med / ds.exposure_time.values[:, None] / 2.0   # 2 e-/DN
    assert np.all((rate / expected > 0.97) & (rate / expected < 1.2))
    # L3: the quick-start coadds its L2 files onto sky tiles, in MJy/sr
    tiles = sorted((out / "mosaic").glob("*_F158_coadd.asdf"))
    assert len(tiles) > 10 and (out / "mosaic" / "mosaic_F158.png").exists()
    mosaic = xr.open_zarr(out / store.STORE_NAME, group="mosaic")
    assert mosaic.sizes["tile"] == len(tiles)
    with rdm.open(files[0]) as model:
        conversion = float(model.meta.photometry.conversion_megajanskys)
    sky = float(np.nanmedian(mosaic.data.values))
    assert 0.9 < sky / (float(np.median(rate)) * conversion) < 1.1


FITS_RUN = {"survey": {"exposures": [{"ra": 9.70, "dec": -44.0, "pa": 0.0, "filter": "F158",
                                      "ma_table": 4, "start_time": "2027-06-01T00:00:00"}]},
            "detector": {"window": 32, "tile": 32},
            "output": {"products": ["l1", "l2", "fits"]}}


def _hdus(path: Path):
    from astropy.io import fits

    with fits.open(path) as hdul:
        return [(h.name, None if h.data is None else np.array(h.data)) for h in hdul]


def test_fits_beside_each_l2_file(make_config, tmp_path):
    """Product fits: each L2 file's _asdf_to.fits beside it, in gen_cal_image's layout
    (the bytes `romandask calibrate` writes with FITSOUT for the same L1 and
    calibration), the same bytes on a rerun; romandask's layout as an option;
    counted by plan."""
    import romandask
    from romandask.calibrate.gen_cal_image import good_pixels
    from romandask.pipeline import prepare
    from romandask.plan import plan

    config, _ = make_config(FITS_RUN)
    written = run(config, say=lambda s: None)
    assert len(written["fits"]) == 2
    for l2, fits_path in zip(written["l2"], written["fits"]):
        assert fits_path == l2.with_name(l2.name.replace("_cal.asdf", "_cal_asdf_to.fits"))
        with rdm.open(l2) as model:
            data, dq = np.asarray(model.data), np.asarray(model.dq)
        (n0, primary), (n1, flags), (n2, masked) = _hdus(fits_path)
        assert (n1, n2) == ("DQ", "MASKED")
        np.testing.assert_array_equal(primary, data)
        np.testing.assert_array_equal(flags, dq)
        np.testing.assert_array_equal(masked, np.where(good_pixels(dq), data, -1000.0))
    first = _digest(config.output.directory)
    assert sum(k.endswith("_asdf_to.fits") for k in first) == 2

    # calibrate with the run's calibration writes the same bytes
    cal = tmp_path / "cal.yaml"
    cal.write_text(yaml.safe_dump({
        "IN": str(written["l1"][0]), "OUT": str(tmp_path / "cal" / written["l2"][0].name),
        "FITSOUT": True, "EXCLUDE_FIRST": False, "SATURATION_BACKUP": 0}))
    (path,) = romandask.calibrate(str(cal))
    twin = written["fits"][0]
    assert path.with_name(twin.name).read_bytes() == twin.read_bytes()

    again = dataclasses.replace(config, output=dataclasses.replace(config.output,
                                                                   overwrite=True))
    run(again, say=lambda s: None)
    assert _digest(config.output.directory) == first

    other = _with(config, tmp_path / "layout", config.cluster)
    other = dataclasses.replace(other, output=dataclasses.replace(other.output,
                                                                  fits_layout="romandask"))
    written = run(other, say=lambda s: None)
    names = [name for name, _ in _hdus(written["fits"][0])]
    assert names == ["PRIMARY", "SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE"]

    text = plan(prepare(config, lambda s: None), measure=False)
    (line,) = [ln for ln in text.splitlines() if "FITS files" in ln]
    assert "(2, gen_cal_image layout, 3 planes)" in line
    size = sum(p.stat().st_size for p in (config.output.directory / "l2").glob("*.fits"))
    assert f": {size / 1024:.1f} KiB" in line, (line, size)
    # the ASDF files' arrays, uncompressed, as planned (within their truth tables)
    from romandask.plan import product_bytes

    sizes = product_bytes(prepare(config, lambda s: None), 0)
    for kind, pattern in (("L1", "l1/*_uncal.asdf"), ("L2", "l2/*_cal.asdf")):
        held = sum(_array_bytes(p) for p in config.output.directory.glob(pattern))
        assert sizes[f"{kind} files (2)"] == pytest.approx(held, rel=0.01), kind


def test_fits_resume_after_a_write_error(make_config, tmp_path, monkeypatch):
    """A FITS write that fails leaves the run resumable: the rerun writes only what
    is missing and ends with the bytes of an uninterrupted run."""
    from romandask import export
    from romandask.errors import OutputError
    from romandask.resume import Progress

    config, _ = make_config(FITS_RUN)
    reference = _with(config, tmp_path / "reference", config.cluster)
    run(reference, say=lambda s: None)
    expect = _digest(reference.output.directory)

    real = export.write_l2_fits
    calls = []

    def failing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OutputError(str(path), "cannot be written (No space left on device)")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(export, "write_l2_fits", failing)
    with pytest.raises(OutputError):
        run(config, say=lambda s: None)
    out = config.output.directory
    progress = Progress(out)
    assert len(progress.done()) == 1 and not list(out.glob("l2/*.partial"))
    (kept,) = list(out.glob("l2/*_asdf_to.fits"))
    stamp = kept.stat().st_mtime_ns
    monkeypatch.setattr(export, "write_l2_fits", real)
    messages = []
    run(config, say=messages.append)
    assert any(m.startswith("resuming: 1 of 2") for m in messages), messages
    assert kept.stat().st_mtime_ns == stamp
    assert _digest(out) == expect

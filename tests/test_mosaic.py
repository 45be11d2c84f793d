"""Mosaics (L2 -> L3): the sky tile grid, drizzle coadds, their files and errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import galsim
import numpy as np
import pytest
import roman_datamodels as rdm

import mosaic_fixture as mf
from romandask.cli import main
from romandask.config import ClusterConfig
from romandask.export import photometry_meta
from romandask.mosaic import mosaic, noise_correlation_ratio
from romandask.skytiles import (Tile, TileGrid, owned_tiles, region_centre, region_of,
                                ring_count)
from romandask.survey.footprint import footprint

THREADS = ClusterConfig(type="threads", n_workers=1, progress=False)
WINDOW = 192
SKY = 1.5  # e-/s per nominal pixel (gain 1: DN/s)
#: four small dithers (degrees) about the first pointing
DITHERS = [(0.0, 0.0), (0.00031, 0.00017), (-0.00021, 0.00029), (0.00012, -0.00033)]
NO_STARS = {"id": np.array([], int), "ra": np.array([]), "dec": np.array([]),
            "flux": np.array([])}


def _exposures(ra=9.70, dec=-44.0, dithers=DITHERS):
    return [mf.exposure(ra + a, dec + d, k) for k, (a, d) in enumerate(dithers)]


def _open(path):
    return rdm.open(path)


# --------------------------------------------------------------------------
# the tile grid (pure functions)
# --------------------------------------------------------------------------

def _sky(n, seed):
    g = np.random.default_rng(seed)
    return g.uniform(0, 360, n), np.degrees(np.arcsin(g.uniform(-1, 1, n)))


def test_cells_tile_the_sphere_and_fit_their_grids():
    grid = TileGrid(0.5, 256)
    ra, dec = _sky(20000, 1)
    ring, cell = region_of(ra, dec)
    for r, c in set(zip(ring.tolist(), cell.tolist())):
        mine = (ring == r) & (cell == c)
        _, _, valid = grid.region_pixel(r, c, ra[mine], dec[mine])
        assert valid.all(), f"a position of region {r},{c} falls off its grid"
        # and the cell is no more than REGION_SIZE across
        ra0, dec0 = region_centre(r, c)
        assert abs(dec[mine] - dec0).max() <= 0.5 + 1e-9 or r in (0, 180)
    assert ring_count(90) == 360 and ring_count(0) == ring_count(180) == 1
    # positions just either side of a cell boundary belong to neighbouring cells
    n = ring_count(46)
    edge = 360.0 / n * 7
    _, cells = region_of(np.array([edge - 1e-6, edge + 1e-6]), np.array([-44.0, -44.0]))
    assert cells[1] == (cells[0] + 1) % n


def test_same_sky_same_tiles_and_pixels_whatever_else_is_in_the_run():
    grid = TileGrid(0.055, 512)
    ra = 9.70 + np.random.default_rng(2).uniform(-0.05, 0.05, 400)
    dec = -44.0 + np.random.default_rng(3).uniform(-0.05, 0.05, 400)
    small, big = owned_tiles(grid, ra[:50], dec[:50]), owned_tiles(grid, ra, dec)
    assert small <= big and len(big) > len(small)
    # other runs, other inputs: the same position gets the same tile and pixel
    tile = sorted(small, key=lambda t: t.name)[0]
    x1, y1 = grid.tile_pixel(tile, ra[:50], dec[:50])
    x2, y2 = TileGrid(0.055, 512).tile_pixel(Tile(*tile.region, tile.tx, tile.ty),
                                             ra[:50], dec[:50])
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_tile_gwcs_is_the_grid():
    grid = TileGrid(0.055, 512)
    ra, dec = np.array([9.70, 9.701]), np.array([-44.0, -44.002])
    tile = sorted(owned_tiles(grid, ra, dec), key=lambda t: t.name)[0]
    wcs = grid.wcs(tile)
    assert wcs.bounding_box is not None and wcs.pixel_shape == (512, 512)
    x = np.array([0.0, 100.3, 511.0])
    y = np.array([0.0, 250.7, 511.0])
    r1, d1 = wcs(x, y)
    r2, d2 = grid.pixel_to_sky(tile, x, y)
    assert np.allclose(r1, r2, atol=1e-10, rtol=0) and np.allclose(d1, d2, atol=1e-10, rtol=0)
    bx, by = grid.tile_pixel(tile, r1, d1)
    assert np.allclose(bx, x, atol=1e-6) and np.allclose(by, y, atol=1e-6)
    # north up, east left, pixel_scale on a side
    r3, d3 = wcs(np.array([256.0, 257.0, 256.0]), np.array([256.0, 256.0, 257.0]))
    assert r3[1] < r3[0] and d3[2] > d3[0]
    # (TAN: the scale falls as cos^2 of the distance from the tangent point, <= 0.75 deg)
    assert (d3[2] - d3[0]) * 3600 == pytest.approx(0.055, rel=2e-4)


def test_noise_correlation_ratio_casertano():
    assert noise_correlation_ratio(1.0, 0.5) == pytest.approx(2.4)
    assert noise_correlation_ratio(0.5, 1.0) == pytest.approx(1.2)
    assert noise_correlation_ratio(1.0, 1.0) == pytest.approx(1.5)


# --------------------------------------------------------------------------
# coadds of stars: flux, astrometry, truth, files
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stars_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stars")
    exps = _exposures()
    view = footprint(mf.survey_config(tmp, exps, WINDOW))[0]
    ra, dec = view.center()
    stars = mf.stars_near(ra, dec, 3, 5.0, 3e5)
    paths = mf.write_l2_files(tmp, exps, stars, WINDOW, sky_e_per_s=SKY, seed=11)
    out = mosaic([str(tmp / "l2" / "*_cal.asdf")], tmp / "mosaic", tile_size=512,
                 cluster=THREADS)
    theta = view.wcs.jacobian(image_pos=view.bounds.true_center).getDecomposition()[2]
    return {"inputs": paths, "tiles": out, "stars": stars, "theta": theta, "dir": tmp}


def _aperture_fraction(theta, dx, dy, radius_px, pixfrac=1.0):
    """The fraction of a star's flux within ``radius_px`` of its centre in the
    mosaic, from the PSF: the Airy pattern convolved with the input pixel, the
    drizzle drop (a square of pixfrac input pixels, along the input's axes) and
    the mosaic pixel, summed over the mosaic pixels whose centres lie within
    the radius (the star at offset (dx, dy) from a pixel centre)."""
    pixel = galsim.Pixel(0.11).rotate(theta)
    drop = galsim.Pixel(0.11 * pixfrac).rotate(theta)
    n = 64
    image = galsim.Convolve(mf.psf(), pixel, drop).drawImage(nx=n, ny=n, scale=0.055,
                                                             offset=(dx, dy))
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2.0
    return float(image.array[np.hypot(xx - c - dx, yy - c - dy) <= radius_px].sum())


def _measure(run):
    conv = photometry_meta("F158", 1.0)["conversion_megajanskys"]
    sky = SKY * conv
    radius = 0.6 / 0.055
    rows = []
    for path in run["tiles"]:
        with _open(path) as m:
            data = np.asarray(m.data, float)
            truth = m.romandask["truth"]
            n = data.shape[0]
            yy, xx = np.mgrid[:n, :n]
            for i, x, y, f in zip(truth["id"], truth["x"], truth["y"], truth["flux"]):
                if not (20 < x < n - 21 and 20 < y < n - 21):
                    continue
                ap = np.hypot(xx - x, yy - y) <= radius
                total = (data[ap] - sky).sum()
                frac = _aperture_fraction(run["theta"], x - round(x), y - round(y), radius)
                box = (np.abs(xx - x) <= 8) & (np.abs(yy - y) <= 8)
                d = data[box] - sky
                cx, cy = (d * xx[box]).sum() / d.sum(), (d * yy[box]).sum() / d.sum()
                rows.append((int(i), total / frac, float(f), cx - x, cy - y))
    return rows


def test_star_fluxes_ratios_and_centroids(stars_run):
    rows = _measure(stars_run)
    assert len({r[0] for r in rows}) == 9, "every star measured away from tile edges"
    measured = np.array([r[1] for r in rows])
    truth = np.array([r[2] for r in rows])
    # flux through the photometry conversion: the truth's MJy/sr sums
    assert np.abs(measured / truth - 1).max() < 0.01
    ratios = (measured / measured[0]) / (truth / truth[0])
    assert np.abs(ratios - 1).max() < 0.01
    offsets = np.hypot([r[3] for r in rows], [r[4] for r in rows]) * 0.055
    assert offsets.max() < 0.01


def test_truth_flux_is_the_catalog_flux_through_photometry(stars_run):
    stars = stars_run["stars"]
    t = 139.14868  # MA table 4 (s)
    conv = photometry_meta("F158", 1.0)
    with _open(stars_run["tiles"][0]) as m:
        truth = {k: np.asarray(v) for k, v in m.romandask["truth"].items()}
    k = np.searchsorted(stars["id"], truth["id"])
    jy = stars["flux"][k] / t * conv["conversion_megajanskys"] * conv["pixel_area"] * 1e6
    assert np.allclose(truth["flux_jy"], jy, rtol=1e-5)
    assert np.allclose(truth["flux"] * (0.055 / 206264.806) ** 2 * 1e6, truth["flux_jy"],
                       rtol=1e-3)


def test_tile_files_are_valid_mosaics(stars_run):
    with _open(stars_run["tiles"][0]) as m:
        assert type(m).__name__ == "MosaicModel"
        m.validate()
        assert m.meta.wcs.bounding_box is not None
        assert m.meta.resample.weight_type == "ivm" and m.meta.resample.pixfrac == 1.0
        assert set(m.meta.resample.members) <= {p.name for p in stars_run["inputs"]}
        assert m.meta.wcsinfo.skycell_name == m.romandask["tile"]
        assert m.context.shape == (1, 512, 512) and m.context.dtype == np.uint32
        # every contributing input sets its bit; the weight is zero where none does
        covered = np.asarray(m.weight) > 0
        assert ((np.asarray(m.context[0]) != 0) == covered).all()
        assert np.isnan(np.asarray(m.data)[~covered]).all()
        assert np.isfinite(np.asarray(m.err)[covered]).all()
    assert (stars_run["dir"] / "mosaic" / "mosaic_F158.png").stat().st_size > 10000


def _check_coverage(inputs, tiles, grid, window) -> int:
    """Away from input edges, each tile pixel's exposure time is the sum over
    the inputs whose footprint holds it (by each input's own inverse WCS), and
    its context has their bits; returns the pixels checked."""
    described = {}
    for path in inputs:
        with _open(path) as m:
            described[path.name] = (m.meta.wcs, float(m.meta.exposure.exposure_time))
    size = grid.tile_size
    checked = 0
    for path in tiles:
        with _open(path) as m:
            exptime = np.asarray(m.romandask["exposure_time"], float)
            name = m.romandask["tile"]
            context = np.asarray(m.context[0])
            members = list(m.meta.resample.members)
        tile = Tile(int(name[1:4]), int(name[5:8]), int(name[9:13]), int(name[14:18]))
        y, x = np.mgrid[0:size:3, 0:size:3]
        ra, dec = grid.pixel_to_sky(tile, x.ravel().astype(float), y.ravel().astype(float))
        expected = np.zeros(ra.size)
        clear = np.ones(ra.size, bool)
        bits = np.zeros(ra.size, np.int64)
        for k, (wcs, t) in enumerate(described[n] for n in members):
            px, py = wcs.invert(ra, dec, with_bounding_box=False)
            depth = np.minimum(np.minimum(px + 0.5, window - 0.5 - px),
                               np.minimum(py + 0.5, window - 0.5 - py))
            clear &= np.abs(depth) > 1.5
            expected += np.where(depth > 0, t, 0.0)
            bits |= np.where(depth > 0, 1 << k, 0)
        # inputs not listed must not reach the tile
        for other in set(described) - set(members):
            px, py = described[other][0].invert(ra, dec, with_bounding_box=False)
            inside = (px > -0.5) & (px < window - 0.5) & (py > -0.5) & (py < window - 0.5)
            assert not inside.any(), f"{other} overlaps {name} but was left out"
        got = exptime[y.ravel(), x.ravel()]
        assert np.allclose(got[clear], expected[clear], rtol=1e-6, atol=0)
        assert np.array_equal(context[y.ravel(), x.ravel()][clear], bits[clear])
        checked += clear.sum()
    return checked


def test_exposure_time_map_is_the_sum_of_contributing_exposures(stars_run):
    checked = _check_coverage(stars_run["inputs"], stars_run["tiles"], TileGrid(0.055, 512),
                              WINDOW)
    assert checked > 5000


def test_inputs_across_a_region_border(tmp_path):
    """Input B straddles the border of two projection regions and input A lies
    wholly in the eastern region, but inside the western region's tile that
    holds the border (tiles reach past their region's cell): both regions'
    tiles are made, each from every input that overlaps it, A included."""
    n = ring_count(46)
    border = 7 * 360.0 / n  # between cells 6 and 7 of the ring at dec -44
    exps = _exposures(dithers=DITHERS[:1])
    view = footprint(mf.survey_config(tmp_path, exps, 128))[0]
    ra_c, dec_c = view.center()
    cos = np.cos(np.radians(dec_c))
    # a tile size whose western border tile reaches > 14" into the eastern cell
    for size in (256, 512, 1024, 2048):
        grid = TileGrid(0.055, size)
        x, _, _ = grid.region_pixel(46, 6, np.array([border]), np.array([dec_c]))
        tx, _ = grid.tile_indices(x, x)
        reach = (x[0] + 0.5 - tx[0] * size) * 0.055  # arcsec east of the border
        if reach > 15:
            break
    offset = min(reach - 2.0, 20.0) / 3600.0 / cos  # A's centre east of the border
    exps = [mf.exposure(9.70 + border - ra_c, -44.0, 0),
            mf.exposure(9.70 + border + offset - ra_c, -44.0, 1)]
    paths = mf.write_l2_files(tmp_path, exps, NO_STARS, 128, seed=2)
    a_corners = footprint(mf.survey_config(tmp_path, exps, 128))[1].corners()
    assert set(region_of(*a_corners)[1].tolist()) == {7}, "A must lie wholly in cell 7"
    tiles = mosaic([str(p) for p in paths], tmp_path / "out", tile_size=size, cluster=THREADS)
    assert {p.name[:8] for p in tiles} == {"r046c006", "r046c007"}
    west = [p for p in tiles if p.name.startswith("r046c006")]
    with_a = []
    for path in west:
        with _open(path) as m:
            if paths[1].name in list(m.meta.resample.members):
                with_a.append(path)
    assert with_a, "the western tile at the border must take input A"
    assert _check_coverage(paths, tiles, grid, 128) > 2000


# --------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sky_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sky")
    mf.write_l2_files(tmp, _exposures(), NO_STARS, WINDOW, sky_e_per_s=SKY, seed=5)
    out = mosaic([str(tmp / "l2" / "*_cal.asdf")], tmp / "mosaic", tile_size=512,
                 cluster=THREADS)
    return tmp, out


def _deepest(paths):
    best = None
    for path in paths:
        with _open(path) as m:
            exptime = np.asarray(m.romandask["exposure_time"])
            full = exptime >= 4 * 139.148 - 1e-2
            if best is None or full.sum() > best[0].sum():
                best = (full, np.asarray(m.data, float), np.asarray(m.err, float))
    return best


def test_sky_level_and_per_pixel_errors(sky_run):
    """``err`` is each pixel's own standard deviation (drizzle's squared-weight
    propagation), so (data - sky) / err has unit scatter pixel by pixel."""
    full, data, err = _deepest(sky_run[1])
    assert full.sum() > 50000
    sky = SKY * photometry_meta("F158", 1.0)["conversion_megajanskys"]
    pull = ((data - sky) / err)[full]
    assert abs(pull.std() - 1) < 0.1
    assert abs(pull.mean()) < 0.02
    assert abs(np.median(data[full]) / sky - 1) < 0.002


def test_correlated_noise_of_block_sums(sky_run):
    """Sums over blocks of B x B pixels carry more noise than their pixels'
    errors say: their variance over the sum of the pixels' variances grows
    with B towards R**2 (Casertano et al. 2000), less the correlation cut at
    the block's edge, which falls as 1/B.  Extrapolated in 1/B from B = 8 and
    16, it is R**2 within 10 %."""
    full, data, err = _deepest(sky_run[1])
    sky = SKY * photometry_meta("F158", 1.0)["conversion_megajanskys"]
    ratio = {}
    for b in (8, 16):
        n = data.shape[0] // b * b

        def blocks(a):
            return a[:n, :n].reshape(n // b, b, n // b, b)

        ok = blocks(full).all(axis=(1, 3))
        s = blocks(data - sky).sum(axis=(1, 3))[ok]
        v = blocks(err ** 2).sum(axis=(1, 3))[ok]
        assert ok.sum() > 300
        ratio[b] = float((s ** 2 / v).mean())
    limit = 2 * ratio[16] - ratio[8]
    r2 = noise_correlation_ratio(1.0, 0.5) ** 2
    assert ratio[8] > 3.0, "block sums must show the correlation"
    assert abs(limit / r2 - 1) < 0.1


# --------------------------------------------------------------------------
# determinism and sharing tiles between runs
# --------------------------------------------------------------------------

def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir())}


def test_same_bytes_with_one_and_two_workers(tmp_path):
    mf.write_l2_files(tmp_path, _exposures(dithers=DITHERS[:2]), NO_STARS, 128, seed=3)
    for name, cluster in (("t1", ClusterConfig(type="threads", n_workers=1, progress=False)),
                          ("t2", ClusterConfig(type="threads", n_workers=2, progress=False)),
                          ("p2", ClusterConfig(type="local", n_workers=2, progress=False))):
        mosaic([str(tmp_path / "l2" / "*_cal.asdf")], tmp_path / name, tile_size=128,
               cluster=cluster)
    one, two, processes = (_digest(tmp_path / n) for n in ("t1", "t2", "p2"))
    assert len([k for k in one if k.endswith("_coadd.asdf")]) > 2
    assert one == two == processes


def test_overlapping_runs_share_tiles_and_pixels(tmp_path):
    """Input B coadded alone and with input A: B's tiles exist in both runs, and
    where only B contributes the pixels agree."""
    exps = _exposures(dithers=[(0.0, 0.0), (0.004, 0.002)])
    paths = mf.write_l2_files(tmp_path, exps, NO_STARS, 128, seed=4)
    both = mosaic([str(p) for p in paths], tmp_path / "ab", tile_size=128, cluster=THREADS)
    alone = mosaic([str(paths[1])], tmp_path / "b", tile_size=128, cluster=THREADS)
    names_both = {p.name for p in both}
    assert {p.name for p in alone} <= names_both and len(names_both) > len(alone)
    compared = 0
    for path in alone:
        with _open(path) as m1, _open(tmp_path / "ab" / path.name) as m2:
            assert m1.meta.wcsinfo.s_region == m2.meta.wcsinfo.s_region
            members = list(m2.meta.resample.members)
            bit = 1 << members.index(paths[1].name)
            only_b = np.asarray(m2.context[0]) == bit
            d1, d2 = np.asarray(m1.data)[only_b], np.asarray(m2.data)[only_b]
            assert np.allclose(d1, d2, rtol=1e-6, atol=0)
            compared += only_b.sum()
    assert compared > 1000


# --------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_l2(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    return mf.write_l2_files(tmp, _exposures(dithers=DITHERS[:1]), NO_STARS, 64, seed=1)[0]


def _variant(path: Path, out: Path, old: bytes, new: bytes) -> Path:
    """A copy of an L2 file with one key of its YAML tree renamed (same length,
    so the binary blocks stay where they are): RAD's current schemas, which
    asdf checks on every write, would not let such a file be written."""
    assert len(old) == len(new)
    raw = path.read_bytes()
    assert raw.count(old) == 1
    out.write_bytes(raw.replace(old, new))
    return out


def _fails(capsys, args, *words):
    code = main(["mosaic", *args, "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err
    return err


def test_no_files_match(tmp_path, capsys):
    _fails(capsys, [str(tmp_path / "l2" / "*_cal.asdf"), str(tmp_path / "out")],
           "matches no file")
    assert not (tmp_path / "out").exists()


def test_l2_without_wcs_or_photometry(tmp_path, capsys, one_l2):
    cases = {"no_wcs": (b"\n    wcs: !<", b"\n    wcz: !<", "meta.wcs"),
             "no_photometry": (b"{conversion_megajanskys:", b"{conversion_megajanskyz:",
                               "meta.photometry.conversion_megajanskys")}
    for name, (old, new, field) in cases.items():
        bad = _variant(one_l2, tmp_path / f"{name}_cal.asdf", old, new)
        out = tmp_path / f"out_{name}"
        err = _fails(capsys, [str(one_l2), str(bad), str(out)], str(bad))
        # roman_datamodels 1.2 opens such a file and the field is missing;
        # 1.1 validates the tree as it reads it and cannot open it at all
        assert field in err or "cannot be read as a Roman" in err, err
        assert not out.exists() or not any(out.iterdir())


def test_bad_pixel_scale_and_unwritable_output(tmp_path, capsys, one_l2):
    for scale in ("0", "-0.1"):
        _fails(capsys, [str(one_l2), str(tmp_path / "out"), "--pixel-scale", scale],
               "--pixel-scale")
    assert not (tmp_path / "out").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _fails(capsys, [str(one_l2), str(blocker / "out")], "is not a writable directory")
    _fails(capsys, [str(one_l2), str(blocker)], str(blocker))


def test_existing_tiles_are_kept_without_overwrite(tmp_path, capsys, one_l2):
    out = tmp_path / "out"
    assert main(["mosaic", str(one_l2), str(out), "--tile-size", "256", "--workers", "1",
                 "--no-progress"]) == 0
    before = _digest(out)
    capsys.readouterr()
    _fails(capsys, [str(one_l2), str(out), "--tile-size", "256"], "already exists")
    assert _digest(out) == before
    assert not list(out.glob("*.partial"))


# --------------------------------------------------------------------------
# romandask run: the mosaic product and config section
# --------------------------------------------------------------------------

def test_mosaic_config_section(make_config):
    from romandask.errors import ConfigError

    config, _ = make_config({"output": {"products": ["l2", "mosaic"]},
                             "mosaic": {"pixel_scale": 0.06, "tile_size": 256,
                                        "weight": "exptime"}})
    assert config.mosaic.options().grid == TileGrid(0.06, 256)
    assert "mosaic" in config.output.products
    assert "mosaic" not in make_config()[0].output.products  # not made unless asked
    for overrides, where in (({"mosaic": {"pixel_scale": -1}}, "mosaic.pixel_scale"),
                             ({"mosaic": {"kernel": "cubic"}}, "mosaic.kernel"),
                             ({"mosaic": {"tile_sise": 5}}, "mosaic.tile_sise"),
                             ({"output": {"products": ["mosaic"]}}, "output.products")):
        with pytest.raises(ConfigError) as err:
            make_config(overrides)
        assert err.value.where == where


def test_run_writes_mosaic_tiles_with_truth(make_config):
    import xarray as xr

    from romandask.pipeline import run

    config, _ = make_config({"output": {"products": ["truth", "l2", "mosaic"]},
                             "mosaic": {"tile_size": 256}})
    written = run(config, say=lambda s: None)
    out = config.output.directory / "mosaic"
    tiles = sorted(out.glob("*_F158_coadd.asdf"))
    assert tiles and written["mosaic"] == tiles
    assert (out / "mosaic_F158.png").exists() and not list(out.glob("*.partial"))
    truth = xr.open_zarr(config.output.directory / "romandask.zarr", group="truth")
    ids = set(truth.id.values.tolist())
    seen = 0
    for path in tiles:
        with _open(path) as m:
            m.validate()
            assert np.nanmax(m.romandask["exposure_time"]) > 0
            if "truth" in m.romandask:
                t = m.romandask["truth"]
                assert set(np.asarray(t["id"]).tolist()) <= ids
                assert np.all(np.asarray(t["flux"]) > 0)
                seen += len(t["id"])
    assert seen > 0
    # the store's mosaic group holds the same tiles, readable with xarray
    group = xr.open_zarr(config.output.directory / "romandask.zarr", group="mosaic")
    assert group.data.dims == ("tile", "y", "x") and group.sizes["tile"] == len(tiles)
    for k, path in enumerate(tiles):
        assert f"{group.tile_name.values[k]}_{group['filter'].values[k]}_coadd.asdf" == path.name
        with _open(path) as m:
            np.testing.assert_array_equal(group.data[k].values, np.asarray(m.data))
            np.testing.assert_array_equal(group.exposure_time[k].values,
                                          np.asarray(m.romandask["exposure_time"]))
    # a rerun with --overwrite replaces the tiles with the same bytes
    before = _digest(out)
    import dataclasses

    again = dataclasses.replace(config, output=dataclasses.replace(config.output,
                                                                   overwrite=True))
    run(again, say=lambda s: None)
    assert _digest(out) == before


def test_romanisim_l2_and_two_filters(tmp_path):
    """romanisim's own L2 files coadd too (their gWCS and photometry), one set
    of tiles per filter; the sky comes out as the inputs' rate times their
    conversion to MJy/sr."""
    pytest.importorskip("romanisim")
    from romanisim_fixture import make_romanisim_pair

    inputs = []
    for filt, seed in (("F158", 5), ("F106", 6)):
        pair = make_romanisim_pair(tmp_path / filt, seed=seed, n_pix=128, filter=filt,
                                   name=f"rs_{filt}")
        inputs.append(pair["l2_path"])
    tiles = mosaic([str(p) for p in inputs], tmp_path / "out", tile_size=256, cluster=THREADS)
    by_filter = {f: [p for p in tiles if p.name.endswith(f"_{f}_coadd.asdf")]
                 for f in ("F158", "F106")}
    assert all(by_filter.values()) and len(tiles) == sum(map(len, by_filter.values()))
    for path, filt in zip(inputs, ("F158", "F106")):
        with _open(path) as l2:
            # (romanisim writes the conversion with the sign of its signed pixel area)
            conversion = abs(float(l2.meta.photometry.conversion_megajanskys))
            expected = float(np.median(l2.data)) * conversion
        parts = []
        for tile in by_filter[filt]:
            with _open(tile) as m:
                parts.append(np.asarray(m.data).ravel())
        data = np.concatenate(parts)
        assert abs(np.nanmedian(data) / expected - 1) < 0.02
        assert (tmp_path / "out" / f"mosaic_{filt}.png").exists()

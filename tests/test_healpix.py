"""The synthetic sky drawn per HEALPix pixel, and catalogs partitioned by pixel."""

from __future__ import annotations

import hpgeom
import numpy as np
import pytest
import xarray as xr

from conftest import BASE, merge
from romandask.scene import healpix
from romandask.scene.catalog import (expected_galaxy_density, expected_star_density,
                                     write_catalog)

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

MODEL = dict(galaxy_mag_range=(18.0, 26.0), star_mag_range=(16.0, 24.0))


def test_a_pixel_holds_the_same_sources_whatever_else_is_drawn():
    a = healpix.synthesize_pixels(7, [600000, 600001], filters=("F158",), **MODEL,
                                  density_scale=0.2)
    b = healpix.synthesize_pixels(7, [123, 600000], filters=("F158", "F106"), **MODEL,
                                  density_scale=0.2)
    pa = a[a["id"] // healpix.ID_STRIDE == 600000]
    pb = b[b["id"] // healpix.ID_STRIDE == 600000]
    assert len(pa) > 100
    for name in ("id", "ra", "dec", "type", "n", "half_light_radius", "pa", "ba", "F158"):
        np.testing.assert_array_equal(pa[name], pb[name])
    # and another seed draws another sky
    c = healpix.pixel_sources(8, 600000, filters=("F158",), **MODEL, density_scale=0.2)
    assert len(c) != len(pa) or not np.array_equal(c["ra"], pa["ra"])


def test_sources_lie_in_their_pixel_uniformly():
    nside, pixel = healpix.SKY_NSIDE, 400000
    table = healpix.pixel_sources(3, pixel, nside, ("F158",), **MODEL)
    ra, dec = np.asarray(table["ra"]), np.asarray(table["dec"])
    assert (hpgeom.angle_to_pixel(nside, ra, dec, nest=True) == pixel).all()
    # the 64 equal-area children (NESTED: pixel * 64 + k) hold equal shares
    child = hpgeom.angle_to_pixel(nside * 8, ra, dec, nest=True) - pixel * 64
    counts = np.bincount(child, minlength=64)
    expected = len(table) / 64
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 63 + 5 * np.sqrt(2 * 63)   # 63 degrees of freedom, 5 sigma


@pytest.mark.parametrize("pixel", [0, 3, hpgeom.nside_to_npixel(healpix.SKY_NSIDE) - 1])
def test_pixels_at_the_poles_and_across_ra_zero(pixel):
    nside = healpix.SKY_NSIDE
    polar = hpgeom.angle_to_pixel(nside, 10.0, 89.99, nest=True)
    for p in (pixel, int(polar)):
        table = healpix.pixel_sources(5, p, nside, ("F158",), **MODEL, density_scale=0.1)
        assert len(table) > 500
        assert (hpgeom.angle_to_pixel(nside, table["ra"], table["dec"], nest=True) == p).all()
        assert ((table["ra"] >= 0) & (table["ra"] < 360)).all()


def test_counts_per_pixel_follow_the_number_count_model():
    nside, scale = healpix.SKY_NSIDE, 0.02
    pixels = np.arange(300000, 300000 + 400)
    area = hpgeom.nside_to_pixel_area(nside, degrees=True)
    n_gal, n_star, mu_gal, mu_star = [], [], [], []
    for p in pixels:
        t = healpix.pixel_sources(11, int(p), nside, ("F158",), **MODEL, density_scale=scale)
        n_gal.append(int((t["type"] == "SER").sum()))
        n_star.append(int((t["type"] == "PSF").sum()))
        lon, lat = hpgeom.pixel_to_angle(nside, int(p), nest=True)
        b = float(healpix.galactic_latitude(lon, lat))
        mu_gal.append(expected_galaxy_density(18.0, 26.0) * area * scale)
        mu_star.append(expected_star_density(16.0, 24.0, b) * area * scale)
    for n, mu in ((np.array(n_gal), np.array(mu_gal)), (np.array(n_star), np.array(mu_star))):
        # the total within 4 sigma of Poisson, and the scatter of each pixel Poisson's
        assert abs(n.sum() - mu.sum()) < 4 * np.sqrt(mu.sum())
        chi2 = float(((n - mu) ** 2 / mu).sum())
        dof = len(n)
        assert abs(chi2 - dof) < 5 * np.sqrt(2 * dof)


def test_pixels_near_a_window_cover_every_source_within_the_margin():
    rng = np.random.default_rng(1)
    ra = np.array([9.70, 9.81, 9.81, 9.70])
    dec = np.array([-44.05, -44.05, -43.97, -43.97])
    margin = 0.01
    pixels = set(healpix.pixels_near(ra, dec, margin).tolist())
    # points in the window grown by the margin (a box in ra, dec)
    r = rng.uniform(9.70 - margin / np.cos(np.radians(44)), 9.81 + margin / np.cos(np.radians(44)),
                    20000)
    d = rng.uniform(-44.05 - margin, -43.97 + margin, 20000)
    assert set(hpgeom.angle_to_pixel(healpix.SKY_NSIDE, r, d, nest=True).tolist()) <= pixels


def test_a_partitioned_catalog_reads_back_the_rows_of_its_pixels(tmp_path):
    table = healpix.synthesize_pixels(2, [500000, 500001, 500005], filters=("F158",), **MODEL,
                                      density_scale=0.05)
    directory = healpix.write_partitioned(table, tmp_path / "cat", nside=64)
    cat = healpix.PartitionedCatalog(directory)
    assert cat.nside == 64 and cat.rows == len(table)
    everything = cat.read(cat.counts, ("F158",))
    order = np.argsort(everything["id"])
    for name in ("id", "ra", "dec", "type", "F158"):
        np.testing.assert_array_equal(everything[name][order], table[name][np.argsort(table["id"])])
    # a subset reads only its rows
    one = next(iter(cat.counts))
    part = cat.read([one], ("F158",))
    assert len(part) == cat.counts[one]
    assert (hpgeom.angle_to_pixel(64, part["ra"], part["dec"], nest=True) == one).all()
    # pixels of another resolution map to the catalog's own
    fine = hpgeom.angle_to_pixel(256, part["ra"][:5], part["dec"][:5], nest=True)
    assert cat.pixels_for(fine, 256).tolist() == [one]
    assert one in cat.pixels_for(np.array([one >> 2]), 32).tolist()
    # the directory is not written over
    from romandask.errors import OutputError

    with pytest.raises(OutputError):
        healpix.write_partitioned(table, directory, nside=64)


def _run(tmp_path, name, catalog, window=64, exposures=None):
    from romandask.config import parse_config
    from romandask.pipeline import run

    survey = {"scas": [7]} if exposures is None else {"scas": [7], "exposures": exposures}
    if "file" in catalog:
        catalog = {**catalog, "synthetic": None}
    config = merge(BASE, {"survey": survey, "catalog": catalog,
                          "detector": {"window": window, "tile": window},
                          "output": {"directory": str(tmp_path / name),
                                     "products": ["counts", "truth"]}})
    written = run(parse_config(config, tmp_path), say=lambda s: None)
    ds = xr.open_zarr(written["store"])
    truth = xr.open_zarr(written["store"], group="truth")
    return ds, truth


def test_a_partitioned_catalog_gives_the_truth_and_counts_of_the_same_file(tmp_path):
    from romandask.config import parse_config
    from romandask.pipeline import footprint

    config = parse_config(merge(BASE, {"survey": {"scas": [7]},
                                       "detector": {"window": 64, "tile": 64}}), tmp_path)
    views = footprint(config)
    ra, dec = np.mean([v.center() for v in views], axis=0)
    pixels = healpix.pixels_near(*views[0].corners(), 0.05)
    table = healpix.synthesize_pixels(4, pixels, filters=("F158",), **MODEL, density_scale=2.0)
    write_catalog(table, tmp_path / "one.parquet")
    healpix.write_partitioned(table, tmp_path / "parts", nside=128)
    ds1, t1 = _run(tmp_path, "one", {"file": str(tmp_path / "one.parquet")})
    ds2, t2 = _run(tmp_path, "parts", {"file": str(tmp_path / "parts")})
    assert t1.sizes["source"] > 5
    o1, o2 = np.lexsort((t1["id"].values, t1["exposure"].values)), \
        np.lexsort((t2["id"].values, t2["exposure"].values))
    for name in t1.data_vars:
        np.testing.assert_array_equal(t1[name].values[o1], t2[name].values[o2])
    np.testing.assert_array_equal(ds1["counts"].values, ds2["counts"].values)


def test_two_overlapping_surveys_see_the_same_synthetic_sources(tmp_path):
    first, second = BASE["survey"]["exposures"]
    shifted = {**first, "ra": first["ra"] + 0.0002}
    catalog = {"synthetic": {"partition": "healpix", "density_scale": 2.0}}
    _, ta = _run(tmp_path, "a", catalog, exposures=[first])
    _, tb = _run(tmp_path, "b", catalog, exposures=[shifted, second])
    ids = np.intersect1d(ta["id"].values, tb["id"].values)
    assert len(ids) > 5
    for tab in (ta, tb):
        assert (tab["id"].values // healpix.ID_STRIDE < hpgeom.nside_to_npixel(
            healpix.SKY_NSIDE)).all()
    # a source's position is its catalog's: the same in both surveys
    pos_a = {int(i): (r, d) for i, r, d in zip(ta["id"].values, ta["ra"].values,
                                               ta["dec"].values)}
    pos_b = {int(i): (r, d) for i, r, d in zip(tb["id"].values, tb["ra"].values,
                                               tb["dec"].values)}
    assert all(pos_a[int(i)] == pos_b[int(i)] for i in ids)


def test_a_directory_without_an_index_is_one_line(tmp_path):
    from romandask.config import ConfigError, parse_config

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="directory without romandask_catalog.json"):
        parse_config(merge(BASE, {"catalog": {"file": str(tmp_path / "empty"),
                                              "synthetic": None}}), tmp_path)
    with pytest.raises(ConfigError, match="partition"):
        parse_config(merge(BASE, {"catalog": {"synthetic": {"partition": "hexagons"}}}),
                     tmp_path)

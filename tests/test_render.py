"""Rendering physics: positions, fluxes, sky levels, source selection."""

from __future__ import annotations

import datetime

import galsim
import galsim.roman
import numpy as np
import pytest
from astropy.table import Table

from romandask.config import Exposure
from romandask.instrument.filters import GALSIM_NAME, bandpass
from romandask.instrument.matables import MATable
from romandask.scene.psf import PSFKey, psf_model
from romandask.scene.render import Backgrounds, render_counts
from romandask.scene.select import CatalogIndex, select_sources
from romandask.survey.footprint import SCAView, exposure_wcs, window_bounds

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

DATE = datetime.datetime(2027, 6, 1)
MARGIN = 64


def _view(sca=1, filt="F158", window=256, pa=0.0):
    exp = Exposure(0, 9.7, -44.0, pa, filt, MATable.numbered(4), DATE)
    return SCAView(exp, sca, exposure_wcs(exp, (sca,))[sca], window_bounds(window))


def _psf(view):
    b = view.bounds
    return psf_model(PSFKey(view.sca, view.exposure.filter, b.xmin, b.xmax, b.ymin, b.ymax,
                            radius=MARGIN))


def _catalog(ra, dec, filt, mag, kind="PSF", n=1.0, hlr=0.0, pa=0.0, ba=1.0):
    ra, dec = np.atleast_1d(ra), np.atleast_1d(dec)
    k = len(ra)
    return Table({"id": np.arange(k), "ra": ra, "dec": dec, "type": [kind] * k,
                  "n": np.full(k, n), "half_light_radius": np.full(k, hlr),
                  "pa": np.full(k, pa), "ba": np.full(k, ba),
                  filt: np.full(k, 10 ** (-0.4 * mag))})


def _electrons_galsim(filt, mag, exptime):
    """Expected electrons of an AB-flat source via GalSim's chromatic machinery."""
    bp = bandpass(filt)
    sed = galsim.SED(lambda w: 1.0, "nm", "fnu").withMagnitude(mag, bp)
    return (galsim.DeltaFunction() * sed).calculateFlux(bp) * galsim.roman.collecting_area * exptime


@pytest.mark.parametrize("filt", ["F158", "F087"])
@pytest.mark.parametrize("frac", [(0.0, 0.0), (0.3, 0.7), (0.5, 0.25)])
def test_star_lands_at_wcs_position_with_its_flux(filt, frac):
    view = _view(filt=filt)
    b = view.bounds
    # a star placed on the sky where the WCS puts it at this sub-pixel position
    x0, y0 = b.xmin + 120 + frac[0], b.ymin + 101 + frac[1]
    sky = view.wcs.toWorld(galsim.PositionD(x0, y0))
    mag = 18.0
    cat = _catalog(sky.ra.deg, sky.dec.deg, filt, mag)
    src = select_sources(view, CatalogIndex(cat), MARGIN)
    assert len(src["id"]) == 1
    exptime = view.exposure.exposure_time
    image = render_counts(b, view.wcs, src, _psf(view), exptime, Backgrounds(), rng=None,
                          margin=MARGIN).astype(np.float64)
    yy, xx = np.mgrid[b.ymin:b.ymax + 1, b.xmin:b.xmax + 1]
    total = image.sum()
    assert abs((image * xx).sum() / total - x0) < 0.05
    assert abs((image * yy).sum() / total - y0) < 0.05
    expected = _electrons_galsim(filt, mag, exptime)
    assert total == pytest.approx(expected, rel=0.01)
    # and the truth flux carries the same number
    assert src["flux"][0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("filt,sca", [("F158", 1), ("F062", 9), ("F213", 17)])
def test_mean_sky_matches_expected_level(filt, sca):
    view = _view(sca=sca, filt=filt, window=256)
    b = view.bounds
    exptime = view.exposure.exposure_time
    centre = view.wcs.toWorld(b.true_center)
    zodi = galsim.roman.getSkyLevel(bandpass(filt), world_pos=centre, date=DATE, exptime=1.0)
    thermal = galsim.roman.thermal_backgrounds[GALSIM_NAME[filt]]
    dark = 0.015
    bg = Backgrounds(sky=zodi * 1.1, thermal=thermal, dark=dark)
    rng = np.random.default_rng(42)
    empty = {k: np.zeros(0) for k in ("x", "y", "flux", "n", "half_light_radius", "pa", "ba")}
    empty["type"] = np.zeros(0, "U3")
    image = render_counts(b, view.wcs, empty, None, exptime, bg, rng=rng)
    # independent expectation: mean pixel area over the window from the WCS Jacobian
    xs = np.linspace(b.xmin, b.xmax, 9)
    area = np.mean([view.wcs.pixelArea(galsim.PositionD(x, y)) for x in xs for y in xs])
    per_pixel = (zodi * 1.1 * area + thermal + dark) * exptime
    sigma_mean = np.sqrt(per_pixel / image.size)
    assert abs(image.mean() - per_pixel) < 3 * sigma_mean
    # Poisson: variance equals the mean (within 3 sigma of the variance estimate)
    assert abs(image.var() - per_pixel) < 3 * per_pixel * np.sqrt(2.0 / image.size)


def test_sources_just_outside_the_margin_are_excluded():
    view = _view(window=128)
    b = view.bounds
    lo, hi = b.xmin - 0.5 - MARGIN, b.xmax + 0.5 + MARGIN
    ymid = 0.5 * (b.ymin + b.ymax)
    xs = np.array([lo - 0.2, lo + 0.2, hi - 0.2, hi + 0.2])
    ys = np.array([ymid, ymid, ymid, ymid])
    # and along y too
    xs = np.r_[xs, [b.xmin + 10] * 4]
    lo_y, hi_y = b.ymin - 0.5 - MARGIN, b.ymax + 0.5 + MARGIN
    ys = np.r_[ys, [lo_y - 0.2, lo_y + 0.2, hi_y - 0.2, hi_y + 0.2]]
    ra, dec = view.wcs.toWorld(xs, ys, units="deg")
    src = select_sources(view, CatalogIndex(_catalog(ra, dec, "F158", 20.0)), MARGIN)
    assert sorted(src["id"].tolist()) == [1, 2, 5, 6]
    np.testing.assert_allclose(src["x"], xs[src["id"]], atol=1e-6)


def test_galaxy_major_axis_follows_position_angle():
    """A Sersic galaxy with pa = 0 (major axis north) is elongated along north in the image."""
    for pa_gal in (0.0, 45.0):
        view = _view(pa=30.0, window=128)
        b = view.bounds
        c = b.true_center
        sky = view.wcs.toWorld(c)
        cat = _catalog(sky.ra.deg, sky.dec.deg, "F158", 17.0, kind="SER", n=1.0, hlr=0.6,
                       pa=pa_gal, ba=0.3)
        src = select_sources(view, CatalogIndex(cat), MARGIN)
        img = render_counts(b, view.wcs, src, _psf(view), 100.0, Backgrounds(), rng=None,
                            margin=MARGIN).astype(float)
        yy, xx = np.mgrid[b.ymin:b.ymax + 1, b.xmin:b.xmax + 1]
        dx, dy = xx - c.x, yy - c.y
        qxx, qyy, qxy = (img * dx * dx).sum(), (img * dy * dy).sum(), (img * dx * dy).sum()
        angle_img = 0.5 * np.arctan2(2 * qxy, qxx - qyy)  # major axis angle in pixels
        # the direction of the galaxy's major axis on the sky, mapped into pixels
        north = np.radians(pa_gal)
        step = 1e-4  # deg
        tip = galsim.CelestialCoord(
            (sky.ra.deg + step * np.sin(north) / np.cos(sky.dec.rad)) * galsim.degrees,
            (sky.dec.deg + step * np.cos(north)) * galsim.degrees)
        p = view.wcs.toImage(tip)
        angle_sky = np.arctan2(p.y - c.y, p.x - c.x)
        diff = (angle_img - angle_sky + np.pi / 2) % np.pi - np.pi / 2
        assert abs(np.degrees(diff)) < 2.0, (pa_gal, np.degrees(diff))

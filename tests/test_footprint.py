"""Footprint geometry: SCA centres, the position-angle convention, windows."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
import galsim
import galsim.roman
import galsim.roman.roman_wcs as roman_wcs

from romandask.config import Exposure
from romandask.instrument.matables import MATable
from romandask.survey.footprint import SCAView, angular_distance, exposure_wcs, window_bounds

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

DATE = datetime.datetime(2027, 6, 1)


def _exposure(ra=9.7, dec=-44.0, pa=0.0):
    return Exposure(0, ra, dec, pa, "F158", MATable.numbered(4), DATE)


def _views(exposure, window=4088):
    wcs = exposure_wcs(exposure, tuple(range(1, 19)))
    return [SCAView(exposure, s, wcs[s], window_bounds(window)) for s in range(1, 19)]


def _galsim_sca_centres(ra, dec, pa):
    """SCA centres from GalSim's SCA position table, projected with astropy.

    GalSim tabulates each SCA centre's tangent-plane offset (u west, v north)
    for a focal plane at position angle 0; the FPA is at pa + theta_fpa.
    """
    pa_fpa = np.radians(pa + roman_wcs.theta_fpa.deg)
    u0, v0 = roman_wcs.sca_crval_u_deg[1:19], roman_wcs.sca_crval_v_deg[1:19]
    uu = u0 * np.cos(pa_fpa) - v0 * np.sin(pa_fpa)
    vv = u0 * np.sin(pa_fpa) + v0 * np.cos(pa_fpa)
    # gnomonic deprojection; u points west, so the offset east is -u
    xi, eta = np.radians(-uu), np.radians(vv)
    separation = np.arctan(np.hypot(xi, eta))
    position_angle = np.arctan2(xi, eta)  # east of north
    centre = SkyCoord(ra * u.deg, dec * u.deg)
    return centre.directional_offset_by(position_angle * u.rad, separation * u.rad)


@pytest.mark.parametrize("pa", [0.0, 37.0, -120.0])
def test_sca_centres_match_galsim_positions(pa):
    exposure = _exposure(pa=pa)
    views = _views(exposure)
    expected = _galsim_sca_centres(exposure.ra, exposure.dec, pa)
    for view, exp in zip(views, expected):
        ra, dec = view.center()
        sep = SkyCoord(ra * u.deg, dec * u.deg).separation(exp).arcsec
        assert sep < 1.0, (view.sca, sep)


def test_position_angle_rotates_the_focal_plane_east_of_north():
    """Raising pa by 90 deg turns every SCA centre 90 deg east of north about the boresight."""
    base = SkyCoord(9.7 * u.deg, -44.0 * u.deg)
    pas = {}
    for pa in (0.0, 90.0):
        centres = [v.center() for v in _views(_exposure(pa=pa))]
        pas[pa] = np.array([base.position_angle(SkyCoord(r * u.deg, d * u.deg)).deg
                            for r, d in centres])
    turn = (pas[90.0] - pas[0.0]) % 360.0
    np.testing.assert_allclose(turn, 90.0, atol=0.05)


def test_window_is_centred_and_sized():
    full = _views(_exposure())
    win = _views(_exposure(), window=512)
    for f, w in zip(full, win):
        assert w.shape == (512, 512)
        # the central window shares the SCA centre
        assert angular_distance(*f.center(), *w.center()) * 3600 < 0.11
        ra, dec = w.corners()
        side = angular_distance(ra[0], dec[0], ra[1], dec[1]) * 3600
        assert 512 * 0.10 < side < 512 * 0.12  # ~0.11"/pix with distortion
        assert w.s_region().startswith("POLYGON ICRS ")
        assert len(w.s_region().split()) == 2 + 8


def test_full_focal_plane_spans_the_wfi():
    """The 18 SCAs cover ~0.28 deg^2 each (4088 px at ~0.11"): about 0.8 x 0.5 deg."""
    views = _views(_exposure())
    ra = np.concatenate([v.corners()[0] for v in views])
    dec = np.concatenate([v.corners()[1] for v in views])
    span = max(angular_distance(ra[i], dec[i], ra, dec).max() for i in range(len(ra)))
    assert 0.75 < span < 1.0


@pytest.mark.parametrize("ra, dec, pa", [(9.7, -44.0, 0.0), (250.3, 61.2, 143.5),
                                         (0.01, -89.5, -75.0)])
def test_exposure_wcs_is_galsims_value_for_value(ra, dec, pa):
    """The WCS made from plain cards is GalSim's own, every parameter equal, and
    carries no header."""
    import pickle

    exposure = _exposure(ra, dec, pa)
    mine = exposure_wcs(exposure, tuple(range(1, 19)))
    world = galsim.CelestialCoord(ra * galsim.degrees, dec * galsim.degrees)
    theirs = galsim.roman.getWCS(world, PA=pa * galsim.degrees, date=DATE)
    assert roman_wcs.FitsHeader is galsim.FitsHeader  # put back
    for sca in range(1, 19):
        a, b = mine[sca], theirs[sca]
        assert a == b and a.wcs_type == b.wcs_type == "TAN-SIP"
        for name in ("crpix", "cd", "ab"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert (a.center.ra.rad, a.center.dec.rad) == (b.center.ra.rad, b.center.dec.rad)
        assert a.abp is None and b.abp is None
        x, y = np.array([1.0, 2044.5, 4088.0]), np.array([4088.0, 17.0, 1.0])
        np.testing.assert_array_equal(a.toWorld(x, y, units="deg"),
                                      b.toWorld(x, y, units="deg"))
        assert not hasattr(a, "header") and hasattr(b, "header")
        assert len(pickle.dumps(a)) < len(pickle.dumps(b)) / 5

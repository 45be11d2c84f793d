"""World coordinates of the L2 products: gWCS, FITS headers, pixel areas, FITS files."""

from __future__ import annotations

import datetime
import time
import warnings

import asdf
import galsim
import galsim.roman
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import ICRS, SkyCoord
from astropy.io import fits
from astropy.wcs import WCS as AstropyWCS
from roman_datamodels import datamodels as rdm

from romandask.errors import OutputError
from romandask.wcs import (
    NOMINAL_PIXEL_AREA,
    SIM_TO_ISIM_COMMENT,
    fits_header_from_galsim,
    gwcs_from_fits_header,
    gwcs_from_galsim,
    header_first_pixel,
    pixel_area_map,
    read_fits_header,
    window_header,
    write_fits_image,
)

N = 4088
MAS = 1e-3 / 3600.0  # degrees
#: Two pointings: a southern field, and one whose SCAs straddle RA = 0.
POINTINGS = {"south": (9.7, -44.0, 10.0), "ra0": (0.0, 62.0, 250.0)}
SCAS = [1, 9, 18]
ORIGIN = (1012, 2981)  # a 64 x 48 window near a corner


@pytest.fixture(scope="module")
def roman_wcs() -> dict[tuple[str, int], galsim.GSFitsWCS]:
    out = {}
    for name, (ra, dec, pa) in POINTINGS.items():
        wcs = galsim.roman.getWCS(world_pos=galsim.CelestialCoord(ra * galsim.degrees,
                                                                  dec * galsim.degrees),
                                  PA=pa * galsim.degrees, SCAs=SCAS,
                                  date=datetime.datetime(2027, 1, 1))
        out.update({(name, sca): w for sca, w in wcs.items()})
    return out


@pytest.fixture(scope="module")
def sca9(roman_wcs) -> galsim.GSFitsWCS:
    return roman_wcs["south", 9]


def separation(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Angular distance in degrees, accurate for tiny separations."""
    dra = (np.asarray(ra1) - ra2 + 180.0) % 360.0 - 180.0
    return np.hypot(dra * np.cos(np.radians(dec2)), np.asarray(dec1) - dec2)


def full_array_grid() -> tuple[np.ndarray, np.ndarray]:
    """0-based pixels over the whole array, its edges and outer corners included."""
    g = np.r_[-0.5, 0.0, 0.5, np.linspace(1, N - 2, 61), N - 1.5, N - 1.0, N - 0.5]
    return np.meshgrid(g, g)


def galsim_world(wcs, x, y, origin=(0, 0)):
    return wcs.toWorld(x + 1 + origin[0], y + 1 + origin[1], units="deg")


def galsim_header_text(wcs) -> fits.Header:
    header = fits.Header()
    wcs.writeToFitsHeader(header, galsim.BoundsI(1, N, 1, N))
    return header


# --------------------------------------------------------------------------
# gWCS
# --------------------------------------------------------------------------

@pytest.mark.parametrize("pointing", POINTINGS)
@pytest.mark.parametrize("sca", SCAS)
def test_gwcs_matches_galsim_over_the_whole_array(roman_wcs, pointing, sca):
    wcs = roman_wcs[pointing, sca]
    g = gwcs_from_galsim(wcs, (0, 0))
    x, y = full_array_grid()
    ra, dec = g(x, y)
    assert separation(ra, dec, *galsim_world(wcs, x, y)).max() < 1e-3 * MAS

    xi, yi = g.invert(ra, dec)
    assert max(np.abs(xi - x).max(), np.abs(yi - y).max()) < 1e-6
    gx, gy = wcs.toImage(ra, dec, units="deg")
    assert max(np.abs(xi + 1 - gx).max(), np.abs(yi + 1 - gy).max()) < 1e-6


def test_gwcs_of_a_window(sca9):
    ny, nx = 48, 64
    g = gwcs_from_galsim(sca9, ORIGIN, shape=(ny, nx))
    x, y = np.meshgrid(np.linspace(-0.5, nx - 0.5, 9), np.linspace(-0.5, ny - 0.5, 7))
    ra, dec = g(x, y)
    assert separation(ra, dec, *galsim_world(sca9, x, y, ORIGIN)).max() < 1e-3 * MAS
    assert g.pixel_shape == (nx, ny)
    assert np.isnan(g(nx + 1.0, 0.0)[0])  # outside the bounding box

    # (points on the box's edge may come back a hair outside, as NaN)
    x, y = np.meshgrid(np.linspace(-0.49, nx - 0.51, 9), np.linspace(-0.49, ny - 0.51, 7))
    sky = g.pixel_to_world(x, y)
    assert isinstance(sky, SkyCoord) and isinstance(sky.frame, ICRS)
    xi, yi = g.world_to_pixel(sky)
    assert max(np.abs(xi - x).max(), np.abs(yi - y).max()) < 1e-6


def test_gwcs_frames(sca9):
    g = gwcs_from_galsim(sca9, (0, 0))
    assert g.input_frame.name == "detector"
    assert tuple(g.input_frame.unit) == (u.pix, u.pix)
    assert g.output_frame.name == "world"
    assert isinstance(g.output_frame.reference_frame, ICRS)
    assert tuple(g.output_frame.unit) == (u.deg, u.deg)


def test_gwcs_survives_an_image_model_round_trip(sca9, tmp_path):
    shape = (48, 64)
    g = gwcs_from_galsim(sca9, ORIGIN, shape=shape)
    model = rdm.ImageModel.create_fake_data(shape=shape)
    model.meta.wcs = g
    model.validate()
    path = tmp_path / "r0000101001001001001_01101_0001_wfi09_cal.asdf"
    model.save(path)

    x, y = np.meshgrid(np.arange(shape[1], dtype=float), np.arange(shape[0], dtype=float))
    world = g(x, y)
    with rdm.open(path) as reopened:
        g2 = reopened.meta.wcs
        assert g2.input_frame.name == "detector" and g2.output_frame.name == "world"
        assert g2.pixel_shape == g.pixel_shape
        assert g2.bounding_box.bounding_box() == g.bounding_box.bounding_box()
        for a, b in zip(g2(x, y), world):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(g2.invert(*world), g.invert(*world)):
            np.testing.assert_array_equal(a, b)
    with asdf.open(path) as af:  # the plain ASDF tree holds the same gWCS
        np.testing.assert_array_equal(af["roman"]["meta"]["wcs"](x, y)[0], world[0])


# --------------------------------------------------------------------------
# FITS headers
# --------------------------------------------------------------------------

def assert_same_gwcs(a, b, tolerance_mas=1e-6):
    x, y = full_array_grid()
    assert separation(*a(x, y), *b(x, y)).max() < tolerance_mas * MAS


@pytest.mark.parametrize("sep", ["", "\n"])
def test_fits_header_round_trip(sca9, tmp_path, sep):
    header = fits_header_from_galsim(sca9, ORIGIN)
    assert header["CTYPE1"] == "RA---TAN-SIP" and header["RADESYS"] == "ICRS"
    assert header["CRPIX1"] == sca9.crpix[0] - ORIGIN[0]
    assert "AP_ORDER" in header and "BP_ORDER" in header
    path = tmp_path / "wcshead.txt"
    path.write_text(header.tostring(sep=sep))

    reference = gwcs_from_galsim(sca9, ORIGIN)
    for source in (header, path, str(path), header.tostring(sep=sep)):
        assert_same_gwcs(gwcs_from_fits_header(source), reference)
    # a science-array header and the window's origin give the same gWCS
    full = fits_header_from_galsim(sca9, (0, 0))
    assert_same_gwcs(gwcs_from_fits_header(full, ORIGIN), reference)


def test_fits_header_agrees_with_astropy_wcs(sca9):
    """astropy.wcs (wcslib) reads the header to the same sky positions."""
    header = fits_header_from_galsim(sca9, ORIGIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        awcs = AstropyWCS(header)
    x, y = full_array_grid()
    ra, dec = awcs.all_pix2world(x, y, 0)
    assert separation(ra, dec, *galsim_world(sca9, x, y, ORIGIN)).max() < 1e-3 * MAS


def test_galsim_header_is_read(sca9):
    """GalSim's own writeToFitsHeader header (no AP, BP: the inverse is fitted)."""
    header = galsim_header_text(sca9)
    assert "AP_ORDER" not in header
    galsim_header = galsim.FitsHeader()
    sca9.writeToFitsHeader(galsim_header, galsim.BoundsI(1, N, 1, N))
    assert_same_gwcs(gwcs_from_fits_header(galsim_header), gwcs_from_fits_header(header))
    g = gwcs_from_fits_header(header.tostring())
    x, y = full_array_grid()
    ra, dec = g(x, y)
    assert separation(ra, dec, *galsim_world(sca9, x, y)).max() < 1e-3 * MAS
    xi, yi = g.invert(ra, dec)
    assert max(np.abs(xi - x).max(), np.abs(yi - y).max()) < 1e-6


def sim_to_isim_header(wcs) -> fits.Header:
    """A header as romanimpreprocess's sim_to_isim writes it: CRPIX 0-based, marked."""
    header = galsim_header_text(wcs)
    header["CRPIX1"] -= 1
    header["CRPIX2"] -= 1
    header["COMMENT"] = SIM_TO_ISIM_COMMENT
    return header


def test_sim_to_isim_header_is_read_with_its_0_based_crpix(sca9, tmp_path):
    header = sim_to_isim_header(sca9)
    path = tmp_path / "sim_L1_F158_1_9_asdf_wcshead.txt"
    header.tofile(path)  # 80-character cards back to back, as sim_to_isim writes
    assert "\n" not in path.read_text()
    assert header_first_pixel(read_fits_header(path)) == 0.0
    assert header_first_pixel(galsim_header_text(sca9)) == 1.0

    reference = gwcs_from_galsim(sca9, ORIGIN)
    assert_same_gwcs(gwcs_from_fits_header(path, ORIGIN), reference)
    assert_same_gwcs(gwcs_from_fits_header(path, ORIGIN, first_pixel=0), reference)
    window = window_header(path, ORIGIN)
    assert header_first_pixel(window) == 1.0 and "NAXIS" not in window
    assert_same_gwcs(gwcs_from_fits_header(window), reference)


def test_sim_to_isim_convention_is_romanisims(sca9):
    """romanisim's reader of the same header gives the same sky for 0-based pixels."""
    romanisim_wcs = pytest.importorskip("romanisim.models.wcs")
    header = sim_to_isim_header(sca9)
    ours = gwcs_from_fits_header(header)
    theirs = romanisim_wcs.wcs_from_fits_header(header)
    x, y = np.meshgrid(np.linspace(0, N - 1, 5), np.linspace(0, N - 1, 5))
    assert separation(*ours(x, y), *theirs(x, y, with_bounding_box=False)).max() < 1e-3 * MAS


def test_unsupported_wcs_is_refused(sca9):
    with pytest.raises(TypeError):
        gwcs_from_galsim(galsim.PixelScale(0.11), (0, 0))
    header = fits_header_from_galsim(sca9, (0, 0))
    header["CTYPE1"], header["CTYPE2"] = "RA---TPV", "DEC--TPV"
    with pytest.raises(ValueError, match="CTYPE1"):
        gwcs_from_fits_header(header)
    with pytest.raises(TypeError, match="origin"):
        gwcs_from_galsim(sca9, 3)


# --------------------------------------------------------------------------
# pixel areas
# --------------------------------------------------------------------------

@pytest.mark.parametrize("sca", SCAS)
def test_pixel_area_matches_galsim(roman_wcs, sca):
    wcs = roman_wcs["ra0", sca]
    area = pixel_area_map(wcs, (0, 0), slice(0, N, 31), slice(0, N, 29))
    assert area.dtype == np.float64 and area.shape == (len(range(0, N, 31)), len(range(0, N, 29)))
    rows = [0, 1, 50, len(range(0, N, 31)) - 1]
    cols = [0, 7, 99, len(range(0, N, 29)) - 1]
    for r in rows:
        for c in cols:
            pos = galsim.PositionD(29 * c + 1, 31 * r + 1)
            expected = wcs.pixelArea(pos) / NOMINAL_PIXEL_AREA
            assert area[r, c] == pytest.approx(expected, rel=1e-9)
    corner = pixel_area_map(wcs, (N - 1, N - 1), slice(0, 1), slice(0, 1))[0, 0]
    expected = wcs.pixelArea(galsim.PositionD(N, N)) / NOMINAL_PIXEL_AREA
    assert corner == pytest.approx(expected, rel=1e-9)


def integrated_area(wcs, x, y) -> float:
    """Area of GalSim pixel (x, y) from its four corners, projected about its centre."""
    centre = wcs.toWorld(galsim.PositionD(x, y))
    cx = x + np.array([-0.5, 0.5, 0.5, -0.5])
    cy = y + np.array([-0.5, -0.5, 0.5, 0.5])
    ra, dec = wcs.toWorld(cx, cy, units="rad")
    pu, pv = centre.project_rad(ra, dec, projection="gnomonic")
    shoelace = 0.5 * abs(np.dot(pu, np.roll(pv, -1)) - np.dot(pv, np.roll(pu, -1)))
    return shoelace * (galsim.radians / galsim.arcsec) ** 2 / NOMINAL_PIXEL_AREA


def test_pixel_area_is_the_area_on_the_sky(sca9):
    for x, y in [(0, 0), (N - 1, 0), (2043, 2043), (17, N - 1)]:
        area = pixel_area_map(sca9, (0, 0), slice(y, y + 1), slice(x, x + 1))[0, 0]
        assert area == pytest.approx(integrated_area(sca9, x + 1, y + 1), rel=1e-6)


def test_pixel_area_of_a_window_is_a_slice_of_the_larger_map(sca9):
    big = pixel_area_map(sca9, ORIGIN, slice(0, 300), slice(0, 200))
    sub = pixel_area_map(sca9, ORIGIN, slice(37, 151), slice(20, 199))
    np.testing.assert_allclose(sub, big[37:151, 20:199], rtol=1e-13, atol=0)
    shifted = pixel_area_map(sca9, (ORIGIN[0] + 20, ORIGIN[1] + 37), slice(0, 114), slice(0, 179))
    np.testing.assert_allclose(shifted, sub, rtol=1e-13, atol=0)
    with pytest.raises(ValueError):
        pixel_area_map(sca9, ORIGIN, slice(0, None), slice(0, 10))


def test_full_frame_area_map_is_fast(sca9):
    start = time.perf_counter()
    area = pixel_area_map(sca9, (0, 0), slice(0, N), slice(0, N))
    elapsed = time.perf_counter() - start
    assert area.shape == (N, N) and np.isfinite(area).all()
    assert 0.9 < area.min() < area.max() < 1.0  # WFI pixels are a little smaller than nominal
    assert elapsed < 5.0


# --------------------------------------------------------------------------
# FITS companion
# --------------------------------------------------------------------------

def l2_arrays(shape=(48, 64)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "data": rng.normal(size=shape).astype(np.float32),
        "err": rng.random(shape).astype(np.float16),
        "dq": rng.integers(0, 2 ** 32, size=shape, dtype=np.uint32),
        "var_poisson": rng.random(shape).astype(np.float32),
        "var_rnoise": rng.random(shape).astype(np.float32),
    }


META = {"TELESCOP": "ROMAN", "DETECTOR": ("WFI09", "SCA"), "EXPOSURE": 1,
        "DATE-OBS": "2027-01-01T00:00:00.000", "EXPOSURE_TIME": 139.8}


def test_write_fits_image(sca9, tmp_path):
    arrays = l2_arrays()
    before = {k: v.copy() for k, v in arrays.items()}
    header = fits_header_from_galsim(sca9, ORIGIN)
    path = tmp_path / "r0000101001001001001_01101_0001_wfi09_cal_asdf_to.fits"
    write_fits_image(path, arrays, header, META)
    assert not path.with_name(path.name + ".partial").exists()
    for name, array in arrays.items():  # the caller's arrays are left alone
        np.testing.assert_array_equal(array, before[name])
        assert array.dtype == before[name].dtype

    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "DQ", "VAR_POISSON",
                                          "VAR_RNOISE"]
        primary = hdul[0].header
        assert hdul[0].data is None and "DATE" not in primary
        assert primary["DETECTOR"] == "WFI09" and primary["EXPOSURE_TIME"] == 139.8
        assert primary["CRPIX1"] == header["CRPIX1"]
        np.testing.assert_array_equal(hdul["SCI"].data, arrays["data"])
        np.testing.assert_array_equal(hdul["ERR"].data, arrays["err"].astype(np.float32))
        assert hdul["DQ"].data.dtype == np.uint32
        np.testing.assert_array_equal(hdul["DQ"].data, arrays["dq"])
        sci = hdul["SCI"].header
        assert sci["CTYPE2"] == "DEC--TAN-SIP" and sci["A_ORDER"] == header["A_ORDER"]

    # GalSim reads the SCI extension back onto the science array, with the same WCS
    image = galsim.fits.read(str(path), hdu=1)
    assert image.bounds == galsim.BoundsI(ORIGIN[0] + 1, ORIGIN[0] + 64,
                                          ORIGIN[1] + 1, ORIGIN[1] + 48)
    pos = galsim.PositionD(ORIGIN[0] + 10.3, ORIGIN[1] + 40.7)
    assert image.wcs.toWorld(pos).distanceTo(sca9.toWorld(pos)) / galsim.arcsec < 1e-7


def test_write_fits_image_is_deterministic(sca9, tmp_path):
    header = fits_header_from_galsim(sca9, ORIGIN)
    first, second = tmp_path / "a.fits", tmp_path / "b.fits"
    write_fits_image(first, l2_arrays(), header, META)
    write_fits_image(second, l2_arrays(), header.copy(), dict(META))
    with fits.open(first) as hdul:
        assert not any(key.startswith("DATE") and key != "DATE-OBS"
                       for hdu in hdul for key in hdu.header)
    assert first.read_bytes() == second.read_bytes()
    write_fits_image(first, l2_arrays(), header, META)  # replacing a file
    assert first.read_bytes() == second.read_bytes()


def test_write_fits_image_from_a_fitswcs_header(sca9, tmp_path):
    path = tmp_path / "x.fits"
    with pytest.raises(ValueError, match="window_header"):
        write_fits_image(path, l2_arrays(), sim_to_isim_header(sca9), META)
    write_fits_image(path, l2_arrays(), window_header(sim_to_isim_header(sca9), ORIGIN), META)
    assert fits.getval(path, "TELESCOP") == "ROMAN"  # the meta card replaces the header's
    # GalSim reads it in the input's frame: 0-based science-array coordinates
    image = galsim.fits.read(str(path), hdu=1)
    assert (image.bounds.xmin, image.bounds.ymin) == ORIGIN
    pos = galsim.PositionD(ORIGIN[0] + 10.0, ORIGIN[1] + 5.0)
    truth = sca9.toWorld(pos + galsim.PositionD(1.0, 1.0))
    assert image.wcs.toWorld(pos).distanceTo(truth) / galsim.arcsec < 1e-7
    assert_same_gwcs(gwcs_from_fits_header(fits.getheader(path, "SCI")),
                     gwcs_from_galsim(sca9, ORIGIN))


def test_write_fits_image_refuses_bad_input(sca9, tmp_path):
    header = fits_header_from_galsim(sca9, ORIGIN)
    arrays = l2_arrays()
    arrays["dq"] = arrays["dq"][:-1]
    with pytest.raises(ValueError, match="one shape"):
        write_fits_image(tmp_path / "x.fits", arrays, header, META)
    with pytest.raises(ValueError, match="WCS"):
        write_fits_image(tmp_path / "x.fits", l2_arrays(), header, {"crpix1": 3.0})
    missing = tmp_path / "missing" / "x.fits"
    with pytest.raises(OutputError):
        write_fits_image(missing, l2_arrays(), header, META)
    assert not list(tmp_path.iterdir())

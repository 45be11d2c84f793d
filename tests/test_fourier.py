"""The Fourier-space drawing of sources against GalSim, and its invariances."""

from __future__ import annotations

import datetime

import galsim
import numpy as np
import pytest

from romandask.config import Exposure
from romandask.instrument.matables import MATable
from romandask.scene import fourier
from romandask.scene.psf import PSFKey, psf_model
from romandask.scene.render import Backgrounds, expected_counts
from romandask.survey.footprint import exposure_wcs

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

MARGIN = 64


def _wcs(sca=1, filt="F158"):
    exp = Exposure(0, 9.7, -44.0, 0.0, filt, MATable.numbered(4), datetime.datetime(2027, 6, 1))
    return exposure_wcs(exp, (sca,))[sca]


@pytest.fixture(scope="module")
def full_psf():
    """The F158 PSF model of a whole SCA: a 3 x 3 grid, so sources mix four grid PSFs."""
    return psf_model(PSFKey(1, "F158", 1, 4088, 1, 4088, radius=MARGIN))


def _sources(rows):
    """A sources dict from (x, y, type, flux, n, hlr, pa, ba) rows."""
    cols = list(zip(*rows))
    out = {name: np.array(c, float) for name, c in
           zip(("x", "y", "flux", "n", "half_light_radius", "pa", "ba"),
               (cols[0], cols[1], cols[3], cols[4], cols[5], cols[6], cols[7]))}
    out["type"] = np.array(cols[2], "U3")
    return out


# stars, discs, spheroids: compact to large, round to edge-on, at sub-pixel offsets
ROWS = [
    (1000.3, 1500.8, "PSF", 2e5, -1.0, 0.0, 0.0, 1.0),
    (2044.5, 2044.5, "PSF", 3e4, -1.0, 0.0, 0.0, 1.0),
    (700.71, 3100.09, "SER", 5e4, 1.0, 0.3, 20.0, 0.5),
    (3500.2, 400.6, "SER", 2e4, 0.5, 0.1, 100.0, 0.9),
    (1800.9, 900.4, "SER", 1e5, 4.0, 0.8, 45.0, 0.7),
    (2600.0, 2900.5, "SER", 3e4, 1.5, 1.5, 160.0, 0.15),
    (300.45, 300.55, "SER", 1e4, 6.0, 0.4, 75.0, 0.8),
]


@pytest.mark.parametrize("k", range(len(ROWS)))
def test_stamp_matches_galsim_drawimage(full_psf, k):
    """Each source's expected counts agree with GalSim's drawImage of the same profile."""
    wcs = _wcs()
    src = _sources([ROWS[k]])
    x, y = src["x"][0], src["y"][0]
    b = galsim.BoundsI(int(x) - 70, int(x) + 70, int(y) - 70, int(y) + 70)
    mine = expected_counts(b, wcs, src, full_psf, 1.0, Backgrounds(), MARGIN)
    ref = expected_counts(b, wcs, src, full_psf, 1.0, Backgrounds(), MARGIN, method="galsim")
    flux = src["flux"][0]
    # GalSim interpolates its PSF images' transform in k (~1e-4 of the flux): pixel by
    # pixel the two agree to a few 1e-6 of the peak, in total to that 1e-4
    assert np.abs(mine - ref).max() < 2e-5 * ref.max()
    assert mine.sum() == pytest.approx(ref.sum(), rel=3e-4)
    assert ref.sum() > 0.5 * flux


def test_undersampled_filter_matches_galsim():
    """F087's PSF reaches past twice the pixel Nyquist: the folding still agrees with GalSim."""
    wcs = _wcs(filt="F087")
    psf = psf_model(PSFKey(1, "F087", 1917, 2172, 1917, 2172, radius=MARGIN))
    assert psf.fourier.maxk > 2 * np.pi
    src = _sources([(2000.37, 2010.81, "PSF", 1e5, -1.0, 0.0, 0.0, 1.0),
                    (2080.6, 2050.2, "SER", 1e5, 2.0, 0.25, 30.0, 0.6)])
    b = galsim.BoundsI(1917, 2172, 1917, 2172)
    mine = expected_counts(b, wcs, src, psf, 1.0, Backgrounds(), MARGIN)
    ref = expected_counts(b, wcs, src, psf, 1.0, Backgrounds(), MARGIN, method="galsim")
    assert np.abs(mine - ref).max() < 2e-5 * ref.max()
    assert mine.sum() == pytest.approx(ref.sum(), rel=3e-4)


def test_psf_transform_is_exact_at_any_fft_size(full_psf):
    """With the exact PSF transform a star's stamp is the same whatever the FFT size.

    No light folds onto the stamp at fft_size or above; what differs is the
    transforms' complex64 rounding (6e-8).  GalSim's own k-interpolated
    transform moves the stamp's sum by ~1e-4 between these sizes.
    """
    psf = full_psf.fourier
    grid = full_psf.grid_weights(1000.3, 1500.8)
    n0 = fourier.fft_size(MARGIN, psf, None)
    stamps = [fourier.draw_stamp(psf, grid, 1.0, (0.3, -0.2), MARGIN, None, n=n)
              for n in (n0, 192, 288)]
    for s in stamps[1:]:
        assert np.abs(s - stamps[0]).max() < 2e-7
        assert abs(s.sum() - stamps[0].sum()) < 1e-6
    s = stamps[0]
    offsets = np.arange(-MARGIN, MARGIN + 1)
    assert abs((s.sum(axis=0) * offsets).sum() / s.sum() - 0.3) < 2e-3
    assert abs((s.sum(axis=1) * offsets).sum() / s.sum() + 0.2) < 2e-3
    # unit-sum PSF images within the stamp's radius: the stamp holds all but its edge
    assert 0.9995 < s.sum() < 1.0


@pytest.mark.parametrize("n", [0.3, 0.8, 1.0, 2.5, 4.0, 6.2])
def test_sersic_table_is_galsims_transform(n):
    """The table lookups give GalSim's Sersic kValue (default GSParams).

    To GalSim's kvalue_accuracy (1e-5), but across the step (up to ~1e-4)
    GalSim's kValue itself makes where it switches from its low-k series to
    its table, which an interpolation between samples either side smooths.
    """
    table = fourier.sersic_table(n)
    rng = np.random.default_rng(5)
    kappa = np.r_[0.0, 10 ** rng.uniform(-3.5, 2.5, 300), 10 ** rng.uniform(0.5, 1.0, 100)]
    profile = galsim.Sersic(n=n, half_light_radius=1.0)
    truth = np.array([profile.kValue(k, 0.0).real for k in kappa])
    # the kernel's two lookups: equal steps in sqrt(kappa), and octaves
    fine = np.interp(np.sqrt(kappa), fourier.FINE_STEP * np.arange(table.fine.size),
                     table.fine)
    octave = fourier._octave_values(table.values, kappa)
    reach = np.sqrt(kappa) < fourier.FINE_MAX
    for err in (np.abs(octave - truth), np.abs(fine - truth)[reach]):
        assert err.max() < 1.5e-4
        assert np.quantile(err, 0.95) < 5e-6


def test_tiles_agree_bit_for_bit(full_psf):
    """A window rendered as one tile or as uneven tiles: the same bytes, sky and sources."""
    wcs = _wcs()
    rng = np.random.default_rng(11)
    k = 40
    # sources over the window and its margin, on and across the tile edges
    xs, ys = rng.uniform(1980 - 60, 2180 + 60, k), rng.uniform(1980 - 60, 2180 + 60, k)
    kinds = rng.choice(["PSF", "SER"], k)
    rows = [(x, y, t, 10 ** rng.uniform(2, 5), float(rng.choice([0.5, 1.0, 3.5])),
             rng.uniform(0.05, 1.5), rng.uniform(0, 180), rng.uniform(0.2, 1.0))
            for x, y, t in zip(xs, ys, kinds)]
    src = _sources(rows)
    bg = Backgrounds(sky=0.5, thermal=0.05, dark=0.01)
    whole = expected_counts(galsim.BoundsI(1980, 2180, 1980, 2180), wcs, src, full_psf, 140.0,
                            bg, MARGIN)
    cuts = [(1980, 2049), (2050, 2063), (2064, 2180)]
    tiled = np.empty_like(whole)
    for y0, y1 in cuts:
        for x0, x1 in cuts:
            tiled[y0 - 1980:y1 - 1979, x0 - 1980:x1 - 1979] = expected_counts(
                galsim.BoundsI(x0, x1, y0, y1), wcs, src, full_psf, 140.0, bg, MARGIN)
    assert whole.tobytes() == tiled.tobytes()
    assert whole.max() > 10 * whole.min() > 0


def test_sky_areas_are_galsims():
    """The sky level times each pixel's area, as GalSim's makeSkyImage, to 1e-9."""
    wcs = _wcs(sca=9)
    b = galsim.BoundsI(3001, 4088, 1, 1100)
    image = expected_counts(b, wcs, _sources([(0.0, 0.0, "PSF", 0.0, -1, 0, 0, 1)]), None,
                            100.0, Backgrounds(sky=0.4), MARGIN)
    ref = galsim.ImageD(b, wcs=wcs)
    wcs.makeSkyImage(ref, 40.0)
    assert np.abs(image / ref.array - 1.0).max() < 1e-9
    # the distortion's few 1e-6 across the block, reproduced to 1e-3 of itself
    spread = np.ptp(ref.array)
    assert spread > 1e-6 * ref.array.mean()
    assert np.abs((image - image.mean()) - (ref.array - ref.array.mean())).max() < 1e-3 * spread


def test_galaxy_fft_size_keeps_galsims_folding():
    """A large n = 4 galaxy: the chosen FFT size changes its stamp by < 0.5 % of the flux."""
    psf = psf_model(PSFKey(1, "F158", 1917, 2172, 1917, 2172, radius=MARGIN))
    wcs = _wcs()
    jac = wcs.jacobian(image_pos=galsim.PositionD(2040.0, 2050.0))
    shape = fourier.sersic_shape(4.0, 2.0, 30.0, 0.8, jac)
    grid = psf.grid_weights(2040.0, 2050.0)
    n = fourier.fft_size(MARGIN, psf.fourier, shape)
    assert 2 * MARGIN + 2 <= n <= 6 * MARGIN
    chosen = fourier.draw_stamp(psf.fourier, grid, 1.0, (0.1, 0.4), MARGIN, shape, n=n)
    large = fourier.draw_stamp(psf.fourier, grid, 1.0, (0.1, 0.4), MARGIN, shape,
                               n=fourier.good_size(4 * n))
    assert abs(chosen.sum() - large.sum()) < 5e-3
    assert 0.3 < large.sum() < 0.95           # the stamp leaves out this galaxy's wings


def test_unknown_method_is_refused():
    star = _sources([(4.0, 4.0, "PSF", 1.0, -1.0, 0.0, 0.0, 1.0)])
    with pytest.raises(ValueError, match="method"):
        expected_counts(galsim.BoundsI(1, 8, 1, 8), _wcs(), star, None, 1.0, Backgrounds(),
                        MARGIN, method="phot")

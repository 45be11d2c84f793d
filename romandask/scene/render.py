"""Render the ideal count image of one tile of one SCA (a physics kernel).

Pure function of its inputs: a tile's bounds, the SCA's WCS, its sources (in
pixel coordinates, fluxes in electrons), the PSF model, backgrounds, and an
explicit random generator.  No Dask, no files.

The expected electrons per pixel are

* sources: each profile (a point source, or a Sersic profile mapped from the
  sky into pixels with the local WCS Jacobian) convolved with the PSF and
  integrated over the pixel;
* zodiacal light (``galsim.roman.getSkyLevel``, e-/arcsec^2/s) times the
  area of each pixel from the WCS (so SIP distortion shows), times
  ``1 + stray_light_fraction`` (GalSim and romanisim use 0.1);
* thermal background (``galsim.roman.thermal_backgrounds``, e-/pix/s) and
  dark current (e-/pix/s), uniform;

all times the exposure time; then a Poisson draw gives the counts.

Every source is drawn on a stamp of radius ``margin`` pixels (the PSF model's
radius), so the selection margin, the PSF extent and the stamp agree: a source
outside the margin cannot reach the window, and one inside deposits its whole
flux (profile light beyond the stamp, from very large galaxies, is cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np

@dataclass(frozen=True)
class Backgrounds:
    """Background rates: sky in e-/arcsec^2/s (stray light included), others e-/pix/s."""

    sky: float = 0.0
    thermal: float = 0.0
    dark: float = 0.0


def source_profile(kind: str, flux: float, n: float, hlr: float, pa: float, ba: float,
                   jacobian: galsim.JacobianWCS) -> galsim.GSObject | None:
    """The intrinsic profile in pixel coordinates (None for a point source).

    ``hlr`` is in arcsec, ``pa`` the major axis's position angle in degrees
    east of north; GalSim's world u axis points west, so beta = pa + 90 deg.
    """
    if kind == "PSF":
        return None
    gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=flux)
    if ba < 1.0:
        gal = gal.shear(q=ba, beta=(pa + 90.0) * galsim.degrees)
    return jacobian.toImage(gal)


def expected_counts(bounds: galsim.BoundsI, wcs: galsim.BaseWCS, sources: dict,
                    psf, exptime: float, backgrounds: Backgrounds,
                    margin: int = 64) -> np.ndarray:
    """Expected electrons in each pixel of ``bounds`` (float64, shape (ny, nx)).

    ``sources`` holds equal-length arrays: ``x``, ``y`` (GalSim pixel
    coordinates), ``type`` ('PSF' or 'SER'), ``flux`` (electrons over the
    exposure), ``n``, ``half_light_radius`` (arcsec), ``pa`` (deg), ``ba``.
    ``psf`` has a method ``at(x, y)`` returning the PSF in pixel units.
    """
    image = galsim.ImageD(bounds, wcs=wcs, init_value=0.0)
    if backgrounds.sky > 0:
        wcs.makeSkyImage(image, backgrounds.sky * exptime)
    image.array[:] += (backgrounds.thermal + backgrounds.dark) * exptime

    for k in range(len(sources["x"])):
        x, y, flux = float(sources["x"][k]), float(sources["y"][k]), float(sources["flux"][k])
        if flux <= 0:
            continue
        pos = galsim.PositionD(x, y)
        jac = wcs.jacobian(image_pos=pos)
        kind = str(sources["type"][k])
        profile = source_profile(kind, flux, float(sources["n"][k]),
                                 float(sources["half_light_radius"][k]),
                                 float(sources["pa"][k]), float(sources["ba"][k]), jac)
        point = psf.at(x, y)
        obj = point * flux if profile is None else galsim.Convolve(profile, point)
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        stamp_bounds = galsim.BoundsI(ix - margin, ix + margin, iy - margin, iy + margin)
        overlap = stamp_bounds & bounds
        if not overlap.isDefined():
            continue
        stamp = galsim.ImageD(stamp_bounds, scale=1.0)
        obj.drawImage(image=stamp, offset=(x - ix, y - iy))
        image[overlap] += stamp[overlap]
    return image.array


def render_counts(bounds, wcs, sources, psf, exptime, backgrounds, rng=None,
                  margin: int = 64) -> np.ndarray:
    """Counts (electrons, float32) in the tile: a Poisson draw of the expectation.

    With ``rng=None`` the noiseless expectation is returned.
    """
    expected = expected_counts(bounds, wcs, sources, psf, exptime, backgrounds, margin)
    np.maximum(expected, 0.0, out=expected)  # Lanczos ringing can dip a hair below 0
    if rng is None:
        return expected.astype(np.float32)
    return rng.poisson(expected).astype(np.float32)

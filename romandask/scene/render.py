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
flux (profile light beyond the stamp, from very large galaxies, is cut).  The
stamps are drawn in Fourier space by ``fourier.draw_stamp``: GalSim's FFT
drawing, with the PSF's transforms made once per worker (``method='galsim'``
draws each with GalSim's ``drawImage``, the reference).  A stamp depends on
its source alone, and stamps are added in the order of the sources: a tile's
pixels are the same whatever the tiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import galsim
import numpy as np

from .fourier import SERSIC_GSPARAMS, draw_stamp, sersic_shape


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
    GalSim's transform of the Sersic is computed with ``SERSIC_GSPARAMS``.
    """
    if kind == "PSF":
        return None
    gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=flux, gsparams=SERSIC_GSPARAMS)
    if ba < 1.0:
        gal = gal.shear(q=ba, beta=(pa + 90.0) * galsim.degrees)
    return jacobian.toImage(gal)


def _sky_image(image: galsim.ImageD, wcs: galsim.BaseWCS, level: float) -> None:
    """``level`` (per arcsec^2) times each pixel's area, as GalSim's ``makeSkyImage``.

    A TAN(-SIP) ``GSFitsWCS`` (every SCA's) takes ``wcs.pixel_area_map``, the
    same areas (to 1e-9) at a seventh of the cost.
    """
    from ..wcs import NOMINAL_PIXEL_AREA, pixel_area_map

    b = image.bounds
    if (isinstance(wcs, galsim.GSFitsWCS) and wcs.wcs_type in ("TAN", "TAN-SIP")
            and wcs.pv is None and b.xmin >= 1 and b.ymin >= 1):
        area = pixel_area_map(wcs, (0, 0), slice(b.ymin - 1, b.ymax), slice(b.xmin - 1, b.xmax))
        image.array[:] = level * NOMINAL_PIXEL_AREA * area
    else:
        wcs.makeSkyImage(image, level)


def _shape(wcs: galsim.BaseWCS, sources: dict, k: int, x: float, y: float):
    """Source ``k``'s pixel-coordinate Sersic (None for a point source)."""
    if str(sources["type"][k]) == "PSF":
        return None
    jac = wcs.jacobian(image_pos=galsim.PositionD(x, y))
    return sersic_shape(float(sources["n"][k]), float(sources["half_light_radius"][k]),
                        float(sources["pa"][k]), float(sources["ba"][k]), jac)


def _draw_fourier(wcs, psf, sources, k, x, y, flux, offset, radius) -> np.ndarray:
    """Source ``k``'s stamp by ``fourier.draw_stamp``."""
    return draw_stamp(psf.fourier, psf.grid_weights(x, y), flux, offset, radius,
                      _shape(wcs, sources, k, x, y))


def _draw_galsim(wcs, psf, sources, k, x, y, flux, offset, radius) -> np.ndarray:
    """Source ``k``'s stamp by GalSim's ``drawImage`` (the reference for the Fourier path)."""
    jac = wcs.jacobian(image_pos=galsim.PositionD(x, y))
    profile = source_profile(str(sources["type"][k]), flux, float(sources["n"][k]),
                             float(sources["half_light_radius"][k]),
                             float(sources["pa"][k]), float(sources["ba"][k]), jac)
    point = psf.at(x, y)
    obj = point * flux if profile is None else galsim.Convolve(profile, point)
    stamp = galsim.ImageD(2 * radius + 1, 2 * radius + 1, scale=1.0)
    obj.drawImage(image=stamp, offset=offset)
    return stamp.array


def expected_counts(bounds: galsim.BoundsI, wcs: galsim.BaseWCS, sources: dict,
                    psf, exptime: float, backgrounds: Backgrounds,
                    margin: int = 64, method: str = "fourier") -> np.ndarray:
    """Expected electrons in each pixel of ``bounds`` (float64, shape (ny, nx)).

    ``sources`` holds equal-length arrays: ``x``, ``y`` (GalSim pixel
    coordinates), ``type`` ('PSF' or 'SER'), ``flux`` (electrons over the
    exposure), ``n``, ``half_light_radius`` (arcsec), ``pa`` (deg), ``ba``.
    ``psf`` has ``at(x, y)``, the PSF in pixel units, ``grid_weights(x, y)``
    and ``fourier`` (see ``psf.PSFModel``).  ``method`` 'fourier' draws the
    stamps with ``fourier.draw_stamp``, 'galsim' with GalSim's ``drawImage``
    (the same computation, source by source; slower).
    """
    if method not in ("fourier", "galsim"):
        raise ValueError(f"method must be 'fourier' or 'galsim', not {method!r}")
    image = galsim.ImageD(bounds, wcs=wcs, init_value=0.0)
    if backgrounds.sky > 0:
        _sky_image(image, wcs, backgrounds.sky * exptime)
    image.array[:] += (backgrounds.thermal + backgrounds.dark) * exptime

    draw = _draw_fourier if method == "fourier" else _draw_galsim
    array = image.array
    for k in range(len(sources["x"])):
        x, y, flux = float(sources["x"][k]), float(sources["y"][k]), float(sources["flux"][k])
        if flux <= 0:
            continue
        ix, iy = math.floor(x + 0.5), math.floor(y + 0.5)
        # the stamp's overlap with the tile, in GalSim pixels
        x0, x1 = max(ix - margin, bounds.xmin), min(ix + margin, bounds.xmax)
        y0, y1 = max(iy - margin, bounds.ymin), min(iy + margin, bounds.ymax)
        if x0 > x1 or y0 > y1:
            continue
        stamp = draw(wcs, psf, sources, k, x, y, flux, (x - ix, y - iy), margin)
        sx, sy = ix - margin, iy - margin
        array[y0 - bounds.ymin:y1 - bounds.ymin + 1, x0 - bounds.xmin:x1 - bounds.xmin + 1] += (
            stamp[y0 - sy:y1 - sy + 1, x0 - sx:x1 - sx + 1])
    return image.array


def render_counts(bounds, wcs, sources, psf, exptime, backgrounds, rng=None,
                  margin: int = 64, method: str = "fourier") -> np.ndarray:
    """Counts (electrons, float32) in the tile: a Poisson draw of the expectation.

    With ``rng=None`` the noiseless expectation is returned.
    """
    expected = expected_counts(bounds, wcs, sources, psf, exptime, backgrounds, margin,
                               method)
    np.maximum(expected, 0.0, out=expected)  # Lanczos ringing can dip a hair below 0
    if rng is None:
        return expected.astype(np.float32)
    return rng.poisson(expected).astype(np.float32)

"""The Roman PSF of one SCA and filter, in detector pixel units.

GalSim's ``galsim.roman.getPSF`` builds the optical PSF from the Cycle-9
Zernike aberrations of the SCA at a focal-plane position, with the pupil
obscuration and struts.  It is built in detector coordinates, so the same
PSF serves every exposure: sources are mapped into pixel coordinates with the
local WCS Jacobian and convolved with it there.  That is what lets a worker
build the PSFs of an (SCA, filter) once and reuse them for every pointing.

Monochromatic at the bandpass's effective wavelength (romanisim's default for
grey sources).

Two conventions make the model usable for truth-level photometry and
astrometry.  GalSim's optical PSF is not centred on the origin (its Zernike
terms shift the centroid by ~0.1 pixel), while an astrometric calibration
defines the WCS by stellar centroids; so each grid PSF is shifted to put its
centroid at the origin, and a star lands at its WCS position.  And each grid
PSF is normalised to unit flux within the stamp radius, so a source deposits
its whole flux (the light a real PSF scatters beyond ~7" is ~1 %; romandask
keeps it within the stamp rather than losing it).  The variation across the SCA is followed by evaluating the PSF
on a grid of positions spanning the simulated window and interpolating
bilinearly between the four grid points around a source (as romanisim does
between the SCA corners).  Each grid PSF is drawn without the pixel response
on an oversampled image of side ``2 * radius + 1`` pixels and wrapped in an
``InterpolatedImage``; the pixel response is applied when stamps are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import galsim
import galsim.roman
import numpy as np

from ..config import N_PIX
from ..instrument.filters import GALSIM_NAME, bandpass


def grid_positions(lo: int, hi: int, grid: int) -> np.ndarray:
    """Grid coordinates along one axis of the window [lo, hi] (GalSim pixels).

    The full-SCA grid has ``grid`` points; a window gets proportionally fewer
    (at least one, at its centre), since the PSF varies on the scale of the SCA.
    """
    n = int(np.clip(round(grid * (hi - lo + 1) / N_PIX), 1, grid))
    if n == 1:
        return np.array([(lo + hi) / 2.0])
    return np.linspace(lo, hi, n)


@dataclass(frozen=True)
class PSFKey:
    """Everything a PSF model depends on (hashable: the per-worker cache key)."""

    sca: int
    filter: str
    xmin: int
    xmax: int
    ymin: int
    ymax: int
    grid: int = 3
    pupil_bin: int = 8
    oversample: int = 4
    radius: int = 64


class PSFModel:
    """A spatially varying PSF in pixel units for one SCA, filter and window."""

    def __init__(self, key: PSFKey):
        self.key = key
        self.xs = grid_positions(key.xmin, key.xmax, key.grid)
        self.ys = grid_positions(key.ymin, key.ymax, key.grid)
        bp = bandpass(key.filter)
        size = (2 * key.radius + 1) * key.oversample
        self.images = {}
        for j, y in enumerate(self.ys):
            for i, x in enumerate(self.xs):
                optical = galsim.roman.getPSF(
                    key.sca, GALSIM_NAME[key.filter], SCA_pos=galsim.PositionD(x, y),
                    pupil_bin=key.pupil_bin, wcs=galsim.PixelScale(1.0),
                    wavelength=bp.effective_wavelength)
                img = optical.drawImage(nx=size, ny=size, scale=1.0 / key.oversample,
                                        method="no_pixel")
                self.images[j, i] = _centred_unit_flux(img)

    def _weights(self, grid: np.ndarray, v: float) -> list[tuple[int, float]]:
        if len(grid) == 1:
            return [(0, 1.0)]
        k = int(np.clip(np.searchsorted(grid, v) - 1, 0, len(grid) - 2))
        f = float(np.clip((v - grid[k]) / (grid[k + 1] - grid[k]), 0.0, 1.0))
        return [(k, 1.0 - f), (k + 1, f)]

    def at(self, x: float, y: float) -> galsim.GSObject:
        """The PSF at GalSim pixel position (x, y), flux = its enclosed fraction."""
        parts = [w_y * w_x * self.images[j, i]
                 for j, w_y in self._weights(self.ys, y)
                 for i, w_x in self._weights(self.xs, x) if w_y * w_x > 0]
        return parts[0] if len(parts) == 1 else galsim.Sum(parts)


def _centred_unit_flux(img: galsim.Image) -> galsim.InterpolatedImage:
    """The drawn PSF as a profile with unit flux and its centroid at the origin."""
    a = img.array.astype(np.float64)
    a /= a.sum()
    n = a.shape[0]
    offsets = (np.arange(n) - (n - 1) / 2.0) * img.scale
    cx, cy = float((a.sum(axis=0) * offsets).sum()), float((a.sum(axis=1) * offsets).sum())
    unit = galsim.ImageD(a, scale=img.scale)
    return galsim.InterpolatedImage(unit, x_interpolant="lanczos5", pad_factor=1.5).shift(-cx, -cy)


@lru_cache(maxsize=8)
def psf_model(key: PSFKey) -> PSFModel:
    """The PSF model for ``key``, built once per process and reused.

    A full-SCA model (3 x 3 grid, radius 64) holds ~110 MB; eight are kept.
    """
    return PSFModel(key)

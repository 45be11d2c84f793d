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
keeps it within the stamp rather than losing it).  The variation across the
SCA is followed by evaluating the PSF on a grid of positions spanning the
simulated window and interpolating bilinearly between the four grid points
around a source (as romanisim does between the SCA corners).  Each grid PSF
is drawn without the pixel response on an oversampled image of side
``2 * radius + 1`` pixels and interpolated with GalSim's Lanczos-5 kernel
(``InterpolatedImage``); the pixel response is applied when stamps are
drawn, in Fourier space, where ``fourier.PSFTransforms`` holds the grid
PSFs' exact transforms times the pixel's, made once per FFT size.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass

import galsim
import galsim.roman
import numpy as np

from ..config import N_PIX
from ..instrument.filters import GALSIM_NAME, bandpass
from .fourier import PSFTransforms

#: Interpolant of the PSF grid images (GalSim's Lanczos-5, DC-conserving).
INTERPOLANT = galsim.Lanczos(5)


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
        self._xs, self._ys = [float(v) for v in self.xs], [float(v) for v in self.ys]
        bp = bandpass(key.filter)
        size = (2 * key.radius + 1) * key.oversample
        self.images, self.arrays, self.shifts = {}, {}, {}
        for j, y in enumerate(self.ys):
            for i, x in enumerate(self.xs):
                optical = galsim.roman.getPSF(
                    key.sca, GALSIM_NAME[key.filter], SCA_pos=galsim.PositionD(x, y),
                    pupil_bin=key.pupil_bin, wcs=galsim.PixelScale(1.0),
                    wavelength=bp.effective_wavelength)
                img = optical.drawImage(nx=size, ny=size, scale=1.0 / key.oversample,
                                        method="no_pixel")
                self.arrays[j, i], self.shifts[j, i] = _centred_unit_flux(img)
                self.images[j, i] = _profile(self.arrays[j, i], 1.0 / key.oversample,
                                             self.shifts[j, i])
        # radius (pixels) beyond which every grid PSF, convolved with the pixel, is zero:
        # the drawn image, the Lanczos-5 kernel, the centring shift and half a pixel
        shift = max(float(np.hypot(*c)) for c in self.shifts.values())
        self.support = key.radius + 0.5 + 5.0 / key.oversample + shift + 0.5
        self._fourier: PSFTransforms | None = None

    @staticmethod
    def _weights(grid: list[float], v: float) -> list[tuple[int, float]]:
        if len(grid) == 1:
            return [(0, 1.0)]
        k = min(max(bisect.bisect_left(grid, v) - 1, 0), len(grid) - 2)
        f = min(max((v - grid[k]) / (grid[k + 1] - grid[k]), 0.0), 1.0)
        return [(k, 1.0 - f), (k + 1, f)]

    def grid_weights(self, x: float, y: float) -> list[tuple[tuple[int, int], float]]:
        """The grid points around GalSim pixel position (x, y) and their bilinear weights."""
        return [((j, i), w_y * w_x)
                for j, w_y in self._weights(self._ys, y)
                for i, w_x in self._weights(self._xs, x) if w_y * w_x > 0]

    def at(self, x: float, y: float) -> galsim.GSObject:
        """The PSF at GalSim pixel position (x, y), flux = its enclosed fraction."""
        parts = [w * self.images[key] for key, w in self.grid_weights(x, y)]
        return parts[0] if len(parts) == 1 else galsim.Sum(parts)

    @property
    def fourier(self) -> PSFTransforms:
        """The grid PSFs' transforms (pixel response included), made as FFT sizes are used."""
        if self._fourier is None:
            self._fourier = PSFTransforms(self.arrays, self.shifts, 1.0 / self.key.oversample,
                                          INTERPOLANT, self.images, self.support)
        return self._fourier


def _centred_unit_flux(img: galsim.Image) -> tuple[np.ndarray, tuple[float, float]]:
    """The drawn PSF normalised to unit sum, and its centroid (pixels) from the image centre."""
    a = img.array.astype(np.float64)
    a /= a.sum()
    n = a.shape[0]
    offsets = (np.arange(n) - (n - 1) / 2.0) * img.scale
    cx, cy = float((a.sum(axis=0) * offsets).sum()), float((a.sum(axis=1) * offsets).sum())
    return a, (cx, cy)


def _profile(a: np.ndarray, scale: float, centroid: tuple[float, float]) -> galsim.GSObject:
    """The grid PSF as a GalSim profile: ``a`` interpolated, its centroid moved to the origin."""
    profile = galsim.InterpolatedImage(galsim.ImageD(a, scale=scale), x_interpolant=INTERPOLANT,
                                       pad_factor=1.5)
    return profile.shift(-centroid[0], -centroid[1])


#: Bytes of PSF models one process keeps.  A model of the full SCA (3 x 3
#: grid, radius 64, oversampling 4) holds about 110 MB, one of a small window
#: (a single grid point) about 12 MB: the cache keeps four full-SCA models, or
#: every (SCA, filter) of a survey of small windows in up to two filters, so
#: that a worker cycling through the 18 SCAs of its exposures builds each once.
#: Part of the worker baseline of :mod:`romandask.memory`, as are GalSim's own
#: caches behind ``getPSF`` (about 8 MB per SCA and filter, kept by GalSim).
CACHE_BYTES = 512 * 1024 * 1024
#: What a grid point of a model holds beyond its drawn image: GalSim's padded
#: ``InterpolatedImage`` (pad factor 1.5, real and k space) and its tables.
_POINT_FACTOR = 5.5


def model_bytes(model: PSFModel) -> int:
    """Bytes a PSF model holds: its grid images, GalSim's interpolation of them,
    and the Fourier transforms made so far."""
    held = sum(a.nbytes for a in model.arrays.values()) * _POINT_FACTOR
    if model._fourier is not None:
        held += model._fourier.nbytes
    return int(held)


@dataclass
class CacheStats:
    """Lookups of a process's PSF cache: models built, lookups served, models held."""

    built: int = 0
    reused: int = 0
    held: int = 0
    bytes: int = 0

    def __add__(self, other: "CacheStats") -> "CacheStats":
        return CacheStats(self.built + other.built, self.reused + other.reused,
                          self.held + other.held, self.bytes + other.bytes)

    def __sub__(self, other: "CacheStats") -> "CacheStats":
        """The lookups made since ``other`` was taken (models held: now)."""
        return CacheStats(self.built - other.built, self.reused - other.reused,
                          self.held, self.bytes)

    def line(self) -> str:
        lookups = self.built + self.reused
        rate = 100.0 * self.reused / lookups if lookups else 0.0
        return (f"PSF models: {self.built} built, reused {self.reused} times "
                f"({rate:.1f} % of {lookups} lookups)")


class ModelCache:
    """PSF models by key, least recently used dropped beyond ``budget`` bytes
    (the newest is always kept).  Thread-safe; a model two threads ask for at
    once may be built twice, and one is kept."""

    def __init__(self, make, budget: int):
        self._make, self.budget = make, int(budget)
        self._models: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._stats = CacheStats()

    def __call__(self, key: PSFKey) -> PSFModel:
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                self._stats.reused += 1
                return model
        model = self._make(key)
        with self._lock:
            self._stats.built += 1
            model = self._models.setdefault(key, model)
            self._models.move_to_end(key)
            sizes = {k: model_bytes(m) for k, m in self._models.items()}
            total = sum(sizes.values())
            while total > self.budget and len(self._models) > 1:
                oldest, _ = self._models.popitem(last=False)
                total -= sizes[oldest]
        return model

    def stats(self) -> CacheStats:
        with self._lock:
            return dataclasses.replace(
                self._stats, held=len(self._models),
                bytes=sum(model_bytes(m) for m in self._models.values()))

    def cache_clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._stats = CacheStats()


#: The PSF model for a key, built once per process and reused (:class:`ModelCache`).
psf_model = ModelCache(PSFModel, CACHE_BYTES)


def cache_stats() -> CacheStats:
    """This process's PSF cache figures (for ``client.run`` on workers)."""
    return psf_model.stats()

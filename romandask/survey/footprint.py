"""Survey footprint: the WCS and sky outline of every (exposure, SCA).

WCS: GalSim's ``galsim.roman.getWCS``, which places the 18 SCAs from the WFI
focal-plane layout and applies each SCA's SIP distortion.  Position angle
convention: ``pa`` is the position angle of the observatory +Y axis, measured
from north through east, in degrees (GalSim's ``PA`` with ``PA_is_FPA=False``;
the focal-plane Y axis is then at ``pa + 120`` deg).  The pointing ``ra, dec``
is the WFI centre.

GalSim builds each SCA's WCS from a list of FITS cards, through an astropy
header that it then reads back: most of the 22 ms an exposure costs on a
quiet machine, and a header kept on every WCS (about 80 kB in memory, 5 kB
pickled, sent with every task that carries the WCS).
:func:`exposure_wcs` has ``getWCS`` read the same cards from a plain mapping
instead (the WCS it makes is the same, value for value: tested) and keeps
no header on the WCS.

Pixel coordinates: GalSim's WCS works in 1-based FITS coordinates of the full
4088 x 4088 science array (pixel centres at integers 1..4088).  A run with
``detector.window: N`` simulates the central N x N pixels: science pixels
``x0 + 1 .. x0 + N`` with ``x0 = (4088 - N) // 2``.  Everything stored by
romandask (cube indices, truth-table x and y) uses 0-based coordinates of the
simulated window: ``x_array = x_galsim - (x0 + 1)``.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from functools import lru_cache

import galsim
import galsim.roman
import numpy as np

from ..config import N_PIX, Config, Exposure


def window_bounds(window: int) -> galsim.BoundsI:
    """GalSim (1-based) bounds of the central ``window`` x ``window`` science pixels."""
    x0 = (N_PIX - window) // 2
    return galsim.BoundsI(x0 + 1, x0 + window, x0 + 1, x0 + window)


class _Cards(dict):
    """FITS cards as ``GSFitsWCS`` reads them (keyword -> value), made from the
    ``(keyword, value[, comment])`` list ``galsim.FitsHeader`` would be given."""

    def __init__(self, header=(), **_):
        super().__init__((card[0], card[1]) for card in header)


_PLAIN_CARDS = threading.Lock()


@contextlib.contextmanager
def _plain_cards():
    """GalSim's Roman WCS made from a :class:`_Cards` mapping, not an astropy header."""
    from galsim.roman import roman_wcs

    with _PLAIN_CARDS:
        if not hasattr(roman_wcs, "FitsHeader"):  # another GalSim: as it is
            yield
            return
        real = roman_wcs.FitsHeader
        roman_wcs.FitsHeader = _Cards
        try:
            yield
        finally:
            roman_wcs.FitsHeader = real


@lru_cache(maxsize=64)
def exposure_wcs(exposure: Exposure, scas: tuple[int, ...]) -> dict[int, galsim.GSFitsWCS]:
    """GalSim WCS of each SCA of one exposure (cached: exposures are immutable):
    ``galsim.roman.getWCS``'s, without the header it keeps beside each."""
    world = galsim.CelestialCoord(exposure.ra * galsim.degrees, exposure.dec * galsim.degrees)
    with _plain_cards():
        wcs = galsim.roman.getWCS(world, PA=exposure.pa * galsim.degrees,
                                  date=exposure.start_time, SCAs=list(scas))
    for sca_wcs in wcs.values():
        sca_wcs.__dict__.pop("header", None)
    return wcs


@dataclass(frozen=True)
class SCAView:
    """One SCA of one exposure: its WCS and the simulated window on it."""

    exposure: Exposure
    sca: int
    wcs: galsim.GSFitsWCS
    bounds: galsim.BoundsI  # simulated window, GalSim 1-based coordinates

    @property
    def shape(self) -> tuple[int, int]:
        return (self.bounds.ymax - self.bounds.ymin + 1, self.bounds.xmax - self.bounds.xmin + 1)

    def to_array(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """GalSim image coordinates -> 0-based coordinates of the stored window."""
        return x - self.bounds.xmin, y - self.bounds.ymin

    def to_galsim(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based window coordinates -> GalSim image coordinates."""
        return x + self.bounds.xmin, y + self.bounds.ymin

    def corners(self) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees of the window's four outer pixel corners."""
        b = self.bounds
        x = np.array([b.xmin - 0.5, b.xmax + 0.5, b.xmax + 0.5, b.xmin - 0.5])
        y = np.array([b.ymin - 0.5, b.ymin - 0.5, b.ymax + 0.5, b.ymax + 0.5])
        return self.wcs.toWorld(x, y, units="deg")

    def center(self) -> tuple[float, float]:
        """(ra, dec) in degrees of the window's centre."""
        c = self.wcs.toWorld(self.bounds.true_center)
        return c.ra.deg % 360.0, c.dec.deg

    def s_region(self) -> str:
        """The IVOA ``POLYGON ICRS`` string of the window."""
        ra, dec = self.corners()
        return "POLYGON ICRS " + " ".join(f"{r % 360.0:.8f} {d:.8f}" for r, d in zip(ra, dec))


def footprint(config: Config) -> list[SCAView]:
    """Every (exposure, SCA) of the survey, exposures outer, SCAs inner."""
    bounds = window_bounds(config.detector.window)
    scas = config.survey.scas
    views = []
    for exp in config.survey.exposures:
        wcs = exposure_wcs(exp, scas)
        views.extend(SCAView(exp, sca, wcs[sca], bounds) for sca in scas)
    return views


def footprint_cap(views: list[SCAView], margin_deg: float = 0.0) -> tuple[float, float, float]:
    """A circle (ra, dec, radius, degrees) that holds every view's corners."""
    ra, dec = np.concatenate([v.corners() for v in views], axis=1)
    xyz = unit_vectors(ra, dec)
    mean = xyz.mean(axis=0)
    mean /= np.linalg.norm(mean)
    cra = np.degrees(np.arctan2(mean[1], mean[0])) % 360.0
    cdec = np.degrees(np.arcsin(np.clip(mean[2], -1, 1)))
    radius = np.degrees(np.arccos(np.clip(xyz @ mean, -1, 1))).max()
    return float(cra), float(cdec), float(radius + margin_deg)


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3) of sky positions in degrees."""
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def angular_distance(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in degrees (vectorised)."""
    cos = np.sum(unit_vectors(ra1, dec1) * unit_vectors(ra2, dec2), axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))

"""Which catalog sources each (exposure, SCA) renders, and their truth.

A source belongs to a view when its centre falls within ``margin`` pixels of
the simulated window (its PSF wings and profile reach into the window).  A
cheap cone cut on the sky comes first, then the exact WCS position.
"""

from __future__ import annotations

import numpy as np

from ..instrument.filters import electrons_per_maggie
from ..survey.footprint import SCAView, unit_vectors


#: An upper bound on the WFI pixel scale (0.11"), in arcsec, for sky cuts that
#: must hold every source a pixel-space cut keeps.
PIXEL_SCALE_BOUND = 0.12


def margin_radius_deg(margin: int) -> float:
    """How far (deg) beyond a window's corners a source within ``margin`` pixels of
    the window may lie: the margin box's corners are ``margin`` pixels out along
    both axes, sqrt(2) x ``margin`` (+2 pixels of slack) on the sky."""
    return float(np.sqrt(2.0) * (margin + 2) * PIXEL_SCALE_BOUND / 3600.0)


class CatalogIndex:
    """A catalog with its unit vectors and a HEALPix index, for repeated cone cuts.

    Rows are grouped by their NESTED pixel at ``nside`` (3.4' pixels at the
    default 1024), so a cone looks only at the rows of the pixels it touches:
    a survey's selection costs O(sources selected), not O(images x catalog).
    """

    def __init__(self, catalog, nside: int = 1024):
        import hpgeom

        self.catalog = catalog
        ra = np.asarray(catalog["ra"], float)
        dec = np.asarray(catalog["dec"], float)
        self.xyz = unit_vectors(ra, dec)
        self.nside = nside
        pixels = (hpgeom.angle_to_pixel(nside, ra % 360.0, dec) if len(ra)
                  else np.zeros(0, np.int64))
        self._order = np.argsort(pixels, kind="stable")
        self._pixels = pixels[self._order]

    def __len__(self) -> int:
        return len(self.catalog)

    def cone(self, ra: float, dec: float, radius_deg: float) -> np.ndarray:
        """Row indices within ``radius_deg`` of (ra, dec), in catalog order."""
        import hpgeom

        if len(self) == 0:
            return np.zeros(0, dtype=np.int64)
        touched = hpgeom.query_circle(self.nside, float(ra) % 360.0, float(dec),
                                      float(radius_deg), inclusive=True)
        lo = np.searchsorted(self._pixels, touched, side="left")
        hi = np.searchsorted(self._pixels, touched, side="right")
        spans = [self._order[a:b] for a, b in zip(lo, hi) if b > a]
        if not spans:
            return np.zeros(0, dtype=np.int64)
        rows = np.sort(np.concatenate(spans))
        centre = unit_vectors(np.array(ra), np.array(dec))
        return rows[self.xyz[rows] @ centre >= np.cos(np.radians(radius_deg))]


def select_sources(view: SCAView, index: CatalogIndex, margin: int) -> dict[str, np.ndarray]:
    """Sources of ``view``: catalog columns plus GalSim pixel x, y and flux in electrons.

    Kept: centre within ``margin`` pixels of the window's outer pixel edges.
    """
    exposure = view.exposure
    return sources_in(view.wcs, view.bounds, index, margin, exposure.filter,
                      exposure.exposure_time)


def sources_in(wcs, bounds, index: CatalogIndex, margin: int, filter_name: str,
               exposure_time: float, per_maggie: float | None = None) -> dict[str, np.ndarray]:
    """Sources whose centre lies within ``margin`` pixels of ``bounds`` (GalSim pixels).

    Returns ``id``, ``ra``, ``dec``, GalSim pixel ``x``, ``y``, ``flux`` in
    electrons over ``exposure_time`` in ``filter_name``, ``type`` and the
    shape columns.  ``per_maggie`` (e-/s of a 1-maggie source) converts the
    catalog's maggies; GalSim's zero point by default.
    """
    b = bounds
    nx, ny = b.xmax - b.xmin + 1, b.ymax - b.ymin + 1
    centre = wcs.toWorld(b.true_center)
    # Generous cone: the half-diagonal of the window grown by the margin (and
    # 2 pixels), at a bound on the pixel scale.
    radius = 0.5 * np.hypot(nx + 2 * margin + 4, ny + 2 * margin + 4) * PIXEL_SCALE_BOUND / 3600.0
    rows = index.cone(centre.ra.deg % 360.0, centre.dec.deg, radius)
    cat = index.catalog
    ra = np.asarray(cat["ra"], float)[rows]
    dec = np.asarray(cat["dec"], float)[rows]
    if len(rows):
        x, y = wcs.toImage(ra, dec, units="deg")
        x, y = np.atleast_1d(x), np.atleast_1d(y)
    else:
        x = y = np.zeros(0)
    keep = ((x >= b.xmin - 0.5 - margin) & (x <= b.xmax + 0.5 + margin)
            & (y >= b.ymin - 0.5 - margin) & (y <= b.ymax + 0.5 + margin))
    rows = rows[keep]
    if per_maggie is None:
        per_maggie = electrons_per_maggie(filter_name)
    flux_e = np.asarray(cat[filter_name], float)[rows] * per_maggie * exposure_time
    out = {
        "id": np.asarray(cat["id"], np.int64)[rows],
        "ra": ra[keep], "dec": dec[keep], "x": x[keep], "y": y[keep],
        "flux": flux_e,
        "type": np.asarray(cat["type"])[rows].astype("U3"),
    }
    for name in ("n", "half_light_radius", "pa", "ba"):
        out[name] = np.asarray(cat[name], float)[rows]
    return out


def in_region(sources: dict[str, np.ndarray], xmin: float, xmax: float, ymin: float,
              ymax: float) -> dict[str, np.ndarray]:
    """The subset of ``sources`` whose GalSim x, y lie in the given box."""
    m = (sources["x"] >= xmin) & (sources["x"] <= xmax) & (sources["y"] >= ymin) & (
        sources["y"] <= ymax)
    return {k: v[m] for k, v in sources.items()}

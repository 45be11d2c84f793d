"""A fixed grid of sky tiles for mosaics (L3).

The sky is cut into *projection regions*, and each region into square
*tiles*; a mosaic is made tile by tile.  The grid depends only on
``pixel_scale`` and ``tile_size`` (and the constants below), never on the
images coadded, so two runs over overlapping sky put the same sky on the same
tiles, pixel for pixel.

Regions
    Rings of constant declination, :data:`REGION_SIZE` (1 degree) high:
    ring ``j`` is centred on declination ``-90 + j`` degrees (``j`` = 0 ...
    180) and covers half a degree either side; rings 0 and 180 are the polar
    caps (one region each, centred on the pole).  Ring ``j`` is cut in right
    ascension into ``n_j = ceil(360 cos(|dec_j| - 0.5) / 1)`` equal cells,
    cell ``c`` centred on ``ra = (c + 1/2) 360 / n_j``, so no cell is wider
    than a degree anywhere.  A sky position *belongs* to the cell that
    contains it (:func:`region_of`).

Projection
    Each region has its own gnomonic (TAN) projection at its centre, north up
    and east to the left (``CD = diag(-s, s)``, ``s`` = ``pixel_scale``;
    ``LONPOLE`` 180), and a square pixel grid of ``L = N tile_size`` pixels
    on a side, ``N`` even and large enough to hold the whole cell (its
    half-side is :data:`REGION_HALF_EXTENT`, 0.75 degree, beyond the cell's
    half-diagonal of at most 0.71 degree).  The tangent point lies on the
    corner between the four central tiles: 0-based region pixel ``(X, Y)``
    of a point with standard coordinates ``(xi, eta)`` (degrees, ``xi``
    east) is ``X = -xi / s + L/2 - 1/2``, ``Y = eta / s + L/2 - 1/2``.

Tiles
    Tile ``(tx, ty)`` of a region holds region pixels ``tx T <= X + 1/2 <
    (tx + 1) T`` (likewise in y), ``T`` = ``tile_size``.  Tile names read
    ``r<ring:03d>c<cell:03d>x<tx:04d>y<ty:04d>``, e.g. ``r046c123x0383y0384``.
    A tile is made when a sky position of its own region that an input image
    covers falls in it (:func:`owned_tiles`); it is then made from *every*
    input that overlaps it, including images whose sky belongs to a
    neighbouring region (tiles at a region's border extend a little beyond
    its cell, so neighbouring regions' tiles overlap there, as Roman's sky
    cells do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Height of a ring and the largest width of a cell, degrees.
REGION_SIZE = 1.0
#: Half-side of a region's pixel grid, degrees (>= the cell's half-diagonal).
REGION_HALF_EXTENT = 0.75
#: Rings from pole to pole (ring 0: south polar cap; the last: north polar cap).
N_RINGS = int(round(180.0 / REGION_SIZE)) + 1


def ring_count(ring: int) -> int:
    """Number of cells of ring ``ring`` (1 for the polar caps)."""
    if ring <= 0 or ring >= N_RINGS - 1:
        return 1
    dec = abs(-90.0 + ring * REGION_SIZE)
    edge = max(dec - REGION_SIZE / 2.0, 0.0)
    return max(1, math.ceil(360.0 * math.cos(math.radians(edge)) / REGION_SIZE - 1e-9))


@lru_cache(maxsize=None)
def _ring_counts() -> np.ndarray:
    return np.array([ring_count(j) for j in range(N_RINGS)])


def region_of(ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """The (ring, cell) each sky position (degrees) belongs to."""
    ra = np.mod(np.asarray(ra, float), 360.0)
    dec = np.asarray(dec, float)
    ring = np.clip(np.floor((dec + 90.0 + REGION_SIZE / 2.0) / REGION_SIZE),
                   0, N_RINGS - 1).astype(np.int64)
    n = _ring_counts()[ring]
    cell = np.floor(ra / (360.0 / n)).astype(np.int64) % n
    return ring, cell


def region_centre(ring: int, cell: int) -> tuple[float, float]:
    """(ra, dec) of a region's tangent point, degrees."""
    dec = -90.0 + ring * REGION_SIZE
    if ring <= 0 or ring >= N_RINGS - 1:
        return 0.0, dec
    return (cell + 0.5) * 360.0 / ring_count(ring), dec


def gnomonic(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard coordinates (xi east, eta north; degrees) about (ra0, dec0), and
    whether each point lies on the near hemisphere (where the projection holds)."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = math.sin(d0) * np.sin(dec) + math.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    front = cosc > 1e-6
    safe = np.where(front, cosc, 1.0)
    xi = np.cos(dec) * np.sin(ra - a0) / safe
    eta = (math.cos(d0) * np.sin(dec) - math.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / safe
    return np.degrees(xi), np.degrees(eta), front


@dataclass(frozen=True)
class Tile:
    """One tile of the grid: its region (ring, cell) and index (tx, ty) there."""

    ring: int
    cell: int
    tx: int
    ty: int

    @property
    def name(self) -> str:
        return f"r{self.ring:03d}c{self.cell:03d}x{self.tx:04d}y{self.ty:04d}"

    @property
    def region(self) -> tuple[int, int]:
        return self.ring, self.cell


@dataclass(frozen=True)
class TileGrid:
    """The tile grid of one ``pixel_scale`` (arcsec) and ``tile_size`` (pixels)."""

    pixel_scale: float
    tile_size: int

    def __post_init__(self):
        if not (self.pixel_scale > 0 and math.isfinite(self.pixel_scale)):
            raise ValueError(f"pixel_scale must be positive, got {self.pixel_scale!r}")
        if int(self.tile_size) != self.tile_size or self.tile_size < 1:
            raise ValueError(f"tile_size must be a positive integer, got {self.tile_size!r}")

    @property
    def scale_deg(self) -> float:
        return self.pixel_scale / 3600.0

    @property
    def tiles_per_side(self) -> int:
        """N: tiles along a side of every region's grid (even)."""
        n = math.ceil(2.0 * REGION_HALF_EXTENT / (self.scale_deg * self.tile_size))
        return n + (n % 2)

    @property
    def region_pixels(self) -> int:
        """L: pixels along a side of a region's grid."""
        return self.tiles_per_side * self.tile_size

    def region_pixel(self, ring: int, cell: int, ra, dec
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """0-based region pixel (X, Y) of sky positions, and whether each is valid
        (on the near hemisphere and inside the region's grid)."""
        ra0, dec0 = region_centre(ring, cell)
        xi, eta, front = gnomonic(ra, dec, ra0, dec0)
        half = self.region_pixels / 2.0 - 0.5
        x = -xi / self.scale_deg + half
        y = eta / self.scale_deg + half
        lo, hi = -0.5, self.region_pixels - 0.5
        valid = front & (x >= lo) & (x < hi) & (y >= lo) & (y < hi)
        return x, y, valid

    def tile_pixel(self, tile: Tile, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel (x, y) of sky positions in ``tile``'s array (may lie outside it)."""
        x, y, _ = self.region_pixel(tile.ring, tile.cell, ra, dec)
        return x - tile.tx * self.tile_size, y - tile.ty * self.tile_size

    def tile_indices(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(tx, ty) of the tiles holding region pixels (x, y)."""
        t = self.tile_size
        return (np.floor((np.asarray(x) + 0.5) / t).astype(np.int64),
                np.floor((np.asarray(y) + 0.5) / t).astype(np.int64))

    def crpix(self, tile: Tile) -> tuple[float, float]:
        """FITS (1-based) reference pixel of ``tile``: the region's tangent point."""
        half = self.region_pixels / 2.0 - 0.5
        return (half - tile.tx * self.tile_size + 1.0, half - tile.ty * self.tile_size + 1.0)

    def fits_header(self, tile: Tile):
        """A standard FITS TAN header of ``tile``'s array."""
        from astropy.io import fits

        ra0, dec0 = region_centre(tile.ring, tile.cell)
        cx, cy = self.crpix(tile)
        h = fits.Header()
        h["WCSAXES"] = 2
        h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
        h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
        h["CRPIX1"], h["CRPIX2"] = cx, cy
        h["CRVAL1"], h["CRVAL2"] = ra0, dec0
        h["CD1_1"], h["CD1_2"] = -self.scale_deg, 0.0
        h["CD2_1"], h["CD2_2"] = 0.0, self.scale_deg
        h["LONPOLE"] = 180.0
        h["RADESYS"] = "ICRS"
        h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, self.tile_size, self.tile_size
        return h

    def wcs(self, tile: Tile):
        """The gWCS of ``tile``'s array, with its bounding box."""
        from .wcs import gwcs_from_fits_header

        return gwcs_from_fits_header(self.fits_header(tile),
                                     shape=(self.tile_size, self.tile_size))

    def tile_centre(self, tile: Tile) -> tuple[float, float]:
        """(ra, dec) of the centre of ``tile``, degrees."""
        c = (self.tile_size - 1) / 2.0
        return self.pixel_to_sky(tile, np.array([c]), np.array([c]))

    def pixel_to_sky(self, tile: Tile, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) of 0-based ``tile`` pixels (inverse gnomonic projection)."""
        ra0, dec0 = region_centre(tile.ring, tile.cell)
        half = self.region_pixels / 2.0 - 0.5
        xi = -np.radians((np.asarray(x, float) + tile.tx * self.tile_size - half)
                         * self.scale_deg)
        eta = np.radians((np.asarray(y, float) + tile.ty * self.tile_size - half)
                         * self.scale_deg)
        a0, d0 = math.radians(ra0), math.radians(dec0)
        rho = np.hypot(xi, eta)
        c = np.arctan(rho)
        safe = np.where(rho > 0, rho, 1.0)
        dec = np.arcsin(np.cos(c) * math.sin(d0) + eta * np.sin(c) * math.cos(d0) / safe)
        ra = a0 + np.arctan2(xi * np.sin(c),
                             rho * math.cos(d0) * np.cos(c) - eta * math.sin(d0) * np.sin(c))
        return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def owned_tiles(grid: TileGrid, ra, dec) -> set[Tile]:
    """The tiles holding sky positions of their own region (where a tile is made)."""
    ring, cell = region_of(ra, dec)
    out: set[Tile] = set()
    for r, c in sorted(set(zip(ring.tolist(), cell.tolist()))):
        mine = (ring == r) & (cell == c)
        x, y, valid = grid.region_pixel(r, c, np.asarray(ra)[mine], np.asarray(dec)[mine])
        tx, ty = grid.tile_indices(x[valid], y[valid])
        out.update(Tile(r, c, int(i), int(j)) for i, j in set(zip(tx.tolist(), ty.tolist())))
    return out


def overlapping_tiles(grid: TileGrid, regions, ra, dec) -> set[Tile]:
    """Tiles of ``regions`` (ring, cell) that hold any of the sky positions."""
    out: set[Tile] = set()
    for r, c in regions:
        x, y, valid = grid.region_pixel(r, c, ra, dec)
        tx, ty = grid.tile_indices(x[valid], y[valid])
        out.update(Tile(r, c, int(i), int(j)) for i, j in set(zip(tx.tolist(), ty.tolist())))
    return out

"""Sky regions a survey covers: an RA/Dec box, a polygon, or a set of HEALPix pixels.

Each region knows its centre (where its tangent plane touches the sky), tests
positions for membership, gives its outline and its area.  Regions are
frozen dataclasses of plain numbers, so that a config holding one is hashable
and its ``repr`` fixes the run's fingerprint.

* ``Box``: ``ra: [lo, hi]``, ``dec: [lo, hi]`` in degrees.  RA runs from lo up
  to hi; a box across RA 0 is written with lo < 0 or hi > 360, e.g.
  ``[-0.5, 0.5]`` or ``[359.5, 360.5]`` (the same box).  Its edges are lines of
  constant RA (great circles) and of constant Dec (small circles).
* ``Polygon``: vertices ``[[ra, dec], ...]`` joined by great-circle arcs (as
  IVOA's ``POLYGON``), in either sense, simple (no edge crosses another).
* ``Healpix``: ``nside`` (a power of 2) and ``pixels``, nested numbering
  unless ``nest: false`` (hpgeom).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from . import sky

#: A region is tiled in one tangent plane, up to this far (deg) from its centre.
MAX_RADIUS = 20.0
_SQDEG_PER_SR = (180.0 / math.pi) ** 2


def _direction(mean: np.ndarray) -> np.ndarray:
    """The unit vector of a mean direction; NaN when the directions cancel
    (a region all around the sky has no centre)."""
    norm = np.linalg.norm(mean)
    if norm <= 1e-6:
        return np.full(3, np.nan)
    v = mean / norm
    if abs(v[2]) > 1 - 1e-12:  # a pole, exactly: its plane's axes follow RA 0
        return np.array([0.0, 0.0, math.copysign(1.0, v[2])])
    return v


class Region:
    """What every region offers (see the module docstring)."""

    def centre(self) -> np.ndarray:
        raise NotImplementedError

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def outlines(self) -> list[np.ndarray]:
        """Closed rings (n, 3) of unit vectors along the region's edges."""
        raise NotImplementedError

    def area(self) -> float:
        """Area in deg^2."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def radius(self) -> float:
        """The largest distance (deg) from the centre to the outline."""
        pts = np.concatenate(self.outlines())
        return float(np.degrees(np.arccos(np.clip(pts @ self.centre(), -1, 1))).max())

    def plane(self) -> sky.Plane:
        return sky.Plane(self.centre())


@dataclass(frozen=True)
class Box(Region):
    ra: tuple[float, float]
    dec: tuple[float, float]

    def centre(self) -> np.ndarray:
        # the mean direction of the box (uniform in RA and in sin(dec): equal areas)
        t = (np.arange(64) + 0.5) / 64
        ra = self.ra[0] + t * (self.ra[1] - self.ra[0])
        s0, s1 = math.sin(math.radians(self.dec[0])), math.sin(math.radians(self.dec[1]))
        s = s0 + t * (s1 - s0)
        r, d = np.meshgrid(ra, np.degrees(np.arcsin(s)))
        return _direction(sky.unit(r, d).reshape(-1, 3).mean(axis=0))

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        ra, dec = sky.radec(xyz)
        span = self.ra[1] - self.ra[0]
        in_ra = ((ra - self.ra[0]) % 360.0 <= span) | (span >= 360.0)
        return in_ra & (dec >= self.dec[0]) & (dec <= self.dec[1])

    def outlines(self) -> list[np.ndarray]:
        (r0, r1), (d0, d1) = self.ra, self.dec
        n_ra = max(64, int(4 * (r1 - r0)))
        ra = np.linspace(r0, r1, n_ra)
        if r1 - r0 >= 360.0:  # a band (or cap): its Dec circles, no RA edges
            return [sky.unit(ra[:-1], np.full(n_ra - 1, d)) if abs(d) < 90.0
                    else sky.unit(np.zeros(1), np.full(1, d)) for d in (d0, d1)]
        dec = np.linspace(d0, d1, 64)
        ring_ra = np.concatenate([ra, np.full(64, r1), ra[::-1], np.full(64, r0)])
        ring_dec = np.concatenate([np.full(n_ra, d0), dec, np.full(n_ra, d1), dec[::-1]])
        return [sky.unit(ring_ra, ring_dec)]

    def area(self) -> float:
        (r0, r1), (d0, d1) = self.ra, self.dec
        return math.radians(r1 - r0) * (math.sin(math.radians(d1))
                                        - math.sin(math.radians(d0))) * _SQDEG_PER_SR

    def describe(self) -> str:
        return (f"box RA {self.ra[0]:g} to {self.ra[1]:g}, "
                f"Dec {self.dec[0]:g} to {self.dec[1]:g}")


@dataclass(frozen=True)
class Polygon(Region):
    vertices: tuple[tuple[float, float], ...]  # (ra, dec) degrees

    def _xyz(self) -> np.ndarray:
        v = np.array(self.vertices, float)
        return sky.unit(v[:, 0], v[:, 1])

    def centre(self) -> np.ndarray:
        return _direction(self._xyz().mean(axis=0))

    def _plane_vertices(self, plane: sky.Plane) -> np.ndarray:
        return np.c_[plane.project(self._xyz())]

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        from matplotlib.path import Path as MPath

        plane = self.plane()
        shape = xyz.shape[:-1]
        x, y = plane.project(xyz.reshape(-1, 3))
        ok = np.isfinite(x)
        inside = np.zeros(x.shape, bool)
        path = MPath(self._plane_vertices(plane))
        inside[ok] = path.contains_points(np.c_[x[ok], y[ok]])
        return inside.reshape(shape)

    def outlines(self) -> list[np.ndarray]:
        plane = self.plane()
        v = self._plane_vertices(plane)
        w = np.roll(v, -1, axis=0)
        t = np.linspace(0.0, 1.0, 32, endpoint=False)
        pts = (v[:, None, :] + t[None, :, None] * (w - v)[:, None, :]).reshape(-1, 2)
        return [plane.deproject(pts[:, 0], pts[:, 1])]

    def area(self) -> float:
        return abs(spherical_polygon_area(self._xyz(), self.centre()))

    def describe(self) -> str:
        return f"polygon of {len(self.vertices)} vertices"


@dataclass(frozen=True)
class Healpix(Region):
    nside: int
    pixels: tuple[int, ...]
    nest: bool = True

    def centre(self) -> np.ndarray:
        import hpgeom

        lon, lat = hpgeom.pixel_to_angle(self.nside, np.array(self.pixels), nest=self.nest)
        return _direction(sky.unit(lon, lat).mean(axis=0))

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        import hpgeom

        ra, dec = sky.radec(xyz)
        pix = hpgeom.angle_to_pixel(self.nside, ra, dec, nest=self.nest)
        return np.isin(pix, np.array(self.pixels))

    def outlines(self) -> list[np.ndarray]:
        import hpgeom

        lon, lat = hpgeom.boundaries(self.nside, np.array(self.pixels), step=8, nest=self.nest)
        xyz = sky.unit(lon, lat)
        return list(xyz)

    def area(self) -> float:
        return len(self.pixels) * 4 * math.pi / (12 * self.nside ** 2) * _SQDEG_PER_SR

    def describe(self) -> str:
        order = "nested" if self.nest else "ring"
        return f"{len(self.pixels)} HEALPix pixel(s), nside {self.nside} ({order})"


def spherical_polygon_area(xyz: np.ndarray, centre: np.ndarray) -> float:
    """Signed area (deg^2) of the polygon of unit vectors ``xyz`` joined by great
    circles: the sum of the fan of triangles from ``centre`` (Van Oosterom and
    Strackee's formula for each triangle's spherical excess)."""
    a = centre[None, :]
    b, c = xyz, np.roll(xyz, -1, axis=0)
    num = np.einsum("ij,ij->i", np.broadcast_to(a, b.shape), np.cross(b, c))
    den = 1.0 + b @ centre + np.einsum("ij,ij->i", b, c) + c @ centre
    return float(np.sum(2.0 * np.arctan2(num, den))) * _SQDEG_PER_SR


def polygon_problem(vertices: np.ndarray) -> str | None:
    """Why the (ra, dec) vertices (n, 2) do not make a simple polygon, or None."""
    if len(vertices) < 3:
        return f"has {len(vertices)} vertices"
    xyz = sky.unit(vertices[:, 0], vertices[:, 1])
    centre = xyz.mean(axis=0)
    if np.linalg.norm(centre) < 1e-6:
        return "has vertices all around the sky"
    plane = sky.Plane(centre)
    x, y = plane.project(xyz)
    if not np.all(np.isfinite(x)):
        return "spans more than a hemisphere"
    p = np.c_[x, y]
    q = np.roll(p, -1, axis=0)
    length = np.hypot(*(q - p).T)
    if np.any(length < 1e-9):
        k = int(np.argmax(length < 1e-9))
        return f"repeats vertex {k} as vertex {(k + 1) % len(p)}"
    n = len(p)
    # every pair of edges that do not share a vertex must not touch
    i, j = np.triu_indices(n, 2)
    keep = ~((i == 0) & (j == n - 1))
    i, j = i[keep], j[keep]
    if len(i):
        hit = _segments_touch(p[i], q[i], p[j], q[j])
        if np.any(hit):
            k = int(np.argmax(hit))
            return (f"crosses itself: edge {i[k]}-{(i[k] + 1) % n} meets edge "
                    f"{j[k]}-{(j[k] + 1) % n}")
    # adjacent edges must not fold back onto each other
    prev = np.roll(p, 1, axis=0)
    cross = ((p[:, 0] - prev[:, 0]) * (q[:, 1] - p[:, 1])
             - (p[:, 1] - prev[:, 1]) * (q[:, 0] - p[:, 0]))
    dot = np.sum((p - prev) * (q - p), axis=1)
    if np.any((np.abs(cross) < 1e-12) & (dot < 0)):
        k = int(np.argmax((np.abs(cross) < 1e-12) & (dot < 0)))
        return f"folds back on itself at vertex {k}"
    if abs(spherical_polygon_area(xyz, plane.centre)) < 1e-10:
        return "has no area"
    return None


def _segments_touch(a, b, c, d) -> np.ndarray:
    """Whether segments a-b and c-d (arrays of 2-vectors) intersect or touch."""
    def orient(p, q, r):
        return np.sign((q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1])
                       - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0]))

    def on(p, q, r):  # r on segment p-q, given collinear
        return ((np.minimum(p[:, 0], q[:, 0]) <= r[:, 0])
                & (r[:, 0] <= np.maximum(p[:, 0], q[:, 0]))
                & (np.minimum(p[:, 1], q[:, 1]) <= r[:, 1])
                & (r[:, 1] <= np.maximum(p[:, 1], q[:, 1])))

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    proper = (o1 * o2 < 0) & (o3 * o4 < 0)
    touch = (((o1 == 0) & on(a, b, c)) | ((o2 == 0) & on(a, b, d))
             | ((o3 == 0) & on(c, d, a)) | ((o4 == 0) & on(c, d, b)))
    return proper | touch


def check_extent(region: Region, where: str) -> None:
    """Refuse a region larger than one tangent plane tiles well."""
    r = region.radius()
    if not np.isfinite(r):
        raise ConfigError(where, "surrounds the sky evenly: it has no centre to tile it about",
                          "split it into smaller regions (one config each)")
    if r > MAX_RADIUS:
        ra, dec = sky.radec(region.centre())
        raise ConfigError(where, f"reaches {r:.1f} deg from its centre (RA {float(ra):.2f}, "
                          f"Dec {float(dec):.2f}); one region is tiled in one tangent plane, "
                          f"up to {MAX_RADIUS:g} deg from its centre",
                          "split it into smaller regions (one config each)")

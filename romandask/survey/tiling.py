"""A survey defined by a sky region: tiling, dithers, roll and timing, and coverage.

``expand(region, pattern)`` turns a region and an observing pattern into the
exposure table, in O(exposures):

1. **Tangent plane.**  The region is tiled in the gnomonic plane about its
   centre (RA wrap-around and the poles need no special case there).
2. **Tiles.**  Fields stand in stacks along the field's V axis, ``step_v``
   apart, and the stacks side by side along U, ``step_u`` apart (see
   :mod:`romandask.survey.field`): fields abut SCA column by SCA column, the
   chevron of the SCA columns nesting into the next field's.  Each field owns
   a cell (its six SCA columns' strips, each ``step_v`` tall about the
   column's centre); every cell that holds a point of the region (sampled
   about 1/16 of ``step_v`` apart, and along its outline) is a tile.  Stacks
   may slide along V independently (their columns never share a strip), so
   each stack takes the one of 8 phases that needs fewest tiles, and of 4
   phases of the stacks along U the one needing fewest in all.
3. **Roll.**  ``pa`` is the observatory roll at the region centre; each
   exposure's roll keeps the field's axes parallel to the lattice.  ``auto``
   takes, among the rolls 15 deg or less from the nominal roll at the centre
   on ``start_time`` (1 deg steps), the one needing fewest tiles (the nominal
   roll on a tie) and whose every exposure stays within 15 deg of its own
   nominal roll.
4. **Dithers.**  Each tile is observed ``dithers`` times per filter, offset
   along the field's diagonal by 1.5 x the widest SCA gaps (U and V) per step,
   folded into one SCA pitch, centred on the tile (see
   :meth:`~romandask.survey.field.Layout.dither_offsets`).
5. **Order and time.**  For each filter in turn, for each dither, the tiles in
   boustrophedon order (rows along U, alternate rows reversed).  Exposures
   start ``cadence`` seconds apart, or by default each after the previous
   one's exposure time and the slew and settle to it (Roman's table,
   :func:`~romandask.survey.sky.slew_settle_time`).  Each exposure must see
   the Sun 54-126 deg from its boresight at its start and keep its roll within
   15 deg of its nominal roll.

``coverage(region, exposures, scas)`` counts the exposures over every point of
a grid over the region (9 arcsec apart, or coarser to stay under 4 million
points), from the SCA outlines, with a bounding-box prefilter per SCA.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from . import sky
from .field import field_to_plane, layout, place, plane_to_field
from .region import Region

#: Lattice phases tried along the field's U axis, and for each stack along V.
PHASES_U, PHASES_V = 4, 8
#: Roll offsets ``auto`` tries, degrees from the nominal roll.
ROLL_STEP = 1.0
#: Points of the region sampled to choose among rolls and phases (at most).
_SEARCH_POINTS = 10_000
#: Points sampled to choose the tiles (at most).
_SELECT_POINTS = 2_000_000
#: Coverage grid spacing, degrees (9 arcsec: SCA gaps are 48-97 arcsec), and most points.
COVERAGE_SPACING = 2.5e-3
COVERAGE_POINTS = 4_000_000


@dataclass(frozen=True)
class Pattern:
    """How a region is observed."""

    filters: tuple[str, ...]
    ma_tables: tuple  # MATable per filter
    dithers: int
    start_time: _dt.datetime
    cadence: float | None = None  # s between exposure starts; None: exposure + slew
    pa: float | None = None       # roll at the region centre; None: auto


@dataclass(frozen=True)
class Tiling:
    """What the expansion chose (for ``plan``)."""

    pa: float             # deg, observatory roll at the region centre
    nominal_pa: float     # deg, the nominal roll there on start_time
    tiles: int
    step: tuple[float, float]       # deg, field-frame lattice steps
    dither_step: tuple[float, float]
    area: float           # deg^2, the region's
    field_area: float     # deg^2, the 18 SCAs'
    end_time: _dt.datetime          # end of the last exposure

    def estimate(self, dithers: int, filters: int) -> float:
        """Exposures of a perfect tiling: area / field area x dithers x filters."""
        return self.area / self.field_area * dithers * filters


@dataclass(frozen=True)
class RegionSurvey:
    """The ``survey.region`` and ``survey.pattern`` of a config, and the tiling."""

    region: Region
    pattern: Pattern
    tiling: Tiling


# --------------------------------------------------------------------------
# sampling the region in its plane
# --------------------------------------------------------------------------

def plane_bounds(region: Region, plane: sky.Plane) -> tuple[float, float, float, float]:
    x, y = plane.project(np.concatenate(region.outlines()))
    return float(np.nanmin(x)), float(np.nanmax(x)), float(np.nanmin(y)), float(np.nanmax(y))


def region_grid(region: Region, plane: sky.Plane, spacing: float, max_points: int,
                margin: float = 0.0):
    """A grid over the region's plane bounding box (widened by ``margin``
    degrees each side): x and y axes (cell centres, degrees), the spacing used
    and the mask of points in the region."""
    x0, x1, y0, y1 = plane_bounds(region, plane)
    x0, x1, y0, y1 = x0 - margin, x1 + margin, y0 - margin, y1 + margin
    area = (x1 - x0 + spacing) * (y1 - y0 + spacing)
    spacing = max(spacing, math.sqrt(area / max_points))
    nx = max(int(math.ceil((x1 - x0) / spacing)), 1)
    ny = max(int(math.ceil((y1 - y0) / spacing)), 1)
    xs = 0.5 * (x0 + x1) + (np.arange(nx) - (nx - 1) / 2) * spacing
    ys = 0.5 * (y0 + y1) + (np.arange(ny) - (ny - 1) / 2) * spacing
    inside = np.zeros((ny, nx), bool)
    rows = max(1, 200_000 // nx)
    for j in range(0, ny, rows):  # in blocks of rows: bounded memory
        yy, xx = np.meshgrid(ys[j:j + rows], xs, indexing="ij")
        inside[j:j + rows] = region.contains(plane.deproject(xx, yy))
    return xs, ys, spacing, inside


def _sample(region: Region, plane: sky.Plane) -> np.ndarray:
    """Plane points (n, 2) of the region, about step_v / 16 apart (finer for a
    small region), and its outline's points."""
    lay = layout()
    x0, x1, y0, y1 = plane_bounds(region, plane)
    spacing = min(lay.step_v / 16, max(x1 - x0, y1 - y0) / 16)
    xs, ys, _, inside = region_grid(region, plane, spacing, _SELECT_POINTS)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    pts = np.c_[xx[inside], yy[inside]]
    ox, oy = plane.project(np.concatenate(region.outlines()))
    return np.concatenate([pts, np.c_[ox, oy]])


# --------------------------------------------------------------------------
# the lattice
# --------------------------------------------------------------------------

def _columns(u: np.ndarray, phase_u: float) -> tuple[np.ndarray, np.ndarray]:
    """Stack index (along U) and SCA column (0-5) of field-frame U positions."""
    lay = layout()
    edges = lay.column_edges
    du = u - phase_u
    i = np.floor((du - edges[0]) / lay.step_u)
    col = np.searchsorted(edges, du - i * lay.step_u, side="right") - 1
    return i.astype(np.int64), np.clip(col, 0, len(edges) - 2)


def _stack_rows(i: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every V phase (rows) and stack (columns): the tiles a stack needs.
    ``w`` is each point's V less its SCA column's centre."""
    lay = layout()
    stack = i - i.min()
    n = int(stack.max()) + 1
    counts = np.zeros((PHASES_V, n), np.int64)
    for b in range(PHASES_V):
        j = np.floor((w - b * lay.step_v / PHASES_V) / lay.step_v + 0.5).astype(np.int64)
        j -= j.min()
        m = int(j.max()) + 1
        occupied = np.zeros(n * m, bool)
        occupied[stack * m + j] = True
        counts[b] = occupied.reshape(n, m).sum(axis=1)
    return counts, np.arange(n) + i.min()


def _choose(points: np.ndarray, rolls: list[float]) -> list[tuple[int, float, float]]:
    """(tiles, roll, U phase) for each roll with its best U phase (each stack
    then takes its best V phase), fewest tiles first, then in the order of
    ``rolls``."""
    lay = layout()
    search = points[::max(1, len(points) // _SEARCH_POINTS)]
    out = []
    for k, roll in enumerate(rolls):
        u, v = plane_to_field(search[:, 0], search[:, 1], roll + lay.theta_fpa)
        best = None
        for a in range(PHASES_U):
            phase = a * lay.step_u / PHASES_U
            i, col = _columns(u, phase)
            counts, _ = _stack_rows(i, v - lay.column_centre_v[col])
            n = int(counts.min(axis=0).sum())
            if best is None or n < best[0]:
                best = (n, phase)
        out.append((best[0], k, roll, best[1]))
    out.sort(key=lambda c: (c[0], c[1]))
    return [(n, roll, phase) for n, _, roll, phase in out]


def _tiles(points: np.ndarray, roll: float, phase_u: float) -> np.ndarray:
    """Plane positions (n, 2) of the tiles' pointings: stack by stack along U,
    up one stack and down the next."""
    lay = layout()
    pa_fpa = roll + lay.theta_fpa
    u, v = plane_to_field(points[:, 0], points[:, 1], pa_fpa)
    i, col = _columns(u, phase_u)
    w = v - lay.column_centre_v[col]
    counts, stacks = _stack_rows(i, w)
    best = counts.argmin(axis=0)  # the V phase of each stack (the first of the fewest)
    phase_v = best[i - stacks[0]] * lay.step_v / PHASES_V
    j = np.floor((w - phase_v) / lay.step_v + 0.5).astype(np.int64)
    cells = np.unique(np.c_[i, j], axis=0)  # by stack, then row
    ci, cj = cells[:, 0], cells[:, 1]
    order = np.lexsort((np.where((ci - ci.min()) % 2 == 0, cj, -cj), ci))
    ci, cj = ci[order], cj[order]
    pu = phase_u + ci * lay.step_u
    pv = best[ci - stacks[0]] * lay.step_v / PHASES_V + cj * lay.step_v
    return np.c_[field_to_plane(pu, pv, pa_fpa)]


# --------------------------------------------------------------------------
# the expansion
# --------------------------------------------------------------------------

def _angular_steps(xyz: np.ndarray) -> np.ndarray:
    """Angles (deg) between consecutive unit vectors."""
    chord = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
    return np.degrees(2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)))


def expand(region: Region, pattern: Pattern, where: str = "survey"):
    """The exposures (``Exposure``, ids 0, 1, ... in time order) and the :class:`Tiling`."""
    from ..config import Exposure

    lay = layout()
    plane = region.plane()
    centre = plane.centre
    start = pattern.start_time
    sun0 = sky.sun_unit([start])[0]
    angle0 = float(sky.sun_angle(centre, sun0))
    ra0, dec0 = (float(a) for a in sky.radec(centre))
    if not sky.SUN_ANGLE_MIN <= angle0 <= sky.SUN_ANGLE_MAX:
        raise ConfigError(f"{where}.pattern.start_time",
                          f"Roman cannot point at the region (centre RA {ra0:.3f}, Dec "
                          f"{dec0:.3f}) on {start.isoformat()}: the Sun is {angle0:.1f} deg "
                          f"from it, outside {sky.SUN_ANGLE_MIN:g}-{sky.SUN_ANGLE_MAX:g} deg",
                          _when(region, start))
    nominal0 = float(sky.nominal_pa(centre, sun0))
    if pattern.pa is None:
        offsets = np.arange(-sky.MAX_ROLL_OFFSET, sky.MAX_ROLL_OFFSET + 1e-9, ROLL_STEP)
        offsets = sorted(offsets, key=lambda o: (abs(o), o))
        rolls = [float(sky.wrap(nominal0 + o)) for o in offsets]
    else:
        off = float(sky.wrap(pattern.pa - nominal0))
        if abs(off) > sky.MAX_ROLL_OFFSET:
            lo, hi = nominal0 - sky.MAX_ROLL_OFFSET, nominal0 + sky.MAX_ROLL_OFFSET
            raise ConfigError(f"{where}.pattern.pa",
                              f"{pattern.pa:g} is {abs(off):.1f} deg from the nominal roll "
                              f"{nominal0:.1f} at the region centre on {start.isoformat()}; "
                              f"Roman rolls at most {sky.MAX_ROLL_OFFSET:g} deg off nominal",
                              f"give pa: auto, or a pa from {lo:.1f} to {hi:.1f}")
        rolls = [float(pattern.pa)]
    points = _sample(region, plane)
    failure = None
    for _, roll, phase_u in _choose(points, rolls):
        plan = _sequence(plane, _tiles(points, roll, phase_u), roll, pattern)
        problem = _check(plan, pattern, region, where)
        if problem is None:
            break
        if problem[0] == "sun" or pattern.pa is not None:
            raise problem[1]
        failure = failure or problem[1]
    else:
        raise failure
    xyz, pa, times, filt, n_tiles = plan
    ra, dec = sky.radec(xyz)
    exposures = [Exposure(k, float(ra[k]), float(dec[k]), float(pa[k]), pattern.filters[f],
                          pattern.ma_tables[f], times[k])
                 for k, f in enumerate(filt)]
    last = exposures[-1]
    tiling = Tiling(pa=float(sky.wrap(roll)), nominal_pa=nominal0, tiles=n_tiles,
                    step=(lay.step_u, lay.step_v),
                    dither_step=tuple(float(d) for d in lay.dither_step),
                    area=region.area(), field_area=lay.area,
                    end_time=last.start_time + _dt.timedelta(seconds=last.exposure_time))
    return exposures, tiling


def _sequence(plane: sky.Plane, tiles: np.ndarray, roll: float, pattern: Pattern):
    """Pointings, rolls, start times and filter indices of every exposure."""
    lay = layout()
    pa_fpa = roll + lay.theta_fpa
    dith = np.c_[field_to_plane(*lay.dither_offsets(pattern.dithers).T, pa_fpa)]
    nf, nd, nt = len(pattern.filters), pattern.dithers, len(tiles)
    pos = (tiles[None, None, :, :] + dith[None, :, None, :]).repeat(nf, axis=0).reshape(-1, 2)
    filt = np.repeat(np.arange(nf), nd * nt)
    xyz = plane.deproject(pos[:, 0], pos[:, 1])
    # the roll that keeps the field's V axis along the lattice's, pointing by pointing
    vx, vy = field_to_plane(0.0, 1.0, pa_fpa)
    eps = 1e-3
    ahead = plane.deproject(pos[:, 0] + eps * vx, pos[:, 1] + eps * vy)
    pa = sky.wrap(sky.position_angle(xyz, ahead) - lay.theta_fpa)
    texp = np.array([pattern.ma_tables[f].exposure_time for f in filt])
    if pattern.cadence is not None:
        gaps = np.full(len(filt) - 1, pattern.cadence)
    else:
        gaps = texp[:-1] + sky.slew_settle_time(_angular_steps(xyz))
    # whole microseconds, rounded up: an exposure never starts before the last one ends
    offsets_us = np.concatenate([[0], np.cumsum(np.ceil(gaps * 1e6).astype(np.int64))])
    start = pattern.start_time
    times = [start + _dt.timedelta(microseconds=int(us)) for us in offsets_us]
    return xyz, pa, times, filt, nt


def _when(region: Region, after: _dt.datetime, also: str = "") -> str:
    """The fix for an unobservable date: the next day the whole region is well
    inside Roman's field of regard."""
    when = sky.first_observable_day(region.centre(), after, margin=region.radius() + 2.0)
    tail = f", {also}" if also else ""
    if when is None:
        return "Roman cannot see the whole region within a year of that date: give a " \
               "smaller region"
    return f"start on or after {when.date().isoformat()}, when it is all observable{tail}"


def _check(plan, pattern: Pattern, region: Region, where: str):
    """None, or (kind, ConfigError) for the first exposure Roman cannot take."""
    import galsim
    import galsim.roman

    xyz, pa, times, filt, _ = plan
    sun = sky.sun_unit(times)
    angle = sky.sun_angle(xyz, sun)
    bad = (angle < sky.SUN_ANGLE_MIN) | (angle > sky.SUN_ANGLE_MAX)
    near = np.flatnonzero((np.abs(angle - sky.SUN_ANGLE_MIN) < 1e-3)
                          | (np.abs(angle - sky.SUN_ANGLE_MAX) < 1e-3))
    ra, dec = sky.radec(xyz)
    for k in near:  # on the edge: GalSim's own test decides, as it will for the table
        pos = galsim.CelestialCoord(ra[k] * galsim.degrees, dec[k] * galsim.degrees)
        bad[k] = not galsim.roman.allowedPos(pos, times[k])
    if np.any(bad):
        k = int(np.argmax(bad))
        return "sun", ConfigError(
            f"{where}.pattern.start_time",
            f"exposure {k} of {len(xyz)} (RA {ra[k]:.3f}, Dec {dec[k]:.3f}, "
            f"{times[k].isoformat()}) would be {angle[k]:.1f} deg from the Sun, outside "
            f"{sky.SUN_ANGLE_MIN:g}-{sky.SUN_ANGLE_MAX:g} deg",
            _when(region, times[k], "or a smaller region, or fewer filters or dithers"))
    off = np.abs(sky.wrap(pa - sky.nominal_pa(xyz, sun)))
    if np.any(off > sky.MAX_ROLL_OFFSET + 1e-9):
        k = int(np.argmax(off > sky.MAX_ROLL_OFFSET + 1e-9))
        return "roll", ConfigError(
            f"{where}.pattern.pa",
            f"exposure {k} of {len(xyz)} ({times[k].isoformat()}) would roll "
            f"{off[k]:.1f} deg from its nominal roll; Roman rolls at most "
            f"{sky.MAX_ROLL_OFFSET:g} deg off nominal",
            "give pa: auto, or a smaller region or a shorter pattern (the nominal roll "
            "turns with the Sun)")
    return None


# --------------------------------------------------------------------------
# coverage
# --------------------------------------------------------------------------

@dataclass
class Coverage:
    filters: tuple[str, ...]
    exposures: dict[str, int]   # exposures per filter
    xs: np.ndarray              # plane x (east) of the grid's columns, deg
    ys: np.ndarray              # plane y (north) of its rows, deg
    spacing: float              # deg
    inside: np.ndarray          # (ny, nx) points in the region
    weight: np.ndarray          # (ny, nx) solid angle per point (relative)
    depth: dict[str, np.ndarray]  # (ny, nx) exposures over each point, per filter
    plane: sky.Plane
    scas: tuple[int, ...]

    def fractions(self, flt: str, up_to: int | None = None) -> list[float]:
        """Fraction of the region's area under >= 1, 2, ... exposures of ``flt``."""
        w = self.weight * self.inside
        total = w.sum()
        d = self.depth[flt]
        top = int(d[self.inside].max()) if self.inside.any() else 0
        top = top if up_to is None else up_to
        return [float((w * (d >= k)).sum() / total) if total else 0.0
                for k in range(1, top + 1)]


def sca_outlines(plane: sky.Plane, exposures, scas) -> np.ndarray:
    """Plane coordinates (n, len(scas), 4, 2) of the SCAs' corners."""
    ra = np.array([e.ra for e in exposures])
    dec = np.array([e.dec for e in exposures])
    pa = np.array([e.pa for e in exposures])
    x, y = plane.project(place(ra, dec, pa, scas))
    return np.stack([x, y], axis=-1)


def coverage(region: Region, exposures, scas=tuple(range(1, 19)),
             spacing: float = COVERAGE_SPACING, max_points: int = COVERAGE_POINTS,
             margin: float = 0.0) -> Coverage:
    """Exposures over each point of a grid over the region (and ``margin``
    degrees around its bounding box), per filter.

    Scanline: for each SCA outline (convex in the plane: its edges are great
    circles) and each grid row within its bounding box, the run of grid
    points inside it; the runs are summed per filter.  O(SCA outlines x rows
    per outline + points)."""
    plane = region.plane()
    xs, ys, spacing, inside = region_grid(region, plane, spacing, max_points, margin)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    weight = sky.Plane.area_weight(xx, yy)
    filters = tuple(dict.fromkeys(e.filter for e in exposures))
    counts = {f: 0 for f in filters}
    for e in exposures:
        counts[e.filter] += 1
    index = {f: k for k, f in enumerate(filters)}
    fidx = np.array([index[e.filter] for e in exposures])
    ny, nx = inside.shape
    runs = np.zeros((len(filters), ny, nx + 1), np.int32)
    block = max(1, 20_000 // max(len(scas), 1))  # exposures at a time: bounded memory
    for k in range(0, len(exposures), block):
        quads = sca_outlines(plane, exposures[k:k + block], scas)
        flt = np.repeat(fidx[k:k + block], quads.shape[1])
        quads = quads.reshape(-1, 4, 2)
        ok = np.all(np.isfinite(quads), axis=(1, 2))
        _scan(quads[ok], flt[ok], xs[0], ys[0], spacing, runs)
    depth = np.cumsum(runs, axis=2)[:, :, :nx]
    return Coverage(filters, counts, xs, ys, spacing, inside, weight,
                    {f: depth[index[f]] for f in filters}, plane, tuple(scas))


def _scan(quads: np.ndarray, flt: np.ndarray, x0: float, y0: float, h: float,
          runs: np.ndarray) -> None:
    """Add +1 / -1 at the start and end of each outline's run on each grid row."""
    _, ny, nx1 = runs.shape
    j0 = np.maximum(np.ceil((quads[..., 1].min(axis=1) - y0) / h), 0).astype(np.int64)
    j1 = np.minimum(np.floor((quads[..., 1].max(axis=1) - y0) / h), ny - 1).astype(np.int64)
    rows = np.maximum(j1 - j0 + 1, 0)
    q = np.repeat(np.arange(len(quads)), rows)
    if not len(q):
        return
    first = np.repeat(np.cumsum(rows) - rows, rows)
    j = j0[q] + np.arange(len(q)) - first
    y = (y0 + j * h)[:, None]
    a = quads[q]                          # (pairs, 4 corners, 2)
    b = np.roll(a, -1, axis=1)
    ay, by = a[..., 1], b[..., 1]
    dy = by - ay
    cross = (np.minimum(ay, by) <= y) & (y <= np.maximum(ay, by)) & (dy != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = a[..., 0] + (y - ay) / dy * (b[..., 0] - a[..., 0])
    lo = np.where(cross, x, np.inf).min(axis=1)
    hi = np.where(cross, x, -np.inf).max(axis=1)
    i0 = np.clip(np.ceil((lo - x0) / h), 0, nx1 - 1)
    i1 = np.clip(np.floor((hi - x0) / h) + 1, 0, nx1 - 1)
    keep = np.isfinite(lo) & (i1 > i0)
    base = (flt[q][keep] * ny + j[keep]) * nx1
    size = runs.size
    flat = runs.reshape(-1)
    flat += np.bincount(base + i0[keep].astype(np.int64), minlength=size).astype(np.int32)
    flat -= np.bincount(base + i1[keep].astype(np.int64), minlength=size).astype(np.int32)


def coverage_lines(cov: Coverage, columns: int = 6) -> list[str]:
    """The coverage table ``plan`` prints."""
    tops = [int(cov.depth[f][cov.inside].max()) if cov.inside.any() else 0
            for f in cov.filters]
    top = max(min(max(tops, default=1), columns), 1)
    head = f"  {'filter':>6} {'exposures':>9} " + " ".join(f"{'>=' + str(k):>7}"
                                                          for k in range(1, top + 1))
    lines = [head]
    for f in cov.filters:
        fr = cov.fractions(f, top)
        lines.append(f"  {f:>6} {cov.exposures[f]:>9} "
                     + " ".join(f"{100 * x:>6.1f}%" for x in fr))
    return lines


def write_pointings(exposures, path) -> None:
    """The exposure table as a pointing table (``survey.pointings``), atomically:
    columns id, ra, dec, pa, filter, ma_table, start_time."""
    from astropy.table import Table

    from ..errors import atomic_path

    labels = [e.ma_table.label for e in exposures]
    numbered = all(e.ma_table.number is not None for e in exposures)
    table = Table({
        "id": np.array([e.id for e in exposures], np.int64),
        "ra": np.array([e.ra for e in exposures], float),
        "dec": np.array([e.dec for e in exposures], float),
        "pa": np.array([e.pa for e in exposures], float),
        "filter": [e.filter for e in exposures],
        "ma_table": (np.array([int(lab) for lab in labels], np.int64) if numbered
                     else [str(lab) for lab in labels]),
        "start_time": [e.start_time.isoformat(timespec="microseconds") for e in exposures],
    })
    table["ra"].unit = table["dec"].unit = table["pa"].unit = "deg"
    table["ra"].description = "right ascension of the WFI centre (GalSim's getWCS world_pos)"
    table["pa"].description = "position angle of the observatory +Y axis, east of north"
    table["start_time"].description = "UTC start of the exposure, ISO 8601"
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)

"""The WFI field: the 18 SCAs as GalSim lays them out, and what tiling needs of it.

The field frame (U, V), degrees, is GalSim's focal-plane frame about the
pointing (``galsim.roman.getWCS``'s ``world_pos``) in its gnomonic plane: V
along the focal-plane Y axis, at position angle ``pa + 120`` deg (GalSim's
``theta_fpa``) for an observatory roll ``pa``; U to the right of V as the
sky is seen (towards the west for V to the north).  The SCA outlines are the
outer corners of each SCA's 4088 x 4088 science pixels, read from
``getWCS`` once (at RA 90, Dec 0 on GalSim's default date) and projected into
that frame; ``place`` puts them on the sky for any pointing and roll.

What the layout gives the tiling (``layout()``):

* six SCA columns (three SCAs each) along U, staggered in V (a chevron);
* ``step_u``: the width of the field between the innermost points of its
  outermost SCA edges, so that fields side by side along U abut;
* ``step_v``: the shortest column, top to bottom (innermost points), so that
  fields stacked along V abut column by column;
* ``gap_u``, ``gap_v``: the widest gaps between neighbouring SCA columns and
  between neighbouring SCAs in a column (what dithers must bridge).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import sky

#: Field-frame offset of the dither pattern, in units of the widest SCA gaps.
DITHER_GAP_FACTOR = 1.5


@dataclass(frozen=True)
class Layout:
    corners: np.ndarray          # (18, 4, 2) field-frame (U, V) of SCAs 1-18, degrees
    theta_fpa: float             # deg: focal-plane Y axis at pa + theta_fpa
    columns: tuple[tuple[int, ...], ...]   # SCA numbers of each column, by increasing U
    column_edges: np.ndarray     # (7,) U boundaries of the columns' cells
    column_centre_v: np.ndarray  # (6,) V centre of each column (innermost top and bottom)
    step_u: float
    step_v: float
    gap_u: float
    gap_v: float
    area: float                  # deg^2: the 18 SCAs' outlines

    @property
    def centre_u(self) -> float:
        return 0.5 * (self.column_edges[0] + self.column_edges[-1])

    @property
    def dither_step(self) -> np.ndarray:
        """(U, V) step between dithers: DITHER_GAP_FACTOR x the widest SCA gaps."""
        return DITHER_GAP_FACTOR * np.array([self.gap_u, self.gap_v])

    @property
    def sca_pitch(self) -> np.ndarray:
        """(U, V) mean distance between neighbouring SCAs' centres."""
        return np.array([self.step_u / len(self.columns),
                         self.step_v / len(self.columns[0])])

    def dither_offsets(self, n: int) -> np.ndarray:
        """(n, 2) field-frame offsets of the ``n`` dithers of a tile position,
        centred on it: dither k at k dither steps along the field's diagonal,
        folded into one SCA pitch (which only many dithers reach), so that each
        dither puts the SCA gaps of the others on pixels."""
        k = np.arange(n)[:, None]
        offsets = np.mod(k * self.dither_step[None, :], self.sca_pitch[None, :])
        return offsets - offsets.mean(axis=0)


@lru_cache(maxsize=1)
def layout() -> Layout:
    """The WFI field layout, derived from GalSim's SCA positions and distortion."""
    import galsim
    import galsim.roman
    from galsim.roman import roman_wcs

    theta = float(roman_wcs.theta_fpa / galsim.degrees)
    date = _dt.datetime(2025, 3, 20, 9, 2, 0)  # GalSim's default date; RA 90 is 90 deg away
    pos = galsim.CelestialCoord(90.0 * galsim.degrees, 0.0 * galsim.degrees)
    wcs = galsim.roman.getWCS(pos, PA=-theta * galsim.degrees, date=date)  # V to the north
    x = np.array([0.5, 4088.5, 4088.5, 0.5])
    y = np.array([0.5, 0.5, 4088.5, 4088.5])
    plane = sky.Plane(sky.unit(90.0, 0.0))
    corners = np.zeros((18, 4, 2))
    for sca in range(1, 19):
        ra, dec = wcs[sca].toWorld(x, y, units="deg")
        east, north = plane.project(sky.unit(ra, dec))
        corners[sca - 1] = np.c_[-east, north]  # U to the west when V is north
    return _derive(corners, theta)


def _derive(corners: np.ndarray, theta: float) -> Layout:
    u_lo = np.sort(corners[..., 0], axis=1)[:, 1]   # innermost of the two left corners
    u_hi = np.sort(corners[..., 0], axis=1)[:, 2]   # innermost of the two right corners
    v_lo = np.sort(corners[..., 1], axis=1)[:, 1]
    v_hi = np.sort(corners[..., 1], axis=1)[:, 2]
    centre_u = 0.5 * (u_lo + u_hi)
    order = np.argsort(centre_u, kind="stable")
    width = np.median(u_hi - u_lo)
    columns: list[list[int]] = []
    for i in order:
        if columns and abs(centre_u[i] - np.mean(centre_u[[s - 1 for s in columns[-1]]])) \
                < 0.5 * width:
            columns[-1].append(int(i) + 1)
        else:
            columns.append([int(i) + 1])
    cols = [np.array(sorted(c, key=lambda s: v_lo[s - 1])) - 1 for c in columns]
    left = np.array([u_lo[c].max() for c in cols])
    right = np.array([u_hi[c].min() for c in cols])
    # the column's innermost bottom and top: its lowest SCA's lower edge, highest's upper
    bottom = np.array([v_lo[c[0]] for c in cols])
    top = np.array([v_hi[c[-1]] for c in cols])
    gap_u = float(np.max(left[1:] - right[:-1]))
    gap_v = float(max(np.max(v_lo[c[1:]] - v_hi[c[:-1]]) for c in cols))
    edges = np.concatenate([[left[0]], 0.5 * (right[:-1] + left[1:]), [right[-1]]])
    area = float(sum(_quad_area(q) for q in corners))
    return Layout(corners=corners, theta_fpa=theta,
                  columns=tuple(tuple(int(s) + 1 for s in c) for c in cols),
                  column_edges=edges, column_centre_v=0.5 * (bottom + top),
                  step_u=float(right[-1] - left[0]), step_v=float(np.min(top - bottom)),
                  gap_u=gap_u, gap_v=gap_v, area=area)


def _quad_area(q: np.ndarray) -> float:
    x, y = q[:, 0], q[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def field_to_plane(u, v, pa_fpa) -> tuple[np.ndarray, np.ndarray]:
    """Field-frame offsets -> (east, north) offsets for the focal-plane Y axis
    at position angle ``pa_fpa`` (deg); broadcasts."""
    c, s = np.cos(np.radians(pa_fpa)), np.sin(np.radians(pa_fpa))
    return -u * c + v * s, u * s + v * c


def plane_to_field(east, north, pa_fpa) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`field_to_plane`."""
    c, s = np.cos(np.radians(pa_fpa)), np.sin(np.radians(pa_fpa))
    return -east * c + north * s, east * s + north * c


def place(ra, dec, pa, scas=None) -> np.ndarray:
    """Unit vectors (n, len(scas), 4, 3) of the SCA corners of pointings
    (``ra``, ``dec``, observatory roll ``pa``; degrees, arrays of n)."""
    lay = layout()
    idx = np.arange(18) if scas is None else np.asarray(scas) - 1
    q = lay.corners[idx]                                   # (s, 4, 2)
    bore = sky.unit(np.atleast_1d(ra), np.atleast_1d(dec))  # (n, 3)
    east, north = sky.local_axes(bore)
    pa_fpa = np.atleast_1d(pa)[:, None, None] + lay.theta_fpa
    x, y = field_to_plane(q[None, ..., 0], q[None, ..., 1], pa_fpa)
    x, y = np.radians(x), np.radians(y)
    v = (bore[:, None, None] + x[..., None] * east[:, None, None]
         + y[..., None] * north[:, None, None])
    return v / np.linalg.norm(v, axis=-1, keepdims=True)

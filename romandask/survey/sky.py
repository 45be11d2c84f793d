"""Sky geometry for survey planning: unit vectors, the gnomonic plane, the Sun,
Roman's pointing constraints and its slew-and-settle times.  Vectorised: every
function takes arrays of positions and times.

Roman's constraints (the observatory's reference data):

* the Sun must lie 54-126 deg from the boresight (90 +/- 36 deg:
  ``galsim.roman.max_sun_angle``; the same field of regard in Roman's
  technical information and in roman_pointing's keep-out maps);
* the roll about the boresight may differ from the nominal roll, which faces
  the solar array to the Sun, by at most 15 deg ("allowed roll angle range:
  -15 to +15 degrees around angle providing max solar panel", Roman technical
  information, MissionandObservatory.yaml).

The nominal roll follows GalSim's observatory frame (``galsim.roman.getWCS``):
+X along the boresight, +Z towards the Sun in the plane of the sky, +Y = Z x X,
and ``pa`` the position angle of +Y east of north.  It is computed here from
the Sun's direction along the great circle to the boresight, which holds on
both sides of 90 deg from the Sun.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np

#: Sun angle from the boresight Roman allows, degrees (90 +/- galsim.roman.max_sun_angle).
SUN_ANGLE_MIN, SUN_ANGLE_MAX = 54.0, 126.0
#: Largest roll away from the nominal roll, degrees.
MAX_ROLL_OFFSET = 15.0
#: Slew and settle times (slew angle deg, seconds) from Roman's technical
#: information (SlewSettle: 1.566 N m torque, 40000 kg m^2, settling included);
#: the shortest is the "gap fill" slew.
SLEW_SETTLE = ((0.025, 18.9), (0.4, 39.3), (0.8, 52.5), (2.0, 77.8), (5.0, 141.0),
               (10.0, 246.0), (30.0, 646.0), (90.0, 1844.0))
_J2000 = _dt.datetime(2000, 1, 1, 12)


def unit(ra, dec) -> np.ndarray:
    """Unit vectors (..., 3) of positions in degrees."""
    ra, dec = np.radians(ra), np.radians(dec)
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def radec(xyz) -> tuple[np.ndarray, np.ndarray]:
    """(ra in [0, 360), dec) in degrees of vectors (..., 3), not necessarily unit."""
    xyz = np.asarray(xyz, float)
    ra = np.degrees(np.arctan2(xyz[..., 1], xyz[..., 0])) % 360.0
    dec = np.degrees(np.arctan2(xyz[..., 2], np.hypot(xyz[..., 0], xyz[..., 1])))
    return ra, dec


def local_axes(xyz) -> tuple[np.ndarray, np.ndarray]:
    """East and north unit vectors at positions ``xyz`` (..., 3); at a pole,
    those of RA 0 (north points along RA 180 at the north pole)."""
    xyz = np.asarray(xyz, float)
    east = np.stack([-xyz[..., 1], xyz[..., 0], np.zeros(xyz.shape[:-1])], axis=-1)
    norm = np.linalg.norm(east, axis=-1, keepdims=True)
    pole = norm < 1e-12
    east = np.where(pole, np.array([0.0, 1.0, 0.0]), east / np.where(pole, 1.0, norm))
    north = np.cross(xyz, east)
    return east, north


def position_angle(frm, to) -> np.ndarray:
    """Position angle (deg, east of north, in (-180, 180]) at ``frm`` of the
    great circle to ``to`` (unit vectors)."""
    east, north = local_axes(frm)
    return np.degrees(np.arctan2(np.sum(to * east, axis=-1), np.sum(to * north, axis=-1)))


class Plane:
    """The gnomonic (tangent-plane) projection about a centre, in degrees:
    x to the east, y to the north.  Great circles are straight lines in it."""

    def __init__(self, centre: np.ndarray):
        self.centre = np.asarray(centre, float) / np.linalg.norm(centre)
        east, north = local_axes(self.centre)
        self.east, self.north = east, north

    def project(self, xyz) -> tuple[np.ndarray, np.ndarray]:
        """Plane coordinates of unit vectors; NaN for points 90 deg or more away."""
        xyz = np.asarray(xyz, float)
        c = xyz @ self.centre
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(c > 1e-9, (xyz @ self.east) / c, np.nan)
            y = np.where(c > 1e-9, (xyz @ self.north) / c, np.nan)
        return np.degrees(x), np.degrees(y)

    def deproject(self, x, y) -> np.ndarray:
        """Unit vectors of plane coordinates."""
        x, y = np.radians(x), np.radians(y)
        v = (self.centre + x[..., None] * self.east + y[..., None] * self.north)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    @staticmethod
    def area_weight(x, y) -> np.ndarray:
        """Solid angle per unit plane area at (x, y), relative to the centre's."""
        r2 = np.radians(x) ** 2 + np.radians(y) ** 2
        return (1.0 + r2) ** -1.5


def days_since_j2000(times) -> np.ndarray:
    return np.array([(t - _J2000).total_seconds() / 86400.0 for t in times])


def sun_unit(times) -> np.ndarray:
    """Unit vectors (n, 3) towards the Sun at UTC ``times``.

    The low-precision solar ephemeris of the Astronomical Almanac (mean
    longitude and anomaly, the equation of centre to second order; about 0.01
    deg), in the ecliptic of each date's year: the model GalSim's
    ``galsim.roman.allowedPos`` uses, so that both agree on every pointing.
    """
    import coord

    n = days_since_j2000(times)
    mean_lon = np.radians(280.46 + 0.9856474 * n)
    anomaly = np.radians(357.528 + 0.9856003 * n)
    lam = mean_lon + np.radians(1.915) * np.sin(anomaly) + np.radians(0.020) * np.sin(2 * anomaly)
    years = np.array([t.year for t in times])
    eps = np.zeros(len(times))
    for year in np.unique(years):
        eps[years == year] = coord.util.ecliptic_obliquity(float(year)).rad
    x, y = np.cos(lam), np.sin(lam)
    return np.stack([x, np.cos(eps) * y, np.sin(eps) * y], axis=-1)


def sun_angle(xyz, sun) -> np.ndarray:
    """Angle (deg) between boresights and the Sun."""
    return np.degrees(np.arccos(np.clip(np.sum(xyz * sun, axis=-1), -1.0, 1.0)))


def nominal_pa(xyz, sun) -> np.ndarray:
    """The nominal roll: position angle (deg, east of north, in (-180, 180]) of
    the observatory +Y axis when +Z points to the Sun (the solar array faces it)."""
    return wrap(position_angle(xyz, sun) + 90.0)


def wrap(angle) -> np.ndarray:
    """Angles in degrees wrapped into (-180, 180]."""
    a = np.mod(np.asarray(angle, float) + 180.0, 360.0) - 180.0
    return np.where(a == -180.0, 180.0, a)


def slew_settle_time(angle_deg) -> np.ndarray:
    """Seconds to slew ``angle_deg`` and settle: Roman's table, interpolated
    linearly; any move shorter than the gap-fill slew (a filter change in
    place included) takes the gap-fill time."""
    table = np.array(SLEW_SETTLE)
    return np.interp(angle_deg, table[:, 0], table[:, 1])


def first_observable_day(xyz: np.ndarray, start: _dt.datetime, margin: float = 0.0,
                         days: int = 366) -> _dt.datetime | None:
    """The first midnight (UTC) after ``start`` when the Sun is 54-126 deg
    from ``xyz``, ``margin`` deg inside those limits; None within a year."""
    day0 = _dt.datetime(start.year, start.month, start.day)
    times = [day0 + _dt.timedelta(days=k) for k in range(1, days + 1)]
    angle = sun_angle(xyz[None], sun_unit(times))
    ok = np.flatnonzero((angle >= SUN_ANGLE_MIN + margin) & (angle <= SUN_ANGLE_MAX - margin))
    return times[ok[0]] if len(ok) else None

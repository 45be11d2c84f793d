"""Source catalogs: reading, validating, writing and synthesizing.

The catalog format is romanisim's: an astropy Table with one row per source
and the columns

``ra``, ``dec``
    ICRS position in degrees.
``type``
    ``PSF`` for a point source, ``SER`` for a Sersic galaxy.
``n``, ``half_light_radius``, ``pa``, ``ba``
    Sersic index, half-light radius (arcsec), position angle of the major
    axis (degrees) and axis ratio b/a.  Ignored for ``PSF`` rows, which may
    hold any value there (romanisim writes -1 / 0; NaN is accepted too).
``F062`` ... ``F213``
    Flux in each filter, in maggies (AB magnitude = -2.5 log10 flux).
``id`` (optional)
    Integer source identifier; :func:`read_catalog` adds the row index when
    it is absent.

:func:`read_catalog` turns every malformed input into a one-line
:class:`~romandask.errors.InputError`; :func:`synthesize_catalog` draws a
realistic random scene of galaxies and stars from simple empirical models.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table

from romandask.errors import InputError, OutputError
from romandask.instrument.filters import FILTERS

__all__ = [
    "REQUIRED_COLUMNS",
    "SHAPE_COLUMNS",
    "SOURCE_TYPES",
    "SERSIC_N_RANGE",
    "WAVELENGTH_UM",
    "REFERENCE_FILTER",
    "GALAXY_COUNT_AT_H24",
    "GALAXY_COUNT_SLOPE",
    "GALAXY_SIZE_AT_H24",
    "GALAXY_SIZE_SLOPE",
    "GALAXY_SIZE_SCATTER_DEX",
    "GALAXY_SIZE_RANGE",
    "STAR_COUNT_BELOW_H24_POLE",
    "STAR_COUNT_SLOPE",
    "STAR_MIN_LATITUDE",
    "read_catalog",
    "write_catalog",
    "synthesize_catalog",
    "expected_galaxy_density",
    "expected_star_density",
    "median_galaxy_size",
    "cap_area",
]

#: Columns every catalog must have (besides one flux column per filter).
REQUIRED_COLUMNS = ("ra", "dec", "type", "n", "half_light_radius", "pa", "ba")

#: Morphology columns, meaningful for ``SER`` rows only.
SHAPE_COLUMNS = ("n", "half_light_radius", "pa", "ba")

#: Allowed values of the ``type`` column (after upper-casing).
SOURCE_TYPES = ("PSF", "SER")

#: Sersic indices GalSim can render (``galsim.Sersic`` accepts 0.3 <= n <= 6.2).
SERSIC_N_RANGE = (0.3, 6.2)

#: Synthetic Sersic indices lie on this grid (rendering speed; see _draw_sersic_shapes).
SERSIC_N_STEP = 0.05

#: Nominal filter centres in microns, used to give sources colours.
WAVELENGTH_UM = {
    "F062": 0.62,
    "F087": 0.87,
    "F106": 1.06,
    "F129": 1.29,
    "F146": 1.46,
    "F158": 1.58,
    "F184": 1.84,
    "F213": 2.13,
}

#: Filter in which the synthetic number counts and sizes are defined (~H band).
REFERENCE_FILTER = "F158"

# --- Galaxy model --------------------------------------------------------
# Differential counts dN/dm = A 10**(alpha (m - 24)) per deg^2 per mag in H
# (AB).  A and alpha approximate the deep WFC3/IR H-band counts of Windhorst
# et al. 2011 (ApJS 193, 27, ERS + HUDF) and of CANDELS (Galametz et al. 2013,
# ApJS 206, 10; Guo et al. 2013, ApJS 207, 24), which have log slopes of about
# 0.25-0.3 dex/mag for 20 < H < 26 and ~4-6e4 galaxies deg^-2 mag^-1 at H=24.
# With these numbers N(H < 25) = 1.35e5 deg^-2.

#: dN/dm at H = 24 (galaxies per deg^2 per mag).
GALAXY_COUNT_AT_H24 = 4.5e4
#: Logarithmic slope d log10(dN/dm) / dm of the galaxy counts (dex per mag).
GALAXY_COUNT_SLOPE = 0.27

# Size-magnitude relation log10 r_e = log10(r24) - b (m - 24) with a
# lognormal scatter; r24 ~ 0.3" and the slope follow the H-band Sersic fits
# to CANDELS galaxies (van der Wel et al. 2012, ApJS 203, 24; size-mass
# relation of van der Wel et al. 2014, ApJ 788, 28), whose scatter at fixed
# mass is ~0.15-0.2 dex and which broadens to ~0.2-0.25 dex at fixed magnitude.

#: Median half-light radius (arcsec) of H = 24 galaxies.
GALAXY_SIZE_AT_H24 = 0.30
#: Decrease of log10 r_e per magnitude fainter (dex per mag).
GALAXY_SIZE_SLOPE = 0.12
#: Lognormal scatter of r_e at fixed magnitude (dex).
GALAXY_SIZE_SCATTER_DEX = 0.22
#: Half-light radii are clipped to this range (arcsec).
GALAXY_SIZE_RANGE = (0.05, 5.0)

# Morphology mix: a disk population (n ~ 1, thin oblate discs seen at random
# inclination) and a spheroid population (n ~ 3.5, rounder), loosely after the
# CANDELS Sersic-index and axis-ratio distributions (van der Wel et al. 2014b,
# ApJL 792, L6).
_DISK_FRACTION = 0.7
_DISK_LOG_N = (0.0, 0.15)  # mean and sigma of log10 n
_SPHEROID_LOG_N = (np.log10(3.5), 0.10)
_DISK_THICKNESS = 0.2  # intrinsic c/a of the discs
_SPHEROID_BA = (0.75, 0.15)  # mean and sigma of b/a
_BA_RANGE = (0.1, 1.0)

# Colours: f_nu proportional to lambda**beta.  beta ~ N(0.7, 0.6) gives
# J129 - H158 ~ 0.15 mag and F062 - F158 ~ 0.7 mag (AB), typical of the faint
# galaxy population; stars get beta ~ N(0.3, 0.7).
_GALAXY_BETA = (0.7, 0.6)
_STAR_BETA = (0.3, 0.7)
_BETA_RANGE = (-3.0, 4.0)

# --- Star model ----------------------------------------------------------
# dN/dm = S 10**(gamma (m - 24)) g(b) per deg^2 per mag, normalised so that
# N(H < 24) = 3000 deg^-2 at the Galactic poles, with g(b) = min(1/sin|b|,
# 1/sin 5 deg), the scaling of a plane-parallel disc.  The figures are
# order-of-magnitude matches to the Besancon model (Robin et al. 2003, A&A 409,
# 523) and TRILEGAL (Girardi et al. 2005, A&A 436, 895) near-IR counts at high
# latitude; real counts towards the bulge and the plane are much higher.

#: Stars per deg^2 brighter than H = 24 at |b| = 90 deg.
STAR_COUNT_BELOW_H24_POLE = 3000.0
#: Logarithmic slope of the star counts (dex per mag).
STAR_COUNT_SLOPE = 0.15
#: |b| (deg) below which the 1/sin|b| scaling is held constant.
STAR_MIN_LATITUDE = 5.0

#: Placeholder n, half_light_radius, pa, ba of point sources (as romanisim).
_STAR_SHAPE = {"n": -1.0, "half_light_radius": 0.0, "pa": 0.0, "ba": 1.0}

_SQDEG_PER_SR = (180.0 / np.pi) ** 2
_SUFFIX_FORMATS = {".ecsv": "ascii.ecsv", ".parquet": "parquet", ".pq": "parquet"}


# =========================================================================
# Reading and validation
# =========================================================================


def _format_for(path: Path) -> str | None:
    """The astropy format name for a catalog path, or None if unsupported."""
    return _SUFFIX_FORMATS.get(path.suffix.lower())


def _check_filter_names(filters: Iterable[str]) -> tuple[str, ...]:
    """Return ``filters`` as a tuple, refusing names that are not WFI filters."""
    filters = tuple(filters)
    unknown = [f for f in filters if f not in FILTERS]
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; expected some of {FILTERS}")
    return filters


def _rows(count: int, kind: str = "") -> str:
    """``'1 row'``, ``'3 rows'``, ``'2 SER rows'``..."""
    noun = "row" if count == 1 else "rows"
    return f"{count} {kind} {noun}" if kind else f"{count} {noun}"


def _examples(values: Sequence, limit: int = 5) -> str:
    """A short, comma-separated list of ``values`` for an error message."""
    shown = ", ".join(repr(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} distinct)"
    return shown


class _Validator:
    """Column conversions and checks that raise :class:`InputError`."""

    def __init__(self, where: str, table: Table):
        self.where = where
        self.table = table

    def fail(self, problem: str, fix: str) -> None:
        raise InputError(self.where, problem, fix)

    def float_column(self, name: str) -> np.ndarray:
        """Column ``name`` as float64, masked entries as NaN."""
        col = self.table[name]
        if col.dtype.kind not in "iuf":
            self.fail(
                f"column '{name}' is not numeric (dtype {col.dtype})",
                f"write '{name}' as floating-point numbers",
            )
        data = np.ma.asarray(col).astype(np.float64)
        return np.ma.filled(data, np.nan)

    def require_finite(self, name: str, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Fail if ``values`` (restricted to ``rows``) holds NaN or inf."""
        bad = ~np.isfinite(values)
        if rows is not None:
            bad &= rows
        if bad.any():
            kind = "SER" if rows is not None else ""
            self.fail(
                f"column '{name}' has {_rows(int(bad.sum()), kind)} with NaN, inf or a missing value",
                "fill in finite values or remove those rows",
            )

    def require(self, name: str, bad: np.ndarray, what: str, fix: str, kind: str = "") -> None:
        """Fail if any entry of the boolean mask ``bad`` is set.

        The message reads ``column 'name' has <count> [kind] rows <what>``.
        """
        if bad.any():
            self.fail(f"column '{name}' has {_rows(int(bad.sum()), kind)} {what}", fix)

    def type_column(self) -> np.ndarray:
        """The ``type`` column upper-cased, failing on unknown values."""
        col = self.table["type"]
        if col.dtype.kind not in "USO":
            self.fail(
                f"column 'type' is not text (dtype {col.dtype})",
                "write 'type' as the strings PSF or SER",
            )
        raw = np.ma.asarray(col)
        mask = np.ma.getmaskarray(raw)
        data = raw.data
        if data.dtype.kind == "S":
            data = np.char.decode(data, "utf-8", errors="replace")
        types = np.char.upper(np.char.strip(data.astype(str)))
        types = np.where(mask, "", types)
        bad = ~np.isin(types, SOURCE_TYPES)
        if bad.any():
            values = sorted(set(types[bad].tolist()))
            self.fail(
                f"column 'type' has {_rows(int(bad.sum()))} with unknown values {_examples(values)}",
                "use PSF for point sources or SER for Sersic galaxies",
            )
        return types.astype("<U3")

    def id_column(self, nrows: int) -> np.ndarray:
        """The ``id`` column as int64 (row index when absent); ids must be unique."""
        if "id" not in self.table.colnames:
            return np.arange(nrows, dtype=np.int64)
        col = self.table["id"]
        raw = np.ma.asarray(col)
        if np.ma.getmaskarray(raw).any():
            self.fail(
                f"column 'id' has {_rows(int(np.ma.getmaskarray(raw).sum()))} with a missing value",
                "give every source an integer id or drop the column",
            )
        data = raw.data
        if data.dtype.kind in "iu":
            if data.dtype.kind == "u" and nrows and data.max() > np.iinfo(np.int64).max:
                self.fail("column 'id' has values too large for int64", "use smaller ids")
            ids = data.astype(np.int64)
        elif data.dtype.kind == "f":
            bad = ~np.isfinite(data) | (data != np.round(data)) | (np.abs(data) > 2.0**53)
            self.require("id", bad, "with a non-integer value", "use integer ids")
            ids = data.astype(np.int64)
        else:
            self.fail(f"column 'id' is not integer (dtype {data.dtype})", "use integer ids")
        unique, counts = np.unique(ids, return_counts=True)
        repeated = unique[counts > 1]
        if repeated.size:
            ndup = int(counts[counts > 1].sum())
            self.fail(
                f"column 'id' has {_rows(ndup)} sharing duplicate ids "
                f"({_examples(repeated.tolist())})",
                "make the ids unique or drop the column to number rows automatically",
            )
        return ids


def _read_table(path: Path) -> Table:
    """Read ``path`` as ECSV or Parquet, turning every failure into InputError."""
    where = f"catalog {path.name}"
    fmt = _format_for(path)
    if fmt is None:
        raise InputError(
            where,
            f"unsupported file suffix '{path.suffix}'",
            "give an ECSV (.ecsv) or Parquet (.parquet, .pq) catalog",
        )
    if not path.is_file():
        raise InputError(where, f"file not found at {path}", "check the catalog path")
    try:
        return Table.read(path, format=fmt)
    except Exception as exc:  # astropy / pyarrow raise many kinds
        kind = "ECSV" if fmt == "ascii.ecsv" else "Parquet"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            where,
            f"could not be read as {kind} ({type(exc).__name__}: {detail})",
            f"check that the file is a valid {kind} table",
        ) from exc


def read_catalog(path: str | os.PathLike, filters: Iterable[str]) -> Table:
    """Read and validate a source catalog.

    Parameters
    ----------
    path
        An ECSV (``.ecsv``) or Parquet (``.parquet``, ``.pq``) file in
        romanisim's catalog format (see the module docstring).
    filters
        The filters that will be simulated; each needs a flux column.

    Returns
    -------
    astropy.table.Table
        A new table with ``id`` (int64), ``ra`` in [0, 360) and ``dec``
        (float64), ``type`` (``PSF``/``SER``), ``n``, ``half_light_radius``,
        ``pa``, ``ba`` and every filter column present (float64), followed by
        any other columns of the file unchanged.  The table's ``meta`` is
        kept.

    Raises
    ------
    InputError
        If the file is missing, unreadable or of an unsupported type, or if a
        column is missing or holds invalid values: NaN/inf in ``ra``,
        ``dec`` or a needed flux; NaN/inf in the shape of a ``SER`` row; an
        unknown ``type``; ``dec`` outside [-90, 90]; for ``SER`` rows
        ``half_light_radius <= 0``, ``ba`` outside (0, 1] or ``n`` outside
        :data:`SERSIC_N_RANGE`; negative needed fluxes; duplicate ids.
    ValueError
        If ``filters`` names something that is not a WFI filter.
    """
    path = Path(path)
    filters = _check_filter_names(filters)
    return validate_catalog(_read_table(path), filters, f"catalog {path.name}")


def validate_catalog(table: Table, filters: Iterable[str], where: str = "catalog") -> Table:
    """Validate a catalog table already in memory (see :func:`read_catalog`).

    ``where`` names the catalog in error messages.
    """
    filters = _check_filter_names(filters)
    check = _Validator(where, table)

    missing = [c for c in REQUIRED_COLUMNS if c not in table.colnames]
    if missing:
        check.fail(
            f"missing required column(s) {', '.join(missing)}",
            f"a catalog needs the columns {', '.join(REQUIRED_COLUMNS)} and one flux column per filter",
        )
    missing = [f for f in filters if f not in table.colnames]
    if missing:
        check.fail(
            f"missing flux column(s) {', '.join(missing)} for the simulated filters",
            "add a flux column in maggies for each filter, or simulate fewer filters",
        )

    nrows = len(table)
    ra = check.float_column("ra")
    dec = check.float_column("dec")
    check.require_finite("ra", ra)
    check.require_finite("dec", dec)
    check.require("dec", np.abs(dec) > 90.0, "outside [-90, 90] degrees", "fix those declinations")
    ra = np.mod(ra, 360.0)
    ra[ra >= 360.0] = 0.0  # np.mod(-tiny, 360) rounds to 360

    types = check.type_column()
    ser = types == "SER"
    shape = {name: check.float_column(name) for name in SHAPE_COLUMNS}
    for name, values in shape.items():
        check.require_finite(name, values, rows=ser)
    n_lo, n_hi = SERSIC_N_RANGE
    check.require(
        "half_light_radius",
        ser & (shape["half_light_radius"] <= 0.0),
        "with half_light_radius <= 0",
        "give galaxies a positive half-light radius in arcsec",
        kind="SER",
    )
    check.require(
        "ba",
        ser & ((shape["ba"] <= 0.0) | (shape["ba"] > 1.0)),
        "with ba outside (0, 1]",
        "give galaxies an axis ratio b/a with 0 < ba <= 1",
        kind="SER",
    )
    check.require(
        "n",
        ser & ((shape["n"] < n_lo) | (shape["n"] > n_hi)),
        f"with n outside GalSim's Sersic range [{n_lo}, {n_hi}]",
        f"clip Sersic indices to [{n_lo}, {n_hi}]",
        kind="SER",
    )

    fluxes = {}
    for name in FILTERS:
        if name not in table.colnames:
            continue
        fluxes[name] = check.float_column(name)
        if name in filters:
            check.require_finite(name, fluxes[name])
            check.require(
                name, fluxes[name] < 0.0, "with negative flux", "fluxes are in maggies and must be >= 0"
            )

    ids = check.id_column(nrows)

    out = Table(meta=dict(table.meta))
    out["id"] = ids
    out["ra"] = ra
    out["dec"] = dec
    out["type"] = types
    for name, values in shape.items():
        out[name] = values
    for name, values in fluxes.items():
        out[name] = values
    for name in table.colnames:
        if name not in out.colnames:
            out[name] = table[name]
    return out


# =========================================================================
# Writing
# =========================================================================


def write_catalog(table: Table, path: str | os.PathLike) -> None:
    """Write a catalog as ECSV or Parquet, chosen by the suffix of ``path``.

    The table is written to a temporary file next to ``path`` and renamed into
    place only once complete, so readers never see a partial catalog.  The
    same table always gives the same bytes.

    Parameters
    ----------
    table
        The catalog to write.
    path
        Destination, ending in ``.ecsv``, ``.parquet`` or ``.pq``; an existing
        file is replaced.

    Raises
    ------
    OutputError
        If the suffix is unsupported or the file cannot be written.
    """
    path = Path(path)
    where = f"catalog {path.name}"
    fmt = _format_for(path)
    if fmt is None:
        raise OutputError(
            where,
            f"unsupported file suffix '{path.suffix}'",
            "write catalogs as ECSV (.ecsv) or Parquet (.parquet, .pq)",
        )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        table.write(tmp, format=fmt, overwrite=True)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(where, f"could not be written ({exc.strerror or exc})", "check the output directory") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


# =========================================================================
# Synthetic scenes
# =========================================================================


def cap_area(radius: float) -> float:
    """Area in deg^2 of a spherical cap of angular ``radius`` degrees."""
    return 2.0 * np.pi * (1.0 - np.cos(np.radians(radius))) * _SQDEG_PER_SR


def _power_law_integral(norm: float, slope: float, m0: float, m_lo: float, m_hi: float) -> float:
    """Integral of ``norm * 10**(slope (m - m0))`` over [m_lo, m_hi]."""
    if m_hi <= m_lo:
        return 0.0
    k = slope * np.log(10.0)
    return norm / k * (np.exp(k * (m_hi - m0)) - np.exp(k * (m_lo - m0)))


def _draw_power_law(rng: np.random.Generator, size: int, slope: float, m_lo: float, m_hi: float) -> np.ndarray:
    """Magnitudes with dN/dm proportional to 10**(slope m) on [m_lo, m_hi] (inverse CDF)."""
    u = rng.random(size)
    k = slope * np.log(10.0)
    # CDF(m) = (e^{k(m-m_lo)} - 1) / (e^{k(m_hi-m_lo)} - 1)
    return m_lo + np.log1p(u * np.expm1(k * (m_hi - m_lo))) / k


def expected_galaxy_density(m_lo: float, m_hi: float) -> float:
    """Expected galaxies per deg^2 with ``m_lo <= H < m_hi`` (AB, F158).

    Integrates ``dN/dm = GALAXY_COUNT_AT_H24 * 10**(GALAXY_COUNT_SLOPE (m - 24))``;
    see the module constants for the figures and their sources.
    """
    return _power_law_integral(GALAXY_COUNT_AT_H24, GALAXY_COUNT_SLOPE, 24.0, m_lo, m_hi)


def _star_latitude_factor(b_deg: float) -> float:
    """Star density relative to the Galactic pole: 1/sin|b|, capped at low |b|."""
    b = max(abs(float(b_deg)), STAR_MIN_LATITUDE)
    return 1.0 / np.sin(np.radians(b))


def expected_star_density(m_lo: float, m_hi: float, b_deg: float) -> float:
    """Expected stars per deg^2 with ``m_lo <= H < m_hi`` at Galactic latitude ``b_deg``.

    ``dN/dm = S 10**(STAR_COUNT_SLOPE (m - 24)) min(1/sin|b|, 1/sin 5 deg)`` with
    S chosen so that ``N(H < 24) = STAR_COUNT_BELOW_H24_POLE`` at the poles.
    """
    norm = STAR_COUNT_BELOW_H24_POLE * STAR_COUNT_SLOPE * np.log(10.0)  # dN/dm at H = 24
    return _power_law_integral(norm, STAR_COUNT_SLOPE, 24.0, m_lo, m_hi) * _star_latitude_factor(b_deg)


def median_galaxy_size(mag: np.ndarray | float) -> np.ndarray | float:
    """Median half-light radius (arcsec) of galaxies of H magnitude ``mag``."""
    return GALAXY_SIZE_AT_H24 * 10.0 ** (-GALAXY_SIZE_SLOPE * (np.asarray(mag) - 24.0))


def _draw_in_cap(rng: np.random.Generator, size: int, ra: float, dec: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Points uniform on the sphere within ``radius`` degrees of (ra, dec)."""
    cos_r = np.cos(np.radians(radius))
    cos_t = cos_r + (1.0 - cos_r) * rng.random(size)  # uniform in cos(separation)
    sin_t = np.sqrt(np.clip(1.0 - cos_t**2, 0.0, None))
    phi = 2.0 * np.pi * rng.random(size)
    a, d = np.radians(ra), np.radians(dec)
    centre = np.array([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)])
    east = np.array([-np.sin(a), np.cos(a), 0.0])
    north = np.array([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)])
    xyz = (
        np.outer(cos_t, centre)
        + np.outer(sin_t * np.cos(phi), east)
        + np.outer(sin_t * np.sin(phi), north)
    )
    ra_out = np.mod(np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])), 360.0)
    ra_out[ra_out >= 360.0] = 0.0
    dec_out = np.degrees(np.arcsin(np.clip(xyz[:, 2], -1.0, 1.0)))
    return ra_out, dec_out


def _fluxes(mag_ref: np.ndarray, beta: np.ndarray, filters: Sequence[str]) -> dict[str, np.ndarray]:
    """Maggies in each filter for f_nu ∝ lambda**beta normalised in the reference filter."""
    f_ref = 10.0 ** (-0.4 * mag_ref)
    lam_ref = WAVELENGTH_UM[REFERENCE_FILTER]
    return {f: f_ref * (WAVELENGTH_UM[f] / lam_ref) ** beta for f in filters}


def _draw_sersic_shapes(rng: np.random.Generator, mag: np.ndarray) -> dict[str, np.ndarray]:
    """Sersic n, half-light radius, position angle and axis ratio for galaxies."""
    size = mag.size
    log_r = np.log10(median_galaxy_size(mag)) + GALAXY_SIZE_SCATTER_DEX * rng.standard_normal(size)
    hlr = np.clip(10.0**log_r, *GALAXY_SIZE_RANGE)

    disk = rng.random(size) < _DISK_FRACTION
    log_n = np.where(
        disk,
        _DISK_LOG_N[0] + _DISK_LOG_N[1] * rng.standard_normal(size),
        _SPHEROID_LOG_N[0] + _SPHEROID_LOG_N[1] * rng.standard_normal(size),
    )
    # On a grid of SERSIC_N_STEP: GalSim builds (and caches) a Hankel-transform
    # table per distinct n, ~30x the cost of drawing a galaxy whose n it has seen.
    n = np.clip(np.round(10.0**log_n / SERSIC_N_STEP) * SERSIC_N_STEP, *SERSIC_N_RANGE)

    # Discs: thin oblate spheroids at isotropic inclination; spheroids: Gaussian.
    cos_i = rng.random(size)
    disk_ba = np.sqrt(cos_i**2 + _DISK_THICKNESS**2 * (1.0 - cos_i**2))
    spheroid_ba = _SPHEROID_BA[0] + _SPHEROID_BA[1] * rng.standard_normal(size)
    ba = np.clip(np.where(disk, disk_ba, spheroid_ba), *_BA_RANGE)

    pa = 180.0 * rng.random(size)
    return {"n": n, "half_light_radius": hlr, "pa": pa, "ba": ba}


def _draw_beta(rng: np.random.Generator, size: int, mean_sigma: tuple[float, float]) -> np.ndarray:
    beta = mean_sigma[0] + mean_sigma[1] * rng.standard_normal(size)
    return np.clip(beta, *_BETA_RANGE)


def synthesize_catalog(
    ra: float,
    dec: float,
    radius: float,
    rng: np.random.Generator,
    filters: Iterable[str] = FILTERS,
    *,
    galaxy_mag_range: tuple[float, float] = (18.0, 26.0),
    star_mag_range: tuple[float, float] = (16.0, 24.0),
    density_scale: float = 1.0,
) -> Table:
    """Draw a random scene of galaxies and stars in a circular sky cap.

    Galaxies (``SER``) follow power-law H-band number counts,
    ``dN/dm = 4.5e4 * 10**(0.27 (H - 24))`` deg^-2 mag^-1 (Windhorst et al.
    2011; CANDELS, Galametz et al. 2013 / Guo et al. 2013), i.e. 1.35e5 deg^-2
    brighter than H = 25.  Their sizes follow ``log10 r_e = log10 0.30 -
    0.12 (H - 24)`` arcsec with 0.22 dex lognormal scatter, clipped to
    [0.05, 5]" (after van der Wel et al. 2012, 2014).  Sersic indices come
    from a 70/30 mix of discs (log-normal around n = 1) and spheroids (around
    n = 3.5), clipped to GalSim's [0.3, 6.2]; discs get b/a of a thin disc
    (c/a = 0.2) at random inclination, spheroids b/a ~ N(0.75, 0.15), all in
    [0.1, 1]; position angles are uniform in [0, 180).

    Stars (``PSF``) follow ``dN/dm ∝ 10**(0.15 H)`` normalised to 3000 deg^-2
    brighter than H = 24 at the Galactic poles and scaled by ``1/sin|b|``
    (capped at |b| = 5 deg) with ``b`` the latitude of the cap centre; this
    is an order-of-magnitude match to the Besancon (Robin et al. 2003) and
    TRILEGAL (Girardi et al. 2005) models away from the bulge.  Their shape
    columns hold romanisim's placeholders n = -1, half_light_radius = 0,
    pa = 0, ba = 1.

    Each source has ``f_nu ∝ lambda**beta`` through the nominal filter centres
    (:data:`WAVELENGTH_UM`), normalised to its F158 magnitude; galaxies draw
    ``beta ~ N(0.7, 0.6)`` and stars ``beta ~ N(0.3, 0.7)``, clipped to
    [-3, 4].

    Parameters
    ----------
    ra, dec
        Centre of the cap, degrees (ICRS).
    radius
        Angular radius of the cap, degrees (0 < radius <= 180).
    rng
        Source of every random draw: the same generator state gives the same
        table bit for bit.
    filters
        Filters to give flux columns (maggies) for.
    galaxy_mag_range, star_mag_range
        F158 (AB) magnitude ranges ``(bright, faint)`` to draw from.
    density_scale
        Multiplies both expected source densities (e.g. 0.1 for a quick,
        sparse scene).

    Returns
    -------
    astropy.table.Table
        Galaxies then stars, with ``id`` = 0..N-1 (int64), ``ra`` in [0, 360),
        ``dec``, ``type``, ``n``, ``half_light_radius``, ``pa``, ``ba`` and one
        float64 flux column per filter, in catalog format.  ``meta`` records
        the cap and the model settings.
    """
    filters = _check_filter_names(filters)
    if not -90.0 <= dec <= 90.0:
        raise ValueError(f"dec must be in [-90, 90], got {dec}")
    if not 0.0 < radius <= 180.0:
        raise ValueError(f"radius must be in (0, 180] degrees, got {radius}")
    if density_scale < 0.0:
        raise ValueError(f"density_scale must be >= 0, got {density_scale}")
    for label, (lo, hi) in (("galaxy_mag_range", galaxy_mag_range), ("star_mag_range", star_mag_range)):
        if not lo < hi:
            raise ValueError(f"{label} must be (bright, faint) with bright < faint, got {(lo, hi)}")

    from astropy import units as u
    from astropy.coordinates import SkyCoord

    b_deg = float(SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").galactic.b.deg)
    area = cap_area(radius)

    # Galaxies: count, positions, magnitudes, shapes, colours (fixed draw order).
    n_gal = int(rng.poisson(expected_galaxy_density(*galaxy_mag_range) * area * density_scale))
    gal_ra, gal_dec = _draw_in_cap(rng, n_gal, ra, dec, radius)
    gal_mag = _draw_power_law(rng, n_gal, GALAXY_COUNT_SLOPE, *galaxy_mag_range)
    gal_shape = _draw_sersic_shapes(rng, gal_mag)
    gal_flux = _fluxes(gal_mag, _draw_beta(rng, n_gal, _GALAXY_BETA), filters)

    # Stars.
    n_star = int(rng.poisson(expected_star_density(*star_mag_range, b_deg) * area * density_scale))
    star_ra, star_dec = _draw_in_cap(rng, n_star, ra, dec, radius)
    star_mag = _draw_power_law(rng, n_star, STAR_COUNT_SLOPE, *star_mag_range)
    star_flux = _fluxes(star_mag, _draw_beta(rng, n_star, _STAR_BETA), filters)

    table = Table(
        meta={
            "synthetic": True,
            "cap_ra": float(ra),
            "cap_dec": float(dec),
            "cap_radius": float(radius),
            "galactic_b": b_deg,
            "density_scale": float(density_scale),
            "galaxy_mag_range": [float(m) for m in galaxy_mag_range],
            "star_mag_range": [float(m) for m in star_mag_range],
            "reference_filter": REFERENCE_FILTER,
        }
    )
    return fill_sources(table, np.arange(n_gal + n_star, dtype=np.int64), (gal_ra, gal_dec),
                        gal_shape, gal_flux, (star_ra, star_dec), star_flux, filters)


def fill_sources(table: Table, ids: np.ndarray, gal_pos, gal_shape: dict, gal_flux: dict,
                 star_pos, star_flux: dict, filters: Sequence[str]) -> Table:
    """``table`` given the catalog columns of drawn galaxies then stars (in that order)."""
    n_gal, n_star = len(gal_pos[0]), len(star_pos[0])
    table["id"] = ids
    table["ra"] = np.concatenate([gal_pos[0], star_pos[0]])
    table["dec"] = np.concatenate([gal_pos[1], star_pos[1]])
    table["type"] = np.array(["SER"] * n_gal + ["PSF"] * n_star, dtype="<U3")
    for name in SHAPE_COLUMNS:
        table[name] = np.concatenate([gal_shape[name], np.full(n_star, _STAR_SHAPE[name])])
    for name in filters:
        table[name] = np.concatenate([gal_flux[name], star_flux[name]])
    return table

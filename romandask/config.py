"""The run configuration: one YAML file, validated into typed objects.

Every problem is reported as a :class:`~romandask.errors.ConfigError` naming
the field's YAML path (``survey.exposures[1].filter``) and the fix.  Validation
reads files (catalog, pointing table) only to check them; it writes nothing.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import ConfigError
from .instrument.filters import FILTERS
from .instrument.matables import NUMBERED_TABLES, FRAME_TIME, MATable, check_read_pattern

#: Science pixels per SCA side.
N_PIX = 4088
#: The 18 SCAs of the WFI.
ALL_SCAS = tuple(range(1, 19))
#: Products a run can write (later stages add theirs).
PRODUCTS = ("counts", "truth", "ramps", "l1", "l2", "fits", "mosaic", "footprint")
#: Products a run writes when the config does not list them.
DEFAULT_PRODUCTS = ("counts", "truth", "ramps", "l1", "l2", "footprint")
#: Sources of the detector model (reference data).
DETECTOR_MODELS = ("synthetic", "scalar", "caldir")
#: How the synthetic sky is drawn: one cap over the footprint, or per HEALPix pixel.
PARTITIONS = ("cap", "healpix")
CLUSTER_TYPES = ("local", "threads", "address", "slurm")

_REQUIRED = object()


# --------------------------------------------------------------------------
# typed config objects
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Exposure:
    """One pointing of the WFI: boresight, roll, filter, MA table, start time."""

    id: int
    ra: float  # deg, of the WFI centre
    dec: float  # deg
    pa: float  # deg: position angle of the observatory +Y axis, east of north
    filter: str
    ma_table: MATable
    start_time: _dt.datetime  # UTC

    @property
    def exposure_time(self) -> float:
        return self.ma_table.exposure_time


@dataclass(frozen=True)
class SurveyConfig:
    exposures: tuple[Exposure, ...]
    scas: tuple[int, ...] = ALL_SCAS
    #: ``survey.region`` and ``survey.pattern`` with their tiling, when the
    #: exposures came from them (a :class:`romandask.survey.tiling.RegionSurvey`)
    region: Any = None


@dataclass(frozen=True)
class SyntheticCatalogConfig:
    galaxy_mag_range: tuple[float, float] = (18.0, 26.0)
    star_mag_range: tuple[float, float] = (16.0, 24.0)
    density_scale: float = 1.0
    partition: str = "cap"  # cap: one cap over the footprint; healpix: drawn per pixel


@dataclass(frozen=True)
class CatalogConfig:
    file: Path | None = None
    synthetic: SyntheticCatalogConfig | None = None


@dataclass(frozen=True)
class PSFConfig:
    pupil_bin: int = 8
    grid: int = 3
    oversample: int = 4


@dataclass(frozen=True)
class SceneConfig:
    margin: int = 64  # pixels: source selection margin and largest stamp radius
    sky: bool = True
    thermal: bool = True
    stray_light_fraction: float = 0.1
    poisson: bool = True
    psf: PSFConfig = field(default_factory=PSFConfig)


@dataclass(frozen=True)
class ScalarDetectorConfig:
    """Uniform detector values (romanisim's defaults, models/parameters.py)."""

    gain: float = 2.0  # e-/DN
    read_noise: float = 5.0  # DN per read
    dark_current: float = 0.01  # e-/s
    saturation: float = 55000.0  # raw DN
    reset_noise: float = 0.0  # DN


@dataclass(frozen=True)
class DetectorConfig:
    window: int = N_PIX  # simulate the central window x window science pixels
    tile: int = 1024  # spatial chunk size of the cubes
    model: str = "synthetic"  # where the reference data come from
    caldir: Path | None = None  # directory of CALDIR ASDF files (model: caldir)
    scalar: ScalarDetectorConfig = ScalarDetectorConfig()
    cosmic_ray_flux: float = 8.0  # cm^-2 s^-1 (0: no cosmic rays)
    persistence: bool = False  # from the previous exposure of the same SCA
    model_store: Path | None = None  # synthetic model's store (None: in output.directory)


@dataclass(frozen=True)
class CalibrationConfig:
    """L1 -> L2: the ramp fitter and the seed's jump and weighting parameters."""

    fitter: str = "fixed"  # fixed | ols_cas22 | likely (DEFAULT_FITTER)
    jump_detect: tuple[tuple[str, float], ...] = ()  # JUMP_DETECT_PARS given
    ramp_opt: tuple[tuple[str, float], ...] = ()  # RAMP_OPT_PARS given
    use_jump: bool = True

    def options(self):
        """The :class:`romandask.calibrate.core.CalOptions` these settings make."""
        from .calibrate.core import CalOptions
        from .calibrate.fixed_fit import JumpThresholds, RampOptimization

        return CalOptions(self.fitter, JumpThresholds(**dict(self.jump_detect)),
                          RampOptimization(**dict(self.ramp_opt)), self.use_jump)


#: Layouts of the L2 files' FITS companions (``_asdf_to.fits``): romanimpreprocess
#: gen_cal_image's (primary HDU: data; then dq; then data with bad pixels at -1000),
#: the default, and romandask's (SCI, ERR, DQ, VAR_POISSON, VAR_RNOISE extensions).
FITS_LAYOUTS = ("gen_cal_image", "romandask")


@dataclass(frozen=True)
class OutputConfig:
    directory: Path
    products: tuple[str, ...] = DEFAULT_PRODUCTS
    overwrite: bool = False
    fits_layout: str = FITS_LAYOUTS[0]


@dataclass(frozen=True)
class TLSConfig:
    """User certificates for TLS (PEM files); without them a SLURM cluster
    makes temporary ones."""

    ca_file: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class SlurmConfig:
    """A dask-jobqueue SLURMCluster.  None: dask-jobqueue's own config
    (``jobqueue.slurm`` in a ``jobqueue.yaml``) decides."""

    queue: str | None = None
    account: str | None = None
    cores: int | None = None
    processes: int | None = None
    memory: str | None = None
    walltime: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    minimum_jobs: int = 0
    maximum_jobs: int = 1
    lifetime: str | None = None           # worker --lifetime, e.g. "50m"
    lifetime_stagger: str | None = None   # worker --lifetime-stagger, e.g. "4m"
    interface: str | None = None          # network interface the cluster talks on
    shared_directory: Path | None = None  # seen by the workers (temporary certificates)
    tls: bool = True                      # encrypt scheduler <-> worker traffic


@dataclass(frozen=True)
class ClusterConfig:
    type: str = "local"
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    address: str | None = None
    dashboard_address: str = "127.0.0.1:0"
    progress: bool = True
    slurm: SlurmConfig | None = None
    tls: TLSConfig | None = None


@dataclass(frozen=True)
class MosaicConfig:
    """The ``mosaic`` section: the sky tile grid and drizzle's parameters
    (:class:`romandask.mosaic.MosaicOptions`)."""

    pixel_scale: float = 0.055  # arcsec
    tile_size: int = 2048  # pixels
    pixfrac: float = 1.0
    kernel: str = "square"
    weight: str = "ivm"

    def options(self):
        from .mosaic import MosaicOptions

        return MosaicOptions(self.pixel_scale, self.tile_size, self.pixfrac, self.kernel,
                             self.weight)


@dataclass(frozen=True)
class Config:
    seed: int
    survey: SurveyConfig
    catalog: CatalogConfig
    scene: SceneConfig
    detector: DetectorConfig
    output: OutputConfig
    cluster: ClusterConfig
    source: Path | None = None  # the YAML file this came from
    calibration: CalibrationConfig = CalibrationConfig()
    mosaic: MosaicConfig = MosaicConfig()
    #: what validation changed, for the run's output (``plan`` and ``run`` print them)
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)


# --------------------------------------------------------------------------
# a small reader that knows where it is in the YAML tree
# --------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "empty"}.get(
                type(value), type(value).__name__)


class _Section:
    """Reads the keys of one YAML mapping, checking types and unknown keys."""

    def __init__(self, data: Any, path: str, required: bool = False,
                 keys: tuple[str, ...] | None = None):
        if data is None and not required:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path or "config", f"must be a mapping, got {_type_name(data)}",
                              "write it as `key: value` lines")
        self.data, self.path, self.seen = data, path, set()
        if keys is not None:
            # Unknown keys first: a misspelled required key is reported as the typo,
            # not as the key being missing.
            self._check_unknown(keys)

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def raw(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return self.data.get(key, default)

    def get(self, key: str, kind: type, default: Any = _REQUIRED, *, minimum=None,
            maximum=None, choices=None, hint: str = "") -> Any:
        self.seen.add(key)
        where = self.sub(key)
        if key not in self.data or self.data[key] is None:
            if default is _REQUIRED:
                raise ConfigError(where, "is required", hint or f"add `{key}:` to the config")
            return default
        value = self.data[key]
        value = _coerce(value, kind, where)
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], 1)
            did = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(where, f"unknown value {value!r}",
                              f"{did}use one of {', '.join(map(str, choices))}")
        if minimum is not None and value < minimum:
            raise ConfigError(where, f"{value!r} is below the minimum {minimum}", hint or None)
        if maximum is not None and value > maximum:
            raise ConfigError(where, f"{value!r} is above the maximum {maximum}", hint or None)
        return value

    def done(self) -> None:
        self._check_unknown(self.seen)

    def _check_unknown(self, known_keys) -> None:
        unknown = [k for k in self.data if k not in known_keys]
        if unknown:
            key = unknown[0]
            known = sorted(known_keys)
            close = difflib.get_close_matches(str(key), known, 1)
            fix = f"did you mean `{close[0]}`?" if close else (
                f"known keys here: {', '.join(known)}" if known else "remove it")
            raise ConfigError(self.sub(str(key)), "unknown key", fix)


def _coerce(value: Any, kind: type, where: str) -> Any:
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(where, f"must be a number, got {_type_name(value)} {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(where, f"must be finite, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"must be an integer, got {_type_name(value)} {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"must be true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(where, f"must be a string, got {_type_name(value)} {value!r}")
        return value
    if kind is list:
        if not isinstance(value, list):
            raise ConfigError(where, f"must be a list, got {_type_name(value)} {value!r}")
        return value
    raise TypeError(kind)


def _path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base.absolute() / p))


def _time(value: Any, where: str) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        t = value
    elif isinstance(value, _dt.date):
        t = _dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            t = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(where, f"cannot read {value!r} as a time",
                              "use ISO 8601 UTC, e.g. 2027-06-01T00:00:00") from None
    else:
        raise ConfigError(where, f"must be an ISO 8601 time, got {_type_name(value)}",
                          "use e.g. 2027-06-01T00:00:00")
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return t


# --------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------

def _ma_tables(data: Any, path: str) -> dict[str, MATable]:
    sec = _Section(data, path)
    tables = {}
    for name in list(sec.data):
        tsec = _Section(sec.raw(name), sec.sub(str(name)), required=True,
                        keys=("read_pattern", "frame_time"))
        pattern = tsec.get("read_pattern", list)
        problem = check_read_pattern(pattern)
        if problem:
            raise ConfigError(tsec.sub("read_pattern"), problem,
                              "write it as e.g. [[1], [2, 3], [4, 5, 6]]")
        frame = tsec.get("frame_time", float, FRAME_TIME, minimum=1e-3)
        tsec.done()
        tables[str(name)] = MATable.from_pattern(pattern, frame, name=str(name))
    return tables


def _ma_table(value: Any, where: str, custom: dict[str, MATable]) -> MATable:
    number = isinstance(value, int) and not isinstance(value, bool)  # True is not table 1
    if number or (isinstance(value, str) and value.isdigit()):
        if int(value) in NUMBERED_TABLES:
            return MATable.numbered(int(value))
    if isinstance(value, str) and value in custom:
        return custom[value]
    names = ", ".join([*map(str, NUMBERED_TABLES), *custom])
    raise ConfigError(where, f"unknown MA table {value!r}",
                      f"use one of {names}, or define it under survey.ma_tables")


EXPOSURE_KEYS = ("ra", "dec", "pa", "filter", "ma_table", "start_time", "id")


def _exposure(sec: _Section, default_id: int, custom: dict[str, MATable]) -> Exposure:
    ra = sec.get("ra", float, minimum=0.0, maximum=360.0,
                 hint="right ascension of the WFI centre, degrees in [0, 360]")
    dec = sec.get("dec", float, minimum=-90.0, maximum=90.0,
                  hint="declination of the WFI centre, degrees in [-90, 90]")
    pa = sec.get("pa", float, 0.0, minimum=-360.0, maximum=360.0,
                 hint="position angle of the observatory +Y axis, degrees east of north")
    flt = sec.get("filter", str, choices=FILTERS)
    if not sec.has("ma_table"):
        raise ConfigError(sec.sub("ma_table"), "is required",
                          f"use a numbered table ({NUMBERED_TABLES[0]}-{NUMBERED_TABLES[-1]}) "
                          "or one defined under survey.ma_tables")
    ma = _ma_table(sec.raw("ma_table"), sec.sub("ma_table"), custom)
    if not sec.has("start_time"):
        raise ConfigError(sec.sub("start_time"), "is required",
                          "give the UTC start of the exposure, e.g. 2027-06-01T00:00:00")
    start = _time(sec.raw("start_time"), sec.sub("start_time"))
    exp_id = sec.get("id", int, default_id, minimum=0)
    sec.done()
    _check_visible(ra, dec, pa, start, sec.path)
    return Exposure(exp_id, ra % 360.0, dec, pa, flt, ma, start)


def _check_visible(ra: float, dec: float, pa: float, start: _dt.datetime, where: str) -> None:
    """Roman's solar-panel constraint: the Sun must be 54-126 deg from the boresight."""
    import galsim
    import galsim.roman

    pos = galsim.CelestialCoord(ra * galsim.degrees, dec * galsim.degrees)
    if not galsim.roman.allowedPos(pos, start):
        raise ConfigError(where, f"Roman cannot point at ra={ra:g}, dec={dec:g} on "
                          f"{start.isoformat()} (Sun angle outside the allowed range)",
                          "choose a date when the field is visible or another field")


def _pointing_table(path: Path, where: str, custom: dict[str, MATable]) -> list[Exposure]:
    from astropy.table import Table

    if not path.is_file():
        raise ConfigError(where, f"file not found: {path}", "give the path of an ECSV or "
                          "Parquet pointing table, relative to the config file")
    fmt = {".ecsv": "ascii.ecsv", ".parquet": "parquet", ".pq": "parquet"}.get(
        path.suffix.lower())
    if fmt is None:
        raise ConfigError(where, f"unsupported pointing table {path.name}",
                          "use an .ecsv or .parquet file")
    try:
        table = Table.read(path, format=fmt)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file
        raise ConfigError(where, f"cannot read {path.name}: {exc}",
                          "check that it is a valid ECSV or Parquet table") from None
    needed = ("ra", "dec", "pa", "filter", "ma_table", "start_time")
    missing = [c for c in needed if c not in table.colnames]
    if missing:
        raise ConfigError(where, f"{path.name} lacks column(s) {', '.join(missing)}",
                          f"a pointing table needs {', '.join(needed)} (and optionally id)")
    exposures = []
    for i, row in enumerate(table):
        rec = {k: _scalar(row[k]) for k in table.colnames}
        exposures.append(_exposure(_Section(rec, f"{where}[row {i}]", keys=EXPOSURE_KEYS),
                                   i, custom))
    return exposures


def _scalar(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    if hasattr(value, "isot"):  # astropy Time
        value = value.isot
    return value


def _survey(data: Any, base: Path) -> SurveyConfig:
    sec = _Section(data, "survey", required=True,
                   keys=("ma_tables", "exposures", "pointings", "region", "pattern", "scas"))
    custom = _ma_tables(sec.raw("ma_tables"), "survey.ma_tables")
    region = None
    if sec.has("region"):
        other = next((k for k in ("exposures", "pointings") if sec.has(k)), None)
        if other:
            raise ConfigError("survey.region", f"is given with survey.{other}",
                              f"a survey is a region with a pattern, or its {other}: "
                              "remove one of them")
        if not sec.has("pattern"):
            raise ConfigError("survey.pattern", "is required with survey.region",
                              "give the filters, ma_table, dithers and start_time to "
                              "observe the region with")
        region = _region(sec.raw("region"), "survey.region")
        pattern = _pattern(sec.raw("pattern"), "survey.pattern", custom)
        from .survey.tiling import RegionSurvey, expand

        exposures, tiling = expand(region, pattern, "survey")
        region = RegionSurvey(region, pattern, tiling)
        paths = [f"survey.pattern (exposure {e.id})" for e in exposures]
    elif sec.has("pattern"):
        raise ConfigError("survey.pattern", "is only used with survey.region",
                          "give the region to tile, or remove the pattern")
    elif sec.has("exposures") == sec.has("pointings"):
        raise ConfigError("survey", "needs exactly one of `exposures`, `pointings` and "
                          "`region`", "list the exposures, name a pointing table file, or "
                          "give a region and a pattern")
    elif sec.has("exposures"):
        items = sec.get("exposures", list)
        if not items:
            raise ConfigError("survey.exposures", "is empty", "list at least one exposure")
        paths = [f"survey.exposures[{i}]" for i in range(len(items))]
        exposures = [_exposure(_Section(item, paths[i], required=True, keys=EXPOSURE_KEYS),
                               i, custom) for i, item in enumerate(items)]
    else:
        ptable = _path(sec.get("pointings", str), base)
        exposures = _pointing_table(ptable, "survey.pointings", custom)
        paths = [f"survey.pointings[row {i}]" for i in range(len(exposures))]
        if not exposures:
            raise ConfigError("survey.pointings", f"{ptable.name} has no rows",
                              "add at least one pointing")
    sec.seen.update(("region", "pattern"))  # given empty, they are absent
    first: dict[int, int] = {}
    for i, e in enumerate(exposures):
        if e.id in first:
            raise ConfigError(f"{paths[i]}.id", f"exposure id {e.id} is used more than once "
                              f"(also by {paths[first[e.id]]})",
                              "give every exposure a distinct id")
        first[e.id] = i
    scas = sec.get("scas", list, list(ALL_SCAS))
    for i, s in enumerate(scas):
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 18:
            raise ConfigError(f"survey.scas[{i}]", f"{s!r} is not an SCA number",
                              "SCAs are integers 1 to 18")
    if not scas or len(set(scas)) != len(scas):
        raise ConfigError("survey.scas", "must list distinct SCAs", "e.g. [1, 2, 3]")
    sec.done()
    exposures.sort(key=lambda e: e.id)
    return SurveyConfig(tuple(exposures), tuple(sorted(scas)), region)


REGION_KINDS = ("ra", "dec", "polygon", "healpix")
PATTERN_KEYS = ("filters", "ma_table", "dithers", "start_time", "cadence", "pa")


def _number_pair(value: Any, where: str, what: str) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
            or not all(math.isfinite(v) for v in value)):
        raise ConfigError(where, f"{value!r} is not {what}", "give it as [low, high] in degrees")
    return float(value[0]), float(value[1])


def _region(data: Any, where: str):
    """``survey.region``: a box (ra, dec), a polygon or HEALPix pixels."""
    from .survey import region as reg

    sec = _Section(data, where, required=True, keys=REGION_KINDS)
    given = [k for k in REGION_KINDS if sec.has(k)]
    kinds = {"polygon" if k == "polygon" else "healpix" if k == "healpix" else "box"
             for k in given}
    if len(kinds) != 1:
        raise ConfigError(where, "needs one of `ra` with `dec` (a box), `polygon` or "
                          "`healpix`" + (f", not {' and '.join(given)}" if given else ""),
                          "e.g. region: {ra: [9.2, 10.2], dec: [-44.5, -43.5]}")
    kind = kinds.pop()
    if kind == "box":
        for key in ("ra", "dec"):
            if not sec.has(key):
                raise ConfigError(sec.sub(key), "is required for a box region",
                                  "give both ra: [low, high] and dec: [low, high], degrees")
        ra = _number_pair(sec.raw("ra"), sec.sub("ra"), "an RA range")
        dec = _number_pair(sec.raw("dec"), sec.sub("dec"), "a Dec range")
        if not ra[0] < ra[1]:
            raise ConfigError(sec.sub("ra"), f"[{ra[0]:g}, {ra[1]:g}] is an empty range",
                              "give [low, high] with low < high; across RA 0 write e.g. "
                              "[-0.5, 0.5] or [359.5, 360.5]")
        if ra[1] - ra[0] > 360.0 or not -360.0 <= ra[0] <= 360.0:
            raise ConfigError(sec.sub("ra"), f"[{ra[0]:g}, {ra[1]:g}] is not an RA range",
                              "give low from -360 to 360 and high at most 360 deg above it")
        for d in dec:
            if not -90.0 <= d <= 90.0:
                raise ConfigError(sec.sub("dec"), f"{d:g} is outside [-90, 90]",
                                  "give declinations from -90 to 90 deg")
        if not dec[0] < dec[1]:
            raise ConfigError(sec.sub("dec"), f"[{dec[0]:g}, {dec[1]:g}] is an empty range",
                              "give [low, high] with low < high")
        lo = ra[0] % 360.0  # one box, however written: RA from [0, 360)
        region = reg.Box((lo, ra[1] + (lo - ra[0])), dec)
    elif kind == "polygon":
        region = _polygon(sec.get("polygon", list), sec.sub("polygon"))
    else:
        region = _healpix(sec.raw("healpix"), sec.sub("healpix"))
    sec.done()
    reg.check_extent(region, where)
    return region


def _polygon(items: list, where: str):
    from .survey import region as reg

    vertices = []
    for i, item in enumerate(items):
        pair = _number_pair(item, f"{where}[{i}]", "an [ra, dec] vertex")
        if not -90.0 <= pair[1] <= 90.0:
            raise ConfigError(f"{where}[{i}]", f"Dec {pair[1]:g} is outside [-90, 90]",
                              "give declinations from -90 to 90 deg")
        vertices.append(pair)
    if len(vertices) > 3 and vertices[0] == vertices[-1]:
        vertices.pop()  # a closed ring, written with its first vertex again
    problem = reg.polygon_problem(np.array(vertices, float).reshape(-1, 2))
    if problem:
        raise ConfigError(where, problem, "give at least 3 [ra, dec] vertices in order around "
                          "the region, with no edge crossing another")
    return reg.Polygon(tuple(vertices))


def _healpix(data: Any, where: str):
    from .survey import region as reg

    sec = _Section(data, where, required=True, keys=("nside", "pixels", "nest"))
    nside = sec.get("nside", int, minimum=1, maximum=2 ** 29)
    if nside & (nside - 1):
        raise ConfigError(sec.sub("nside"), f"{nside} is not a power of 2",
                          "give nside as 1, 2, 4, ... 2**29")
    pixels = sec.get("pixels", list)
    npix = 12 * nside ** 2
    for i, p in enumerate(pixels):
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < npix:
            raise ConfigError(f"{sec.sub('pixels')}[{i}]", f"{p!r} is not a pixel of nside "
                              f"{nside}", f"give integers from 0 to {npix - 1}")
    if not pixels or len(set(pixels)) != len(pixels):
        raise ConfigError(sec.sub("pixels"), "must list distinct pixels", "e.g. [1024, 1025]")
    nest = sec.get("nest", bool, True)
    sec.done()
    return reg.Healpix(nside, tuple(sorted(pixels)), nest)


def _pattern(data: Any, where: str, custom: dict[str, MATable]):
    """``survey.pattern``: how the region is observed."""
    from .survey.tiling import Pattern

    sec = _Section(data, where, required=True, keys=PATTERN_KEYS)
    filters = sec.get("filters", list, hint="list the filters, e.g. [F158, F106]")
    if not filters:
        raise ConfigError(sec.sub("filters"), "is empty", "list at least one filter")
    for i, f in enumerate(filters):
        if f not in FILTERS:
            close = difflib.get_close_matches(str(f), FILTERS, 1)
            did = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{sec.sub('filters')}[{i}]", f"unknown filter {f!r}",
                              f"{did}use any of {', '.join(FILTERS)}")
    if len(set(filters)) != len(filters):
        raise ConfigError(sec.sub("filters"), "lists a filter twice",
                          "list each filter once (dithers repeats them)")
    if not sec.has("ma_table"):
        raise ConfigError(sec.sub("ma_table"), "is required",
                          "give one MA table for all filters, or a mapping filter: table")
    given = sec.raw("ma_table")
    if isinstance(given, dict):
        for key in given:
            if key not in filters:
                raise ConfigError(f"{sec.sub('ma_table')}.{key}",
                                  "is not one of the pattern's filters",
                                  f"give MA tables for {', '.join(filters)}")
        missing = [f for f in filters if f not in given]
        if missing:
            raise ConfigError(f"{sec.sub('ma_table')}.{missing[0]}", "is required",
                              "give an MA table for every filter of the pattern")
        tables = tuple(_ma_table(given[f], f"{sec.sub('ma_table')}.{f}", custom)
                       for f in filters)
    else:
        table = _ma_table(given, sec.sub("ma_table"), custom)
        tables = (table,) * len(filters)
    dithers = sec.get("dithers", int, 2, minimum=1, maximum=64,
                      hint="give the exposures per filter at each tile position, 1 or more "
                           "(2 or more fill the gaps between SCAs)")
    if not sec.has("start_time"):
        raise ConfigError(sec.sub("start_time"), "is required",
                          "give the UTC start of the first exposure, e.g. 2027-06-01T00:00:00")
    start = _time(sec.raw("start_time"), sec.sub("start_time"))
    cadence = sec.get("cadence", float, None, minimum=1e-3,
                      hint="seconds between exposure starts")
    longest = max(tables, key=lambda t: t.exposure_time)
    if cadence is not None and cadence < longest.exposure_time:
        raise ConfigError(sec.sub("cadence"), f"{cadence:g} s is shorter than the exposure "
                          f"time of MA table {longest.label} ({longest.exposure_time:.2f} s)",
                          f"give at least {longest.exposure_time:.2f} s, or leave it out for "
                          "each exposure time plus its slew and settle")
    pa = sec.raw("pa", "auto")
    pa = "auto" if pa is None else pa
    if isinstance(pa, str) and pa != "auto":
        raise ConfigError(sec.sub("pa"), f"unknown value {pa!r}",
                          "give the roll at the region centre in degrees, or auto")
    if pa != "auto":
        pa = sec.get("pa", float, minimum=-360.0, maximum=360.0,
                     hint="the observatory roll at the region centre, degrees east of north, "
                          "or auto")
    sec.done()
    return Pattern(tuple(filters), tables, dithers, start, cadence,
                   None if pa == "auto" else pa)


def _catalog(data: Any, base: Path) -> CatalogConfig:
    sec = _Section(data, "catalog", required=True, keys=("file", "synthetic"))
    if sec.has("file") == sec.has("synthetic"):
        raise ConfigError("catalog", "needs exactly one of `file` and `synthetic`",
                          "name a catalog file, or write `synthetic: {}`")
    if sec.has("file"):
        path = _path(sec.get("file", str), base)
        if path.is_dir():
            from .scene.healpix import INDEX_NAME

            if not (path / INDEX_NAME).is_file():
                raise ConfigError("catalog.file", f"{path} is a directory without "
                                  f"{INDEX_NAME}", "give an ECSV or Parquet file, or a "
                                  "HEALPix-partitioned catalog directory (README, Catalogs)")
            sec.done()
            return CatalogConfig(file=path)
        if not path.is_file():
            raise ConfigError("catalog.file", f"file not found: {path}",
                              "give the path of an ECSV or Parquet catalog, relative to "
                              "the config file")
        if path.suffix.lower() not in (".ecsv", ".parquet", ".pq"):
            raise ConfigError("catalog.file", f"unsupported catalog {path.name}",
                              "use an .ecsv, .parquet or .pq file")
        sec.done()
        return CatalogConfig(file=path)
    syn = _Section(sec.raw("synthetic") or {}, "catalog.synthetic")
    ranges = {}
    for key, default in (("galaxy_mag_range", (18.0, 26.0)), ("star_mag_range", (16.0, 24.0))):
        value = syn.get(key, list, list(default))
        if (len(value) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                   for v in value) or not value[0] < value[1]):
            raise ConfigError(syn.sub(key), f"{value!r} is not a magnitude range",
                              "give [bright, faint] AB magnitudes with bright < faint")
        ranges[key] = (float(value[0]), float(value[1]))
    scale = syn.get("density_scale", float, 1.0, minimum=0.0)
    partition = syn.get("partition", str, "cap", choices=PARTITIONS)
    syn.done()
    sec.done()
    return CatalogConfig(synthetic=SyntheticCatalogConfig(**ranges, density_scale=scale,
                                                          partition=partition))


def _scene(data: Any) -> SceneConfig:
    sec = _Section(data, "scene")
    psec = _Section(sec.raw("psf"), "scene.psf")
    psf = PSFConfig(
        pupil_bin=psec.get("pupil_bin", int, 8, choices=(1, 2, 4, 8, 16, 32, 64)),
        grid=psec.get("grid", int, 3, minimum=1, maximum=16),
        oversample=psec.get("oversample", int, 4, minimum=1, maximum=8),
    )
    psec.done()
    scene = SceneConfig(
        margin=sec.get("margin", int, 64, minimum=8, maximum=512),
        sky=sec.get("sky", bool, True),
        thermal=sec.get("thermal", bool, True),
        stray_light_fraction=sec.get("stray_light_fraction", float, 0.1, minimum=0.0),
        poisson=sec.get("poisson", bool, True),
        psf=psf,
    )
    sec.done()
    return scene


def _detector(data: Any, base: Path, scas: tuple[int, ...]) -> DetectorConfig:
    sec = _Section(data, "detector", keys=("window", "tile", "model", "caldir", "scalar",
                                           "cosmic_ray_flux", "persistence", "model_store"))
    window = sec.get("window", int, N_PIX, minimum=16, maximum=N_PIX,
                     hint="the side of the central square to simulate, 16 to 4088 pixels")
    if window % 2:
        raise ConfigError("detector.window", f"{window} is odd",
                          "use an even window so that it is centred on the SCA")
    tile = sec.get("tile", int, min(1024, window), minimum=16, maximum=N_PIX)
    model = sec.get("model", str, "synthetic", choices=DETECTOR_MODELS)
    caldir = None
    if model == "caldir":
        if not sec.has("caldir"):
            raise ConfigError("detector.caldir", "is required when detector.model is caldir",
                              "give the directory holding roman_wfi_<kind>_*_SCA<NN>.asdf files")
        caldir = _path(sec.get("caldir", str), base)
        if not caldir.is_dir():
            raise ConfigError("detector.caldir", f"{caldir} is not a directory",
                              "give the directory holding the CALDIR ASDF files")
    elif sec.has("caldir"):
        raise ConfigError("detector.caldir", f"is only used with model caldir, not {model}",
                          "remove it, or set detector.model: caldir")
    ssec = _Section(sec.raw("scalar", {}), "detector.scalar",
                    keys=("gain", "read_noise", "dark_current", "saturation", "reset_noise"))
    scalar = ScalarDetectorConfig(
        gain=ssec.get("gain", float, 2.0, minimum=0.1, hint="e-/DN"),
        read_noise=ssec.get("read_noise", float, 5.0, minimum=0.0, hint="DN per read"),
        dark_current=ssec.get("dark_current", float, 0.01, minimum=0.0, hint="e-/s"),
        saturation=ssec.get("saturation", float, 55000.0, minimum=1000.0, maximum=65000.0,
                            hint="raw DN"),
        reset_noise=ssec.get("reset_noise", float, 0.0, minimum=0.0, hint="DN"),
    )
    ssec.done()
    if sec.has("scalar") and model != "scalar":
        raise ConfigError("detector.scalar", f"is only used with model scalar, not {model}",
                          "remove it, or set detector.model: scalar")
    model_store = sec.get("model_store", str, None)
    if model_store is not None:
        if model != "synthetic":
            raise ConfigError("detector.model_store",
                              f"is only used with model synthetic, not {model}",
                              "remove it, or set detector.model: synthetic")
        model_store = _path(model_store, base)
    cfg = DetectorConfig(
        window=window, tile=min(tile, window), model=model, caldir=caldir, scalar=scalar,
        cosmic_ray_flux=sec.get("cosmic_ray_flux", float, 8.0, minimum=0.0, maximum=1e4,
                                hint="cosmic rays per cm^2 per s (0 for none)"),
        persistence=sec.get("persistence", bool, False),
        model_store=model_store,
    )
    sec.done()
    if model == "caldir":
        from .detector.model import detector_model

        for sca in scas:  # opens every file once: a bad CALDIR fails before any work
            detector_model(cfg, 0, sca)
    return cfg


def exposure_gaps(exposures) -> list[tuple[int, int, float]]:
    """(earlier index, later index, seconds from the end of one to the start of the next)
    for each pair of exposures consecutive in time."""
    order = sorted(range(len(exposures)), key=lambda i: exposures[i].start_time)
    return [(prev, cur, (exposures[cur].start_time - exposures[prev].start_time)
             .total_seconds() - exposures[prev].exposure_time)
            for prev, cur in zip(order, order[1:])]


def _check_sequence(exposures) -> None:
    """Persistence needs exposures that follow each other in time."""
    for prev, cur, gap in exposure_gaps(exposures):
        if gap < 0:
            a, b = exposures[prev], exposures[cur]
            end = a.start_time + _dt.timedelta(seconds=a.exposure_time)
            raise ConfigError("detector.persistence",
                              f"exposure {b.id} starts at {b.start_time.isoformat()}, "
                              f"before exposure {a.id} ends at {end.isoformat()}",
                              "give exposures that do not overlap in time, or set "
                              "persistence: false")


FITTERS = ("ols_cas22", "likely", "fixed")
#: The seed's fixed-weight fit: unbiased at any rate, and robust to several
#: cosmic rays in one ramp (README, "Ramp fitters").
DEFAULT_FITTER = "fixed"
#: Fewest resultants stcal's likely fitter accepts.
LIKELY_MIN_RESULTANTS = 4
JUMP_KEYS = ("SthreshA", "SthreshB", "IthreshA", "IthreshB")
RAMP_OPT_KEYS = ("slope", "gain", "sigma_read")


def parse_jump_pars(data: Any, where: str) -> tuple[tuple[str, float], ...]:
    """The seed's ``JUMP_DETECT_PARS``: sigma thresholds and the slopes (DN/s) they hold at."""
    sec = _Section(data, where, keys=JUMP_KEYS)
    pars = tuple((k, sec.get(k, float, minimum=1e-6, hint="sigma" if k[0] == "S" else "DN/s"))
                 for k in JUMP_KEYS if sec.has(k))
    sec.done()
    given = dict(pars)
    lo, hi = given.get("IthreshA", 1.0), given.get("IthreshB", 1000.0)
    if not lo < hi:
        raise ConfigError(f"{where}.IthreshA", f"{lo} is not below IthreshB ({hi})",
                          "give IthreshA < IthreshB (slopes in DN/s)")
    return pars


def parse_ramp_opt(data: Any, where: str) -> tuple[tuple[str, float], ...]:
    """The seed's ``RAMP_OPT_PARS``: the rate the fixed weights are optimal for."""
    sec = _Section(data, where, keys=RAMP_OPT_KEYS)
    hints = {"slope": "DN/s", "gain": "e-/DN", "sigma_read": "DN"}
    pars = tuple((k, sec.get(k, float, minimum=1e-6, hint=hints[k]))
                 for k in RAMP_OPT_KEYS if sec.has(k))
    sec.done()
    return pars


def _calibration(data: Any) -> CalibrationConfig:
    sec = _Section(data, "calibration", keys=("fitter", "jump_detect", "ramp_opt", "use_jump"))
    cfg = CalibrationConfig(
        fitter=sec.get("fitter", str, DEFAULT_FITTER, choices=FITTERS),
        jump_detect=parse_jump_pars(sec.raw("jump_detect", {}), "calibration.jump_detect"),
        ramp_opt=parse_ramp_opt(sec.raw("ramp_opt", {}), "calibration.ramp_opt"),
        use_jump=sec.get("use_jump", bool, True),
    )
    sec.done()
    return cfg


def _output(data: Any, base: Path) -> OutputConfig:
    sec = _Section(data, "output", required=True,
                   keys=("directory", "products", "overwrite", "fits_layout"))
    directory = _path(sec.get("directory", str), base)
    products = sec.get("products", list, list(DEFAULT_PRODUCTS))
    for i, p in enumerate(products):
        if p not in PRODUCTS:
            raise ConfigError(f"output.products[{i}]", f"unknown product {p!r}",
                              f"use any of {', '.join(PRODUCTS)}")
    overwrite = sec.get("overwrite", bool, False)
    fits_layout = sec.get("fits_layout", str, FITS_LAYOUTS[0], choices=FITS_LAYOUTS)
    sec.done()
    return OutputConfig(directory, tuple(p for p in PRODUCTS if p in products), overwrite,
                        fits_layout)


_WALLTIME = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d{2})$|^(\d+)$")


def walltime_seconds(text: str) -> int | None:
    """SLURM's ``[D-]HH:MM:SS``, ``MM:SS`` or ``MM`` in seconds (None if malformed)."""
    m = _WALLTIME.match(text.strip())
    if not m:
        return None
    if m.group(5) is not None:
        return int(m.group(5)) * 60
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.group(1, 2, 3, 4))
    if m.group(2) is None:  # MM:SS
        hours, minutes = 0, int(m.group(3))
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _byte_size(sec: _Section, key: str, default: str | None) -> str | None:
    """A memory size like ``4GiB`` or ``120GB`` (Dask's byte units), or ``auto``
    where that is the default."""
    from dask.utils import parse_bytes

    value = sec.get(key, str, default)
    if value is None or (value == "auto" and default == "auto"):
        return value
    try:
        size = parse_bytes(value)
    except (ValueError, TypeError):
        size = None
    if size is None or size <= 0:
        also = ", or auto" if default == "auto" else ""
        raise ConfigError(sec.sub(key), f"{value!r} is not a memory size",
                          f"write it like 4GiB or 120GB{also}")
    return value


def _duration(sec: _Section, key: str) -> str | None:
    """A worker lifetime like ``50m``, ``3h``, ``90s`` (dask's time strings)."""
    value = sec.get(key, str, None)
    if value is not None and not re.fullmatch(r"\d+(\.\d+)?\s*(s|m|h|d|ms)", value.strip()):
        raise ConfigError(sec.sub(key), f"{value!r} is not a duration",
                          "write it like 50m, 3h or 90s")
    return value


def _slurm(sec: _Section) -> SlurmConfig:
    walltime = sec.get("walltime", str, None)
    if walltime is not None and not walltime_seconds(walltime):
        raise ConfigError(sec.sub("walltime"), f"{walltime!r} is not a SLURM time",
                          "write it as HH:MM:SS or D-HH:MM:SS")
    extra = sec.get("job_extra_directives", list, [])
    for i, item in enumerate(extra):
        if not isinstance(item, str) or not item.startswith("-"):
            raise ConfigError(f"{sec.sub('job_extra_directives')}[{i}]",
                              f"{item!r} is not an sbatch option",
                              "write each as a string like --constraint=cpu")
    minimum = sec.get("minimum_jobs", int, 0, minimum=0)
    maximum = sec.get("maximum_jobs", int, max(1, minimum), minimum=1)
    if maximum < minimum:
        raise ConfigError(sec.sub("maximum_jobs"), f"{maximum} is below minimum_jobs {minimum}",
                          "give maximum_jobs >= minimum_jobs")
    shared = sec.get("shared_directory", str, None)
    cores = sec.get("cores", int, None, minimum=1)
    processes = sec.get("processes", int, None, minimum=1)
    if cores is not None and processes is not None and processes > cores:
        raise ConfigError(sec.sub("processes"), f"{processes} is more than cores {cores}",
                          "give at most one worker process per core")
    return SlurmConfig(
        queue=sec.get("queue", str, None), account=sec.get("account", str, None),
        cores=cores, processes=processes, memory=_byte_size(sec, "memory", None),
        walltime=walltime, job_extra_directives=tuple(extra), minimum_jobs=minimum,
        maximum_jobs=maximum, lifetime=_duration(sec, "lifetime"),
        lifetime_stagger=_duration(sec, "lifetime_stagger"),
        interface=sec.get("interface", str, None),
        shared_directory=Path(shared) if shared else None,
        tls=sec.get("tls", bool, True))


def _tls(data: Any) -> TLSConfig | None:
    if data is None:
        return None
    sec = _Section(data, "cluster.certificates", keys=("ca_file", "cert", "key"))
    paths = {}
    for key in ("ca_file", "cert", "key"):
        path = Path(sec.get(key, str, hint="give the PEM files: ca_file, cert and key"))
        if not path.is_file():
            raise ConfigError(sec.sub(key), f"{path} does not exist", "give a PEM file")
        paths[key] = path
    return TLSConfig(**paths)


_SLURM_KEYS = ("queue", "account", "cores", "processes", "memory", "walltime",
               "job_extra_directives", "minimum_jobs", "maximum_jobs", "lifetime",
               "lifetime_stagger", "interface", "shared_directory", "tls")


def _cluster(data: Any) -> ClusterConfig:
    sec = _Section(data, "cluster")
    kind = sec.get("type", str, "local", choices=CLUSTER_TYPES)
    slurm = None
    if kind == "slurm":
        slurm = _slurm(sec)
    else:
        given = [k for k in _SLURM_KEYS if k in sec.data]
        if given:
            raise ConfigError(sec.sub(given[0]), f"is a SLURM setting, but cluster.type is {kind}",
                              "remove it, or set cluster.type: slurm")
    cfg = ClusterConfig(
        type=kind,
        n_workers=sec.get("n_workers", int, 2, minimum=1),
        threads_per_worker=sec.get("threads_per_worker", int, 1, minimum=1),
        memory_limit=_byte_size(sec, "memory_limit", "auto"),
        address=sec.get("address", str, None),
        dashboard_address=sec.get("dashboard_address", str, "127.0.0.1:0"),
        progress=sec.get("progress", bool, True),
        slurm=slurm,
        tls=_tls(sec.raw("certificates")),
    )
    if kind == "address" and not cfg.address:
        raise ConfigError("cluster.address", "is required when cluster.type is address",
                          "give the scheduler address, e.g. tcp://10.0.0.5:8786")
    if cfg.address and not cfg.address.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise ConfigError("cluster.address", f"{cfg.address!r} is not a scheduler address",
                          "write it as tcp://HOST:PORT or tls://HOST:PORT")
    if cfg.address and cfg.address.startswith("tls://") and cfg.tls is None:
        raise ConfigError("cluster.certificates", "are required for a tls:// scheduler",
                          "give ca_file, cert and key (PEM files)")
    sec.done()
    return cfg


def parse_config(data: Any, base: Path = Path("."), source: Path | None = None) -> Config:
    """Validate a config mapping (as read from YAML) into a :class:`Config`."""
    sec = _Section(data, "", required=True, keys=(
        "seed", "survey", "catalog", "scene", "detector", "calibration", "output", "cluster",
        "mosaic"))
    seed = sec.get("seed", int, 0, minimum=0, maximum=2**63 - 1)
    survey = _survey(sec.raw("survey"), base)
    catalog = _catalog(sec.raw("catalog"), base)
    scene = _scene(sec.raw("scene"))
    detector = _detector(sec.raw("detector"), base, survey.scas)
    if detector.persistence:
        _check_sequence(survey.exposures)
    calibration = _calibration(sec.raw("calibration"))
    if calibration.fitter == "likely":
        short = [e for e in survey.exposures
                 if e.ma_table.nresultants < LIKELY_MIN_RESULTANTS]
        if short:
            raise ConfigError("calibration.fitter",
                              f"likely needs at least {LIKELY_MIN_RESULTANTS} resultants; "
                              f"exposure {short[0].id} "
                              f"has {short[0].ma_table.nresultants}",
                              "use ols_cas22 or fixed, or longer MA tables")
    output = _output(sec.raw("output"), base)
    cluster = _cluster(sec.raw("cluster"))
    mosaic = _mosaic(sec.raw("mosaic"), output)
    sec.done()
    return Config(seed, survey, catalog, scene, detector, output, cluster, source, calibration,
                  mosaic, notes=_tile_note(sec.raw("detector"), detector))


def _tile_note(data: Any, detector: DetectorConfig) -> tuple[str, ...]:
    """A tile larger than the window is clamped to it; say so."""
    given = data.get("tile") if isinstance(data, dict) else None
    if isinstance(given, int) and given > detector.window:
        return (f"note: detector.tile {given} is larger than detector.window "
                f"{detector.window}; using one tile of {detector.tile} pixels per image",)
    return ()


def _mosaic(data: Any, output: OutputConfig) -> MosaicConfig:
    """The ``mosaic`` section (the tiles coadd the run's L2 files: product l2 needed)."""
    sec = _Section(data, "mosaic", keys=("pixel_scale", "tile_size", "pixfrac", "kernel",
                                         "weight"))
    defaults = MosaicConfig()
    cfg = MosaicConfig(
        pixel_scale=sec.get("pixel_scale", float, defaults.pixel_scale),
        tile_size=sec.get("tile_size", int, defaults.tile_size),
        pixfrac=sec.get("pixfrac", float, defaults.pixfrac),
        kernel=sec.get("kernel", str, defaults.kernel),
        weight=sec.get("weight", str, defaults.weight))
    sec.done()
    cfg.options().check({k: f"mosaic.{k}" for k in ("pixel_scale", "tile_size", "pixfrac",
                                                     "kernel", "weight")})
    if "fits" in output.products and "l2" not in output.products:
        raise ConfigError("output.products", "fits writes each L2 file's FITS companion, but "
                          "l2 is not listed", "add l2 to output.products")
    if "mosaic" in output.products and "l2" not in output.products:
        raise ConfigError("output.products", "mosaic coadds the run's L2 files, but l2 is "
                          "not listed", "add l2 to output.products")
    return cfg


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a number (YAML 1.2, not 1.1) and leaves an
    impossible date such as ``2027-13-01`` a string, for the field to report."""

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, AttributeError):
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; relative paths are relative to its folder."""
    path = Path(path)
    return parse_config(read_yaml(path), path.parent, path.resolve())


def read_yaml(path: Path) -> Any:
    """The data of a YAML file (safe loader), or a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(str(path), "config file not found", "check the path")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(str(path), f"not valid YAML{at}: {problem}",
                          "fix the YAML syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc}", None) from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # a constructor failing on an explicitly tagged value, e.g. `!!int abc`
        raise ConfigError(str(path), f"not valid YAML: {exc}",
                          "fix or remove the explicit `!!` tag") from None
    return data

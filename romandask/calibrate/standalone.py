"""``romandask calibrate config.yaml``: romanimpreprocess's gen_cal_image interface.

The configuration (a YAML file, or a dict) takes every key gen_cal_image
(romanimpreprocess 1.0) reads, with its meaning and default:

``IN``
    An L1 file, a glob, or a list of files and globs.  Many files are
    calibrated in parallel, one task each.
``OUT``
    The L2 file (``.asdf``) for a single input, or a directory that receives
    ``<name>_cal.asdf`` for each ``<name>_uncal.asdf``.
``FITSWCS``
    A file of FITS header cards with the SCA's WCS (as sim_to_isim writes
    it).  Without it, the WCS a romandask L1 file carries is used.
``CALDIR``
    The reference files: a mapping of kind to file (dark, flat, gain,
    ipc4d, linearitylegendre, mask, read, saturation; biascorr optional) or
    a directory of ``roman_wfi_<kind>_<tag>_SCA<NN>.asdf`` files.  Without it,
    a romandask L1 file's own detector model is rebuilt, or ``DETECTOR``
    (romandask's ``detector`` section, e.g. ``{model: scalar}`` for romanisim's
    uniform reference values) is used.  gen_cal_image's optional
    ``dark_decay`` kind is refused: romandask neither models nor subtracts a
    dark-decay signal.
``JUMP_DETECT_PARS``
    SthreshA, SthreshB, IthreshA, IthreshB of the fixed-weight fit's jump
    detection (defaults 5.5, 4.5, 1.0, 1000.0, as gen_cal_image's).
``RAMP_OPT_PARS``
    slope (DN/s), gain (e-/DN), sigma_read (DN): the ramp the fixed weights
    are optimal for (defaults 0.4, 1.8, 6.5).
``EXCLUDE_FIRST``
    true (default): the first resultant is flagged DO_NOT_USE and left out
    of the fit (the weights, the jump search), whatever the fitter.
``SATURATION_BACKUP``
    1 (default): passes that give a resultant of several reads the
    SATURATED flag of the resultant after it (romancal's ``backup``).
``SKYORDER``
    If given (0-9), a 2-D Legendre polynomial of that order is fitted to
    the medians of an 8 x 8 grid of blocks of the calibrated image and
    subtracted; its coefficients are recorded under ``romandask.sky``.
``SLICEOUT``
    true: record ``romandask.endslice`` (int8), the last resultant before
    each pixel's first saturated one (-1 where none is).
``romancal_ramp_fit``
    true: romancal's likelihood fit, i.e. ``FITTER: likely``.
``REJECTION_THRESHOLD``
    The likely fit's jump threshold in sigma (default 4.5).
``JUMP_KW``
    romancal's large-event (snowball) settings for the likely fit; they act
    only with ``expand_large_events: true``, which is refused: romandask
    calibrates in tiles and has no snowball flagging.
``correct_wfi18_transient``, ``wfi18_mask_rows``
    false (default); true is refused: romandask has no model of WFI18's
    first-read transient.
``FITSOUT``
    Also write ``<L2 name without .asdf>_asdf_to.fits`` beside each L2 file
    (for OUT ``l2/``: ``l2/<name>_cal_asdf_to.fits``), in ``FITSLAYOUT``.

and romandask's own: ``FITTER`` (fixed, the default: the seed's fixed-weight
fit; ols_cas22 or likely), ``UNITS`` (romandask, the default, or
gen_cal_image: see the README's Calibration section), ``FITSLAYOUT``
(gen_cal_image, the default: data, dq, data with bad pixels at -1000; or
romandask: SCI, ERR, DQ, VAR_POISSON, VAR_RNOISE), ``OVERWRITE``, ``TILE``
(block size), ``cluster`` (as in a run config).  ``NOISE`` and
``NOISE_PRECISION`` (gen_noise_image's) are refused.

Every input is checked, and every output path, before anything is written;
each file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import glob as globmod
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import (DEFAULT_FITTER, FITTERS, LIKELY_MIN_RESULTANTS, CalibrationConfig,
                      ClusterConfig, ConfigError, _cluster, _detector, _Section,
                      parse_jump_pars, parse_ramp_opt, read_yaml)
from ..errors import InputError, OutputError, check_writable_directory
from ..export import FITS_LAYOUTS, calibration_record, fits_companion, sim_entries
from .core import UNITS
from .gen_cal_image import MAX_SKYORDER

__all__ = ["CalibrateJob", "calibrate", "calibrate_file", "load_calibrate_config"]

#: The keys romanimpreprocess 1.0's gen_cal_image reads.
GEN_CAL_IMAGE_KEYS = ("IN", "OUT", "FITSWCS", "CALDIR", "JUMP_DETECT_PARS", "RAMP_OPT_PARS",
                      "EXCLUDE_FIRST", "SATURATION_BACKUP", "SKYORDER", "SLICEOUT",
                      "romancal_ramp_fit", "REJECTION_THRESHOLD", "JUMP_KW",
                      "correct_wfi18_transient", "wfi18_mask_rows", "FITSOUT")
#: romandask's own keys.
ROMANDASK_KEYS = ("DETECTOR", "FITTER", "UNITS", "FITSLAYOUT", "OVERWRITE", "TILE", "cluster")
#: Keys of romanimpreprocess configs that romandask refuses, and why.
REFUSED_KEYS = {
    "NOISE": "is gen_noise_image's (noise realisations), which romandask does not run",
    "NOISE_PRECISION": "is gen_noise_image's (noise realisations), which romandask does "
                       "not run",
}
KEYS = GEN_CAL_IMAGE_KEYS + ROMANDASK_KEYS + tuple(REFUSED_KEYS)
#: Most resultants SLICEOUT's int8 map can number (gen_cal_image's limit).
MAX_SLICEOUT_RESULTANTS = 127
#: gen_cal_image's defaults that differ from a run's calibration.
EXCLUDE_FIRST_DEFAULT = True
SATURATION_BACKUP_DEFAULT = 1
REJECTION_THRESHOLD_DEFAULT = 4.5
#: romancal's large-event settings of the likely fit (its ``_setup_jump_data``).
JUMP_KW_KEYS = ("expand_large_events", "min_jump_area", "min_sat_area", "expand_factor",
                "sat_required_snowball", "min_sat_radius_extend", "sat_expand", "edge_size",
                "maximum_cores")


@dataclasses.dataclass(frozen=True)
class CalibrateJob:
    """One L1 file to calibrate, and how."""

    source: Path
    target: Path
    fits_target: Path | None
    fitswcs: str | None         # header text
    caldir: Any                 # dict of kind -> path, a directory, or None
    detector: Any               # a DetectorConfig, or None
    options: Any                # CalOptions
    tile: int
    skyorder: int | None = None  # SKYORDER
    fits_layout: str = "gen_cal_image"


@dataclasses.dataclass(frozen=True)
class CalibrateConfig:
    jobs: tuple[CalibrateJob, ...]
    cluster: ClusterConfig
    overwrite: bool


def _inputs(value: Any, base: Path) -> list[Path]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError("IN", "is an empty list", "give an L1 file, a glob, or a list of them")
    paths: list[Path] = []
    for i, item in enumerate(items):
        where = "IN" if not isinstance(value, list) else f"IN[{i}]"
        if not isinstance(item, str) or not item:
            raise ConfigError(where, f"must be a file name or glob, got {item!r}",
                              "write it as a string")
        pattern = str(base / item) if not Path(item).is_absolute() else item
        found = sorted(Path(p) for p in globmod.glob(pattern))
        if not found:
            raise ConfigError(where, f"{item} matches no file", "check the path or glob")
        paths.extend(found)
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    return unique


def _target_name(source: Path) -> str:
    name = source.name
    for suffix in ("_uncal.asdf", ".asdf"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + "_cal.asdf"
    return name + "_cal.asdf"


def _fitter(sec) -> str:
    """``FITTER``, or ``likely`` for gen_cal_image's ``romancal_ramp_fit: true``."""
    fitter = sec.get("FITTER", str, None, choices=FITTERS)
    if sec.get("romancal_ramp_fit", bool, False):
        if fitter not in (None, "likely"):
            raise ConfigError("romancal_ramp_fit", f"asks for romancal's likelihood fit but "
                              f"FITTER is {fitter}", "set FITTER: likely, or leave one out")
        return "likely"
    return fitter or DEFAULT_FITTER


def _jump_kw(data: Any) -> None:
    """Check ``JUMP_KW`` (romancal's large-event settings); none of them is used."""
    sec = _Section(data, "JUMP_KW", keys=JUMP_KW_KEYS)
    if sec.get("expand_large_events", bool, False):
        raise ConfigError("JUMP_KW.expand_large_events", "romandask calibrates in tiles and "
                          "has no large-event (snowball) flagging", "remove it, or set it false")
    sec.get("sat_required_snowball", bool, True)
    for key in ("min_jump_area", "min_sat_area", "expand_factor", "min_sat_radius_extend",
                "sat_expand", "edge_size"):
        sec.get(key, float, 0.0, minimum=0.0)
    if sec.has("maximum_cores") and not isinstance(sec.raw("maximum_cores"), (str, int)):
        raise ConfigError("JUMP_KW.maximum_cores", "must be a number or quarter, half, all")
    sec.raw("maximum_cores")
    sec.done()


def parse_calibrate_config(data: Any, base: Path = Path("."), overwrite: bool = False
                           ) -> CalibrateConfig:
    """Validate a gen_cal_image-style config into its jobs."""
    sec = _Section(data, "", required=True, keys=KEYS)
    if not sec.has("IN"):
        raise ConfigError("IN", "is required", "give the L1 file (or a glob, or a list)")
    sources = _inputs(sec.raw("IN"), base)
    out = Path(sec.get("OUT", str, hint="give the L2 file name, or a directory for many "
                                        "inputs"))
    out = out if out.is_absolute() else base / out
    fitswcs = None
    if sec.has("FITSWCS"):
        path = Path(sec.get("FITSWCS", str))
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ConfigError("FITSWCS", f"{path} does not exist",
                              "give the file of FITS header cards with the SCA's WCS")
        fitswcs = path.read_text(errors="replace")
    caldir = None
    if sec.has("CALDIR"):
        raw = sec.raw("CALDIR")
        if isinstance(raw, str):
            caldir = Path(raw) if Path(raw).is_absolute() else base / raw
            if not caldir.is_dir():
                raise ConfigError("CALDIR", f"{caldir} is not a directory",
                                  "give the directory of reference files, or a mapping of "
                                  "kind to file")
        elif isinstance(raw, dict):
            caldir = {}
            if "dark_decay" in raw:
                raise ConfigError("CALDIR.dark_decay", "romandask neither models nor subtracts "
                                  "a dark-decay signal", "remove it")
            for kind, value in raw.items():
                if not isinstance(value, str):
                    raise ConfigError(f"CALDIR.{kind}", f"must be a file name, got {value!r}",
                                      "write it as a string")
                caldir[str(kind)] = Path(value) if Path(value).is_absolute() else base / value
        else:
            raise ConfigError("CALDIR", "must be a directory or a mapping of kind to file",
                              "e.g. CALDIR: {gain: roman_wfi_gain_X_SCA10.asdf, ...}")
    detector = None
    if sec.has("DETECTOR"):
        if caldir is not None:
            raise ConfigError("DETECTOR", "cannot be given together with CALDIR",
                              "keep one source of reference data")
        raw = dict(sec.raw("DETECTOR"))
        raw.setdefault("window", 16)  # each file's own window replaces it
        detector = _detector(raw, base, ())
    for key, why in REFUSED_KEYS.items():
        if key in sec.data:
            raise ConfigError(key, why, "remove it")
    calib = CalibrationConfig(
        fitter=_fitter(sec),
        jump_detect=parse_jump_pars(sec.raw("JUMP_DETECT_PARS", {}), "JUMP_DETECT_PARS"),
        ramp_opt=parse_ramp_opt(sec.raw("RAMP_OPT_PARS", {}), "RAMP_OPT_PARS"))
    _jump_kw(sec.raw("JUMP_KW"))
    for key in ("correct_wfi18_transient", "wfi18_mask_rows"):
        sec.get(key, bool, False)
    if sec.get("correct_wfi18_transient", bool, False):
        raise ConfigError("correct_wfi18_transient", "romandask has no model of WFI18's "
                          "first-read transient to correct", "remove it, or set it false")
    options = dataclasses.replace(
        calib.options(),
        exclude_first=sec.get("EXCLUDE_FIRST", bool, EXCLUDE_FIRST_DEFAULT),
        saturation_backup=sec.get("SATURATION_BACKUP", int, SATURATION_BACKUP_DEFAULT,
                                  minimum=0, hint="give a whole number of resultants, "
                                  "0 or more"),
        rejection_threshold=sec.get("REJECTION_THRESHOLD", float,
                                    REJECTION_THRESHOLD_DEFAULT, minimum=0.1,
                                    hint="give the likely fit's jump threshold in sigma"),
        units=sec.get("UNITS", str, "romandask", choices=UNITS),
        sliceout=sec.get("SLICEOUT", bool, False))
    skyorder = sec.get("SKYORDER", int, None, minimum=0, maximum=MAX_SKYORDER,
                       hint=f"give the order of the sky polynomial, 0 to {MAX_SKYORDER}")
    fitsout = sec.get("FITSOUT", bool, False)
    fits_layout = sec.get("FITSLAYOUT", str, "gen_cal_image", choices=FITS_LAYOUTS)
    overwrite = overwrite or sec.get("OVERWRITE", bool, False)
    tile = sec.get("TILE", int, 512, minimum=16, maximum=4096)
    cluster = _cluster(sec.raw("cluster") or {"type": "threads"})
    sec.done()

    if out.suffix == ".asdf":
        if len(sources) > 1:
            raise ConfigError("OUT", f"{out.name} is one file but IN names {len(sources)}",
                              "give a directory as OUT for many inputs")
        targets = [out]
        check_writable_directory(out.parent, f"OUT {out}")
    else:
        if out.exists() and not out.is_dir():
            raise ConfigError("OUT", f"{out} exists and is not a directory",
                              "give a directory, or a file name ending in .asdf")
        check_writable_directory(out, f"OUT {out}")
        targets = [out / _target_name(s) for s in sources]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError("IN", "two inputs would write the same output name",
                          "calibrate them into different OUT directories")
    jobs = []
    for source, target in zip(sources, targets):
        if target.resolve() == source:
            raise ConfigError("OUT", f"{target} is the input file", "choose another name")
        fits_target = fits_companion(target) if fitsout else None
        for path in (target, fits_target):
            if path is not None and path.exists() and not overwrite:
                raise OutputError(f"OUT {path}", "already exists",
                                  "choose another OUT, or set OVERWRITE: true "
                                  "(or pass --overwrite)")
        jobs.append(CalibrateJob(source, target, fits_target, fitswcs, caldir, detector,
                                 options, tile, skyorder, fits_layout))
    return CalibrateConfig(tuple(jobs), cluster, overwrite)


def load_calibrate_config(config: Any, overwrite: bool = False) -> CalibrateConfig:
    """A config from a YAML path or a dict (relative paths: to the YAML's folder, or cwd)."""
    if isinstance(config, Mapping):
        return parse_calibrate_config(dict(config), Path("."), overwrite)
    path = Path(config)
    data = read_yaml(path)
    return parse_calibrate_config(data, path.parent, overwrite)


# --------------------------------------------------------------------------
# one file
# --------------------------------------------------------------------------

def _read_l1(path: Path):
    """The L1 model, its MA table and SCA; one-line errors for anything else."""
    from ..export import open_datamodel

    model = open_datamodel(path, "L1 (_uncal)")
    try:
        table, sca = _check_l1(path, model)
    except BaseException:
        model.close()
        raise
    return model, table, sca


def _check_l1(path: Path, model):
    """The MA table and SCA of an open model, which must be a well-formed L1."""
    import roman_datamodels.datamodels as rdm

    from ..export import read_exposure

    if not isinstance(model, rdm.ScienceRawModel):
        raise InputError(str(path), f"is a {type(model).__name__}, not L1 (ScienceRawModel)",
                         "give an L1 (_uncal) file; L2 files are already calibrated")
    shape = tuple(model.data.shape)  # the header only: the pixels are read when calibrating
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 10 or shape[1] % 2:
        raise InputError(str(path), f"data are {shape}, not (resultants, N + 8, N + 8)",
                         "give an L1 file of a square window with its reference border")
    table, sca = read_exposure(model, str(path), "L1")
    if table.nresultants != shape[0]:
        raise InputError(str(path), f"meta.exposure.read_pattern has {table.nresultants} "
                         f"resultants but the data have {shape[0]}",
                         "give an L1 file whose read pattern matches its data")
    return table, sca


def _detector_model(job: CalibrateJob, model, sca: int, window: int):
    from ..detector.model import detector_model, model_from_record
    from ..detector.reference import CalDirModel, resolve_caldir

    if isinstance(job.caldir, dict):
        return CalDirModel(job.caldir, sca, window)
    if job.caldir is not None:
        return CalDirModel(resolve_caldir(job.caldir, sca), sca, window)
    if job.detector is not None:
        return detector_model(dataclasses.replace(job.detector, window=window), 0, sca)
    record = sim_entries(model).get("detector")
    if record is None:
        raise InputError(str(job.source), "carries no record of its detector model",
                         "give CALDIR (the reference files), or DETECTOR: {model: scalar} for "
                         "romanisim's uniform reference values")
    return model_from_record(record, sca, window)


def _window_wcs(job: CalibrateJob, model, window: int):
    """(GalSim WCS of the window, its FITS header), or a one-line error."""
    import galsim

    from ..wcs import read_fits_header, window_header

    sim = sim_entries(model)
    if job.fitswcs is not None:
        # the header describes the science array; a romandask window knows where
        # it lies on it, other files are taken to start at its first pixel
        origin = tuple(int(v) for v in sim.get("window_origin", (0, 0)))
        try:
            header = window_header(read_fits_header(job.fitswcs), origin)
        except Exception as exc:  # noqa: BLE001
            raise InputError("FITSWCS", f"is not a usable FITS WCS header ({exc})",
                             "give the header cards of a TAN or TAN-SIP WCS") from None
    elif "fits_wcs" in sim:
        header = read_fits_header(str(sim["fits_wcs"]))
    else:
        raise InputError(str(job.source), "carries no WCS romandask can read",
                         "give FITSWCS (a file of FITS header cards with the SCA's WCS)")
    return galsim.GSFitsWCS(header=galsim.FitsHeader(header=header)), header


@dataclasses.dataclass
class _Opened:
    """An L1 file opened and checked, with what its calibration needs."""

    model: Any
    table: Any
    sca: int
    window: int
    detector: Any
    wcs: Any
    header: Any
    photometry: dict


def _open(job: CalibrateJob) -> _Opened:
    """Open and check one input: its L1 file, reference data, WCS and filter.

    Raises a one-line :class:`~romandask.errors.InputError` for anything
    that would stop its calibration.  The caller closes ``model``.
    """
    from ..export import N_BORDER, photometry_meta

    model, table, sca = _read_l1(job.source)
    try:
        window = model.data.shape[-1] - 2 * N_BORDER
        det = _detector_model(job, model, sca, window)
        wcs, header = _window_wcs(job, model, window)
        if job.options.fitter == "likely" and table.nresultants < LIKELY_MIN_RESULTANTS:
            raise InputError(str(job.source), f"has {table.nresultants} resultants; the likely "
                             f"fitter needs at least {LIKELY_MIN_RESULTANTS}",
                             "use FITTER: ols_cas22 or fixed")
        if job.options.sliceout and table.nresultants > MAX_SLICEOUT_RESULTANTS:
            raise InputError(str(job.source), f"has {table.nresultants} resultants; SLICEOUT "
                             f"records resultant numbers as int8 (at most "
                             f"{MAX_SLICEOUT_RESULTANTS} resultants)", "leave SLICEOUT out")
        filt = str(model.meta.instrument.optical_element)
        try:
            photometry = photometry_meta(filt, det.reference_gain())
        except KeyError:
            raise InputError(str(job.source), f"meta.instrument.optical_element is {filt!r}",
                             "give an imaging-filter exposure") from None
    except BaseException:
        model.close()
        raise
    return _Opened(model, table, sca, window, det, wcs, header, photometry)


def calibrate_file(job: CalibrateJob) -> Path:
    """Calibrate one L1 file into its L2 file (and FITS companion); returns the L2 path."""
    opened = _open(job)
    with opened.model:
        return _calibrate_opened(job, opened)


def _subtract_sky(job: CalibrateJob, arrays: dict) -> dict | None:
    """``SKYORDER``: fit the sky polynomial to the data and subtract it (in place);
    returns what the L2 file records of it."""
    from .gen_cal_image import SKY_BLOCKS, fit_sky

    if job.skyorder is None:
        return None
    data = arrays["data"]
    try:
        coefficients, model = fit_sky(data, job.skyorder)
    except ValueError as exc:
        raise InputError(str(job.source), f"SKYORDER {job.skyorder}: {exc}",
                         "give a lower SKYORDER, or leave it out") from None
    arrays["data"] = (data - model).astype(np.float32)
    return {"order": int(job.skyorder), "coefficients": np.asarray(coefficients, np.float64),
            "blocks": SKY_BLOCKS,
            "model": "sum of coefficients[k] P_i(u) P_j(v) over (i, j) = (0, 0), (0, 1), ..., "
                     "(0, order), (1, 0), ..., (order, 0); u = 2 x / nx - 1, v = 2 y / ny - 1 "
                     "(0-based column x, row y; P Legendre polynomials); subtracted from data"}


def _calibrate_opened(job: CalibrateJob, opened: _Opened) -> Path:
    from ..calibrate.core import OUTPUTS, calibrate_frame
    from ..export import fits_cards, l2_model, pixel_convention, write_asdf, write_l2_fits
    from ..wcs import gwcs_from_galsim, pixel_area_map

    model, table, sca, window = opened.model, opened.table, opened.sca, opened.window
    det, wcs, header = opened.detector, opened.wcs, opened.header
    from ..export import read_arrays

    arrays = read_arrays(model, ("data", "amp33", "resultantdq"), str(job.source), "L1 (_uncal)")
    data = arrays["data"]
    amp33 = arrays.get("amp33")
    if amp33 is not None and amp33.shape[1] != data.shape[1]:
        amp33 = None  # a full-height amp33 with a small window: no rows to match
    groupdq = arrays.get("resultantdq")
    area = pixel_area_map(wcs, (0, 0), slice(0, window), slice(0, window))
    arrays = calibrate_frame(data, amp33, det, table, job.options, groupdq, area, job.tile)
    sky = _subtract_sky(job, arrays)
    meta = {key: model.meta[key] for key in model.meta
            if key not in ("model_type", "product_type", "filename", "file_date")}
    opts = job.options
    sim = {"source": job.source.name, "fits_wcs": header.tostring(),
           **calibration_record(opts.fitter, det.reference_gain(), opts.units,
                                opts.exclude_first),
           "saturation_backup": int(opts.saturation_backup)}
    old = sim_entries(model)
    sim.update({k: old[k] for k in ("window", "window_origin", "detector", "truth") if k in old})
    sim["pixel_convention"] = pixel_convention("L2")
    if sky is not None:
        sim["sky"] = sky
    if opts.sliceout:
        sim["endslice"] = arrays["endslice"]
    filt = str(model.meta.instrument.optical_element)
    amp33_out = amp33 if amp33 is not None else np.zeros(
        (data.shape[0], data.shape[1], 128), np.uint16)
    planes = {name: arrays[name] for name in OUTPUTS}
    photometry = dict(opened.photometry)
    if opts.units != "romandask":
        # no one flux density per DN/s: the scale varies with the pixel area and gain
        photometry.update(conversion_megajanskys=None, conversion_megajanskys_uncertainty=None)
    l2 = l2_model(planes, meta, gwcs_from_galsim(wcs, (0, 0), shape=(window, window)),
                  l1_data=data, amp33=amp33_out, photometry=photometry, sim=sim,
                  filename=job.target.name)
    job.target.parent.mkdir(parents=True, exist_ok=True)
    write_asdf(l2, job.target)
    if job.fits_target is not None:
        write_l2_fits(job.fits_target, planes, header,
                      fits_cards(filt, sca, opts.fitter, opts.units), job.fits_layout)
    return job.target



def calibrate(config: Any, *, overwrite: bool = False,
              say: Callable[[str], None] = lambda s: None) -> list[Path]:
    """Calibrate L1 files to L2 as ``config`` says (a YAML path or a dict).

    Returns the L2 paths written.  Raises :class:`~romandask.errors.UserError`
    (one line) on bad input, before anything is written.
    """
    from dask import delayed

    from ..cluster import compute, dask_client

    cfg = load_calibrate_config(config, overwrite)
    # check every input (its header, reference data, WCS and filter): a bad
    # one fails before any work
    for job in cfg.jobs:
        _open(job).model.close()
    t0 = time.perf_counter()
    say(f"calibrating {len(cfg.jobs)} L1 file(s) with the {cfg.jobs[0].options.fitter} fit")
    with dask_client(cfg.cluster, say) as client:
        jobs = [delayed(calibrate_file, pure=True)(job) for job in cfg.jobs]
        written = compute(jobs, client, cfg.cluster.progress, "files")
    say(f"wrote {len(written)} L2 file(s) [{time.perf_counter() - t0:.1f} s]")
    return written

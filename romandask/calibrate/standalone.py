"""``romandask calibrate config.yaml``: romanimpreprocess's gen_cal_image interface.

The configuration (a YAML file, or a dict) has the seed's keys:

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
    uniform reference values) is used.
``JUMP_DETECT_PARS``
    SthreshA, SthreshB, IthreshA, IthreshB (for the fixed-weight fit).
``FITSOUT``
    Also write ``<L2 name without .asdf>_asdf_to.fits`` beside each L2 file
    (for OUT ``l2/``: ``l2/<name>_cal_asdf_to.fits``).

and romandask's: ``FITTER`` (fixed, the default; ols_cas22 or likely), ``RAMP_OPT_PARS``,
``OVERWRITE``, ``TILE`` (block size), ``cluster`` (as in a run config).

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
from ..export import calibration_record, sim_entries

__all__ = ["CalibrateJob", "calibrate", "calibrate_file", "load_calibrate_config"]

KEYS = ("IN", "OUT", "FITSWCS", "CALDIR", "DETECTOR", "JUMP_DETECT_PARS", "RAMP_OPT_PARS",
        "FITTER", "FITSOUT", "OVERWRITE", "TILE", "cluster")


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


def _fits_name(target: Path) -> Path:
    return target.with_name(target.name[: -len(".asdf")] + "_asdf_to.fits")


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
    calib = CalibrationConfig(
        fitter=sec.get("FITTER", str, DEFAULT_FITTER, choices=FITTERS),
        jump_detect=parse_jump_pars(sec.raw("JUMP_DETECT_PARS", {}), "JUMP_DETECT_PARS"),
        ramp_opt=parse_ramp_opt(sec.raw("RAMP_OPT_PARS", {}), "RAMP_OPT_PARS"))
    fitsout = sec.get("FITSOUT", bool, False)
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
        fits_target = _fits_name(target) if fitsout else None
        for path in (target, fits_target):
            if path is not None and path.exists() and not overwrite:
                raise OutputError(f"OUT {path}", "already exists",
                                  "choose another OUT, or set OVERWRITE: true "
                                  "(or pass --overwrite)")
        jobs.append(CalibrateJob(source, target, fits_target, fitswcs, caldir, detector,
                                 calib.options(), tile))
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


def _calibrate_opened(job: CalibrateJob, opened: _Opened) -> Path:
    from ..calibrate.core import calibrate_frame
    from ..export import l2_model, write_asdf
    from ..wcs import gwcs_from_galsim, pixel_area_map, write_fits_image

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
    meta = {key: model.meta[key] for key in model.meta
            if key not in ("model_type", "product_type", "filename", "file_date")}
    sim = {"source": job.source.name, "fits_wcs": header.tostring(),
           **calibration_record(job.options.fitter, det.reference_gain())}
    old = sim_entries(model)
    sim.update({k: old[k] for k in ("window", "window_origin", "detector", "truth") if k in old})
    filt = str(model.meta.instrument.optical_element)
    amp33_out = amp33 if amp33 is not None else np.zeros(
        (data.shape[0], data.shape[1], 128), np.uint16)
    l2 = l2_model(arrays, meta, gwcs_from_galsim(wcs, (0, 0), shape=(window, window)),
                  l1_data=data, amp33=amp33_out, photometry=opened.photometry, sim=sim,
                  filename=job.target.name)
    job.target.parent.mkdir(parents=True, exist_ok=True)
    write_asdf(l2, job.target)
    if job.fits_target is not None:
        write_fits_image(job.fits_target, arrays, header,
                         {"FILTER": filt, "DETECTOR": f"WFI{sca:02d}",
                          "BUNIT": "DN/s", "FITTER": job.options.fitter})
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

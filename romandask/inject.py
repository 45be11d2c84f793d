"""Inject sources into existing L2 images.

The method is romanisim's (``romanisim.image.inject_sources_into_l2``), built
on romandask's own kernels so that injected sources are simulated exactly as
the survey simulation makes them:

1. The catalog is rendered with the image's own WCS, its filter, the PSF of
   its SCA (at the image's place on the SCA), and its exposure time (the
   last read of its read pattern times its frame time): expected electrons
   per pixel, at unit QE, on stamps of ``stamp_radius`` pixels around each
   source (the PSF is normalised within the stamp, so a source deposits its
   whole flux).
2. Each pixel's rate is turned back into electrons (times the flat, the
   pixel area and the reference gain, plus the dark current, the inverse of
   what calibration did) and spread evenly over the read pattern: a
   *virtual ramp*, ``rate x tbar`` for each resultant.
3. The injected electrons (times the flat: the pixel's QE) are apportioned
   into the reads by the L1 simulation's own code
   (:func:`romandask.detector.forward.apportion`: the same exact Poisson
   draws from the same counter-based generator) and added to the ramp.
4. The ramp is refitted with the fitter that calibrated the file
   (:func:`romandask.calibrate.core.fit_ramp`), and so is the virtual ramp
   alone; the new rate is the old one plus the difference of the two fits, so
   a pixel that receives no electron keeps its rate bit for bit.
5. Variances: the file's own read-noise variance is scaled by the change the
   new fit's weights make to it, and the file's own Poisson variance likewise
   plus the Poisson variance of the injected *expected* electrons through the
   new weights (never of the drawn ones: a variance from a noisy count biases
   the pulls).  ``err`` follows.  ``dq`` gains the new fit's flags.

Only pixels whose expected injected electrons are above zero (the stamps)
are touched: every other pixel of data, err, var_poisson, var_rnoise and dq
is bitwise unchanged.  Pixels without a usable rate (flagged DO_NOT_USE or
SATURATED, or not finite) are left alone too.

Where gain and read noise come from
    A romandask L2 file records the detector model that calibrated it
    (``romandask.detector``), its reference gain, its fitter and its WCS; all
    are used.  Other files (romanisim's, romancal's) take them from
    ``detector`` (a romandask ``detector`` section; by default ``scalar``,
    romanisim's uniform values: gain 2 e-/DN, read noise 5 DN) and are fitted
    with ols_cas22, as romanisim and romancal fit them; their gWCS is
    approximated by a TAN-SIP FITS WCS (``gwcs.to_fits_sip``, to 0.01 pixel).

Shortcuts (as romanisim's)
    * L2 files do not say which pixels had cosmic-ray hits: an injected
      source on such a pixel is refitted as if there had been none.
    * No non-linearity, saturation or IPC is applied to the injected charge,
      and the refit has none: the ramp is fitted as linear.
    * Persistence already in the rate stays in it; none is added.
    * Jump detection is off in the refit (the virtual ramp has no jumps).

The truth table of the injected sources goes under
``romandask.injections`` (a list: each injection appends one entry).

``romandask.inject(files, catalog, out)`` injects into many files in parallel
(:func:`inject`; this module is callable), as ``romandask inject`` does.
"""

from __future__ import annotations

import dataclasses
import glob as globmod
import shutil
import sys
import time
import types
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import galsim
import numpy as np
from roman_datamodels.dqflags import group as groupflags
from roman_datamodels.dqflags import pixel as pixelflags

from . import rng
from .config import FITTERS, LIKELY_MIN_RESULTANTS, ClusterConfig, DetectorConfig
from .errors import ConfigError, InputError, OutputError, atomic_path, check_writable_directory
from .export import TREE_KEY, sim_entries

__all__ = ["InjectOptions", "InjectionWarning", "inject", "inject_file",
           "inject_sources_into_l2"]

#: Pixels whose rate is not refitted: no usable rate to add to.
_UNUSABLE = np.uint32(pixelflags.DO_NOT_USE | pixelflags.SATURATED)
#: Top-level entries of an ASDF tree that are not the model's own.
_ASDF_OWN = ("roman", "history", "asdf_library")


class InjectionWarning(UserWarning):
    """No catalog source reaches the image: the output is an unchanged copy."""


@dataclasses.dataclass(frozen=True)
class InjectOptions:
    """How to inject.

    ``seed`` keys the random draws (with the image's exposure and SCA);
    ``fitter`` overrides the file's own; ``stamp_radius`` (pixels) is the
    half-side of each source's stamp; ``detector`` gives gain, read noise,
    flat and dark for files that do not record their detector model (None:
    romanisim's scalar values); ``tile`` is the side of the blocks worked on.
    """

    seed: int = 0
    fitter: str | None = None
    stamp_radius: int = 64
    detector: DetectorConfig | None = None
    tile: int = 512

    def __post_init__(self):
        if self.fitter is not None and self.fitter not in FITTERS:
            raise ConfigError("fitter", f"is {self.fitter!r}", f"use one of {', '.join(FITTERS)}")
        if int(self.stamp_radius) != self.stamp_radius or not 4 <= self.stamp_radius <= 256:
            raise ConfigError("stamp_radius", f"is {self.stamp_radius!r}",
                              "give a whole number of pixels from 4 to 256")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ConfigError("seed", f"is {self.seed!r}", "give a whole number >= 0")


# --------------------------------------------------------------------------
# what an L2 image says about itself
# --------------------------------------------------------------------------

@dataclasses.dataclass
class L2Image:
    """An L2 image's facts that injection needs."""

    sca: int
    filter: str
    table: Any                  # MATable
    shape: tuple[int, int]
    wcs: galsim.GSFitsWCS       # of the image, GalSim 1-based pixels
    origin: tuple[int, int]     # the image's first pixel on the SCA's science array
    detector: Any               # DetectorModel
    reference_gain: float
    per_nominal_pixel: bool     # rates per (0.11")^2 (romandask) or per pixel
    fitter: str
    exposure_key: int           # identifies (exposure, SCA) for the random draws
    per_maggie: float           # e-/s of a 1-maggie source: the file's own flux scale
    exclude_first: bool = False  # its calibration left the first resultant out


def _fits_wcs(model, shape, where: str):
    """The image's GalSim WCS: its recorded FITS header, or a TAN-SIP fit to its gWCS."""
    from .wcs import read_fits_header

    sim = sim_entries(model)
    if "fits_wcs" in sim:
        header = read_fits_header(str(sim["fits_wcs"]))
    else:
        gw = model.meta.wcs if "wcs" in model.meta else None
        if gw is None:
            raise InputError(where, "has no meta.wcs", "give an L2 file with its WCS assigned")
        ny, nx = shape
        try:
            header = gw.to_fits_sip(bounding_box=((-0.5, nx - 0.5), (-0.5, ny - 0.5)),
                                    max_pix_error=0.01, verbose=False)
        except Exception as exc:  # noqa: BLE001 - any gwcs failure is the file's
            raise InputError(where, f"meta.wcs cannot be approximated by a FITS WCS ({exc})",
                             "give an L2 file with an imaging WCS") from None
    return galsim.GSFitsWCS(header=galsim.FitsHeader(header=header))


def _detector_model(model, sca: int, window: int, options: InjectOptions):
    from .config import DetectorConfig
    from .detector.model import detector_model, model_from_record

    record = sim_entries(model).get("detector")
    if record is not None:
        return model_from_record(record, sca, window)
    det = options.detector if options.detector is not None else DetectorConfig(model="scalar")
    return detector_model(dataclasses.replace(det, window=window), 0, sca)


def describe(model, options: InjectOptions = InjectOptions(), where: str = "L2") -> L2Image:
    """Check that ``model`` is an L2 image and gather what injection needs.

    Raises a one-line :class:`~romandask.errors.InputError` otherwise.
    """
    import roman_datamodels.datamodels as rdm

    from .export import read_exposure
    from .instrument.filters import FILTERS

    if not isinstance(model, rdm.ImageModel):
        raise InputError(where, f"is a {type(model).__name__}, not L2 (ImageModel)",
                         "give a calibrated L2 (_cal) file")
    shape = tuple(model.data.shape)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 8:
        raise InputError(where, f"data are {shape}, not a square image",
                         "give an L2 file of one SCA (or a square window of it)")
    table, sca = read_exposure(model, where, "L2")
    filt = str(model.meta.instrument.optical_element)
    if filt not in FILTERS:
        raise InputError(where, f"meta.instrument.optical_element is {filt!r}",
                         f"give an imaging exposure ({', '.join(FILTERS)})")
    sim = sim_entries(model)
    units = str(sim.get("units", "romandask"))
    if units != "romandask":
        raise InputError(where, f"is in {units}'s units (UNITS: {units}), which have no "
                         "one flux scale", "inject into an L2 file calibrated with "
                         "UNITS: romandask")
    det = _detector_model(model, sca, shape[0], options)
    fitter = options.fitter or str(sim.get("fitter", "ols_cas22"))
    if fitter == "likely" and table.nresultants < LIKELY_MIN_RESULTANTS:
        raise InputError(where, f"has {table.nresultants} resultants; the likely fitter "
                         f"needs at least {LIKELY_MIN_RESULTANTS}",
                         "refit with fitter ols_cas22 or fixed")
    origin = tuple(int(v) for v in sim.get("window_origin", (0, 0)))
    identity = f"{model.meta.exposure.start_time}|{sca}|{filt}"
    gain = float(sim.get("reference_gain", det.reference_gain()))
    return L2Image(sca=sca, filter=filt, table=table, shape=shape,
                   wcs=_fits_wcs(model, shape, where), origin=origin, detector=det,
                   reference_gain=gain,
                   per_nominal_pixel=bool(sim.get("pixel_area_normalised", False)),
                   fitter=fitter, exposure_key=zlib.crc32(identity.encode()),
                   per_maggie=file_flux_scale(model, filt, gain),
                   exclude_first=bool(sim.get("exclude_first", False)))


def file_flux_scale(model, filter_name: str, reference_gain: float) -> float:
    """Electrons per second of a 1-maggie source, by the file's own ``meta.photometry``.

    ``conversion_megajanskys`` (MJy/sr per DN/s) times ``pixel_area`` (sr)
    is the flux density of 1 DN/s, so a 1-maggie (3631 Jy) source gives
    ``3631e-6 / (conversion x area)`` DN/s, times the file's gain in e-/s.
    Each producer's files say their own scale: romanisim's come from its
    per-SCA effective areas, romandask's from GalSim's zero points, whose
    values they record.  Without usable photometry, GalSim's zero point.
    """
    from .instrument.filters import electrons_per_maggie

    phot = model.meta.get("photometry") if hasattr(model.meta, "get") else None
    try:
        conversion = float(phot["conversion_megajanskys"])
        area = float(phot["pixel_area"])
    except (KeyError, TypeError, ValueError):
        return electrons_per_maggie(filter_name)
    # romanisim's area (and with it its conversion) carries the sign of its
    # WCS's handedness; the product is the flux density of 1 DN/s either way
    per_dn = conversion * area
    if not (np.isfinite(per_dn) and per_dn > 0):
        return electrons_per_maggie(filter_name)
    return 3631e-6 / per_dn * reference_gain


# --------------------------------------------------------------------------
# the sources
# --------------------------------------------------------------------------

def select(image: L2Image, catalog, margin: int) -> dict[str, np.ndarray]:
    """Catalog rows whose centre lies within ``margin`` pixels of the image.

    Returns the columns of :func:`romandask.scene.select.sources_in`: GalSim
    pixel ``x``, ``y`` of the image, ``flux`` in electrons over the exposure,
    and the catalog's ``id``, ``ra``, ``dec``, ``type`` and shape.
    """
    from .scene.select import CatalogIndex, sources_in

    ny, nx = image.shape
    return sources_in(image.wcs, galsim.BoundsI(1, nx, 1, ny), CatalogIndex(catalog), margin,
                      image.filter, image.table.exposure_time, image.per_maggie)


def truth_table(image: L2Image, sources: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The injected sources: catalog columns, 0-based image x, y, and their rates.

    ``flux`` is in maggies, ``electrons`` over the exposure, and ``rate`` in
    the image's units (DN/s summed over the source's pixels, per nominal
    pixel area where the image is so normalised: the aperture sum of
    ``data x area``).
    """
    t = image.table.exposure_time
    return {"id": sources["id"], "ra": sources["ra"], "dec": sources["dec"],
            "x": sources["x"] - 1.0, "y": sources["y"] - 1.0, "type": sources["type"],
            "n": sources["n"], "half_light_radius": sources["half_light_radius"],
            "pa": sources["pa"], "ba": sources["ba"],
            "flux": sources["flux"] / (image.per_maggie * t),
            "electrons": sources["flux"], "rate": sources["flux"] / t / image.reference_gain}


class _ShiftedPSF:
    """The SCA's PSF model, evaluated at image pixel positions."""

    def __init__(self, model, dx: int, dy: int):
        self.model, self.dx, self.dy = model, dx, dy

    def at(self, x: float, y: float):
        return self.model.at(x + self.dx, y + self.dy)

    def grid_weights(self, x: float, y: float):
        return self.model.grid_weights(x + self.dx, y + self.dy)

    @property
    def fourier(self):
        return self.model.fourier


def _psf(image: L2Image, radius: int) -> _ShiftedPSF:
    from .scene.psf import PSFKey, psf_model

    ny, nx = image.shape
    x0, y0 = image.origin
    key = PSFKey(image.sca, image.filter, x0 + 1, x0 + nx, y0 + 1, y0 + ny, radius=radius)
    return _ShiftedPSF(psf_model(key), x0, y0)


# --------------------------------------------------------------------------
# one block of the image (a physics kernel: arrays in, arrays out)
# --------------------------------------------------------------------------

def inject_block(arrays: Mapping[str, np.ndarray], expected: np.ndarray, region, area,
                 image: L2Image, options, key: int, pixel_index: np.ndarray
                 ) -> dict[str, np.ndarray] | None:
    """New values of the pixels of one block that receive injected light.

    ``arrays`` holds the block's data, err, var_poisson, var_rnoise, dq;
    ``expected`` the injected electrons over the exposure at unit QE;
    ``region`` the detector model's reference data of the block, ``area`` its
    pixel areas (relative to nominal; ones for per-pixel rates);
    ``pixel_index`` the image-wide index of each pixel (keys its draws).

    Returns None if no pixel changes, else ``mask`` (the pixels replaced) and
    the new values there, 1-D, in float64 (dq uint32).
    """
    from .calibrate.core import effective_read_noise, fit_ramp
    from .calibrate.fixed_fit import RampTimes
    from .detector.forward import apportion

    data = np.asarray(arrays["data"], np.float64)
    dq = np.asarray(arrays["dq"], np.uint32)
    mask = (expected > 0) & np.isfinite(data) & ((dq & _UNUSABLE) == 0)
    if not mask.any():
        return None
    gain = region.gain.astype(np.float64)[mask]
    flat = region.flat.astype(np.float64)[mask]
    scale = flat * np.asarray(area, np.float64)[mask] * image.reference_gain
    dark = region.dark_slope.astype(np.float64)[mask] * gain
    read_noise = effective_read_noise(image.detector, region.read_noise[mask]) * gain
    table = image.table
    # the virtual ramp of the image's own rate, and the injected electrons on it
    tbar = np.asarray(table.tbar, np.float64)
    virtual = (data[mask] * scale + dark)[None] * tbar[:, None]
    injected_e = expected[mask] * flat
    added = apportion(injected_e, pixel_index[mask], table, key)
    ramps = np.stack([virtual, virtual + added], axis=1)        # (nres, 2, npix)
    npix = virtual.shape[1]
    groupdq = np.zeros(ramps.shape, np.uint8)
    if image.exclude_first:  # as the file was calibrated
        groupdq[0] = np.uint8(groupflags.DO_NOT_USE)
    fit = fit_ramp(options, ramps, groupdq,
                   np.broadcast_to(read_noise, (2, npix)), np.broadcast_to(gain, (2, npix)),
                   table, RampTimes.from_pattern(table.read_pattern, table.frame_time))
    before = {k: v[0] for k, v in fit.items()}
    after = {k: v[1] for k, v in fit.items()}
    new_data = data[mask] + (after["slope"] - before["slope"]) / scale

    def scaled(name: str, fitted_after, fitted_before):
        old = np.asarray(arrays[name], np.float64)[mask]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(fitted_before > 0, fitted_after / fitted_before, 1.0)
        return np.where(np.isfinite(old), old * ratio, fitted_after / scale ** 2)

    var_rnoise = scaled("var_rnoise", after["var_rnoise"], before["var_rnoise"])
    var_poisson = scaled("var_poisson", after["poisson_coeff"], before["poisson_coeff"])
    var_poisson += after["poisson_coeff"] * (injected_e / table.exposure_time) / scale ** 2
    new_dq = dq[mask] | after["dq"]
    return {"mask": mask, "data": new_data, "var_poisson": var_poisson,
            "var_rnoise": var_rnoise, "err": np.sqrt(var_poisson + var_rnoise), "dq": new_dq}


# --------------------------------------------------------------------------
# one image
# --------------------------------------------------------------------------

def _calibration_options(fitter: str):
    from .calibrate.core import CalOptions

    return CalOptions(fitter=fitter, use_jump=False)


def _catalog_table(catalog, filters: Sequence[str]):
    """A validated catalog from a path or an astropy Table."""
    from astropy.table import Table

    from .scene.catalog import read_catalog, validate_catalog

    if isinstance(catalog, Table):
        return validate_catalog(catalog, filters)
    return read_catalog(catalog, filters)


def _catalog_name(catalog) -> str:
    """How the truth entry names a catalog: its file name, or 'table'."""
    from astropy.table import Table

    return "table" if isinstance(catalog, Table) else Path(str(catalog)).name


def _inject(model, image: L2Image, sources: Mapping[str, np.ndarray],
            options: InjectOptions) -> tuple[Any, int]:
    """Inject ``sources`` into a copy of ``model``; returns (copy, pixels replaced)."""
    from .detector.reference import NBORDER
    from .scene.render import Backgrounds, expected_counts
    from .scene.select import in_region
    from .wcs import pixel_area_map

    out = model.copy()
    # romanisim's L2 files may have no var_rnoise: it is then estimated, not stored
    names = tuple(n for n in ("data", "err", "var_poisson", "var_rnoise", "dq") if n in out)
    targets = {name: np.asarray(out[name]) for name in names}  # the copy's own arrays
    ny, nx = image.shape
    radius = int(options.stamp_radius)
    psf = _psf(image, radius)
    key = int(np.random.SeedSequence(
        [int(options.seed), rng.STAGES["inject"], image.exposure_key]).generate_state(
            1, np.uint64)[0])
    cal = _calibration_options(image.fitter)
    tile = int(options.tile)
    replaced = 0
    for y0 in range(0, ny, tile):
        y1 = min(y0 + tile, ny)
        for x0 in range(0, nx, tile):
            x1 = min(x0 + tile, nx)
            # GalSim pixels x0 + 1 .. x1 of the image; sources whose stamp reaches them
            local = in_region(sources, x0 + 0.5 - radius, x1 + 0.5 + radius,
                              y0 + 0.5 - radius, y1 + 0.5 + radius)
            if not len(local["x"]):
                continue
            bounds = galsim.BoundsI(x0 + 1, x1, y0 + 1, y1)
            expected = expected_counts(bounds, image.wcs, local, psf, 0.0, Backgrounds(),
                                       margin=radius)
            block = (slice(y0, y1), slice(x0, x1))
            region = image.detector.region(slice(y0 + NBORDER, y1 + NBORDER),
                                           slice(x0 + NBORDER, x1 + NBORDER))
            area = (pixel_area_map(image.wcs, (0, 0), block[0], block[1])
                    if image.per_nominal_pixel else np.ones(expected.shape))
            rows, cols = np.mgrid[y0:y1, x0:x1]
            arrays = {name: targets[name][block] for name in names}
            for name in ("var_poisson", "var_rnoise"):
                arrays.setdefault(name, np.full(expected.shape, np.nan))
            new = inject_block(arrays, expected, region, area, image, cal, key,
                               rows.astype(np.int64) * nx + cols)
            if new is None:
                continue
            mask = new["mask"]
            for name in names:
                part = targets[name][block]          # a view: written in place
                part[mask] = new[name].astype(part.dtype)
            replaced += int(mask.sum())
    for name in names:
        out[name] = targets[name]
    return out, replaced


def _record(model, image: L2Image, sources, options: InjectOptions, catalog_name: str,
            replaced: int) -> None:
    from .export import truth_tree

    sim = dict(sim_entries(model))
    entry = {"catalog": catalog_name, "seed": int(options.seed), "fitter": image.fitter,
             "stamp_radius": int(options.stamp_radius), "pixels_replaced": int(replaced),
             "truth": truth_tree(truth_table(image, sources))}
    sim["injections"] = [*list(sim.get("injections", [])), entry]
    model[TREE_KEY] = sim


def inject_sources_into_l2(model, catalog, *, seed: int = 0, fitter: str | None = None,
                           stamp_radius: int = 64, detector: DetectorConfig | None = None,
                           catalog_name: str | None = None):
    """A copy of the L2 ``model`` with the sources of ``catalog`` injected.

    Parameters
    ----------
    model : roman_datamodels.datamodels.ImageModel
        The L2 image (romandask's, romanisim's or romancal's).
    catalog : astropy.table.Table or path
        Sources in romanisim's catalog format, with a flux column (maggies)
        for the image's filter.
    seed : int
        Keys the random draws, with the image's exposure and SCA.
    fitter : str, optional
        Ramp fitter for the refit; the file's own by default.
    stamp_radius : int
        Half-side (pixels) of each source's stamp: nothing beyond it changes.
    detector : DetectorConfig, optional
        Gain, read noise, flat and dark for files that do not record their
        detector model (default: romanisim's scalar values).
    catalog_name : str, optional
        How the truth entry names the catalog.

    Returns
    -------
    ImageModel
        The new model; its ``romandask.injections`` list ends with this
        injection's truth table.  If no source reaches the image an
        :class:`InjectionWarning` is issued and an unchanged copy returned.
    """
    options = InjectOptions(seed=seed, fitter=fitter, stamp_radius=stamp_radius,
                            detector=detector)
    image = describe(model, options)
    table = _catalog_table(catalog, [image.filter])
    sources = select(image, table, options.stamp_radius)
    if not len(sources["x"]):
        warnings.warn("no catalog source falls on the image; returning an unchanged copy",
                      InjectionWarning, stacklevel=2)
        return model.copy()
    out, replaced = _inject(model, image, sources, options)
    _record(out, image, sources, options, catalog_name or _catalog_name(catalog), replaced)
    out.validate()
    return out


# --------------------------------------------------------------------------
# files, many in parallel
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InjectJob:
    """One L2 file to inject into: its sources already selected on the driver."""

    source: Path
    target: Path
    sources: dict
    catalog_name: str
    options: InjectOptions


def _open_l2(path: Path):
    from .export import open_datamodel

    return open_datamodel(path, "L2 (_cal)")


def _extra_tree(model) -> dict:
    """The file's top-level entries beside the model (e.g. romanisim's extras)."""
    tree = getattr(getattr(model, "_asdf", None), "tree", None) or {}
    return {k: v for k, v in tree.items() if k not in _ASDF_OWN}


def inject_file(job: InjectJob) -> tuple[Path, int]:
    """Inject one file; returns (path written, sources injected)."""
    from .export import read_arrays, write_asdf

    job.target.parent.mkdir(parents=True, exist_ok=True)
    with _open_l2(job.source) as model:
        image = describe(model, job.options, str(job.source))
        read_arrays(model, ("data", "err", "var_poisson", "var_rnoise", "dq"), str(job.source),
                    "L2 (_cal)")
        if not len(job.sources["x"]):
            with atomic_path(job.target) as partial:
                shutil.copyfile(job.source, partial)
            return job.target, 0
        out, replaced = _inject(model, image, job.sources, job.options)
        _record(out, image, job.sources, job.options, job.catalog_name, replaced)
        out.validate()
        write_asdf(out, job.target, _extra_tree(model))
    return job.target, len(job.sources["x"])


def _inputs(inputs) -> list[Path]:
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise ConfigError("L2", "no input file given", "give an L2 file, a glob, or several")
    paths: list[Path] = []
    for item in items:
        text = str(item)
        found = sorted(Path(p) for p in globmod.glob(text)) if globmod.has_magic(text) else [
            Path(text)]
        if not found:
            raise InputError(text, "matches no file", "check the path or glob")
        paths.extend(found)
    return list(dict.fromkeys(p.resolve() for p in paths))


def _targets(sources: list[Path], output: Path, overwrite: bool) -> list[Path]:
    many = len(sources) > 1 or output.is_dir()
    if len(sources) > 1 and output.suffix == ".asdf" and not output.is_dir():
        raise OutputError(f"OUT {output}", f"is one file but the inputs name {len(sources)}",
                          "give a directory as OUT for many inputs")
    if many:
        check_writable_directory(output, str(output))
        targets = [output / s.name for s in sources]
    else:
        if output.suffix != ".asdf":
            raise OutputError(str(output), "is not an .asdf file name",
                              "name the output file *.asdf, or give a directory")
        check_writable_directory(output.parent, str(output.parent))
        targets = [output]
    for s, t in zip(sources, targets):
        if t.resolve() == s:
            raise OutputError(str(t), "is the input file itself",
                              "write the injected file elsewhere")
        if t.exists() and not overwrite:
            raise OutputError(str(t), "already exists", "choose another output, or --overwrite")
    return targets


def inject(inputs, catalog, output, *, seed: int = 0, fitter: str | None = None,
           stamp_radius: int = 64, detector: DetectorConfig | None = None,
           overwrite: bool = False, cluster: ClusterConfig = ClusterConfig(),
           say: Callable[[str], None] = lambda s: None,
           warn: Callable[[str], None] | None = None) -> list[Path]:
    """Inject ``catalog`` into L2 files, in parallel over ``cluster``.

    ``inputs`` is a file, a glob, or a list of them; ``output`` an ``.asdf``
    file for one input or a directory receiving each input's name.  Every
    input, the catalog and every output path are checked before anything is
    written; each file is written to a temporary name and renamed when whole.
    A file that no source reaches is copied unchanged, with a warning
    (``warn``; by default an :class:`InjectionWarning`).  Returns the paths
    written.
    """
    from dask import delayed

    from .cluster import compute, dask_client

    options = InjectOptions(seed=seed, fitter=fitter, stamp_radius=stamp_radius,
                            detector=detector)
    sources = _inputs(inputs)
    targets = _targets(sources, Path(output), overwrite)
    images = []
    for path in sources:
        with _open_l2(path) as model:
            images.append(describe(model, options, str(path)))
    table = _catalog_table(catalog, sorted({im.filter for im in images}))
    name = _catalog_name(catalog)
    jobs = []
    for path, target, image in zip(sources, targets, images):
        selected = select(image, table, options.stamp_radius)
        if not len(selected["x"]):
            message = (f"{path}: no catalog source falls on the image; "
                       f"writing an unchanged copy to {target}")
            if warn is None:
                warnings.warn(message, InjectionWarning, stacklevel=2)
            else:
                warn(message)
        jobs.append(InjectJob(path, target, selected, name, options))
    t0 = time.perf_counter()
    say(f"injecting {len(table)} catalog sources into {len(jobs)} L2 file(s)")
    with dask_client(cluster, say) as client:
        tasks = [delayed(inject_file, pure=True)(job) for job in jobs]
        done = compute(tasks, client, cluster.progress, "files")
    total = sum(n for _, n in done)
    say(f"wrote {len(done)} file(s), {total} source renderings "
        f"[{time.perf_counter() - t0:.1f} s]")
    return [p for p, _ in done]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return inject(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

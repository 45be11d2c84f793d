"""L2 -> L3: coadd calibrated images onto the fixed sky tiles, as Dask work.

The graph
    On the driver, each L2 file is opened (lazily) for its gWCS, shape,
    filter, exposure time and photometry, and its footprint is sampled (every
    border pixel edge and an interior grid) to find the tiles it reaches
    (:mod:`romandask.skytiles`).  A tile is made, per filter, when an input
    covers sky of the tile's own region there; it is then made from every
    input of that filter that overlaps it.  Then

    * one task per (input, tile) overlap resamples the input's data,
      Poisson and read-noise variances and weights onto the part of the tile
      it covers, with the ``drizzle`` package (the resampler romancal's
      resample step uses), and
    * one task per (tile, filter) coadds those pieces, in input order, and
      writes the L3 file.

Resampling
    Data are converted to surface brightness, MJy/sr, by the file's own
    ``meta.photometry.conversion_megajanskys`` (data already in MJy/sr,
    ``meta.cal_step.flux`` COMPLETE, are taken as they are); the variances by
    its square.  Pixels flagged DO_NOT_USE or SATURATED in ``dq``, or
    without finite data and variances, get zero weight.  Weights are, as in
    romancal, ``ivm``: the inverse read-noise variance of each pixel (not the
    total variance, which would weight by the source's own counts and bias
    bright pixels), or ``exptime``: the exposure time.  Drizzle forms the
    weighted mean ``D = sum(a w d) / sum(a w)`` over the input pixels
    overlapping an output pixel (``a`` the overlap area, ``w`` the weight)
    and propagates each variance with squared weights, ``V = sum((a w)^2 v) /
    sum(a w)^2``; a piece keeps the sums ``sum(a w d)``, ``sum(a w)`` and
    ``sum((a w)^2 v)``, so the coadd of the pieces equals drizzling all the
    inputs onto the tile in one go.  ``weight`` is ``sum(a w)``.

Errors and correlated noise
    ``var_poisson``, ``var_rnoise`` and ``err`` are the variance (and its
    root) of each output pixel on its own: ``(data - sky) / err`` has unit
    scatter pixel by pixel.  Neighbouring output pixels share input pixels,
    so their noise is correlated: the variance of a sum over an area much
    larger than an input pixel is ``R**2`` times the sum of the pixels'
    variances, with Casertano et al. (2000, AJ 120, 2747) noise-correlation
    ratio ``R`` (:func:`noise_correlation_ratio`: 2.4 for ``pixfrac`` 1 and
    0.055" pixels from 0.11" ones), recorded in each file.

Outputs
    One ``MosaicModel`` per (tile, filter), ``<tile>_<filter>_coadd.asdf``:
    ``data`` (MJy/sr; NaN where no input contributes), ``err``,
    ``var_poisson``, ``var_rnoise``, ``weight``, ``context`` (planes of 32
    bits; bit ``k`` of plane ``k // 32`` set where input ``k`` of
    ``meta.resample.members`` contributes, as romancal's), a gWCS with its
    bounding box, ``meta.resample`` (pixfrac, weight type, bits excluded,
    members) and ``meta.wcsinfo``; under ``romandask``: the exposure-time
    map ``exposure_time`` (s: the sum of the exposure times of the inputs
    contributing to each pixel), the tile and grid, the noise-correlation
    ratio and, when the inputs carry romandask's truth tables, the truth of
    the sources on the tile: ``id``, ``ra``, ``dec``, ``x``, ``y`` (0-based
    tile pixels), ``flux_jy`` (Jy) and ``flux`` (MJy/sr summed over the
    tile's pixels: what an aperture sum of ``data`` gives for the whole
    source).  Plus a quick-look PNG per filter, ``mosaic_<filter>.png``.
    Every file is written under a temporary name and renamed when whole; the
    same inputs and options give the same bytes whatever the number of
    workers.
"""

from __future__ import annotations

import glob as globmod
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ConfigError, InputError, OutputError, check_writable_directory
from .skytiles import (REGION_HALF_EXTENT, REGION_SIZE, Tile, TileGrid, overlapping_tiles,
                       owned_tiles, region_centre)

#: drizzle's kernels (gaussian and lanczos do not conserve flux).
KERNELS = ("square", "point", "turbo", "gaussian", "lanczos2", "lanczos3")
WEIGHTS = ("ivm", "exptime")
#: Nominal WFI pixel, arcsec.
WFI_PIXEL_SCALE = 0.11
#: DQ flags whose pixels do not contribute.
EXCLUDED_FLAGS = ("DO_NOT_USE", "SATURATED")
#: Input pixels between footprint samples (interior), at most.
SAMPLE_STEP = 64


@dataclass(frozen=True)
class MosaicOptions:
    """How to coadd: the tile grid and drizzle's parameters."""

    pixel_scale: float = 0.055  # arcsec per mosaic pixel
    tile_size: int = 2048  # pixels per tile side
    pixfrac: float = 1.0
    kernel: str = "square"
    weight: str = "ivm"

    def check(self, names: dict[str, str] | None = None) -> MosaicOptions:
        """Raise a one-line ConfigError naming the field (``names`` maps the
        option to its flag or YAML path) for a bad value."""
        name = (names or {}).get
        if not (isinstance(self.pixel_scale, (int, float)) and math.isfinite(self.pixel_scale)
                and self.pixel_scale > 0):
            raise ConfigError(name("pixel_scale", "pixel_scale"), f"is {self.pixel_scale!r}",
                              "give a positive number of arcsec per pixel, e.g. 0.055")
        if self.pixel_scale > 1.0:
            raise ConfigError(name("pixel_scale", "pixel_scale"),
                              f"is {self.pixel_scale!r} arcsec", "give at most 1 arcsec")
        if (not isinstance(self.tile_size, int) or isinstance(self.tile_size, bool)
                or not 16 <= self.tile_size <= 16384):
            raise ConfigError(name("tile_size", "tile_size"), f"is {self.tile_size!r}",
                              "give a whole number of pixels from 16 to 16384")
        if not (isinstance(self.pixfrac, (int, float)) and 0 < self.pixfrac <= 1):
            raise ConfigError(name("pixfrac", "pixfrac"), f"is {self.pixfrac!r}",
                              "give a number in (0, 1]")
        if self.kernel not in KERNELS:
            raise ConfigError(name("kernel", "kernel"), f"unknown kernel {self.kernel!r}",
                              f"use one of {', '.join(KERNELS)}")
        if self.weight not in WEIGHTS:
            raise ConfigError(name("weight", "weight"), f"unknown weight {self.weight!r}",
                              f"use one of {', '.join(WEIGHTS)}")
        return self

    @property
    def grid(self) -> TileGrid:
        return TileGrid(float(self.pixel_scale), int(self.tile_size))


def noise_correlation_ratio(pixfrac: float, scale_ratio: float) -> float:
    """Casertano et al. (2000) ratio R of the noise in large areas to the noise
    computed from the pixels' own errors (standard deviations), for drop size
    ``pixfrac`` (input pixels) and output pixels ``scale_ratio`` input pixels
    on a side: with ``r = pixfrac / scale_ratio``, ``R = r / (1 - 1/(3r))``
    for ``r >= 1`` and ``1 / (1 - r/3)`` otherwise."""
    r = pixfrac / scale_ratio
    return r / (1.0 - 1.0 / (3.0 * r)) if r >= 1.0 else 1.0 / (1.0 - r / 3.0)


# --------------------------------------------------------------------------
# inputs, on the driver
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class L2Input:
    """What the coadd needs of one L2 file (small; the arrays stay in the file)."""

    path: Path
    filter: str
    shape: tuple[int, int]
    exptime: float
    start_time: str  # ISO UTC
    conversion: float  # MJy/sr per unit of data
    pixel_area: float  # sr of the nominal pixel data are per (photometry.pixel_area)
    gain: float | None  # romandask's reference gain (e-/DN), for truth fluxes
    has_truth: bool


def _bad_flags() -> np.uint32:
    from roman_datamodels.dqflags import pixel

    value = 0
    for flag in EXCLUDED_FLAGS:
        value |= int(pixel[flag])
    return np.uint32(value)


def _open(path: Path):
    from .export import open_datamodel

    return open_datamodel(path, "L2 (_cal)")


@dataclass(frozen=True)
class _Loaded:
    wcs: object
    arrays: dict
    truth: dict | None


#: Bytes of inputs a worker keeps read (an input serves several tiles).
CACHE_BYTES = 1 << 30
_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def _load(path: Path) -> _Loaded:
    """An input's gWCS, arrays and truth, read once per worker while its tiles
    are being made (parsing an L2 file's tree costs more than drizzling it);
    the most recently used inputs are kept, up to :data:`CACHE_BYTES`."""
    stat = Path(path).stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    loaded = _read(Path(path))
    size = sum(a.nbytes for a in loaded.arrays.values())
    with _cache_lock:
        _cache[key] = loaded
        while len(_cache) > 1 and sum(sum(a.nbytes for a in v.arrays.values())
                                      for v in _cache.values()) > max(CACHE_BYTES, size):
            _cache.popitem(last=False)
    return loaded


def _read(path: Path) -> _Loaded:
    from .export import TREE_KEY

    with _open(path) as model:
        arrays = {name: np.array(model[name]) for name in ("data", "dq")}
        have = {name: np.array(model[name], np.float32) for name in
                ("err", "var_poisson", "var_rnoise", "var_flat") if name in model}
        total = have["err"].astype(np.float64) ** 2 if "err" in have else None
        # a variance the file leaves out is what its err leaves of the others
        # (romanisim's L2 files carry err and var_poisson only)
        for name, other in (("var_rnoise", "var_poisson"), ("var_poisson", "var_rnoise")):
            if name not in have:
                rest = total - have.get(other, 0.0) - have.get("var_flat", 0.0)
                have[name] = np.maximum(rest, 0.0).astype(np.float32)
        arrays["var_poisson"], arrays["var_rnoise"] = have["var_poisson"], have["var_rnoise"]
        truth = None
        if TREE_KEY in model and model[TREE_KEY].get("truth") is not None:
            truth = {k: np.array(v) for k, v in model[TREE_KEY]["truth"].items()}
        return _Loaded(model.meta.wcs, arrays, truth)


def describe(path: Path, step: int = SAMPLE_STEP
             ) -> tuple[L2Input, tuple[np.ndarray, np.ndarray]]:
    """Check one L2 file and read what the coadd needs, with its footprint
    samples (:func:`footprint_samples`); a one-line InputError for a file
    without a gWCS, photometry, filter or exposure time."""
    from .export import TREE_KEY

    where = str(path)
    with _open(path) as model:
        meta = model.meta
        if type(model).__name__ != "ImageModel":
            raise InputError(where, f"is a {type(model).__name__}, not an L2 ImageModel",
                             "give L2 (_cal) files")
        if getattr(meta, "wcs", None) is None:
            raise InputError(where, "has no meta.wcs (gWCS)",
                             "give L2 files with a WCS (romancal's assign_wcs step, or "
                             "romandask's and romanisim's L2 files)")
        flux_done = str(getattr(getattr(meta, "cal_step", {}), "flux", "")) == "COMPLETE" \
            if "cal_step" in meta else False
        photometry = meta.photometry if "photometry" in meta else None
        conversion = getattr(photometry, "conversion_megajanskys", None) if photometry else None
        area = getattr(photometry, "pixel_area", None) if photometry else None
        if flux_done:
            conversion = 1.0
        elif conversion is not None and area is not None and float(conversion) < 0 \
                and float(area) < 0:
            # romanisim (0.15) writes the pixel area as a signed area, negative for
            # a mirrored (left-handed) pixel grid, and the conversion with it
            conversion, area = -float(conversion), -float(area)
        record = model[TREE_KEY] if TREE_KEY in model else {}
        units = str(record.get("units", "romandask")) if hasattr(record, "get") else "romandask"
        if units != "romandask" and not flux_done:
            raise InputError(where, f"is in {units}'s units (UNITS: {units}), which have no "
                             "one flux scale", "coadd L2 files calibrated with UNITS: romandask")
        if conversion is None or not np.isfinite(float(conversion)) or float(conversion) <= 0:
            raise InputError(where, "has no usable meta.photometry.conversion_megajanskys",
                             "give L2 files calibrated through the photom step (or with data "
                             "in MJy/sr, meta.cal_step.flux COMPLETE)")
        try:
            filt = str(meta.instrument.optical_element)
            exptime = float(meta.exposure.exposure_time)
            start = meta.exposure.start_time
        except (AttributeError, KeyError, TypeError, ValueError):
            raise InputError(where, "lacks meta.instrument.optical_element or "
                             "meta.exposure (exposure_time, start_time)",
                             "give L2 files with complete metadata") from None
        if not exptime > 0:
            raise InputError(where, f"meta.exposure.exposure_time is {exptime}",
                             "give L2 files with a positive exposure time")
        missing = [n for n in ("var_poisson", "var_rnoise") if n not in model]
        if missing and "err" not in model:
            raise InputError(where, f"has neither {missing[0]} nor err",
                             "give L2 files with their variances (or err)")
        shape = tuple(int(n) for n in model.data.shape)
        if len(shape) != 2:
            raise InputError(where, f"data has shape {shape}", "give 2-D L2 images")
        sim = model[TREE_KEY] if TREE_KEY in model else {}
        gain = sim.get("reference_gain") if hasattr(sim, "get") else None
        truth = hasattr(sim, "get") and sim.get("truth") is not None
        start_iso = start.isot if hasattr(start, "isot") else str(start)
        samples = footprint_samples(meta.wcs, shape, step)
        return (L2Input(Path(path), filt, shape, exptime, start_iso, float(conversion),
                        float(area) if area is not None else float("nan"),
                        None if gain is None else float(gain), bool(truth)), samples)


def footprint_samples(wcs, shape: tuple[int, int], step: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) of an image's footprint: every pixel edge of its border and an
    interior grid ``step`` pixels apart."""
    ny, nx = shape
    xs = np.arange(-0.5, nx, 1.0)
    ys = np.arange(-0.5, ny, 1.0)
    border_x = np.concatenate([xs, xs, np.full(ys.size, -0.5), np.full(ys.size, nx - 0.5)])
    border_y = np.concatenate([np.full(xs.size, -0.5), np.full(xs.size, ny - 0.5), ys, ys])
    gx = np.unique(np.append(np.arange(0, nx, step), nx - 1))
    gy = np.unique(np.append(np.arange(0, ny, step), ny - 1))
    ix, iy = np.meshgrid(gx, gy)
    x = np.concatenate([border_x, ix.ravel()]).astype(float)
    y = np.concatenate([border_y, iy.ravel()]).astype(float)
    ra, dec = wcs(x, y, with_bounding_box=False)
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    good = np.isfinite(ra) & np.isfinite(dec)
    return ra[good], dec[good]


@dataclass(frozen=True)
class TileJob:
    """One (tile, filter) to make: its inputs (in context order) and where it goes."""

    tile: Tile
    filter: str
    inputs: tuple[L2Input, ...]
    path: Path
    options: MosaicOptions
    store: str | None = None  # a zarr store whose ``mosaic`` group gets the tile
    index: int = -1  # the tile's place along that group's ``tile`` dimension

    @property
    def name(self) -> str:
        return f"{self.tile.name}_{self.filter}"


def sample_step(options: MosaicOptions) -> int:
    """Input pixels between interior footprint samples: a quarter tile or less."""
    return max(1, min(SAMPLE_STEP, int(options.tile_size * options.pixel_scale
                                       / WFI_PIXEL_SCALE / 4)))


def plan(inputs: Sequence[L2Input], samples: Sequence[tuple[np.ndarray, np.ndarray]],
         options: MosaicOptions, outdir: Path) -> list[TileJob]:
    """The (tile, filter) jobs of the inputs (with their footprint samples), in
    name order."""
    grid = options.grid
    made: set[tuple[Tile, str]] = set()
    for inp, (ra, dec) in zip(inputs, samples):
        made.update((t, inp.filter) for t in owned_tiles(grid, ra, dec))
    regions = sorted({t.region for t, _ in made})
    members: dict[tuple[Tile, str], list[L2Input]] = {key: [] for key in made}
    for inp, (ra, dec) in zip(inputs, samples):
        for t in overlapping_tiles(grid, regions, ra, dec):
            if (t, inp.filter) in members:
                members[t, inp.filter].append(inp)
    jobs = []
    for (tile, filt), mine in sorted(members.items(), key=lambda kv: (kv[0][0].name, kv[0][1])):
        mine = sorted(mine, key=lambda i: i.path.name)
        jobs.append(TileJob(tile, filt, tuple(mine),
                            outdir / f"{tile.name}_{filt}_coadd.asdf", options))
    return jobs


# --------------------------------------------------------------------------
# the tasks
# --------------------------------------------------------------------------

@dataclass
class Piece:
    """One input resampled onto a rectangle of a tile: drizzle's sums there."""

    y0: int
    x0: int
    weight: np.ndarray  # sum(a w), float32
    data: np.ndarray  # sum(a w d), float64
    var_poisson: np.ndarray  # sum((a w)^2 v), float64
    var_rnoise: np.ndarray


def _pixmap(wcs, grid: TileGrid, tile: Tile, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ra, dec = wcs(x, y, with_bounding_box=False)
    tx, ty = grid.tile_pixel(tile, ra, dec)
    return np.dstack([tx, ty])


def resample_piece(inp: L2Input, tile: Tile, options: MosaicOptions) -> Piece | None:
    """Drizzle one input onto the part of ``tile`` it covers (None: no overlap)."""
    from drizzle.resample import Drizzle

    grid = options.grid
    size = grid.tile_size
    ny, nx = inp.shape
    loaded = _load(inp.path)
    wcs = loaded.wcs
    # where the input meets the tile: a coarse grid of its pixels, forward
    step = 16
    gx = np.unique(np.append(np.arange(0, nx, step), nx - 1)).astype(float)
    gy = np.unique(np.append(np.arange(0, ny, step), ny - 1)).astype(float)
    cx, cy = np.meshgrid(gx, gy)
    coarse = _pixmap(wcs, grid, tile, cx, cy)
    reach = 2.0 + step * WFI_PIXEL_SCALE / options.pixel_scale
    inside = ((coarse[..., 0] > -0.5 - reach) & (coarse[..., 0] < size - 0.5 + reach)
              & (coarse[..., 1] > -0.5 - reach) & (coarse[..., 1] < size - 0.5 + reach))
    if not inside.any():
        return None
    iy, ix = np.nonzero(inside)
    xa, xb = max(int(gx[ix.min()]) - step - 2, 0), min(int(gx[ix.max()]) + step + 3, nx)
    ya, yb = max(int(gy[iy.min()]) - step - 2, 0), min(int(gy[iy.max()]) + step + 3, ny)
    py, px = np.mgrid[ya:yb, xa:xb].astype(float)
    pixmap = _pixmap(wcs, grid, tile, px, py)
    cut = (slice(ya, yb), slice(xa, xb))
    data = loaded.arrays["data"][cut].astype(np.float64)
    vp = loaded.arrays["var_poisson"][cut].astype(np.float64)
    vr = loaded.arrays["var_rnoise"][cut].astype(np.float64)
    dq = loaded.arrays["dq"][cut].astype(np.uint32)
    conv = inp.conversion
    good = ((dq & _bad_flags()) == 0) & np.isfinite(data) & np.isfinite(vp) & np.isfinite(vr)
    good &= np.all(np.isfinite(pixmap), axis=-1)
    if options.weight == "ivm":
        good &= vr > 0
        weight = np.where(good, 1.0 / np.where(good, vr, 1.0), 0.0) / conv ** 2
    else:
        weight = np.where(good, inp.exptime, 0.0)
    if not good.any():
        return None
    # the rectangle of the tile the drops can reach; drizzle onto it grown by a
    # margin (drizzle leaves out input pixels whose centres map beyond its
    # output, which would thin the coverage of the tile's edge pixels)
    half = 1.0 + options.pixfrac * WFI_PIXEL_SCALE / options.pixel_scale
    mx, my = pixmap[..., 0][good], pixmap[..., 1][good]
    x0, x1 = max(int(np.floor(mx.min() - half)), 0), min(int(np.ceil(mx.max() + half)) + 1, size)
    y0, y1 = max(int(np.floor(my.min() - half)), 0), min(int(np.ceil(my.max() + half)) + 1, size)
    if x0 >= x1 or y0 >= y1:
        return None
    pad = int(math.ceil(2 * half)) + 2
    pixmap = pixmap - np.array([x0 - pad, y0 - pad], float)
    # output pixels per input pixel, at the centre of the cut-out
    jac = _local_scale(pixmap)
    zero = np.zeros_like(data)
    driz = Drizzle(kernel=options.kernel, fillval=0.0,
                   out_shape=(y1 - y0 + 2 * pad, x1 - x0 + 2 * pad), disable_ctx=True)
    driz.add_image(np.where(good, data * conv, zero).astype(np.float32), exptime=inp.exptime,
                   pixmap=pixmap,
                   data2=[np.where(good, vp * conv ** 2, zero).astype(np.float32),
                          np.where(good, vr * conv ** 2, zero).astype(np.float32)],
                   weight_map=weight.astype(np.float32), pixfrac=options.pixfrac,
                   in_units="cps", iscale=1.0, pixel_scale_ratio=1.0 / jac)
    cut = (slice(pad, pad + y1 - y0), slice(pad, pad + x1 - x0))
    wht = driz.out_wht[cut]
    w = wht.astype(np.float64)
    if not (w > 0).any():
        return None
    covered = w > 0
    img, img2 = driz.out_img[cut], [a[cut] for a in driz.out_img2]
    return Piece(y0, x0, wht.astype(np.float32),
                 np.where(covered, img * w, 0.0),
                 np.where(covered, img2[0] * w * w, 0.0),
                 np.where(covered, img2[1] * w * w, 0.0))


def _local_scale(pixmap: np.ndarray) -> float:
    """Output pixels per input pixel (linear) at the middle of a pixel map."""
    ny, nx = pixmap.shape[:2]
    j, i = ny // 2, nx // 2
    j1, i1 = min(j + 1, ny - 1), min(i + 1, nx - 1)
    if j1 == j or i1 == i:
        return WFI_PIXEL_SCALE / 0.055
    dx = (pixmap[j, i1] - pixmap[j, i]) / (i1 - i)
    dy = (pixmap[j1, i] - pixmap[j, i]) / (j1 - j)
    det = abs(dx[0] * dy[1] - dx[1] * dy[0])
    return math.sqrt(det) if np.isfinite(det) and det > 0 else WFI_PIXEL_SCALE / 0.055


@dataclass
class TileResult:
    """What the driver gets back of a written tile: its path and a preview."""

    name: str
    filter: str
    tile: Tile
    path: Path | None
    preview: np.ndarray | None = None
    ninputs: int = 0
    extra: dict = field(default_factory=dict)


def coadd_tile(job: TileJob, pieces: Sequence[Piece | None]) -> TileResult:
    """Coadd the pieces of one (tile, filter), in input order, and write its file."""
    size = job.options.tile_size
    n = len(job.inputs)
    weight = np.zeros((size, size))
    total = np.zeros((size, size))
    vp = np.zeros((size, size))
    vr = np.zeros((size, size))
    exptime = np.zeros((size, size))
    context = np.zeros((max(1, (n + 31) // 32), size, size), np.uint32)
    used = []
    for k, (inp, piece) in enumerate(zip(job.inputs, pieces)):
        if piece is None:
            continue
        h, w = piece.weight.shape
        sl = (slice(piece.y0, piece.y0 + h), slice(piece.x0, piece.x0 + w))
        covered = piece.weight > 0
        weight[sl] += piece.weight
        total[sl] += piece.data
        vp[sl] += piece.var_poisson
        vr[sl] += piece.var_rnoise
        exptime[sl] += np.where(covered, inp.exptime, 0.0)
        context[k // 32][sl] |= (covered.astype(np.uint32) << np.uint32(k % 32))
        used.append(inp)
    if not used:
        return TileResult(job.tile.name, job.filter, job.tile, None)
    covered = weight > 0
    safe = np.where(covered, weight, 1.0)
    nan = np.float64("nan")
    arrays = {
        "data": np.where(covered, total / safe, nan).astype(np.float32),
        "var_poisson": np.where(covered, vp / safe ** 2, nan).astype(np.float32),
        "var_rnoise": np.where(covered, vr / safe ** 2, nan).astype(np.float32),
        "weight": weight.astype(np.float32),
        "context": context,
    }
    arrays["err"] = np.sqrt(arrays["var_poisson"].astype(np.float64)
                            + arrays["var_rnoise"]).astype(np.float32)
    model = mosaic_model(job, arrays, exptime.astype(np.float32), used)
    from .export import write_asdf

    job.path.parent.mkdir(parents=True, exist_ok=True)
    write_asdf(model, job.path)
    if job.store is not None:
        write_store_tile(job, {**arrays, "exposure_time": exptime.astype(np.float32)})
    return TileResult(job.tile.name, job.filter, job.tile, job.path,
                      _preview(arrays["data"], size), len(used))


def _preview(data: np.ndarray, size: int, target: int = 256) -> np.ndarray:
    f = max(1, size // target)
    m = size // f * f
    return _block_mean(data[:m, :m], f)


def _block_mean(array: np.ndarray, f: int) -> np.ndarray:
    """Mean of the finite values of each f x f block (NaN where none is)."""
    n, m = array.shape[0] // f, array.shape[1] // f
    block = array[:n * f, :m * f].reshape(n, f, m, f)
    finite = np.isfinite(block)
    count = finite.sum(axis=(1, 3))
    total = np.where(finite, block, 0.0).sum(axis=(1, 3), dtype=np.float64)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


# --------------------------------------------------------------------------
# the L3 model
# --------------------------------------------------------------------------

def tile_truth(job: TileJob, inputs: Sequence[L2Input]) -> dict[str, np.ndarray] | None:
    """Truth of the sources on the tile, from the inputs' romandask truth tables.

    Each source's flux in electrons over an input's exposure becomes Jy through
    that input's photometry (``flux / exptime / gain`` DN/s, times
    ``conversion_megajanskys`` and the nominal pixel area); the first input
    (in context order) that holds a source gives its row.
    """
    grid = job.options.grid
    rows: dict[int, tuple] = {}
    for inp in inputs:
        if not inp.has_truth or inp.gain is None or not np.isfinite(inp.pixel_area):
            continue
        truth = _load(inp.path).truth
        ids = np.asarray(truth["id"])
        ra, dec = np.asarray(truth["ra"], float), np.asarray(truth["dec"], float)
        flux = np.asarray(truth["flux"], float)
        kind = np.asarray(truth["type"]).astype(str) if "type" in truth else \
            np.full(ids.size, "")
        jy = flux / inp.exptime / inp.gain * inp.conversion * inp.pixel_area * 1e6
        for k in range(ids.size):
            rows.setdefault(int(ids[k]), (ra[k], dec[k], jy[k], kind[k]))
    if not rows:
        return None
    ids = np.array(sorted(rows), np.int64)
    ra = np.array([rows[i][0] for i in ids])
    dec = np.array([rows[i][1] for i in ids])
    x, y = grid.tile_pixel(job.tile, ra, dec)
    size = grid.tile_size
    on = (x >= -0.5) & (x < size - 0.5) & (y >= -0.5) & (y < size - 0.5)
    # solid angle of a TAN pixel at angle theta from the tangent point: s^2 cos^3(theta)
    from .skytiles import gnomonic

    ra0, dec0 = region_centre(job.tile.ring, job.tile.cell)
    xi, eta, _ = gnomonic(ra[on], dec[on], ra0, dec0)
    cos_theta = 1.0 / np.sqrt(1.0 + np.radians(xi) ** 2 + np.radians(eta) ** 2)
    omega = (math.radians(grid.scale_deg)) ** 2 * cos_theta ** 3
    jy = np.array([rows[i][2] for i in ids])[on]
    return {"id": ids[on], "ra": ra[on], "dec": dec[on], "x": x[on], "y": y[on],
            "flux_jy": jy, "flux": jy * 1e-6 / omega,
            "type": np.array([rows[i][3] for i in ids], dtype=str)[on]}


def _s_region(grid: TileGrid, tile: Tile) -> str:
    e = grid.tile_size - 0.5
    ra, dec = grid.pixel_to_sky(tile, np.array([-0.5, e, e, -0.5]), np.array([-0.5, -0.5, e, e]))
    return "POLYGON ICRS " + " ".join(f"{a:.9f} {d:.9f}" for a, d in zip(ra, dec))


def mosaic_model(job: TileJob, arrays: dict, exptime: np.ndarray,
                 used: Sequence[L2Input]):
    """The ``MosaicModel`` of one (tile, filter) (validated when written)."""
    from astropy.time import Time
    from roman_datamodels import datamodels as rdm

    from . import __version__
    from .export import TREE_KEY

    opts, tile = job.options, job.tile
    grid = opts.grid
    size = grid.tile_size
    times = Time(sorted(i.start_time for i in job.inputs), format="isot", scale="utc")
    ra_c, dec_c = (float(v[0]) for v in grid.tile_centre(tile))
    ra0, dec0 = region_centre(tile.ring, tile.cell)
    cx, cy = grid.crpix(tile)
    covered = arrays["weight"] > 0
    good = arrays["data"][covered]
    median = float(np.median(good))
    rms = float(1.4826 * np.median(np.abs(good - median)))
    bad_bits = "~" + "+".join(EXCLUDED_FLAGS)
    meta = {
        "filename": job.path.name,
        "file_date": times[-1],
        "product_type": "l3",
        "instrument": {"name": "WFI", "optical_element": job.filter},
        "coadd_info": {"time_first": times[0], "time_last": times[-1],
                       "time_mean": Time(times.mjd.mean(), format="mjd", scale="utc"),
                       "exposure_time": float(exptime.max())},
        "resample": {"good_bits": bad_bits,
                     "pixel_scale_ratio": float(opts.pixel_scale / WFI_PIXEL_SCALE),
                     "pixfrac": float(opts.pixfrac),
                     "pointings": len(used),
                     "members": [i.path.name for i in job.inputs],
                     "weight_type": opts.weight},
        "wcsinfo": {"ra_ref": float(ra0), "dec_ref": float(dec0),
                    "x_ref": float(cx - 1.0), "y_ref": float(cy - 1.0),
                    "pixel_scale_ref": grid.scale_deg, "pixel_scale": grid.scale_deg,
                    "projection": "TAN", "s_region": _s_region(grid, tile),
                    "image_shape": [size, size], "ra": ra_c, "dec": dec_c,
                    "orientation": 0.0, "orientation_ref": 0.0,
                    "skycell_name": tile.name,
                    "rotation_matrix": [[1.0, 0.0], [0.0, 1.0]]},
        "cal_step": {"flux": "COMPLETE", "outlier_detection": "INCOMPLETE",
                     "skymatch": "INCOMPLETE", "resample": "COMPLETE"},
        "statistics": {"image_median": median, "image_rms": rms,
                       "good_pixel_fraction": float(covered.mean())},
        "association": {"name": job.name},
    }
    model = rdm.MosaicModel.create_fake_data({"meta": meta}, shape=(1, 1))
    model.meta.wcs = grid.wcs(tile)
    model.meta.calibration_software_name = "romandask"
    model.meta.calibration_software_version = __version__
    for name in ("data", "err", "var_poisson", "var_rnoise", "weight"):
        model[name] = arrays[name]
    model.context = arrays["context"]
    for name in ("var_flat", "var_sky"):
        if name in model:
            del model[name]
    sim = {
        "version": __version__,
        "tile": tile.name,
        "grid": {"pixel_scale_arcsec": float(opts.pixel_scale), "tile_size": int(size),
                 "region_size_deg": REGION_SIZE, "region_half_extent_deg": REGION_HALF_EXTENT,
                 "ring": tile.ring, "cell": tile.cell, "tx": tile.tx, "ty": tile.ty},
        "kernel": opts.kernel,
        "exposure_time": exptime,
        "noise_correlation_ratio": noise_correlation_ratio(
            opts.pixfrac, opts.pixel_scale / WFI_PIXEL_SCALE),
        "pixel_convention": "x, y: 0-based tile pixels, centres at integers; "
                            "data[y, x]",
    }
    truth = tile_truth(job, used)
    if truth is not None:
        from .export import truth_tree

        sim["truth"] = truth_tree(truth)
        sim["truth_units"] = {"ra": "deg", "dec": "deg", "x": "pixel", "y": "pixel",
                              "flux_jy": "Jy", "flux": "MJy/sr summed over tile pixels"}
    model[TREE_KEY] = sim
    return model  # asdf validates it against RAD's schema as it writes it


# --------------------------------------------------------------------------
# quick look
# --------------------------------------------------------------------------

def plot_mosaic(results: Sequence[TileResult], grid: TileGrid, filt: str, path: Path) -> None:
    """One PNG of a filter's tiles: per projection region, the tiles' previews
    pasted at their places on the region's grid (north up, east left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    mine = [r for r in results if r.filter == filt and r.preview is not None]
    regions = sorted({r.tile.region for r in mine})
    values = np.concatenate([r.preview[np.isfinite(r.preview)].ravel() for r in mine])
    lo, hi = (np.percentile(values, [1, 99.5]) if values.size else (0.0, 1.0))
    fig, axes = plt.subplots(1, len(regions), figsize=(7.5 * len(regions), 7), dpi=110,
                             squeeze=False)
    for ax, region in zip(axes[0], regions):
        here = [r for r in mine if r.tile.region == region]
        tx0 = min(r.tile.tx for r in here)
        ty0 = min(r.tile.ty for r in here)
        nx = max(r.tile.tx for r in here) - tx0 + 1
        ny = max(r.tile.ty for r in here) - ty0 + 1
        # at most ~1200 canvas pixels a side (drawing a larger one is slow)
        side = here[0].preview.shape[0]
        factor = max(1, math.ceil(max(nx, ny) * side / 1200))
        while side % factor:
            factor += 1
        side //= factor
        canvas = np.full((ny * side, nx * side), np.nan, np.float32)
        for r in here:
            j, i = (r.tile.ty - ty0) * side, (r.tile.tx - tx0) * side
            canvas[j:j + side, i:i + side] = _block_mean(r.preview, factor)
        step = grid.tile_size / side
        extent = (tx0 * grid.tile_size - 0.5, (tx0 + nx) * grid.tile_size - 0.5,
                  ty0 * grid.tile_size - 0.5, (ty0 + ny) * grid.tile_size - 0.5)
        im = ax.imshow(canvas, origin="lower", cmap="gray", vmin=lo, vmax=hi, extent=extent,
                       interpolation="nearest")
        ra0, dec0 = region_centre(*region)
        ax.set_title(f"region r{region[0]:03d}c{region[1]:03d} (tangent point "
                     f"{ra0:.3f}, {dec0:.3f}): {len(here)} tiles", fontsize=9)
        ax.set_xlabel(f"region pixel x (east to the left; {step:g} px per preview px)")
        ax.set_ylabel("region pixel y (north up)")
        ax.xaxis.set_major_locator(MaxNLocator(5))   # pixel numbers of 5 digits stay apart
        fig.colorbar(im, ax=ax, shrink=0.8, label="MJy/sr")
    fig.suptitle(f"romandask mosaic {filt}: {len(mine)} tiles of {grid.tile_size}$^2$ pixels "
                 f"of {grid.pixel_scale:g}\"", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".partial")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------

def find_inputs(inputs) -> list[Path]:
    """The L2 files named by paths or globs (sorted, without repeats)."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise InputError("L2", "no input file given", "give L2 files or a quoted glob")
    paths: list[Path] = []
    for item in items:
        text = str(item)
        found = (sorted(Path(p) for p in globmod.glob(text)) if globmod.has_magic(text)
                 else [Path(text)] if Path(text).exists() else [])
        if not found:
            raise InputError(text, "matches no file", "check the path or the quoted glob")
        paths.extend(found)
    return sorted(dict.fromkeys(p.resolve() for p in paths))


def output_names(jobs: Sequence[TileJob]) -> list[Path]:
    """The files a run of ``jobs`` writes (tiles and one PNG per filter)."""
    outdir = jobs[0].path.parent if jobs else None
    pngs = [outdir / f"mosaic_{f}.png" for f in sorted({j.filter for j in jobs})]
    return [j.path for j in jobs] + pngs


def build(jobs: Sequence[TileJob]):
    """The Dask graph: one resampling task per (input, tile), one coadd per tile."""
    from dask import delayed

    results = []
    for job in jobs:
        pieces = [delayed(resample_piece, pure=True)(inp, job.tile, job.options)
                  for inp in job.inputs]
        results.append(delayed(coadd_tile, pure=True)(job, pieces))
    return results


def run_jobs(jobs: Sequence[TileJob], client, progress: bool,
             say: Callable[[str], None]) -> list[TileResult]:
    """Compute the jobs on ``client`` (None: the current scheduler), then the PNGs."""
    from .cluster import compute

    t0 = time.perf_counter()
    npieces = sum(len(j.inputs) for j in jobs)
    say(f"mosaic: {npieces} (input, tile) resamplings onto {len(jobs)} (tile, filter) coadds")
    results = compute(build(jobs), client, progress, "tiles") if jobs else []
    written = [r for r in results if r.path is not None]
    if jobs:
        grid = jobs[0].options.grid
        outdir = jobs[0].path.parent
        for filt in sorted({r.filter for r in written}):
            plot_mosaic(written, grid, filt, outdir / f"mosaic_{filt}.png")
    say(f"mosaic: wrote {len(written)} tile file(s) in "
        f"{jobs[0].path.parent if jobs else '-'} [{time.perf_counter() - t0:.1f} s]")
    return written


def prepare(inputs, output, options: MosaicOptions, overwrite: bool,
            names: dict[str, str] | None = None) -> list[TileJob]:
    """Check everything (options, inputs, output) and plan the jobs; writes nothing."""
    options.check(names)
    outdir = Path(output)
    check_writable_directory(outdir, f"output directory {outdir}")
    paths = find_inputs(inputs)
    described = [describe(p, sample_step(options)) for p in paths]
    jobs = plan([d[0] for d in described], [d[1] for d in described], options, outdir)
    if not overwrite:
        for path in output_names(jobs):
            if path.exists():
                raise OutputError(str(path), "already exists",
                                  "choose another output directory, or --overwrite")
    return jobs


def mosaic(inputs, output, *, pixel_scale: float = 0.055, tile_size: int = 2048,
           pixfrac: float = 1.0, kernel: str = "square", weight: str = "ivm",
           workers: int = 2, scheduler: str | None = None, overwrite: bool = False,
           progress: bool = True, cluster=None,
           say: Callable[[str], None] = lambda s: None) -> list[Path]:
    """Coadd L2 files (paths or globs) onto sky tiles in ``output`` (a directory).

    Returns the tile files written.  Every input and the output directory are
    checked before anything is written (one-line errors); see the module
    docstring for what is written.  ``cluster`` (a
    :class:`~romandask.config.ClusterConfig`) overrides ``workers`` and
    ``scheduler``.
    """
    from .cluster import dask_client
    from .config import ClusterConfig

    options = MosaicOptions(pixel_scale, tile_size, pixfrac, kernel, weight)
    if cluster is None:
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError("--workers", f"is {workers!r}", "give at least 1")
        cluster = (ClusterConfig(type="address", address=scheduler, progress=progress)
                   if scheduler else ClusterConfig(n_workers=workers, progress=progress))
    jobs = prepare(inputs, output, options, overwrite,
                   {"pixel_scale": "--pixel-scale", "tile_size": "--tile-size",
                    "pixfrac": "--pixfrac", "kernel": "--kernel", "weight": "--weight"})
    Path(output).mkdir(parents=True, exist_ok=True)
    with dask_client(cluster, say) as client:
        written = run_jobs(jobs, client, cluster.progress, say)
    return [r.path for r in written]


#: The arrays of the store's ``mosaic`` group (float32, NaN where no data): units.
STORE_ARRAYS = {"data": "MJy/sr", "err": "MJy/sr", "var_poisson": "MJy2/sr2",
                "var_rnoise": "MJy2/sr2", "weight": "", "exposure_time": "s"}
#: Their long names.
STORE_LONG_NAMES = {"data": "surface brightness (L3)", "err": "total error",
                    "var_poisson": "Poisson variance", "var_rnoise": "read-noise variance",
                    "weight": "drizzle weight (sum of area times input weight)",
                    "exposure_time": "sum of the contributing inputs' exposure times"}


def create_store_group(jobs: Sequence[TileJob], store_path: Path) -> list[TileJob]:
    """The skeleton of the store's ``mosaic`` group, and the jobs that fill it.

    Layout: dims (tile, y, x), one entry along ``tile`` per (tile, filter) in
    the jobs' (name) order, chunks of one tile; arrays ``data``, ``err``,
    ``var_poisson``, ``var_rnoise`` (MJy/sr and its square), ``weight`` and
    ``exposure_time`` (s), NaN where nothing contributes; coordinates
    ``tile_name``, ``filter``, ``ring``, ``cell``, ``tx``, ``ty`` (along
    ``tile``, chunked one tile each as the arrays are, sharded) and ``y``,
    ``x`` (0-based tile pixels), each with ``long_name`` and ``units``.
    """
    import dask.array as da
    import xarray as xr

    from .store import pixel_coords, write_group

    if not jobs:
        return list(jobs)
    size = jobs[0].options.tile_size
    shape, chunks = (len(jobs), size, size), (1, size, size)
    variables = {name: (("tile", "y", "x"),
                        da.full(shape, np.nan, dtype=np.float32, chunks=chunks),
                        {"long_name": STORE_LONG_NAMES[name], **({"units": unit} if unit else {})})
                 for name, unit in STORE_ARRAYS.items()}
    grid = jobs[0].options.grid

    def along_tile(values, dtype, long_name: str):
        return xr.Variable("tile", np.array(values, dtype=dtype),
                           {"long_name": long_name, "units": "1"})

    text = np.dtypes.StringDType()
    coords = {
        "tile_name": along_tile([j.tile.name for j in jobs], text,
                                "sky tile name (romandask.skytiles)"),
        "filter": along_tile([j.filter for j in jobs], text, "optical element (filter)"),
        "ring": along_tile([j.tile.ring for j in jobs], np.int32,
                           "declination ring of the tile's projection region"),
        "cell": along_tile([j.tile.cell for j in jobs], np.int32,
                           "cell of the ring (the tile's projection region)"),
        "tx": along_tile([j.tile.tx for j in jobs], np.int32,
                         "tile column in its region's grid"),
        "ty": along_tile([j.tile.ty for j in jobs], np.int32, "tile row in its region's grid"),
        **pixel_coords(size, size, "tile"),
    }
    attrs = {"pixel_scale_arcsec": grid.pixel_scale, "tile_size": size,
             "layout": "one (tile, filter) per entry along tile; see romandask.skytiles"}
    write_group(xr.Dataset(variables, coords=coords, attrs=attrs), store_path, "mosaic",
                compute=False)
    from dataclasses import replace

    return [replace(j, store=str(store_path), index=k) for k, j in enumerate(jobs)]


def write_store_tile(job: TileJob, arrays: dict) -> None:
    """Write one (tile, filter) into its place in the store's ``mosaic`` group."""
    import zarr

    for name in STORE_ARRAYS:
        zarr.open_array(f"{job.store}/mosaic/{name}", mode="r+")[job.index] = \
            np.asarray(arrays[name], np.float32)


def survey_mosaic(config, l2_files: Sequence[Path], outdir: Path, client,
                  say: Callable[[str], None], store_path: Path | None = None) -> list[Path]:
    """The ``mosaic`` product of ``romandask run``: the run's L2 files coadded
    with the config's ``mosaic`` section, on the run's cluster, and written into
    the ``mosaic`` group of the (unfinished) store at ``store_path`` too."""
    jobs = prepare([str(p) for p in l2_files], outdir, config.mosaic.options(), True,
                   {k: f"mosaic.{k}" for k in ("pixel_scale", "tile_size", "pixfrac",
                                                "kernel", "weight")})
    outdir.mkdir(parents=True, exist_ok=True)
    if store_path is not None and store_path.exists():
        import shutil

        shutil.rmtree(store_path / "mosaic", ignore_errors=True)  # a resumed run's
        jobs = create_store_group(jobs, store_path)
    return [r.path for r in run_jobs(jobs, client, config.cluster.progress, say)]


def clear_outputs(directory: Path) -> None:
    """Remove an earlier run's tiles, quick looks and temporary files from ``directory``."""
    if directory.is_dir():
        for pattern in ("*_coadd.asdf", "mosaic_*.png", "*.partial"):
            for stale in directory.glob(pattern):
                stale.unlink()


class _CallableModule(__import__("types").ModuleType):
    def __call__(self, *args, **kwargs):
        return mosaic(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule

"""Calibrate one block of an (exposure, SCA): raw resultants in, L2 rates out.

A block is a rectangle of the frame (the window plus its reference border)
with a halo of :data:`HALO` pixels: two for the second-order IPC inversion,
two more for the local rate that sets the Poisson variance.  Its result
depends only on the pixels, never on where the block boundaries fall, so any
tiling gives the same L2 bit for bit.

Poisson variance
    The noise of a ramp depends on its true rate, and a pixel's own fitted
    slope is correlated with its own noise: weighting by it makes pixels that
    fluctuate up look noisier, which biases the pulls (by about -0.05 sigma
    at sky levels).  The Poisson variance is therefore the fitter's variance
    per unit rate times the mean slope of the 24 neighbours (a 5 x 5 box
    without its centre), unless the pixel differs from that mean by more than
    3 sigma (a star, a hot pixel), where its own slope is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from roman_datamodels.dqflags import group as groupflags
from roman_datamodels.dqflags import pixel as pixelflags

from ..config import DEFAULT_FITTER, FITTERS
from ..detector.l1 import extended_region, grown_rectangle, science_mask
from ..detector.reference import NBORDER, NCHAN, channel_of, frame_index
from ..instrument.matables import MATable
from . import steps
from .fixed_fit import (JumpThresholds, RampOptimization, RampTimes, fit_fixed,
                        poisson_coefficient)

__all__ = ["FITTERS", "HALO", "CalOptions", "OUTPUTS", "UNITS", "calibrate_block",
           "calibrate_frame", "effective_read_noise", "exposure_reference", "fit_ramp",
           "reference_noise", "science_part"]

#: Pixels of halo a block needs on each side.
HALO = 4
#: The L2 arrays, in the order :func:`calibrate_block` stacks them.
OUTPUTS = ("data", "err", "var_poisson", "var_rnoise", "dq")

_DO_NOT_USE = np.uint32(pixelflags.DO_NOT_USE)
_EXCLUDE_IN = np.uint8(groupflags.DO_NOT_USE | groupflags.AD_FLOOR)


#: Units of the L2 data: romandask's (DN/s at the SCA's reference gain, flat-fielded,
#: per nominal pixel area), or romanimpreprocess gen_cal_image's (README, Calibration).
UNITS = ("romandask", "gen_cal_image")


@dataclass(frozen=True)
class CalOptions:
    """How to calibrate: the ramp fitter and its jump-detection settings.

    ``exclude_first`` leaves the first resultant out of the fit (it is
    flagged DO_NOT_USE, as gen_cal_image's ``EXCLUDE_FIRST``);
    ``saturation_backup`` backs the SATURATED flags up that many resultants
    (:func:`steps.back_up_saturation`); ``rejection_threshold`` is the
    likely fit's jump threshold in sigma (None: stcal's default); ``units``
    one of :data:`UNITS`; ``sliceout`` adds the ``endslice`` plane (the last
    resultant before saturation).
    """

    fitter: str = DEFAULT_FITTER
    jump: JumpThresholds = field(default_factory=JumpThresholds)
    optimization: RampOptimization = field(default_factory=RampOptimization)
    use_jump: bool = True
    exclude_first: bool = False
    saturation_backup: int = 0
    rejection_threshold: float | None = None
    units: str = "romandask"
    sliceout: bool = False

    def __post_init__(self):
        if self.fitter not in FITTERS:
            raise ValueError(f"fitter must be one of {', '.join(FITTERS)}, got {self.fitter!r}")
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {', '.join(UNITS)}, got {self.units!r}")
        if self.saturation_backup < 0:
            raise ValueError(f"saturation_backup must be >= 0, got {self.saturation_backup}")

    @property
    def outputs(self) -> tuple[str, ...]:
        """The planes :func:`calibrate_block` returns."""
        return OUTPUTS + (("endslice",) if self.sliceout else ())


def effective_read_noise(model, read_noise: np.ndarray) -> np.ndarray:
    """Read noise of one read (DN) after reference-pixel correction.

    The white read noise, plus what the correction leaves of the correlated
    noise, each independent from read to read: a channel's own 1/f noise
    (``U_PINK``), and the amp33 output's own 1/f and white noise, which the
    row correction carries into every pixel (or the whole common noise
    ``C_PINK`` where there is no amp33 to remove it).
    """
    extra = model.u_pink ** 2
    if model.m_pink:
        amp33_white = float(np.mean(model.amp33_std(slice(0, model.frame_shape[0])) ** 2))
        extra += (model.ru_pink ** 2 + amp33_white / 128.0) / model.m_pink ** 2
    else:
        extra += model.c_pink ** 2
    return np.sqrt(read_noise.astype(np.float64) ** 2 + extra)


def exposure_reference(model, ma_table: MATable, data_ref_rows: np.ndarray,
                       amp33: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The reference-pixel correction of one exposure (see :func:`steps.reference_offsets`).

    ``data_ref_rows`` (nres, 8, nframe): the frame's first and last four rows.
    A file whose reference pixels (or amp33 output) are all zero, as
    romanisim writes them, has nothing to correct from them.
    """
    n = model.frame_shape[0]
    if amp33 is not None and not amp33.any():
        amp33 = None  # no reference output recorded (romanisim writes zeros)
    if not data_ref_rows.any():
        # no reference pixels recorded: nothing to correct
        nres = data_ref_rows.shape[0]
        return np.zeros((nres, n), np.float32), np.zeros((nres, NCHAN, n), np.float32)
    rows = np.r_[0:NBORDER, n - NBORDER:n]
    top = model.region(slice(0, NBORDER), slice(0, n))
    bottom = model.region(slice(n - NBORDER, n), slice(0, n))
    level = np.concatenate([top.sref, bottom.sref])
    channels = channel_of(frame_index(model.window))
    amp33_level = model.amp33_med(slice(0, n)) if amp33 is not None else None
    noise = reference_noise(model, amp33 is not None,
                            np.concatenate([top.read_noise, bottom.read_noise]))
    weights = steps.channel_weights(n, rows, *noise)
    return steps.reference_offsets(data_ref_rows, level, channels, rows, amp33,
                                   amp33_level, model.m_pink, weights)


def reference_noise(model, with_amp33: bool, ref_read_noise: np.ndarray) -> tuple[float, float]:
    """Variances per read of what a channel's reference rows share with its pixels.

    Returns the 1/f part (the channel's own ``U_PINK``, and what the row
    correction leaves of the common noise: the amp33 output's own 1/f noise,
    or all of ``C_PINK`` where there is no amp33 to remove it), and the
    white noise of the mean of four reference rows of one channel.
    """
    pink = model.u_pink ** 2
    white = float(np.mean(ref_read_noise.astype(np.float64) ** 2)) / (NBORDER * 128)
    if with_amp33 and model.m_pink:
        pink += model.ru_pink ** 2 / model.m_pink ** 2
        amp33_white = float(np.mean(model.amp33_std(slice(0, model.frame_shape[0])) ** 2))
        white += amp33_white / 128.0 / NBORDER / model.m_pink ** 2
    else:
        pink += model.c_pink ** 2
    return pink, white


def fit_ramp(options: CalOptions, resultants, groupdq, read_noise, gain, ma_table: MATable,
         times: RampTimes) -> dict[str, np.ndarray]:
    """Ramp fit in electrons: slope, var_rnoise, poisson_coeff (variance per unit rate), dq."""
    if options.fitter == "fixed":
        return fit_fixed(resultants, groupdq, read_noise, gain, times, options.jump,
                         options.optimization, options.use_jump)
    from . import stcal_fitters

    args = (resultants.astype(np.float32), groupdq, read_noise.astype(np.float32),
            [list(r) for r in ma_table.read_pattern], ma_table.frame_time)
    if options.fitter == "ols_cas22":
        res = stcal_fitters.fit_ols_cas22(*args, use_jump=options.use_jump)
    else:
        res = stcal_fitters.fit_likely(*args, use_jump=options.use_jump,
                                       rejection_threshold=options.rejection_threshold)
    slope = res.slope.astype(np.float64)
    # the fitters give the Poisson variance at their own slope; recover the
    # variance per unit rate, or use the fixed-weight one where it cannot be
    with np.errstate(divide="ignore", invalid="ignore"):
        coeff = np.where((slope > 0) & (res.var_poisson > 0), res.var_poisson / slope, np.nan)
    fallback = poisson_coefficient(times, options.optimization)
    coeff = np.where(np.isfinite(coeff) | np.isnan(slope), coeff, fallback)
    return {"slope": slope, "var_rnoise": res.var_rnoise.astype(np.float64),
            "poisson_coeff": coeff, "dq": res.dq.astype(np.uint32)}


def _local_rate(slope: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Mean slope of each interior pixel's 24 neighbours (a 5 x 5 box without its centre)."""
    s = np.where(usable, slope, 0.0)
    w = usable.astype(np.float64)
    H, W = s.shape
    total = np.zeros((H - 4, W - 4))
    count = np.zeros((H - 4, W - 4))
    for dy in range(5):
        for dx in range(5):
            if dy == 2 and dx == 2:
                continue
            total += s[dy:H - 4 + dy, dx:W - 4 + dx]
            count += w[dy:H - 4 + dy, dx:W - 4 + dx]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def calibrate_block(data: np.ndarray, rows: tuple[int, int], cols: tuple[int, int],
                    model, ma_table: MATable, common: np.ndarray, channel: np.ndarray,
                    options: CalOptions, groupdq: np.ndarray | None = None,
                    area: np.ndarray | None = None) -> np.ndarray:
    """L2 arrays of the frame rectangle ``rows`` x ``cols``.

    Parameters
    ----------
    data : ndarray (nres, ny + 2 HALO, nx + 2 HALO)
        Raw resultants (DN) of the rectangle grown by :data:`HALO` pixels;
        anything beyond the frame is ignored.
    rows, cols : (start, stop)
        The rectangle, in frame coordinates.
    model : DetectorModel
        The SCA's reference data.
    common, channel : ndarray
        The exposure's reference-pixel correction (:func:`exposure_reference`).
    groupdq : ndarray, optional
        Input group flags on the grown rectangle: DO_NOT_USE and AD_FLOOR
        resultants are not fitted.
    area : ndarray (ny, nx), optional
        Pixel areas relative to the nominal (0.11 arcsec)^2; 1 if not given.

    Returns
    -------
    float64 (n, ny, nx): ``options.outputs`` (:data:`OUTPUTS`, then
    ``endslice`` if asked), data in ``options.units`` (romandask's: DN/s at
    the reference gain; NaN where there is no rate, and on reference
    pixels), dq and endslice as exact integers.
    """
    nres = ma_table.nresultants
    h = HALO
    ext_rows, ext_cols = (rows[0] - h, rows[1] + h), (cols[0] - h, cols[1] + h)
    frame = model.frame_shape[0]
    region = extended_region(model, rows, cols, h)
    science = science_mask(ext_rows, ext_cols, frame)
    raw = data[:nres].astype(np.float64)
    H, W = science.shape
    if raw.shape[1:] != (H, W):
        raise ValueError(f"block data are {raw.shape[1:]}, expected {(H, W)} with the halo")

    # 1. data quality
    pixeldq = region.mask | region.lin_dq
    gdq = np.zeros(raw.shape, np.uint8)
    if groupdq is not None:
        gdq |= np.where(groupdq[:nres] & _EXCLUDE_IN, np.uint8(groupflags.DO_NOT_USE), 0)

    # 2. saturation (on the raw data less the bias correction)
    (rs, cs), pad = grown_rectangle(rows, cols, h, frame)
    bias = np.pad(model.biascorr(rs, cs, ma_table), ((0, 0),) + pad)
    reads = np.array([len(r) for r in ma_table.read_pattern], np.float64)
    noise = effective_read_noise(model, region.read_noise)
    margin = 5.0 * np.sqrt(noise ** 2 / reads.min() + model.c_pink ** 2)
    gdq |= steps.flag_saturation(raw - bias, region.saturation.astype(np.float64),
                                 region.sref.astype(np.float64), ma_table, margin)
    if options.saturation_backup:
        steps.back_up_saturation(gdq, ma_table.read_pattern, options.saturation_backup)
    if options.exclude_first:
        gdq[0] |= np.uint8(groupflags.DO_NOT_USE)

    # 3. reference pixels, 4. bias correction
    y = np.clip(np.arange(*ext_rows), 0, frame - 1)
    x = np.clip(np.arange(*ext_cols), 0, frame - 1)
    chan = channel_of(frame_index(model.window)[x])
    raw = steps.apply_reference_correction(raw, common[:nres][:, y], channel[:nres][:, :, y],
                                           chan)
    raw -= bias

    # 5. linearity
    usable = (gdq & np.uint8(groupflags.SATURATED | groupflags.DO_NOT_USE)) == 0
    slin, nolin = steps.linearize_cube(raw, region, usable & science[None])
    pixeldq |= nolin

    # 6. to electrons, and IPC
    gain = region.gain.astype(np.float64)
    charge = np.where(science[None], slin * gain, 0.0)
    charge = steps.ipc_correct(charge, region.ipc.astype(np.float64))
    inner2 = (slice(2, -2), slice(2, -2))
    gdq2 = gdq[(slice(None),) + inner2]

    # 7. ramps, on the rectangle plus a 2-pixel ring for the local rates
    times = RampTimes.from_pattern(ma_table.read_pattern, ma_table.frame_time)
    fit = fit_ramp(options, charge, gdq2, noise[inner2] * gain[inner2], gain[inner2], ma_table,
               times)
    science2 = science[inner2]
    slope = np.where(science2, fit["slope"], np.nan)
    usable2 = np.isfinite(slope)
    inner = (slice(2, -2), slice(2, -2))
    local = _local_rate(slope, usable2)
    own = slope[inner]
    var_r = fit["var_rnoise"][inner]
    coeff = fit["poisson_coeff"][inner]
    close = np.abs(own - local) <= 3.0 * np.sqrt(var_r + coeff * np.maximum(local, 0.0))
    rate_for_var = np.where(np.isfinite(local) & close, local, own)
    var_p = coeff * np.maximum(rate_for_var, 0.0)

    # 8. dark, flat, area, reference gain
    core = (slice(h, -h), slice(h, -h))
    g = gain[core]
    rate = own - region.dark_slope[core] * g
    flat = region.flat[core].astype(np.float64)
    bad_flat = ~(flat > 0.1)
    if options.units == "romandask":
        scale = np.where(bad_flat, np.nan, flat) * model.reference_gain()
        if area is not None:
            scale = scale * area
    else:
        # gen_cal_image: DN/s at the pixel's own gain over its IPC-deconvolved
        # flat, times the pixel area (README, Calibration: output units)
        deconvolved = steps.deconvolved_flat(region.flat, gain, region.ipc, science)[inner]
        scale = np.where(bad_flat | ~science[core], np.nan, g * deconvolved)
        if area is not None:
            scale = scale / area
    sci = science[core]
    out = np.empty((len(options.outputs),) + rate.shape)
    out[0] = np.where(sci, rate / scale, np.nan)
    out[2] = np.where(sci, var_p / scale ** 2, np.nan)
    out[3] = np.where(sci, var_r / scale ** 2, np.nan)
    out[1] = np.sqrt(out[2] + out[3])
    dq = pixeldq[core] | fit["dq"][inner]
    saturated = (gdq[(slice(None),) + core] & np.uint8(groupflags.SATURATED)).any(axis=0)
    dq |= np.where(saturated, np.uint32(pixelflags.SATURATED), np.uint32(0))
    dq |= np.where(bad_flat & sci, np.uint32(pixelflags.NO_FLAT_FIELD), np.uint32(0))
    dq |= np.where(sci & ~np.isfinite(out[0]), _DO_NOT_USE, np.uint32(0))
    out[4] = dq
    if options.sliceout:
        flagged = (gdq[(slice(None),) + core] & np.uint8(groupflags.SATURATED)) != 0
        first = np.argmax(flagged, axis=0)
        out[5] = np.where(flagged.any(axis=0) & (first > 0), first - 1, -1)
    return out


def _with_halo(cube: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """``cube[..., rows, cols]`` of a frame grown by :data:`HALO`, zero beyond the frame."""
    (rs, cs), pad = grown_rectangle(rows, cols, HALO, cube.shape[-1])
    return np.pad(cube[..., rs, cs], ((0, 0),) * (cube.ndim - 2) + pad)


def science_part(rows: tuple[int, int], cols: tuple[int, int], frame: int):
    """Where a frame rectangle meets the science window.

    Returns ``(in the rectangle, in the window)``, each a pair of slices, or
    None if the rectangle lies on the reference border only.
    """
    b = NBORDER
    y0, y1 = max(rows[0], b), min(rows[1], frame - b)
    x0, x1 = max(cols[0], b), min(cols[1], frame - b)
    if y0 >= y1 or x0 >= x1:
        return None
    return ((slice(y0 - rows[0], y1 - rows[0]), slice(x0 - cols[0], x1 - cols[0])),
            (slice(y0 - b, y1 - b), slice(x0 - b, x1 - b)))


def calibrate_frame(data: np.ndarray, amp33: np.ndarray | None, model, ma_table: MATable,
                    options: CalOptions, groupdq: np.ndarray | None = None,
                    area: np.ndarray | None = None, tile: int = 512) -> dict[str, np.ndarray]:
    """Calibrate a whole frame (nres, N + 8, N + 8), block by block.

    Returns the L2 arrays of the N x N science window: ``data``, ``err``,
    ``var_poisson``, ``var_rnoise`` (float32), ``dq`` (uint32) and, with
    ``options.sliceout``, ``endslice`` (int8: the last resultant before the
    first saturated one, -1 where none is).  ``area`` is (N, N) if given.
    Only one block and its halo are worked on at a time.
    """
    n = model.frame_shape[0]
    nres = ma_table.nresultants
    if data.shape != (nres, n, n):
        raise ValueError(f"data are {data.shape}, expected {(nres, n, n)}")
    common, channel = exposure_reference(
        model, ma_table, np.concatenate([data[:, :NBORDER], data[:, n - NBORDER:]], axis=1),
        amp33)
    window = n - 2 * NBORDER
    dtypes = {"dq": np.uint32, "endslice": np.int8}
    result = {name: np.empty((window, window), dtypes.get(name, np.float32))
              for name in options.outputs}
    for y0 in range(0, n, tile):
        rows = (y0, min(y0 + tile, n))
        for x0 in range(0, n, tile):
            cols = (x0, min(x0 + tile, n))
            part = science_part(rows, cols, n)
            if part is None:
                continue  # reference border only: not in the L2 window
            in_block, in_window = part
            block_area = None
            if area is not None:
                block_area = np.ones((rows[1] - rows[0], cols[1] - cols[0]))
                block_area[in_block] = area[in_window]
            out = calibrate_block(
                _with_halo(data, rows, cols), rows, cols, model, ma_table, common, channel,
                options, None if groupdq is None else _with_halo(groupdq, rows, cols),
                block_area)
            for i, name in enumerate(options.outputs):
                result[name][in_window] = out[(i,) + in_block]
    return result

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

import numba
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
_SATURATED_PIXEL = np.uint32(pixelflags.SATURATED)
_NO_FLAT_FIELD = np.uint32(pixelflags.NO_FLAT_FIELD)
_SATURATED_GROUP = np.uint8(groupflags.SATURATED)
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _finish(slope, var_rnoise, coeff, fit_dq, gdq, science, gain, dark_slope, flat, scale_gain,
            area, has_area, gen_units, deconvolved, mask, lin_dq, nolin, sliceout, out):
    """Steps 7 (the Poisson variance from the local rate) and 8 in one pass.

    ``slope``, ``var_rnoise``, ``coeff``, ``fit_dq`` and ``gdq`` are on the
    block less a 2-pixel ring, the rest on the block; ``out`` (5, ny, nx),
    or (6, ny, nx) with ``sliceout`` (``endslice`` last), and ``area`` and
    ``deconvolved`` (the flat of ``gen_units``, gen_cal_image's units), the
    block less :data:`HALO`.  The local rate is the mean slope of the 24
    neighbours (a 5 x 5 box without its centre) that have one, NaN if none
    has; the sums run over the box row by row.  Clamps keep a NaN as
    ``np.maximum`` does, and finite means ``|x| < inf``; a row at a time,
    with selects, so that the loops vectorise.
    """
    ny, nx = out.shape[1], out.shape[2]
    nres = gdq.shape[0]
    fy, fx = slope.shape
    usable = np.empty((fy, fx))   # the slope where there is one, else 0
    weight = np.empty((fy, fx))   # 1 where there is one
    for y in range(fy):
        s_row = slope[y]
        sci = science[y + 2]
        u = usable[y]
        w = weight[y]
        for x in range(fx):
            s = np.float64(s_row[x])
            ok = sci[x + 2] & (abs(s) < np.inf)
            u[x] = s if ok else 0.0
            w[x] = 1.0 if ok else 0.0
    total = np.empty(nx)
    count = np.empty(nx)
    first_sat = np.empty(nx, np.int64)
    for y in range(ny):
        for x in range(nx):
            total[x] = 0.0
            count[x] = 0.0
        for dy in range(5):
            for dx in range(5):
                if dy == 2 and dx == 2:
                    continue
                u = usable[y + dy]
                w = weight[y + dy]
                for x in range(nx):
                    total[x] += u[x + dx]
                    count[x] += w[x + dx]
        # each pixel's first saturated resultant (nres if none), latest first
        for x in range(nx):
            first_sat[x] = nres
        for i in range(nres - 1, -1, -1):
            grp = gdq[i, y + 2]
            for x in range(nx):
                first_sat[x] = i if (grp[x + 2] & _SATURATED_GROUP) else first_sat[x]
        sci_row = science[y + 4]
        s_row = slope[y + 2]
        vr_row = var_rnoise[y + 2]
        c_row = coeff[y + 2]
        g_row = gain[y + 4]
        dark_row = dark_slope[y + 4]
        flat_row = flat[y + 4]
        area_row = area[y] if has_area else area[0]
        mask_row = mask[y + 4]
        lin_row = lin_dq[y + 4]
        nolin_row = nolin[y + 4]
        fit_row = fit_dq[y + 2]
        for x in range(nx):
            n = count[x]
            local = total[x] / n if n > 0 else np.nan
            sci = sci_row[x + 4]
            own = np.float64(s_row[x + 2]) if sci else np.nan
            var_r = np.float64(vr_row[x + 2])
            c = np.float64(c_row[x + 2])
            # as np.maximum(., 0): NaN stays NaN
            local_pos = local if ((local != local) | (local > 0.0)) else 0.0
            close = abs(own - local) <= 3.0 * np.sqrt(var_r + c * local_pos)
            rate_for_var = local if ((abs(local) < np.inf) & close) else own
            var_p = c * (rate_for_var if ((rate_for_var != rate_for_var) | (rate_for_var > 0.0))
                         else 0.0)
            rate = own - np.float64(dark_row[x + 4]) * np.float64(g_row[x + 4])
            f = np.float64(flat_row[x + 4])
            bad_flat = not f > 0.1
            if gen_units:
                g = np.float64(g_row[x + 4])
                scale = np.nan if (bad_flat or not sci) else g * deconvolved[y, x]
                if has_area:
                    scale = scale / np.float64(area_row[x])
            else:
                scale = (np.nan if bad_flat else f) * scale_gain
                if has_area:
                    scale = scale * np.float64(area_row[x])
            scale2 = scale * scale
            data = rate / scale if sci else np.nan
            vp = var_p / scale2 if sci else np.nan
            vr = var_r / scale2 if sci else np.nan
            out[0, y, x] = data
            out[1, y, x] = np.sqrt(vp + vr)
            out[2, y, x] = vp
            out[3, y, x] = vr
            dq = mask_row[x + 4] | lin_row[x + 4] | nolin_row[x + 4] | fit_row[x + 2]
            first = first_sat[x]
            dq |= _SATURATED_PIXEL if first < nres else np.uint32(0)
            dq |= _NO_FLAT_FIELD if (bad_flat & sci) else np.uint32(0)
            dq |= _DO_NOT_USE if (sci & ~(abs(data) < np.inf)) else np.uint32(0)
            if sliceout:
                # the last resultant before the first saturated one, -1 if none is
                out[5, y, x] = first - 1 if 0 < first < nres else -1
            out[4, y, x] = dq


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

    Steps 1-6 (saturation, its backup and the excluded first resultant,
    reference pixels, bias, linearity, gain and IPC) run in one compiled
    pass (:func:`steps.raw_to_collected_charge`), then the ramp fit, then
    the Poisson variance and the output (dark, flat, area, dq, endslice) in
    a last one: every whole-block array is the input or the result of a
    step, with no temporary copy between them.
    """
    nres = ma_table.nresultants
    h = HALO
    ext_rows, ext_cols = (rows[0] - h, rows[1] + h), (cols[0] - h, cols[1] + h)
    frame = model.frame_shape[0]
    region = extended_region(model, rows, cols, h)
    science = science_mask(ext_rows, ext_cols, frame)
    raw = data[:nres]
    H, W = science.shape
    if raw.shape[1:] != (H, W):
        raise ValueError(f"block data are {raw.shape[1:]}, expected {(H, W)} with the halo")

    # 1. data quality, 2. saturation (on the raw data less the bias correction),
    # 3. reference pixels, 4. bias correction, 5. linearity, 6. to electrons, and IPC
    (rs, cs), pad = grown_rectangle(rows, cols, h, frame)
    bias = model.biascorr(rs, cs, ma_table)
    reads = np.array([len(r) for r in ma_table.read_pattern], np.float64)
    noise = effective_read_noise(model, region.read_noise)
    margin = 5.0 * np.sqrt(noise ** 2 / reads.min() + model.c_pink ** 2)
    tlast = np.array([r[-1] for r in ma_table.read_pattern]) * ma_table.frame_time
    y = np.clip(np.arange(*ext_rows), 0, frame - 1)
    x = np.clip(np.arange(*ext_cols), 0, frame - 1)
    gdq2, charge, nolin = steps.raw_to_collected_charge(
        raw, None if groupdq is None else groupdq[:nres], _EXCLUDE_IN, bias,
        (pad[0][0], pad[1][0]), common[:nres][:, y], channel[:nres][:, :, y],
        channel_of(frame_index(model.window)[x]), region.saturation.astype(np.float64) - margin,
        ma_table.tbar / tlast, region, science, reads=reads,
        saturation_backup=options.saturation_backup, exclude_first=options.exclude_first)
    inner2 = (slice(2, -2), slice(2, -2))
    gain2 = region.gain[inner2].astype(np.float64)

    # 7. ramps, on the rectangle plus a 2-pixel ring for the local rates
    times = RampTimes.from_pattern(ma_table.read_pattern, ma_table.frame_time)
    fit = fit_ramp(options, charge, gdq2, noise[inner2] * gain2, gain2, ma_table, times)
    del charge

    # 7. Poisson variance from the local rate, 8. dark, flat, area, units, dq
    gen_units = options.units == "gen_cal_image"
    # gen_cal_image: DN/s at the pixel's own gain over its IPC-deconvolved
    # flat, times the pixel area (README, Calibration: output units)
    deconvolved = (steps.deconvolved_flat(region.flat, region.gain, region.ipc,
                                          science)[inner2] if gen_units else np.ones((1, 1)))
    out = np.empty((len(options.outputs), H - 2 * h, W - 2 * h))
    _finish(fit["slope"], fit["var_rnoise"], fit["poisson_coeff"], fit["dq"], gdq2, science,
            region.gain, region.dark_slope, region.flat, float(model.reference_gain()),
            np.ones((1, 1)) if area is None else np.asarray(area, np.float64),
            area is not None, gen_units, deconvolved, region.mask, region.lin_dq, nolin,
            options.sliceout, out)
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

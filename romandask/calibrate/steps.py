"""The L1 -> L2 calibration steps, each a pure function of numpy arrays.

Each step inverts one stage of the forward model (:mod:`romandask.detector`),
in the order the signal passed through them, last stage first:

1. data quality: the pixel flags of the reference files (``mask``, and the
   linearity file's ``dq``);
2. saturation: a resultant at or above the saturation level, less a noise
   margin, is SATURATED, and so is every later one.  A resultant that averages
   several reads is diluted by its unsaturated reads, so the resultant before
   a saturated one is flagged too when its level is above the fraction
   ``tbar / t_last`` of the well that a linear ramp reaching saturation at its
   last read would have (stcal's treatment of averaged reads);
3. reference pixels: the 1/f noise common to all channels is read off the
   amp33 output row by row, and each channel's offset off its top and bottom
   reference rows, resultant by resultant (as romanimpreprocess's
   ``reference_subtraction``), carried to the rows between them with the
   weights the detector model's 1/f noise gives (:func:`channel_weights`);
4. bias correction: the ``biascorr`` cube is subtracted;
5. linearity: the Legendre curve maps raw DN to linearised DN; signals beyond
   ``[Smin, Smax]`` follow its tangent and are flagged NO_LIN_CORR;
6. inter-pixel capacitance: the gain turns DN into electrons, and the
   ``ipc4d`` kernels are inverted to second order,
   ``Q = (1 - A + A^2) O`` with ``A = K - 1``, which needs a halo of two
   pixels (the error, ``A^3``, is ~2e-4 of the local contrast);
7. ramp fitting with jump detection (:mod:`.fixed_fit` or stcal's);
8. dark current, flat field (QE) and the pixel area, and the conversion
   to DN/s at the detector's reference gain.

The functions of steps 2-6 are their definitions; a block is calibrated by
:func:`raw_to_collected_charge`, which runs steps 1-6 in one compiled pass,
row by row, and gives their values bit for bit (float64 from the float32
reference data), without a whole-block temporary.
"""

from __future__ import annotations

import numba
import numpy as np
from roman_datamodels.dqflags import group as groupflags
from roman_datamodels.dqflags import pixel as pixelflags

from ..detector.reference import NBORDER, NCHAN, Region
from ..instrument.matables import MATable

__all__ = [
    "apply_reference_correction",
    "back_up_saturation",
    "channel_weights",
    "deconvolved_flat",
    "flag_saturation",
    "ipc_correct",
    "linearize_cube",
    "raw_to_charge",
    "raw_to_collected_charge",
    "reference_offsets",
]

_SATURATED = np.uint8(groupflags.SATURATED)
_DO_NOT_USE_GROUP = np.uint8(groupflags.DO_NOT_USE)
_UNUSABLE = np.uint8(groupflags.SATURATED | groupflags.DO_NOT_USE)
_NO_LIN_CORR = np.uint32(pixelflags.NO_LIN_CORR)


def flag_saturation(signal: np.ndarray, saturation: np.ndarray, sref: np.ndarray,
                    ma_table: MATable, margin: np.ndarray) -> np.ndarray:
    """SATURATED group flags (uint8, like ``signal``) of raw resultants.

    ``signal`` (nres, ny, nx) is the raw data less the bias correction (DN);
    ``saturation`` and ``sref`` the raw saturation and reset levels; ``margin``
    (DN, broadcasting) the noise allowance below the saturation level.
    """
    nres = signal.shape[0]
    threshold = saturation - margin
    full = signal >= threshold[None]
    tbar = ma_table.tbar
    tlast = np.array([r[-1] for r in ma_table.read_pattern]) * ma_table.frame_time
    flagged = np.zeros(signal.shape, bool)
    flagged[:] = full
    for i in range(nres - 1):
        # diluted: the next resultant is saturated, and this one is as high as
        # a linear ramp saturating at its last read would be
        level = sref + (threshold - sref) * (tbar[i] / tlast[i])
        flagged[i] |= full[i + 1] & (signal[i] >= level)
    # once saturated, always saturated
    flagged = np.logical_or.accumulate(flagged, axis=0)
    return np.where(flagged, _SATURATED, np.uint8(0))


def back_up_saturation(flags: np.ndarray, read_pattern, passes: int) -> np.ndarray:
    """SATURATED group flags backed up ``passes`` resultants (romanimpreprocess's
    ``SATURATION_BACKUP``, as romancal's ``flag_saturation`` does it).

    In each pass, a resultant that averages more than one read takes the
    SATURATED flag of the resultant after it: a sharp non-linearity can fill
    the well within a long resultant before its mean reaches the threshold.
    ``flags`` (nres, ny, nx, uint8) is updated in place and returned.
    """
    nres = flags.shape[0]
    for _ in range(passes):
        for i in range(nres - 1):  # ascending: one resultant per pass
            if len(read_pattern[i]) > 1:
                flags[i] |= flags[i + 1] & _SATURATED
    return flags


def deconvolved_flat(flat: np.ndarray, gain: np.ndarray, kernel: np.ndarray,
                     science: np.ndarray) -> np.ndarray:
    """The flat as romanimpreprocess's gen_cal_image divides by it: ``g^-1 K^-1 g F``.

    gen_cal_image reads the flat as a flat-field exposure in DN, clips it to
    [0.1, 10] and the gain to at least 0.1 e-/DN, and removes the IPC from
    it in electrons with the same second-order inverse as the data
    (:func:`ipc_correct`: ``out <- out + g F - K out``, twice, starting from
    ``g F``), on the science pixels only (nothing beyond them couples in).
    ``flat``, ``gain``, ``science`` (H, W) and ``kernel`` (3, 3, H, W) cover a
    rectangle grown by two pixels; returns (H - 4, W - 4), the interior.
    """
    f = np.clip(np.asarray(flat, np.float64), 0.1, 10.0)
    g = np.maximum(np.asarray(gain, np.float64), 0.1)
    k = np.asarray(kernel, np.float64)
    image = np.where(science, g * f, 0.0)
    out = image
    for step in (1, 2):
        crop = (slice(step, -step), slice(step, -step))
        inner = (slice(step - 1, -(step - 1) or None),) * 2
        sensed = _apply_ipc(out, k[(slice(None), slice(None)) + inner])
        out = np.where(science[crop], out[1:-1, 1:-1] + image[crop] - sensed, 0.0)
    return out / g[2:-2, 2:-2]


def channel_weights(nrows: int, ref_row_index: np.ndarray, pink_var: float,
                    white_var: float) -> np.ndarray:
    """Weights (nrows, 2) of the top and bottom reference rows' channel offsets.

    A channel's 1/f noise (variance ``pink_var`` per read, correlated along
    the rows as :func:`~romandask.detector.readout.pink_correlation`) is
    seen by the reference rows ``ref_row_index`` (the first four, then the
    last four) with white noise of variance ``white_var`` on each group's
    mean.  Row y's offset is best predicted (least squares, given the model)
    by ``a(y) T + b(y) B`` from the two groups' means T and B: close to T
    and B beside them, and to nothing halfway, where 1/f noise no longer
    remembers the reference rows.  Every variance scales alike with the
    reads a resultant averages, so one set of weights serves them all.
    """
    from ..detector.readout import pink_correlation

    if pink_var <= 0:
        return np.zeros((nrows, 2))
    rho = pink_correlation(nrows)
    groups = (ref_row_index[:NBORDER], ref_row_index[NBORDER:])
    rows = np.arange(nrows)
    # covariance of each row with each group's mean, and of the group means
    cross = np.stack([rho[np.abs(rows[:, None] - g[None, :])].mean(axis=1) for g in groups],
                     axis=1) * pink_var
    gram = np.array([[rho[np.abs(gi[:, None] - gj[None, :])].mean() for gj in groups]
                     for gi in groups]) * pink_var + np.eye(2) * white_var
    return cross @ np.linalg.inv(gram)


def reference_offsets(ref_rows: np.ndarray, ref_level: np.ndarray, ref_channels: np.ndarray,
                      ref_row_index: np.ndarray, amp33: np.ndarray | None,
                      amp33_level: np.ndarray | None, m_pink: float,
                      weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-by-row common noise and per-channel offsets of one exposure.

    Parameters
    ----------
    ref_rows : (nres, 8, nx) the top and bottom reference rows of the frame, DN.
    ref_level : (8, nx) their expected level (the reference pixels' bias).
    ref_channels : (nx,) the readout channel of each frame column.
    ref_row_index : (8,) the frame rows of ``ref_rows``.
    amp33 : (nres, nrows, 128) the reference output, or None.
    amp33_level : (nrows, 128) its median level.
    m_pink : its coupling to the common noise; 0 turns the row correction off.
    weights : (nrows, 2) :func:`channel_weights`.

    Returns
    -------
    common : (nres, nrows) DN to subtract from every pixel of a row.
    channel : (nres, 32, nrows) DN to subtract from the pixels of a channel:
        the channel's mean offset over the exposure (its bias against the
        reference data, which matters to the linearity), plus each
        resultant's departure from it at the top and bottom reference rows
        carried to every row by ``weights``.
    """
    nres = ref_rows.shape[0]
    nrows = weights.shape[0]
    if amp33 is not None and m_pink:
        common = ((amp33.astype(np.float64).mean(axis=2)
                   - amp33_level.astype(np.float64).mean(axis=1)[None]) / m_pink)
    else:
        common = np.zeros((nres, nrows))
    resid = (ref_rows.astype(np.float64) - ref_level[None]
             - common[:, ref_row_index, None])
    top = np.zeros((nres, NCHAN))
    bottom = np.zeros((nres, NCHAN))
    for c in np.unique(ref_channels):
        top[:, c] = resid[:, :NBORDER, ref_channels == c].mean(axis=(1, 2))
        bottom[:, c] = resid[:, NBORDER:, ref_channels == c].mean(axis=(1, 2))
    offset = 0.5 * (top + bottom).mean(axis=0)                     # (32,)
    top -= top.mean(axis=0)
    bottom -= bottom.mean(axis=0)
    channel = (offset[None, :, None] + top[:, :, None] * weights[None, None, :, 0]
               + bottom[:, :, None] * weights[None, None, :, 1])
    return common.astype(np.float32), channel.astype(np.float32)


def apply_reference_correction(data: np.ndarray, common_rows: np.ndarray,
                               channel_rows: np.ndarray, chan: np.ndarray) -> np.ndarray:
    """``data`` (nres, ny, nx, float64) less, in place, the row term (nres, ny)
    and each column's channel term (``channel_rows`` (nres, 32, ny), ``chan``
    (nx,) the channel of each column), one resultant at a time."""
    for i in range(data.shape[0]):
        data[i] -= common_rows[i][:, None]
        data[i] -= channel_rows[i][chan].T
    return data


@numba.njit(cache=True, nogil=True)
def _legendre_cube(raw, smin, smax, coeffs, out):
    """Legendre linearity of every resultant, continued along the tangent past |z| = 1."""
    nres, ny, nx = raw.shape
    order = coeffs.shape[0]
    for y in range(ny):
        for x in range(nx):
            lo = smin[y, x]
            half = (smax[y, x] - lo) / 2.0
            for i in range(nres):
                z = (raw[i, y, x] - lo) / half - 1.0
                zc = min(max(z, -1.0), 1.0)
                value = coeffs[0, y, x]
                slope = 0.0
                p_prev, p = 1.0, zc
                d_prev, d = 0.0, 1.0
                for k in range(1, order):
                    value += coeffs[k, y, x] * p
                    slope += coeffs[k, y, x] * d
                    if k + 1 < order:
                        p_next = ((2 * k + 1) * zc * p - k * p_prev) / (k + 1)
                        d_next = d_prev + (2 * k + 1) * p
                        p_prev, p = p, p_next
                        d_prev, d = d, d_next
                out[i, y, x] = value + slope * (z - zc)


def linearize_cube(raw: np.ndarray, region: Region, usable: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Linearised signal (float64 DN) and NO_LIN_CORR pixel flags (uint32).

    The same curve as :func:`romandask.detector.reference.linearize`, compiled.
    A pixel is flagged where a usable resultant lies beyond [Smin, Smax].
    """
    raw = np.ascontiguousarray(raw, np.float64)
    smin = np.ascontiguousarray(region.smin, np.float64)
    smax = np.ascontiguousarray(region.smax, np.float64)
    value = np.empty_like(raw)
    _legendre_cube(raw, smin, smax, np.ascontiguousarray(region.lin_coeffs, np.float64), value)
    outside = (((raw < smin) | (raw > smax)) & usable).any(axis=0)
    return value, np.where(outside, np.uint32(pixelflags.NO_LIN_CORR), np.uint32(0))


def _channel_runs(chan: np.ndarray) -> np.ndarray:
    """(first column, end column, channel) of each run of columns read by one channel."""
    chan = np.asarray(chan, np.int64)
    edges = np.flatnonzero(np.diff(chan)) + 1
    starts = np.r_[0, edges]
    ends = np.r_[edges, len(chan)]
    return np.stack([starts, ends, chan[starts]], axis=1).astype(np.int64)


def _charge_arguments(data, groupdq, exclude_in, bias, bias_origin, common_rows,
                      channel_rows, chan, threshold, dilution, region, science, reads,
                      saturation_backup, exclude_first):
    has_groupdq = groupdq is not None
    if saturation_backup < 0:
        raise ValueError(f"saturation_backup must be >= 0, got {saturation_backup}")
    if saturation_backup and reads is None:
        raise ValueError("saturation_backup needs the reads of each resultant (reads)")
    nres = data.shape[0]
    multi = (np.zeros(nres, np.bool_) if reads is None
             else np.ascontiguousarray(np.asarray(reads) > 1, np.bool_))
    return (data, groupdq if has_groupdq else np.zeros((1, 1, 1), np.uint8), has_groupdq,
            np.uint8(exclude_in), bias, int(bias_origin[0]), int(bias_origin[1]),
            np.ascontiguousarray(common_rows),
            # (nres, H, 32): each row's 32 channel terms side by side
            np.ascontiguousarray(np.swapaxes(channel_rows, 1, 2)),
            _channel_runs(chan), np.ascontiguousarray(threshold, np.float64),
            region.sref, np.ascontiguousarray(dilution, np.float64), region.smin, region.smax,
            region.lin_coeffs, region.gain, np.ascontiguousarray(science, np.bool_), multi,
            int(saturation_backup), bool(exclude_first))


def raw_to_charge(data: np.ndarray, groupdq: np.ndarray | None, exclude_in: int,
                  bias: np.ndarray, bias_origin: tuple[int, int], common_rows: np.ndarray,
                  channel_rows: np.ndarray, chan: np.ndarray, threshold: np.ndarray,
                  dilution: np.ndarray, region: Region, science: np.ndarray, *,
                  reads: np.ndarray | None = None, saturation_backup: int = 0,
                  exclude_first: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1 to 5 and the gain in one compiled pass over a block: raw DN to electrons.

    The same values, bit for bit, as the steps one by one: group flags from
    ``groupdq`` (resultants flagged ``exclude_in`` become DO_NOT_USE) and
    :func:`flag_saturation` (``threshold`` the saturation level less its
    margin, ``dilution`` its ``tbar / t_last`` per resultant), then
    :func:`back_up_saturation` ``saturation_backup`` times (``reads``, the
    reads of each resultant, tells the multi-read ones), the first resultant
    DO_NOT_USE if ``exclude_first``, then :func:`apply_reference_correction`,
    the bias, :func:`linearize_cube` (on the resultants left usable by those
    flags) and the gain, row by row with no whole-block temporary.

    Parameters
    ----------
    data : (nres, H, W) raw resultants (any numeric dtype), the block.
    groupdq : (nres, H, W) input group flags, or None.
    bias : (nres, h, w) the bias correction of the block's part within the
        frame, whose first pixel is the block's ``bias_origin``; 0 beyond it.
    common_rows, channel_rows : (nres, H) and (nres, 32, H) the reference
        correction of the block's rows; ``chan`` (W,) each column's channel.
    threshold : (H, W) float64; region : the block's reference data;
    science : (H, W) bool, the light-sensitive pixels.

    Returns
    -------
    gdq : (nres, H - 4, W - 4) uint8 group flags (SATURATED, DO_NOT_USE) of
        the block less a 2-pixel ring (what the ramp fit sees after IPC);
    charge : (nres, H, W) float64 linearised electrons, 0 off the science array;
    nolin : (H, W) uint32 NO_LIN_CORR where a usable resultant of a science
        pixel lies beyond [Smin, Smax].
    """
    nres, H, W = data.shape
    gdq = np.empty((nres, H - 4, W - 4), np.uint8)
    charge = np.empty((nres, H, W))
    nolin = np.empty((H, W), np.uint32)
    args = _charge_arguments(data, groupdq, exclude_in, bias, bias_origin, common_rows,
                             channel_rows, chan, threshold, dilution, region, science,
                             reads, saturation_backup, exclude_first)
    _raw_to_charge(*args, gdq, nolin, charge)
    return gdq, charge, nolin


def raw_to_collected_charge(data: np.ndarray, groupdq: np.ndarray | None, exclude_in: int,
                            bias: np.ndarray, bias_origin: tuple[int, int],
                            common_rows: np.ndarray, channel_rows: np.ndarray, chan: np.ndarray,
                            threshold: np.ndarray, dilution: np.ndarray, region: Region,
                            science: np.ndarray, *, reads: np.ndarray | None = None,
                            saturation_backup: int = 0, exclude_first: bool = False
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1 to 6 in one compiled pass: :func:`raw_to_charge`, then :func:`ipc_correct`.

    The same arguments and results, bit for bit, except that the charge is
    the charge collected (IPC inverted), (nres, H - 4, W - 4) float64: rows
    of electrons are made three at a time and inverted as they come, so that
    the charge sensed is never held for the whole block.  Float64 because
    the ramp fit differences resultants of up to ~1e5 e-, and so that this
    pass gives the step-by-step values exactly.
    """
    nres, H, W = data.shape
    gdq = np.empty((nres, H - 4, W - 4), np.uint8)
    collected = np.empty((nres, H - 4, W - 4))
    nolin = np.empty((H, W), np.uint32)
    args = _charge_arguments(data, groupdq, exclude_in, bias, bias_origin, common_rows,
                             channel_rows, chan, threshold, dilution, region, science,
                             reads, saturation_backup, exclude_first)
    _raw_to_collected(*args, np.ascontiguousarray(region.ipc), gdq, nolin, collected)
    return gdq, collected, nolin


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _charge_row(y, data, groupdq, has_groupdq, exclude_in, bias, by, bx, common_rows,
                channel_rows, runs, threshold, sref, dilution, smin, smax, coeffs, gain,
                science, multi, backup, exclude_first, gdq, nolin, work, state, first_sat, out):
    """Row ``y`` of :func:`raw_to_charge`: electrons into ``out`` (nres, W).

    Each value is computed with the operations, in the order, of the
    step-by-step functions (in float64 from the float32 reference data).
    ``runs`` (:func:`_channel_runs`) the columns of each readout channel;
    ``work`` (2 nres + 9, W) float64, ``state`` (3, W) uint8 and ``first_sat``
    (W,) int64 are scratch; ``multi`` (nres,) tells the resultants of more
    than one read, ``backup`` the passes of :func:`back_up_saturation`.
    """
    nres, H, W = data.shape
    bh, bw = bias.shape[1], bias.shape[2]
    order = coeffs.shape[0]
    yb = y - by
    sig = work[:nres]
    brow = work[nres:2 * nres]
    v = work[2 * nres]
    z = work[2 * nres + 1]
    zc = work[2 * nres + 2]
    value = work[2 * nres + 3]
    slope = work[2 * nres + 4]
    p_prev = work[2 * nres + 5]
    p = work[2 * nres + 6]
    d_prev = work[2 * nres + 7]
    d = work[2 * nres + 8]
    flag = state[0]
    outside = state[2]
    thr = threshold[y]
    # 2. saturation, on the raw data less the bias correction (0 beyond the frame)
    for i in range(nres):
        b = brow[i]
        for x in range(W):
            b[x] = 0.0
        if 0 <= yb < bh:
            src = bias[i, yb]
            for x in range(bw):
                b[bx + x] = np.float64(src[x])
        raw = data[i, y]
        si = sig[i]
        for x in range(W):
            si[x] = np.float64(raw[x]) - b[x]
    s_ref = sref[y]
    # the first saturated resultant of each pixel (nres if none): every
    # resultant after a saturated one is saturated too
    for x in range(W):
        first_sat[x] = nres
        outside[x] = 0
    for i in range(nres):
        si = sig[i]
        if i + 1 < nres:
            # diluted: the next resultant is saturated, and this one is as high
            # as a linear ramp saturating at its last read would be
            nxt = sig[i + 1]
            for x in range(W):
                r = np.float64(s_ref[x])
                hit = (si[x] >= thr[x]) | ((nxt[x] >= thr[x])
                                           & (si[x] >= r + (thr[x] - r) * dilution[i]))
                if hit and first_sat[x] == nres:
                    first_sat[x] = i
        else:
            for x in range(W):
                if si[x] >= thr[x] and first_sat[x] == nres:
                    first_sat[x] = i
    # back_up_saturation's passes: each moves the first saturated resultant back
    # over one multi-read resultant, and stops at a single read
    if backup > 0:
        for x in range(W):
            f = first_sat[x]
            if f < nres:
                n = 0
                while n < backup and f > 0 and multi[f - 1]:
                    f -= 1
                    n += 1
                first_sat[x] = f
    for i in range(nres):
        # 1. data quality
        for x in range(W):
            flag[x] = _SATURATED if i >= first_sat[x] else np.uint8(0)
        if has_groupdq:
            g = groupdq[i, y]
            for x in range(W):
                if g[x] & exclude_in:
                    flag[x] |= _DO_NOT_USE_GROUP
        if exclude_first and i == 0:
            for x in range(W):
                flag[x] |= _DO_NOT_USE_GROUP
        if 2 <= y < H - 2:
            dst = gdq[i, y - 2]
            for x in range(W - 4):
                dst[x] = flag[x + 2]
        # 3. reference pixels, 4. bias correction
        raw = data[i, y]
        common = np.float64(common_rows[i, y])
        terms = channel_rows[i, y]
        b = brow[i]
        for r in range(runs.shape[0]):
            term = np.float64(terms[runs[r, 2]])
            for x in range(runs[r, 0], runs[r, 1]):
                v[x] = ((np.float64(raw[x]) - common) - term) - b[x]
        # 5. linearity: the Legendre curve, along its tangent past |z| = 1
        lo = smin[y]
        hi = smax[y]
        sci = science[y]
        g_row = gain[y]
        o = out[i]
        if order == 4:
            # a cubic (the synthetic detector's): every term in registers, with
            # the operations of the general recursion below, in its order
            c0, c1, c2, c3 = coeffs[0, y], coeffs[1, y], coeffs[2, y], coeffs[3, y]
            for x in range(W):
                low = np.float64(lo[x])
                high = np.float64(hi[x])
                usable = (flag[x] & _UNUSABLE) == 0
                outside[x] = outside[x] | np.uint8(usable & sci[x]
                                                   & ((v[x] < low) | (v[x] > high)))
                zx = (v[x] - low) / ((high - low) / 2.0) - 1.0
                above = -1.0 if -1.0 > zx else zx
                zcx = 1.0 if 1.0 < above else above
                val = np.float64(c0[x])
                slo = 0.0
                # k = 1: P1 = zc, P1' = 1
                k1 = np.float64(c1[x])
                val += k1 * zcx
                slo += k1 * 1.0
                p2 = (3 * zcx * zcx - 1 * 1.0) / 2
                d2 = 0.0 + 3 * zcx
                # k = 2
                k2 = np.float64(c2[x])
                val += k2 * p2
                slo += k2 * d2
                p3 = (5 * zcx * p2 - 2 * zcx) / 3
                d3 = 1.0 + 5 * p2
                # k = 3
                k3 = np.float64(c3[x])
                val += k3 * p3
                slo += k3 * d3
                o[x] = (val + slo * (zx - zcx)) * np.float64(g_row[x]) if sci[x] else 0.0
            continue
        for x in range(W):
            low = np.float64(lo[x])
            high = np.float64(hi[x])
            usable = (flag[x] & _UNUSABLE) == 0
            outside[x] = outside[x] | np.uint8(usable & sci[x] & ((v[x] < low) | (v[x] > high)))
            z[x] = (v[x] - low) / ((high - low) / 2.0) - 1.0
            # min(max(z, -1), 1), as selects (a NaN stays NaN)
            above = -1.0 if -1.0 > z[x] else z[x]
            zc[x] = 1.0 if 1.0 < above else above
            value[x] = np.float64(coeffs[0, y, x])
            slope[x] = 0.0
            p_prev[x] = 1.0
            p[x] = zc[x]
            d_prev[x] = 0.0
            d[x] = 1.0
        for k in range(1, order):
            ck = coeffs[k, y]
            if k + 1 < order:
                # Bonnet's recursion, and P'_{k+1} = P'_{k-1} + (2k + 1) P_k
                for x in range(W):
                    c = np.float64(ck[x])
                    value[x] += c * p[x]
                    slope[x] += c * d[x]
                    p_next = ((2 * k + 1) * zc[x] * p[x] - k * p_prev[x]) / (k + 1)
                    d_next = d_prev[x] + (2 * k + 1) * p[x]
                    p_prev[x] = p[x]
                    p[x] = p_next
                    d_prev[x] = d[x]
                    d[x] = d_next
            else:
                for x in range(W):
                    c = np.float64(ck[x])
                    value[x] += c * p[x]
                    slope[x] += c * d[x]
        # 6. to electrons, 0 off the science array
        for x in range(W):
            o[x] = (value[x] + slope[x] * (z[x] - zc[x])) * np.float64(g_row[x]) \
                if sci[x] else 0.0
    row = nolin[y]
    for x in range(W):
        row[x] = _NO_LIN_CORR if outside[x] else np.uint32(0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _raw_to_charge(data, groupdq, has_groupdq, exclude_in, bias, by, bx, common_rows,
                   channel_rows, runs, threshold, sref, dilution, smin, smax, coeffs, gain,
                   science, multi, backup, exclude_first, gdq, nolin, charge):
    nres, H, W = data.shape
    work = np.empty((2 * nres + 9, W))
    state = np.empty((3, W), np.uint8)
    first_sat = np.empty(W, np.int64)
    row = np.empty((nres, W))
    for y in range(H):
        _charge_row(y, data, groupdq, has_groupdq, exclude_in, bias, by, bx, common_rows,
                    channel_rows, runs, threshold, sref, dilution, smin, smax, coeffs, gain,
                    science, multi, backup, exclude_first, gdq, nolin, work, state, first_sat,
                    row)
        for i in range(nres):
            charge[i, y] = row[i]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _raw_to_collected(data, groupdq, has_groupdq, exclude_in, bias, by, bx, common_rows,
                      channel_rows, runs, threshold, sref, dilution, smin, smax, coeffs, gain,
                      science, multi, backup, exclude_first, kernel, gdq, nolin, collected):
    nres, H, W = data.shape
    work = np.empty((2 * nres + 9, W))
    state = np.empty((3, W), np.uint8)
    first_sat = np.empty(W, np.int64)
    sensed = np.empty((3, nres, W))       # rows y - 2 .. y of the charge sensed
    first = np.empty((3, nres, W - 2))    # rows y - 4 .. y - 2 of A O
    second = np.empty(W - 4)
    for y in range(H):
        _charge_row(y, data, groupdq, has_groupdq, exclude_in, bias, by, bx, common_rows,
                    channel_rows, runs, threshold, sref, dilution, smin, smax, coeffs, gain,
                    science, multi, backup, exclude_first, gdq, nolin, work, state, first_sat,
                    sensed[y % 3])
        if y >= 2:
            f = y - 2
            for i in range(nres):
                _first_order_row(sensed[f % 3, i], sensed[(f + 1) % 3, i],
                                 sensed[(f + 2) % 3, i], kernel, f, first[f % 3, i])
        if y >= 4:
            q = y - 4
            for i in range(nres):
                _second_order_row(sensed[(q + 2) % 3, i], first[q % 3, i],
                                  first[(q + 1) % 3, i], first[(q + 2) % 3, i], kernel, q,
                                  second, collected[i, q])


@numba.njit(cache=True, nogil=True)
def _ipc_row(low, mid, high, kernel, k0, y, out):
    """``out[x]``: what pixel (y + 1, x + 1) senses of the sources of rows ``y .. y + 2``.

    ``low``, ``mid``, ``high`` are the source rows y, y + 1, y + 2; source
    (a, b) has the kernel ``kernel[:, :, k0 + a, k0 + b]`` (ipc4d); ``out``
    holds W - 2 values.  The nine terms of a pixel are added in a register,
    in the order of the sources (y + 2 - dy, x + 2 - dx) for dy, then dx,
    from 0 to 2, the whole row at once (vectorised).
    """
    n = out.shape[0]
    a = k0 + y
    k00, k01, k02 = kernel[0, 0, a + 2, k0 + 2:], kernel[0, 1, a + 2, k0 + 1:], \
        kernel[0, 2, a + 2, k0:]
    k10, k11, k12 = kernel[1, 0, a + 1, k0 + 2:], kernel[1, 1, a + 1, k0 + 1:], \
        kernel[1, 2, a + 1, k0:]
    k20, k21, k22 = kernel[2, 0, a, k0 + 2:], kernel[2, 1, a, k0 + 1:], kernel[2, 2, a, k0:]
    h2, h1, m2, m1, l2, l1 = high[2:], high[1:], mid[2:], mid[1:], low[2:], low[1:]
    for x in range(n):
        t = 0.0
        t += np.float64(k00[x]) * h2[x]
        t += np.float64(k01[x]) * h1[x]
        t += np.float64(k02[x]) * high[x]
        t += np.float64(k10[x]) * m2[x]
        t += np.float64(k11[x]) * m1[x]
        t += np.float64(k12[x]) * mid[x]
        t += np.float64(k20[x]) * l2[x]
        t += np.float64(k21[x]) * l1[x]
        t += np.float64(k22[x]) * low[x]
        out[x] = t


@numba.njit(cache=True, nogil=True)
def _first_order_row(low, mid, high, kernel, y, out):
    """Row y of ``A O = K O - O`` from the rows y .. y + 2 of ``O``."""
    _ipc_row(low, mid, high, kernel, 0, y, out)
    for x in range(out.shape[0]):
        out[x] -= mid[x + 1]


@numba.njit(cache=True, nogil=True)
def _second_order_row(sensed, low, mid, high, kernel, y, scratch, out):
    """Row y of ``O - A O + A A O`` from row y + 2 of ``O`` and rows y .. y + 2 of ``A O``."""
    _ipc_row(low, mid, high, kernel, 1, y, scratch)
    for x in range(out.shape[0]):
        shared = mid[x + 1]
        # (O - A O) + (A A O), as ipc_correct's numpy expression adds them
        out[x] = (sensed[x + 2] - shared) + (scratch[x] - shared)


@numba.njit(cache=True, nogil=True)
def _ipc_correct(observed, kernel, out):
    """:func:`ipc_correct` of each plane of ``observed`` (n, H, W) into ``out`` (n, H-4, W-4)."""
    n, H, W = observed.shape
    first = np.empty((H - 2, W - 2))
    scratch = np.empty(W - 4)
    for i in range(n):
        plane = observed[i]
        for y in range(H - 2):
            _first_order_row(plane[y], plane[y + 1], plane[y + 2], kernel, y, first[y])
        for y in range(H - 4):
            _second_order_row(plane[y + 2], first[y], first[y + 1], first[y + 2], kernel, y,
                              scratch, out[i, y])


@numba.njit(cache=True, nogil=True)
def _ipc_kernel(charge, kernel, out):
    nres, H, W = charge.shape
    for i in range(nres):
        plane = charge[i]
        for y in range(H - 2):
            _ipc_row(plane[y], plane[y + 1], plane[y + 2], kernel, 0, y, out[i, y])


def _apply_ipc(charge: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """What the detector senses from ``charge`` (..., H, W): (..., H - 2, W - 2)."""
    lead = charge.shape[:-2]
    H, W = charge.shape[-2:]
    flat = np.ascontiguousarray(charge, np.float64).reshape((-1, H, W))
    out = np.empty((flat.shape[0], H - 2, W - 2))
    _ipc_kernel(flat, np.ascontiguousarray(kernel), out)
    return out.reshape(lead + (H - 2, W - 2))


def ipc_correct(observed: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Charge collected, to second order, from the charge sensed.

    ``observed`` (..., H, W) and ``kernel`` (3, 3, H, W) in the ipc4d
    convention (float32 or float64: the products are float64); returns
    (..., H - 4, W - 4) float64, the interior: with ``A O = K O - O``,
    ``O - A O + A (A O)``, one compiled pass per plane.
    """
    lead = observed.shape[:-2]
    H, W = observed.shape[-2:]
    planes = np.ascontiguousarray(observed, np.float64).reshape((-1, H, W))
    out = np.empty((planes.shape[0], H - 4, W - 4))
    _ipc_correct(planes, np.ascontiguousarray(kernel), out)
    return out.reshape(lead + (H - 4, W - 4))

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
    "reference_offsets",
]

_SATURATED = np.uint8(groupflags.SATURATED)


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


@numba.njit(cache=True, nogil=True)
def _ipc_kernel(charge, kernel, out):
    nres, H, W = charge.shape
    for i in range(nres):
        for y in range(H - 2):
            for x in range(W - 2):
                total = 0.0
                for dy in range(3):
                    for dx in range(3):
                        # charge of the source pixel (y + 2 - dy, x + 2 - dx), frame + 1
                        total += kernel[dy, dx, y + 2 - dy, x + 2 - dx] * \
                            charge[i, y + 2 - dy, x + 2 - dx]
                out[i, y, x] = total


def _apply_ipc(charge: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """What the detector senses from ``charge`` (..., H, W): (..., H - 2, W - 2)."""
    lead = charge.shape[:-2]
    H, W = charge.shape[-2:]
    flat = np.ascontiguousarray(charge, np.float64).reshape((-1, H, W))
    out = np.empty((flat.shape[0], H - 2, W - 2))
    _ipc_kernel(flat, np.ascontiguousarray(kernel, np.float64), out)
    return out.reshape(lead + (H - 2, W - 2))


def ipc_correct(observed: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Charge collected, to second order, from the charge sensed.

    ``observed`` (..., H, W) and ``kernel`` (3, 3, H, W) in the ipc4d
    convention; returns (..., H - 4, W - 4), the interior.
    """
    first = _apply_ipc(observed, kernel) - observed[..., 1:-1, 1:-1]       # A O
    second = _apply_ipc(first, kernel[:, :, 1:-1, 1:-1]) - first[..., 1:-1, 1:-1]  # A A O
    return observed[..., 2:-2, 2:-2] - first[..., 1:-1, 1:-1] + second

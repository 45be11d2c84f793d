"""The counts -> L1 forward model of one tile: every read of every pixel.

Physics, in the order it happens in the pixel (romanimpreprocess's
``from_sim`` methodology; romanisim's ``l1``):

1. reset: the well starts at the pixel's bias ``Sref`` ("0 e- in the well",
   the pedestal) plus kTC reset noise (a Gaussian charge per pixel);
2. charge accumulates read by read: each read's increment is Poisson with mean
   ``rate x frame_time``, where the rate is the ideal counts over the exposure
   times the flat (QE), plus the dark current, plus persistence from an earlier
   exposure; cosmic rays add their deposits in the read they arrive;
3. inter-pixel capacitance (the 3x3 ``ipc4d`` kernel of each source pixel)
   spreads the cumulative charge over the neighbours;
4. gain turns electrons into linearised DN, and the inverse of the Legendre
   linearity curve turns those into raw DN; the raw signal stops at the
   saturation level (the well is full);
5. reads are averaged into resultants as the MA table says.

Steps 1-5 run in a compiled kernel (numba) that walks the tile in strips of
rows, so the per-pixel reference data stay in cache over all reads.  Random
numbers come from a counter-based generator keyed by (run key, pixel, read):
a pixel's draws do not depend on the tile that computes them, so a tile can
recompute the one-pixel halo of charge that IPC needs from its neighbours
exactly as they do, and tiles agree at their edges without communicating.

The bias correction, read noise, correlated (1/f) and channel noise,
quantisation and the ADC limit are applied to the resultants afterwards
(:func:`finish_resultants`): read noise is independent from read to read, so
the average of ``n`` reads carries ``sigma / sqrt(n)`` and resultants are
uncorrelated in it, which is drawn exactly per resultant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from roman_datamodels.dqflags import group as groupflags

from ..instrument.matables import MATable

#: ADC range of the raw counts.
ADC_MAX = 65535

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_S32, _LOW32 = np.uint64(32), np.uint64(0xFFFFFFFF)
_TWO_M53 = 2.0 ** -53
#: Counter layout: (pixel, read, sub-draw); reads < 1024, sub-draws < 256.
_READ_SLOTS = np.uint64(1024)
_SUB_SLOTS = np.uint64(256)
#: Read slot of the exposure-total draw; photons use their own key and counters.
_TOTAL_SLOT = 1023
_PHOTON_KEY = np.uint64(0x5851F42D4C957F2D)
_PHOTON_SLOTS = np.uint64(1 << 24)
#: Below this mean, Poisson draws use inversion; above, transformed rejection.
_INVERSION_LIMIT = 12.0
#: Below this mean per read, photons are spread over the reads one by one.
_BINNING_LIMIT = 20.0


# --------------------------------------------------------------------------
# counter-based random numbers (splitmix64 output function on a counter)
# --------------------------------------------------------------------------

@numba.njit(inline="always")
def _bits(key, counter):
    """64 random bits for (key, counter): splitmix64's output function."""
    z = key + counter * _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(inline="always")
def _uniform(key, counter):
    """A uniform double in [0, 1) for (key, counter)."""
    return float(_bits(key, counter) >> _S11) * _TWO_M53


@numba.njit(inline="always")
def _counter(pixel, read, sub):
    return (np.uint64(pixel) * _READ_SLOTS + np.uint64(read)) * _SUB_SLOTS + np.uint64(sub)


@numba.njit
def _poisson_ptrs(lam, key, pixel, read):
    """Poisson draw for a large mean: Hormann's transformed rejection (PTRS, 1993)."""
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2.0)
    sub = 1
    while True:
        u = _uniform(key, _counter(pixel, read, sub)) - 0.5
        v = _uniform(key, _counter(pixel, read, sub + 1))
        sub = (sub + 2) % 256
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= v_r:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if (math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b)
                <= -lam + k * loglam - math.lgamma(k + 1.0)):
            return k


@numba.njit(inline="always")
def _poisson(lam, exp_neg_lam, key, pixel, read):
    """Poisson(lam) draw for (pixel, read); exact for every mean."""
    if lam <= 0.0:
        return 0.0
    if lam >= _INVERSION_LIMIT:
        return float(_poisson_ptrs(lam, key, pixel, read))
    u = _uniform(key, _counter(pixel, read, 0))
    k = 0
    p = exp_neg_lam
    cdf = p
    while u > cdf and k < 200:
        k += 1
        p *= lam / k
        cdf += p
    return float(k)


@numba.njit(inline="always")
def _normal(key, pixel, read):
    """Standard normal draw for (pixel, read) (Box-Muller on two uniforms)."""
    u1 = _uniform(key, _counter(pixel, read, 0))
    u2 = _uniform(key, _counter(pixel, read, 1))
    return math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)


# --------------------------------------------------------------------------
# Legendre linearity, per pixel
# --------------------------------------------------------------------------

@numba.njit(inline="always")
def _legendre(z, coef, r, c):
    """Value and derivative of sum_L coef[L] P_L(z) for |z| <= 1 (recursions)."""
    order = coef.shape[0]
    p_prev, p = 1.0, z
    d_prev, d = 0.0, 1.0
    f = coef[0, r, c] * 1.0
    fp = 0.0
    if order > 1:
        f += coef[1, r, c] * z
        fp += coef[1, r, c]
    for ell in range(1, order - 1):
        p_next = ((2 * ell + 1) * z * p - ell * p_prev) / (ell + 1)
        d_next = d_prev + (2 * ell + 1) * p
        f += coef[ell + 1, r, c] * p_next
        fp += coef[ell + 1, r, c] * d_next
        p_prev, p = p, p_next
        d_prev, d = d, d_next
    return f, fp


@numba.njit(inline="always")
def _linearity(z, coef, r, c, f_lo, fp_lo, f_hi, fp_hi):
    """Linearised signal and its z-derivative, extrapolated linearly beyond |z| = 1."""
    if z > 1.0:
        return f_hi + fp_hi * (z - 1.0), fp_hi
    if z < -1.0:
        return f_lo + fp_lo * (z + 1.0), fp_lo
    return _legendre(z, coef, r, c)


# --------------------------------------------------------------------------
# the kernel
# --------------------------------------------------------------------------

@numba.njit(inline="always")
def _increments(inc, hist, i, c, lam, pers, weight, key, pixel, nreads):
    """Electrons arriving in each read of one pixel, into ``inc[1:, i, c]``.

    Without persistence every read has the same mean, so the exposure's total
    is drawn once and its photons are spread uniformly over the reads: the
    per-read counts are then exactly independent Poisson(lam) (a Poisson
    process, conditioned on its total, has uniform arrival times), at the cost
    of half a random word per photon instead of one Poisson draw per read.
    Bright pixels and pixels with persistence (whose mean changes from read
    to read) draw each read directly.
    """
    if pers > 0.0 or lam >= _BINNING_LIMIT:
        elam = math.exp(-lam)
        for k in range(1, nreads + 1):
            lk = lam + pers * weight[k]
            ek = elam if pers == 0.0 else math.exp(-lk)
            inc[k, i, c] = _poisson(lk, ek, key, pixel, k)
        return
    for k in range(nreads + 1):
        hist[k] = 0
    if lam > 0.0:
        total_lam = lam * nreads
        total = int(_poisson(total_lam, math.exp(-total_lam), key, pixel, _TOTAL_SLOT))
        photon_key = key ^ _PHOTON_KEY
        base = np.uint64(pixel) * _PHOTON_SLOTS
        nr = np.uint64(nreads)
        for n in range(0, total, 2):
            word = _bits(photon_key, base + np.uint64(n >> 1))
            hist[1 + int(((word & _LOW32) * nr) >> _S32)] += 1
            if n + 1 < total:
                hist[1 + int(((word >> _S32) * nr) >> _S32)] += 1
    for k in range(1, nreads + 1):
        inc[k, i, c] = hist[k]


@numba.njit(nogil=True, cache=True, fastmath=True)
def _ramp_kernel(rate, pers, pers_weight, reset_e, ipc, inv_gain, coef, smin, smax, sat,
                 science, res_of_read, frame_time, key, pixel0, row_stride,
                 cr_ptr, cr_row, cr_col, cr_e, strip, sums, first_sat):
    """Accumulate the raw signal of every read into resultant sums.

    Arrays named after pixels are on the tile extended by one pixel on every
    side (``H = ny + 2``, ``W = nx + 2``); ``sums`` (nres, ny, nx) and
    ``first_sat`` (ny, nx) are on the tile.  ``pixel0 + r * row_stride + c`` is
    the global index of extended pixel (r, c), which keys its random draws.
    """
    H, W = rate.shape
    ny, nx = H - 2, W - 2
    nreads = res_of_read.shape[0] - 1
    q = np.empty((strip + 2, W))
    inc = np.empty((nreads + 1, strip + 2, W), np.float32)
    hist = np.empty(nreads + 1, np.int64)
    target = np.empty(nx)
    z = np.empty((strip, nx))
    f_now = np.empty((strip, nx))
    fp_now = np.empty((strip, nx))
    ends = np.empty((strip, nx, 4))
    for s0 in range(0, ny, strip):
        s1 = min(s0 + strip, ny)
        rows = s1 - s0 + 2                      # extended rows s0 .. s1 + 1
        for i in range(rows):
            r = s0 + i
            for c in range(W):
                pix = pixel0 + r * row_stride + c
                q[i, c] = reset_e[r, c] * _normal(key, pix, 0) if reset_e[r, c] > 0 else 0.0
                lam = rate[r, c] * frame_time
                _increments(inc, hist, i, c, lam, pers[r, c], pers_weight, key, pix, nreads)
        for i in range(s1 - s0):
            r = s0 + i + 1
            for c in range(nx):
                cc = c + 1
                f_lo, fp_lo = _legendre(-1.0, coef, r, cc)
                f_hi, fp_hi = _legendre(1.0, coef, r, cc)
                ends[i, c, 0] = f_lo
                ends[i, c, 1] = fp_lo
                ends[i, c, 2] = f_hi
                ends[i, c, 3] = fp_hi
                # start the Newton iteration at the middle of the fitted range
                z[i, c] = 0.0
                f_now[i, c], fp_now[i, c] = _linearity(0.0, coef, r, cc, f_lo, fp_lo, f_hi, fp_hi)
                first_sat[s0 + i, c] = 0
        for k in range(1, nreads + 1):
            for i in range(rows):
                for c in range(W):
                    q[i, c] += inc[k, i, c]
            for d in range(cr_ptr[k - 1], cr_ptr[k]):
                i = cr_row[d] - s0
                if 0 <= i < rows:
                    q[i, cr_col[d]] += cr_e[d]
            res = res_of_read[k]
            if res < 0:
                continue
            for i in range(s1 - s0):
                r = s0 + i + 1
                # IPC: the charge of each neighbour times its kernel towards this pixel
                for c in range(nx):
                    target[c] = 0.0
                for a in range(3):
                    for b in range(3):
                        qa = q[i + 2 - a]
                        ka = ipc[a, b, r + 1 - a]
                        for c in range(nx):
                            target[c] += qa[c + 2 - b] * ka[c + 2 - b]
                for c in range(nx):
                    cc = c + 1
                    if not science[r, cc]:
                        continue
                    goal = target[c] * inv_gain[r, cc]
                    half = 0.5 * (smax[r, cc] - smin[r, cc])
                    zz = z[i, c]
                    f, fp = f_now[i, c], fp_now[i, c]
                    for _ in range(30):
                        dz = (goal - f) / fp
                        zz += dz
                        if abs(dz) * half < 1e-4:
                            f = goal  # converged: the last step is below 1e-4 DN
                            break
                        f, fp = _linearity(zz, coef, r, cc, ends[i, c, 0], ends[i, c, 1],
                                           ends[i, c, 2], ends[i, c, 3])
                    z[i, c], f_now[i, c], fp_now[i, c] = zz, f, fp
                    s = smin[r, cc] + half * (zz + 1.0)
                    if s >= sat[r, cc]:
                        s = sat[r, cc]
                        if first_sat[s0 + i, c] == 0:
                            first_sat[s0 + i, c] = k
                    sums[res, s0 + i, c] += s


@numba.njit(nogil=True, cache=True)
def _apportion_kernel(lam, pixel, key, res_of_read, sums):
    """Cumulative electrons of every read, summed into resultants (see :func:`apportion`)."""
    nreads = res_of_read.shape[0] - 1
    npix = lam.shape[0]
    inc = np.empty((nreads + 1, 1, npix), np.float32)
    hist = np.empty(nreads + 1, np.int64)
    no_weight = np.zeros(nreads + 1)
    for j in range(npix):
        _increments(inc, hist, 0, j, lam[j], 0.0, no_weight, key, pixel[j], nreads)
        q = 0.0
        for k in range(1, nreads + 1):
            q += inc[k, 0, j]
            res = res_of_read[k]
            if res >= 0:
                sums[res, j] += q


def apportion(expected: np.ndarray, pixel: np.ndarray, ma_table: MATable,
              key: int) -> np.ndarray:
    """Resultants (mean cumulative electrons) of pixels receiving ``expected`` electrons.

    The electrons a pixel collects over the exposure, at a constant rate, are
    apportioned into its reads exactly as the L1 simulation does it (the same
    Poisson draws, from the same counter-based generator): ``expected`` (npix,)
    is the mean over the exposure, ``pixel`` (npix,) the index that keys each
    pixel's draws.  Returns float64 (nres, npix): each resultant the mean of
    its reads' cumulative charge.  No detector effects are applied.
    """
    if ma_table.nreads >= _TOTAL_SLOT:
        raise ValueError(f"MA tables are limited to {_TOTAL_SLOT - 1} reads, "
                         f"got {ma_table.nreads}")
    lam = np.maximum(np.asarray(expected, np.float64), 0.0) / ma_table.nreads
    sums = np.zeros((ma_table.nresultants, lam.size))
    _apportion_kernel(np.ascontiguousarray(lam), np.ascontiguousarray(pixel, np.int64),
                      np.uint64(key), _resultant_index(ma_table), sums)
    counts = np.array([len(r) for r in ma_table.read_pattern], np.float64)
    return sums / counts[:, None]


def _resultant_index(ma_table: MATable) -> np.ndarray:
    """Resultant of each read (index 1..nreads; -1 for reads no resultant keeps)."""
    out = np.full(ma_table.nreads + 1, -1, np.int64)
    for r, reads in enumerate(ma_table.read_pattern):
        out[list(reads)] = r
    return out


@dataclass
class TileInputs:
    """What the kernel needs for one tile, on the tile extended by one pixel.

    ``expected`` is the ideal count image (electrons over the exposure at unit
    QE, 0 outside the science array); the other per-pixel arrays come from the
    detector model's :class:`~romandask.detector.reference.Region` of the
    same extended rectangle (pixels beyond the frame padded with no signal).
    """

    expected: np.ndarray        # (H, W) electrons
    region: object              # Region on the extended rectangle
    science: np.ndarray         # (H, W) bool: light-sensitive pixels
    persistence: np.ndarray | None = None  # (H, W) e-/s amplitude at 1000 s, or None


def ramp_means(inputs: TileInputs, ma_table: MATable, key: int, pixel0: int, row_stride: int,
               crs=None, persistence_weight: np.ndarray | None = None,
               strip: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Mean raw signal (DN, before bias and read noise) of every resultant of the tile.

    Returns ``(means, first_saturated_read)``: float32 (nres, ny, nx) and int16
    (ny, nx), 0 where the pixel never saturates.  Reference (non-science)
    pixels are left at 0 for :func:`finish_resultants`.

    ``crs`` holds deposits on the extended tile: arrays ``row``, ``col``,
    ``read`` (1-based), ``electrons``.  ``persistence_weight[k]`` multiplies
    ``inputs.persistence`` to give the extra electrons per second during read k.
    """
    if ma_table.nreads >= _TOTAL_SLOT:
        raise ValueError(f"MA tables are limited to {_TOTAL_SLOT - 1} reads, "
                         f"got {ma_table.nreads}")
    reg = inputs.region
    H, W = inputs.expected.shape
    t_exp = ma_table.exposure_time
    gain = reg.gain.astype(np.float64)
    rate = np.where(inputs.science,
                    inputs.expected * reg.flat / t_exp + reg.dark_slope * gain, 0.0)
    rate = np.maximum(rate, 0.0)
    reset_e = np.where(inputs.science, reg.reset_noise * gain, 0.0)
    nreads = ma_table.nreads
    if crs is not None and len(crs["read"]):
        order = np.lexsort((crs["col"], crs["row"], crs["read"]))
        cr_read = np.asarray(crs["read"])[order]
        cr_row = np.asarray(crs["row"], np.int64)[order]
        cr_col = np.asarray(crs["col"], np.int64)[order]
        cr_e = np.asarray(crs["electrons"], np.float64)[order]
        cr_ptr = np.searchsorted(cr_read, np.arange(1, nreads + 2), side="left").astype(np.int64)
        cr_ptr = np.concatenate([[0], cr_ptr[1:]])  # deposits of read k: cr_ptr[k-1]:cr_ptr[k]
    else:
        cr_row = cr_col = np.zeros(0, np.int64)
        cr_e = np.zeros(0)
        cr_ptr = np.zeros(nreads + 1, np.int64)
    pers = (np.zeros((H, W)) if inputs.persistence is None
            else inputs.persistence.astype(np.float64))
    weight = (np.zeros(nreads + 1) if persistence_weight is None
              else np.asarray(persistence_weight, np.float64))
    ny, nx = H - 2, W - 2
    sums = np.zeros((ma_table.nresultants, ny, nx))
    first_sat = np.zeros((ny, nx), np.int16)
    _ramp_kernel(rate, pers, weight, reset_e, np.ascontiguousarray(reg.ipc, np.float32),
                 1.0 / gain,
                 reg.lin_coeffs.astype(np.float64), reg.smin.astype(np.float64),
                 reg.smax.astype(np.float64), reg.saturation.astype(np.float64),
                 inputs.science, _resultant_index(ma_table), float(ma_table.frame_time),
                 np.uint64(key), int(pixel0), int(row_stride),
                 cr_ptr, cr_row, cr_col, cr_e, int(strip), sums, first_sat)
    counts = np.array([len(r) for r in ma_table.read_pattern], np.float64)
    return (sums / counts[:, None, None]).astype(np.float32), first_sat


def saturation_dq(first_sat: np.ndarray, ma_table: MATable) -> np.ndarray:
    """Group DQ (uint8): SATURATED in every resultant holding a saturated read."""
    last_read = np.array([r[-1] for r in ma_table.read_pattern])
    sat = (first_sat[None] > 0) & (first_sat[None] <= last_read[:, None, None])
    return np.where(sat, np.uint8(groupflags.SATURATED), np.uint8(0))


def finish_resultants(means: np.ndarray, science: np.ndarray, bias: np.ndarray,
                      read_noise: np.ndarray, reads_per_resultant: np.ndarray,
                      correlated: np.ndarray, generator: np.random.Generator,
                      reference_level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw resultants (uint16) from the mean signal: bias, noise, quantisation, ADC.

    ``means`` (nres, ny, nx) is the read-averaged raw signal of science pixels;
    reference pixels instead sit at ``reference_level`` (their bias plus reset
    noise, DN).  ``bias`` (nres, ny, nx) is the bias correction,
    ``read_noise`` (ny, nx) the sigma of one read, ``correlated`` (nres, ny,
    nx) the read-averaged correlated noise and channel offsets.  Returns the
    data and a uint8 group DQ holding AD_FLOOR where the ADC clipped at 0.
    """
    white = generator.standard_normal(means.shape, dtype=np.float32)
    white *= read_noise[None] / np.sqrt(reads_per_resultant)[:, None, None].astype(np.float32)
    signal = np.where(science[None], means, reference_level[None]).astype(np.float32)
    signal += bias
    signal += white
    signal += correlated
    np.rint(signal, out=signal)
    floor = signal <= 0
    np.clip(signal, 0, ADC_MAX, out=signal)
    dq = np.where(floor, np.uint8(groupflags.AD_FLOOR), np.uint8(0))
    return signal.astype(np.uint16), dq

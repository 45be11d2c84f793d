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
rows, so the per-pixel reference data stay in cache over all reads.  The
linearity curve is inverted by Newton's method from the previous read's
solution: its Legendre series is evaluated as a polynomial in z, and the
first iteration of a row runs as one branch-free (SIMD) pass, the few pixels
that need more (the first read, bright pixels, cosmic-ray hits) then
iterating on their own until the step is below 1e-4 DN.  Random
numbers come from a counter-based generator keyed by (run key, pixel, read):
a pixel's draws do not depend on the tile that computes them, so a tile can
recompute the one-pixel halo of charge that IPC needs from its neighbours
exactly as they do, and tiles agree at their edges without communicating.

The bias correction, read noise, correlated (1/f) and channel noise,
quantisation and the ADC limit are applied to the resultants afterwards
(:func:`finish_resultants`): read noise is independent from read to read, so
the average of ``n`` reads carries ``sigma / sqrt(n)`` and resultants are
uncorrelated in it, which is drawn exactly per resultant.  That step is one
compiled float32 pass per resultant, the same arithmetic as NumPy's.
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
# linearity, per pixel: the Legendre curve as a polynomial in z
# --------------------------------------------------------------------------

#: Power-basis coefficients the fast Newton pass evaluates (a cubic); curves of
#: a higher order go through the general pass.
_CUBIC = 4
#: Newton iterations allowed for one read.
_NEWTON_ITERATIONS = 30
#: A Newton iteration stops once its step is below this many raw DN.
_NEWTON_TOL = 1e-4

# Newton state per pixel of a strip, in rows of ``state[i]`` (fields, nx):
_Z, _GOAL, _INV, _HALF, _INV_GAIN, _SMIN = range(6)
_NSTATE = 6


def legendre_to_power(order: int) -> np.ndarray:
    """Matrix ``M`` (max(order, 4), order): power coefficients = M @ Legendre coefficients.

    ``sum_L c_L P_L(z) = sum_j (M c)_j z^j``; curves of order below 4 get zero
    coefficients up to z^3.  In float64 the change of basis is exact to ~1e-16
    of the curve's range for the low orders of linearity files.
    """
    m = np.zeros((max(order, _CUBIC), order))
    for ell in range(order):
        unit = np.zeros(ell + 1)
        unit[ell] = 1.0
        power = np.polynomial.legendre.leg2poly(unit)
        m[:len(power), ell] = power
    return m


# The per-pixel arithmetic below is compiled without fastmath: each pixel is
# computed with the same IEEE operations whether its row is processed in SIMD
# lanes or in the scalar remainder, so a pixel's value does not depend on the
# tile (or the column within it) that computes it.

@numba.njit(nogil=True, error_model="numpy")
def _newton_cubic(target, state, poly, science, bad, nx):
    """First Newton iteration of one row for a cubic curve; returns how many did not converge.

    Each pixel steps from the previous read's state (its goal and inverse
    slope), evaluates the curve there, and takes the Newton step of that
    evaluation; ``bad[c]`` marks science pixels whose last step exceeds the
    tolerance (they continue in :func:`_newton_more`).  Beyond ``|z| = 1``
    the curve continues along its tangent.
    """
    nbad = 0
    for c in range(nx):
        goal = target[c] * state[_INV_GAIN, c]
        zz = state[_Z, c] + (goal - state[_GOAL, c]) * state[_INV, c]
        zc = min(max(zz, -1.0), 1.0)
        a1, a2, a3 = poly[1, c], poly[2, c], poly[3, c]
        p = ((a3 * zc + a2) * zc + a1) * zc + poly[0, c]
        dp = (3.0 * a3 * zc + 2.0 * a2) * zc + a1
        inv = 1.0 / dp
        dz = (goal - (p + dp * (zz - zc))) * inv
        state[_Z, c] = zz + dz
        state[_GOAL, c] = goal
        state[_INV, c] = inv
        b = science[c] & (abs(dz) * state[_HALF, c] >= _NEWTON_TOL)
        bad[c] = b
        nbad += b
    return nbad


@numba.njit(nogil=True, error_model="numpy", inline="always")
def _curve(poly, c, zz):
    """Value and z-derivative of the polynomial ``poly[:, c]`` at ``zz`` (tangent past |z| = 1)."""
    zc = min(max(zz, -1.0), 1.0)
    n = poly.shape[0]
    p = poly[n - 1, c]
    dp = 0.0
    for j in range(n - 2, -1, -1):
        dp = dp * zc + p
        p = p * zc + poly[j, c]
    return p + dp * (zz - zc), dp


@numba.njit(nogil=True, error_model="numpy")
def _newton_general(target, state, poly, science, bad, nx):
    """:func:`_newton_cubic` for a curve of any order (Horner's scheme)."""
    nbad = 0
    for c in range(nx):
        goal = target[c] * state[_INV_GAIN, c]
        zz = state[_Z, c] + (goal - state[_GOAL, c]) * state[_INV, c]
        f, dp = _curve(poly, c, zz)
        inv = 1.0 / dp
        dz = (goal - f) * inv
        state[_Z, c] = zz + dz
        state[_GOAL, c] = goal
        state[_INV, c] = inv
        b = science[c] & (abs(dz) * state[_HALF, c] >= _NEWTON_TOL)
        bad[c] = b
        nbad += b
    return nbad


@numba.njit(nogil=True, error_model="numpy")
def _newton_more(state, poly, bad, nx):
    """Newton iterations of the pixels ``bad`` marks, until their step is below tolerance."""
    for c in range(nx):
        if not bad[c]:
            continue
        goal = state[_GOAL, c]
        zz = state[_Z, c]
        inv = state[_INV, c]
        for _ in range(_NEWTON_ITERATIONS - 1):
            f, dp = _curve(poly, c, zz)
            inv = 1.0 / dp
            dz = (goal - f) * inv
            zz += dz
            if abs(dz) * state[_HALF, c] < _NEWTON_TOL:
                break
        state[_Z, c] = zz
        state[_INV, c] = inv


@numba.njit(nogil=True, error_model="numpy")
def _accumulate(state, sat, science, sums, first_sat, read, nx):
    """Raw signal of one read of one row (clipped at saturation) into its resultant sum."""
    for c in range(nx):
        s = state[_SMIN, c] + state[_HALF, c] * (state[_Z, c] + 1.0)
        full = s >= sat[c + 1]
        s = sat[c + 1] if full else s
        inside = science[c + 1]
        first_sat[c] = read if (full and inside and first_sat[c] == 0) else first_sat[c]
        sums[c] += s if inside else 0.0


@numba.njit(nogil=True, error_model="numpy")
def _strip_means(sums, reads_per, means, row0, nrows, nx):
    """Resultant means (float32) of a strip from its sums."""
    for i in range(nrows):
        for res in range(sums.shape[1]):
            for c in range(nx):
                means[res, row0 + i, c] = np.float32(sums[i, res, c] / reads_per[res])


# --------------------------------------------------------------------------
# the kernel
# --------------------------------------------------------------------------

@numba.njit(inline="always")
def _read_counts(counts, lam, pers, weight, key, pixel, nreads):
    """Electrons arriving in each read of one pixel, into ``counts[1:nreads + 1]``.

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
            counts[k] = _poisson(lk, ek, key, pixel, k)
        return
    for k in range(nreads + 1):
        counts[k] = 0.0
    if lam > 0.0:
        total_lam = lam * nreads
        if total_lam >= _INVERSION_LIMIT:  # (_poisson's choice, without its exp)
            total = _poisson_ptrs(total_lam, key, pixel, _TOTAL_SLOT)
        else:
            total = int(_poisson(total_lam, math.exp(-total_lam), key, pixel, _TOTAL_SLOT))
        photon_key = key ^ _PHOTON_KEY
        base = np.uint64(pixel) * _PHOTON_SLOTS
        nr = np.uint64(nreads)
        # photons 2m and 2m + 1 take the low and high halves of word m
        for m in range(total >> 1):
            word = _bits(photon_key, base + np.uint64(m))
            counts[1 + int(((word & _LOW32) * nr) >> _S32)] += 1.0
            counts[1 + int(((word >> _S32) * nr) >> _S32)] += 1.0
        if total & 1:
            word = _bits(photon_key, base + np.uint64(total >> 1))
            counts[1 + int(((word & _LOW32) * nr) >> _S32)] += 1.0


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _ramp_kernel(rate, pers, pers_weight, reset_e, ipc, gain, coef, to_power, smin, smax, sat,
                 science, res_of_read, reads_per, frame_time, key, pixel0, row_stride,
                 cr_ptr, cr_row, cr_col, cr_e, strip, means, first_sat):
    """Resultant means of the raw signal of every pixel of a tile.

    Arrays named after pixels are on the tile extended by one pixel on every
    side (``H = ny + 2``, ``W = nx + 2``); ``means`` (nres, ny, nx, float32)
    and ``first_sat`` (ny, nx) are on the tile.  ``pixel0 + r * row_stride + c``
    is the global index of extended pixel (r, c), which keys its random draws.

    The tile is walked in strips of ``strip`` rows: the charge of a strip's
    rows and of the rows above and below it (IPC's reach) is drawn for every
    read, the two rows below carried over to the next strip; then read by
    read the charge accumulates, IPC spreads it and Newton's method inverts
    the linearity curve of each pixel from where the previous read left it.
    """
    H, W = rate.shape
    ny, nx = H - 2, W - 2
    nreads = res_of_read.shape[0] - 1
    nres = reads_per.shape[0]
    npow = to_power.shape[0]
    order = coef.shape[0]
    q0 = np.empty((strip + 2, W))
    q = np.empty((strip + 2, W))
    inc = np.empty((nreads + 1, strip + 2, W), np.float32)
    counts = np.empty(nreads + 1)
    target = np.empty(nx)
    bad = np.empty(nx, np.bool_)
    state = np.empty((strip, _NSTATE, nx))
    poly = np.empty((strip, npow, nx))
    sums = np.empty((strip, nres, nx))
    for s0 in range(0, ny, strip):
        s1 = min(s0 + strip, ny)
        rows = s1 - s0 + 2                      # extended rows s0 .. s1 + 1
        fresh = 0
        if s0 > 0:
            # the previous strip's last two extended rows are this strip's first two
            for i in range(2):
                src = strip + i
                for c in range(W):
                    q0[i, c] = q0[src, c]
                for k in range(1, nreads + 1):
                    for c in range(W):
                        inc[k, i, c] = inc[k, src, c]
            fresh = 2
        for i in range(fresh, rows):
            r = s0 + i
            for c in range(W):
                pix = pixel0 + r * row_stride + c
                q0[i, c] = reset_e[r, c] * _normal(key, pix, 0) if reset_e[r, c] > 0 else 0.0
                _read_counts(counts, rate[r, c] * frame_time, pers[r, c], pers_weight, key,
                             pix, nreads)
                for k in range(1, nreads + 1):
                    inc[k, i, c] = counts[k]
        for i in range(rows):
            for c in range(W):
                q[i, c] = q0[i, c]
        for i in range(s1 - s0):
            r = s0 + i + 1
            st = state[i]
            pw = poly[i]
            for c in range(nx):
                cc = c + 1
                for j in range(npow):
                    acc = 0.0
                    for ell in range(order):
                        acc += to_power[j, ell] * coef[ell, r, cc]
                    pw[j, c] = acc
                lo, hi = np.float64(smin[r, cc]), np.float64(smax[r, cc])
                # start the Newton iteration at the middle of the fitted range
                st[_Z, c] = 0.0
                st[_GOAL, c] = pw[0, c]
                st[_INV, c] = 1.0 / pw[1, c]
                st[_HALF, c] = 0.5 * (hi - lo)
                st[_INV_GAIN, c] = 1.0 / np.float64(gain[r, cc])
                st[_SMIN, c] = lo
                first_sat[s0 + i, c] = 0
                for res in range(nres):
                    sums[i, res, c] = 0.0
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
                sci = science[r, 1:]
                if npow == _CUBIC:
                    nbad = _newton_cubic(target, state[i], poly[i], sci, bad, nx)
                else:
                    nbad = _newton_general(target, state[i], poly[i], sci, bad, nx)
                if nbad:
                    _newton_more(state[i], poly[i], bad, nx)
                _accumulate(state[i], sat[r], science[r], sums[i, res], first_sat[s0 + i], k, nx)
        _strip_means(sums, reads_per, means, s0, s1 - s0, nx)


@numba.njit(nogil=True, cache=True)
def _apportion_kernel(lam, pixel, key, res_of_read, sums):
    """Cumulative electrons of every read, summed into resultants (see :func:`apportion`)."""
    nreads = res_of_read.shape[0] - 1
    npix = lam.shape[0]
    counts = np.empty(nreads + 1)
    no_weight = np.zeros(nreads + 1)
    for j in range(npix):
        _read_counts(counts, lam[j], 0.0, no_weight, key, pixel[j], nreads)
        q = 0.0
        for k in range(1, nreads + 1):
            q += np.float32(counts[k])  # as the L1 kernel stores them
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
               strip: int = 4) -> tuple[np.ndarray, np.ndarray]:
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
    means = np.empty((ma_table.nresultants, ny, nx), np.float32)
    first_sat = np.zeros((ny, nx), np.int16)
    coef = np.ascontiguousarray(reg.lin_coeffs, np.float32)
    _ramp_kernel(rate, pers, weight, reset_e, np.ascontiguousarray(reg.ipc, np.float32),
                 np.ascontiguousarray(reg.gain, np.float32), coef,
                 legendre_to_power(coef.shape[0]),
                 np.ascontiguousarray(reg.smin, np.float32),
                 np.ascontiguousarray(reg.smax, np.float32),
                 np.ascontiguousarray(reg.saturation, np.float64),
                 np.ascontiguousarray(inputs.science, np.bool_), _resultant_index(ma_table),
                 _reads_per_resultant(ma_table), float(ma_table.frame_time),
                 np.uint64(key), int(pixel0), int(row_stride),
                 cr_ptr, cr_row, cr_col, cr_e, int(strip), means, first_sat)
    return means, first_sat


def _reads_per_resultant(ma_table: MATable) -> np.ndarray:
    return np.array([len(r) for r in ma_table.read_pattern], np.float64)


def _last_reads(ma_table: MATable) -> np.ndarray:
    return np.array([r[-1] for r in ma_table.read_pattern], np.int64)


def saturation_dq(first_sat: np.ndarray, ma_table: MATable) -> np.ndarray:
    """Group DQ (uint8): SATURATED in every resultant holding a saturated read."""
    last_read = _last_reads(ma_table)
    sat = (first_sat[None] > 0) & (first_sat[None] <= last_read[:, None, None])
    return np.where(sat, np.uint8(groupflags.SATURATED), np.uint8(0))


@dataclass(frozen=True)
class RowNoise:
    """Correlated noise that is one value per row and channel: the read-averaged
    ``common`` (nres, ny) and ``channel`` (nres, 32, ny) series and the channel
    ``columns`` (nx,) of each column; pixel (y, x) of resultant i sees
    ``common[i, y] + channel[i, columns[x], y]`` (float32)."""

    common: np.ndarray
    channel: np.ndarray
    columns: np.ndarray

    def cube(self) -> np.ndarray:
        """The noise of every pixel, float32 (nres, ny, nx)."""
        return (self.common[:, :, None]
                + self.channel[:, self.columns].transpose(0, 2, 1)).astype(np.float32)


_SATURATED = np.uint8(groupflags.SATURATED)
_AD_FLOOR = np.uint8(groupflags.AD_FLOOR)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _finish_plane(means, science, bias, white, read_noise, n_reads, corr, rows_noise,
                  common, channel, columns, reference_level, first_sat, last_read, data, dq):
    """One resultant of :func:`finish_resultants`, in float32 exactly as NumPy would.

    The noise is ``corr`` (ny, nx) or, with ``rows_noise``, ``common[y] +
    channel[columns[x], y]``; ``first_sat`` > 0 and <= ``last_read`` flags
    SATURATED.
    """
    ny, nx = means.shape
    root = np.float32(math.sqrt(n_reads))
    noise = np.empty(nx, np.float32)
    zero, top = np.float32(0), np.float32(ADC_MAX)
    for y in range(ny):
        if rows_noise:
            for x in range(nx):
                noise[x] = common[y] + channel[columns[x], y]
            row = noise
        else:
            row = corr[y]
        for x in range(nx):
            s = means[y, x] if science[y, x] else reference_level[y, x]
            s = s + bias[y, x]
            s = s + white[y, x] * (read_noise[y, x] / root)
            s = np.float32(np.rint(s + row[x]))
            fs = first_sat[y, x]
            dq[y, x] = ((_AD_FLOOR if s <= zero else np.uint8(0))
                        | (_SATURATED if (fs > 0) & (fs <= last_read) else np.uint8(0)))
            data[y, x] = np.uint16(min(max(s, zero), top))


def finish_resultants(means: np.ndarray, science: np.ndarray, bias: np.ndarray,
                      read_noise: np.ndarray, reads_per_resultant: np.ndarray,
                      correlated, generator: np.random.Generator,
                      reference_level: np.ndarray, first_sat: np.ndarray | None = None,
                      ma_table: MATable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw resultants (uint16) from the mean signal: bias, noise, quantisation, ADC.

    ``means`` (nres, ny, nx) is the read-averaged raw signal of science pixels;
    reference pixels instead sit at ``reference_level`` (their bias plus reset
    noise, DN).  ``bias`` (nres, ny, nx) is the bias correction,
    ``read_noise`` (ny, nx) the sigma of one read, ``correlated`` the
    read-averaged correlated noise and channel offsets: a float32 cube (nres,
    ny, nx) or a :class:`RowNoise`.  Returns the data and a uint8 group DQ
    holding AD_FLOOR where the ADC clipped at 0 and, given ``first_sat`` (the
    first saturated read of each pixel, :func:`ramp_means`) and its
    ``ma_table``, SATURATED as :func:`saturation_dq` says.

    The read noise is drawn from ``generator`` resultant by resultant, the
    same float32 stream as one draw of the whole cube; each resultant is then
    finished in one compiled pass, without whole-cube temporaries.
    """
    nres, ny, nx = means.shape
    data = np.empty((nres, ny, nx), np.uint16)
    dq = np.empty((nres, ny, nx), np.uint8)
    white = np.empty((ny, nx), np.float32)
    rows_noise = isinstance(correlated, RowNoise)
    none2, none1 = np.zeros((1, 1), np.float32), np.zeros(1, np.float32)
    if first_sat is None:
        first_sat, last = np.zeros((ny, nx), np.int16), np.zeros(nres, np.int64)
    else:
        last = _last_reads(ma_table)
    reads = np.asarray(reads_per_resultant, np.float64)
    science = np.ascontiguousarray(science, np.bool_)
    for i in range(nres):
        generator.standard_normal(dtype=np.float32, out=white)
        if rows_noise:
            corr, common, channel = none2, correlated.common[i], correlated.channel[i]
            columns = np.asarray(correlated.columns, np.int64)
        else:
            corr = np.ascontiguousarray(correlated[i], np.float32)
            common, channel, columns = none1, none2, np.zeros(1, np.int64)
        _finish_plane(np.asarray(means[i], np.float32), science,
                      np.asarray(bias[i], np.float32), white,
                      np.asarray(read_noise, np.float32), float(reads[i]), corr, rows_noise,
                      np.asarray(common, np.float32), np.asarray(channel, np.float32), columns,
                      np.asarray(reference_level, np.float32), first_sat, int(last[i]),
                      data[i], dq[i])
    return data, dq

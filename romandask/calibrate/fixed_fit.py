"""Optimal fixed-weight ramp fit with jump detection (the seed's fitter).

Model
-----
The resultants ``R_i`` of a pixel (linearised, in electrons) are the means of
``n_i`` reads at times ``k * frame_time``.  Their differences
``d_k = R_{k+1} - R_k`` remove the unknown reset level, and have covariance
``Sigma = sigma^2 Sigma_r + rate Sigma_p``: ``Sigma_r`` from read noise
(``var R_i = sigma^2 / n_i``), ``Sigma_p`` from the Poisson noise of the
accumulated charge (``cov(R_i, R_j) = rate * tbar_i`` for ``i < j``, and
``var R_i = rate * tau_i`` with ``tau_i = n_i^-2 sum_{a,b} min(t_a, t_b)``;
Casertano 2022, Roman-STScI-000394).

The slope is the generalised least-squares estimate from the kept
differences, ``w = Sigma^-1 dt / (dt' Sigma^-1 dt)``, with the weights
computed once for an assumed ratio ``u = rate / sigma^2`` (the seed's
``RAMP_OPT_PARS``: slope 0.4 DN/s, gain 1.8 e-/DN, sigma_read 6.5 DN), so
every pixel uses the same weights for the same set of differences: the fit
is linear in the data, unbiased for any rate, and close to optimal near the
design rate.  The variances of the slope follow from the pixel's own read
noise and fitted rate: ``var_rnoise = sigma^2 w' Sigma_r w`` and
``var_poisson = max(slope, 0) w' Sigma_p w``.

Jumps (Sharma & Casertano 2024, PASP 136, 054504, as the seed uses them):
for each difference, and each pair of adjacent differences, the local slope
minus the global one, divided by its standard deviation (which accounts for
the shared data), is a significance.  The largest significance above the
threshold ``S(slope)`` marks a jump: its difference (or pair) is dropped and
the pixel refitted, until none is left above the threshold.  ``S`` runs
log-linearly from ``SthreshA`` at slopes <= ``IthreshA`` to ``SthreshB`` at
slopes >= ``IthreshB`` (slopes in DN/s, with the pixel's gain).  Only
upward jumps are flagged (cosmic rays deposit charge).

Resultants flagged SATURATED or DO_NOT_USE are left out; differences join
consecutive usable resultants.  A pixel with fewer than two usable
resultants, or no difference left, has no slope (NaN, DO_NOT_USE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from roman_datamodels.dqflags import group as groupflags
from roman_datamodels.dqflags import pixel as pixelflags

__all__ = ["JumpThresholds", "RampOptimization", "RampTimes", "fit_fixed", "poisson_coefficient"]

#: Significance above the clean slope past which a neighbour of a jump is taken
#: to hold part of it.
SUSPECT_SIGNIFICANCE = 3.0
#: Significance below the slope past which a difference shows the slope to be
#: raised by hits the jump search could not single out (tested only in pixels
#: where a jump was found).
LOW_SIGNIFICANCE = 4.0
_EXCLUDE = np.uint32(groupflags.SATURATED | groupflags.DO_NOT_USE)
_SATURATED = np.uint32(groupflags.SATURATED)
_JUMP = np.uint32(pixelflags.JUMP_DET)
_NO_SLOPE = np.uint32(pixelflags.DO_NOT_USE)


@dataclass(frozen=True)
class JumpThresholds:
    """The seed's ``JUMP_DETECT_PARS`` (sigma thresholds at slopes in DN/s)."""

    SthreshA: float = 5.5
    SthreshB: float = 4.5
    IthreshA: float = 1.0
    IthreshB: float = 1000.0

    def __post_init__(self):
        if not 0 < self.IthreshA < self.IthreshB:
            raise ValueError("JUMP_DETECT_PARS needs 0 < IthreshA < IthreshB, got "
                             f"{self.IthreshA} and {self.IthreshB}")
        if not (self.SthreshA > 0 and self.SthreshB > 0):
            raise ValueError("JUMP_DETECT_PARS thresholds SthreshA and SthreshB must be > 0")

    def threshold(self, slope_dn):
        """The significance threshold at a slope (DN/s)."""
        x = np.clip(slope_dn, self.IthreshA, self.IthreshB)
        frac = np.log(x / self.IthreshA) / np.log(self.IthreshB / self.IthreshA)
        return self.SthreshA + (self.SthreshB - self.SthreshA) * frac


@dataclass(frozen=True)
class RampOptimization:
    """The rate the fixed weights are optimal for (the seed's ``RAMP_OPT_PARS``)."""

    slope: float = 0.4        # DN/s
    gain: float = 1.8         # e-/DN
    sigma_read: float = 6.5   # DN

    @property
    def u(self) -> float:
        """rate / sigma^2 in electrons: 1/s."""
        return self.slope / self.gain / self.sigma_read ** 2


@dataclass(frozen=True)
class RampTimes:
    """Per-resultant timing of a read pattern: reads per resultant, tbar, tau, covariances."""

    nreads: np.ndarray   # (nres,)
    tbar: np.ndarray     # (nres,) s
    cov_read: np.ndarray     # (nres, nres) resultant covariance per unit read variance
    cov_poisson: np.ndarray  # (nres, nres) per unit rate (s)

    @classmethod
    def from_pattern(cls, read_pattern, frame_time: float) -> "RampTimes":
        nres = len(read_pattern)
        times = [np.asarray(reads, np.float64) * frame_time for reads in read_pattern]
        n = np.array([len(t) for t in times], np.float64)
        tbar = np.array([t.mean() for t in times])
        cp = np.empty((nres, nres))
        for i in range(nres):
            for j in range(nres):
                cp[i, j] = np.minimum.outer(times[i], times[j]).mean()
        return cls(n, tbar, np.diag(1.0 / n), cp)


# --------------------------------------------------------------------------
# compiled kernel
# --------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _solve_spd(a, b):
    """Solve a x = b for a small symmetric positive-definite a (Cholesky)."""
    m = a.shape[0]
    low = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1):
            s = a[i, j]
            for k in range(j):
                s -= low[i, k] * low[j, k]
            if i == j:
                low[i, i] = math.sqrt(max(s, 1e-300))
            else:
                low[i, j] = s / low[j, j]
    y = np.empty(m)
    for i in range(m):
        s = b[i]
        for k in range(i):
            s -= low[i, k] * y[k]
        y[i] = s / low[i, i]
    x = np.empty(m)
    for i in range(m - 1, -1, -1):
        s = y[i]
        for k in range(i + 1, m):
            s -= low[k, i] * x[k]
        x[i] = s / low[i, i]
    return x


@numba.njit(cache=True, nogil=True)
def _diff_cov(cov, good, m):
    """Covariance of the differences of consecutive usable resultants."""
    out = np.empty((m - 1, m - 1))
    for k in range(m - 1):
        a0, a1 = good[k], good[k + 1]
        for l in range(m - 1):
            b0, b1 = good[l], good[l + 1]
            out[k, l] = cov[a1, b1] - cov[a1, b0] - cov[a0, b1] + cov[a0, b0]
    return out


@numba.njit(cache=True, nogil=True)
def _quad(v, mat, idx, nk):
    s = 0.0
    for i in range(nk):
        for j in range(nk):
            s += v[i] * mat[idx[i], idx[j]] * v[j]
    return s


@numba.njit(cache=True, nogil=True)
def _gls(d, dt, sr, sp, u, use, idx, w):
    """Fixed-weight slope from the differences where ``use``; fills ``idx`` and ``w``.

    Returns the number of differences used (0: no slope) and the slope.
    """
    nk = 0
    for k in range(d.shape[0]):
        if use[k]:
            idx[nk] = k
            nk += 1
    if nk == 0:
        return 0, np.nan
    sig = np.empty((nk, nk))
    rhs = np.empty(nk)
    for i in range(nk):
        rhs[i] = dt[idx[i]]
        for j in range(nk):
            sig[i, j] = sr[idx[i], idx[j]] + u * sp[idx[i], idx[j]]
    x = _solve_spd(sig, rhs)
    norm = 0.0
    for i in range(nk):
        norm += x[i] * rhs[i]
    slope = 0.0
    for i in range(nk):
        w[i] = x[i] / norm
        slope += w[i] * d[idx[i]]
    return nk, slope


@numba.njit(cache=True, nogil=True)
def _fit_pixel(r, good, m, nreads, tbar, cr, cp, u, sig2, gain, thr, robust, out):
    """Fit one pixel with usable resultants ``good[:m]``; returns the jump flag.

    ``out`` receives (slope, var_rnoise, var_poisson, Poisson coefficient);
    thr = (SA, SB, IA, IB).  Without ``robust``, the plain fit and jump
    search only: True (``out`` unset) as soon as a jump is found, for the
    caller to fit again with ``robust``, which adds the steps that handle
    several hits (the weighted-median cut, the suspect neighbours, the
    differences far below the slope).
    """
    nd = m - 1
    sr = _diff_cov(cr, good, m)
    sp = _diff_cov(cp, good, m)
    d = np.empty(nd)
    dt = np.empty(nd)
    for k in range(nd):
        d[k] = r[good[k + 1]] - r[good[k]]
        dt[k] = tbar[good[k + 1]] - tbar[good[k]]
    keep = np.ones(nd, np.bool_)
    suspect = np.zeros(nd, np.bool_)
    jumped = False
    idx = np.empty(nd, np.int64)
    w = np.empty(nd)
    v = np.empty(nd)
    base_idx = np.empty(nd, np.int64)
    base_w = np.empty(nd)
    # Several cosmic rays raise the fitted slope towards themselves, so that
    # each, compared with it, can stay under the threshold.  Cosmic rays only
    # add charge: a weighted median of the differences' rates stands while
    # fewer than half of them are hit, and every difference that rises above
    # it by more than the threshold is dropped before the search below.
    if robust and nd > 2:
        rates = np.empty(nd)
        weights = np.empty(nd)
        for k in range(nd):
            # each rate weighted by its inverse standard deviation at the
            # design rate (u sigma^2, e-/s)
            rates[k] = d[k] / dt[k]
            weights[k] = dt[k] / math.sqrt(sig2 * sr[k, k] + u * sig2 * sp[k, k])
        order = np.argsort(rates)
        half = 0.5 * weights.sum()
        acc = 0.0
        median = rates[order[nd - 1]]
        for i in range(nd):
            acc += weights[order[i]]
            if acc >= half:
                median = rates[order[i]]
                break
        mrate = max(median, 0.0)
        slope_dn = min(max(median / gain, thr[2]), thr[3])
        frac = math.log(slope_dn / thr[2]) / math.log(thr[3] / thr[2])
        limit = thr[0] + (thr[1] - thr[0]) * frac
        for k in range(nd):
            sd = math.sqrt(sig2 * sr[k, k] + mrate * sp[k, k])
            if d[k] - median * dt[k] > limit * sd:
                keep[k] = False
                jumped = True
                if k >= 1 and nreads[good[k]] > 1:
                    suspect[k - 1] = True
                if k + 1 < nd and nreads[good[k + 1]] > 1:
                    suspect[k + 1] = True
    while True:
        nk, slope = _gls(d, dt, sr, sp, u, keep, idx, w)
        if nk == 0:
            out[0] = np.nan
            out[1] = np.nan
            out[2] = np.nan
            out[3] = np.nan
            return jumped
        rate = max(slope, 0.0)
        # jump search over single and adjacent pairs of kept differences
        slope_dn = min(max(slope / gain, thr[2]), thr[3])
        frac = math.log(slope_dn / thr[2]) / math.log(thr[3] / thr[2])
        limit = thr[0] + (thr[1] - thr[0]) * frac
        best = limit
        best_k = -1
        best_pair = False
        lowest = 0.0           # the most negative significance of a single difference
        highest = -np.inf      # and the difference with the largest one
        highest_k = -1
        if nk > 1:
            for i in range(nk):
                for span in range(1, 3):
                    if span == 2 and (i + 1 >= nk or idx[i + 1] != idx[i] + 1):
                        continue
                    tot = dt[idx[i]] + (dt[idx[i + 1]] if span == 2 else 0.0)
                    local = d[idx[i]] + (d[idx[i + 1]] if span == 2 else 0.0)
                    for j in range(nk):
                        v[j] = -w[j]
                    v[i] += 1.0 / tot
                    if span == 2:
                        v[i + 1] += 1.0 / tot
                    var = sig2 * _quad(v, sr, idx, nk) + rate * _quad(v, sp, idx, nk)
                    if var <= 0.0:
                        continue
                    s = (local / tot - slope) / math.sqrt(var)
                    if span == 1:
                        lowest = min(lowest, s)
                        if s > highest:
                            highest = s
                            highest_k = idx[i]
                    if s > best:
                        best = s
                        best_k = idx[i]
                        best_pair = span == 2
        if not robust and best_k >= 0:
            return True
        if best_k < 0 and not robust:
            out[0] = slope
            out[1] = sig2 * _quad(w, sr, idx, nk)
            out[3] = _quad(w, sp, idx, nk)
            out[2] = rate * out[3]
            return False
        if best_k < 0:
            # A cosmic ray that arrives within a resultant of several reads
            # raises both differences that share that resultant, and the
            # smaller part may stay under the threshold, the more so as
            # other hits still raise the slope it is compared with.  Once no
            # jump is left, the neighbours of dropped differences are tested
            # against the slope of the differences beyond suspicion: one
            # that rises more than SUSPECT_SIGNIFICANCE above it holds part
            # of a jump, and the largest such excess is dropped before
            # refitting.  (A lower bar drops clean neighbours that happen to
            # lie high often enough to pull pixels with one hit low.)
            base = keep & ~suspect
            if (keep & suspect).any() and base.any():
                nb, clean = _gls(d, dt, sr, sp, u, base, base_idx, base_w)
                crate = max(clean, 0.0)
                var_clean = (sig2 * _quad(base_w, sr, base_idx, nb)
                             + crate * _quad(base_w, sp, base_idx, nb))
                worst = SUSPECT_SIGNIFICANCE
                worst_k = -1
                for k in range(nd):
                    if suspect[k] and keep[k]:
                        excess = d[k] - clean * dt[k]
                        var = sig2 * sr[k, k] + crate * sp[k, k] + dt[k] ** 2 * var_clean
                        if var > 0.0 and excess > worst * math.sqrt(var):
                            worst = excess / math.sqrt(var)
                            worst_k = k
                if worst_k >= 0:
                    keep[worst_k] = False
                    continue
            # A difference far below the slope cannot be a cosmic ray: the
            # slope is raised by hits shared among the differences that
            # carry most of the weight (a ray within a long resultant splits
            # between two of them, neither above the threshold).  The
            # highest of them is dropped and the ramp refitted, until the
            # rest agree.
            if lowest < -LOW_SIGNIFICANCE and highest_k >= 0:
                keep[highest_k] = False
                jumped = True
                continue
            out[0] = slope
            out[1] = sig2 * _quad(w, sr, idx, nk)
            out[3] = _quad(w, sp, idx, nk)
            out[2] = rate * out[3]
            return jumped
        jumped = True
        last = best_k + 1 if best_pair else best_k
        for k in range(best_k, last + 1):
            keep[k] = False
        # the differences beside a jump share a resultant with it; where that
        # resultant holds several reads, they may hold part of the jump
        if best_k >= 1 and nreads[good[best_k]] > 1:
            suspect[best_k - 1] = True
        if last + 1 < nd and nreads[good[last + 1]] > 1:
            suspect[last + 1] = True


@numba.njit(cache=True, nogil=True)
def _full_ramp(tbar, cr, cp, u, nres):
    """Weights and jump-test coefficients of a ramp with every resultant usable.

    Returns the weights ``w`` (nres - 1), then per test (single differences,
    then adjacent pairs): the first difference, the span (1 or 2), and the
    read and Poisson coefficients of the variance of local minus global slope.
    """
    good = np.arange(nres)
    nd = nres - 1
    sr = _diff_cov(cr, good, nres)
    sp = _diff_cov(cp, good, nres)
    dt = np.empty(nd)
    for k in range(nd):
        dt[k] = tbar[k + 1] - tbar[k]
    sig = sr + u * sp
    x = _solve_spd(sig, dt)
    w = x / np.sum(x * dt)
    ntest = nd + max(nd - 1, 0) if nd > 1 else 0
    first = np.empty(ntest, np.int64)
    span = np.empty(ntest, np.int64)
    coef_r = np.empty(ntest)
    coef_p = np.empty(ntest)
    idx = np.arange(nd)
    t = 0
    if nd > 1:
        for s in range(1, 3):
            for k in range(nd - s + 1):
                v = -w.copy()
                tot = 0.0
                for j in range(k, k + s):
                    tot += dt[j]
                for j in range(k, k + s):
                    v[j] += 1.0 / tot
                first[t] = k
                span[t] = s
                coef_r[t] = _quad(v, sr, idx, nd)
                coef_p[t] = _quad(v, sp, idx, nd)
                t += 1
    return w, dt, first, span, coef_r, coef_p, _quad(w, sr, idx, nd), _quad(w, sp, idx, nd)


#: Pixels the fit takes at a time in its vectorised first pass.
CHUNK = 256


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fit_all(data, gdq, sig2, gain, nreads, tbar, cr, cp, u, thr, exclude, saturated,
             jump_flag, no_slope_flag, slope, var_r, coef_p, flags):
    nres, npix = data.shape
    w, dt, first, span, tr, tp, wr, wp = _full_ramp(tbar, cr, cp, u, nres)
    nd = nres - 1
    ntest = first.shape[0]
    log_ratio = math.log(thr[3] / thr[2])
    good = np.empty(nres, np.int64)
    r = np.empty(nres)
    out = np.empty(4)
    d = np.empty((max(nd, 1), CHUNK))
    s = np.empty(CHUNK)
    rate = np.empty(CHUNK)
    limit = np.empty(CHUNK)
    clean = np.empty(CHUNK, np.bool_)
    for p0 in range(0, npix, CHUNK):
        n = min(CHUNK, npix - p0)
        # Every resultant usable: the precomputed weights, and a jump search
        # that leaves the pixel to the general fit below if it finds one.
        # Pixel by pixel, these are the operations of that fit, in its order,
        # a chunk of pixels at a time so that they vectorise.
        for j in range(n):
            clean[j] = nd > 0
            s[j] = 0.0
        for i in range(nres):
            g = gdq[i, p0:p0 + n]
            for j in range(n):
                clean[j] = clean[j] & ((g[j] & exclude) == 0)
        for k in range(nd):
            wk = w[k]
            lo = data[k, p0:p0 + n]
            hi = data[k + 1, p0:p0 + n]
            dk = d[k]
            for j in range(n):
                dk[j] = hi[j] - lo[j]
                s[j] += wk * dk[j]
        for j in range(n):
            # max(s, 0) and min(max(s / gain, IA), IB), as selects
            rate[j] = 0.0 if 0.0 > s[j] else s[j]
            slope_dn = s[j] / gain[p0 + j]
            slope_dn = thr[2] if thr[2] > slope_dn else slope_dn
            slope_dn = thr[3] if thr[3] < slope_dn else slope_dn
            ratio = slope_dn / thr[2]
            # log(1) is 0: most sky pixels sit at IA
            level = 0.0 if ratio == 1.0 else math.log(ratio)
            limit[j] = thr[0] + (thr[1] - thr[0]) * level / log_ratio
        for t in range(ntest):
            k = first[t]
            two = span[t] == 2
            tot = dt[k] + dt[k + 1] if two else dt[k]
            dk = d[k]
            dn = d[k + 1] if two else d[k]
            cr_t = tr[t]
            cp_t = tp[t]
            for j in range(n):
                local = dk[j] + dn[j] if two else dk[j]
                var = sig2[p0 + j] * cr_t + rate[j] * cp_t
                jump = (var > 0.0) & ((local / tot - s[j]) > limit[j] * np.sqrt(var))
                clean[j] = clean[j] & ~jump
        for j in range(n):
            p = p0 + j
            if clean[j]:
                slope[p] = s[j]
                var_r[p] = sig2[p] * wr
                coef_p[p] = wp
                continue
            m = 0
            for i in range(nres):
                if gdq[i, p] & exclude:
                    # nothing after a saturated resultant is usable
                    if gdq[i, p] & saturated:
                        break
                    continue
                good[m] = i
                m += 1
            if m < 2:
                slope[p] = np.nan
                var_r[p] = np.nan
                coef_p[p] = np.nan
                flags[p] |= no_slope_flag
                continue
            for i in range(nres):
                r[i] = data[i, p]
            # a ramp with resultants left out: the plain fit, and the robust one
            # only if it finds a jump (as the full ramps above)
            jumped = m == nres or _fit_pixel(r, good, m, nreads, tbar, cr, cp, u, sig2[p],
                                             gain[p], thr, False, out)
            if jumped:
                jumped = _fit_pixel(r, good, m, nreads, tbar, cr, cp, u, sig2[p], gain[p],
                                    thr, True, out)
            slope[p] = out[0]
            var_r[p] = out[1]
            coef_p[p] = out[3]
            if jumped:
                flags[p] |= jump_flag
            if math.isnan(out[0]):
                flags[p] |= no_slope_flag


def fit_fixed(resultants, groupdq, read_noise, gain, times: RampTimes,
              thresholds: JumpThresholds = JumpThresholds(),
              optimization: RampOptimization = RampOptimization(),
              use_jump: bool = True) -> dict[str, np.ndarray]:
    """Fit every pixel's ramp with fixed optimal weights and flag jumps.

    Parameters
    ----------
    resultants : ndarray (nres, ny, nx)
        Linearised resultants in electrons.
    groupdq : ndarray (nres, ny, nx)
        Group flags; SATURATED and DO_NOT_USE resultants are left out (and
        everything after the first SATURATED one).
    read_noise : ndarray (ny, nx)
        Read noise of one read, electrons.
    gain : ndarray (ny, nx)
        e-/DN, for the thresholds, which are set in DN/s.
    times : RampTimes
        The read pattern's timing.

    Returns
    -------
    dict with ``slope`` (e-/s), ``var_rnoise`` and ``var_poisson`` ((e-/s)^2,
    the latter from the pixel's own slope), ``poisson_coeff`` (s: the
    Poisson variance per unit rate, so that another rate estimate can set it),
    all float32 (ny, nx), NaN where there is no slope; and ``dq`` (uint32:
    JUMP_DET, DO_NOT_USE).
    """
    nres, ny, nx = resultants.shape
    data = np.ascontiguousarray(resultants, np.float64).reshape(nres, -1)
    groupdq = np.asarray(groupdq)
    # group flags fit in a byte: uint8 (as the calibration makes them) is used as it is
    gdq = np.ascontiguousarray(groupdq, groupdq.dtype if groupdq.dtype in (np.uint8, np.uint32)
                               else np.uint32).reshape(nres, -1)
    sig2 = np.ascontiguousarray(np.broadcast_to(np.asarray(read_noise, np.float64) ** 2,
                                                (ny, nx))).ravel()
    g = np.ascontiguousarray(np.broadcast_to(np.asarray(gain, np.float64), (ny, nx))).ravel()
    npix = ny * nx
    slope = np.empty(npix)
    var_r = np.empty(npix)
    coef_p = np.empty(npix)
    flags = np.zeros(npix, np.uint32)
    thr = np.array([thresholds.SthreshA, thresholds.SthreshB,
                    thresholds.IthreshA, thresholds.IthreshB], np.float64)
    if not use_jump:
        thr[:2] = np.inf
    _fit_all(data, gdq, sig2, g, times.nreads, times.tbar, times.cov_read, times.cov_poisson,
             float(optimization.u), thr, _EXCLUDE, _SATURATED, _JUMP, _NO_SLOPE,
             slope, var_r, coef_p, flags)
    shape = (ny, nx)
    slope = slope.reshape(shape)
    coef_p = coef_p.reshape(shape)
    return {"slope": slope.astype(np.float32),
            "var_rnoise": var_r.reshape(shape).astype(np.float32),
            "var_poisson": (np.maximum(slope, 0.0) * coef_p).astype(np.float32),
            "poisson_coeff": coef_p.astype(np.float32),
            "dq": flags.reshape(shape).astype(np.uint32)}


def poisson_coefficient(times: RampTimes,
                        optimization: RampOptimization = RampOptimization()) -> float:
    """Poisson variance of the fixed-weight slope per unit rate (s^-1) of a full ramp."""
    nres = len(times.tbar)
    if nres < 2:
        return float("nan")
    return float(_full_ramp(times.tbar, times.cov_read, times.cov_poisson,
                            float(optimization.u), nres)[7])

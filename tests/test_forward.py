"""The counts -> L1 forward kernel against the statistics it must reproduce."""

from __future__ import annotations

import types

import numpy as np
import pytest

from romandask.detector import forward
from romandask.detector.forward import TileInputs, finish_resultants, ramp_means, saturation_dq
from romandask.instrument.matables import MATable

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

MA4 = MATable.numbered(4)
GAIN = 2.0
SREF = 5000.0


def region(shape, *, gain=GAIN, ipc_alpha=0.0, beta=0.0, saturation=60000.0, reset_noise=0.0):
    """A uniform Region: linear response (or a quadratic non-linearity ``beta``)."""
    h, w = shape
    smin, smax = 0.0, 65000.0
    half = 0.5 * (smax - smin)
    # Slin = d + beta d^2 with d = S - Sref, written in z = -1 + (S - smin) / half
    a0 = smin + half - SREF  # d at z = 0
    poly = np.polynomial.Polynomial([a0 + beta * a0 ** 2, half + 2 * beta * a0 * half,
                                     beta * half ** 2])
    leg = np.zeros(3)
    coef = np.polynomial.legendre.poly2leg(poly.coef)
    leg[:len(coef)] = coef
    coeffs = np.broadcast_to(leg[:, None, None], (3, h, w)).astype(np.float32)
    kernel = np.zeros((3, 3), np.float32)
    kernel[1, 1] = 1.0 - 4 * ipc_alpha
    kernel[0, 1] = kernel[2, 1] = kernel[1, 0] = kernel[1, 2] = ipc_alpha
    full = lambda v: np.full(shape, v, np.float32)  # noqa: E731
    return types.SimpleNamespace(
        gain=full(gain), flat=full(1.0), dark_slope=full(0.0), reset_noise=full(reset_noise),
        ipc=np.broadcast_to(kernel[:, :, None, None], (3, 3, h, w)).copy(),
        lin_coeffs=coeffs, smin=full(smin), smax=full(smax), sref=full(SREF),
        saturation=full(saturation))


def run(expected, reg, ma=MA4, key=1, crs=None, science=None):
    h, w = expected.shape
    sci = np.ones((h, w), bool) if science is None else science
    return ramp_means(TileInputs(expected, reg, sci), ma, key, 0, w, crs)


def test_mean_resultant_is_rate_times_tbar():
    """Casertano (2022): E[resultant] = Sref + rate * tbar / gain (linear detector)."""
    shape = (130, 130)
    rate = 3.0  # e-/s
    means, _ = run(np.full(shape, rate * MA4.exposure_time), region(shape))
    m = means[:, 1:-1, 1:-1].reshape(MA4.nresultants, -1).astype(np.float64)
    predicted = SREF + rate * MA4.tbar / GAIN
    sigma = m.std(axis=1) / np.sqrt(m.shape[1])
    assert np.all(np.abs(m.mean(axis=1) - predicted) < 3 * sigma + 1e-3)


def resultant_covariance(ma: MATable, rate: float) -> np.ndarray:
    """Covariance (e-^2) of resultant means of a Poisson process: rate * min(t_j, t_k)."""
    t = [ma.frame_time * np.asarray(r, float) for r in ma.read_pattern]
    cov = np.empty((ma.nresultants, ma.nresultants))
    for i in range(ma.nresultants):
        for j in range(ma.nresultants):
            cov[i, j] = rate * np.minimum.outer(t[i], t[j]).mean()
    return cov


@pytest.mark.parametrize("rate", [0.5, 8.0, 200.0])
def test_variance_of_resultant_differences(rate):
    """Var(R_i+1 - R_i) = Poisson (min-time covariance) + read noise, within 5 %."""
    shape = (202, 202)
    read_noise = 5.0
    reg = region(shape)
    means, _ = run(np.full(shape, rate * MA4.exposure_time), reg, key=int(rate * 10))
    sci = np.ones(means.shape[1:], bool)
    reads = np.array([len(r) for r in MA4.read_pattern], float)
    gen = np.random.default_rng(3)
    data, _ = finish_resultants(means, sci, np.zeros_like(means), np.full(sci.shape, read_noise,
                                np.float32), reads, np.zeros_like(means), gen,
                                np.zeros(sci.shape, np.float32))
    diffs = np.diff(data.astype(np.float64), axis=0).reshape(MA4.nresultants - 1, -1)
    cov = resultant_covariance(MA4, rate) / GAIN ** 2
    var_read = read_noise ** 2 / reads
    predicted = (np.diag(cov)[1:] + np.diag(cov)[:-1] - 2 * np.diag(cov, 1)
                 + var_read[1:] + var_read[:-1] + 2 / 12.0)  # + quantisation of each
    measured = diffs.var(axis=1)
    assert np.allclose(measured, predicted, rtol=0.05), (measured, predicted)


def test_read_noise_only_resultants():
    """With no charge, resultant i has sigma_read / sqrt(n_i), within 3 %."""
    shape = (300, 300)
    read_noise = 12.0
    means = np.full((MA4.nresultants, *shape), 1000.0, np.float32)
    reads = np.array([len(r) for r in MA4.read_pattern], float)
    data, _ = finish_resultants(means, np.ones(shape, bool), np.zeros_like(means),
                                np.full(shape, read_noise, np.float32), reads,
                                np.zeros_like(means), np.random.default_rng(5),
                                np.zeros(shape, np.float32))
    sigma = data.reshape(MA4.nresultants, -1).astype(np.float64).std(axis=1)
    predicted = np.sqrt(read_noise ** 2 / reads + 1 / 12.0)
    assert np.allclose(sigma, predicted, rtol=0.03)


def test_ipc_conserves_charge():
    """A point charge spread by IPC keeps its total (in linear DN) to 1e-6."""
    shape = (21, 21)
    expected = np.zeros(shape)
    crs = {"row": np.array([10]), "col": np.array([10]), "read": np.array([1]),
           "electrons": np.array([20000.0])}
    reg = region(shape, ipc_alpha=0.02)
    one = MATable.from_pattern([[1]])
    means, _ = run(expected, reg, ma=one, crs=crs)
    signal = means[0].astype(np.float64) - SREF
    assert signal[9, 9] == pytest.approx(20000.0 / GAIN * 0.92, rel=1e-5)
    assert signal[9, 8] == pytest.approx(20000.0 / GAIN * 0.02, rel=1e-4)
    assert signal.sum() == pytest.approx(20000.0 / GAIN, rel=1e-6)


def test_non_linearity_then_linearity_returns_the_charge():
    """Raw signal through the linearity curve gives back charge / gain."""
    shape = (12, 12)
    beta = 2e-6
    reg = region(shape, beta=beta)
    rate = 100.0
    means, _ = run(np.full(shape, rate * MA4.exposure_time), reg)
    one = MATable.from_pattern([[k] for k in range(1, 45)])
    means1, _ = run(np.full(shape, rate * MA4.exposure_time), reg, ma=one)
    d = means1[:, 1:-1, 1:-1].astype(np.float64) - SREF
    linear = d + beta * d ** 2
    # the charge of a read is Poisson: compare the mean over pixels with rate * t / gain
    t = one.frame_time * np.arange(1, 45)
    got = linear.reshape(44, -1).mean(axis=1)
    err = linear.reshape(44, -1).std(axis=1) / np.sqrt(100)
    assert np.all(np.abs(got - rate * t / GAIN) < 4 * err + 0.01)
    assert means.shape == (MA4.nresultants, 10, 10)


def test_saturation_flagged_in_the_right_resultant():
    """A pixel that fills its well during read k is flagged from k's resultant on."""
    shape = (6, 6)
    saturation = 30000.0
    rate = 5000.0  # e-/s: (30000 - 5000) DN * 2 e-/DN / 5000 = 10 s, i.e. during read 4
    reg = region(shape, saturation=saturation)
    means, first = run(np.full(shape, rate * MA4.exposure_time), reg)
    inner = first[1:-1, 1:-1]
    assert np.all((inner == 4) | (inner == 3) | (inner == 5))
    dq = saturation_dq(first, MA4)
    resultant_of = {k: i for i, r in enumerate(MA4.read_pattern) for k in r}
    for (y, x), k in np.ndenumerate(inner):
        flagged = dq[:, y + 1, x + 1] > 0
        assert not flagged[:resultant_of[k]].any() and flagged[resultant_of[k]:].all()
    assert np.all(means[-1, 1:-1, 1:-1] == saturation)


def test_poisson_draws_are_exact_for_small_and_large_means():
    """Per-read increments: mean and variance equal to lambda (both samplers)."""
    shape = (400, 400)
    for lam_read in (0.3, 50.0):  # photon spreading, then per-read PTRS
        rate = lam_read / MA4.frame_time
        one = MATable.from_pattern([[k] for k in range(1, 6)])
        means, _ = run(np.full(shape, rate * one.exposure_time), region(shape), ma=one)
        inc = np.diff(means[:, 1:-1, 1:-1].astype(np.float64), axis=0) * GAIN
        inc = inc.reshape(4, -1)
        n = inc.shape[1]
        assert np.all(np.abs(inc.mean(axis=1) - lam_read) < 4 * np.sqrt(lam_read / n))
        assert np.all(np.abs(inc.var(axis=1) / lam_read - 1) < 4 * np.sqrt(2 / n))
        assert np.all(inc >= 0) and np.allclose(inc, np.round(inc), atol=1e-3)


def test_tiles_agree_at_their_edges():
    """Two tiles computing a shared halo draw the same charge: the seam is invisible."""
    shape = (42, 42)
    rng = np.random.default_rng(0)
    expected = rng.uniform(100, 3000, shape)
    reg = region(shape, ipc_alpha=0.02)
    whole, _ = ramp_means(TileInputs(expected, reg, np.ones(shape, bool)), MA4, 9, 0, 42)
    # left half: extended columns 0..21 -> tile columns 1..20
    left_reg = types.SimpleNamespace(**{k: v[..., :, :22] for k, v in vars(reg).items()})
    left, _ = ramp_means(TileInputs(expected[:, :22], left_reg, np.ones((42, 22), bool)),
                         MA4, 9, 0, 42)
    np.testing.assert_array_equal(left[:, :, :19], whole[:, :, :19])
    np.testing.assert_array_equal(left[:, :, 19], whole[:, :, 19])


def test_counter_generator_is_uniform():
    from numba import njit

    @njit
    def draws(n, key):
        out = np.empty(n)
        for i in range(n):
            out[i] = forward._uniform(np.uint64(key), np.uint64(i))
        return out

    u = draws(200_000, 42)
    assert 0.0 <= u.min() and u.max() < 1.0
    hist, _ = np.histogram(u, bins=20, range=(0, 1))
    expected = len(u) / 20
    chi2 = np.sum((hist - expected) ** 2 / expected)
    assert chi2 < 45  # 19 dof, p ~ 1e-3

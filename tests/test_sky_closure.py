"""Sky closure at the scale where the readout's channel and row structure shows.

A uniform sky goes through the forward model (every detector effect but
cosmic rays, which are tested elsewhere) and back through the calibration
with the same detector model.  The mean sky of the window is compared with
the input:

* as it comes out, within 3 standard errors, where the standard error counts
  the readout's correlated noise: every pixel of a row shares its 1/f
  offsets, so what the reference-pixel correction cannot see of them moves
  the whole window's sky (``tests/test_reference_correction.py`` measures
  that floor on the readout alone);
* once the realised part of that readout noise is taken out (known here: the
  test drew it), within 0.2 % and 3 standard errors of the white noise: this
  leaves no place for a bias in the calibration to hide.

stcal's ols_cas22 fit reads a sky of ~80 e- per exposure about 1 % high by
itself (it weights each pixel by its own noisy slope; README, "Ramp
fitters"): for it, the expected sky is the input times the bias the same fit
shows on bare simulated ramps of the same rate and noise, so that the test
checks that the rest of the calibration adds nothing.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from roman_datamodels.dqflags import pixel as pixelflags

from romandask import rng
from romandask.calibrate.core import CalOptions, calibrate_frame, exposure_reference
from romandask.calibrate.fixed_fit import RampTimes, fit_fixed
from romandask.detector.l1 import L1Tile, simulate_tile
from romandask.detector.readout import make_readout
from romandask.detector.reference import NBORDER, SyntheticModel, channel_of, frame_index
from romandask.instrument.matables import MATable

from test_ramp_accuracy import _fit, _resultants
from test_reference_correction import _frame_mean_errors

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

TABLE = MATable.numbered(4)
SKY = 0.58          # e-/s per pixel: F158's zodiacal light and thermal background
BAD = pixelflags.DO_NOT_USE | pixelflags.SATURATED | pixelflags.JUMP_DET


def _simulate(window: int, exposure: int, tile: int):
    seed, sca = 21, 7
    model = SyntheticModel(seed, sca, window)
    n = window + 2 * NBORDER
    expected = np.full((n + 2, n + 2), SKY * TABLE.exposure_time)
    readout = make_readout(model, TABLE, rng.generator(seed, "readout", exposure, sca), None)
    data = np.empty((TABLE.nresultants, n, n), np.uint16)
    k = 0
    for y0 in range(0, n, tile):
        for x0 in range(0, n, tile):
            rows, cols = (y0, min(y0 + tile, n)), (x0, min(x0 + tile, n))
            spec = L1Tile(seed, exposure, sca, k, rows, cols, window, TABLE, TABLE.nresultants)
            part = expected[rows[0]:rows[1] + 2, cols[0]:cols[1] + 2]
            data[:, rows[0]:rows[1], cols[0]:cols[1]], _ = simulate_tile(spec, model, part,
                                                                         readout)
            k += 1
    return model, data, readout


def _readout_term(model, data, readout, window: int) -> float:
    """What the reference correction leaves of the realised correlated noise in the
    window's mean rate (DN/s at the fixed fit's weights)."""
    n = window + 2 * NBORDER
    common, channel = exposure_reference(
        model, TABLE, np.concatenate([data[:, :NBORDER], data[:, n - NBORDER:]], axis=1),
        readout.amp33)
    sci = slice(NBORDER, n - NBORDER)
    chan = channel_of(frame_index(window))[sci]
    used, count = np.unique(chan, return_counts=True)
    share = count / count.sum()
    true = readout.common[:, sci].mean(axis=1) + np.einsum(
        "c,icy->i", share, readout.channel[:, used][:, :, sci]) / (n - 2 * NBORDER)
    removed = common[:, sci].mean(axis=1) + np.einsum(
        "c,icy->i", share, channel[:, used][:, :, sci]) / (n - 2 * NBORDER)
    residual = (true - removed).astype(np.float64)
    times = RampTimes.from_pattern(TABLE.read_pattern, TABLE.frame_time)
    fit = fit_fixed(residual[:, None, None], np.zeros((len(residual), 1, 1), np.uint32),
                    1.0, 1.0, times, use_jump=False)
    return float(fit["slope"][0, 0])


def _closure(window: int, fitter: str, tile: int, realizations: int):
    model, data, readout = _simulate(window, 1, tile)
    l2 = calibrate_frame(data, readout.amp33, model, TABLE, CalOptions(fitter=fitter),
                         tile=tile)
    good = (l2["dq"] & BAD) == 0
    assert good.mean() > 0.97
    sky = SKY / model.reference_gain()                                # DN/s
    recovered = float(np.mean(l2["data"][good], dtype=np.float64))
    white = float(np.median(l2["err"][good])) / np.sqrt(good.sum())
    # DN/s of raw offsets -> L2 DN/s: the gain over the reference gain and the flat
    region = model.region(slice(NBORDER, window + NBORDER), slice(NBORDER, window + NBORDER))
    scale = float(np.mean(region.gain[good] / region.flat[good])) / model.reference_gain()
    term = _readout_term(model, data, readout, window) * scale
    floor = _frame_mean_errors(window, realizations)["corrected"].std(ddof=1) * scale
    se = np.hypot(white, floor)
    return recovered, sky, term, white, se


@lru_cache(maxsize=None)
def _fit_bias(fitter: str) -> tuple[float, float]:
    """The fit's own relative bias at the sky's rate, and its standard error,
    from 10^6 bare ramps (MA table 4, 11 e- read noise: the synthetic detector's
    5 DN with what the reference correction leaves, at 2 e-/DN)."""
    if fitter == "fixed":
        return 0.0, 0.0        # linear in the data: tests/test_ramp_accuracy.py
    g = np.random.default_rng(5)
    slopes = np.concatenate([_fit(fitter, _resultants(SKY, 200_000, g, read_noise=11.0)[0])
                             ["slope"].ravel() for _ in range(5)])
    return slopes.mean() / SKY - 1.0, slopes.std() / np.sqrt(slopes.size) / SKY


def _check(fitter, recovered, sky, term, white, se):
    bias, bias_se = _fit_bias(fitter)
    sky = sky * (1.0 + bias)
    se = np.hypot(se, bias_se * sky)
    assert abs(recovered - sky) < 3 * se, (recovered / sky - 1, se / sky)
    assert abs((recovered - term) / sky - 1) < 0.002, ((recovered - term) / sky - 1, white / sky)
    if fitter == "fixed":
        # ols_cas22's bias depends on each pixel's read noise, gain and flat, which
        # bare ramps of one noise only approximate (to ~0.1 %)
        assert abs(recovered - term - sky) < 3 * white + 2e-4 * sky


@pytest.mark.parametrize("fitter", ["fixed", "ols_cas22"])
def test_sky_closure_1024(fitter):
    """A 1024^2 window: 8 readout channels, 1032 rows of 1/f noise."""
    _check(fitter, *_closure(1024, fitter, 512, 24))


@pytest.mark.slow
@pytest.mark.parametrize("fitter", ["fixed", "ols_cas22"])
def test_sky_closure_full_frame(fitter):
    """A whole SCA, where the offset was first seen."""
    _check(fitter, *_closure(4088, fitter, 1022, 12))

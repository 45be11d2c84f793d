"""Reference-pixel correction: what it leaves in the mean sky of a whole SCA.

Every pixel of a readout channel shares the channel's offset in each
resultant, so an error in that offset does not average down over the frame:
it moves the channel's whole sky.  These tests draw the readout's correlated
noise alone (no pixels: the truth in every row is known) for full frames and
measure the error that the correction leaves in the frame's mean rate.
"""

from __future__ import annotations

import numpy as np
import pytest

from romandask.calibrate import steps
from romandask.calibrate.core import reference_noise
from romandask.detector.readout import make_readout, pink_correlation, pink_noise
from romandask.detector.reference import NCHAN, SyntheticModel, channel_of, frame_index
from romandask.instrument.matables import MATable

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

TABLE = MATable.numbered(4)
SKY = 0.29          # DN/s: F158's sky at the reference gain, where the effect was seen


def test_pink_correlation_matches_the_noise_it_describes():
    n = 512
    series = pink_noise(np.random.default_rng(3), (4000,), n)
    for lag in (0, 1, 10, 100, 400):
        empirical = np.mean(series[:, :n - lag] * series[:, lag:])
        assert abs(empirical - pink_correlation(n)[lag]) < 0.03


def _frame_mean_errors(window: int, realizations: int):
    """Error of the frame's mean rate (DN/s) after each correction, per realization."""
    n = window + 8
    model = SyntheticModel(1, 7, window)
    rows = np.r_[0:4, n - 4:n]
    chan = channel_of(frame_index(window))
    used = np.unique(chan)
    reads = np.array([len(r) for r in TABLE.read_pattern], float)
    t = TABLE.tbar
    # slope of a resultant series with weights for sky-level ramps
    tm = (reads * t).sum() / reads.sum()
    weights = reads * (t - tm) / (reads * (t - tm) ** 2).sum()
    level = model.amp33_med(slice(0, n)).astype(np.float64)
    ref_noise = np.full((8, n), float(model.figures.read_noise))
    w = steps.channel_weights(n, rows, *reference_noise(model, True, ref_noise))
    science = slice(4, n - 4)
    out = {"corrected": [], "amp33 only": [], "top/bottom mean": []}
    for seed in range(realizations):
        g = np.random.default_rng(seed)
        ro = make_readout(model, TABLE, g, None)
        common, channel = ro.common.astype(np.float64), ro.channel.astype(np.float64)
        at_ref = common[:, rows, None] + channel[:, chan][:, :, rows].transpose(0, 2, 1)
        white = ref_noise[0, 0] / np.sqrt(reads)[:, None, None]
        ref = at_ref + g.standard_normal(at_ref.shape) * white
        row_term, chan_term = steps.reference_offsets(ref, np.zeros((8, n)), chan, rows,
                                                      ro.amp33, level, model.m_pink, w)
        truth = common[:, science, None] + channel[:, used][:, :, science].transpose(0, 2, 1)

        def rate_error(correction):
            return float(weights @ (truth - correction).mean(axis=(1, 2)))

        rows_only = row_term[:, science, None].astype(np.float64)
        out["corrected"].append(rate_error(
            rows_only + chan_term[:, used][:, :, science].transpose(0, 2, 1)))
        out["amp33 only"].append(rate_error(rows_only))
        # each resultant's channel offset off its reference rows, given to every row
        flat = np.stack([(ref - row_term[:, rows, None])[:, :, chan == c].mean(axis=(1, 2))
                         for c in used], axis=1)
        out["top/bottom mean"].append(rate_error(rows_only + flat[:, None, :]))
    return {k: np.array(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def full_frame():
    return _frame_mean_errors(4088, 24)


def test_correction_leaves_no_bias_in_the_sky(full_frame):
    e = full_frame["corrected"]
    sem = e.std(ddof=1) / np.sqrt(e.size)
    assert abs(e.mean()) < 3 * sem
    assert abs(e.mean()) < 0.002 * SKY


def test_channel_offsets_add_no_noise_to_the_sky(full_frame):
    """The channel term costs the frame's mean rate nothing beyond the row term's floor.

    Taken off the reference rows and given to every row alike, a channel's
    offset carries the reference rows' 1/f noise into all of its pixels: it
    moves the mean sky several times more than the readout noise itself.
    """
    corrected = full_frame["corrected"].std()
    floor = full_frame["amp33 only"].std()
    naive = full_frame["top/bottom mean"].std()
    assert corrected < 1.1 * floor
    assert naive > 2.0 * corrected

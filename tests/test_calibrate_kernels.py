"""The compiled calibration passes against the steps they fuse, bit for bit.

``steps.raw_to_charge`` does steps 1-5 and the gain in one pass, and
``steps.raw_to_collected_charge`` adds the IPC inversion; both must give
exactly what the step-by-step numpy functions give (flag_saturation,
apply_reference_correction, the bias, linearize_cube, ipc_correct), on
blocks that hold every case: saturated and diluted resultants, input
DO_NOT_USE and AD_FLOOR flags, signals beyond [Smin, Smax], reference
pixels, a bias correction that stops at the frame's edge, several readout
channels, cubic and other Legendre orders.
"""

from __future__ import annotations

import numpy as np
import pytest
from roman_datamodels.dqflags import group as groupflags
from roman_datamodels.dqflags import pixel as pixelflags

from romandask.calibrate import steps
from romandask.calibrate.core import _EXCLUDE_IN
from romandask.detector.reference import MEAN_IPC, NCHAN, Region
from romandask.instrument.matables import MATable

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

TABLE = MATable.numbered(4)
H, W = 37, 46


def _block(order: int, seed: int = 0):
    """Raw resultants of a block and everything the first pass takes."""
    g = np.random.default_rng(seed)
    nres = TABLE.nresultants
    shape = (H, W)

    def f32(a):
        return np.asarray(a, np.float32)

    sref = f32(g.uniform(9000, 11000, shape))
    saturation = f32(g.uniform(50000, 56000, shape))
    smin, smax = f32(sref - 5000), f32(saturation)
    coeffs = f32(np.concatenate([g.uniform(20000, 21000, (1,) + shape),
                                 g.uniform(22000, 23000, (1,) + shape),
                                 g.normal(0, 300, (order - 2,) + shape)]))
    gain = f32(g.uniform(1.6, 2.0, shape))
    # ramps from dark to past saturation, a few starting below Smin
    rate = 10 ** g.uniform(-1, 4.5, shape)
    start = sref + g.normal(0, 20, shape)
    start[g.random(shape) < 0.05] -= 6000
    data = np.clip(start[None] + rate[None] * TABLE.tbar[:, None, None], 0, 65535)
    data = data.astype(np.uint16)
    groupdq = np.zeros((nres,) + shape, np.uint8)
    pick = g.random(groupdq.shape)
    groupdq[pick < 0.03] = groupflags.DO_NOT_USE
    groupdq[(pick >= 0.03) & (pick < 0.05)] = groupflags.AD_FLOOR
    groupdq[(pick >= 0.05) & (pick < 0.07)] = groupflags.JUMP_DET   # not an exclusion
    # the bias correction stops three rows before the block's last and
    # starts two columns into it: zero beyond (the frame's edge)
    bias = f32(g.normal(100, 30, (nres, H - 3, W - 2)))
    origin = (0, 2)
    common_rows = f32(g.normal(0, 5, (nres, H)))
    channel_rows = f32(g.normal(0, 3, (nres, NCHAN, H)))
    chan = np.r_[np.full(9, 3), np.full(W - 9, 4)]
    science = np.zeros(shape, bool)
    science[4:, :-4] = True
    margin = g.uniform(30, 60, shape)
    ipc = np.broadcast_to(MEAN_IPC[:, :, None, None], (3, 3) + shape) * \
        (1 + 0.03 * g.standard_normal((3, 3) + shape))
    ipc = f32(ipc / ipc.sum(axis=(0, 1)))
    region = Region(gain=gain, read_noise=f32(np.full(shape, 6.0)),
                    reset_noise=f32(np.zeros(shape)), dark_slope=f32(np.zeros(shape)),
                    flat=f32(np.ones(shape)), saturation=saturation,
                    mask=np.zeros(shape, np.uint32), lin_coeffs=coeffs, smin=smin, smax=smax,
                    sref=sref, lin_dq=np.zeros(shape, np.uint32), ipc=ipc)
    tlast = np.array([r[-1] for r in TABLE.read_pattern]) * TABLE.frame_time
    args = (data, groupdq, _EXCLUDE_IN, bias, origin, common_rows, channel_rows, chan,
            saturation.astype(np.float64) - margin, TABLE.tbar / tlast, region, science)
    return args, margin


def _step_by_step(args, margin):
    """The same quantities from the numpy steps, one after the other."""
    (data, groupdq, exclude, bias, origin, common_rows, channel_rows, chan, _, _, region,
     science) = args
    raw = data.astype(np.float64)
    full_bias = np.zeros(raw.shape, np.float32)
    full_bias[:, origin[0]:origin[0] + bias.shape[1], origin[1]:origin[1] + bias.shape[2]] = bias
    gdq = np.where(groupdq & exclude, np.uint8(groupflags.DO_NOT_USE), np.uint8(0))
    gdq |= steps.flag_saturation(raw - full_bias, region.saturation.astype(np.float64),
                                 region.sref.astype(np.float64), TABLE, margin)
    raw = steps.apply_reference_correction(raw, common_rows, channel_rows, chan)
    raw -= full_bias
    usable = (gdq & np.uint8(groupflags.SATURATED | groupflags.DO_NOT_USE)) == 0
    slin, nolin = steps.linearize_cube(raw, region, usable & science[None])
    charge = np.where(science[None], slin * region.gain.astype(np.float64), 0.0)
    return gdq, charge, nolin


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("order", [4, 2, 6])
def test_raw_to_charge_is_the_steps_one_by_one(order):
    args, margin = _block(order)
    gdq, charge, nolin = steps.raw_to_charge(*args)
    want_gdq, want_charge, want_nolin = _step_by_step(args, margin)
    assert _same_bits(charge, want_charge)
    assert _same_bits(gdq, want_gdq[:, 2:-2, 2:-2])
    assert _same_bits(nolin, want_nolin)
    # the block holds every case the pass tells apart
    assert (want_gdq & groupflags.SATURATED).any(axis=0).mean() > 0.1
    assert (gdq & groupflags.DO_NOT_USE).any()
    assert (nolin == pixelflags.NO_LIN_CORR).any()
    assert not charge[:, ~args[-1]].any()          # no charge off the science array


@pytest.mark.parametrize("order", [4, 5])
def test_collected_charge_is_raw_to_charge_then_ipc_correct(order):
    args, _ = _block(order, seed=1)
    gdq, charge, nolin = steps.raw_to_charge(*args)
    gdq2, collected, nolin2 = steps.raw_to_collected_charge(*args)
    assert _same_bits(collected, steps.ipc_correct(charge, args[10].ipc))
    assert _same_bits(gdq2, gdq)
    assert _same_bits(nolin2, nolin)
    # without input flags, only saturation flags the resultants
    no_flags = (args[0], None) + args[2:]
    gdq3, collected3, _ = steps.raw_to_collected_charge(*no_flags)
    assert not (gdq3 & groupflags.DO_NOT_USE).any()
    assert ((gdq3 & groupflags.SATURATED) == (gdq & groupflags.SATURATED)).all()


def test_ipc_correct_is_the_second_order_inverse_in_numpy():
    g = np.random.default_rng(4)
    observed = g.uniform(0, 1000, (3, 30, 33))
    kernel = np.broadcast_to(MEAN_IPC[:, :, None, None], (3, 3, 30, 33)) * \
        (1 + 0.03 * g.standard_normal((3, 3, 30, 33)))
    kernel = (kernel / kernel.sum(axis=(0, 1))).astype(np.float32)

    def sensed(charge, k):
        # pixel (y + 1, x + 1) senses sum over sources (y + 2 - dy, x + 2 - dx)
        n, h, w = charge.shape
        out = np.zeros((n, h - 2, w - 2))
        for dy in range(3):
            for dx in range(3):
                src = (slice(None), slice(2 - dy, h - dy), slice(2 - dx, w - dx))
                out += k[dy, dx][src[1:]].astype(np.float64) * charge[src]
        return out

    first = sensed(observed, kernel) - observed[:, 1:-1, 1:-1]
    second = sensed(first, kernel[:, :, 1:-1, 1:-1]) - first[:, 1:-1, 1:-1]
    want = observed[:, 2:-2, 2:-2] - first[:, 1:-1, 1:-1] + second
    assert _same_bits(steps.ipc_correct(observed, kernel), want)
    assert _same_bits(steps.ipc_correct(observed[0], kernel), want[0])

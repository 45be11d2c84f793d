"""L1 -> L2 calibration: closure on simulated truth, jumps, saturation, fitters."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from roman_datamodels.dqflags import pixel as pixelflags

from romandask import rng
from romandask.calibrate import steps
from romandask.calibrate.core import CalOptions, calibrate_frame
from romandask.calibrate.fixed_fit import JumpThresholds
from romandask.detector.l1 import L1Tile, simulate_tile
from romandask.detector.readout import make_readout
from romandask.detector.reference import (MEAN_IPC, NBORDER, ScalarModel, SyntheticModel,
                                          linearize)
from romandask.instrument.matables import MATable

N = 128                     # science window of the test frames
SKY = 0.7                   # e-/s per pixel
TABLE = MATable.numbered(4)
FRAMES = 20                 # independent exposures: the correlated read noise left
                            # after reference-pixel correction moves every pixel of a
                            # row together, so one frame's mean pull scatters by ~0.08
BAD = pixelflags.DO_NOT_USE | pixelflags.SATURATED | pixelflags.JUMP_DET


def _stars(exposure: int, n: int, flux_range=(4.0, 5.3)):
    """Isolated Gaussian stars on a grid with a random sub-pixel offset: (y, x, flux, sigma)."""
    g = np.random.default_rng(100 + exposure)
    out = []
    for cy in range(24, n + 8 - 20, 30):
        for cx in range(24, n + 8 - 20, 30):
            y, x = cy + g.uniform(-2, 2), cx + g.uniform(-2, 2)
            out.append((y, x, 10 ** g.uniform(*flux_range), 1.2))
    return out


def _expected(stars, n: int, sky: float = SKY):
    """Electrons over the exposure on the frame grown by one pixel (frame coordinates + 1)."""
    side = n + 10
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64) - 1.0
    img = np.full((side, side), sky * TABLE.exposure_time)
    for y, x, flux, s in stars:
        img += flux * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)
    return img


@lru_cache(maxsize=None)
def _frame(kind: str, exposure: int, cosmic_rays: float, bright: bool = False):
    """Simulate one frame: (model, expected, stars, data, amp33, readout)."""
    seed, sca = 11, 4
    model = (SyntheticModel(seed, sca, N) if kind == "synthetic"
             else ScalarModel(sca, N, reset_noise=20.0))
    stars = _stars(exposure, N, (5.9, 6.3) if bright else (4.5, 5.5))
    expected = _expected(stars, N)
    readout = make_readout(model, TABLE, rng.generator(seed, "readout", exposure, sca),
                           cosmic_rays)
    n = N + 2 * NBORDER
    spec = L1Tile(seed, exposure, sca, 0, (0, n), (0, n), N, TABLE, TABLE.nresultants)
    data, _ = simulate_tile(spec, model, expected, readout)
    return model, expected, stars, data, readout.amp33, readout


@lru_cache(maxsize=None)
def _calibrated(kind: str, exposure: int, cosmic_rays: float, fitter: str, bright=False):
    model, expected, stars, data, amp33, readout = _frame(kind, exposure, cosmic_rays, bright)
    l2 = calibrate_frame(data, amp33, model, TABLE, CalOptions(fitter=fitter), tile=64)
    inner = (slice(1 + NBORDER, -1 - NBORDER),) * 2
    truth = expected[inner] / TABLE.exposure_time / model.reference_gain()  # DN/s
    return l2, truth


def _sky_mask(stars, radius=12.0):
    yy, xx = np.mgrid[0:N, 0:N] + NBORDER
    far = np.ones((N, N), bool)
    for y, x, _, _ in stars:
        far &= (yy - y) ** 2 + (xx - x) ** 2 > radius ** 2
    return far


@pytest.mark.parametrize("fitter", ["ols_cas22", "fixed"])
def test_closure_recovers_star_fluxes_and_sky_noise(fitter):
    """Every detector effect on (CRs, non-linearity, IPC, dark, flat, bias, 1/f noise):
    calibrating with the same model recovers the truth within the predicted noise."""
    pulls, recovered, true = [], 0.0, 0.0
    for exposure in range(1, FRAMES + 1):
        l2, truth = _calibrated("synthetic", exposure, 8.0, fitter)
        _, _, stars, *_ = _frame("synthetic", exposure, 8.0)
        ok = _sky_mask(stars) & ((l2["dq"] & BAD) == 0)
        pulls.append(((l2["data"] - truth) / l2["err"])[ok])
        for y, x, _, _ in stars:
            yi, xi = int(round(y)) - NBORDER, int(round(x)) - NBORDER
            box = (slice(yi - 6, yi + 7), slice(xi - 6, xi + 7))
            assert np.isfinite(l2["data"][box]).all()
            star = truth[box].sum() - SKY / 2.0 * truth[box].size  # DN/s at 2 e-/DN
            recovered += star + (l2["data"][box] - truth[box]).sum()
            true += star
    pulls = np.concatenate(pulls)
    assert pulls.size > FRAMES * 8000
    assert abs(pulls.std() - 1.0) < 0.05, pulls.std()
    assert abs(pulls.mean()) < 0.05, pulls.mean()
    assert abs(recovered / true - 1.0) < 0.005, recovered / true


def _cr_sigma(model, expected, readout, read_noise_dn):
    """Per cosmic-ray deposit: (frame y, x, electrons, the sigma of its resultant difference)."""
    crs = readout.cosmic_rays
    reads = np.array([len(r) for r in TABLE.read_pattern])
    first = np.array([r[0] for r in TABLE.read_pattern])
    last = np.array([r[-1] for r in TABLE.read_pattern])
    j = np.searchsorted(last, crs.read)             # the resultant holding the read
    keep = (j > 0) & (crs.read > first[0])
    y, x, e, j = crs.y[keep], crs.x[keep], crs.electrons[keep], j[keep]
    region = model.region(slice(0, N + 8), slice(0, N + 8))
    gain = region.gain[y, x]
    rn = read_noise_dn[y, x] * gain
    rate = expected[y + 1, x + 1] / TABLE.exposure_time
    dt = TABLE.tbar[j] - TABLE.tbar[j - 1]
    sigma = np.sqrt(rn ** 2 * (1.0 / reads[j] + 1.0 / reads[j - 1]) + rate * dt)
    return y, x, e, sigma


@pytest.mark.parametrize("fitter", ["ols_cas22", "fixed"])
def test_jumps_flagged_and_few_false_flags(fitter):
    from romandask.calibrate.core import effective_read_noise

    found = total = 0
    for exposure in range(1, FRAMES + 1):
        model, expected, _, _, _, readout = _frame("synthetic", exposure, 8.0)
        l2, _ = _calibrated("synthetic", exposure, 8.0, fitter)
        noise = effective_read_noise(model, model.region(slice(0, N + 8), slice(0, N + 8))
                                     .read_noise)
        y, x, e, sigma = _cr_sigma(model, expected, readout, noise)
        science = (y >= NBORDER) & (y < N + NBORDER) & (x >= NBORDER) & (x < N + NBORDER)
        big = science & (e > 10 * sigma)
        dq = l2["dq"][y[big] - NBORDER, x[big] - NBORDER]
        usable = (dq & (pixelflags.SATURATED | pixelflags.DO_NOT_USE)) == 0
        found += int(((dq & pixelflags.JUMP_DET) != 0)[usable].sum())
        total += int(usable.sum())
    assert total > 200
    assert found / total >= 0.95, (found, total)

    false = pixels = 0
    for exposure in range(1, 9):
        l2, _ = _calibrated("synthetic", exposure, 0.0, fitter)
        false += int(((l2["dq"] & pixelflags.JUMP_DET) != 0).sum())
        pixels += l2["dq"].size
    assert false / pixels < 1e-4, (false, pixels)


def test_saturated_pixels_flagged_and_fitted_from_earlier_resultants():
    """Bright stars fill their wells mid-ramp: SATURATED, with rates from what came before."""
    model, expected, stars, data, amp33, readout = _frame("synthetic", 1, 0.0, bright=True)
    l2, truth = _calibrated("synthetic", 1, 0.0, "fixed", bright=True)
    sat = (l2["dq"] & pixelflags.SATURATED) != 0
    # the truth: a pixel saturates if its charge reaches the well during the exposure
    region = model.region(slice(NBORDER, N + NBORDER), slice(NBORDER, N + NBORDER))
    well = linearize(region.saturation, region)   # the linearised signal of a full well
    rate = expected[1 + NBORDER:-1 - NBORDER, 1 + NBORDER:-1 - NBORDER] / \
        TABLE.exposure_time / region.gain * region.flat
    signal = rate * TABLE.exposure_time            # linearised DN at the last read
    assert (signal > 1.02 * well).sum() > 20
    assert sat[signal > 1.02 * well].all()
    assert not sat[signal < 0.8 * well].any()
    measured = sat & np.isfinite(l2["data"])
    assert measured.sum() > 10
    pull = (l2["data"] - truth)[measured] / l2["err"][measured]
    assert np.abs(pull).max() < 5 and abs(pull.mean()) < 1.0, pull


def test_fixed_weight_fit_agrees_with_ols_cas22():
    """On ramps without jumps the two fits differ by well under their errors."""
    l2f, _ = _calibrated("synthetic", 2, 0.0, "fixed")
    l2c, _ = _calibrated("synthetic", 2, 0.0, "ols_cas22")
    ok = ((l2f["dq"] | l2c["dq"]) & BAD) == 0
    diff = np.abs(l2f["data"] - l2c["data"])[ok] / l2c["err"][ok]
    assert ok.sum() > 0.95 * ok.size
    # two unbiased fits of the same data with different weights
    assert (diff < 1.0).mean() > 0.999, np.sort(diff)[-5:]
    assert np.median(diff) < 0.2
    bias = (l2f["data"] - l2c["data"])[ok] / l2c["err"][ok]
    assert abs(bias.mean()) < 0.02


def test_tiling_does_not_change_the_result():
    model, _, _, data, amp33, _ = _frame("synthetic", 3, 8.0)
    a = calibrate_frame(data, amp33, model, TABLE, CalOptions(fitter="fixed"), tile=64)
    b = calibrate_frame(data, amp33, model, TABLE, CalOptions(fitter="fixed"), tile=48)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_ipc_correction_inverts_the_kernel():
    g = np.random.default_rng(1)
    charge = g.uniform(0, 1000, (40, 40))
    charge[18:22, 18:22] += 1e5
    kernel = np.broadcast_to(MEAN_IPC[:, :, None, None], (3, 3, 40, 40)) * \
        (1 + 0.03 * g.standard_normal((3, 3, 40, 40)))
    kernel = kernel / kernel.sum(axis=(0, 1))
    sensed = steps._apply_ipc(np.pad(charge, 1), np.pad(kernel, ((0, 0), (0, 0), (1, 1), (1, 1)),
                                                        mode="edge"))
    recovered = steps.ipc_correct(sensed, kernel)
    err = np.abs(recovered - charge[2:-2, 2:-2])
    assert err.max() < 2e-3 * 1e5 * 0.1   # third order: (6 %)^3 of the local contrast
    assert np.abs(sensed - charge).max() > 1000   # IPC moved real charge


def test_saturation_dilution_flags_the_resultant_before():
    pattern = [[1], [2, 3, 4, 5], [6, 7, 8, 9]]
    sat, sref = 50000.0, 10000.0
    # a ramp that saturates at read 4: resultant 1 averages 2-5, read 5 clipped
    reads = np.minimum(sref + 12000.0 * np.arange(1, 10), sat)
    res = np.array([reads[[k - 1 for k in r]].mean() for r in pattern])[:, None, None]
    flags = steps.flag_saturation(res, np.full((1, 1), sat), np.full((1, 1), sref),
                                  MATable.from_pattern(pattern, 3.0), np.zeros((1, 1)))
    assert list(flags[:, 0, 0] > 0) == [False, True, True]
    # the same ramp at a lower rate never fills the well
    reads = sref + 3000.0 * np.arange(1, 10)
    res = np.array([reads[[k - 1 for k in r]].mean() for r in pattern])[:, None, None]
    flags = steps.flag_saturation(res, np.full((1, 1), sat), np.full((1, 1), sref),
                                  MATable.from_pattern(pattern, 3.0), np.zeros((1, 1)))
    assert not flags.any()


def test_jump_thresholds_run_log_linearly():
    t = JumpThresholds(SthreshA=5.5, SthreshB=4.5, IthreshA=1.0, IthreshB=1000.0)
    assert t.threshold(0.1) == pytest.approx(5.5)
    assert t.threshold(np.sqrt(1000.0)) == pytest.approx(5.0)
    assert t.threshold(1e5) == pytest.approx(4.5)
    with pytest.raises(ValueError):
        JumpThresholds(IthreshA=10.0, IthreshB=1.0)


# --------------------------------------------------------------------------
# gen_cal_image's options: units, EXCLUDE_FIRST, SATURATION_BACKUP, SLICEOUT
# --------------------------------------------------------------------------

def _ipc_forward(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """out[y, x] = sum over (dy, dx) of image[y - dy, x - dx] K[1 + dy, 1 + dx, y - dy, x - dx],
    nothing from beyond the image (the ipc4d convention, written out)."""
    n = image.shape[0]
    out = np.zeros_like(image)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            source = np.pad(image * kernel[1 + dy, 1 + dx], 1)
            out += source[1 - dy:1 - dy + n, 1 - dx:1 - dx + n]
    return out


def _gen_cal_image_flat(model) -> np.ndarray:
    """The window's flat as gen_cal_image divides by it: g^-1 K^-1 g F, K^-1 to second
    order (out <- out + gF - K out, twice), F clipped to [0.1, 10], g to >= 0.1."""
    inside = slice(NBORDER, N + NBORDER)
    region = model.region(inside, inside)
    g = np.maximum(region.gain.astype(np.float64), 0.1)
    image = g * np.clip(region.flat.astype(np.float64), 0.1, 10.0)
    kernel = region.ipc.astype(np.float64)
    out = image.copy()
    for _ in range(2):
        out = out + image - _ipc_forward(out, kernel)
    return out / g


def test_gen_cal_image_units_are_romandask_units_times_the_documented_map():
    """UNITS gen_cal_image over UNITS romandask is g_ref F A^2 / (g F~) pixel by pixel,
    to float32 precision (README, Calibration: output units); variances follow squared."""
    model, _, _, data, amp33, _ = _frame("synthetic", 3, 8.0)
    yy, xx = np.mgrid[0:N, 0:N] / N
    area = 0.97 + 0.05 * xx * yy + 0.01 * np.sin(7 * xx)     # a distorted pixel grid
    ours = calibrate_frame(data, amp33, model, TABLE, CalOptions(fitter="fixed"), area=area,
                           tile=64)
    theirs = calibrate_frame(data, amp33, model, TABLE,
                             CalOptions(fitter="fixed", units="gen_cal_image"), area=area,
                             tile=48)
    inside = slice(NBORDER, N + NBORDER)
    region = model.region(inside, inside)
    flat, gain = region.flat.astype(np.float64), region.gain.astype(np.float64)
    tilde = _gen_cal_image_flat(model)
    mapping = model.reference_gain() * flat * area ** 2 / (gain * tilde)
    np.testing.assert_array_equal(ours["dq"], theirs["dq"])
    ok = np.isfinite(ours["data"])
    np.testing.assert_array_equal(ok, np.isfinite(theirs["data"]))
    assert ok.mean() > 0.99
    # the map is not trivial: gain and flat scatter, IPC, the pixel area
    assert mapping[ok].std() > 0.01
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, power in (("data", 1), ("err", 1), ("var_poisson", 2), ("var_rnoise", 2)):
            a = ours[name].astype(np.float64)[ok]
            b = theirs[name].astype(np.float64)[ok]
            keep = np.abs(a) > 1e-3 * np.abs(a).max()
            np.testing.assert_allclose(b[keep] / a[keep], mapping[ok][keep] ** power,
                                       rtol=3e-6, err_msg=name)


def test_exclude_first_drops_the_first_resultant_from_the_fit():
    """With exclude_first, whatever the first resultant holds does not change a bit."""
    model, _, _, data, amp33, _ = _frame("synthetic", 3, 8.0)
    spoiled = data.astype(np.int64)
    spoiled[0, NBORDER:-NBORDER, NBORDER:-NBORDER] += 300      # science pixels only
    spoiled = spoiled.astype(data.dtype)
    for fitter in ("fixed", "ols_cas22"):
        options = CalOptions(fitter=fitter, exclude_first=True)
        a = calibrate_frame(data, amp33, model, TABLE, options, tile=64)
        b = calibrate_frame(spoiled, amp33, model, TABLE, options, tile=64)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{fitter} {name}")
        c = calibrate_frame(spoiled, amp33, model, TABLE, CalOptions(fitter=fitter), tile=64)
        assert np.nanmean(np.abs(c["data"] - a["data"])) > 0.1 * np.nanmedian(a["err"])
        # and the fit without the first resultant is still unbiased and as noisy as said
        l2, truth = _calibrated("synthetic", 3, 8.0, fitter)
        pull = (a["data"] - truth) / a["err"]
        ok = np.isfinite(pull) & ((a["dq"] & BAD) == 0)
        assert abs(np.mean(pull[ok])) < 0.1 and 0.9 < np.std(pull[ok]) < 1.1
        assert np.nanmedian(a["err"]) > np.nanmedian(l2["err"])   # one resultant fewer


def test_saturation_backup_flags_resultants_of_several_reads_before():
    pattern = [[1, 2], [3, 4], [5], [6, 7], [8, 9]]
    flags = np.zeros((5, 1, 3), np.uint8)
    sat = np.uint8(steps._SATURATED)
    flags[3:, 0, 0] = sat       # saturated from [6, 7]: [5] (one read) stops the backup
    flags[2:, 0, 1] = sat       # from [5]: [3, 4], then [1, 2]
    for passes, expect in ((0, ([3, 4], [2, 3, 4])), (1, ([3, 4], [1, 2, 3, 4])),
                           (2, ([3, 4], [0, 1, 2, 3, 4])), (5, ([3, 4], [0, 1, 2, 3, 4]))):
        out = steps.back_up_saturation(flags.copy(), pattern, passes)
        for pixel_index, resultants in enumerate(expect):
            assert list(np.flatnonzero(out[:, 0, pixel_index])) == resultants, (passes,
                                                                                pixel_index)
        assert not out[:, 0, 2].any()


def test_sliceout_records_the_last_resultant_before_saturation():
    model, _, _, data, amp33, _ = _frame("synthetic", 3, 0.0)
    hot = data.copy()
    where = {(20, 30): 5, (40, 41): 1, (60, 70): 0, (80, 90): 8}     # frame pixel: first
    for (y, x), first in where.items():                               # saturated resultant
        hot[first:, y, x] = 65535
    for backup in (0, 1):
        out = calibrate_frame(hot, amp33, model, TABLE,
                              CalOptions(fitter="fixed", sliceout=True,
                                         saturation_backup=backup), tile=64)
        assert out["endslice"].dtype == np.int8
        expect = np.full((N, N), -1)
        for (y, x), first in where.items():
            # backed up once where the resultant before averages several reads
            if backup and first > 0 and len(TABLE.read_pattern[first - 1]) > 1:
                first -= 1
            expect[y - NBORDER, x - NBORDER] = first - 1 if first > 0 else -1
        saturated = (out["dq"] & pixelflags.SATURATED) != 0
        np.testing.assert_array_equal(out["endslice"][~saturated], -1)
        for (y, x) in where:
            assert saturated[y - NBORDER, x - NBORDER]
            assert out["endslice"][y - NBORDER, x - NBORDER] == expect[y - NBORDER, x - NBORDER]


def test_ramps_without_their_first_resultant_get_few_false_jumps():
    """The fixed fit's steps for several hits run only where a jump is found, on ramps
    with resultants left out as on whole ones."""
    false = pixels = 0
    for exposure in range(1, 9):
        model, _, _, data, amp33, _ = _frame("synthetic", exposure, 0.0)
        l2 = calibrate_frame(data, amp33, model, TABLE,
                             CalOptions(fitter="fixed", exclude_first=True), tile=64)
        false += int(((l2["dq"] & pixelflags.JUMP_DET) != 0).sum())
        pixels += l2["dq"].size
    assert false / pixels < 1e-4, (false, pixels)


def test_gen_cal_image_pieces_match_romanimpreprocess():
    """Where romanimpreprocess is installed (the romancal environment): its FITS mask,
    its SKYORDER fit and its IPC-deconvolved flat, against romandask's."""
    pytest.importorskip("romanimpreprocess")
    from romanimpreprocess.utils import ipc_linearity, maskhandling, sky

    from romandask.calibrate.gen_cal_image import fit_sky, good_pixels

    g = np.random.default_rng(1)
    dq = np.zeros((200, 180), np.uint32)
    flags = [int(v) for v in pixelflags.__members__.values()]
    for _ in range(600):
        dq[g.integers(0, 200), g.integers(0, 180)] |= np.uint32(flags[g.integers(len(flags))])
    np.testing.assert_array_equal(good_pixels(dq), ~maskhandling.PixelMask1.build(dq))

    image = 3 + 0.2 * g.standard_normal((200, 184)) + np.linspace(0, 1, 184)[None] ** 2
    image[5:40, 7:30] = np.nan
    for order in (0, 1, 2, 4):
        theirs, their_model = sky.medfit(image, order=order)
        ours, our_model = fit_sky(image, order)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
        np.testing.assert_allclose(our_model, their_model, rtol=0, atol=1e-12)

    n = 40
    flat = 1 + 0.05 * g.standard_normal((n + 4, n + 4))
    flat[3, 5], flat[10, 10] = 0.01, 30.0            # clipped to [0.1, 10]
    gain = 2 + 0.1 * g.standard_normal((n + 4, n + 4))
    kernel = np.broadcast_to(MEAN_IPC[:, :, None, None], (3, 3, n + 4, n + 4)) * \
        (1 + 0.05 * g.standard_normal((3, 3, n + 4, n + 4)))
    kernel = kernel / kernel.sum(axis=(0, 1))
    inner = (slice(2, -2), slice(2, -2))
    science = np.zeros((n + 4, n + 4), bool)
    science[inner] = True                 # the science pixels end 2 pixels in
    theirs = ipc_linearity.ipc_rev(np.clip(flat[inner], 0.1, 10),
                                   np.ascontiguousarray(kernel[(slice(None),) * 2 + inner]),
                                   gain=gain[inner])
    np.testing.assert_allclose(steps.deconvolved_flat(flat, gain, kernel, science), theirs,
                               rtol=1e-12)

"""Detector reference data: geometry, the synthetic detector, linearity, CALDIR files."""

from __future__ import annotations

import pickle
from dataclasses import fields

import asdf
import numpy as np
import pytest
from numpy.polynomial import Legendre, Polynomial
from numpy.polynomial import legendre as leg
from roman_datamodels.dqflags import pixel as flags

from romandask.detector.reference import (
    MEAN_IPC,
    NBORDER,
    NDET,
    NSCI,
    REQUIRED_KINDS,
    CalDirModel,
    ScalarModel,
    SyntheticModel,
    channel_of,
    frame_index,
    inverse_linearize,
    legendre_value,
    linearize,
    resolve_caldir,
    write_reffiles,
)
from romandask.errors import InputError
from romandask.instrument.matables import MATable

SEED, SCA = 11, 5
#: 512 x 512 science pixels spanning 5 x 5 blocks of 128
CENTRAL = (slice(1000, 1512), slice(1000, 1512))


def assert_same_region(a, b):
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and x.shape == y.shape, f.name
        assert np.array_equal(x, y), f.name


@pytest.fixture(scope="module")
def model():
    return SyntheticModel(SEED, SCA, NSCI)


@pytest.fixture(scope="module")
def central(model):
    return model.region(*CENTRAL)


def flagged(region, flag):
    return (region.mask & np.uint32(flag)) != 0


# --------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------

def test_full_frame_index_is_the_identity():
    assert np.array_equal(frame_index(NSCI), np.arange(NDET))


def test_window_frame_keeps_the_detector_border_and_centres_the_science_pixels():
    idx = frame_index(64)
    assert idx.dtype == np.int64 and len(idx) == 72
    assert list(idx[:4]) == [0, 1, 2, 3]
    assert list(idx[-4:]) == [4092, 4093, 4094, 4095]
    science = idx[4:-4]
    assert np.array_equal(science, np.arange(science[0], science[0] + 64))
    # as many science pixels before the window as after it
    assert science[0] - NBORDER == (NDET - NBORDER - 1) - science[-1] == (NSCI - 64) // 2


@pytest.mark.parametrize("window", [0, 3, 4090, 2.5])
def test_bad_windows_are_refused(window):
    with pytest.raises(ValueError, match="window"):
        frame_index(window)


def test_channels_are_128_columns_wide():
    assert [channel_of(c) for c in (0, 127, 128, 4095)] == [0, 0, 1, 31]
    assert np.array_equal(channel_of(np.array([255, 256])), [1, 2])


# --------------------------------------------------------------------------
# synthetic detector: determinism and slicing
# --------------------------------------------------------------------------

def test_synthetic_region_is_reproducible(central):
    assert_same_region(SyntheticModel(SEED, SCA, NSCI).region(*CENTRAL), central)


def test_any_rectangle_equals_the_slice_of_a_bigger_one_bit_for_bit():
    big = SyntheticModel(SEED, SCA, NSCI).region(slice(0, 512), slice(0, 512))
    # a model whose cache holds one block draws every block afresh
    small = SyntheticModel(SEED, SCA, NSCI, cache_blocks=1)
    for rows, cols in [(slice(100, 300), slice(60, 400)), (slice(0, 5), slice(127, 129)),
                       (slice(255, 257), slice(3, 5))]:
        part = small.region(rows, cols)
        for f in fields(part):
            whole = getattr(big, f.name)[..., rows, cols]
            assert np.array_equal(getattr(part, f.name), whole), f.name
    tab = MATable.numbered(3)
    full = SyntheticModel(SEED, SCA, NSCI)
    assert np.array_equal(small.biascorr(slice(100, 300), slice(60, 400), tab),
                          full.biascorr(slice(0, 512), slice(0, 512), tab)[:, 100:300, 60:400])
    assert np.array_equal(small.dark_cube(slice(120, 140), slice(250, 260), tab),
                          full.dark_cube(slice(110, 150), slice(240, 300), tab)[:, 10:30, 10:20])


def test_a_window_frame_holds_the_same_pixels_as_the_full_detector():
    window, full = SyntheticModel(SEED, SCA, 64), SyntheticModel(SEED, SCA, NSCI)
    first = NBORDER + (NSCI - 64) // 2
    # (frame positions, detector pixels) of the border, the window, the far border
    parts = [(slice(0, 4), slice(0, 4)), (slice(4, 68), slice(first, first + 64)),
             (slice(68, 72), slice(NDET - 4, NDET))]
    for frame_rows, rows in parts:
        for frame_cols, cols in parts:
            assert_same_region(window.region(frame_rows, frame_cols), full.region(rows, cols))
        assert np.array_equal(window.amp33_med(frame_rows), full.amp33_med(rows))


def test_scas_and_seeds_give_different_detectors(central):
    other_sca = SyntheticModel(SEED, SCA + 1, NSCI).region(*CENTRAL)
    other_seed = SyntheticModel(SEED + 1, SCA, NSCI).region(*CENTRAL)
    for other in (other_sca, other_seed):
        assert np.mean(other.gain == central.gain) < 1e-3
        assert np.mean(other.sref == central.sref) < 1e-3


def test_synthetic_model_pickles_without_its_cache(model, central):
    copy = pickle.loads(pickle.dumps(model))
    assert_same_region(copy.region(*CENTRAL), central)


def test_rectangles_must_be_plain_slices_of_the_frame(model):
    for rows in (slice(0, 4097), slice(5, 5), slice(0, 10, 2), slice(-3, 2)):
        with pytest.raises(ValueError, match="rows"):
            model.region(rows, slice(0, 10))


# --------------------------------------------------------------------------
# synthetic detector: statistics
# --------------------------------------------------------------------------

def test_gain_noise_and_bias_statistics(central):
    assert abs(np.median(central.gain) - 2.0) < 0.06
    assert 0.015 < np.std(central.gain) / np.mean(central.gain) < 0.03
    assert abs(np.median(central.read_noise) - 5.0) < 0.1
    noisy = np.mean(central.read_noise > 5.0 * np.exp(0.45))  # > 4.5 sigma of the lognormal
    assert 0.003 < noisy < 0.007
    assert np.all(central.reset_noise == 20.0)
    assert abs(np.median(central.sref) - 12000.0) < 600.0
    full_well = central.saturation - central.sref
    assert abs(np.median(full_well) - 45000.0) < 200.0
    assert np.all(central.saturation <= 65000.0)
    assert np.array_equal(central.smax, central.saturation)
    assert np.array_equal(central.smin, central.sref - np.float32(2000.0))


def test_dark_current_and_its_flags(central):
    dark_e = central.dark_slope.astype(np.float64) * central.gain  # e-/s
    warm, hot = flagged(central, flags.WARM), flagged(central, flags.HOT)
    assert 0.008 < warm.mean() < 0.012
    assert 0.0006 < hot.mean() < 0.0014
    assert np.all((dark_e[warm] > 0.1 * 0.999) & (dark_e[warm] < 1.0 * 1.001))
    assert np.all((dark_e[hot] > 1.0 * 0.999) & (dark_e[hot] < 20.0 * 1.001))
    normal = ~(warm | hot)
    assert abs(np.median(dark_e[normal]) / 0.005 - 1.0) < 0.02


def test_flat_and_its_flags(central):
    dead, low = flagged(central, flags.DEAD), flagged(central, flags.LOW_QE)
    assert 1e-5 < dead.mean() < 3e-4
    assert 2e-4 < low.mean() < 9e-4
    assert np.all(central.flat[dead] == 0.0)
    assert np.all((central.flat[low] >= 0.3) & (central.flat[low] <= 0.7))
    good = central.flat[~(dead | low)]
    assert abs(np.median(good) - 1.0) < 0.05 and np.all(good > 0.85)


def test_ipc_kernels_conserve_charge_and_follow_galsim(central):
    assert central.ipc.dtype == np.float32
    assert np.abs(central.ipc.sum(axis=(0, 1)) - 1.0).max() < 1e-6
    assert np.all(central.ipc >= 0)
    mean = central.ipc.astype(np.float64).mean(axis=(2, 3))
    np.testing.assert_allclose(mean, MEAN_IPC, rtol=2e-3)
    # GalSim's kernel: nearest neighbours 1.3-1.6 %, diagonals about 0.12 %
    assert 0.012 < MEAN_IPC[0, 1] < 0.017 and 0.001 < MEAN_IPC[0, 0] < 0.0013
    scatter = central.ipc[0, 1].std() / central.ipc[0, 1].mean()
    assert 0.025 < scatter < 0.035


def test_reference_border_is_flagged_dark_free_and_without_ipc(model):
    corner = model.region(slice(0, 16), slice(0, 16))
    border = np.zeros((16, 16), bool)
    border[:NBORDER], border[:, :NBORDER] = True, True
    assert np.array_equal(flagged(corner, flags.REFERENCE_PIXEL), border)
    assert np.array_equal(corner.lin_dq != 0, border)
    assert np.all(corner.dark_slope[border] == 0) and np.all(corner.flat[border] == 1)
    identity = np.zeros((3, 3))
    identity[1, 1] = 1
    assert np.all(corner.ipc[:, :, border] == identity[:, :, None])
    # science pixels on the edge send nothing into the border
    assert np.all(corner.ipc[0, :, NBORDER, NBORDER:] == 0)
    assert np.all(corner.ipc[:, 0, NBORDER:, NBORDER] == 0)
    assert np.abs(corner.ipc[:, :, NBORDER:, NBORDER:].sum(axis=(0, 1)) - 1).max() < 1e-6
    far = model.region(slice(NDET - 6, NDET), slice(NDET - 6, NDET))
    assert np.all(far.ipc[2, :, 1, :2] == 0) and np.all(far.ipc[:, 2, :2, 1] == 0)


# --------------------------------------------------------------------------
# linearity
# --------------------------------------------------------------------------

def test_legendre_value_matches_numpy_inside_and_is_tangent_outside():
    rng = np.random.default_rng(1)
    coeffs = rng.normal(size=4)
    z = np.linspace(-1, 1, 41)
    value, slope = legendre_value(z, coeffs)
    np.testing.assert_allclose(value, leg.legval(z, coeffs), atol=1e-12)
    np.testing.assert_allclose(slope, leg.legval(z, leg.legder(coeffs)), atol=1e-12)
    for edge in (-1.0, 1.0):
        at, tangent = legendre_value(edge, coeffs)
        for h in (1e-9, 0.3, 2.0):
            beyond = edge + np.sign(edge) * h
            v, s = legendre_value(beyond, coeffs)
            assert v == pytest.approx(at + tangent * (beyond - edge), abs=1e-12)
            assert s == pytest.approx(tangent, abs=1e-12)
        inside = legendre_value(edge - np.sign(edge) * 1e-9, coeffs)[0]
        assert inside == pytest.approx(at, abs=1e-7)


def test_synthetic_linearity_is_the_stated_cubic(central):
    """In d = S - Sref the Legendre curve is d + beta d^2 + gamma d^3."""
    for y, x in [(0, 0), (17, 300), (511, 40)]:
        c = central.lin_coeffs[:, y, x].astype(np.float64)
        smin, smax, sref = (float(a[y, x]) for a in (central.smin, central.smax, central.sref))
        in_s = Legendre(c, domain=[smin, smax]).convert(kind=Polynomial)
        in_d = in_s(Polynomial([sref, 1.0])).coef
        assert abs(in_d[0]) < 0.05           # Slin(Sref) = 0 up to float32 rounding
        assert in_d[1] == pytest.approx(1.0, abs=1e-4)
        assert 1.2e-6 * 0.75 < in_d[2] < 1.2e-6 * 1.25
        assert in_d[3] == pytest.approx(1e-12, rel=0.02)


def test_inverse_then_forward_linearisation_returns_the_input(central):
    sl = (slice(0, 40), slice(0, 50))
    region = type(central)(**{f.name: getattr(central, f.name)[..., sl[0], sl[1]]
                              for f in fields(central)})
    lo, hi = linearize(region.smin, region), linearize(region.smax, region)
    t = np.linspace(0.0, 1.0, 64)[:, None, None]
    slin = lo + (hi - lo) * t
    raw = inverse_linearize(slin, region)
    assert np.abs(linearize(raw, region) - slin).max() < 1e-3
    assert np.all(raw >= region.smin - 1e-3) and np.all(raw <= region.smax + 1e-3)
    assert np.abs(linearize(region.sref, region)).max() < 0.05
    # beyond the range the response continues linearly and still inverts
    far = inverse_linearize(hi + 500.0, region)
    assert np.abs(linearize(far, region) - (hi + 500.0)).max() < 1e-3


def test_non_linearity_is_a_few_percent_at_full_well(central):
    full = central.saturation.astype(np.float64) - central.sref
    excess = linearize(central.saturation, central) / full - 1.0
    assert 0.04 < np.median(excess) < 0.07


# --------------------------------------------------------------------------
# bias correction, dark and readout figures
# --------------------------------------------------------------------------

def test_bias_correction_is_an_offset_plus_a_decaying_transient(model):
    tab = MATable.numbered(4)
    bias = model.biascorr(*CENTRAL, tab)
    assert bias.shape == (tab.nresultants, 512, 512) and bias.dtype == np.float32
    expected = 30.0 * np.exp(-tab.tbar / 10.0)
    np.testing.assert_allclose(np.median(bias, axis=(1, 2)), expected, atol=0.2)
    assert abs(np.std(bias[-1]) - 2.0) < 0.1
    assert model.t0(tab) == 0.0  # the well is at Sref ("0 e-") at reset
    assert np.all(model.biascorr(slice(0, 4), slice(0, 100), tab) == 0)


def test_dark_cube_is_the_inverse_linearised_dark_plus_bias(model):
    tab = MATable.numbered(4)
    rows, cols = slice(0, 64), slice(900, 1100)
    region = model.region(rows, cols)
    dark = model.dark_cube(rows, cols, tab)
    bias = model.biascorr(rows, cols, tab)
    reference = flagged(region, flags.REFERENCE_PIXEL)
    assert np.array_equal(dark[:, reference], np.broadcast_to(region.sref[reference],
                                                              dark[:, reference].shape))
    # the first resultant is read 1 alone
    signal = linearize(dark[0].astype(np.float64) - bias[0], region)
    expected = region.dark_slope * tab.frame_time
    assert np.abs(signal - expected)[~reference].max() < 3e-3
    last = linearize(dark[-1].astype(np.float64) - bias[-1], region)
    hot = flagged(region, flags.HOT)
    assert np.all(last[hot] > 10 * region.dark_slope[hot] * tab.frame_time)


def test_readout_figures(model):
    rows = slice(10, 30)
    assert model.amp33_med(rows).shape == model.amp33_std(rows).shape == (20, 128)
    assert np.all(np.abs(model.amp33_med(slice(0, NDET)) - 12000.0) <= 10.0)
    assert np.all(model.amp33_std(rows) == 4.0)
    assert (model.c_pink, model.u_pink, model.m_pink, model.ru_pink) == (3.0, 1.0, 1.0, 1.0)
    assert model.frame_shape == (NDET, NDET)
    assert SyntheticModel(SEED, SCA, 64).frame_shape == (72, 72)


# --------------------------------------------------------------------------
# uniform values
# --------------------------------------------------------------------------

def test_scalar_model_has_romanisims_defaults():
    m = ScalarModel(1, 64)
    r = m.region(slice(0, 72), slice(0, 72))
    reference = flagged(r, flags.REFERENCE_PIXEL)
    assert reference.sum() == 72 * 72 - 64 * 64
    science = ~reference
    assert np.all(r.gain == 2.0) and np.all(r.read_noise == 5.0)
    assert np.all(r.dark_slope[science] * r.gain[science] == np.float32(0.01))
    assert np.all(r.dark_slope[reference] == 0)
    assert np.all(r.saturation == 55000.0) and np.all(r.reset_noise == 0.0)
    assert np.all(r.sref == 5000.0)  # romanisim's 10000 e- pedestal at 2 e-/DN
    assert np.all(r.smin == 0.0) and np.all(r.smax == 55000.0)
    s = np.array([0.0, 5000.0, 31234.5, 55000.0, 60000.0])[:, None, None]
    np.testing.assert_allclose(linearize(s, r), np.broadcast_to(s - 5000.0, (5, 72, 72)),
                               rtol=0, atol=1e-9)
    assert np.all(r.flat == 1.0) and np.all(r.ipc[1, 1] == 1.0)
    assert np.all(r.ipc.sum(axis=(0, 1)) == 1.0)
    tab = MATable.numbered(3)
    assert np.all(m.biascorr(slice(0, 72), slice(0, 72), tab) == 0) and m.t0(tab) == 0.0
    dark = m.dark_cube(slice(4, 8), slice(4, 8), tab)  # linear: Sref + dark_slope * tbar
    expected = np.broadcast_to(5000.0 + 0.005 * tab.tbar[:, None, None], dark.shape)
    np.testing.assert_allclose(dark, expected, rtol=0, atol=2e-3)
    assert (m.c_pink, m.u_pink, m.m_pink, m.ru_pink) == (0.0, 0.0, 0.0, 0.0)
    assert np.all(m.amp33_med(slice(0, 72)) == 5000.0)
    assert np.all(m.amp33_std(slice(0, 72)) == 5.0)


# --------------------------------------------------------------------------
# CALDIR files: errors
# --------------------------------------------------------------------------

def touch_caldir(directory, sca=3, kinds=REQUIRED_KINDS + ("biascorr",), tag="t"):
    for kind in kinds:
        (directory / f"roman_wfi_{kind}_{tag}_SCA{sca:02d}.asdf").write_bytes(b"")


def test_resolve_caldir_finds_one_file_per_kind(tmp_path):
    touch_caldir(tmp_path, kinds=[k for k in REQUIRED_KINDS if k != "flat"])
    (tmp_path / "roman_wfi_pflat_t_SCA03.asdf").write_bytes(b"")
    touch_caldir(tmp_path, sca=13)  # another SCA's files are not ambiguous
    found = resolve_caldir(tmp_path, 3)
    assert sorted(found) == sorted(REQUIRED_KINDS)  # no biascorr: it is optional
    assert found["flat"].name == "roman_wfi_pflat_t_SCA03.asdf"
    assert found["dark"].name == "roman_wfi_dark_t_SCA03.asdf"


def test_resolve_caldir_names_a_missing_kind(tmp_path):
    touch_caldir(tmp_path, kinds=[k for k in REQUIRED_KINDS if k != "ipc4d"])
    with pytest.raises(InputError) as err:
        resolve_caldir(tmp_path, 3)
    msg = str(err.value)
    assert "\n" not in msg and "ipc4d" in msg and "roman_wfi_ipc4d_*_SCA03.asdf" in msg
    assert str(tmp_path) in msg


def test_resolve_caldir_refuses_ambiguous_files(tmp_path):
    touch_caldir(tmp_path)
    touch_caldir(tmp_path, kinds=["gain"], tag="other")
    with pytest.raises(InputError) as err:
        resolve_caldir(tmp_path, 3)
    msg = str(err.value)
    assert "\n" not in msg and "2 gain files" in msg
    assert "roman_wfi_gain_t_SCA03.asdf" in msg and "roman_wfi_gain_other_SCA03.asdf" in msg


def test_caldir_model_needs_every_required_kind(tmp_path):
    touch_caldir(tmp_path)
    paths = resolve_caldir(tmp_path, 3)
    del paths["mask"]
    with pytest.raises(InputError, match="no mask reference file") as err:
        CalDirModel(paths, 3, 64)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="unknown reference file kind darkdecay"):
        CalDirModel({**paths, "darkdecay": tmp_path / "x.asdf"}, 3, 64)


def bad_caldir(tmp_path, dark_tree):
    """Paths whose dark file (checked first) holds ``dark_tree``; the rest empty."""
    touch_caldir(tmp_path)
    paths = resolve_caldir(tmp_path, 3)
    if dark_tree is not None:
        asdf.AsdfFile(dark_tree).write_to(paths["dark"])
    return paths


def test_caldir_model_names_a_wrong_shape_and_the_expected_one(tmp_path):
    paths = bad_caldir(tmp_path, {"roman": {"data": np.zeros((2, 8, 8), np.float32),
                                            "dark_slope": np.zeros((8, 8), np.float32)}})
    with pytest.raises(InputError) as err:
        CalDirModel(paths, 3, 64)
    msg = str(err.value)
    assert "\n" not in msg and str(paths["dark"]) in msg
    assert "roman.data has shape (2, 8, 8)" in msg and "expected (ngroup, 4096, 4096)" in msg


@pytest.mark.parametrize("tree, problem", [
    (None, "cannot be read as ASDF"),
    ({"other": 1}, "has no 'roman' tree"),
    ({"roman": {"dark_slope": np.zeros((2, 2), np.float32)}},
     "has no array roman.data (expected shape (ngroup, 4096, 4096))"),
])
def test_caldir_model_refuses_unreadable_files(tmp_path, tree, problem):
    paths = bad_caldir(tmp_path, tree)
    with pytest.raises(InputError) as err:
        CalDirModel(paths, 3, 64)
    assert problem in str(err.value) and str(paths["dark"]) in str(err.value)


def test_caldir_model_names_a_missing_file(tmp_path):
    paths = bad_caldir(tmp_path, None)
    paths["dark"] = tmp_path / "nowhere.asdf"
    with pytest.raises(InputError, match="dark reference file does not exist"):
        CalDirModel(paths, 3, 64)


def test_write_reffiles_needs_a_full_frame_model(tmp_path):
    with pytest.raises(ValueError, match="full-frame"):
        write_reffiles(SyntheticModel(SEED, SCA, 64), tmp_path, MATable.numbered(3))


# --------------------------------------------------------------------------
# CALDIR files: a full round trip
# --------------------------------------------------------------------------

#: romandask's kinds of reference file and rad's schema names for them
#: (linearitylegendre is romanimpreprocess's own; rad has none)
RAD_SCHEMA = {"dark": "dark", "flat": "flat", "gain": "gain", "ipc4d": "ipc", "mask": "mask",
              "read": "readnoise", "saturation": "saturation"}


def rad_required(kind: str) -> list[str]:
    """The arrays the installed rad's newest schema for ``kind`` requires."""
    from pathlib import Path

    import rad
    import yaml

    if kind not in RAD_SCHEMA:
        return []
    folder = Path(rad.__file__).parent / "resources" / "schemas" / "reference_files"
    versions = sorted(folder.glob(f"{RAD_SCHEMA[kind]}-*.yaml"),
                      key=lambda p: tuple(int(v) for v in p.stem.split("-")[-1].split(".")))
    schema = yaml.safe_load(versions[-1].read_text())
    required = schema.get("required", [])
    for part in schema.get("allOf", []):
        required += part.get("required", [])
    return [name for name in required if name != "meta"]


def test_rad_schemas_are_found():
    assert {"dq", "dark_slope_error"} <= set(rad_required("dark"))
    assert "dq" in rad_required("saturation")


@pytest.mark.slow
def test_written_caldir_reads_back_as_the_synthetic_model(tmp_path):
    sca, tab = 7, MATable.numbered(3)
    model = SyntheticModel(SEED, sca, NSCI)
    paths = write_reffiles(model, tmp_path, tab)
    assert paths == resolve_caldir(tmp_path, sca)
    assert not list(tmp_path.glob("*.tmp"))
    # every array the installed rad's reference schema of each kind requires
    import asdf

    for kind, path in paths.items():
        with asdf.open(path, lazy_load=True) as af:
            missing = set(rad_required(kind)) - set(af.tree["roman"])
            assert not missing, (kind, missing)
    caldir = CalDirModel(paths, sca, NSCI)
    rectangles = [(slice(0, 10), slice(0, 10)), (slice(4086, 4096), slice(4080, 4096)),
                  (slice(0, 6), slice(4090, 4096)), (slice(1000, 1300), slice(2000, 2100))]
    for rows, cols in rectangles:
        assert_same_region(caldir.region(rows, cols), model.region(rows, cols))
        assert np.array_equal(caldir.biascorr(rows, cols, tab), model.biascorr(rows, cols, tab))
        assert np.array_equal(caldir.dark_cube(rows, cols, tab),
                              model.dark_cube(rows, cols, tab))
        assert np.array_equal(caldir.amp33_med(rows), model.amp33_med(rows))
        assert np.array_equal(caldir.amp33_std(rows), model.amp33_std(rows))
    assert caldir.t0(tab) == model.t0(tab)
    for name in ("c_pink", "u_pink", "m_pink", "ru_pink"):
        assert getattr(caldir, name) == getattr(model, name)

    # a window reads the central pixels of the same files
    window, small = CalDirModel(paths, sca, 64), SyntheticModel(SEED, sca, 64)
    every = (slice(0, 72), slice(0, 72))
    assert_same_region(window.region(*every), small.region(*every))
    assert np.array_equal(window.dark_cube(*every, tab), small.dark_cube(*every, tab))
    assert np.array_equal(window.biascorr(*every, tab), small.biascorr(*every, tab))

    other = MATable.numbered(4)
    with pytest.raises(InputError) as err:
        caldir.dark_cube(*every, other)
    assert str(paths["dark"]) in str(err.value) and "(9, 4096, 4096)" in str(err.value)
    with pytest.raises(InputError, match=r"\(9, 4088, 4088\)"):
        caldir.biascorr(*every, other)

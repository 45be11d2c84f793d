"""L1 in a survey run: ramps cube, ASDF files, detector models, persistence, errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm
import xarray as xr
import yaml

from romandask import cli, rng, store
from romandask.detector.l1 import persistence_amplitude, persistence_weights
from romandask.detector.readout import make_readout, pink_noise
from romandask.detector.reference import ScalarModel, SyntheticModel
from romandask.instrument.matables import MATable
from romandask.pipeline import run

CUSTOM = [[1], [2, 3], [5, 6, 7]]


def quiet(s):
    return None


def test_l1_files_carry_their_read_patterns(make_config):
    """Two MA tables in one run: a ragged resultant axis, and files that validate."""
    config, _ = make_config({
        "survey": {"scas": [3]},
        "detector": {"window": 32, "tile": 32},
    })
    exposures = list(config.survey.exposures)
    short = MATable.from_pattern(CUSTOM, name="short")
    config = replace(config, survey=replace(config.survey, exposures=(
        exposures[0], replace(exposures[1], ma_table=short))))
    written = run(config, say=quiet)

    ds = xr.open_zarr(written["store"])
    assert ds.ramps.shape == (2, 1, 9, 40, 40) and ds.ramps.dtype == np.uint16
    assert list(ds.nresultants.values) == [9, 3]
    assert ds.amp33.shape == (2, 1, 9, 40, 128)
    assert not ds.ramps[1, 0, 3:].values.any()  # padding beyond the short table
    assert ds.ramps[1, 0, :3].values.min() > 1000

    files = sorted(written["l1"])
    assert [f.name[-17:] for f in files] == ["_wfi03_uncal.asdf"] * 2
    for f, pattern, table in zip(files, ([list(r) for r in MATable.numbered(4).read_pattern],
                                         CUSTOM), (MATable.numbered(4), short)):
        with rdm.open(f) as model:
            model.validate()
            assert model.meta.exposure.read_pattern == pattern
            assert model.meta.exposure.nresultants == len(pattern)
            assert model.meta.exposure.exposure_time == pytest.approx(table.exposure_time)
            assert model.meta.exposure.frame_time == pytest.approx(3.16247)
            assert model.data.shape == (len(pattern), 40, 40)
            assert model.amp33.shape == (len(pattern), 40, 128)
            assert model.meta.instrument.optical_element == "F158"
            assert model.meta.wcsinfo.s_region.startswith("POLYGON")


def test_ramps_close_on_the_counts_with_a_scalar_detector(make_config):
    """Linear detector: (last - first resultant) * gain = rate * dtbar, rate from the counts."""
    config, _ = make_config({
        "survey": {"scas": [5]},
        "detector": {"window": 64, "tile": 32, "model": "scalar", "cosmic_ray_flux": 0,
                     "scalar": {"gain": 2.0, "read_noise": 5.0, "dark_current": 0.0}},
        "output": {"products": ["counts", "ramps"]},
    })
    written = run(config, say=quiet)
    ds = xr.open_zarr(written["store"])
    table = MATable.numbered(4)
    ramps = ds.ramps[0, 0].values.astype(np.float64)[:, 4:-4, 4:-4]
    slope_dn = (ramps[-1] - ramps[0]).ravel()
    counts = ds.counts[0, 0].values.astype(np.float64).ravel()
    dt = table.tbar[-1] - table.tbar[0]
    predicted = counts.mean() / table.exposure_time * dt / 2.0
    # the two are independent draws of the same expectation
    sigma = np.sqrt(slope_dn.var() / slope_dn.size
                    + (counts.var() / counts.size) * (dt / table.exposure_time / 2.0) ** 2)
    assert abs(slope_dn.mean() - predicted) < 3 * sigma
    # reference pixels see no light: the border stays at the bias level
    border = ds.ramps[0, 0].values[:, :4, :].astype(np.float64)
    assert abs(border[-1].mean() - border[0].mean()) < 3 * 5.0 * np.sqrt(2 / border[0].size) + 0.5


def test_cosmic_rays_per_read_match_the_flux():
    """Events per read over a 520^2 frame: Poisson(flux x area x frame time), within 3 sigma."""
    table = MATable.numbered(4)
    model = SyntheticModel(1, 7, 512)
    events = []
    for k in range(10):
        readout = make_readout(model, table, rng.generator(1, "readout", k, 7), 8.0)
        events.append(np.bincount(readout.cosmic_rays.event_read, minlength=45)[1:])
    per_read = np.concatenate(events)
    area_cm2 = (520 * 10e-4) ** 2
    expected = 8.0 * area_cm2 * table.frame_time
    assert abs(per_read.mean() - expected) < 3 * np.sqrt(expected / per_read.size)


def test_pink_noise_has_unit_variance_and_a_falling_spectrum():
    series = pink_noise(np.random.default_rng(2), (400,), 1024)
    assert series.std() == pytest.approx(1.0, rel=0.05)
    power = np.abs(np.fft.rfft(series, axis=-1)) ** 2
    low, high = power[:, 2:8].mean(), power[:, 200:400].mean()
    assert low > 20 * high


def test_readout_amp33_carries_the_common_noise():
    """amp33 rows follow the common-mode noise that reference-pixel correction removes."""
    table = MATable.numbered(4)
    model = SyntheticModel(3, 1, 256)
    readout = make_readout(model, table, rng.generator(3, "readout", 0, 1), 0.0)
    amp = readout.amp33.astype(np.float64).mean(axis=2)
    amp -= model.amp33_med(slice(0, 264)).mean(axis=1)[None]
    corr = np.corrcoef(amp[-2], readout.common[-2])[0, 1]
    assert corr > 0.9


def test_persistence_model():
    """romanisim's Fermi model: linear below half well; current falls as 1/t."""
    amp = persistence_amplitude(np.array([0.0, 1e4, 2.5e4, 5e4, 1e5, 2e5]))
    assert amp[0] == 0 and amp[2] == pytest.approx(2.5 * amp[1])
    assert np.all(np.diff(amp) > 0)
    w = persistence_weights(100.0, MATable.numbered(4))
    t = 100.0 + 3.16247 * np.arange(45)
    np.testing.assert_allclose(w[1:], 1000.0 * np.log(t[1:] / t[:-1]))
    assert w[0] == 0 and np.all(np.diff(w[1:]) < 0)


def test_persistence_raises_the_next_exposure(make_config):
    """A bright star in exposure 1 leaves extra charge in exposure 2 at its pixels only."""
    from romandask.detector.l1 import L1Tile, simulate_tile

    model = ScalarModel(1, 32, dark_current=0.0)
    table = MATable.numbered(4)
    readout = make_readout(model, table, rng.generator(0, "readout", 0, 1), 0.0)
    spec = L1Tile(0, 1, 1, 0, (0, 40), (0, 40), 32, table, 9, persistence_gap=30.0)
    expected = np.zeros((42, 42))
    previous = np.zeros((42, 42))
    previous[20, 20] = 2e5  # a saturating star
    with_p, _ = simulate_tile(spec, model, expected, readout, previous)
    without, _ = simulate_tile(spec, model, expected, readout, None)
    diff = with_p.astype(np.int64) - without
    gained = (diff[-1] - diff[0])[19, 19] * model.region(slice(0, 1), slice(0, 1)).gain[0, 0]
    predicted = persistence_amplitude(np.array([2e5]))[0] * persistence_weights(
        30.0, table)[2:].sum()
    assert gained == pytest.approx(predicted, abs=4 * np.sqrt(predicted) + 4)
    diff[:, 19, 19] = 0
    assert not diff.any()


def test_caldir_errors_are_one_line(tmp_path, capsys):
    """A CALDIR missing a kind fails the config check: one line, exit 2, nothing written."""
    caldir = tmp_path / "cal"
    caldir.mkdir()
    for kind in ("dark", "flat", "gain"):
        (caldir / f"roman_wfi_{kind}_x_SCA01.asdf").write_bytes(b"")
    from conftest import BASE, merge

    data = merge(BASE, {"survey": {"scas": [1]},
                        "detector": {"window": 64, "model": "caldir", "caldir": "cal"},
                        "output": {"directory": "out"}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ipc4d" in err and "SCA01" in err
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_every_l1_file(make_config):
    """A rerun with --overwrite leaves only its own L1 files."""
    config, _ = make_config({"survey": {"scas": [1]}, "detector": {"window": 32}})
    first = run(config, say=quiet)["l1"]
    assert len(first) == 2
    fewer = replace(config, survey=replace(config.survey, exposures=config.survey.exposures[1:]),
                    output=replace(config.output, overwrite=True))
    second = run(fewer, say=quiet)["l1"]
    assert sorted((config.output.directory / "l1").iterdir()) == sorted(second)
    assert len(second) == 1


def test_store_has_no_l1_when_not_asked(make_config):
    config, _ = make_config({"output": {"products": ["counts"]}})
    written = run(config, say=quiet)
    ds = xr.open_zarr(written["store"])
    assert "ramps" not in ds and "l1" not in written
    assert (config.output.directory / store.STORE_NAME).exists()


def test_reffiles_refuses_bad_input_and_existing_files(tmp_path, capsys):
    """reffiles: one line, exit 2, and an existing file is left as it was."""
    assert cli.main(["reffiles", str(tmp_path), "--sca", "19"]) == 2
    assert "--sca" in capsys.readouterr().err
    existing = tmp_path / "roman_wfi_gain_romandask_SCA03.asdf"
    existing.write_bytes(b"mine")
    assert cli.main(["reffiles", str(tmp_path), "--sca", "2..3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "already exists" in err and "--overwrite" in err
    assert existing.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name]
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert cli.main(["reffiles", str(blocker / "sub")]) == 2
    assert "not a writable directory" in capsys.readouterr().err

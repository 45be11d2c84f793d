"""Level 1 ASDF export: names, metadata, validation, round trip, reproducibility."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
import warnings

import asdf
import astropy.units as u
import galsim
import galsim.roman
import numpy as np
import pytest
import roman_datamodels.datamodels as rdm
from astropy.coordinates import SkyCoord

from romandask import export
from romandask.errors import OutputError
from romandask.instrument.matables import FRAME_TIME, MATable
from romandask.survey.footprint import footprint

WINDOW = 64
SIDE = WINDOW + 2 * export.N_BORDER


def view_of(config, exposure_id: int = 0, sca: int = 2):
    return next(v for v in footprint(config)
                if v.exposure.id == exposure_id and v.sca == sca)


def arrays(nres: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 65536, (nres, SIDE, SIDE), dtype=np.uint16)
    amp33 = rng.integers(0, 65536, (nres, SIDE, export.N_AMP33), dtype=np.uint16)
    return data, amp33


def truth_table(n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {
        "exposure": np.zeros(n, np.int64),
        "sca": np.full(n, 2, np.int64),
        "id": np.arange(n, dtype=np.int64) * 7,
        "ra": 9.7 + rng.normal(0, 0.01, n),
        "dec": -44.0 + rng.normal(0, 0.01, n),
        "x": rng.uniform(0, WINDOW, n),
        "y": rng.uniform(0, WINDOW, n),
        "flux": rng.uniform(10, 1e5, n),
        "type": np.array(["PSF", "SER"] * (n // 2) + ["PSF"] * (n % 2)),
    }


@pytest.fixture
def config(make_config):
    return make_config()[0]


@pytest.fixture
def written(config, tmp_path):
    """One L1 file of SCA 2 of exposure 0 (MA table 4), with its inputs."""
    view = view_of(config)
    data, amp33 = arrays(view.exposure.ma_table.nresultants)
    truth = truth_table()
    directory = tmp_path / "l1"
    directory.mkdir()
    path = export.write_l1(directory, data, amp33, view.exposure, view, WINDOW, truth)
    return path, view, data, amp33, truth


def angle_between(a: float, b: float) -> float:
    """Absolute difference of two angles in degrees, in [0, 180]."""
    return abs((a - b + 180) % 360 - 180)


def open_model(path):
    """Open an L1 file, failing on any warning (e.g. a filename mismatch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return rdm.open(path)


# --------------------------------------------------------------------------
# names and identifiers
# --------------------------------------------------------------------------

def test_l1_filename_follows_the_roman_pattern(config):
    exposure = config.survey.exposures[0]
    name = export.l1_filename(exposure, 2)
    assert name == "r0000101001001001001_01101_0001_wfi02_uncal.asdf"
    assert re.fullmatch(r"r\d{19}_\d{5}_\d{4}_wfi\d{2}_uncal\.asdf", name)
    assert export.l2_filename(exposure, 2) == name.replace("_uncal.asdf", "_cal.asdf")
    second = config.survey.exposures[1]
    assert export.l1_filename(second, 18).endswith("_0002_wfi18_uncal.asdf")


def test_observation_ids_match_the_file_name(config):
    exposure = dataclasses.replace(config.survey.exposures[0], id=41)
    ids = export.observation_ids(exposure)
    name = export.l1_filename(exposure, 7)
    assert ids["exposure"] == 42 and ids["visit"] == 1
    assert len(ids["observation_id"]) == 28
    assert name.startswith("r" + ids["visit_id"] + "_")
    assert name[1:].replace("_", "").startswith(ids["observation_id"])


def test_exposure_ids_beyond_four_digits_move_to_the_next_visit(config):
    exposure = config.survey.exposures[0]
    last = export.observation_ids(dataclasses.replace(exposure, id=9998))
    assert (last["visit"], last["exposure"]) == (1, 9999)
    first = export.observation_ids(dataclasses.replace(exposure, id=9999))
    assert (first["visit"], first["exposure"]) == (2, 1)
    with pytest.raises(ValueError, match="does not fit"):
        export.observation_ids(dataclasses.replace(exposure, id=999 * 9999))
    with pytest.raises(ValueError, match="SCA"):
        export.l1_filename(exposure, 19)


# --------------------------------------------------------------------------
# the written file
# --------------------------------------------------------------------------

def test_written_file_validates_and_round_trips(written):
    path, view, data, amp33, truth = written
    exposure = view.exposure
    assert path.name == export.l1_filename(exposure, 2)
    assert path.name.endswith("_wfi02_uncal.asdf")
    assert sorted(os.listdir(path.parent)) == [path.name]  # no .partial left
    with open_model(path) as model:
        assert isinstance(model, rdm.ScienceRawModel)
        model.validate()
        np.testing.assert_array_equal(model.data, data)
        np.testing.assert_array_equal(model.amp33, amp33)
        assert model.data.dtype == np.uint16 and model.amp33.dtype == np.uint16
        meta = model.meta
        assert meta.filename == path.name
        assert meta.instrument.name == "WFI"
        assert meta.instrument.detector == "WFI02"
        assert meta.instrument.optical_element == "F158"
        assert meta.observation.observation_id == export.observation_ids(exposure)[
            "observation_id"]
        assert meta.observation.exposure == 1


def test_exposure_metadata_matches_the_ma_table(written):
    path, view, *_ = written
    table = view.exposure.ma_table
    with open_model(path) as model:
        exp = model.meta.exposure
        assert [list(r) for r in exp.read_pattern] == [list(r) for r in table.read_pattern]
        assert exp.nresultants == table.nresultants == 9
        assert exp.ma_table_number == 4
        assert exp.ma_table_id == "SCI0004"
        assert exp.frame_time == pytest.approx(FRAME_TIME)
        assert exp.exposure_time == pytest.approx(table.exposure_time)
        assert exp.effective_exposure_time == pytest.approx(table.effective_exposure_time)
        assert exp.type == "WFI_IMAGE" and exp.truncated is False
        assert exp.start_time.isot == "2027-06-01T00:00:00.000"
        assert exp.start_time.scale == "utc"
        elapsed = (exp.end_time - exp.start_time).to_value(u.s)
        assert elapsed == pytest.approx(table.exposure_time, abs=1e-3)
        assert model.meta.file_date == exp.start_time  # no wall clock in the file


def test_sky_metadata_describes_the_sca(written):
    path, view, *_ = written
    with open_model(path) as model:
        wcsinfo, pointing = model.meta.wcsinfo, model.meta.pointing
        assert wcsinfo.aperture_name == "WFI02_FULL"
        assert wcsinfo.s_region == view.s_region()
        assert re.fullmatch(r"POLYGON ICRS( -?\d+\.\d+){8}", wcsinfo.s_region)
        # an even window is centred on the SCA, the aperture's reference point
        assert (wcsinfo.ra_ref, wcsinfo.dec_ref) == pytest.approx(view.center(), abs=1e-9)
        assert (pointing.target_ra, pointing.target_dec) == (view.exposure.ra,
                                                             view.exposure.dec)
        assert pointing.pa_aperture == view.exposure.pa
        assert model.meta.velocity_aberration.scale_factor == 1.0


def test_truth_table_round_trips(written):
    path, view, data, amp33, truth = written
    with open_model(path) as model:
        sim = model[export.TREE_KEY]
        assert sim["window"] == WINDOW
        assert list(sim["window_origin"]) == [view.bounds.xmin - 1, view.bounds.ymin - 1]
        assert "pixel_convention" in sim
        stored = sim["truth"]
        assert set(stored) == set(truth)
        for name, values in truth.items():
            np.testing.assert_array_equal(np.asarray(stored[name]), values)
            assert np.asarray(stored[name]).dtype == values.dtype
    with asdf.open(path) as af:  # readable without roman_datamodels' API too
        np.testing.assert_array_equal(af["roman"][export.TREE_KEY]["truth"]["id"],
                                      truth["id"])


def test_empty_truth_and_no_truth(config, tmp_path):
    view = view_of(config)
    data, amp33 = arrays(view.exposure.ma_table.nresultants)
    empty = {k: v[:0] for k, v in truth_table().items()}
    path = export.write_l1(tmp_path, data, amp33, view.exposure, view, WINDOW, empty)
    with open_model(path) as model:
        assert len(model[export.TREE_KEY]["truth"]["id"]) == 0
    model = export.l1_model(data, amp33, view.exposure, view, window=WINDOW, truth=None)
    assert "truth" not in model[export.TREE_KEY]


# --------------------------------------------------------------------------
# other read patterns
# --------------------------------------------------------------------------

@pytest.mark.parametrize("frame_time", [FRAME_TIME, 2.5])
def test_custom_read_pattern(make_config, tmp_path, frame_time):
    pattern = [[1], [2, 3], [5, 6, 7]]
    config, _ = make_config({"survey": {
        "ma_tables": {"short": {"read_pattern": pattern, "frame_time": frame_time}},
        "exposures": [{"ra": 9.70, "dec": -44.0, "pa": 30.0, "filter": "F087",
                       "ma_table": "short", "start_time": "2027-06-01T00:00:00"}],
    }})
    view = view_of(config)
    table = MATable.from_pattern(pattern, frame_time, name="short")
    data, amp33 = arrays(3)
    path = export.write_l1(tmp_path, data, amp33, view.exposure, view, WINDOW, None)
    with open_model(path) as model:
        model.validate()
        exp = model.meta.exposure
        assert [list(r) for r in exp.read_pattern] == pattern
        assert exp.nresultants == 3
        assert exp.frame_time == pytest.approx(frame_time)
        assert exp.exposure_time == pytest.approx(7 * frame_time)
        assert exp.effective_exposure_time == pytest.approx(table.effective_exposure_time)
        assert exp.ma_table_name == "short"
        assert exp.ma_table_number == export.CUSTOM_MA_TABLE_NUMBER
        assert exp.ma_table_id == export.CUSTOM_MA_TABLE_ID
        assert model.meta.instrument.optical_element == "F087"
        np.testing.assert_array_equal(model.data, data)


# --------------------------------------------------------------------------
# geometry of the telescope frame
# --------------------------------------------------------------------------

@pytest.mark.parametrize("sca", [1, 2])
def test_v_frame_is_consistent_with_the_detector_axes(make_config, sca):
    config, _ = make_config({"survey": {"scas": [1, 2], "exposures": [
        {"ra": 9.70, "dec": -44.0, "pa": 37.0, "filter": "F158", "ma_table": 4,
         "start_time": "2027-06-01T00:00:00"}]}})
    view = view_of(config, sca=sca)
    data, amp33 = arrays(9)
    model = export.l1_model(data, amp33, view.exposure, view, window=WINDOW, truth=None)
    wcsinfo, pointing = model.meta.wcsinfo, model.meta.pointing
    # the detector +y axis lies at V3IdlYAngle from V3, on the far side: exactly
    # for GalSim's nominal orientation, to the skew of the CD matrix locally
    expected = wcsinfo.roll_ref + 180 + export.V3_IDEAL_Y_ANGLE
    # GalSim's own header of the SCA records the orientation it built it with
    world = galsim.CelestialCoord(9.70 * galsim.degrees, -44.0 * galsim.degrees)
    header = galsim.roman.getWCS(world, PA=37.0 * galsim.degrees, date=view.exposure.start_time,
                                 SCAs=[sca])[sca].header
    assert angle_between(header["ORIENTAT"], expected) < 0.01
    c = (4088 + 1) / 2
    centre = view.wcs.toWorld(galsim.PositionD(c, c))
    up = view.wcs.toWorld(galsim.PositionD(c, c + 50))
    pa_y = SkyCoord(centre.ra.deg, centre.dec.deg, unit="deg").position_angle(
        SkyCoord(up.ra.deg, up.dec.deg, unit="deg")).deg
    assert angle_between(pa_y, expected) < 0.3
    # the boresight is 0.496 deg from the WFI centre, V3 close to the observatory +Y
    boresight = SkyCoord(pointing.ra_v1, pointing.dec_v1, unit="deg")
    wfi_cen = SkyCoord(pointing.target_ra, pointing.target_dec, unit="deg")
    assert boresight.separation(wfi_cen).deg == pytest.approx(0.496, abs=1e-3)
    assert angle_between(pointing.pa_v3, 37.0) < 1
    # WFI01's reference point is at about (1313, -1041) arcsec
    if sca == 1:
        assert (wcsinfo.v2_ref, wcsinfo.v3_ref) == pytest.approx((1313, -1041), abs=5)


# --------------------------------------------------------------------------
# reproducibility and atomic writes
# --------------------------------------------------------------------------

def test_same_inputs_give_identical_bytes(config, tmp_path):
    view = view_of(config)
    data, amp33 = arrays(9)
    truth = truth_table()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = export.write_l1(tmp_path / "a", data, amp33, view.exposure, view, WINDOW, truth)
    second = export.write_l1(tmp_path / "b", data.copy(), amp33.copy(), view.exposure, view,
                             WINDOW, {k: v.copy() for k, v in truth.items()})
    assert first.name == second.name
    assert first.read_bytes() == second.read_bytes()
    # rewriting in place gives the same bytes again
    model = export.l1_model(data, amp33, view.exposure, view, window=WINDOW, truth=truth)
    export.write_asdf(model, first)
    assert first.read_bytes() == second.read_bytes()


def test_extension_history_has_a_fixed_order(written):
    path = written[0]
    with asdf.open(path) as af:
        uris = [entry["extension_uri"] for entry in af["history"]["extensions"]]
    assert uris == sorted(uris)
    assert any("roman" in uri for uri in uris)


CHILD = """
import sys
from pathlib import Path
import numpy as np
from romandask import export
from romandask.config import parse_config
from romandask.survey.footprint import footprint
sys.path.insert(0, {tests!r})
from conftest import BASE
from test_export import arrays, truth_table, view_of

config = parse_config(BASE, Path({base!r}), None)
view = view_of(config)
data, amp33 = arrays(9)
export.write_l1(Path({out!r}), data, amp33, view.exposure, view, {window}, truth_table())
"""


def test_same_bytes_from_another_process(config, tmp_path):
    """Nothing process-specific (hash seeds, object addresses) reaches the file."""
    view = view_of(config)
    data, amp33 = arrays(9)
    here = export.write_l1(tmp_path, data, amp33, view.exposure, view, WINDOW, truth_table())
    other = tmp_path / "other"
    other.mkdir()
    script = CHILD.format(tests=os.path.dirname(__file__), base=str(tmp_path),
                          out=str(other), window=WINDOW)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    assert (other / here.name).read_bytes() == here.read_bytes()


def test_write_asdf_records_the_file_name_and_extra_tree(config, tmp_path):
    view = view_of(config)
    model = export.l1_model(*arrays(9), view.exposure, view, window=WINDOW, truth=None)
    path = export.write_asdf(model, tmp_path / "renamed_uncal.asdf",
                             extra_tree={"provenance": {"config": "survey.yaml"}})
    assert model.meta.filename == export.l1_filename(view.exposure, 2)  # model unchanged
    with open_model(path) as reopened:
        assert reopened.meta.filename == "renamed_uncal.asdf"
    with asdf.open(path) as af:
        assert af["provenance"] == {"config": "survey.yaml"}
    for key in ("roman", "history"):
        with pytest.raises(ValueError, match="cannot replace"):
            export.write_asdf(model, tmp_path / "x.asdf", extra_tree={key: {}})


def test_write_into_missing_directory_leaves_nothing(config, tmp_path):
    view = view_of(config)
    model = export.l1_model(*arrays(9), view.exposure, view, window=WINDOW, truth=None)
    target = tmp_path / "missing" / model.meta.filename
    with pytest.raises(OutputError, match="cannot write"):
        export.write_asdf(model, target)
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_write_into_read_only_directory_leaves_nothing(config, tmp_path):
    view = view_of(config)
    model = export.l1_model(*arrays(9), view.exposure, view, window=WINDOW, truth=None)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError):
            export.write_asdf(model, locked / model.meta.filename)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_interrupted_write_keeps_the_old_file_and_no_partial(config, tmp_path, monkeypatch):
    view = view_of(config)
    model = export.l1_model(*arrays(9), view.exposure, view, window=WINDOW, truth=None)
    directory = tmp_path / "out"
    directory.mkdir()
    target = directory / model.meta.filename
    target.write_bytes(b"previous run")

    write_to = asdf.AsdfFile.write_to

    def fail_midway(self, fd, *args, **kwargs):
        if isinstance(fd, io.BytesIO):  # in memory: let it be
            return write_to(self, fd, *args, **kwargs)
        if isinstance(fd, (str, os.PathLike)):
            with open(fd, "wb") as f:
                f.write(b"#ASDF 1.0.0\n")
        else:
            fd.write(b"#ASDF 1.0.0\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(asdf.AsdfFile, "write_to", fail_midway)
    with pytest.raises(OutputError, match="No space left"):
        export.write_asdf(model, target)
    assert sorted(os.listdir(directory)) == [target.name]
    assert target.read_bytes() == b"previous run"


# --------------------------------------------------------------------------
# inputs and extra metadata
# --------------------------------------------------------------------------

def test_l1_model_rejects_inconsistent_inputs(config):
    view = view_of(config)
    data, amp33 = arrays(9)
    kwargs = dict(window=WINDOW, truth=None)
    with pytest.raises(TypeError, match="uint16"):
        export.l1_model(data.astype(np.float32), amp33, view.exposure, view, **kwargs)
    with pytest.raises(ValueError, match="shape"):
        export.l1_model(data[:8], amp33, view.exposure, view, **kwargs)
    with pytest.raises(ValueError, match="shape"):
        export.l1_model(data, amp33[..., :64], view.exposure, view, **kwargs)
    with pytest.raises(ValueError, match="window"):
        export.l1_model(data, amp33, view.exposure, view, window=32, truth=None)
    with pytest.raises(ValueError, match="exposure"):
        export.l1_model(data, amp33, config.survey.exposures[1], view, **kwargs)
    bad_truth = {"id": np.arange(3), "ra": np.zeros(4)}
    with pytest.raises(ValueError, match="equal length"):
        export.l1_model(data, amp33, view.exposure, view, window=WINDOW, truth=bad_truth)


def test_extra_meta_and_visit_metadata(config):
    exposures = config.survey.exposures
    view = view_of(config, exposure_id=1)
    data, amp33 = arrays(9)
    extra = export.visit_metadata(exposures, view.exposure)
    extra["visit"]["type"] = "SIMULATED"
    model = export.l1_model(data, amp33, view.exposure, view, window=WINDOW, truth=None,
                            extra_meta=extra)
    visit = model.meta.visit
    assert visit.nexposures == 2
    assert visit.start_time.isot == "2027-06-01T00:00:00.000"  # the first exposure's
    assert visit.type == "SIMULATED"
    assert visit.dither.executed_pattern is None  # untouched by the merge
    assert model.meta.exposure.start_time.isot == "2027-06-01T00:03:00.000"


def test_resultantdq_is_stored(config, tmp_path):
    view = view_of(config)
    data, amp33 = arrays(9)
    dq = np.zeros(data.shape, np.uint8)
    dq[3, 10, 11] = 2
    path = export.write_l1(tmp_path, data, amp33, view.exposure, view, WINDOW, None,
                           resultantdq=dq)
    with open_model(path) as model:
        np.testing.assert_array_equal(model.resultantdq, dq)


def test_pixel_convention_of_l1_and_l2_files_says_where_a_source_lies(make_config, tmp_path):
    """A star planted at truth (x, y): the L1 record's convention (data[:, y + 4, x + 4])
    and the L2's (data[y, x], no border), from a run and from `romandask calibrate`,
    each name the pixel where the star is brightest."""
    import yaml
    from astropy.table import Table

    import romandask
    from romandask.pipeline import run
    from romandask.scene.catalog import write_catalog

    window = 32
    one = {"survey": {"exposures": [{"ra": 9.70, "dec": -44.0, "pa": 0.0, "filter": "F158",
                                     "ma_table": 4, "start_time": "2027-06-01T00:00:00"}],
                      "scas": [1]},
           "detector": {"window": window, "tile": 32}}
    config, _ = make_config(one)
    x, y = 10.2, 20.7                        # 0-based window pixels
    (view,) = footprint(config)
    sky = view.wcs.toWorld(galsim.PositionD(*view.to_galsim(x, y)))
    write_catalog(Table({"ra": [sky.ra.deg], "dec": [sky.dec.deg], "type": ["PSF"],
                         "n": [-1.0], "half_light_radius": [0.0], "pa": [0.0], "ba": [1.0],
                         "F158": [10 ** (-0.4 * 19.0)]}), tmp_path / "star.ecsv")
    config, _ = make_config({**one, "catalog": {"synthetic": None, "file": "star.ecsv"},
                             "output": {"products": ["l1", "l2"]}})
    written = run(config, say=lambda s: None)
    cal = tmp_path / "cal.yaml"
    cal.write_text(yaml.safe_dump({"IN": str(written["l1"][0]),
                                   "OUT": str(tmp_path / "cal_cal.asdf")}))
    (calibrated,) = romandask.calibrate(str(cal))

    def brightest(image):
        return tuple(int(v) for v in np.unravel_index(np.nanargmax(image), image.shape))

    with open_model(written["l1"][0]) as l1:
        sim = l1[export.TREE_KEY]
        (tx,), (ty,) = np.asarray(sim["truth"]["x"]), np.asarray(sim["truth"]["y"])
        assert (tx, ty) == pytest.approx((x, y), abs=1e-9)
        assert "data[:, y + 4, x + 4]" in sim["pixel_convention"]
        assert sim["pixel_convention"] == export.pixel_convention("L1")
        ramp = np.asarray(l1.data, np.float64)
        assert brightest(ramp[-1] - ramp[0]) == (round(ty) + 4, round(tx) + 4)
    for path in (written["l2"][0], calibrated):
        with open_model(path) as l2:
            sim = l2[export.TREE_KEY]
            text = sim["pixel_convention"]
            assert "data[y, x]" in text and "+ 4" not in text, text
            assert text == export.pixel_convention("L2")
            assert brightest(np.asarray(l2.data)) == (round(ty), round(tx))
    with pytest.raises(ValueError):
        export.pixel_convention("L3")

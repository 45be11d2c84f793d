"""``romandask calibrate``: L1 files in, validated L2 files out, and its errors."""

from __future__ import annotations

import shutil

import asdf
import numpy as np
import pytest
import roman_datamodels.datamodels as rdm
import yaml

import romandask
from romandask import cli
from romandask.pipeline import run


def quiet(s):
    return None


@pytest.fixture(scope="module")
def l1_run(tmp_path_factory):
    """One small survey run: L1 and L2 files of 1 exposure x 2 SCAs."""
    from conftest import BASE, merge

    from romandask.config import parse_config

    tmp = tmp_path_factory.mktemp("run")
    data = merge(BASE, {"survey": {"exposures": BASE["survey"]["exposures"][:1]},
                        "detector": {"window": 32, "tile": 32},
                        "calibration": {"fitter": "fixed"},
                        "output": {"products": ["l1", "l2"]}})
    written = run(parse_config(data, tmp), say=quiet)
    return tmp, written


#: gen_cal_image's defaults turned to a run's calibration: every resultant, no backup.
AS_A_RUN = {"EXCLUDE_FIRST": False, "SATURATION_BACKUP": 0}


def _write_config(path, **entries):
    path.write_text(yaml.safe_dump(entries))
    return path


def test_calibrate_reproduces_the_run_l2_files(l1_run, tmp_path):
    """The standalone path rebuilds the detector model and WCS the L1 files carry."""
    _, written = l1_run
    # a run's calibration uses every resultant and no saturation backup, and its
    # FITS companions here take romandask's layout
    config = _write_config(tmp_path / "cal.yaml", IN=str(written["l1"][0].parent / "*_uncal.asdf"),
                           OUT=str(tmp_path / "l2"), FITTER="fixed", FITSOUT=True,
                           FITSLAYOUT="romandask", **AS_A_RUN)
    out = romandask.calibrate(str(config))
    assert len(out) == 2
    for path in out:
        twin = written["l2"][0].parent / path.name
        with rdm.open(path) as a, rdm.open(twin) as b:
            a.validate()
            assert a.meta.cal_step.ramp_fit == "COMPLETE"
            assert a.meta.photometry.conversion_megajanskys > 0
            for name in ("data", "err", "dq", "var_poisson", "var_rnoise"):
                np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))
            ra, dec = a.meta.wcs(5.0, 7.0)
            assert a.meta.wcs.invert(ra, dec) == pytest.approx((5.0, 7.0), abs=1e-6)
            data = np.array(a.data)
        fits_path = path.with_name(path.name.replace(".asdf", "_asdf_to.fits"))
        from astropy.io import fits

        with fits.open(fits_path) as hdul:
            np.testing.assert_array_equal(hdul["SCI"].data, data)


def test_run_l2_files_validate_and_carry_a_working_wcs(l1_run):
    _, written = l1_run
    assert len(written["l2"]) == 2
    for path in written["l2"]:
        assert path.name.endswith("_cal.asdf")
        with rdm.open(path) as model:
            model.validate()
            assert model.data.shape == (32, 32) and model.data.dtype == np.float32
            assert model.err.dtype == np.float16 and model.dq.dtype == np.uint32
            assert np.isfinite(model.data).mean() > 0.99
            assert model.meta.exposure.read_pattern[0] == [1]
            assert model.meta.photometry.pixel_area == pytest.approx(2.844e-13, rel=1e-3)
            assert "truth" in model["romandask"]
            # romancal's resample needs the image's extent in its gWCS
            bbox = model.meta.wcs.bounding_box.bounding_box(order="F")
            assert bbox == ((-0.5, 31.5), (-0.5, 31.5))


def _cli(*args):
    return cli.main(["calibrate", *map(str, args)])


def test_existing_out_is_refused_unless_overwrite(l1_run, tmp_path, capsys):
    _, written = l1_run
    target = tmp_path / "one_cal.asdf"
    target.write_text("keep me")
    config = _write_config(tmp_path / "c.yaml", IN=str(written["l1"][0]), OUT=str(target),
                           FITTER="fixed")
    assert _cli(config) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "OVERWRITE" in err
    assert target.read_text() == "keep me"
    assert _cli(config, "--overwrite") == 0
    with rdm.open(target) as model:
        model.validate()


def test_an_l2_file_is_not_l1(l1_run, tmp_path, capsys):
    _, written = l1_run
    config = _write_config(tmp_path / "c.yaml", IN=str(written["l2"][0]), OUT=str(tmp_path / "o"))
    assert _cli(config) == 2
    err = capsys.readouterr().err.strip()
    assert "ImageModel, not L1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_read_pattern_that_does_not_match_the_data(l1_run, tmp_path, capsys):
    _, written = l1_run
    bad = tmp_path / "bad_uncal.asdf"
    shutil.copy(written["l1"][0], bad)
    with asdf.open(bad, mode="rw") as af:
        af.tree["roman"]["meta"]["exposure"]["read_pattern"] = \
            af.tree["roman"]["meta"]["exposure"]["read_pattern"][:-1]
        af.update()
    config = _write_config(tmp_path / "c.yaml", IN=str(bad), OUT=str(tmp_path / "o"))
    assert _cli(config) == 2
    err = capsys.readouterr().err.strip()
    assert "read_pattern has 8 resultants but the data have 9" in err


def test_likely_refuses_a_short_ramp(l1_run, tmp_path, capsys):
    _, written = l1_run
    short = tmp_path / "short_uncal.asdf"
    with asdf.open(written["l1"][0], lazy_load=False) as af:
        roman = af.tree["roman"]
        roman["meta"]["exposure"]["read_pattern"] = [[1], [2], [3, 4]]
        for name in ("data", "amp33", "resultantdq"):
            roman[name] = np.asarray(roman[name])[:3]
        af.write_to(short)
    config = _write_config(tmp_path / "c.yaml", IN=str(short), OUT=str(tmp_path / "o"),
                           FITTER="likely")
    assert _cli(config) == 2
    err = capsys.readouterr().err.strip()
    assert "has 3 resultants; the likely fitter needs at least 4" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_caldir_missing_kind_and_wrong_shape(l1_run, tmp_path, capsys):
    from romandask.detector.reference import REQUIRED_KINDS

    _, written = l1_run
    files = {}
    for kind in REQUIRED_KINDS:
        path = tmp_path / f"{kind}.asdf"
        asdf.AsdfFile({"roman": {"data": np.zeros((10, 10), np.float32)}}).write_to(path)
        files[kind] = str(path)
    partial = {k: v for k, v in files.items() if k != "gain"}
    config = _write_config(tmp_path / "c.yaml", IN=str(written["l1"][0]),
                           OUT=str(tmp_path / "o"), CALDIR=partial)
    assert _cli(config) == 2
    err = capsys.readouterr().err.strip()
    assert "no gain reference file" in err and len(err.splitlines()) == 1

    config = _write_config(tmp_path / "c.yaml", IN=str(written["l1"][0]),
                           OUT=str(tmp_path / "o"), CALDIR=files)
    assert _cli(config) == 2
    err = capsys.readouterr().err.strip()
    assert "shape" in err and "4096" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("entries, message", [
    ({"OUT": "o"}, "IN: is required"),
    ({"IN": "nothing*.asdf", "OUT": "o"}, "matches no file"),
    ({"IN": "x", "OUT": "o", "FITTER": "ols"}, "FITTER"),
    ({"IN": "x", "OUT": "o", "JUMP_DETECT_PARS": {"IthreshA": 10, "IthreshB": 1}}, "IthreshA"),
    ({"IN": "x", "OUT": "o", "JUMPS": 1}, "JUMPS"),
])
def test_bad_calibrate_configs(tmp_path, capsys, entries, message):
    (tmp_path / "x").write_text("")
    config = _write_config(tmp_path / "c.yaml", **entries)
    assert _cli(config) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_romanisim_l1_calibrates_like_romanisim_l2(tmp_path):
    """romanisim's own L1 and L2 of one simulation: with romanisim's fitter
    (stcal's ols_cas22), our L2 agrees with its L2 within the errors."""
    pytest.importorskip("romanisim")
    import galsim

    from romanisim_fixture import make_romanisim_pair

    from romandask.wcs import fits_header_from_galsim

    pair = make_romanisim_pair(tmp_path, seed=3, n_pix=64)
    wcs = pair["galsim_wcs"].withOrigin(galsim.PositionD(1.0, 1.0))  # GalSim 1-based
    header = tmp_path / "wcs.txt"
    header.write_text(fits_header_from_galsim(wcs, (0, 0)).tostring(sep="\n"))
    config = _write_config(
        tmp_path / "c.yaml", IN=str(pair["l1_path"]), OUT=str(tmp_path / "ours_cal.asdf"),
        FITSWCS=str(header), FITTER="ols_cas22", **AS_A_RUN,
        DETECTOR={"model": "scalar", "scalar": {
            "gain": float(pair["gain"]), "read_noise": float(pair["read_noise"]),
            "dark_current": float(pair["dark_current"]),
            "saturation": float(pair["saturation"])}})
    (path,) = romandask.calibrate(str(config))
    with rdm.open(path) as ours, rdm.open(pair["l2_path"]) as theirs:
        ours.validate()
        from romandask.wcs import pixel_area_map

        area = pixel_area_map(wcs, (0, 0), slice(0, 64), slice(0, 64))
        mine = np.asarray(ours.data, np.float64) * area        # per pixel, as romanisim
        err = np.asarray(theirs.err, np.float64)
        pull = (mine - np.asarray(theirs.data)) / err
        ok = np.isfinite(pull)
        assert ok.mean() > 0.99
        assert np.abs(pull[ok]).max() < 1.0, np.abs(pull[ok]).max()
        assert abs(pull[ok].mean()) < 0.05
        # and both against the counts romanisim drew
        truth = (pair["counts"] / pair["exposure_time"] - pair["dark_current"]) / pair["gain"]
        resid = (mine - truth) / np.asarray(ours.err, np.float64)
        assert abs(np.median(resid)) < 0.2


def test_a_last_tile_thinner_than_the_halo(tmp_path):
    """A 42-pixel window in 16-pixel tiles: the frame's last tile has 2 rows."""
    from conftest import BASE, merge

    from romandask.config import parse_config

    data = merge(BASE, {"survey": {"exposures": BASE["survey"]["exposures"][:1], "scas": [3]},
                        "detector": {"window": 42, "tile": 16},
                        "calibration": {"fitter": "fixed"},
                        "output": {"products": ["l2"]}})
    written = run(parse_config(data, tmp_path), say=quiet)
    with rdm.open(written["l2"][0]) as model:
        model.validate()
        assert model.data.shape == (42, 42) and np.isfinite(model.data).mean() > 0.99


@pytest.fixture(scope="module")
def romanisim_cosmic_rays(tmp_path_factory):
    """romanisim's L1 and L2 of a 256^2 array hit by cosmic rays at the density of a
    whole SCA's rate on it (55 % of pixels hit, up to 5 per pixel), calibrated by
    romandask with its default fitter and with romanisim's (ols_cas22)."""
    pytest.importorskip("romanisim")
    import galsim

    from romanisim_fixture import make_romanisim_pair

    from romandask.wcs import fits_header_from_galsim, pixel_area_map

    tmp = tmp_path_factory.mktemp("romanisim_cr")
    n = 256
    pair = make_romanisim_pair(tmp, seed=11, n_pix=n, cosmic_rays=True, cr_area=16.8)
    wcs = pair["galsim_wcs"].shiftOrigin(galsim.PositionD(1.0, 1.0))
    (tmp / "wcs.txt").write_text(fits_header_from_galsim(wcs, (0, 0)).tostring(sep="\n"))
    area = pixel_area_map(wcs, (0, 0), slice(0, n), slice(0, n))
    ours = {}
    for fitter in (None, "ols_cas22"):
        entries = dict(IN=str(pair["l1_path"]), OUT=str(tmp / f"ours_{fitter}.asdf"),
                       FITSWCS=str(tmp / "wcs.txt"), **AS_A_RUN,
                       DETECTOR={"model": "scalar", "scalar": {
                           "gain": float(pair["gain"]), "read_noise": float(pair["read_noise"]),
                           "dark_current": float(pair["dark_current"]),
                           "saturation": float(pair["saturation"])}})
        if fitter:
            entries["FITTER"] = fitter
        (path,) = romandask.calibrate(str(_write_config(tmp / f"{fitter}.yaml", **entries)))
        with rdm.open(path) as model:
            ours[fitter or "default"] = {       # per pixel, as romanisim's rates
                "data": np.asarray(model.data, np.float64) * area,
                "err": np.asarray(model.err, np.float64) * area,
                "dq": np.asarray(model.dq)}
    with rdm.open(pair["l2_path"]) as model:
        theirs = np.asarray(model.data, np.float64)
    hits = ((pair["l1_dq"][:, 4:-4, 4:-4] & 4) > 0).sum(axis=0)   # resultants hit
    truth = (pair["counts"] / pair["exposure_time"] - pair["dark_current"]) / pair["gain"]
    yy, xx = np.mgrid[0:n, 0:n]
    sky = np.ones((n, n), bool)
    for x, y in zip(pair["catalog"]["x"], pair["catalog"]["y"]):
        sky &= (yy - y) ** 2 + (xx - x) ** 2 > 20 ** 2
    return ours, theirs, hits, truth, sky


def test_romanisim_sky_is_read_without_bias(romanisim_cosmic_rays):
    """On pixels without cosmic rays the default fit reads romanisim's sky (~66 e-)
    without bias; romanisim's own L2 (stcal's ols_cas22) reads it ~1.4 % high."""
    ours, theirs, hits, truth, sky = romanisim_cosmic_rays
    clean = sky & (hits == 0)
    mine = ours["default"]["data"][clean]
    sem = mine.std() / np.sqrt(mine.size)
    bias = mine.mean() - truth[clean].mean()
    assert abs(bias) < 3 * sem, (bias / truth[clean].mean(), sem / truth[clean].mean())
    theirs_bias = theirs[clean].mean() - truth[clean].mean()
    assert theirs_bias > bias + 5 * sem
    # and the same fitter as romanisim's gives romanisim's sky
    assert abs(ours["ols_cas22"]["data"][clean].mean() - theirs[clean].mean()) < sem


def test_romanisim_multi_hit_pixels_are_not_outliers(romanisim_cosmic_rays):
    """Pixels with cosmic rays in 1-4 resultants, flagged JUMP_DET: few beyond 5 sigma
    of the truth with the default fit, where ols_cas22 gives 5-45 %."""
    ours, _, hits, truth, _ = romanisim_cosmic_rays
    limits = {1: 0.001, 2: 0.005, 3: 0.02, 4: 0.06}
    for fitter, expect_good in (("default", True), ("ols_cas22", False)):
        out = ours[fitter]
        pull = (out["data"] - truth) / out["err"]
        jump = (out["dq"] & 4) > 0
        for k, limit in limits.items():
            sel = (hits == k) & jump & np.isfinite(pull)
            assert sel.sum() > 150
            assert np.mean(jump[hits == k]) > 0.95
            outliers = np.mean(np.abs(pull[sel]) > 5)
            if expect_good:
                assert outliers < limit, (k, outliers)
            elif k >= 2:
                assert outliers > limit, (k, outliers)     # what the default fit repairs


# --------------------------------------------------------------------------
# gen_cal_image's keys, its units and its FITS layout
# --------------------------------------------------------------------------

def _fits(path):
    from astropy.io import fits

    with fits.open(path) as hdul:
        return [(h.header.copy(), None if h.data is None else np.array(h.data)) for h in hdul]


def test_gen_cal_image_defaults_hold(l1_run, tmp_path):
    """FITTER absent is the seed's fixed-weight fit; EXCLUDE_FIRST, SATURATION_BACKUP and
    REJECTION_THRESHOLD default as in gen_cal_image; JUMP_DETECT_PARS reach the fit."""
    from romandask.calibrate.fixed_fit import JumpThresholds, RampOptimization
    from romandask.calibrate.standalone import load_calibrate_config

    _, written = l1_run
    base = {"IN": str(written["l1"][0]), "OUT": str(tmp_path / "o.asdf")}
    (job,) = load_calibrate_config(base).jobs
    opts = job.options
    assert (opts.fitter, opts.exclude_first, opts.saturation_backup) == ("fixed", True, 1)
    assert opts.rejection_threshold == 4.5 and opts.units == "romandask" and opts.use_jump
    assert opts.jump == JumpThresholds() == JumpThresholds(5.5, 4.5, 1.0, 1000.0)
    assert opts.optimization == RampOptimization(0.4, 1.8, 6.5)
    assert job.fits_target is None and job.fits_layout == "gen_cal_image"
    assert job.skyorder is None and not opts.sliceout
    (job,) = load_calibrate_config({**base, "JUMP_DETECT_PARS": {
        "SthreshA": 6.0, "SthreshB": 5.0, "IthreshA": 0.6, "IthreshB": 600.0}}).jobs
    assert job.options.jump == JumpThresholds(6.0, 5.0, 0.6, 600.0)
    (job,) = load_calibrate_config({**base, "romancal_ramp_fit": True,
                                    "REJECTION_THRESHOLD": 6.0}).jobs
    assert job.options.fitter == "likely" and job.options.rejection_threshold == 6.0
    (job,) = load_calibrate_config({**base, "JUMP_KW": {"expand_large_events": False,
                                                        "min_jump_area": 6},
                                    "correct_wfi18_transient": False,
                                    "wfi18_mask_rows": True}).jobs
    assert job.options.fitter == "fixed"


def test_jump_detect_pars_are_honoured_by_the_default_fit(l1_run, tmp_path):
    """Jumps planted in an L1 file are flagged by the default fit; with thresholds of
    1000 sigma they are not."""
    _, written = l1_run
    planted = tmp_path / "jumps_uncal.asdf"
    pixels = [(10 + 2 * k, 6 + 3 * k) for k in range(8)]      # frame (y, x)
    with asdf.open(written["l1"][0], lazy_load=False) as af:
        data = np.array(af.tree["roman"]["data"])
        for y, x in pixels:
            data[5:, y, x] += 3000          # a cosmic ray arriving in resultant 5
        af.tree["roman"]["data"] = data
        af.write_to(planted)
    flagged = {}
    for name, pars in (("default", None), ("high", {"SthreshA": 1000.0, "SthreshB": 1000.0})):
        entries = dict(IN=str(planted), OUT=str(tmp_path / f"{name}.asdf"))
        if pars:
            entries["JUMP_DETECT_PARS"] = pars
        (path,) = romandask.calibrate(str(_write_config(tmp_path / f"{name}.yaml", **entries)))
        with rdm.open(path) as model:
            assert model["romandask"]["fitter"] == "fixed"
            jump = (np.asarray(model.dq) & 4) != 0
        flagged[name] = [bool(jump[y - 4, x - 4]) for y, x in pixels]
        flagged[name + " elsewhere"] = int(jump.sum()) - sum(flagged[name])
    assert all(flagged["default"]) and not any(flagged["high"]), flagged
    assert flagged["high elsewhere"] == 0


def test_units_gen_cal_image_is_the_documented_map_of_romandask_units(l1_run, tmp_path):
    """One L1 file calibrated in both units: data, err and the variances (float32 in
    romandask's FITS layout) differ by g_ref F A^2 / (g F~) and its square."""
    from romandask.detector.model import model_from_record
    from romandask.export import fits_companion, sim_entries
    from romandask.wcs import pixel_area_map, read_fits_header

    from test_calibrate import _gen_cal_image_flat

    _, written = l1_run
    out = {}
    for units in ("romandask", "gen_cal_image"):
        config = _write_config(tmp_path / f"{units}.yaml", IN=str(written["l1"][0]),
                               OUT=str(tmp_path / f"{units}_cal.asdf"), UNITS=units,
                               FITSOUT=True, FITSLAYOUT="romandask")
        (path,) = romandask.calibrate(str(config))
        with rdm.open(path) as model:
            model.validate()
            sim = sim_entries(model)
            assert sim["units"] == units and sim["pixel_area_normalised"] == (units == "romandask")
            conversion = model.meta.photometry.conversion_megajanskys
            assert (conversion is None) == (units == "gen_cal_image")
            data = np.asarray(model.data, np.float64)
        hdus = {h["EXTNAME"]: a for h, a in _fits(fits_companion(path))[1:]}
        np.testing.assert_array_equal(hdus["SCI"], data)
        assert _fits(fits_companion(path))[0][0]["UNITS"] == units
        out[units] = {name: hdus[ext].astype(np.float64) for name, ext in
                      (("data", "SCI"), ("err", "ERR"), ("var_poisson", "VAR_POISSON"),
                       ("var_rnoise", "VAR_RNOISE"))}
        out[units]["dq"] = hdus["DQ"]
    with rdm.open(written["l1"][0]) as l1:
        sim = sim_entries(l1)
        n = l1.data.shape[-1] - 8
        model = model_from_record(sim["detector"], int(l1.meta.instrument.detector[3:]), n)
        import galsim

        wcs = galsim.GSFitsWCS(header=galsim.FitsHeader(
            header=read_fits_header(str(sim["fits_wcs"]))))
    area = pixel_area_map(wcs, (0, 0), slice(0, n), slice(0, n))
    inside = slice(4, n + 4)
    region = model.region(inside, inside)
    import test_calibrate

    old_n = test_calibrate.N
    test_calibrate.N = n
    try:
        tilde = _gen_cal_image_flat(model)
    finally:
        test_calibrate.N = old_n
    mapping = model.reference_gain() * region.flat * area ** 2 / (region.gain * tilde)
    a, b = out["romandask"], out["gen_cal_image"]
    np.testing.assert_array_equal(a["dq"], b["dq"])
    ok = np.isfinite(a["data"])
    assert ok.mean() > 0.99 and np.array_equal(ok, np.isfinite(b["data"]))
    for name, power in (("data", 1), ("err", 1), ("var_poisson", 2), ("var_rnoise", 2)):
        keep = ok & (np.abs(a[name]) > 1e-3 * np.nanmax(np.abs(a[name])))
        np.testing.assert_allclose(b[name][keep] / a[name][keep], mapping[keep] ** power,
                                   rtol=3e-6, err_msg=name)


def test_fitsout_takes_gen_cal_image_layout(l1_run, tmp_path):
    """Primary HDU: the data; then the dq; then the data with the pixels gen_cal_image's
    grown mask rejects at -1000 (saturated pixels kept)."""
    from romandask.calibrate.gen_cal_image import good_pixels
    from romandask.export import fits_companion

    _, written = l1_run
    config = _write_config(tmp_path / "c.yaml", IN=str(written["l1"][0]),
                           OUT=str(tmp_path / "a_cal.asdf"), FITSOUT=True)
    (path,) = romandask.calibrate(str(config))
    with rdm.open(path) as model:
        data, dq = np.asarray(model.data), np.asarray(model.dq)
    hdus = _fits(fits_companion(path))
    assert len(hdus) == 3 and fits_companion(path).name == "a_cal_asdf_to.fits"
    (h0, primary), (h1, flags), (h2, masked) = hdus
    assert primary.dtype.kind == masked.dtype.kind == "f" and primary.dtype.itemsize == 4
    np.testing.assert_array_equal(primary, data)
    np.testing.assert_array_equal(flags, dq)
    good = good_pixels(dq)
    np.testing.assert_array_equal(masked, np.where(good, data, np.float32(-1000)))
    assert not good[(dq & 1) != 0].any() and np.isfinite(masked).all()
    assert h0["FITSLAYO"] == "gen_cal_image" and h0["BUNIT"] == "DN/s"
    for header in (h0, h1, h2):
        assert header["CTYPE1"].startswith("RA---TAN")


def test_skyorder_subtracts_the_median_fitted_polynomial(l1_run, tmp_path):
    from romandask.calibrate.gen_cal_image import sky_model

    _, written = l1_run
    data = {}
    for order in (None, 0, 2):
        entries = dict(IN=str(written["l1"][0]), OUT=str(tmp_path / f"sky{order}_cal.asdf"),
                       SLICEOUT=True)
        if order is not None:
            entries["SKYORDER"] = order
        (path,) = romandask.calibrate(str(_write_config(tmp_path / f"{order}.yaml", **entries)))
        with rdm.open(path) as model:
            data[order] = np.asarray(model.data, np.float64)
            sim = model["romandask"]
            endslice = np.asarray(sim["endslice"])
            assert endslice.dtype == np.int8 and endslice.shape == data[order].shape
            assert (endslice[(np.asarray(model.dq) & 2) == 0] == -1).all()
            if order is None:
                assert "sky" not in sim
                continue
            coefficients = np.asarray(sim["sky"]["coefficients"])
            assert sim["sky"]["order"] == order
            assert len(coefficients) == (order + 1) * (order + 2) // 2
        np.testing.assert_allclose(data[None] - data[order],
                                   sky_model(coefficients, order, data[None].shape),
                                   atol=2e-6 * np.nanmax(np.abs(data[None])), equal_nan=True)
        if order == 0:
            # the least-squares constant is the mean of the 8 x 8 block medians
            n = data[None].shape[0] // 8
            blocks = data[None].reshape(8, n, 8, n)
            assert coefficients[0] == pytest.approx(np.nanmedian(blocks, axis=(1, 3)).mean(),
                                                    rel=1e-12)
    # the sky is gone: block medians of what is left scatter about zero
    left = data[2][np.isfinite(data[2])]
    assert abs(np.median(left)) < 0.1 * np.median(data[None][np.isfinite(data[None])])


def test_fit_sky_recovers_a_plane_and_a_quadratic():
    from romandask.calibrate.gen_cal_image import fit_sky, sky_model

    n = 96
    truth = np.array([2.0, 0.3, -0.05, -0.4, 0.02, 0.1])     # (0,0) (0,1) (0,2) (1,0) (1,1) (2,0)
    plane = sky_model(truth[[0, 1, 3]], 1, (n, n))
    coefficients, model = fit_sky(plane, 1)
    np.testing.assert_allclose(coefficients, truth[[0, 1, 3]], atol=1e-12)
    np.testing.assert_allclose(model, plane, atol=1e-12)
    image = sky_model(truth, 2, (n, n)) + np.random.default_rng(0).normal(0, 0.01, (n, n))
    image[10:20, 30:40] = np.nan
    image[50, 50] = 1e6                     # a star: the medians ignore it
    coefficients, model = fit_sky(image, 2)
    np.testing.assert_allclose(coefficients, truth, atol=5e-3)
    with pytest.raises(ValueError, match="sky blocks have data"):
        fit_sky(np.full((n, n), np.nan), 0)


def test_good_pixels_grow_each_flag_as_gen_cal_image(tmp_path):
    """The mask against the definition: each flag's layer convolved with its kernel."""
    from scipy.signal import convolve

    from roman_datamodels.dqflags import pixel

    from romandask.calibrate.gen_cal_image import MASK_GROWTH, good_pixels

    g = np.random.default_rng(5)
    bits = [int(getattr(pixel, name)) for name in MASK_GROWTH] + [int(pixel.SATURATED)]
    dq = np.zeros((60, 70), np.uint32)
    for _ in range(120):
        dq[g.integers(0, 60), g.integers(0, 70)] |= np.uint32(bits[g.integers(len(bits))])
    kernels = {5: np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]), 9: np.ones((3, 3)),
               25: np.ones((5, 5))}
    bad = np.zeros(dq.shape, bool)
    for name, grow in MASK_GROWTH.items():
        layer = (dq & np.uint32(getattr(pixel, name))) != 0
        bad |= layer if grow == 1 else convolve(2 * layer.astype(int), kernels[grow],
                                                mode="same", method="direct") >= 1
    np.testing.assert_array_equal(good_pixels(dq), ~bad)
    assert good_pixels(np.full((3, 3), np.uint32(pixel.SATURATED))).all()
    assert 0.1 < bad.mean() < 0.5     # the growth matters

"""L2 source injection: photometry, noise, locality, files, errors, determinism."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm
from astropy.table import Table

import romandask
from romandask import inject as injmod
from romandask.cli import main
from romandask.config import DEFAULT_FITTER
from romandask.errors import InputError
from romandask.wcs import pixel_area_map

NAMES = ("data", "err", "var_poisson", "var_rnoise", "dq")


def quiet(s):
    return None


@pytest.fixture(scope="module")
def l2_file(tmp_path_factory):
    """One romandask L2 image: 256^2 pixels of F158 sky, synthetic detector, no sources."""
    from conftest import BASE, merge

    from romandask.config import parse_config
    from romandask.pipeline import run

    tmp = tmp_path_factory.mktemp("l2run")
    data = merge(BASE, {"survey": {"exposures": BASE["survey"]["exposures"][:1], "scas": [1]},
                        "detector": {"window": 256, "tile": 128},
                        "catalog": {"synthetic": {"density_scale": 0.0}},
                        "output": {"products": ["l2"]}})
    written = run(parse_config(data, tmp), say=quiet)
    return written["l2"][0]


def star_catalog(image, x, y, mag, filter_name="F158") -> Table:
    """Point sources at 0-based image positions (x, y) with AB magnitudes ``mag``."""
    x, y = np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)
    ra, dec = image.wcs.toWorld(x + 1.0, y + 1.0, units="deg")
    n = len(x)
    return Table({"id": np.arange(n), "ra": np.atleast_1d(ra), "dec": np.atleast_1d(dec),
                  "type": ["PSF"] * n, "n": np.full(n, -1.0),
                  "half_light_radius": np.zeros(n), "pa": np.zeros(n), "ba": np.ones(n),
                  filter_name: 10.0 ** (-0.4 * np.broadcast_to(mag, (n,)))})


def arrays(model) -> dict[str, np.ndarray]:
    return {name: np.array(model[name]) for name in NAMES if name in model}


def box(x, y, r):
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    return slice(iy - r - 1, iy + r + 2), slice(ix - r - 1, ix + r + 2)


def grid(n_side, spacing, offset, rng):
    g = offset + spacing * np.arange(n_side)
    x, y = np.meshgrid(g, g)
    return (x.ravel() + rng.uniform(-0.5, 0.5, x.size), y.ravel() + rng.uniform(-0.5, 0.5, x.size))


# --------------------------------------------------------------------------
# the apportioning is the L1 simulation's
# --------------------------------------------------------------------------

def test_apportion_is_the_l1_kernel():
    """Injected electrons go into reads exactly as the L1 kernel puts them (same draws)."""
    from romandask.detector.forward import TileInputs, apportion, ramp_means
    from romandask.detector.l1 import extended_region, science_mask
    from romandask.detector.reference import ScalarModel
    from romandask.instrument.matables import MATable

    model = ScalarModel(1, 16, gain=1.0, read_noise=0.0, dark_current=0.0, reset_noise=0.0)
    table = MATable.numbered(4)
    rng = np.random.default_rng(3)
    n = model.frame_shape[0]
    expected = np.zeros((n + 2, n + 2))
    expected[1:-1, 1:-1] = rng.choice([0.0, 3.0, 300.0, 3e4], size=(n, n))
    region = extended_region(model, (0, n), (0, n), 1)
    science = science_mask((-1, n + 1), (-1, n + 1), n)
    key, pixel0, stride = 12345, 1000, n + 2
    means, _ = ramp_means(TileInputs(expected * science, region, science), table, key, pixel0,
                          stride)
    rows, cols = np.mgrid[1:n + 1, 1:n + 1]
    inner = science[1:-1, 1:-1]
    charge = apportion((expected * science)[1:-1, 1:-1][inner],
                       (pixel0 + rows * stride + cols)[inner], table, key)
    linear = means[:, inner] - model.sref       # the scalar model's raw = Sref + charge
    assert np.abs(linear - charge).max() < 2e-3
    assert charge[-1].sum() > 0
    # and the mean of each resultant is the rate times its mean read time
    lam = 300.0 / table.nreads
    big = apportion(np.full(20000, 300.0), np.arange(20000), table, 7)
    tbar_reads = np.array([np.mean(r) for r in table.read_pattern])
    err = np.sqrt(lam * tbar_reads / 20000)
    assert np.all(np.abs(big.mean(axis=1) - lam * tbar_reads) < 4 * err)


# --------------------------------------------------------------------------
# photometry and noise
# --------------------------------------------------------------------------

def test_bright_stars_keep_their_catalog_flux(l2_file):
    """Aperture sums of output - input match the catalog flux within 2 % (to 0.5 % here)."""
    with rdm.open(l2_file) as model:
        image = injmod.describe(model)
        x, y = grid(3, 80, 48, np.random.default_rng(1))
        cat = star_catalog(image, x, y, 18.0)
        out = romandask.inject_sources_into_l2(model, cat, seed=2, stamp_radius=32)
        diff = np.asarray(out.data, np.float64) - np.asarray(model.data, np.float64)
    n = image.shape[0]
    area = pixel_area_map(image.wcs, (0, 0), slice(0, n), slice(0, n))
    truth = out["romandask"]["injections"][-1]["truth"]
    assert np.allclose(truth["x"], x, atol=1e-6) and np.allclose(truth["y"], y, atol=1e-6)
    ratios = np.array([np.nansum((diff * area)[box(xi, yi, 32)]) / rate
                       for xi, yi, rate in zip(truth["x"], truth["y"], truth["rate"])])
    assert np.all(np.abs(ratios - 1.0) < 0.02), ratios
    assert abs(ratios.mean() - 1.0) < 0.005


def test_faint_star_pulls(l2_file):
    """Faint stars: (measured - catalog) / reported error has unit scatter and no bias."""
    pulls = []
    with rdm.open(l2_file) as model:
        image = injmod.describe(model)
        before = arrays(model)
        n = image.shape[0]
        area = pixel_area_map(image.wcs, (0, 0), slice(0, n), slice(0, n))
        for seed in range(10):
            rng = np.random.default_rng(100 + seed)
            x, y = grid(7, 34, 26, rng)
            cat = star_catalog(image, x, y, rng.uniform(24.0, 25.0, x.size))
            out = romandask.inject_sources_into_l2(model, cat, seed=seed, stamp_radius=12)
            after = arrays(out)
            truth = out["romandask"]["injections"][-1]["truth"]
            diff = after["data"].astype(np.float64) - before["data"]
            added = (after["var_poisson"].astype(np.float64)
                     - before["var_poisson"].astype(np.float64))
            for xi, yi, rate in zip(truth["x"], truth["y"], truth["rate"]):
                b = box(xi, yi, 12)
                flux = np.nansum((diff * area)[b])
                sigma = np.sqrt(np.nansum((added * area ** 2)[b]))
                pulls.append((flux - rate) / sigma)
    pulls = np.array(pulls)
    assert len(pulls) == 490
    assert abs(np.std(pulls) - 1.0) < 0.1, np.std(pulls)
    assert abs(np.mean(pulls)) < 4.0 / np.sqrt(len(pulls)), np.mean(pulls)


# --------------------------------------------------------------------------
# locality, validation, the truth table
# --------------------------------------------------------------------------

def test_pixels_beyond_the_stamps_are_bitwise_unchanged(l2_file):
    radius = 16
    with rdm.open(l2_file) as model:
        image = injmod.describe(model)
        x = np.array([40.3, 200.8, 130.0, -5.0])   # the last one off the edge, reaching in
        y = np.array([50.6, 90.1, 210.4, 120.0])
        out = romandask.inject_sources_into_l2(model, star_catalog(image, x, y, 17.0),
                                               seed=4, stamp_radius=radius)
        before, after = arrays(model), arrays(out)
    n = image.shape[0]
    rows, cols = np.mgrid[0:n, 0:n]
    reach = np.zeros((n, n), bool)
    for xi, yi in zip(x, y):
        reach |= (np.abs(cols - xi) <= radius + 0.5) & (np.abs(rows - yi) <= radius + 0.5)
    for name in NAMES:
        a, b = before[name], after[name]
        same = (a.view(np.uint8).reshape(a.shape + (-1,))
                == b.view(np.uint8).reshape(b.shape + (-1,))).all(axis=-1)
        assert same[~reach].all(), name
    changed = before["data"] != after["data"]
    assert changed[reach].sum() > 1000
    # the source off the edge reaches in: its side of the image changed
    assert changed[100:140, 0:12].any()


def test_written_file_validates_and_carries_the_truth(l2_file, tmp_path):
    with rdm.open(l2_file) as model:
        image = injmod.describe(model)
        cat = star_catalog(image, [60.2, 180.7, 400.0], [70.4, 150.1, 400.0], [19.0, 21.0, 20.0])
    cat.write(tmp_path / "cat.ecsv")
    out = tmp_path / "inj.asdf"
    paths = romandask.inject(l2_file, tmp_path / "cat.ecsv", out, seed=5, stamp_radius=24,
                             cluster=_threads())
    assert paths == [out]
    with rdm.open(out) as model:
        model.validate()
        assert model.err.dtype == np.float16 and model.data.dtype == np.float32
        entry = model["romandask"]["injections"][-1]
        assert entry["catalog"] == "cat.ecsv" and entry["seed"] == 5
        assert entry["fitter"] == DEFAULT_FITTER and entry["pixels_replaced"] > 0
        truth = entry["truth"]
        assert list(truth["id"]) == [0, 1]        # the third source is off the image
        assert np.allclose(truth["flux"], 10 ** (-0.4 * np.array([19.0, 21.0])))
        # the record of the original calibration is kept
        assert model["romandask"]["detector"]["model"] == "synthetic"


# --------------------------------------------------------------------------
# romanisim's L2
# --------------------------------------------------------------------------

def test_injection_into_a_romanisim_l2(tmp_path):
    pytest.importorskip("romanisim")
    from romanisim_fixture import make_romanisim_pair

    pair = make_romanisim_pair(tmp_path / "rs", seed=5, n_pix=128)
    with rdm.open(pair["l2_path"]) as model:
        image = injmod.describe(model)
        assert not image.per_nominal_pixel and image.fitter == "ols_cas22"
        assert image.reference_gain == pair["gain"]
        # our TAN-SIP fit of romanisim's gWCS agrees with the galsim WCS it was made from
        for xp, yp in ((10.0, 20.0), (100.0, 90.0)):
            world = pair["galsim_wcs"].toWorld(__import__("galsim").PositionD(xp, yp))
            xi, yi = image.wcs.toImage(world.ra.deg, world.dec.deg, units="deg")
            assert abs(xi - 1 - xp) < 0.01 and abs(yi - 1 - yp) < 0.01
    x, y = np.array([96.3, 40.6]), np.array([30.2, 30.7])
    cat = star_catalog(image, x, y, 18.5)
    cat.write(tmp_path / "cat.ecsv")
    out = tmp_path / "injected.asdf"
    assert main(["inject", str(pair["l2_path"]), str(tmp_path / "cat.ecsv"), str(out),
                 "--stamp-radius", "24", "--no-progress", "--workers", "1"]) == 0
    with rdm.open(pair["l2_path"]) as a, rdm.open(out) as b:
        b.validate()
        diff = np.asarray(b.data, np.float64) - np.asarray(a.data, np.float64)
        truth = b["romandask"]["injections"][-1]["truth"]
        assert "var_rnoise" not in a or b.var_rnoise.dtype == a.var_rnoise.dtype
    import asdf

    with asdf.open(out) as af:
        assert "romanisim" in af.tree        # romanisim's own extras are kept
    # romanisim's own flux scale (its per-SCA effective area, which its
    # meta.photometry records), not GalSim's zero point
    from romanisim.bandpass import get_abflux

    expected = 10 ** (-0.4 * 18.5) * get_abflux("F158", 7) / pair["gain"]
    assert np.allclose(truth["rate"], expected, rtol=1e-6)
    for xi, yi, rate in zip(truth["x"], truth["y"], truth["rate"]):
        assert abs(np.nansum(diff[box(xi, yi, 24)]) / rate - 1.0) < 0.01


# --------------------------------------------------------------------------
# files: determinism, parallel, errors
# --------------------------------------------------------------------------

def _threads():
    from romandask.config import ClusterConfig

    return ClusterConfig(type="threads", n_workers=1, progress=False)


@pytest.fixture(scope="module")
def catalog_file(l2_file, tmp_path_factory):
    with rdm.open(l2_file) as model:
        image = injmod.describe(model)
    rng = np.random.default_rng(8)
    cat = star_catalog(image, rng.uniform(10, 246, 12), rng.uniform(10, 246, 12),
                       rng.uniform(18.0, 24.0, 12))
    path = tmp_path_factory.mktemp("cat") / "stars.ecsv"
    cat.write(path)
    return path


def test_same_seed_same_bytes_whatever_the_workers(l2_file, catalog_file, tmp_path):
    from romandask.config import ClusterConfig

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a_cal.asdf", "b_cal.asdf"):
        shutil.copyfile(l2_file, inputs / name)
    one = romandask.inject(str(inputs / "*_cal.asdf"), catalog_file, tmp_path / "one", seed=3,
                           stamp_radius=16, cluster=_threads())
    two = romandask.inject([inputs / "a_cal.asdf", inputs / "b_cal.asdf"], catalog_file,
                           tmp_path / "two", seed=3, stamp_radius=16,
                           cluster=ClusterConfig(n_workers=2, progress=False))
    other = romandask.inject(inputs / "a_cal.asdf", catalog_file, tmp_path / "other.asdf",
                             seed=4, stamp_radius=16, cluster=_threads())
    assert [p.name for p in one] == [p.name for p in two] == ["a_cal.asdf", "b_cal.asdf"]
    for a, b in zip(one, two):
        assert a.read_bytes() == b.read_bytes()
    assert one[0].read_bytes() != other[0].read_bytes()


def test_all_sources_off_the_image_give_an_unchanged_copy(l2_file, tmp_path, capsys):
    with rdm.open(l2_file) as model:
        image = injmod.describe(model)
        cat = star_catalog(image, [-300.0, 900.0], [50.0, 60.0], 18.0)
        with pytest.warns(injmod.InjectionWarning):
            copy = romandask.inject_sources_into_l2(model, cat)
        assert all(np.array_equal(v, np.asarray(copy[k]), equal_nan=True)
                   for k, v in arrays(model).items())
    cat.write(tmp_path / "off.ecsv")
    out = tmp_path / "copy.asdf"
    assert main(["inject", str(l2_file), str(tmp_path / "off.ecsv"), str(out),
                 "--no-progress", "--workers", "1"]) == 0
    assert "warning:" in capsys.readouterr().err
    assert out.read_bytes() == l2_file.read_bytes()


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_inputs_get_one_line_errors_and_write_nothing(l2_file, catalog_file, tmp_path,
                                                          capsys):
    from conftest import BASE, merge

    from romandask.config import parse_config
    from romandask.pipeline import run

    # an L1 file is not L2
    data = merge(BASE, {"survey": {"exposures": BASE["survey"]["exposures"][:1], "scas": [1]},
                        "detector": {"window": 32, "tile": 32},
                        "output": {"products": ["l1"], "directory": str(tmp_path / "run")}})
    l1 = run(parse_config(data, tmp_path), say=quiet)["l1"][0]
    out = tmp_path / "out.asdf"
    _one_line_error(capsys, ["inject", str(l1), str(catalog_file), str(out)],
                    "not L2", "ScienceRawModel")
    # a catalog with a NaN flux, or without a column
    bad = Table.read(catalog_file)
    bad["F158"][3] = np.nan
    bad.write(tmp_path / "nan.ecsv")
    _one_line_error(capsys, ["inject", str(l2_file), str(tmp_path / "nan.ecsv"), str(out)],
                    "F158", "NaN")
    bad.remove_column("dec")
    bad.write(tmp_path / "nodec.ecsv")
    _one_line_error(capsys, ["inject", str(l2_file), str(tmp_path / "nodec.ecsv"), str(out)],
                    "dec")
    # the input itself, a missing input, a directory that cannot be made
    _one_line_error(capsys, ["inject", str(l2_file), str(catalog_file), str(l2_file)],
                    "input file itself")
    _one_line_error(capsys, ["inject", str(tmp_path / "nope_cal.asdf"), str(catalog_file),
                             str(out)], "nope_cal.asdf")
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, ["inject", str(l2_file), str(catalog_file),
                             str(tmp_path / "file" / "o.asdf")], "not a directory")
    _one_line_error(capsys, ["inject", str(l2_file), str(catalog_file), str(out),
                             "--stamp-radius", "1000"], "--stamp-radius")
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    # an existing output is refused, and left as it was
    out.write_bytes(b"keep me")
    _one_line_error(capsys, ["inject", str(l2_file), str(catalog_file), str(out)],
                    "already exists", "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert main(["inject", str(l2_file), str(catalog_file), str(out), "--overwrite",
                 "--no-progress", "--workers", "1"]) == 0
    with rdm.open(out) as model:
        model.validate()


def test_input_model_is_not_modified(l2_file, catalog_file):
    with rdm.open(l2_file) as model:
        before = arrays(model)
        with warnings.catch_warnings():
            warnings.simplefilter("error", injmod.InjectionWarning)
            romandask.inject_sources_into_l2(model, Table.read(catalog_file), seed=1,
                                             stamp_radius=16)
        assert "injections" not in model["romandask"]
        for name, value in arrays(model).items():
            assert value.tobytes() == before[name].tobytes()


def test_a_file_fitted_without_its_first_resultant_is_refitted_so(l2_file):
    """An L2 file whose calibration left out the first resultant (romandask calibrate's
    EXCLUDE_FIRST) has its injected ramps fitted the same way: other bits, the same flux."""
    with rdm.open(l2_file) as model:
        image = injmod.describe(model)
        assert not image.exclude_first
        x, y = grid(2, 100, 60, np.random.default_rng(4))
        cat = star_catalog(image, x, y, 18.0)
        whole = romandask.inject_sources_into_l2(model, cat, seed=2, stamp_radius=32)
        model["romandask"]["exclude_first"] = True
        assert injmod.describe(model).exclude_first
        first_out = romandask.inject_sources_into_l2(model, cat, seed=2, stamp_radius=32)
        before = np.asarray(model.data, np.float64)
        # and a file in gen_cal_image's units (no one flux scale) is refused
        model["romandask"]["units"] = "gen_cal_image"
        with pytest.raises(InputError, match="UNITS: romandask"):
            injmod.describe(model)
    n = image.shape[0]
    area = pixel_area_map(image.wcs, (0, 0), slice(0, n), slice(0, n))
    truth = first_out["romandask"]["injections"][-1]["truth"]
    changed = np.asarray(whole.data) != np.asarray(first_out.data)
    assert changed.sum() > 100            # the same draws, fitted without resultant 0
    for out in (whole, first_out):
        diff = np.asarray(out.data, np.float64) - before
        ratios = [np.nansum((diff * area)[box(xi, yi, 32)]) / rate
                  for xi, yi, rate in zip(truth["x"], truth["y"], truth["rate"])]
        assert np.all(np.abs(np.array(ratios) - 1.0) < 0.02), ratios

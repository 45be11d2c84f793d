"""romanimpreprocess's gen_cal_image and ``romandask calibrate`` on the same L1 and CALDIR.

One full-frame L1 of SCA 7 (36 isolated stars of 17-19.5 mag on the F158
sky, every detector effect, cosmic rays included), the CALDIR of the
synthetic detector that made it (``romandask reffiles``, the same seed), and
the FITS WCS the L1 carries; the released gen_cal_image (romanimpreprocess
1.0, unmodified) and romandask's calibration (its default, the seed's
fixed-weight fit) calibrate it with the same JUMP_DETECT_PARS and
RAMP_OPT_PARS.  The two outputs are compared after mapping gen_cal_image's
conventions onto romandask's (README, "romancal and gen_cal_image on
romandask's products"):

* rates: romandask's = gen_cal_image's x g / (g_ref x a^2), with g the
  pixel's gain (the CALDIR's), g_ref romandask's reference gain and a the
  pixel's area relative to the nominal (0.11 arcsec)^2;
* DQ: gen_cal_image grows saturation by one pixel and sets no DO_NOT_USE on
  pixels without a flat (romandask has no rate there).

Marked ``peers_slow``: it needs romanimpreprocess (``.venv-peers``, where
``.ci/run`` runs ``pytest -m peers_slow``) and takes minutes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BASE, merge

pytestmark = pytest.mark.peers_slow
gen_cal_image = pytest.importorskip("romanimpreprocess.L1_to_L2.gen_cal_image")

SCA = 7
#: The calibration settings, the same for both (the seed's defaults).
JUMP = {"SthreshA": 5.5, "SthreshB": 4.5, "IthreshA": 1.0, "IthreshB": 1000.0}
RAMP_OPT = {"slope": 0.4, "gain": 1.8, "sigma_read": 6.5}
#: Aperture radius (pixels) and background annulus of the star photometry.
APERTURE, ANNULUS = 10.0, (20.0, 28.0)


def star_catalog(view, path: Path) -> None:
    """36 stars on a 6 x 6 grid across the SCA (~700 pixels apart), 17-19.5 mag."""
    from astropy.table import Table

    rng = np.random.default_rng(1)
    grid = np.linspace(300.0, 3788.0, 6)
    x, y = (g.ravel() + rng.uniform(-0.5, 0.5, 36) for g in np.meshgrid(grid, grid))
    mag = rng.uniform(17.0, 19.5, 36)
    ra, dec = view.wcs.toWorld(*view.to_galsim(x, y), units="deg")
    Table({"id": np.arange(36), "ra": ra, "dec": dec, "type": ["PSF"] * 36,
           "n": np.full(36, -1.0), "half_light_radius": np.zeros(36), "pa": np.zeros(36),
           "ba": np.ones(36), "F158": 10 ** (-0.4 * mag)}).write(path)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The L1, its CALDIR, and the L2 of each tool (with the wall time of each part)."""
    import roman_datamodels.datamodels as rdm

    import romandask
    from romandask import cli
    from romandask.config import parse_config
    from romandask.pipeline import prepare, run

    tmp = tmp_path_factory.mktemp("gen_cal_image")
    seconds = {}
    config = merge(BASE, {"survey": {"scas": [SCA], "exposures": BASE["survey"]["exposures"][:1]},
                          "detector": {"window": 4088, "tile": 1024},
                          "cluster": {"type": "threads", "n_workers": 2, "progress": False},
                          "output": {"directory": str(tmp / "run"), "products": ["l1"]}})
    star_catalog(prepare(parse_config(config, tmp)).views[0], tmp / "stars.ecsv")
    config = merge(config, {"catalog": {"synthetic": None, "file": str(tmp / "stars.ecsv")}})
    t0 = time.perf_counter()
    l1 = run(parse_config(config, tmp), say=lambda s: None)["l1"][0]
    seconds["simulation"] = time.perf_counter() - t0

    # the CALDIR of the detector that made the L1 (the run's seed), and its WCS
    t0 = time.perf_counter()
    caldir = tmp / "caldir"
    assert cli.main(["reffiles", str(caldir), "--sca", str(SCA), "--seed",
                     str(config["seed"])]) == 0
    seconds["reffiles"] = time.perf_counter() - t0
    files = {p.name.split("_")[2]: str(p) for p in sorted(caldir.glob("*.asdf"))}
    with rdm.open(l1) as model:
        (tmp / "wcs.txt").write_text(str(model["romandask"]["fits_wcs"]))

    t0 = time.perf_counter()
    theirs = tmp / "gen_cal_image_cal.asdf"
    gen_cal_image.calibrateimage({"IN": str(l1), "OUT": str(theirs), "CALDIR": files,
                                  "FITSWCS": str(tmp / "wcs.txt"), "JUMP_DETECT_PARS": JUMP,
                                  "RAMP_OPT_PARS": RAMP_OPT})
    seconds["gen_cal_image"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ours = tmp / "romandask_cal.asdf"
    romandask.calibrate({"IN": str(l1), "OUT": str(ours), "CALDIR": str(caldir),
                         "FITSWCS": str(tmp / "wcs.txt"), "JUMP_DETECT_PARS": JUMP,
                         "RAMP_OPT_PARS": RAMP_OPT,
                         "cluster": {"type": "threads", "n_workers": 2, "progress": False}})
    seconds["romandask calibrate"] = time.perf_counter() - t0
    print("wall time:", ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return {"l1": l1, "caldir": files, "wcs": tmp / "wcs.txt", "ours": ours, "theirs": theirs}


@pytest.fixture(scope="module")
def compared(calibrated):
    """Both L2s' arrays, gen_cal_image's mapped onto romandask's convention."""
    import asdf
    import galsim

    from romandask.wcs import pixel_area_map, read_fits_header

    out = {}
    with asdf.open(calibrated["ours"]) as af:
        roman = af["roman"]
        for name in ("data", "err", "dq"):
            out[name] = np.asarray(roman[name], np.uint32 if name == "dq" else np.float64)
        out["reference_gain"] = float(roman["romandask"]["reference_gain"])
        out["truth"] = {k: np.asarray(roman["romandask"]["truth"][k]) for k in ("x", "y", "flux")}
    with asdf.open(calibrated["theirs"]) as af:
        roman = af["roman"]
        for name in ("data", "err", "dq"):
            out["their_" + name] = np.asarray(roman[name],
                                              np.uint32 if name == "dq" else np.float64)
    with asdf.open(calibrated["caldir"]["gain"]) as af:
        gain = np.asarray(af["roman"]["data"][4:-4, 4:-4], np.float64)
    header = read_fits_header(Path(calibrated["wcs"]).read_text())
    wcs = galsim.GSFitsWCS(header=galsim.FitsHeader(header=header))
    area = pixel_area_map(wcs, (0, 0), slice(0, 4088), slice(0, 4088))
    out["area"] = area
    factor = gain / (out["reference_gain"] * area ** 2)
    out["mapped"] = out["their_data"] * factor
    out["mapped_err"] = out["their_err"] * factor
    return out


def test_gen_cal_image_writes_a_valid_l2(calibrated):
    import roman_datamodels.datamodels as rdm

    with rdm.open(calibrated["theirs"]) as model:
        model.validate()
        assert model.data.shape == (4088, 4088)
        assert np.isfinite(np.asarray(model.data)).all()


def mapped_dq(ours: np.ndarray) -> np.ndarray:
    """romandask's DQ in gen_cal_image's convention.

    gen_cal_image flags saturation with romancal's ``flag_saturation`` grown by
    one pixel (``n_pix_grow_sat=1``): romandask's SATURATED grown by a 3 x 3
    box.  It gives a pixel without a usable flat (flat < 0.1, NO_FLAT_FIELD)
    a rate with the flat clipped to 0.1, where romandask has none and sets
    DO_NOT_USE: DO_NOT_USE is dropped there.
    """
    from roman_datamodels.dqflags import pixel
    from scipy.ndimage import binary_dilation

    dq = ours.copy()
    no_flat = (dq & np.uint32(pixel.NO_FLAT_FIELD)) != 0
    dq[no_flat] &= ~np.uint32(pixel.DO_NOT_USE)
    saturated = binary_dilation((dq & np.uint32(pixel.SATURATED)) != 0, np.ones((3, 3), bool))
    dq[saturated] |= np.uint32(pixel.SATURATED)
    return dq


def test_dq_flags_agree_after_the_mapping(compared):
    from roman_datamodels.dqflags import pixel

    ours, theirs = mapped_dq(compared["dq"]), compared["their_dq"]
    same = ours == theirs
    assert same.mean() >= 0.999, same.mean()
    # what differs is jump detection alone (two detectors of cosmic rays): every
    # other flag, the saturated stars' included, is the same on every pixel
    jump = np.uint32(pixel.JUMP_DET)
    assert np.array_equal(ours & ~jump, theirs & ~jump)
    assert ((ours & jump) != 0).sum() > 10_000        # the cosmic rays are there


def _aperture_flux(rate, area, x, y):
    """Background-subtracted rate (DN/s at the reference gain) of a star within APERTURE."""
    ix, iy = int(round(x)), int(round(y))
    r = int(ANNULUS[1]) + 1
    cut = (slice(iy - r, iy + r + 1), slice(ix - r, ix + r + 1))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    d = np.hypot(xx - (x - ix), yy - (y - iy))
    ring = (d > ANNULUS[0]) & (d < ANNULUS[1])
    background = np.nanmedian(rate[cut][ring])
    inside = d < APERTURE
    return np.nansum(((rate[cut] - background) * area[cut])[inside]), inside, cut


def test_star_fluxes_agree_within_one_percent(compared):
    """Stars whose aperture holds no pixel that gen_cal_image flags JUMP_DET:
    gen_cal_image flags the jumps of cosmic rays without taking them out of
    the rate (its users mask those pixels), romandask refits without them."""
    from roman_datamodels.dqflags import pixel

    truth, area = compared["truth"], compared["area"]
    ratios = []
    for x, y in zip(truth["x"], truth["y"]):
        ours, inside, cut = _aperture_flux(compared["data"], area, x, y)
        if ((compared["their_dq"][cut][inside] & np.uint32(pixel.JUMP_DET)) != 0).any():
            continue
        theirs, _, _ = _aperture_flux(compared["mapped"], area, x, y)
        ratios.append(ours / theirs)
    assert len(ratios) >= 12, len(ratios)
    ratios = np.array(ratios)
    assert np.all(np.abs(ratios - 1.0) < 0.01), ratios


def test_pulls_between_the_two_have_no_bias(compared):
    """(romandask - gen_cal_image) / err on pixels neither flags: |median| < 0.05."""
    good = (compared["dq"] == 0) & (compared["their_dq"] == 0) & (compared["err"] > 0)
    assert good.mean() > 0.95
    pull = (compared["data"] - compared["mapped"])[good] / compared["err"][good]
    assert abs(np.median(pull)) < 0.05, np.median(pull)
    # the two estimate the same rates from the same ramps, with errors that agree
    ratio = np.median(compared["mapped_err"][good] / compared["err"][good])
    assert abs(ratio - 1.0) < 0.05, ratio

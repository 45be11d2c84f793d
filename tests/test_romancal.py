"""romancal reads romandask's products (in the environment with the released
romancal: ``scripts/setup.sh peers``; skipped where romancal is not installed).

romancal's steps ask CRDS for their parameters unless told not to; CRDS is
not reachable from a test, so ``STPIPE_DISABLE_CRDS_STEPPARS`` is set and
each step runs with its defaults.  SourceCatalogStep also needs an
``apcorr`` reference file (given as ``override_apcorr``: romandask's own, from
:func:`romandask.apcorr.write_apcorr`) and asks CRDS for the context it
records and for dust maps: an offline CRDS configuration (:func:`offline_crds`)
answers the first and makes the second fail the way the step expects (NaN
extinction).
"""

from __future__ import annotations

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

from conftest import BASE, merge

romancal = pytest.importorskip("romancal")

#: The context an offline CRDS configuration names: no such context exists, so
#: no reference file can be looked up through it (every one is an override).
OFFLINE_CONTEXT = "roman_0000.pmap"


def offline_crds(directory) -> str:
    """A CRDS cache directory (for ``CRDS_PATH``) that CRDS can run from off-line.

    CRDS reads its server's last known configuration from the cache when the
    server is out of reach, and stops the process when there is none; this
    is the least it needs: the observatory and a context name.
    """
    from pathlib import Path

    config = Path(directory) / "config" / "roman" / "server_config"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(repr({"observatory": "roman", "operational_context": OFFLINE_CONTEXT,
                            "force_remote_mode": False, "bad_files_list": [],
                            "last_synced": "never (an off-line configuration)"}))
    return str(directory)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    from romandask.config import parse_config
    from romandask.pipeline import run

    tmp = tmp_path_factory.mktemp("romancal")
    first, second = BASE["survey"]["exposures"]
    second = {**second, "ra": first["ra"] + 0.0005, "dec": first["dec"] + 0.0003}   # ~1.6"
    config = merge(BASE, {"survey": {"scas": [7], "exposures": [first, second]},
                          "detector": {"window": 128, "tile": 128},
                          "output": {"directory": str(tmp / "out"), "products": ["l1", "l2"]}})
    return run(parse_config(config, tmp), say=lambda s: None)


def test_every_file_opens_and_validates_where_romancal_is(run_files):
    for kind in ("l1", "l2"):
        for path in run_files[kind]:
            with rdm.open(path) as model:
                model.validate()
                assert model.meta.wcs is not None if kind == "l2" else True


def test_resample_step_runs_on_a_runs_l2_files(run_files, monkeypatch):
    from romancal.datamodels import ModelLibrary
    from romancal.resample import ResampleStep

    monkeypatch.setenv("STPIPE_DISABLE_CRDS_STEPPARS", "true")
    files = [str(p) for p in sorted(run_files["l2"])]
    result = ResampleStep.call(ModelLibrary(files))
    data = np.asarray(result.data, np.float64)
    assert np.isfinite(data).mean() > 0.5
    # the sky: romancal's coadd of our rates is our rates' sky (DN/s per nominal pixel)
    skies = []
    for path in files:
        with rdm.open(path) as model:
            skies.append(np.nanmedian(np.asarray(model.data, np.float64)))
    assert np.nanmedian(data) == pytest.approx(np.mean(skies), rel=0.02)
    # the two exposures overlap: there both contributed (two context bits)
    context = np.asarray(result.context)
    assert (np.bitwise_count(context[0].astype(np.uint32)) == 2).any()


# --------------------------------------------------------------------------
# SourceCatalogStep on a romandask L2 file: fluxes and positions of stars
# --------------------------------------------------------------------------

#: Isolated stars: 0-based window x, y and F158 AB magnitude (256^2 window, SCA 7).
STARS = ((52.3, 48.6, 18.0), (201.7, 57.2, 18.5), (60.4, 199.1, 18.25),
         (193.2, 205.8, 18.75), (128.6, 127.3, 17.75))
WINDOW = 256


@pytest.fixture(scope="module")
def star_l2(tmp_path_factory):
    """One L2 file of SCA 7 (256^2, F158, every detector effect) with the STARS only."""
    from astropy.table import Table

    from romandask.config import parse_config
    from romandask.pipeline import prepare, run

    tmp = tmp_path_factory.mktemp("stars")
    config = merge(BASE, {"survey": {"scas": [7], "exposures": BASE["survey"]["exposures"][:1]},
                          "detector": {"window": WINDOW, "tile": WINDOW},
                          "output": {"directory": str(tmp / "out"), "products": ["l2"]}})
    view = prepare(parse_config(config, tmp)).views[0]
    x, y, mag = (np.array(c) for c in zip(*STARS))
    ra, dec = view.wcs.toWorld(*view.to_galsim(x, y), units="deg")
    n = len(STARS)
    Table({"id": np.arange(n), "ra": ra, "dec": dec, "type": ["PSF"] * n,
           "n": np.full(n, -1.0), "half_light_radius": np.zeros(n), "pa": np.zeros(n),
           "ba": np.ones(n), "F158": 10 ** (-0.4 * mag)}).write(tmp / "stars.ecsv")
    config = merge(config, {"catalog": {"synthetic": None, "file": str(tmp / "stars.ecsv")}})
    cfg = parse_config(config, tmp)
    written = run(cfg, say=lambda s: None)
    return written["l2"][0], cfg


def test_source_catalog_step_measures_the_stars_fluxes_and_positions(star_l2, tmp_path,
                                                                     monkeypatch):
    """romancal's catalog of a romandask L2 file recovers the truth of isolated stars.

    Expected values come from the truth table (positions, electrons over the
    exposure) through the file's own conventions: rate = electrons /
    (exposure time x reference gain) per nominal pixel, romancal's flux =
    sum of the rates x conversion_megajanskys x pixel_area (so the nominal
    area, not the pixel's own: a star's catalog flux is its truth / the local
    pixel area factor).  Apertures hold the encircled energy of the PSF
    (the apcorr file's); centroids are first moments over the star's
    segment of the detection image, which the truncated, asymmetric PSF
    moves from the star's position by up to a few 0.01 pixel, so the
    expectation is the same moment of the noiseless star.  The tolerances
    are 5 sigma of the noise, propagated from the file's err array, plus,
    for fluxes, the most the stars' own light can raise the background the
    step subtracts (a median: each pixel moves it by at most min(its star
    light, 1.3 sigma) / N).
    """
    import galsim
    import roman_datamodels.datamodels as rdm
    from romancal.source_catalog import SourceCatalogStep
    from romancal.source_catalog._detection import convolve_data
    from scipy.ndimage import convolve

    from romandask.apcorr import encircled_energy, write_apcorr
    from romandask.pipeline import prepare, psf_key_for
    from romandask.scene.psf import psf_model
    from romandask.scene.render import Backgrounds, expected_counts
    from romandask.wcs import pixel_area_map, read_fits_header

    path, cfg = star_l2
    monkeypatch.setenv("STPIPE_DISABLE_CRDS_STEPPARS", "true")
    monkeypatch.setenv("CRDS_PATH", offline_crds(tmp_path / "crds"))
    apcorr = write_apcorr(tmp_path / "apcorr.asdf", 7, ["F158"], window=WINDOW)
    catalog, segmentation = SourceCatalogStep.call(
        str(path), fit_psf=False, bkg_boxsize=WINDOW, override_apcorr=str(apcorr))
    cat = catalog.source_catalog
    segm = np.asarray(segmentation.data)

    with rdm.open(path) as model:
        sim = model["romandask"]
        truth = {k: np.asarray(sim["truth"][k]) for k in ("x", "y", "flux", "ra", "dec")}
        per_rate = (model.meta.photometry.conversion_megajanskys
                    * model.meta.photometry.pixel_area * 1e15)             # nJy per DN/s
        per_electron = per_rate / (model.meta.exposure.exposure_time * sim["reference_gain"])
        err = np.asarray(model.err, np.float64) * per_rate                   # nJy per pixel
        masked = (~np.isfinite(np.asarray(model.data)) | ~(err > 0)
                  | ((np.asarray(model.dq) & 1) != 0))
        header = read_fits_header(str(sim["fits_wcs"]))
    err[masked] = 0.0
    wcs = galsim.GSFitsWCS(header=galsim.FitsHeader(header=header))
    area = pixel_area_map(wcs, (0, 0), slice(0, WINDOW), slice(0, WINDOW))
    assert len(cat) == len(STARS)

    # the noiseless light of the stars (nJy per pixel, in the file's convention)
    view = prepare(cfg).views[0]
    psf = psf_model(psf_key_for(view, cfg))
    t = view.exposure.exposure_time

    def light(i):
        gx, gy = view.to_galsim(truth["x"][i:i + 1], truth["y"][i:i + 1])
        one = {"x": gx, "y": gy, "flux": truth["flux"][i:i + 1], "type": np.array(["PSF"]),
               "n": np.zeros(1), "half_light_radius": np.zeros(1), "pa": np.zeros(1),
               "ba": np.ones(1)}
        electrons = expected_counts(view.bounds, view.wcs, one, psf, t, Backgrounds())
        return electrons * per_electron / area

    stars = [light(i) for i in range(len(STARS))]
    sky_sigma = np.median(err[~masked])
    background_bound = np.minimum(sum(stars), 1.3 * sky_sigma).mean()

    radius = float(cat.meta["aperture_radii"]["circle_pix"][3])          # 0.8 arcsec
    ee = encircled_energy(7, "F158", [radius], window=WINDOW)[0]
    aperture_area = np.pi * radius**2
    kernel = _detection_kernel(convolve_data)
    for row in cat:
        i = int(np.argmin(np.hypot(truth["x"] - row["x_centroid"],
                                   truth["y"] - row["y_centroid"])))
        # flux: the truth in nJy (the local pixel area divides it) times the encircled energy
        iy, ix = int(round(truth["y"][i])), int(round(truth["x"][i]))
        expected = truth["flux"][i] * per_electron / area[iy, ix] * ee
        flux, sigma = float(row["aper08_flux"]), float(row["aper08_flux_err"])
        assert (expected - 5 * sigma - aperture_area * background_bound < flux
                < expected + 5 * sigma), (i, flux / expected)
        # centroid: the noiseless star's first moment over the same segment pixels
        seg = (segm == row["label"]) & ~masked
        conv = convolve(stars[i], kernel, mode="constant")
        yy, xx = np.nonzero(seg)
        w = conv[seg]
        for name, coord in (("x_centroid", xx), ("y_centroid", yy)):
            centre = float((w * coord).sum() / w.sum())
            weights = np.zeros_like(conv)
            weights[seg] = coord - centre
            noise = np.sqrt(((convolve(weights, kernel, mode="constant") * err) ** 2).sum())
            sigma_c = noise / w.sum()
            assert abs(float(row[name]) - centre) < 5 * sigma_c, (i, name, row[name], centre)
            truth_coord = truth["x" if name == "x_centroid" else "y"][i]
            assert abs(centre - truth_coord) < 0.05    # the moment of the PSF's core
        # the sky position through the file's gWCS in romancal's hands
        pos = galsim.CelestialCoord(float(row["ra_centroid"]) * galsim.degrees,
                                    float(row["dec_centroid"]) * galsim.degrees)
        star = galsim.CelestialCoord(truth["ra"][i] * galsim.degrees,
                                     truth["dec"][i] * galsim.degrees)
        offset = np.hypot(row["x_centroid"] - truth["x"][i], row["y_centroid"] - truth["y"][i])
        assert pos.distanceTo(star) / galsim.arcsec < 0.11 * offset + 1e-3


def _detection_kernel(convolve_data) -> np.ndarray:
    """The step's detection kernel, read off its convolution of a unit impulse."""
    impulse = np.zeros((31, 31))
    impulse[15, 15] = 1.0
    kernel = np.asarray(convolve_data(impulse, kernel_fwhm=2.0))
    return kernel[np.ix_(*[np.flatnonzero(kernel.any(axis=a)) for a in (1, 0)])]

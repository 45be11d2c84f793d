"""Small L2 files with known stars, sky and Gaussian noise, for the mosaic tests.

Each file is a romandask L2 ``ImageModel`` of one SCA window (galsim.roman
WCS, SIP distortion included) whose ``data`` is, in DN/s per nominal pixel
at a reference gain of 1 e-/DN: a uniform sky plus Airy-profile stars drawn
through the WCS (pixel response included), plus Gaussian noise of exactly
the variance the file's ``var_poisson`` and ``var_rnoise`` state.  The truth
table (electrons over the exposure) goes under ``romandask.truth`` as the
survey's L2 files carry it.
"""

from __future__ import annotations

from pathlib import Path

import galsim
import numpy as np

from romandask.config import parse_config
from romandask.export import (calibration_record, l1_meta, l2_filename, l2_model,
                              photometry_meta, sim_record, write_asdf)
from romandask.survey.footprint import footprint
from romandask.wcs import gwcs_from_galsim, pixel_area_map

#: Roman's obscured Airy pattern at F158 (lambda / D in arcsec).
LAM_OVER_DIAM = 1.58e-6 / 2.36 * 206264.806
OBSCURATION = 0.31
READ_VARIANCE_E = 400.0  # e-^2 over the exposure (read noise of the fit)


def psf() -> galsim.GSObject:
    return galsim.Airy(lam_over_diam=LAM_OVER_DIAM, obscuration=OBSCURATION)


def survey_config(tmp_path: Path, exposures, window: int, scas=(1,)):
    data = {
        "seed": 1,
        "survey": {"exposures": exposures, "scas": list(scas)},
        "catalog": {"synthetic": {}},
        "detector": {"window": window, "tile": window},
        "output": {"directory": str(tmp_path / "sim")},
        "cluster": {"type": "threads", "n_workers": 1, "progress": False},
    }
    return parse_config(data, tmp_path)


def exposure(ra: float, dec: float, minutes: int = 0, pa: float = 0.0, ma_table: int = 4):
    return {"ra": ra, "dec": dec, "pa": pa, "filter": "F158", "ma_table": ma_table,
            "start_time": f"2027-06-01T00:{minutes:02d}:00"}


def stars_near(ra: float, dec: float, n: int, spacing_arcsec: float, flux_e: float,
               start_id: int = 1) -> dict:
    """A square lattice of ``n`` x ``n`` stars about (ra, dec), fluxes rising by 10 %."""
    k = np.arange(n) - (n - 1) / 2.0
    dy, dx = np.meshgrid(k, k, indexing="ij")
    dra = dx.ravel() * spacing_arcsec / 3600.0 / np.cos(np.radians(dec))
    ddec = dy.ravel() * spacing_arcsec / 3600.0
    m = dra.size
    return {"id": np.arange(start_id, start_id + m), "ra": ra + dra, "dec": dec + ddec,
            "flux": flux_e * (1.0 + 0.1 * np.arange(m))}


def write_l2_files(tmp_path: Path, exposures, stars: dict, window: int = 192,
                   sky_e_per_s: float = 1.5, seed: int = 0, outdir: Path | None = None,
                   scas=(1,)) -> list[Path]:
    """One L2 file per (exposure, SCA); ``stars["flux"]`` in electrons over the
    exposure (the truth table's unit)."""
    config = survey_config(tmp_path, exposures, window, scas)
    outdir = outdir or tmp_path / "l2"
    outdir.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    paths = []
    for view in footprint(config):
        exp = view.exposure
        t = exp.exposure_time
        b = view.bounds
        origin = (b.xmin - 1, b.ymin - 1)
        image = galsim.ImageD(b, wcs=view.wcs)
        x, y = [], []
        for ra, dec, flux in zip(stars["ra"], stars["dec"], stars["flux"]):
            pos = view.wcs.toImage(galsim.CelestialCoord(ra * galsim.degrees,
                                                         dec * galsim.degrees))
            x.append(pos.x - b.xmin)
            y.append(pos.y - b.ymin)
            if not (b.xmin - 40 < pos.x < b.xmax + 40 and b.ymin - 40 < pos.y < b.ymax + 40):
                continue
            stamp = psf().withFlux(flux / t).drawImage(
                nx=129, ny=129, center=pos, wcs=view.wcs.local(image_pos=pos))
            overlap = stamp.bounds & image.bounds
            if overlap.isDefined():
                image[overlap] += stamp[overlap]
        area = pixel_area_map(view.wcs, origin, slice(0, window), slice(0, window))
        # e-/s in each pixel -> DN/s per nominal pixel (gain 1)
        rate = image.array / area + sky_e_per_s
        var_poisson = np.maximum(rate * area, 0) / t / area ** 2
        var_rnoise = np.full_like(rate, READ_VARIANCE_E / t ** 2) / area ** 2
        data = rate + gen.normal(size=rate.shape) * np.sqrt(var_poisson + var_rnoise)
        arrays = {"data": data.astype(np.float32),
                  "var_poisson": var_poisson, "var_rnoise": var_rnoise,
                  "err": np.sqrt(var_poisson + var_rnoise), "dq": np.zeros(rate.shape, np.uint32)}
        m = stars["id"].size
        truth = {"exposure": np.full(m, exp.id), "sca": np.full(m, view.sca),
                 "id": stars["id"], "ra": stars["ra"], "dec": stars["dec"],
                 "x": np.array(x), "y": np.array(y), "flux": stars["flux"] * 1.0,
                 "type": np.full(m, "PSF")}
        sim = {**sim_record(view, window, truth), **calibration_record("ols_cas22", 1.0)}
        n = window + 8
        wcs = gwcs_from_galsim(view.wcs, origin, shape=(window, window))
        model = l2_model(arrays, l1_meta(exp, view), wcs,
                         l1_data=np.zeros((1, n, n), np.uint16),
                         amp33=np.zeros((1, n, 128), np.uint16),
                         photometry=photometry_meta(exp.filter, 1.0), sim=sim,
                         filename=l2_filename(exp, view.sca))
        paths.append(write_asdf(model, outdir / l2_filename(exp, view.sca)))
    return paths

"""Benchmark: inject stars into one full-SCA L2 image (4088 x 4088), MA table 4.

Builds an L2 ``ImageModel`` of one full SCA in memory (F158 sky of 0.7 e-/s
with its noise, the galsim.roman WCS of SCA 7), as a romandask file records
it (synthetic detector model, per-nominal-pixel rates) or as a foreign file
(romanisim's: no record, scalar gain and read noise, a gWCS that injection
approximates with a TAN-SIP fit), then injects ``--stars`` point sources of
18-25 AB mag at random positions and prints, per case and stamp radius:

* core-seconds and wall seconds of the injection, and per star;
* the pixels refitted;
* peak RSS of the process.

    python benchmarks/bench_inject.py [--stars 500] [--radii 16,32,64]
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np


def make_l2(record: bool):
    import datetime

    import roman_datamodels.datamodels as rdm

    from romandask.config import Exposure
    from romandask.instrument.matables import MATable
    from romandask.survey.footprint import exposure_wcs
    from romandask.wcs import fits_header_from_galsim, gwcs_from_galsim

    n, table = 4088, MATable.numbered(4)
    exposure = Exposure(id=0, ra=9.7, dec=-44.0, pa=0.0, filter="F158", ma_table=table,
                        start_time=datetime.datetime(2027, 6, 1))
    wcs = exposure_wcs(exposure, (7,))[7]
    model = rdm.ImageModel.create_fake_data(shape=(n, n))
    model.meta.exposure.read_pattern = [list(r) for r in table.read_pattern]
    model.meta.exposure.frame_time = table.frame_time
    model.meta.instrument.detector = "WFI07"
    model.meta.instrument.optical_element = "F158"
    model.meta.wcs = gwcs_from_galsim(wcs, (0, 0), shape=(n, n))
    rng = np.random.default_rng(1)
    rate = 0.7 / 2.0                                    # DN/s at gain 2
    var = np.full((n, n), rate / table.exposure_time * 1.2, np.float32)
    model.data = (rate + np.sqrt(var) * rng.standard_normal((n, n))).astype(np.float32)
    model.var_poisson = var.astype(np.float16)
    model.var_rnoise = np.full((n, n), 2e-3, np.float16)
    model.err = np.sqrt(var + 2e-3).astype(np.float16)
    model.dq = np.zeros((n, n), np.uint32)
    # create_fake_data sizes every array like the image; give the reference
    # arrays the shapes a real L2 has, so that the memory figure means something
    nres, side = table.nresultants, n + 8
    model.amp33 = np.zeros((nres, side, 128), np.uint16)
    for edge, shape in (("left", (side, 4)), ("right", (side, 4)), ("top", (4, side)),
                        ("bottom", (4, side))):
        model[f"border_ref_pix_{edge}"] = np.zeros((nres, *shape), np.float32)
        model[f"dq_border_ref_pix_{edge}"] = np.zeros(shape, np.uint32)
    if record:
        model["romandask"] = {
            "detector": {"model": "synthetic", "seed": 5, "window": n},
            "fits_wcs": fits_header_from_galsim(wcs, (0, 0)).tostring(),
            "reference_gain": 2.0, "fitter": "ols_cas22", "pixel_area_normalised": True}
    return model, wcs


def catalog(wcs, count: int, seed: int = 2):
    from astropy.table import Table

    rng = np.random.default_rng(seed)
    x, y = rng.uniform(1, 4088, count), rng.uniform(1, 4088, count)
    ra, dec = wcs.toWorld(x, y, units="deg")
    return Table({"ra": ra, "dec": dec, "type": ["PSF"] * count, "n": np.full(count, -1.0),
                  "half_light_radius": np.zeros(count), "pa": np.zeros(count),
                  "ba": np.ones(count), "F158": 10 ** (-0.4 * rng.uniform(18, 25, count))})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stars", type=int, default=500)
    p.add_argument("--radii", default="16,32,64")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    from romandask import inject_sources_into_l2

    print(f"{'file':>10} {'radius':>6} {'stars':>6} {'core-s':>7} {'wall-s':>7} "
          f"{'ms/star':>8} {'pixels refitted':>16}")
    for record in (True, False):
        model, wcs = make_l2(record)
        cat = catalog(wcs, args.stars)
        # build the PSF model and (romandask case) compile the kernels outside the timing
        inject_sources_into_l2(model, cat[:1], stamp_radius=16)
        for radius in (int(r) for r in args.radii.split(",")):
            inject_sources_into_l2(model, cat[:1], stamp_radius=radius)
            c0, w0 = time.process_time(), time.perf_counter()
            out = inject_sources_into_l2(model, cat, seed=1, stamp_radius=radius)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            pixels = out["romandask"]["injections"][-1]["pixels_replaced"]
            print(f"{'romandask' if record else 'foreign':>10} {radius:>6} {args.stars:>6} "
                  f"{cpu:7.1f} {wall:7.1f} {1e3 * cpu / args.stars:8.1f} {pixels:16d}",
                  flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"peak RSS {rss / 1024:.2f} GB")


if __name__ == "__main__":
    main()

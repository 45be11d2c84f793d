"""Benchmark: the counts stage for one full SCA (4088 x 4088), at full source density.

Renders every tile of one SCA of the quick-start pointing with the synthetic
catalog (galaxies 18-26 mag, stars 16-24 mag in F158) and prints, in core-
seconds (CPU time of this process):

* the one-time costs of a worker: the PSF model of the (SCA, filter), the PSF
  transforms of the FFT sizes used, and the Sersic transform tables of the
  catalog's distinct Sersic indices (each built once per process);
* per tile: its sources and the core-seconds of its background, its stars,
  its faint galaxies (fainter than ``--faint`` mag) and its bright galaxies,
  each rendered on its own;
* the SCA totals per part, per source class (ms per source) and in all;
* GalSim's drawImage (the reference implementation, ``method="galsim"``) on
  the sources of ``--galsim-tiles`` tiles, side by side with the Fourier
  drawing of the same tiles, and the ratio;
* with ``--options``, the figures behind the choices not taken: the PSF's
  light beyond a stamp radius; per-source stamp radii from two noise criteria,
  the flux they would leave out and what drawing with them costs; GalSim's
  photon shooting of a sample of galaxies;
* peak RSS of this process.

    python benchmarks/bench_counts.py [--tile 1024] [--density-scale 1.0] [--galsim-tiles 1]
                                      [--options]

``--density-scale 0.25`` gives ~1,000 sources on the SCA.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import time
from pathlib import Path

import galsim
import numpy as np

from romandask import rng as rngmod
from romandask.config import (CatalogConfig, ClusterConfig, Config, DetectorConfig, Exposure,
                              OutputConfig, SceneConfig, SurveyConfig)
from romandask.instrument.filters import electrons_per_maggie
from romandask.instrument.matables import MATable
from romandask.pipeline import psf_key_for, sky_backgrounds, tile_edges
from romandask.scene.catalog import synthesize_catalog
from romandask.scene.fourier import fft_size, sersic_shape, sersic_table
from romandask.scene.psf import psf_model
from romandask.scene.render import Backgrounds as backgrounds_type
from romandask.scene.render import expected_counts
from romandask.scene.select import CatalogIndex, in_region, select_sources
from romandask.survey.footprint import SCAView, exposure_wcs, window_bounds

CLASSES = ("stars", "faint galaxies", "bright galaxies")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu() -> float:
    t = resource.getrusage(resource.RUSAGE_SELF)
    return t.ru_utime + t.ru_stime


def _subset(sources: dict, mask: np.ndarray) -> dict:
    return {k: v[mask] for k, v in sources.items()}


def _timed(fn, *args, **kwargs) -> float:
    c0 = _cpu()
    fn(*args, **kwargs)
    return _cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--sca", type=int, default=1)
    ap.add_argument("--density-scale", type=float, default=1.0)
    ap.add_argument("--faint", type=float, default=24.0,
                    help="galaxies fainter than this F158 AB magnitude count as faint")
    ap.add_argument("--galsim-tiles", type=int, default=1,
                    help="tiles also drawn with GalSim's drawImage, for the ratio")
    ap.add_argument("--options", action="store_true",
                    help="also measure the stamp-radius and photon-shooting options")
    args = ap.parse_args()

    exp = Exposure(0, 9.70, -44.0, 0.0, "F158", MATable.numbered(4),
                   datetime.datetime(2027, 6, 1))
    wcs = exposure_wcs(exp, (args.sca,))[args.sca]
    bounds = window_bounds(4088)
    view = SCAView(exp, args.sca, wcs, bounds)
    cfg = Config(1, SurveyConfig((exp,), (args.sca,)), CatalogConfig(), SceneConfig(),
                 DetectorConfig(), OutputConfig(Path("/tmp")), ClusterConfig())
    margin = cfg.scene.margin

    t0 = time.perf_counter()
    ra, dec = view.center()
    cat = synthesize_catalog(ra, dec, 0.25, rngmod.generator(1, "catalog"),
                             density_scale=args.density_scale)
    sources = select_sources(view, CatalogIndex(cat), margin)
    nsrc = len(sources["id"])
    print(f"catalog: {len(cat)} sources in the cap, {nsrc} on SCA {args.sca} "
          f"({nsrc / (4088 * 0.11 / 60) ** 2:.0f} per arcmin^2) "
          f"[{time.perf_counter() - t0:.1f} s wall]")
    mag = -2.5 * np.log10(sources["flux"] / (electrons_per_maggie(exp.filter)
                                             * exp.exposure_time))
    galaxy = sources["type"] == "SER"
    masks = {"stars": ~galaxy, "faint galaxies": galaxy & (mag > args.faint),
             "bright galaxies": galaxy & (mag <= args.faint)}
    print("sources: " + ", ".join(f"{m.sum()} {name}" for name, m in masks.items())
          + f" (faint: F158 > {args.faint:g} mag)")

    # one-time costs of a worker
    key = psf_key_for(view, cfg)
    psf_cost = _timed(psf_model, key)
    psf = psf_model(key)
    c0 = _cpu()
    indices = np.unique(sources["n"][galaxy])
    for n in indices:
        sersic_table(float(n))
    table_cost = _cpu() - c0
    c0 = _cpu()
    sizes = {fft_size(margin, psf.fourier, None)}
    for k in np.flatnonzero(galaxy):
        jac = wcs.jacobian(image_pos=galsim.PositionD(sources["x"][k], sources["y"][k]))
        shape = sersic_shape(sources["n"][k], sources["half_light_radius"][k],
                             sources["pa"][k], sources["ba"][k], jac)
        sizes.add(fft_size(margin, psf.fourier, shape))
    for n in sorted(sizes):
        psf.fourier.grid(n)
    transform_cost = _cpu() - c0
    # the compiled kernels (loaded from numba's cache, or compiled on a first run)
    c0 = _cpu()
    one = _subset(sources, np.arange(nsrc) < 1)
    for kind in ("PSF", "SER"):
        one.update(type=np.array([kind]), n=np.array([1.0]), half_light_radius=np.array([0.3]))
        expected_counts(galsim.BoundsI(1, 8, 1, 8), wcs, one, psf, 1.0,
                        backgrounds_type(), margin)
    kernel_cost = _cpu() - c0
    print(f"one-time per worker: PSF model ({len(psf.images)} grid points) "
          f"{psf_cost:.2f} core-s; Sersic tables ({len(indices)} indices) {table_cost:.2f} "
          f"core-s; PSF transforms (FFT sizes {sorted(sizes)}) {transform_cost:.2f} core-s "
          f"(the shapes of all galaxies included); kernels {kernel_cost:.2f} core-s")
    backgrounds = sky_backgrounds(view, cfg)

    edges = tile_edges(bounds.xmin, 4088, args.tile)
    parts = ("background",) + CLASSES
    totals = dict.fromkeys(parts, 0.0)
    drawn = dict.fromkeys(CLASSES, 0)
    print(f"{'tile':>9} {'sources':>8} " + " ".join(f"{p:>16}" for p in parts)
          + f" {'core-s':>8}")
    galsim_tiles = []
    for ty, (y0, y1) in enumerate(edges):
        for tx, (x0, x1) in enumerate(edges):
            tile = galsim.BoundsI(x0, x1, y0, y1)
            local = in_region(sources, x0 - 0.5 - margin, x1 + 0.5 + margin,
                              y0 - 0.5 - margin, y1 + 0.5 + margin)
            empty = _subset(local, np.zeros(len(local["x"]), bool))
            cost = {"background": _timed(expected_counts, tile, wcs, empty, psf,
                                         exp.exposure_time, backgrounds, margin)}
            lmag = -2.5 * np.log10(local["flux"] / (electrons_per_maggie(exp.filter)
                                                    * exp.exposure_time))
            lgal = local["type"] == "SER"
            lmasks = {"stars": ~lgal, "faint galaxies": lgal & (lmag > args.faint),
                      "bright galaxies": lgal & (lmag <= args.faint)}
            for name, m in lmasks.items():
                # each class drawn on a source-free tile: its cost is the excess
                spent = _timed(expected_counts, tile, wcs, _subset(local, m), psf, 0.0,
                               backgrounds_type(), margin)
                blank = _timed(expected_counts, tile, wcs, empty, psf, 0.0,
                               backgrounds_type(), margin)
                cost[name] = max(spent - blank, 0.0)
                drawn[name] += int(m.sum())
            for p in parts:
                totals[p] += cost[p]
            print(f"{ty:>4},{tx:<4} {len(local['x']):>8} "
                  + " ".join(f"{cost[p]:>16.2f}" for p in parts)
                  + f" {sum(cost.values()):>8.2f}")
            if len(galsim_tiles) < args.galsim_tiles:
                galsim_tiles.append((tile, local))
    total = sum(totals.values())
    print(f"{'SCA':>9} {nsrc:>8} " + " ".join(f"{totals[p]:>16.2f}" for p in parts)
          + f" {total:>8.2f}")
    print("ms per drawn source: " + ", ".join(
        f"{name} {1e3 * totals[name] / max(drawn[name], 1):.2f}" for name in CLASSES)
        + f" (a source is drawn once per tile its stamp reaches: {sum(drawn.values())} "
          "drawings)")
    once = psf_cost + table_cost + transform_cost + kernel_cost
    print(f"SCA total {total:.1f} core-s per SCA at tile {args.tile}; with this worker's "
          f"one-time costs {total + once:.1f} core-s")

    c_new = c_old = 0.0
    count = 0
    for tile, local in galsim_tiles:
        c_new += _timed(expected_counts, tile, wcs, local, psf, exp.exposure_time,
                        backgrounds, margin)
        c_old += _timed(expected_counts, tile, wcs, local, psf, exp.exposure_time,
                        backgrounds, margin, method="galsim")
        count += len(local["x"])
    if galsim_tiles:
        print(f"same {len(galsim_tiles)} tile(s), {count} sources: Fourier {c_new:.2f} "
              f"core-s, GalSim drawImage {c_old:.2f} core-s (ratio {c_old / c_new:.1f})")
    if args.options:
        _options(sources, masks, wcs, psf, backgrounds, exp.exposure_time, margin)
    print(f"peak RSS {_peak_rss_mib():.0f} MiB")


RADII = (4, 8, 12, 16, 24, 32, 48, 64)


def _options(sources, masks, wcs, psf, backgrounds, exptime, margin) -> None:
    """Measure the options not taken: per-source stamp radii, photon shooting."""
    from romandask.scene.fourier import draw_stamp
    from romandask.scene.render import _shape, source_profile

    # the PSF's light beyond each stamp radius (a star, its centre on a pixel corner)
    star = draw_stamp(psf.fourier, psf.grid_weights(2044.5, 2044.5), 1.0, (0.5, 0.5),
                      margin, None)
    cheb = np.maximum(*np.abs(np.mgrid[-margin:margin + 1, -margin:margin + 1]))
    beyond = {r: float(star[cheb > r].sum()) for r in RADII}
    print("PSF light beyond the stamp radius r (of its light within 64 px): "
          + ", ".join(f"r={r}: {beyond[r]:.2%}" for r in RADII[:-1]))
    sky = (backgrounds.sky * 0.11 ** 2 + backgrounds.thermal) * exptime
    sigma = float(np.sqrt(sky))
    print(f"sky {sky:.0f} e- per pixel over the exposure: Poisson sigma {sigma:.1f} e-")
    flux = sources["flux"]
    # a galaxy's light beyond r is at least the PSF's: the radii are lower bounds
    criteria = {
        "lost light < 0.1 sigma of one pixel": lambda r: 0.1 * sigma,
        "lost light < 0.1 sigma of the 129^2 stamp": lambda r: 0.1 * sigma * (2 * margin + 1),
    }
    rng = np.random.default_rng(3)
    sample = rng.choice(len(flux), size=min(300, len(flux)), replace=False)
    for name, allowed in criteria.items():
        radius = np.full(len(flux), margin)
        for r in sorted(RADII, reverse=True):
            radius[flux * beyond[r] < allowed(r)] = r
        left_out = flux * np.array([beyond.get(int(r), 0.0) for r in radius])
        faint = masks["faint galaxies"]
        c_full = c_cut = 0.0
        for k in sample:   # the PSF transforms of the FFT sizes these radii use, first
            x, y = float(sources["x"][k]), float(sources["y"][k])
            draw_stamp(psf.fourier, psf.grid_weights(x, y), flux[k], (0.2, 0.3),
                       int(radius[k]), _shape(wcs, sources, k, x, y))
        for k in sample:
            x, y = float(sources["x"][k]), float(sources["y"][k])
            shape = _shape(wcs, sources, k, x, y)
            grid = psf.grid_weights(x, y)
            c_full += _timed(draw_stamp, psf.fourier, grid, flux[k], (0.2, 0.3), margin, shape)
            c_cut += _timed(draw_stamp, psf.fourier, grid, flux[k], (0.2, 0.3),
                            int(radius[k]), shape)
        print(f"stamp radius from '{name}': median {np.median(radius):.0f} px, "
              f"{(radius < margin).mean():.0%} of sources below {margin}; the catalog's "
              f"light left out {left_out.sum() / flux.sum():.2%} (faint galaxies: "
              f"{left_out[faint].sum() / flux[faint].sum():.2%}); {len(sample)} sources "
              f"drawn: {c_cut / c_full:.2f} of the full stamps' core-s")
    # photon shooting: GalSim's drawImage(method="phot"), one photon per electron
    stamp = galsim.ImageD(2 * margin + 1, 2 * margin + 1, scale=1.0)

    def shoot(k: int) -> tuple[float, float]:
        x, y = float(sources["x"][k]), float(sources["y"][k])
        jac = wcs.jacobian(image_pos=galsim.PositionD(x, y))
        profile = source_profile("SER", flux[k], sources["n"][k],
                                 sources["half_light_radius"][k], sources["pa"][k],
                                 sources["ba"][k], jac)
        obj = galsim.Convolve(profile, psf.at(x, y))
        phot = _timed(obj.drawImage, image=stamp, method="phot",
                      rng=galsim.BaseDeviate(int(k) + 1))
        four = _timed(draw_stamp, psf.fourier, psf.grid_weights(x, y), flux[k], (0.2, 0.3),
                      margin, _shape(wcs, sources, k, x, y))
        return phot, four

    for name in ("faint galaxies", "bright galaxies"):
        picks = rng.choice(np.flatnonzero(masks[name]), size=min(40, int(masks[name].sum())),
                           replace=False)
        for k in picks:   # a first pass builds GalSim's photon-shooting tables
            shoot(k)
        phot, four = np.array([shoot(k) for k in picks]).sum(axis=0)
        print(f"photon shooting, {len(picks)} {name} (median {np.median(flux[picks]):.0f} e-): "
              f"{1e3 * phot / len(picks):.1f} ms per source, Fourier "
              f"{1e3 * four / len(picks):.1f} ms")


if __name__ == "__main__":
    main()

"""Benchmark: the counts stage for one full SCA (4088 x 4088), at full source density.

Renders tiles of one SCA of the quick-start pointing with the synthetic
catalog (galaxies 18-26 mag, stars 16-24 mag in F158) and prints, per tile
size compared side by side in one process:

* PSF model build (once per worker and (SCA, filter));
* core-seconds per tile and per pixel / per source;
* the projected core-seconds for the whole SCA;
* peak RSS of this process.

    python benchmarks/bench_counts.py [--tiles 512 1024] [--ntiles 2]

Only ``--ntiles`` tiles of each size are rendered (the busiest are not
chosen: tiles are taken along the SCA diagonal) and the SCA total is
projected from their per-pixel and per-source costs.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import time

import numpy as np

from romandask import rng as rngmod
from romandask.config import Exposure
from romandask.instrument.matables import MATable
from romandask.pipeline import (TileTask, psf_key_for, render_tile, sky_backgrounds,
                                tile_edges)
from romandask.scene.catalog import synthesize_catalog
from romandask.scene.psf import psf_model
from romandask.scene.select import CatalogIndex, in_region, select_sources
from romandask.survey.footprint import SCAView, exposure_wcs, window_bounds


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu() -> float:
    t = resource.getrusage(resource.RUSAGE_SELF)
    return t.ru_utime + t.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--ntiles", type=int, default=2)
    ap.add_argument("--sca", type=int, default=1)
    args = ap.parse_args()

    from romandask.config import (Config, SurveyConfig, CatalogConfig, SceneConfig,
                                  DetectorConfig, OutputConfig, ClusterConfig)
    from pathlib import Path

    exp = Exposure(0, 9.70, -44.0, 0.0, "F158", MATable.numbered(4),
                   datetime.datetime(2027, 6, 1))
    wcs = exposure_wcs(exp, (args.sca,))[args.sca]
    bounds = window_bounds(4088)
    view = SCAView(exp, args.sca, wcs, bounds)
    cfg = Config(1, SurveyConfig((exp,), (args.sca,)), CatalogConfig(), SceneConfig(),
                 DetectorConfig(), OutputConfig(Path("/tmp")), ClusterConfig())

    t0 = time.perf_counter()
    ra, dec = view.center()
    cat = synthesize_catalog(ra, dec, 0.25, rngmod.generator(1, "catalog"))
    sources = select_sources(view, CatalogIndex(cat), cfg.scene.margin)
    print(f"catalog: {len(cat)} sources in the cap, {len(sources['id'])} on SCA {args.sca} "
          f"({len(sources['id']) / (4088 * 0.11 / 60) ** 2:.0f} per arcmin^2) "
          f"[{time.perf_counter() - t0:.1f} s]")

    key = psf_key_for(view, cfg)
    c0 = _cpu()
    psf_model(key)
    psf_cost = _cpu() - c0
    print(f"PSF model ({len(psf_model(key).images)} grid points): {psf_cost:.2f} core-s, "
          f"peak RSS {_peak_rss_mib():.0f} MiB")
    backgrounds = sky_backgrounds(view, cfg)

    print(f"{'tile':>6} {'tiles':>5} {'sources':>8} {'core-s/tile':>12} {'us/pixel':>9} "
          f"{'ms/source':>10} {'SCA core-s':>11} {'peak RSS MiB':>13}")
    for tile in args.tiles:
        edges = tile_edges(bounds.xmin, 4088, tile)
        pick = np.linspace(0, len(edges) - 1, args.ntiles).round().astype(int)
        cost, pixels, nsrc = 0.0, 0, 0
        for k in pick:
            (x0, x1), (y0, y1) = edges[k], edges[k]
            local = in_region(sources, x0 - 0.5 - 64, x1 + 0.5 + 64, y0 - 0.5 - 64,
                              y1 + 0.5 + 64)
            task = TileTask(1, 0, args.sca, int(k), (x0, x1, y0, y1), wcs, exp.exposure_time,
                            backgrounds, key, 64, True, local)
            c0 = _cpu()
            render_tile(task)
            cost += _cpu() - c0
            pixels += (x1 - x0 + 1) * (y1 - y0 + 1)
            nsrc += len(local["x"])
        # split per-pixel and per-source costs with a background-only render
        empty = {k: v[:0] for k, v in sources.items()}
        (x0, x1) = edges[0]
        c0 = _cpu()
        render_tile(TileTask(1, 0, args.sca, 0, (x0, x1, x0, x1), wcs, exp.exposure_time,
                             backgrounds, key, 64, True, empty))
        per_pix = (_cpu() - c0) / ((x1 - x0 + 1) ** 2)
        per_src = max(cost - per_pix * pixels, 0.0) / max(nsrc, 1)
        # every source is drawn once per tile its stamp reaches: scale the renderings
        # per measured tile to all the SCA's tiles
        sca_cost = per_pix * 4088 ** 2 + per_src * nsrc / len(pick) * len(edges) ** 2
        print(f"{tile:>6} {len(pick):>5} {nsrc:>8} {cost / len(pick):>12.2f} "
              f"{per_pix * 1e6:>9.3f} {per_src * 1e3:>10.2f} {sca_cost + psf_cost:>11.0f} "
              f"{_peak_rss_mib():>13.0f}")


if __name__ == "__main__":
    main()

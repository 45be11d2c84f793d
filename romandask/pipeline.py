"""The survey as a Dask graph, top to bottom.

1. footprint: every (exposure, SCA) with its GalSim WCS (driver, cheap);
2. catalog: read, or synthesised over the footprint (driver);
3. selection: the sources of each (exposure, SCA) within the margin, with
   their truth (driver, vectorised);
4. counts: one task per spatial tile of each (exposure, SCA) renders the
   ideal count image (GalSim) with a random stream keyed by
   (seed, exposure, SCA, tile);
5. the counts cube and the truth table go to the zarr store.

The driver holds only the catalog and small per-tile source lists; pixels
exist only inside tasks and in the store.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dask.array as da
import galsim
import galsim.roman
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import __version__, rng, store
from .config import Config
from .errors import OutputError
from .instrument.filters import GALSIM_NAME, bandpass
from .scene.catalog import read_catalog, synthesize_catalog
from .scene.psf import PSFKey, psf_model
from .scene.render import Backgrounds, render_counts
from .scene.select import CatalogIndex, in_region, select_sources
from .survey.footprint import SCAView, footprint, footprint_cap


# --------------------------------------------------------------------------
# the per-tile task (layer 1 wrapped for Dask: pure, picklable, keyed)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class TileTask:
    """Everything one counts task needs; small and picklable."""

    seed: int
    exposure: int
    sca: int
    tile: int
    bounds: tuple[int, int, int, int]  # GalSim xmin, xmax, ymin, ymax
    wcs: galsim.GSFitsWCS
    exptime: float
    backgrounds: Backgrounds
    psf: PSFKey
    margin: int
    poisson: bool
    sources: dict


def render_tile(task: TileTask) -> np.ndarray:
    """Counts of one tile, shaped (1, 1, ny, nx) for the cube."""
    bounds = galsim.BoundsI(*task.bounds)
    generator = (rng.generator(task.seed, "counts", task.exposure, task.sca, task.tile)
                 if task.poisson else None)
    image = render_counts(bounds, task.wcs, task.sources, psf_model(task.psf), task.exptime,
                          task.backgrounds, generator, task.margin)
    return image[None, None]


# --------------------------------------------------------------------------
# driver-side preparation
# --------------------------------------------------------------------------

@dataclass
class Survey:
    """The prepared survey: views, catalog and per-view sources."""

    config: Config
    views: list[SCAView]
    catalog: object  # astropy Table
    sources: list[dict]

    @property
    def exposures(self):
        return self.config.survey.exposures

    @property
    def scas(self):
        return self.config.survey.scas


def load_catalog(config: Config, views: list[SCAView]):
    """The run's catalog: the configured file, or a synthetic sky over the footprint."""
    filters = sorted({e.filter for e in config.survey.exposures})
    if config.catalog.file is not None:
        return read_catalog(config.catalog.file, filters)
    syn = config.catalog.synthetic
    margin_deg = (config.scene.margin + 2) * 0.12 / 3600.0
    ra, dec, radius = footprint_cap(views, margin_deg)
    return synthesize_catalog(ra, dec, radius, rng.generator(config.seed, "catalog"),
                              galaxy_mag_range=syn.galaxy_mag_range,
                              star_mag_range=syn.star_mag_range,
                              density_scale=syn.density_scale)


def prepare(config: Config, say: Callable[[str], None] = lambda s: None) -> Survey:
    """Footprint, catalog and per-view source selection (all on the driver)."""
    t0 = time.perf_counter()
    views = footprint(config)
    say(f"footprint: {len(config.survey.exposures)} exposures x {len(config.survey.scas)} "
        f"SCAs = {len(views)} images of {config.detector.window}^2 pixels")
    catalog = load_catalog(config, views)
    index = CatalogIndex(catalog)
    sources = [select_sources(v, index, config.scene.margin) for v in views]
    nsel = sum(len(s["id"]) for s in sources)
    say(f"catalog: {len(catalog)} sources, {nsel} (exposure, SCA, source) renderings "
        f"[{time.perf_counter() - t0:.1f} s]")
    return Survey(config, views, catalog, sources)


def sky_backgrounds(view: SCAView, config: Config) -> Backgrounds:
    """Zodiacal light at the window centre (with stray light), thermal, dark."""
    exp = view.exposure
    scene = config.scene
    sky = 0.0
    if scene.sky:
        centre = view.wcs.toWorld(view.bounds.true_center)
        sky = galsim.roman.getSkyLevel(bandpass(exp.filter), world_pos=centre,
                                       date=exp.start_time, exptime=1.0)
        sky *= 1.0 + scene.stray_light_fraction
    thermal = (galsim.roman.thermal_backgrounds[GALSIM_NAME[exp.filter]]
               if scene.thermal else 0.0)
    return Backgrounds(sky=float(sky), thermal=float(thermal),
                       dark=config.detector.dark_current)


def psf_key_for(view: SCAView, config: Config) -> PSFKey:
    """The PSF model key of a view: its SCA, filter, window and the PSF settings."""
    b, psf = view.bounds, config.scene.psf
    return PSFKey(view.sca, view.exposure.filter, b.xmin, b.xmax, b.ymin, b.ymax, psf.grid,
                  psf.pupil_bin, psf.oversample, config.scene.margin)


def tile_edges(window_lo: int, window: int, tile: int) -> list[tuple[int, int]]:
    """(lo, hi) GalSim pixel ranges of the tiles along one axis."""
    return [(window_lo + s, window_lo + min(s + tile, window) - 1)
            for s in range(0, window, tile)]


def tile_tasks(survey: Survey) -> dict[tuple[int, int, int, int], TileTask]:
    """One TileTask per (exposure index, SCA index, tile row, tile column)."""
    cfg = survey.config
    margin, window, tile = cfg.scene.margin, cfg.detector.window, cfg.detector.tile
    tasks = {}
    for k, (view, sources) in enumerate(zip(survey.views, survey.sources)):
        ie, isca = divmod(k, len(survey.scas))
        b = view.bounds
        psf_key = psf_key_for(view, cfg)
        backgrounds = sky_backgrounds(view, cfg)
        ys, xs = tile_edges(b.ymin, window, tile), tile_edges(b.xmin, window, tile)
        for ty, (y0, y1) in enumerate(ys):
            for tx, (x0, x1) in enumerate(xs):
                local = in_region(sources, x0 - 0.5 - margin, x1 + 0.5 + margin,
                                  y0 - 0.5 - margin, y1 + 0.5 + margin)
                tasks[ie, isca, ty, tx] = TileTask(
                    cfg.seed, view.exposure.id, view.sca, ty * len(xs) + tx, (x0, x1, y0, y1),
                    view.wcs, view.exposure.exposure_time, backgrounds, psf_key, margin,
                    cfg.scene.poisson, local)
    return tasks


def counts_cube(survey: Survey) -> da.Array:
    """The counts cube (exposure, sca, y, x) as a Dask array: one task per tile."""
    cfg = survey.config
    window, tile = cfg.detector.window, cfg.detector.tile
    tasks = tile_tasks(survey)
    name = "counts-" + tokenize(__version__, repr(cfg))
    graph = {(name, *key): (render_tile, task) for key, task in tasks.items()}
    edges = tile_edges(0, window, tile)
    chunks = ((1,) * len(survey.exposures), (1,) * len(survey.scas),
              tuple(hi - lo + 1 for lo, hi in edges), tuple(hi - lo + 1 for lo, hi in edges))
    hlg = HighLevelGraph.from_collections(name, graph, dependencies=())
    return da.Array(hlg, name, chunks, dtype=np.float32)


def truth_table(survey: Survey) -> dict[str, np.ndarray]:
    """Truth of every (exposure, SCA, source): 0-based window x, y; flux in electrons."""
    parts = []
    for view, src in zip(survey.views, survey.sources):
        n = len(src["id"])
        x, y = view.to_array(src["x"], src["y"])
        parts.append({"exposure": np.full(n, view.exposure.id, np.int64),
                      "sca": np.full(n, view.sca, np.int64),
                      "id": src["id"], "ra": src["ra"], "dec": src["dec"], "x": x, "y": y,
                      "flux": src["flux"], "type": src["type"]})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

def output_paths(config: Config) -> dict[str, Path]:
    out = config.output.directory
    return {"store": out / store.STORE_NAME, "footprint": out / "footprint.png"}


def check_outputs(config: Config) -> None:
    """Refuse to overwrite a finished run, and fail early on an unwritable directory."""
    paths = output_paths(config)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not config.output.overwrite:
        raise OutputError(f"output.directory {config.output.directory}",
                          f"{existing[0].name} already exists",
                          "choose another directory, or set output.overwrite: true "
                          "(or pass --overwrite)")
    directory = config.output.directory
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"output.directory {directory}", "exists and is not a directory",
                          "choose a directory path")
    parent = next((p for p in (directory, *directory.parents) if p.exists()), Path("/"))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output.directory {directory}", "is not a writable directory",
                          "choose a directory you can write to")


def run(config: Config, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the survey: counts cube + truth to zarr, and the footprint PNG."""
    from .cluster import compute, dask_client

    check_outputs(config)
    survey = prepare(config, say)
    paths = output_paths(config)
    config.output.directory.mkdir(parents=True, exist_ok=True)
    written = {}

    if {"counts", "truth"} & set(config.output.products):
        final = paths["store"]
        partial = store.partial_path(final)
        if partial.exists():
            shutil.rmtree(partial)
        coords = store.exposure_coords(survey.views, survey.exposures, survey.scas)
        attrs = run_attrs(config)
        # The root group always carries the exposure table; counts only if asked.
        if "counts" in config.output.products:
            counts = counts_cube(survey)
            ds = store.counts_dataset(counts, coords, attrs)
            ntasks = counts.npartitions
        else:
            ds = xr.Dataset(coords=coords, attrs=attrs)
            ntasks = 0
        delayed = store.write_group(ds, partial, compute=False)
        if "truth" in config.output.products:
            store.write_group(store.truth_dataset(truth_table(survey)), partial, "truth")
        t0 = time.perf_counter()
        with dask_client(config.cluster, say) as client:
            say(f"rendering {ntasks} tiles")
            compute(delayed, client, config.cluster.progress)
        say(f"counts: done in {time.perf_counter() - t0:.1f} s")
        store.finalise(partial, final)
        written["store"] = final
        say(f"wrote {final}")

    # Last, so that an interrupted run leaves no finished-looking output.
    if "footprint" in config.output.products:
        from .plots import plot_footprint

        plot_footprint(survey, paths["footprint"])
        written["footprint"] = paths["footprint"]
        say(f"wrote {paths['footprint']}")
    return written


def run_attrs(config: Config) -> dict:
    """Store attributes: what made it (no timestamps: reruns give identical bytes)."""
    return {
        "title": "romandask survey simulation",
        "romandask_version": __version__,
        "seed": config.seed,
        "window": config.detector.window,
        "tile": config.detector.tile,
        "position_angle_convention": "pa: position angle of the observatory +Y axis, "
                                     "degrees east of north (GalSim PA_is_FPA=False)",
        "pixel_convention": "y, x: 0-based pixel centres of the central window of the "
                            "4088 x 4088 science array",
    }

"""The survey as a Dask graph, top to bottom.

1. footprint: every (exposure, SCA) with its GalSim WCS (driver, cheap);
2. the sky: a small description of where the sources come from (a catalog
   file, a HEALPix-partitioned catalog, the synthetic sky's model and seed;
   :class:`~romandask.scene.sources.Sky`), on the driver;
3. selection: one task per (exposure, SCA) reads or draws the sky's pixels
   its window needs and cuts its sources within the margin (on the workers);
4. expected counts: one task per spatial tile of each (exposure, SCA)
   renders the ideal count image (GalSim); the counts product is a Poisson
   draw of it with a stream keyed by (seed, exposure, SCA, tile);
5. L1: one readout task per (exposure, SCA) (correlated noise, amp33,
   cosmic rays), one task per SCA that draws a synthetic detector model into
   the run's model store (:mod:`.detector.stored`), and one detector task per
   tile of the frame, fed the expected counts with a one-pixel halo and
   reading its reference data from that store;
6. L2: one reference-pixel task per (exposure, SCA) (amp33 and the top and
   bottom reference rows) and one calibration task per frame tile, fed the
   resultants with the calibration's halo (``overlap``), the same stored
   detector model behind both;
7. the store's skeleton is written first; then, per (exposure, SCA), one
   task per chunk writes the cubes to the zarr store, one task each writes
   its L1 and L2 ASDF file from those chunks, and one writes its rows of the
   truth table beside the run's progress record and marks it done
   (:mod:`romandask.resume`), so that an interrupted run resumes where it
   stopped;
8. the truth group: one task per chunk of its rows gathers them from the
   (exposure, SCA) pieces into the store.

Steps 3-6 are Dask arrays, one task per chunk (``da.blockwise``, ``map_blocks``,
``overlap``), and the store's chunk writes ``map_blocks`` over them; the file
and marker tasks of step 7 are ``dask.delayed``.  No stage builds its graph
by hand: it stays unmaterialised until the scheduler asks for it, and every
heavy layer declares the memory its tasks need.

Where an (exposure, SCA)'s frame is one tile (its window fits in
``detector.tile``) and persistence is off, steps 3-7 of it are one task
instead (:func:`image_task`, built with ``dask.delayed``): the same stages
on the same arrays, the same bytes, one task per image for the scheduler.

The driver holds the footprint and the graph; sources, pixels and truth
exist only inside tasks and in the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dask
import dask.array as da
import galsim
import galsim.roman
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed

from . import __version__, rng, store
from .config import DEFAULT_FITTER, Config, DetectorConfig, exposure_gaps
from .detector.l1 import L1Tile, simulate_tile
from .detector.model import detector_model
from .detector.readout import Readout, make_readout
from .detector.reference import CHANNEL_WIDTH, NBORDER
from .detector.stored import STORE_NAME as MODEL_STORE_NAME
from .detector.stored import remove_partial_entries, stored_model
from .errors import OutputError, check_writable_directory, partial_path
from .instrument.filters import GALSIM_NAME, bandpass
from .memory import Needs
from .resume import Progress
from .scene.catalog import read_catalog, synthesize_catalog
from .scene.psf import PSFKey, psf_model
from .scene.render import Backgrounds, expected_counts
from .scene.select import in_region, margin_radius_deg
from .scene.sources import Sky
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

    def sources(self, view_sources: dict) -> dict:
        """The sources of the tile's view that reach the tile (within the margin)."""
        x0, x1, y0, y1 = self.bounds
        m = self.margin
        return in_region(view_sources, x0 - 0.5 - m, x1 + 0.5 + m, y0 - 0.5 - m, y1 + 0.5 + m)


def render_tile(task: TileTask, view_sources: dict) -> np.ndarray:
    """Expected counts of one tile (float64, electrons), shaped (1, 1, ny, nx), from
    the sources of its view."""
    bounds = galsim.BoundsI(*task.bounds)
    image = expected_counts(bounds, task.wcs, task.sources(view_sources), psf_model(task.psf),
                            task.exptime, task.backgrounds, task.margin)
    np.maximum(image, 0.0, out=image)  # Lanczos ringing can dip a hair below 0
    return image[None, None]


def counts_tile(expected: np.ndarray, task: TileTask) -> np.ndarray:
    """The counts product of one tile: a Poisson draw of the expectation (float32)."""
    if not task.poisson:
        return expected.astype(np.float32)
    generator = rng.generator(task.seed, "counts", task.exposure, task.sca, task.tile)
    return generator.poisson(expected).astype(np.float32)


# --------------------------------------------------------------------------
# driver-side preparation
# --------------------------------------------------------------------------

@dataclass
class Survey:
    """The prepared survey: its views and its sky."""

    config: Config
    views: list[SCAView]
    sky: Sky

    @property
    def exposures(self):
        return self.config.survey.exposures

    @property
    def scas(self):
        return self.config.survey.scas


def footprint_pixels(views: list[SCAView], margin_deg: float, nside: int) -> np.ndarray:
    """The HEALPix pixels (NESTED) that may hold a source within the margin of a view."""
    from .scene.healpix import pixels_near

    return np.unique(np.concatenate([pixels_near(*v.corners(), margin_deg, nside)
                                     for v in views]))


def load_catalog(config: Config, views: list[SCAView]):
    """The whole catalog the footprint sees, in one table (in this process): the
    configured file (of a partitioned one, the pixels the footprint touches), or
    the synthetic sky over the footprint (one cap, or the HEALPix pixels it
    touches).  A run never builds it: each (exposure, SCA) task reads what its
    window needs (:class:`~romandask.scene.sources.Sky`), the same rows."""
    filters = sorted({e.filter for e in config.survey.exposures})
    margin_deg = margin_radius_deg(config.scene.margin)
    if config.catalog.file is not None:
        if config.catalog.file.is_dir():
            from .scene.healpix import PartitionedCatalog

            cat = PartitionedCatalog(config.catalog.file)
            return cat.read(footprint_pixels(views, margin_deg, cat.nside), filters)
        return read_catalog(config.catalog.file, filters)
    syn = config.catalog.synthetic
    if syn.partition == "healpix":
        from .scene.healpix import SKY_NSIDE, synthesize_pixels

        return synthesize_pixels(config.seed, footprint_pixels(views, margin_deg, SKY_NSIDE),
                                 SKY_NSIDE, filters, galaxy_mag_range=syn.galaxy_mag_range,
                                 star_mag_range=syn.star_mag_range,
                                 density_scale=syn.density_scale)
    ra, dec, radius = footprint_cap(views, margin_deg)
    return synthesize_catalog(ra, dec, radius, rng.generator(config.seed, "catalog"),
                              galaxy_mag_range=syn.galaxy_mag_range,
                              star_mag_range=syn.star_mag_range,
                              density_scale=syn.density_scale)


def prepare(config: Config, say: Callable[[str], None] = lambda s: None) -> Survey:
    """The footprint and the sky (on the driver; the sources are cut on the workers)."""
    t0 = time.perf_counter()
    for note in config.notes:
        say(note)
    views = footprint(config)
    say(f"footprint: {len(config.survey.exposures)} exposures x {len(config.survey.scas)} "
        f"SCAs = {len(views)} images of {config.detector.window}^2 pixels")
    sky = Sky.from_config(config, views)
    say(f"sky: {sky.describe()} [{time.perf_counter() - t0:.1f} s]")
    return Survey(config, views, sky)


def sky_backgrounds(view: SCAView, config: Config) -> Backgrounds:
    """Zodiacal light at the window centre (with stray light) and thermal emission.

    Dark current belongs to the detector model and enters at the L1 stage.
    """
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
    return Backgrounds(sky=float(sky), thermal=float(thermal))


def psf_key_for(view: SCAView, config: Config) -> PSFKey:
    """The PSF model key of a view: its SCA, filter, window and the PSF settings."""
    b, psf = view.bounds, config.scene.psf
    return PSFKey(view.sca, view.exposure.filter, b.xmin, b.xmax, b.ymin, b.ymax, psf.grid,
                  psf.pupil_bin, psf.oversample, config.scene.margin)


def tile_edges(window_lo: int, window: int, tile: int) -> list[tuple[int, int]]:
    """(lo, hi) GalSim pixel ranges of the tiles along one axis."""
    return [(window_lo + s, window_lo + min(s + tile, window) - 1)
            for s in range(0, window, tile)]


def view_tiles(view: SCAView, config: Config) -> dict[tuple[int, int], TileTask]:
    """The counts tiles of one (exposure, SCA), keyed (tile row, tile column)."""
    margin, window, tile = config.scene.margin, config.detector.window, config.detector.tile
    b = view.bounds
    psf_key = psf_key_for(view, config)
    backgrounds = sky_backgrounds(view, config)
    ys, xs = tile_edges(b.ymin, window, tile), tile_edges(b.xmin, window, tile)
    return {(ty, tx): TileTask(config.seed, view.exposure.id, view.sca, ty * len(xs) + tx,
                               (x0, x1, y0, y1), view.wcs, view.exposure.exposure_time,
                               backgrounds, psf_key, margin, config.scene.poisson)
            for ty, (y0, y1) in enumerate(ys) for tx, (x0, x1) in enumerate(xs)}


def tile_tasks(survey: Survey) -> dict[tuple[int, int, int, int], TileTask]:
    """One TileTask per (exposure index, SCA index, tile row, tile column)."""
    nsca = len(survey.scas)
    return {(*divmod(k, nsca), *rc): task for k, view in enumerate(survey.views)
            for rc, task in view_tiles(view, survey.config).items()}


# --------------------------------------------------------------------------
# the graph of stages: Dask arrays, one task per chunk (da.blockwise)
# --------------------------------------------------------------------------
#
# Each stage is a ``da.blockwise`` over the survey's (exposure, SCA) axes and
# its tiles.  What a stage's task needs to know of its chunk (its view, its
# tile's bounds, its SCA) comes from object arrays with one object per chunk
# (:func:`_objects`); per-(exposure, SCA) results that are not pixels (the
# sources, the readout's correlated noise, the reference correction, the
# detector model) are object arrays too, one object per chunk, which
# ``blockwise`` hands to every tile of their (exposure, SCA) or SCA.  The
# memory each stage's tasks need is declared on its layer (``dask.annotate``).

def _annotated(needs: Needs | None, kind: str):
    """Declare the memory a layer's tasks need (``needs`` None: no declaration)."""
    return dask.annotate(**needs.annotation(kind)) if needs else contextlib.nullcontext()


def _objects(name: str, items: np.ndarray) -> da.Array:
    """A Dask array of Python objects (``items``), one per chunk."""
    return da.from_array(items, chunks=1, name=name, asarray=False)


def _object_grid(shape: tuple[int, ...], items: dict) -> np.ndarray:
    """A NumPy object array of ``shape`` holding ``items`` ({index: object})."""
    grid = np.empty(shape, dtype=object)
    for index, item in items.items():
        grid[index] = item
    return grid


def _one(item) -> np.ndarray:
    """``item`` as the one element of an object chunk."""
    out = np.empty((1,), dtype=object)
    out[0] = item
    return out


def _stage(func: Callable, name: str, out_ind: str, *args, dtype, needs: Needs | None = None,
           kind: str = "", **kwargs) -> da.Array:
    """One task of ``func`` per output chunk (``da.blockwise``; chunks matched by
    their block index, not their sizes), its memory declared as ``kind``'s."""
    meta = np.empty((0,) * len(out_ind), dtype=dtype)
    with _annotated(needs, kind):
        return da.blockwise(func, out_ind, *args, name=name, meta=meta, align_arrays=False,
                            concatenate=True, **kwargs)


def views_array(survey: Survey) -> da.Array:
    """The survey's SCAViews, (exposure, sca), one per chunk."""
    ne, ns = len(survey.exposures), len(survey.scas)
    grid = _object_grid((ne, ns), {divmod(k, ns): v for k, v in enumerate(survey.views)})
    return _objects("views-" + survey_token(survey), grid)


def survey_token(survey: Survey) -> str:
    """A token of what the survey's tasks compute (the config and the version)."""
    return tokenize(__version__, repr(survey.config))


def selection(survey: Survey, needs: Needs | None = None) -> da.Array:
    """The sources of each (exposure, SCA) (:meth:`~romandask.scene.sources.Sky.select`),
    an object array (exposure, sca): one task each, on the workers."""
    name = "select-" + tokenize(survey_token(survey), survey.sky)
    return _stage(select_block, name, "es", views_array(survey), "es", survey.sky, None,
                  dtype=object, needs=needs, kind="select")


def select_block(views: np.ndarray, sky: Sky) -> np.ndarray:
    """The sources of one (exposure, SCA)."""
    return _one(sky.select(views.item())).reshape(1, 1)


def _tile_chunks(survey: Survey) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk sizes of the science window along y and x."""
    cfg = survey.config
    sizes = tuple(hi - lo + 1 for lo, hi in tile_edges(0, cfg.detector.window, cfg.detector.tile))
    return sizes, sizes


def tiles_array(survey: Survey, tasks: dict) -> da.Array:
    """The TileTasks (exposure, sca, tile row, tile column), one per chunk."""
    cy, cx = _tile_chunks(survey)
    grid = _object_grid((len(survey.exposures), len(survey.scas), len(cy), len(cx)), tasks)
    return _objects("tiles-" + survey_token(survey), grid)


def expected_cube(survey: Survey, tiles: da.Array, needs: Needs | None = None) -> da.Array:
    """Expected counts (exposure, sca, y, x), float64: one GalSim task per tile, from
    its (exposure, SCA)'s selection."""
    cy, cx = _tile_chunks(survey)
    return _stage(render_block, "expected-" + survey_token(survey), "esyx", tiles, "esyx",
                  selection(survey, needs), "es", adjust_chunks={"y": cy, "x": cx},
                  dtype=np.float64, needs=needs, kind="render")


def render_block(tile: np.ndarray, selected: np.ndarray) -> np.ndarray:
    return render_tile(tile.item(), selected.item())


def counts_cube(expected: da.Array, tiles: da.Array, needs: Needs | None = None) -> da.Array:
    """The counts product (exposure, sca, y, x), float32: Poisson draws per tile."""
    return _stage(counts_block, "counts-" + tokenize(expected.name), "esyx", expected, "esyx",
                  tiles, "esyx", adjust_chunks=dict(zip("yx", expected.chunks[2:])),
                  dtype=np.float32, needs=needs, kind="counts")


def counts_block(expected: np.ndarray, tile: np.ndarray) -> np.ndarray:
    return counts_tile(expected, tile.item())


def frame_edges(window: int, tile: int) -> list[tuple[int, int]]:
    """[start, stop) rows of the L1 tiles of the frame (window + reference border).

    Tiles of ``tile`` rows from the frame's first row (uniform, as zarr chunks
    must be); a window that fits in one tile is one tile with its border.
    """
    frame = window + 2 * NBORDER
    step = frame if tile >= window else tile
    return [(lo, min(lo + step, frame)) for lo in range(0, frame, step)]


def previous_exposures(config: Config) -> dict[int, tuple[int, float]]:
    """For persistence: index of the latest earlier exposure and the gap (s), per exposure."""
    return {cur: (prev, gap) for prev, cur, gap in exposure_gaps(config.survey.exposures)}


def model_store(config: Config) -> Path | None:
    """Where the run keeps its synthetic detector model (:mod:`.detector.stored`);
    None for the other models, which are read or made where they are used."""
    det = config.detector
    if det.model != "synthetic":
        return None
    return det.model_store or config.output.directory / MODEL_STORE_NAME


def model_array(survey: Survey, needs: Needs | None = None) -> da.Array | None:
    """One task per SCA that draws its synthetic model into the store (or finds it
    there) and returns it: an object array (sca,), or None for the models made
    where they are used.  Every L1 and L2 tile of the SCA depends on it and
    reads the model's files."""
    cfg = survey.config
    store = model_store(cfg)
    if store is None:
        return None
    token = tokenize(cfg.seed, repr(cfg.detector), str(store), tuple(survey.scas))
    scas = _objects("scas-" + token, _object_grid((len(survey.scas),),
                                                  dict(enumerate(survey.scas))))
    return _stage(model_block, "detmodel-" + token, "s", scas, "s", cfg.seed, None,
                  cfg.detector, None, store, None, dtype=object, needs=needs, kind="model")


def model_block(sca: np.ndarray, seed: int, det: DetectorConfig, store: Path) -> np.ndarray:
    return _one(model_task(seed, sca.item(), det, store))


def model_task(seed: int, sca: int, det: DetectorConfig, store: Path):
    """The synthetic model of one SCA, drawn into ``store`` unless it is there."""
    return stored_model(seed, sca, det.window, store)


def _model_args(models: da.Array | None) -> tuple:
    """The blockwise arguments that hand each tile its SCA's model (or None)."""
    return (models, "s") if models is not None else (None, None)


def ramp_cubes(survey: Survey, expected: da.Array, needs: Needs | None = None
               ) -> dict[str, da.Array]:
    """The L1 cubes: ramps and groupdq (exposure, sca, resultant, frame_y, frame_x), amp33.

    One readout task per (exposure, SCA) (correlated noise, cosmic rays) and
    one detector task per tile of the frame, fed the expected counts padded to
    the frame, rechunked like the tiles and grown by a one-pixel halo
    (``overlap``) for IPC; with persistence, also the block of the same tile
    in the SCA's previous exposure.  The resultant axis is padded to the
    longest MA table of the run; ``nresultants`` says how many are real.
    """
    cfg = survey.config
    det = cfg.detector
    window = det.window
    frame = window + 2 * NBORDER
    nmax = max(e.ma_table.nresultants for e in survey.exposures)
    edges = frame_edges(window, det.tile)
    sizes = tuple(b - a for a, b in edges)
    # the expected counts on the frame (zero on the reference border), chunked
    # like the L1 tiles, each block grown by the one pixel IPC reaches
    framed = da.pad(expected, ((0, 0), (0, 0), (NBORDER, NBORDER), (NBORDER, NBORDER)))
    framed = framed.rechunk({2: sizes, 3: sizes})
    halo = da.overlap.overlap(framed, depth={2: 1, 3: 1}, boundary=0)
    token = tokenize(expected.name, repr(cfg))
    views = views_array(survey)
    readouts = _stage(readout_block, "readout-" + token, "es", views, "es", cfg.seed, None,
                      det, None, dtype=object, needs=needs, kind="readout")
    previous = previous_exposures(cfg) if det.persistence else {}
    specs = {}
    for ie, exp in enumerate(survey.exposures):
        gap = previous[ie][1] if ie in previous else None
        for isca, sca in enumerate(survey.scas):
            for ty, rows in enumerate(edges):
                for tx, cols in enumerate(edges):
                    specs[ie, isca, ty, tx] = L1Tile(cfg.seed, exp.id, sca, ty * len(edges) + tx,
                                                     rows, cols, window, exp.ma_table, nmax, gap)
    grid = _object_grid((len(survey.exposures), len(survey.scas), len(edges), len(edges)), specs)
    # persistence: each tile's block of the SCA's previous exposure (an exposure
    # without one gets its own, unused: its L1Tile has no gap)
    if det.persistence:
        before = np.array([previous[ie][0] if ie in previous else ie
                           for ie in range(len(survey.exposures))])
        prior = (halo[before], "esyx")
    else:
        prior = (None, None)
    packed = _stage(l1_block, "l1tile-" + token, "eskryx", _objects("l1spec-" + token, grid),
                    "esyx", halo, "esyx", readouts, "es", *prior, *_model_args(model_array(
                        survey, needs)), det, None, new_axes={"k": 2, "r": nmax},
                    adjust_chunks={"y": sizes, "x": sizes}, dtype=np.uint16, needs=needs,
                    kind="l1_tile")
    amp33 = _stage(amp33_block, "amp33-" + token, "esrya", readouts, "es", nmax, None,
                   frame, None, new_axes={"r": nmax, "y": frame, "a": CHANNEL_WIDTH},
                   dtype=np.uint16)
    return {"ramps": _part(packed, 0, np.uint16, "ramps"),
            "groupdq": _part(packed, 1, np.uint8, "groupdq"),
            "amp33": amp33.rechunk({3: sizes})}


def _part(packed: da.Array, index: int, dtype, label: str) -> da.Array:
    """One of the arrays packed along axis 2 of ``packed``, as ``dtype`` (one task a
    chunk), named ``label``."""
    return packed.map_blocks(_take, index, dtype, drop_axis=2,
                             name=f"{label}-{tokenize(packed.name, index)}",
                             meta=np.empty((0,) * (packed.ndim - 1), dtype=dtype))


def _take(block: np.ndarray, index: int, dtype) -> np.ndarray:
    return block[:, :, index].astype(dtype)


def readout_block(views: np.ndarray, seed: int, det: DetectorConfig) -> np.ndarray:
    view = views.item()
    exp = view.exposure
    return _one(readout_task(seed, exp.id, view.sca, det, exp.ma_table)).reshape(1, 1)


def readout_task(seed: int, exposure: int, sca: int, det: DetectorConfig, ma_table) -> Readout:
    """Correlated noise, amp33 and cosmic rays of one (exposure, SCA)."""
    model = detector_model(det, seed, sca)
    return make_readout(model, ma_table, rng.generator(seed, "readout", exposure, sca),
                        det.cosmic_ray_flux)


def l1_block(spec: np.ndarray, halo: np.ndarray, readout: np.ndarray,
             previous: np.ndarray | None, model: np.ndarray | None,
             det: DetectorConfig) -> np.ndarray:
    """:func:`l1_task` of one tile, its resultants and group DQ packed as one uint16
    array (1, 1, 2, resultant, y, x)."""
    spec = spec.item()
    if spec.persistence_gap is None:
        previous = None
    data, dq = l1_task(spec, det, halo, readout.item(), previous,
                       None if model is None else model.item())
    return np.stack([data, dq.astype(np.uint16)], axis=2)


def l1_task(spec: L1Tile, det: DetectorConfig, halo: np.ndarray, readout: Readout,
            previous: np.ndarray | None, model=None):
    """One tile of L1 from its block of expected counts grown by one pixel (``model``:
    the SCA's stored model, or None to make it here)."""
    if model is None:
        model = detector_model(det, spec.seed, spec.sca)
    data, dq = simulate_tile(spec, model, halo[0, 0], readout,
                             None if previous is None else previous[0, 0])
    return data[None, None], dq[None, None]


def amp33_block(readout: np.ndarray, nmax: int, frame: int) -> np.ndarray:
    return amp33_rows(readout.item(), (0, frame), nmax)


def amp33_rows(readout: Readout, rows: tuple[int, int], nmax: int) -> np.ndarray:
    """The amp33 rows of one tile row, padded to ``nmax`` resultants."""
    block = readout.amp33[:, rows[0]:rows[1]]
    if block.shape[0] < nmax:
        block = np.pad(block, ((0, nmax - block.shape[0]), (0, 0), (0, 0)))
    return block[None, None]


def calibration_edges(window: int, tile: int) -> list[tuple[int, int]]:
    """[start, stop) rows of the calibration tiles: the L1 tiles, a last tile
    thinner than the calibration halo joined to its neighbour (``overlap``
    needs chunks at least as deep as the halo)."""
    from .calibrate.core import HALO

    edges = frame_edges(window, tile)
    if len(edges) > 1 and edges[-1][1] - edges[-1][0] < HALO:
        edges = edges[:-2] + [(edges[-2][0], edges[-1][1])]
    return edges


def l2_cubes(survey: Survey, cubes: dict[str, da.Array], needs: Needs | None = None
             ) -> dict[str, da.Array]:
    """The L2 cubes (exposure, sca, y, x): data, err, var_poisson, var_rnoise, dq.

    Per (exposure, SCA), one small task reads the reference-pixel correction
    off the frame's top and bottom rows and amp33; per L1 tile, one task
    calibrates the tile grown by the calibration's halo (``overlap``).  The
    results, on the frame grid, are cut to the science window and rechunked
    like the counts.
    """
    from .calibrate.core import HALO, OUTPUTS

    cfg = survey.config
    det = cfg.detector
    window = det.window
    n = window + 2 * NBORDER
    ramps, groupdq, amp33 = cubes["ramps"], cubes["groupdq"], cubes["amp33"]
    edges = calibration_edges(window, det.tile)
    sizes = tuple(b - a for a, b in edges)
    ramps = ramps.rechunk({3: sizes, 4: sizes})
    groupdq = groupdq.rechunk({3: sizes, 4: sizes})
    ref_rows = da.concatenate([ramps[..., :NBORDER, :], ramps[..., n - NBORDER:, :]], axis=3)
    ref_rows = ref_rows.rechunk({3: 2 * NBORDER, 4: n})
    amp33_full = amp33.rechunk({3: n})
    depth = {3: HALO, 4: HALO}
    halo = da.overlap.overlap(ramps, depth=depth, boundary=0)
    ghalo = da.overlap.overlap(groupdq, depth=depth, boundary=0)
    token = tokenize(ramps.name, repr(cfg))
    views = views_array(survey)
    models = _model_args(model_array(survey, needs))
    references = _stage(reference_block, "refpix-" + token, "es", views, "es", ref_rows,
                        "esrab", amp33_full, "escde", *models, cfg.seed, None, det, None,
                        dtype=object, needs=needs, kind="reference")
    grid = _object_grid((len(edges), len(edges)),
                        {(ty, tx): (rows, cols) for ty, rows in enumerate(edges)
                         for tx, cols in enumerate(edges)})
    calibrated = _stage(calibrate_block, "caltile-" + token, "eskyx", views, "es",
                        _objects("caledges-" + token, grid), "yx", halo, "esryx", ghalo,
                        "esryx", references, "es", *models, cfg.seed, None, det, None,
                        cfg.calibration.options(), None, new_axes={"k": len(OUTPUTS)},
                        adjust_chunks={"y": sizes, "x": sizes}, dtype=np.float64,
                        needs=needs, kind="calibrate")
    cy, cx = _tile_chunks(survey)
    inner = slice(NBORDER, n - NBORDER)
    out = {}
    for index, var in enumerate(OUTPUTS):
        part = _part(calibrated, index, np.uint32 if var == "dq" else np.float32, f"l2{var}")
        out[var] = part[:, :, inner, inner].rechunk({2: cy, 3: cx})
    return out


def reference_block(views: np.ndarray, ref_rows: np.ndarray, amp33: np.ndarray,
                    model: np.ndarray | None, seed: int, det: DetectorConfig) -> np.ndarray:
    view = views.item()
    reference = reference_task(seed, view.sca, det, view.exposure.ma_table, ref_rows, amp33,
                               None if model is None else model.item())
    return _one(reference).reshape(1, 1)


def reference_task(seed: int, sca: int, det: DetectorConfig, ma_table, ref_rows: np.ndarray,
                   amp33: np.ndarray, model=None):
    """The reference-pixel correction of one (exposure, SCA): row and channel terms."""
    from .calibrate.core import exposure_reference

    nres = ma_table.nresultants
    if model is None:
        model = detector_model(det, seed, sca)
    return exposure_reference(model, ma_table, ref_rows[0, 0, :nres], amp33[0, 0, :nres])


def calibrate_block(views: np.ndarray, edges: np.ndarray, halo: np.ndarray, ghalo: np.ndarray,
                    reference: np.ndarray, model: np.ndarray | None, seed: int,
                    det: DetectorConfig, options) -> np.ndarray:
    """:func:`calibrate_task` of one frame tile, shaped (1, 1, output, y, x)."""
    view = views.item()
    rows, cols = edges.item()
    result = calibrate_task(seed, view.sca, det, view.exposure.ma_table, options, rows, cols,
                            view, halo, ghalo, reference.item(),
                            None if model is None else model.item())
    return result[None, None]


def calibrate_task(seed: int, sca: int, det: DetectorConfig, ma_table, options, rows, cols,
                   view: SCAView, halo: np.ndarray, ghalo: np.ndarray, reference,
                   model=None) -> np.ndarray:
    """L2 of one frame tile from its resultants grown by the calibration halo."""
    from .calibrate.core import calibrate_block

    if model is None:
        model = detector_model(det, seed, sca)
    common, channel = reference
    area = frame_area(view, det.window, rows, cols)
    return calibrate_block(halo[0, 0], rows, cols, model, ma_table, common, channel, options,
                           ghalo[0, 0], area)


def frame_area(view: SCAView, window: int, rows, cols) -> np.ndarray:
    """Relative pixel areas of a frame rectangle (1 on the reference border)."""
    from .calibrate.core import science_part
    from .wcs import pixel_area_map

    out = np.ones((rows[1] - rows[0], cols[1] - cols[0]))
    part = science_part(rows, cols, window + 2 * NBORDER)
    if part is not None:
        in_block, in_window = part
        origin = (view.bounds.xmin - 1, view.bounds.ymin - 1)
        out[in_block] = pixel_area_map(view.wcs, origin, *in_window)
    return out


def _l2_part(result: np.ndarray, index: int) -> np.ndarray:
    part = result[index]
    return (part.astype(np.uint32) if index == 4 else part.astype(np.float32))[None, None]


def image_truth(view: SCAView, sources: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Truth of one (exposure, SCA)'s sources: 0-based window x, y; flux in electrons
    (the columns of the store's truth group, :data:`romandask.store.TRUTH_ATTRS`)."""
    n = len(sources["id"])
    x, y = view.to_array(sources["x"], sources["y"])
    return {"exposure": np.full(n, view.exposure.id, np.int64),
            "sca": np.full(n, view.sca, np.int64),
            "id": sources["id"], "ra": sources["ra"], "dec": sources["dec"], "x": x, "y": y,
            "flux": sources["flux"], "type": sources["type"]}


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

def output_paths(config: Config) -> dict[str, Path]:
    out = config.output.directory
    return {"store": out / store.STORE_NAME, "l1": out / "l1", "l2": out / "l2",
            "mosaic": out / "mosaic", "footprint": out / "footprint.png"}


def detector_record(det: DetectorConfig, seed: int) -> dict:
    """How a file's detector model was made, so that calibration can rebuild it."""
    record = {"model": det.model, "seed": int(seed), "window": int(det.window)}
    if det.model == "caldir":
        record["caldir"] = str(det.caldir)
    if det.model == "scalar":
        record["scalar"] = dataclasses.asdict(det.scalar)
    return record


def window_fits_wcs(view: SCAView) -> str:
    """The window's FITS TAN-SIP WCS header, as text (header pixel 1 = window pixel 0)."""
    from .wcs import fits_header_from_galsim

    origin = (view.bounds.xmin - 1, view.bounds.ymin - 1)
    return fits_header_from_galsim(view.wcs, origin).tostring()


def wcs_block(view: SCAView) -> np.ndarray:
    """The store's ``fits_wcs`` chunk of one window, shaped (1, 1)."""
    return np.array([[window_fits_wcs(view)]], dtype=np.dtypes.StringDType())


def wcs_cube(survey: Survey) -> da.Array:
    """The windows' FITS WCS headers (exposure, sca): one task per window."""
    return _stage(wcs_view_block, "fitswcs-" + survey_token(survey), "es", views_array(survey),
                  "es", dtype=np.dtypes.StringDType())


def wcs_view_block(views: np.ndarray) -> np.ndarray:
    return wcs_block(views.item())


def file_record(det: DetectorConfig, seed: int, fits_wcs: str) -> dict:
    """What an L1 or L2 file records beyond the window and truth: the detector
    model that made it and the window's FITS WCS (so that calibration can
    rebuild both)."""
    return {"detector": detector_record(det, seed), "fits_wcs": fits_wcs}


#: What each file of an (exposure, SCA) takes of its store chunks (beside ``fits_wcs``).
FILE_READS = {"l1": ("ramps", "amp33", "groupdq"),
              "l2": ("l2_data", "l2_err", "l2_var_poisson", "l2_var_rnoise", "l2_dq", "ramps",
                     "amp33"),
              "fits": ("l2_data", "l2_err", "l2_var_poisson", "l2_var_rnoise", "l2_dq")}


def image_arrays(store_path: Path, ie: int, isca: int, names) -> dict:
    """The store's chunks of one (exposure, SCA), as NumPy: the ``names`` cubes (their
    real resultants only) and the window's ``fits_wcs`` header text."""
    ds = xr.open_zarr(store_path, consolidated=False, chunks=None)  # NumPy, not Dask
    nres = int(ds["nresultants"][ie]) if "nresultants" in ds.coords else 0
    out = {"fits_wcs": str(ds["fits_wcs"][ie, isca].values)}
    for name in names:
        var = ds[name][ie, isca]
        out[name] = (var[:nres] if "resultant" in var.dims else var).values
    return out


def block_arrays(blocks: dict[str, np.ndarray], nres: int, names) -> dict:
    """:func:`image_arrays` of the chunks an (exposure, SCA) task holds."""
    out = {"fits_wcs": str(blocks["fits_wcs"][0, 0])}
    for name in names:
        block = blocks[name][0, 0]
        out[name] = block[:nres] if name in ("ramps", "amp33", "groupdq") else block
    return out


def l1_file(arrays: dict, view: SCAView, det: DetectorConfig, seed: int, truth: dict,
            visit: dict, directory: Path) -> Path:
    """Write the L1 ASDF file of one (exposure, SCA) from its arrays
    (:data:`FILE_READS`)."""
    from .export import write_l1

    record = file_record(det, seed, arrays["fits_wcs"])
    return write_l1(directory, arrays["ramps"], arrays["amp33"], view.exposure, view,
                    det.window, truth, visit, resultantdq=arrays["groupdq"], sim_extra=record)


def l2_file(arrays: dict, view: SCAView, det: DetectorConfig, seed: int, truth: dict,
            visit: dict, directory: Path, fitter: str = DEFAULT_FITTER) -> Path:
    """Write the L2 ASDF file of one (exposure, SCA) from its arrays.

    Its ``romandask`` record says how it was calibrated (detector model,
    fitter, reference gain, rates per nominal pixel), for source injection.
    """
    from .calibrate.core import OUTPUTS
    from .export import (calibration_record, l1_meta, l2_filename, l2_model, photometry_meta,
                         sim_record, write_asdf)
    from .wcs import gwcs_from_galsim

    gain = detector_model(det, seed, view.sca).reference_gain()
    sim = {**sim_record(view, det.window, truth, level="L2"),
           **file_record(det, seed, arrays["fits_wcs"]),
           **calibration_record(fitter, gain)}
    origin = (view.bounds.xmin - 1, view.bounds.ymin - 1)
    n = det.window
    l2 = l2_model({name: arrays[f"l2_{name}"] for name in OUTPUTS},
                  l1_meta(view.exposure, view, visit),
                  gwcs_from_galsim(view.wcs, origin, shape=(n, n)),
                  l1_data=arrays["ramps"], amp33=arrays["amp33"],
                  photometry=photometry_meta(view.exposure.filter, gain),
                  sim=sim, filename=l2_filename(view.exposure, view.sca),
                  validate=False)  # write_asdf validates what it writes
    path = directory / l2_filename(view.exposure, view.sca)
    write_asdf(l2, path)
    return path


def fits_file(arrays: dict, view: SCAView, det: DetectorConfig, seed: int, truth: dict,
              visit: dict, directory: Path, fitter: str = DEFAULT_FITTER,
              layout: str = "gen_cal_image") -> Path:
    """Write the FITS companion of one (exposure, SCA)'s L2 file from its arrays:
    ``<L2 name without .asdf>_asdf_to.fits`` beside it, in ``layout``
    (:func:`romandask.export.write_l2_fits`)."""
    from .calibrate.core import OUTPUTS
    from .export import fits_cards, fits_companion, l2_filename, write_l2_fits
    from .wcs import fits_header_from_galsim

    header = fits_header_from_galsim(view.wcs, (view.bounds.xmin - 1, view.bounds.ymin - 1))
    path = fits_companion(directory / l2_filename(view.exposure, view.sca))
    return write_l2_fits(path, {name: arrays[f"l2_{name}"] for name in OUTPUTS}, header,
                         fits_cards(view.exposure.filter, view.sca, fitter), layout)


def _write_file(selected: np.ndarray, kind: str, task: Callable, store_path: Path, ie: int,
                isca: int, view: SCAView, det: DetectorConfig, seed: int, visit: dict,
                directory: Path, *written):
    """Write one file of an (exposure, SCA) from its chunks in the store, once
    ``written`` (those chunks' writes) is done, with the truth of its sources
    (``selected``, their chunk of :func:`selection`)."""
    return task(image_arrays(store_path, ie, isca, FILE_READS[kind]), view, det, seed,
                image_truth(view, selected.item()), visit, directory)


def finish_image(progress: Progress, ie: int, isca: int, view: SCAView, sources: dict | None,
                 *written) -> int:
    """After everything in ``written``: write the (exposure, SCA)'s truth rows (of its
    ``sources``; None: no truth product) and mark it done.  Returns its rows."""
    if sources is None:
        progress.mark(ie, isca)
        return 0
    progress.write_truth(ie, isca, image_truth(view, sources))
    progress.mark(ie, isca)
    return len(sources["id"])


def _finish_selected(progress: Progress, ie: int, isca: int, view: SCAView,
                     selected: np.ndarray | None, *written) -> int:
    """:func:`finish_image` of the sources in ``selected`` (their chunk of
    :func:`selection`; None: no truth product)."""
    return finish_image(progress, ie, isca, view, None if selected is None else selected.item())


#: The products made through the store (a cluster and the survey's graph).
STORE_PRODUCTS = frozenset({"counts", "truth", "ramps", "l1", "l2"})
#: Where each kind of file goes (its key in :func:`output_paths`): FITS beside the L2.
_FILE_DIRS = {"fits": "l2"}
#: The file kinds a run writes per (exposure, SCA), and their name endings.
FILE_SUFFIXES = {"l1": "_uncal.asdf", "l2": "_cal.asdf", "fits": "_cal_asdf_to.fits"}


def product_tasks(survey: Survey, ds: xr.Dataset, partial: Path, progress: Progress,
                  pending: list[tuple[int, int]], needs: Needs | None = None) -> list[Delayed]:
    """One Delayed per pending (exposure, SCA): its store chunks, then its L1 and L2
    files (read back from those chunks), then its truth rows and progress marker
    (:func:`finish_image`; the Delayed's value is its number of truth rows)."""
    from .export import visits_metadata

    cfg = survey.config
    writers = file_writers(cfg)
    writes = store.block_writes(ds, partial, needs.annotation("write") if needs else None)
    # per chunk, a Delayed of its write; the graph as built (optimising it as an
    # array would fuse its layers and drop their memory declarations).  The
    # Delayeds go to the file and marker tasks as arguments of their own: in a
    # list, each task would materialise the whole graph (and tag it with its
    # annotations)
    chunks = [arr.to_delayed(optimize_graph=False) for arr in writes.values()]
    chunks = [blocks.reshape(blocks.shape[:2] + (-1,)) for blocks in chunks]
    selected = selection(survey, needs).to_delayed(optimize_graph=False)
    token = tokenize(*(arr.name for arr in writes.values()), pending)
    visits = visits_metadata(survey.exposures)
    truth = "truth" in cfg.output.products
    jobs = []
    for ie, isca in pending:
        view = survey.views[ie * len(survey.scas) + isca]
        written = [block for blocks in chunks for block in blocks[ie, isca]]
        with _annotated(needs, "files"):
            files = [dask.delayed(_write_file)(
                selected[ie, isca], kind, task, partial, ie, isca, view, cfg.detector, cfg.seed,
                visits[view.exposure.id], directory, *written,
                dask_key_name=f"files-{token}-{ie}-{isca}-{k}")
                for k, (kind, task, directory) in enumerate(writers)]
        jobs.append(dask.delayed(_finish_selected)(
            progress, ie, isca, view, selected[ie, isca] if truth else None, *written, *files,
            dask_key_name=f"mark-{token}-{ie}-{isca}"))
    return jobs


# --------------------------------------------------------------------------
# one task per (exposure, SCA), for windows of one tile
# --------------------------------------------------------------------------

def fused(config: Config) -> bool:
    """Whether each (exposure, SCA) is one task (:func:`image_task`): its frame is
    one tile (the window fits in ``detector.tile``) and no exposure reads
    another's (``detector.persistence`` off)."""
    det = config.detector
    return det.tile >= det.window and not det.persistence


class _Opaque:
    """A plain class with slots, which ``dask.delayed`` passes to its task as it is
    (a dataclass it would take apart and rebuild in the task)."""

    __slots__ = ()

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)


class ImageJob(_Opaque):
    """What every (exposure, SCA) task of a run shares (small)."""

    __slots__ = ("seed", "det", "options", "products", "sky", "nmax", "partial", "progress",
                 "writers")

    def __init__(self, survey: Survey, partial: Path, progress: Progress):
        cfg = survey.config
        self.seed, self.det, self.sky = cfg.seed, cfg.detector, survey.sky
        self.options = cfg.calibration.options()
        self.products = frozenset(cfg.output.products)
        self.nmax = max(e.ma_table.nresultants for e in survey.exposures)
        self.partial, self.progress = partial, progress
        self.writers = file_writers(cfg)


class ImageSpec(_Opaque):
    """One (exposure, SCA): its indices, view, counts tile and visit record."""

    __slots__ = ("ie", "isca", "view", "tile", "visit")

    def __init__(self, ie: int, isca: int, view: SCAView, tile: TileTask, visit: dict):
        self.ie, self.isca, self.view, self.tile, self.visit = ie, isca, view, tile, visit


def file_writers(cfg: Config) -> list[tuple[str, Callable, Path]]:
    """The run's file writers of one (exposure, SCA): (kind, task, directory)."""
    fitter = cfg.calibration.fitter
    paths = output_paths(cfg)
    products = set(cfg.output.products)
    return [(kind, task, paths[_FILE_DIRS.get(kind, kind)]) for kind, task in
            (("l1", l1_file),
             ("l2", functools.partial(l2_file, fitter=fitter)),
             ("fits", functools.partial(fits_file, fitter=fitter,
                                        layout=cfg.output.fits_layout)))
            if kind in products]


def image_blocks(spec: ImageSpec, job: ImageJob, sources: dict, model=None
                 ) -> dict[str, np.ndarray]:
    """The store chunks of one (exposure, SCA) whose frame is one tile: the stages of
    the tiled graph (:func:`render_tile`, :func:`counts_tile`, :func:`l1_task`,
    :func:`reference_task`, :func:`calibrate_task`) on the whole frame, each fed
    what the tiled graph's padding and halos would give it (zeros beyond the
    frame), so that the bytes are the same."""
    from .calibrate.core import HALO, OUTPUTS

    view, products = spec.view, job.products
    blocks = {"fits_wcs": wcs_block(view)}
    expected = render_tile(spec.tile, sources)
    if "counts" in products:
        blocks["counts"] = counts_tile(expected, spec.tile)
    if not {"ramps", "l1", "l2"} & products:
        return blocks
    exp, det, seed = view.exposure, job.det, job.seed
    window = det.window
    frame = window + 2 * NBORDER
    readout = readout_task(seed, exp.id, view.sca, det, exp.ma_table)
    # the expected counts on the frame (zero on the reference border) and the
    # one pixel beyond it that IPC reaches
    pad = ((0, 0), (0, 0), (NBORDER + 1, NBORDER + 1), (NBORDER + 1, NBORDER + 1))
    spec_l1 = L1Tile(seed, exp.id, view.sca, 0, (0, frame), (0, frame), window, exp.ma_table,
                     job.nmax, None)
    ramps, groupdq = l1_task(spec_l1, det, np.pad(expected, pad), readout, None, model)
    amp33 = amp33_rows(readout, (0, frame), job.nmax)
    blocks.update(ramps=ramps, groupdq=groupdq, amp33=amp33)
    if "l2" not in products:
        return blocks
    ref_rows = np.concatenate([ramps[..., :NBORDER, :], ramps[..., frame - NBORDER:, :]], axis=3)
    reference = reference_task(seed, view.sca, det, exp.ma_table, ref_rows, amp33, model)
    halo = ((0, 0),) * 3 + ((HALO, HALO),) * 2
    result = calibrate_task(seed, view.sca, det, exp.ma_table, job.options, (0, frame),
                            (0, frame), view, np.pad(ramps, halo), np.pad(groupdq, halo),
                            reference, model)
    inner = slice(NBORDER, frame - NBORDER)
    for index, var in enumerate(OUTPUTS):
        blocks[f"l2_{var}"] = np.ascontiguousarray(_l2_part(result, index)[..., inner, inner])
    return blocks


def image_task(spec: ImageSpec, job: ImageJob, model=None) -> int:
    """Everything of one (exposure, SCA), in one task: its sources, its store chunks,
    its L1, L2 and FITS files, its truth rows and its progress marker.  Returns
    its number of truth rows."""
    ie, isca, view = spec.ie, spec.isca, spec.view
    sources = job.sky.select(view)
    blocks = image_blocks(spec, job, sources, model)
    for var, block in blocks.items():
        region = (slice(ie, ie + 1), slice(isca, isca + 1)) + tuple(
            slice(0, n) for n in block.shape[2:])
        store.write_block(str(job.partial / var), region, block)
    truth = image_truth(view, sources)
    nres = view.exposure.ma_table.nresultants
    for kind, task, directory in job.writers:  # from the chunks in hand: the same arrays
        task(block_arrays(blocks, nres, FILE_READS[kind]), view, job.det, job.seed, truth,
             spec.visit, directory)
    return finish_image(job.progress, ie, isca, view,
                        sources if "truth" in job.products else None)


def image_tasks(survey: Survey, ds: xr.Dataset, partial: Path, progress: Progress,
                pending: list[tuple[int, int]], needs: Needs | None = None) -> list[Delayed]:
    """One ``dask.delayed`` task per pending (exposure, SCA) (:func:`image_task`),
    after its SCA's detector model task (a synthetic model), with its memory
    declared.  ``ds`` (the store's skeleton) is not needed: the tasks write the
    store's chunks."""
    from .export import visits_metadata

    cfg = survey.config
    job = ImageJob(survey, partial, progress)
    token = tokenize(__version__, repr(cfg), str(partial))
    store_path = model_store(cfg)
    models = {}
    if store_path is not None and {"ramps", "l1", "l2"} & job.products:
        with _annotated(needs, "model"):
            for isca in sorted({isca for _, isca in pending}):
                models[isca] = dask.delayed(model_task)(
                    cfg.seed, survey.scas[isca], cfg.detector, store_path,
                    dask_key_name=f"detmodel-{token}-{isca}")
    visits = visits_metadata(survey.exposures)
    nsca = len(survey.scas)
    jobs = []
    with _annotated(needs, "image"):
        for ie, isca in pending:
            view = survey.views[ie * nsca + isca]
            (tile,) = view_tiles(view, cfg).values()
            spec = ImageSpec(ie, isca, view, tile, visits[view.exposure.id])
            jobs.append(dask.delayed(image_task)(spec, job, models.get(isca),
                                                 dask_key_name=f"image-{token}-{ie}-{isca}"))
    return jobs


def task_needs(survey: Survey) -> Needs:
    """The memory each kind of the survey's tasks needs (:mod:`romandask.memory`)."""
    from .calibrate.core import HALO
    from .memory import needs

    det = survey.config.detector
    return needs(window=det.window,
                 tile=max(hi - lo + 1 for lo, hi in tile_edges(0, det.window, det.tile)),
                 frame_tile=max(b - a for a, b in frame_edges(det.window, det.tile)),
                 cal_tile=max(b - a for a, b in calibration_edges(det.window, det.tile)),
                 nresultants=max(e.ma_table.nresultants for e in survey.exposures),
                 cal_halo=HALO, fused=fused(survey.config))


def memory_declarations(survey: Survey, client, say: Callable[[str], None]) -> Needs | None:
    """The tasks' memory needs, checked against what the workers offer (None: the
    workers offer no ``MEMORY``, as the threaded scheduler or plain workers).

    Our own workers' offer (``local``, ``slurm``) follows from the config;
    a scheduler's (``address``) is asked of ``client``."""
    from dask.utils import format_bytes

    from .cluster import memory_budget, offered_memory
    from .memory import check_fits

    cfg = survey.config.cluster
    if cfg.type == "threads":
        return None
    budget = memory_budget(cfg) if cfg.type in ("local", "slurm") else offered_memory(client)
    if budget is None:
        if cfg.type == "address":
            say("memory: the workers offer no MEMORY resource, so tasks run without "
                "memory declarations (start workers with --resources MEMORY=<bytes>)")
        return None
    needs = task_needs(survey)
    fix = ("set a smaller detector.tile, or give workers more memory (cluster.memory_limit, "
           "or cluster.memory per job over cluster.processes)")
    check_fits(needs, budget, "cluster", fix)
    kind, need = needs.largest()
    say(f"memory: tasks declare up to {format_bytes(need)} ({kind}); workers offer "
        f"{format_bytes(budget)} each")
    return needs


def check_outputs(config: Config) -> bool:
    """Whether to resume an interrupted run; refuse to overwrite a finished run or
    another config's interrupted one; fail early on an unwritable directory."""
    paths = output_paths(config)
    directory = config.output.directory
    check_writable_directory(directory, f"output.directory {directory}")
    check_model_store(config)
    progress = Progress(directory)
    if config.output.overwrite:
        return False
    if progress.exists() and not paths["store"].exists():
        if progress.matches(config):
            # resumable if its store is there; otherwise it starts over
            return partial_path(paths["store"]).exists()
        raise OutputError(f"output.directory {directory}",
                          "holds an interrupted run of another config (or romandask "
                          "version, or catalog file)",
                          "rerun that config to finish it, choose another directory, or "
                          "set output.overwrite: true (or pass --overwrite) to start over")
    existing = [p for p in paths.values() if p.exists()]
    if existing:
        raise OutputError(f"output.directory {directory}",
                          f"{existing[0].name} already exists",
                          "choose another directory, or set output.overwrite: true "
                          "(or pass --overwrite)")
    return False


def check_catalog(survey: Survey, client, say: Callable[[str], None]) -> None:
    """Read and validate the pixel files of a partitioned catalog that the survey
    needs, on ``client``'s workers, before anything is written
    (:meth:`~romandask.scene.sources.Sky.check_values`)."""
    from .cluster import compute

    t0 = time.perf_counter()
    files = survey.sky.check_values(survey.views, lambda jobs: compute(jobs, client, False))
    if files:
        say(f"catalog: {files} pixel files read and checked [{time.perf_counter() - t0:.1f} s]")


def check_model_store(config: Config) -> None:
    """Fail early on a configured ``detector.model_store`` that cannot be written."""
    store = config.detector.model_store
    if store is not None:
        check_writable_directory(store, f"detector.model_store {store}")


def plan_checks(config: Config, survey: Survey, say: Callable[[str], None]) -> None:
    """What ``run`` checks before it starts work, for ``plan``: refuse (one line)
    what no flag of ``run`` would let through (an unwritable output directory,
    a task that does not fit the workers' memory); say what ``run`` will do
    with an earlier run in the directory."""
    directory = config.output.directory
    check_writable_directory(directory, f"output.directory {directory}")
    check_model_store(config)
    try:
        resume = check_outputs(config)
    except OutputError as exc:
        say(f"note: `romandask run` refuses this output directory as it is "
            f"({exc.where}: {exc.problem}): pass --overwrite to replace it")
    else:
        if resume:
            say(f"note: `romandask run` resumes the interrupted run in {directory}")
    products = set(config.output.products)
    if STORE_PRODUCTS & products and \
            config.cluster.type in ("local", "slurm"):
        memory_declarations(survey, None, say)


def remove_partial_files(directory: Path) -> None:
    """Remove the temporary files of interrupted writers (never a finished file)."""
    for stale in directory.glob("*.partial"):
        stale.unlink(missing_ok=True)


def clear_outputs(config: Config) -> None:
    """Remove an earlier run's outputs and progress (``overwrite``): a new run starts."""
    paths = output_paths(config)
    progress = Progress(config.output.directory)
    for path in (paths["store"], partial_path(paths["store"]), progress.path,
                 config.output.directory / MODEL_STORE_NAME):
        if path.exists():
            shutil.rmtree(path)
    paths["footprint"].unlink(missing_ok=True)
    for kind, suffix in FILE_SUFFIXES.items():
        directory = paths[_FILE_DIRS.get(kind, kind)]
        if directory.is_dir():
            for stale in directory.glob("*" + suffix):
                stale.unlink()  # an earlier run's files, which may name other exposures
            remove_partial_files(directory)
    from .mosaic import clear_outputs as clear_mosaic

    clear_mosaic(paths["mosaic"])


def survey_dataset(survey: Survey, needs: Needs | None = None
                   ) -> tuple[xr.Dataset, list[str], int]:
    """The store's dataset (Dask cubes of the configured products), the stages it
    runs and the number of counts tiles.

    A survey of one task per (exposure, SCA) (:func:`fused`) gets stand-ins for
    its cubes (their shapes, chunks and types: the store's skeleton), never
    computed: its tasks write the chunks themselves (:func:`image_tasks`).
    """
    config = survey.config
    if fused(config):
        return stand_in_dataset(survey)
    products = set(config.output.products)
    coords = store.exposure_coords(survey.views, survey.exposures, survey.scas)
    ds = xr.Dataset(coords=coords).merge(store.wcs_dataset(wcs_cube(survey)))
    tasks = tile_tasks(survey)
    tiles = tiles_array(survey, tasks)
    expected = expected_cube(survey, tiles, needs)
    if "counts" in products:
        ds = ds.merge(store.counts_dataset(counts_cube(expected, tiles, needs)))
    if {"ramps", "l1", "l2"} & products:
        cubes = ramp_cubes(survey, expected, needs)
        # the L2 files take their reference-pixel arrays from the stored ramps
        ds = ds.merge(store.ramps_dataset(cubes, survey.exposures))
        if "l2" in products:
            ds = ds.merge(store.l2_dataset(l2_cubes(survey, cubes, needs)))
    ds.attrs.update(run_attrs(config))
    return ds, stages_of(config), len(tasks)


def stages_of(config: Config) -> list[str]:
    """The stages a run makes, in words."""
    products = set(config.output.products)
    stages = ["counts"] if "counts" in products else []
    if {"ramps", "l1", "l2"} & products:
        stages.append("L1 ramps")
        if "l2" in products:
            stages.append(f"L2 ({config.calibration.fitter} ramp fit)")
    return stages


def stand_in_dataset(survey: Survey) -> tuple[xr.Dataset, list[str], int]:
    """:func:`survey_dataset` of a survey whose (exposure, SCA) tasks write their own
    chunks: every cube a Dask stand-in (``da.empty``) of the store's chunks."""
    from .calibrate.core import OUTPUTS

    config = survey.config
    products = set(config.output.products)
    ne, ns = len(survey.exposures), len(survey.scas)
    window = config.detector.window
    frame = window + 2 * NBORDER
    nmax = max(e.ma_table.nresultants for e in survey.exposures)
    lead = ((1,) * ne, (1,) * ns)

    def stand_in(*chunks_and_dtype):
        *rest, dtype = chunks_and_dtype
        chunks = lead + tuple((n,) for n in rest)
        return da.empty(tuple(sum(c) for c in chunks), chunks=chunks, dtype=dtype)

    coords = store.exposure_coords(survey.views, survey.exposures, survey.scas)
    ds = xr.Dataset(coords=coords).merge(store.wcs_dataset(stand_in(np.dtypes.StringDType())))
    if "counts" in products:
        ds = ds.merge(store.counts_dataset(stand_in(window, window, np.float32)))
    if {"ramps", "l1", "l2"} & products:
        cubes = {"ramps": stand_in(nmax, frame, frame, np.uint16),
                 "groupdq": stand_in(nmax, frame, frame, np.uint8),
                 "amp33": stand_in(nmax, frame, CHANNEL_WIDTH, np.uint16)}
        ds = ds.merge(store.ramps_dataset(cubes, survey.exposures))
        if "l2" in products:
            ds = ds.merge(store.l2_dataset(
                {var: stand_in(window, window, np.uint32 if var == "dq" else np.float32)
                 for var in OUTPUTS}))
    ds.attrs.update(run_attrs(config))
    return ds, stages_of(config), len(survey.views)


def simulate(survey: Survey, client, needs: Needs | None, progress: Progress, resume: bool,
             say: Callable[[str], None]) -> dict[str, list[Path]]:
    """The store and the L1 and L2 files, on ``client``: the (exposure, SCA)
    products not yet done, then the partial files of killed writers removed."""
    from .cluster import compute

    config = survey.config
    products = set(config.output.products)
    paths = output_paths(config)
    partial = partial_path(paths["store"])
    for kind in ("l1", "l2"):
        if kind in products:
            paths[kind].mkdir(exist_ok=True)
    everything = [(ie, isca) for ie in range(len(survey.exposures))
                  for isca in range(len(survey.scas))]
    done = progress.done() if resume else set()
    if resume:
        say(f"resuming: {len(done)} of {len(everything)} (exposure, SCA) products "
            f"already complete")
        # the run's own store: what killed writers left (the complete models stay)
        remove_partial_entries(config.output.directory / MODEL_STORE_NAME)
    pending = [es for es in everything if es not in done]
    ds, stages, ntiles = survey_dataset(survey, needs)
    if not resume:
        store.create(ds, partial)
        progress.start(config)
    if pending:
        t0 = time.perf_counter()
        before = psf_cache_stats(client)
        jobs = (image_tasks if fused(config) else product_tasks)(
            survey, ds, partial, progress, pending, needs)
        files = ", ".join(k.upper() for k in FILE_SUFFIXES if k in products)
        say(f"simulating {' and '.join(stages)}: {ntiles} tiles"
            + (f"; writing {files} files" if files else ""))
        compute(jobs, client, config.cluster.progress, "(exposure, SCA) products")
        say(f"{len(pending)} (exposure, SCA) products done in "
            f"{time.perf_counter() - t0:.1f} s")
        say((psf_cache_stats(client) - before).line()
            + ("" if client is None else " on the workers"))
    if "truth" in products:
        nrows = write_truth(survey, partial, progress, client, needs)
        say(f"truth: {nrows} rows")
    written = {}
    for kind in FILE_SUFFIXES:
        if kind in products:
            directory = paths[_FILE_DIRS.get(kind, kind)]
            remove_partial_files(directory)  # of writers killed and run again
            written[kind] = [directory / name for name in product_names(survey, kind)]
            what = "FITS" if kind == "fits" else "ASDF"
            say(f"{kind.upper()}: {len(written[kind])} {what} files in {directory}")
    return written


def write_truth(survey: Survey, partial: Path, progress: Progress, client,
                needs: Needs | None = None) -> int:
    """The store's truth group, from the (exposure, SCA) pieces in ``progress``: the
    group's skeleton here, then one task per chunk of rows gathers them (on the
    workers).  Returns the number of rows."""
    from .cluster import compute

    images = [(ie, isca) for ie in range(len(survey.exposures))
              for isca in range(len(survey.scas))]
    pieces = [progress.truth_piece(ie, isca) for ie, isca in images]
    sizes = np.array([store.piece_rows(p) for p in pieces], np.int64)
    group = partial / "truth"
    if group.exists():  # an interrupted run's: written again whole
        shutil.rmtree(group)
    chunks = store.write_truth_skeleton(partial, int(sizes.sum()))
    with _annotated(needs, "write"):
        jobs = [dask.delayed(store.write_truth_chunk, pure=True)(str(group), start, parts)
                for start, parts in chunks_of_pieces(pieces, sizes, chunks)]
    if jobs:
        compute(jobs, client, False)
    return int(sizes.sum())


def chunks_of_pieces(pieces: list[Path], sizes: np.ndarray, chunk: int):
    """For each chunk of ``chunk`` rows of the concatenated pieces: its first row and
    its parts ``(piece, first row, stop row)``, in order."""
    ends = np.cumsum(sizes)
    starts = ends - sizes
    total = int(ends[-1]) if len(ends) else 0
    for lo in range(0, total, chunk):
        hi = min(lo + chunk, total)
        first = int(np.searchsorted(ends, lo, side="right"))
        last = int(np.searchsorted(starts, hi, side="left"))
        parts = [(str(pieces[k]), int(max(lo - starts[k], 0)), int(min(hi, ends[k]) - starts[k]))
                 for k in range(first, last) if sizes[k]]
        yield lo, parts


def psf_cache_stats(client):
    """The PSF caches' figures: this process's (threads), or the workers' summed."""
    from .scene.psf import CacheStats, cache_stats

    if client is None:
        return cache_stats()
    return sum(client.run(cache_stats).values(), CacheStats())


def run(config: Config, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the survey: counts, ramps and truth to zarr, the L1 and L2 files, the footprint.

    Products are finished one (exposure, SCA) at a time (store chunks, then its
    files); a rerun of an interrupted run of the same config finishes only the
    rest (see :mod:`romandask.resume`).  The store gets its final name last.
    """
    from .cluster import dask_client

    resume = check_outputs(config)
    survey = prepare(config, say)
    paths = output_paths(config)
    progress = Progress(config.output.directory)
    products = set(config.output.products)
    in_store = bool(STORE_PRODUCTS & products)
    needs = None
    if in_store and config.cluster.type in ("local", "slurm"):
        # what our own workers offer is known: refuse before touching outputs
        needs = memory_declarations(survey, None, say)
    written = {}
    partial = partial_path(paths["store"])
    # outputs are touched only once the cluster is up (an unreachable
    # scheduler or a refused SLURM cluster leaves them as they were)
    with dask_client(config.cluster, say) if in_store else contextlib.nullcontext() as client:
        if in_store and config.cluster.type == "address":  # what its workers offer
            needs = memory_declarations(survey, client, say)
        if in_store:
            check_catalog(survey, client, say)
        if not resume:
            clear_outputs(config)
        config.output.directory.mkdir(parents=True, exist_ok=True)
        if in_store:
            written.update(simulate(survey, client, needs, progress, resume, say))
        if "mosaic" in products:
            from .mosaic import survey_mosaic

            written["mosaic"] = survey_mosaic(config, written["l2"], paths["mosaic"], client,
                                              say, partial_path(paths["store"]))

    if "footprint" in config.output.products:
        from .plots import plot_footprint

        plot_footprint(survey, paths["footprint"])
        written["footprint"] = paths["footprint"]
        say(f"wrote {paths['footprint']}")
    # Last, so that a store with its final name means a finished run.
    if partial.exists():
        store.finalise(partial, paths["store"])
        written["store"] = paths["store"]
        say(f"wrote {paths['store']}")
    # the detector models kept for the run (a configured model_store keeps them)
    shutil.rmtree(config.output.directory / MODEL_STORE_NAME, ignore_errors=True)
    progress.remove()
    return written


def product_names(survey: Survey, kind: str) -> list[str]:
    """The L1, L2 or FITS file names of the survey, in (exposure, SCA) order."""
    from .export import fits_companion, l1_filename, l2_filename

    if kind == "fits":
        return [fits_companion(Path(name)).name for name in product_names(survey, "l2")]
    name = l1_filename if kind == "l1" else l2_filename
    return [name(view.exposure, view.sca) for view in survey.views]


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

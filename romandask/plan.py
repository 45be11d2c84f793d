"""``romandask plan``: what a run would do, and what it would cost.

Prints the exposures x SCAs table (centre, sources rendered, tiles), the
number of Dask tasks, the bytes of each product and of the detector model
store, an estimate of the core-hours and, for a survey defined by a region,
the tiling and the coverage of the region per filter.  The cost model is
measured on this machine at plan time, on a real task of the survey, in CPU
time of the measuring thread (so that a busy machine does not inflate it):

* the PSF build of one (SCA, filter) (once per worker and SCA/filter);
* the per-pixel cost of backgrounds + Poisson noise on one tile;
* the per-source cost of drawing that tile's sources.

estimate = n_psf_builds x t_psf + pixels x t_pixel + renderings x t_source.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import galsim
import numpy as np

from .detector.reference import CHANNEL_WIDTH, NBORDER
from .detector.stored import entry_bytes
from .pipeline import STORE_PRODUCTS, Survey, TileTask, fused, model_store, view_tiles
from .scene.psf import psf_model
from .scene.render import render_counts

#: Image planes of an L2 file's FITS companion, by layout.
FITS_PLANES = {"gen_cal_image": 3, "romandask": 5}
#: A measured tile is at most this many pixels on a side.
_MEASURE_SIDE = 256
#: At most this many sources are drawn to time the per-source cost.
_MEASURE_SOURCES = 40
#: Images whose sources ``plan`` cuts to count (or estimate) the renderings.
SAMPLE_IMAGES = 100


@dataclass
class Cost:
    psf_build: float  # s per (SCA, filter) model
    per_pixel: float  # s per pixel
    per_source: float  # s per rendered source
    sources_timed: int


def measure_cost(busiest: TileTask, sources: dict) -> Cost:
    """Time the pieces of a counts task on a tile (``sources``: those reaching it)."""
    xmin, xmax, ymin, ymax = busiest.bounds
    xmax, ymax = min(xmax, xmin + _MEASURE_SIDE - 1), min(ymax, ymin + _MEASURE_SIDE - 1)
    bounds = galsim.BoundsI(xmin, xmax, ymin, ymax)
    npix = bounds.area()
    rng = np.random.default_rng(0)

    t0 = time.thread_time()
    psf = psf_model(busiest.psf)
    t_psf = time.thread_time() - t0

    empty = {k: v[:0] for k, v in sources.items()}
    t0 = time.thread_time()
    render_counts(bounds, busiest.wcs, empty, psf, busiest.exptime, busiest.backgrounds, rng,
                  busiest.margin)
    t_pix = (time.thread_time() - t0) / npix

    some = {k: v[:_MEASURE_SOURCES] for k, v in sources.items()}
    n = len(some["x"])
    t_src = 0.0
    if n:
        # draw them where they are, on their whole tile, minus the pixel cost
        tile = galsim.BoundsI(*busiest.bounds)
        t0 = time.thread_time()
        render_counts(tile, busiest.wcs, some, psf, busiest.exptime, busiest.backgrounds, rng,
                      busiest.margin)
        total = time.thread_time() - t0
        t_src = max(total - t_pix * tile.area(), 0.0) / n
    return Cost(t_psf, t_pix, t_src, n)


def product_bytes(survey: Survey, n_truth: int) -> dict[str, int]:
    """Uncompressed bytes of each product of the run."""
    cfg = survey.config
    n_img = len(survey.exposures) * len(survey.scas)
    out = {}
    if "counts" in cfg.output.products:
        out["counts (float32)"] = n_img * cfg.detector.window ** 2 * 4
    if "truth" in cfg.output.products:
        out["truth table"] = n_truth * (8 * 8 + 3 * 8)
    products = set(cfg.output.products)
    window, frame = cfg.detector.window, cfg.detector.window + 2 * NBORDER
    nres = [e.ma_table.nresultants for e in survey.exposures]
    # resultants (uint16), group DQ (uint8) and amp33 (uint16) of one resultant
    per_resultant = frame * frame * 3 + frame * CHANNEL_WIDTH * 2
    nscas = len(survey.scas)
    if {"ramps", "l1", "l2"} & products:
        # the store pads every exposure to the longest MA table's resultants
        out["ramps, group DQ, amp33 (store)"] = n_img * max(nres) * per_resultant
    if "l2" in products:
        out["L2 cubes (store: 4 float32, uint32 DQ)"] = n_img * window * window * 20
    if "l1" in products:
        out[f"L1 files ({n_img})"] = nscas * sum(nres) * per_resultant
    if "l2" in products:
        # data, dq, dq2 (4 B), err and variances, chisq, dumo (float16); amp33
        # and the border reference pixels (float32) of every resultant, and
        # their DQ (uint32)
        out[f"L2 files ({n_img})"] = nscas * sum(
            window * window * 22 + n * frame * (CHANNEL_WIDTH * 2 + 4 * NBORDER * 4)
            + 4 * frame * NBORDER * 4 for n in nres)
    if "fits" in cfg.output.products and survey.views:
        from .export import fits_companion_bytes
        from .wcs import fits_header_from_galsim

        layout = cfg.output.fits_layout
        view = survey.views[0]
        header = fits_header_from_galsim(view.wcs, (view.bounds.xmin - 1, view.bounds.ymin - 1))
        out[f"FITS files ({n_img}, {layout} layout, {FITS_PLANES[layout]} planes)"] = \
            n_img * fits_companion_bytes(header, cfg.detector.window, layout)
    return out


def _sub_survey(survey: Survey, nexp: int, nsca: int) -> Survey:
    """The survey's first ``nexp`` exposures x first ``nsca`` SCAs."""
    cfg = survey.config
    sub = dataclasses.replace(cfg.survey, exposures=cfg.survey.exposures[:nexp],
                              scas=cfg.survey.scas[:nsca])
    ns = len(cfg.survey.scas)
    keep = [ie * ns + isca for ie in range(nexp) for isca in range(nsca)]
    return Survey(dataclasses.replace(cfg, survey=sub), [survey.views[k] for k in keep],
                  survey.sky)


def graph_size(survey: Survey) -> int:
    """Tasks of the graph ``run`` builds for every image of ``survey`` (built, never run)."""
    from dask.highlevelgraph import HighLevelGraph

    from .pipeline import fused, image_tasks, product_tasks, survey_dataset
    from .resume import Progress

    ds, _, _ = survey_dataset(survey)
    pending = [(ie, isca) for ie in range(len(survey.exposures))
               for isca in range(len(survey.scas))]
    nowhere = Path("/nonexistent")
    build = image_tasks if fused(survey.config) else product_tasks
    jobs = build(survey, ds, nowhere, Progress(nowhere), pending)
    graphs = {id(g): g for g in (job.__dask_graph__() for job in jobs)}
    return len(HighLevelGraph.merge(*graphs.values()))


def graph_tasks(survey: Survey) -> tuple[int, int, int]:
    """Dask tasks of the run: (per (exposure, SCA) image, per SCA, shared by all).

    Counted on the graphs ``run`` builds for the survey's first image and for
    its first two (two SCAs of the first exposure, or two exposures of its
    one SCA), every product configured: the survey's graph is the first
    image's shared tasks, its tasks once per image, and the detector model's
    task once per SCA (when L1 is made).
    """
    cfg = survey.config
    if not survey.views or not STORE_PRODUCTS & set(cfg.output.products):
        return 0, 0, 0
    per_sca = 1 if ({"ramps", "l1", "l2"} & set(cfg.output.products)
                    and model_store(cfg) is not None) else 0
    one = graph_size(_sub_survey(survey, 1, 1))
    if len(survey.views) == 1:
        return one - per_sca, per_sca, 0
    if len(survey.scas) > 1:
        per_image = graph_size(_sub_survey(survey, 1, 2)) - one - per_sca
    else:
        per_image = graph_size(_sub_survey(survey, 2, 1)) - one
    return per_image, per_sca, one - per_image - per_sca


def sample_images(n: int, k: int = SAMPLE_IMAGES) -> list[int]:
    """At most ``k`` of ``n`` images, evenly spaced over the survey (all if n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def pixel_count_line(counts: np.ndarray, nside: int, what: str) -> str:
    """The sources per HEALPix pixel, in one line."""
    import hpgeom

    area = hpgeom.nside_to_pixel_area(nside)
    return (f"  per HEALPix pixel (nside {nside}, {area:.4f} deg^2, {what}): median "
            f"{int(np.median(counts))}, max {int(counts.max())} sources")


def catalog_lines(survey: Survey, sampled: list[int]) -> list[str]:
    """The catalog's size: rows (counted, or estimated from the ``sampled`` images'
    pixels) and sources per HEALPix pixel."""
    import hpgeom

    from .pipeline import footprint_pixels
    from .scene.healpix import SKY_NSIDE
    from .scene.select import margin_radius_deg

    sky = survey.sky
    if not survey.views:
        return []
    if not sky.partitioned:  # one file, or one cap drawn whole (here, for the plan)
        ra, dec = sky.positions(survey.views)
        what = (f"sources in {sky.path}" if sky.kind == "file" else
                f"synthetic sources in one cap of radius {sky.cap[2]:.4f} deg (drawn whole "
                f"by each worker)")
        lines = [f"catalog: {len(ra)} {what}"]
        if len(ra):
            pixels = hpgeom.angle_to_pixel(SKY_NSIDE, ra % 360.0, dec)
            counts = np.unique(pixels, return_counts=True)[1]
            lines.append(pixel_count_line(counts, SKY_NSIDE, f"{len(counts)} pixels"))
        return lines
    touched = footprint_pixels(survey.views, margin_radius_deg(sky.margin), sky.nside)
    if sky.kind == "partitioned":
        counts = np.array([sky.rows([p]) for p in touched])
        counts = counts[counts > 0]
        lines = [f"catalog: {int(counts.sum())} sources in the {len(counts)} pixels the "
                 f"footprint touches (of {sky.path})"]
        if len(counts):
            lines.append(pixel_count_line(counts, sky.nside, f"{len(counts)} pixels"))
        return lines
    seen = np.unique(np.concatenate([sky.pixels(survey.views[k]) for k in sampled]))
    counts = np.array([sky.rows([p]) for p in seen])
    if len(seen) == len(touched):
        head = f"catalog: {int(counts.sum())} synthetic sources in {len(touched)} pixels"
    else:
        head = (f"catalog: about {counts.mean() * len(touched):.0f} synthetic sources in "
                f"{len(touched)} pixels (estimate from {len(seen)} pixels drawn here)")
    return [head, pixel_count_line(counts, sky.nside, f"{len(seen)} pixels drawn")]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _scas_text(scas) -> str:
    scas = list(scas)
    if scas == list(range(scas[0], scas[-1] + 1)) and len(scas) > 2:
        return f"{scas[0]}-{scas[-1]}"
    return ", ".join(map(str, scas))


def region_lines(config) -> list[str]:
    """The tiling of a region survey and its coverage per filter."""
    from .survey import sky
    from .survey.tiling import coverage, coverage_lines

    rs = config.survey.region
    if rs is None:
        return []
    region, pattern, tiling = rs.region, rs.pattern, rs.tiling
    exposures = config.survey.exposures
    ra, dec = (round(float(a), 4) for a in sky.radec(region.centre()))
    ra %= 360.0
    nf, nd = len(pattern.filters), pattern.dithers
    estimate = tiling.estimate(nd, nf)
    pa = "auto, " if pattern.pa is None else ""
    timing = (f"exposures start {pattern.cadence:g} s apart" if pattern.cadence is not None
              else "each exposure starts after the previous one's exposure time and the "
                   "slew and settle to it")
    lines = [
        f"region: {region.describe()}, {tiling.area:.3f} deg^2, centre RA {ra:.4f}, Dec "
        f"{dec:.4f}",
        f"pattern: {nf} filter(s) x {nd} dither(s) x {tiling.tiles} tile(s) = "
        f"{len(exposures)} exposures; region area / WFI field area ({tiling.field_area:.4f} "
        f"deg^2) x dithers x filters = {estimate:.1f} ({len(exposures) / estimate:.2f}x)",
        f"  tiles {tiling.step[0]:.4f} x {tiling.step[1]:.4f} deg apart along the field's "
        f"axes; dithers {tiling.dither_step[0]:.4f} x {tiling.dither_step[1]:.4f} deg apart",
        f"  roll (pa) {tiling.pa:.2f} deg at the region centre ({pa}nominal "
        f"{tiling.nominal_pa:.2f}); every exposure within {sky.MAX_ROLL_OFFSET:g} deg of its "
        f"nominal roll and {sky.SUN_ANGLE_MIN:g}-{sky.SUN_ANGLE_MAX:g} deg from the Sun",
        f"  {exposures[0].start_time.isoformat()} to {tiling.end_time.isoformat()} UTC; "
        f"{timing}",
    ]
    cov = coverage(region, exposures)
    lines.append(f"coverage: fraction of the region under >= N exposures, per filter (the "
                 f"18 SCAs' full outlines; grid points {cov.spacing * 3600:.1f}\" apart)")
    lines += coverage_lines(cov)
    scas = config.survey.scas
    if len(scas) < 18:
        sim = coverage(region, exposures, scas)
        parts = [f"{f} {100 * sim.fractions(f, 1)[0]:.1f}%" for f in sim.filters]
        lines.append(f"  the run simulates SCA(s) {_scas_text(scas)} only: under >= 1 "
                     f"exposure of them: {', '.join(parts)}")
    return lines


def plan(survey: Survey, measure: bool = True, show_rows: int = 200) -> str:
    """The plan as text.

    The sources of the rows shown and of :data:`SAMPLE_IMAGES` images spread over
    the survey are cut here, as the run's tasks cut them; the survey's
    renderings are their sum, or, for a larger survey, estimated from the
    sample (and labelled so).
    """
    cfg = survey.config
    nviews = len(survey.views)
    # every image has the same tiles (the window and the tile size set them)
    tiles_per_view = len(view_tiles(survey.views[0], cfg)) if nviews else 0
    sampled = sample_images(nviews)
    shown = list(range(min(show_rows, nviews)))
    selected = {k: survey.sky.select(survey.views[k]) for k in sorted(set(sampled + shown))}
    lines = []
    header = (f"{'exp':>5} {'sca':>3} {'filter':>6} {'MA':>4} {'t_exp[s]':>8} "
              f"{'ra_center':>11} {'dec_center':>11} {'sources':>8} {'tiles':>5}")
    lines += [header, "-" * len(header)]
    for k in shown:
        view, src = survey.views[k], selected[k]
        ra, dec = view.center()
        e = view.exposure
        lines.append(f"{e.id:>5} {view.sca:>3} {e.filter:>6} {e.ma_table.label:>4} "
                     f"{e.exposure_time:>8.2f} {ra:>11.6f} {dec:>11.6f} {len(src['id']):>8} "
                     f"{tiles_per_view:>5}")
    if nviews > len(shown):
        lines.append(f"... {nviews - len(shown)} more (exposure, SCA) rows")
    per_image = [len(selected[k]["id"]) for k in sampled]
    if len(sampled) == nviews:
        n_render = int(sum(per_image))
        renderings = f"{n_render} renderings"
    else:
        n_render = int(round(np.mean(per_image) * nviews))
        renderings = (f"about {n_render} renderings (estimate from {len(sampled)} images "
                      f"spread over the survey)")
    lines.append("")
    lines.append(f"images: {nviews} ({len(survey.exposures)} exposures x "
                 f"{len(survey.scas)} SCAs), {cfg.detector.window} x {cfg.detector.window} "
                 f"pixels, tiles of {cfg.detector.tile}; {renderings}")
    lines += catalog_lines(survey, sampled)
    per_image, per_sca, shared = graph_tasks(survey)
    n_tasks = per_image * len(survey.views) + per_sca * len(survey.scas) + shared
    what = ("each image one task, all of its stages" if fused(cfg) else
            f"{tiles_per_view * nviews} of them render counts tiles")
    lines.append(f"dask tasks: {n_tasks} ({per_image} per (exposure, SCA) image"
                 + (f", {per_sca} per SCA" if per_sca else "")
                 + (f", {shared} shared" if shared else "") + f"; {what})")
    sizes = product_bytes(survey, n_render)
    for name, nbytes in sizes.items():
        lines.append(f"  {name}: {_human(nbytes)}")
    lines.append(f"  total (uncompressed): {_human(sum(sizes.values()))}")
    store = model_store(cfg)
    if store is not None and {"ramps", "l1", "l2"} & set(cfg.output.products):
        per_sca = entry_bytes(cfg.detector.window)
        kept = ("kept" if cfg.detector.model_store is not None
                else "removed when the run completes")
        lines.append(f"detector model store: {_human(per_sca)} per SCA, "
                     f"{_human(per_sca * len(survey.scas))} in {store} ({kept})")
    lines += region_lines(cfg)
    if measure and nviews:
        busiest = max(selected, key=lambda k: len(selected[k]["id"]))
        task = view_tiles(survey.views[busiest], cfg)[0, 0]
        cost = measure_cost(task, task.sources(selected[busiest]))
        pixels = len(survey.views) * cfg.detector.window ** 2
        psf_models = len({(v.sca, v.exposure.filter) for v in survey.views})
        workers = cfg.cluster.n_workers
        builds = psf_models * min(workers, len(survey.exposures))
        core_s = builds * cost.psf_build + pixels * cost.per_pixel + n_render * cost.per_source
        lines.append(f"measured here: PSF model {cost.psf_build:.2f} s per (SCA, filter); "
                     f"{cost.per_pixel * 1e6:.3f} ms per 1000 pixels; "
                     f"{cost.per_source * 1e3:.1f} ms per source "
                     f"({cost.sources_timed} timed)")
        lines.append(f"estimate: {core_s / 3600:.3f} core-hours ({core_s:.0f} core-s; "
                     f"up to {builds} PSF builds), about {core_s / workers / 60:.1f} min on "
                     f"{workers} workers")
    return "\n".join(lines)

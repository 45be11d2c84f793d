"""Benchmark: one full SCA through counts, L1 and L2, stage by stage, beside romanisim.

Runs ``romandask run`` on one exposure of one full SCA (4088^2 science pixels,
F158, MA table 4, tile 1024 by default, synthetic detector model) in this
process on one thread (Dask's synchronous scheduler, BLAS and OpenMP limited
to one thread), with every product of a run (counts, truth, ramps, L1, L2 and
their files), and prints:

* core-seconds of each stage: PSF build, rendering, the counts draw, the
  readout task, the L1 tiles (their reference data apart), the reference-pixel
  task, the calibration tiles (reference data and ramp fit apart), the store
  writes and the L1 and L2 file writers, and what the driver spends around
  them (footprint, catalog, selection, graph, store skeleton);
* the total, the peak RSS of the process, and the targets it is held to;
* with ``--profile N``, a second run under cProfile and its N top functions by
  own time (the hot spots);
* where romanisim is installed, ``romanisim-make-image`` (level 2) on the
  same catalog file, date and filter, in a subprocess in the same run, its
  core-seconds and peak RSS, and the ratio.

The catalog is drawn by romandask's synthetic sky in a cap of 0.2 deg around
SCA 7's centre, thinned to ``--objects`` on the SCA on average, and written as
the ECSV both tools read (romanisim's columns).  Each tool renders what falls
on its own SCA 7 (each places the SCAs by its own focal-plane model: the
counts printed per tool say how alike the two images are); the sky is each
tool's own (zodiacal light for the date, thermal emission; romanisim's
default detector values).

    python benchmarks/bench_sca.py [--objects 1000] [--fitter fixed] [--tile 1024]
                                   [--model synthetic] [--profile 20] [--no-romanisim]
                                   [--keep DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

POINTING = dict(ra=9.70, dec=-44.00, pa=0.0)
DATE = "2027-06-01T00:00:00"
SCA = 7
#: the issue's targets per full SCA (core-s, GB)
TARGETS = {"total": 40.0, "l1": 15.0, "l2": 10.0, "rss_gb": 1.5, "romanisim_ratio": 10.0}


def _cpu() -> float:
    t = resource.getrusage(resource.RUSAGE_SELF)
    return t.ru_utime + t.ru_stime


def _children_cpu() -> float:
    t = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t.ru_utime + t.ru_stime


class Timers:
    """Core-seconds of named stages, with the stage that is running known.

    Stages nest (reference data inside an L1 tile): each keeps its own total,
    and ``inner`` records, for a nested stage, the stage it ran inside.
    """

    def __init__(self):
        self.cpu = defaultdict(float)
        self.calls = defaultdict(int)
        self.stack: list[str] = []

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            label = f"{name}@{self.stack[-1]}" if self.stack and name in NESTED else name
            self.stack.append(name)
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[label] += time.process_time() - t
                self.calls[label] += 1
                self.stack.pop()
        return timed


#: stages timed inside others (reported as a part of the stage they ran in)
NESTED = ("refdata", "fit", "psf")


class TimedModel:
    """A detector model whose reference-data methods are timed."""

    _TIMED = ("region", "biascorr", "dark_cube", "amp33_med", "amp33_std")

    def __init__(self, model, timers: Timers):
        self._model = model
        for name in self._TIMED:
            setattr(self, name, timers.wrap("refdata", getattr(model, name)))

    def __getattr__(self, name):
        return getattr(self._model, name)


@contextlib.contextmanager
def instrumented(timers: Timers):
    """Time romandask's task functions (and run every task in this thread)."""
    from romandask import cluster, pipeline, store
    from romandask.calibrate import core

    patches = [(pipeline, name, timers.wrap(stage, getattr(pipeline, name)))
               for name, stage in (("render_tile", "render"), ("counts_tile", "counts"),
                                   ("readout_task", "readout"), ("l1_task", "l1_tiles"),
                                   ("reference_task", "refpix"), ("model_task", "model"),
                                   ("calibrate_task", "cal_tiles"),
                                   ("l1_file", "l1_file"), ("l2_file", "l2_file"),
                                   ("psf_model", "psf"))]
    patches.append((store, "write_block", timers.wrap("store_write", store.write_block)))
    patches.append((core, "fit_ramp", timers.wrap("fit", core.fit_ramp)))
    models = {}
    real_model = pipeline.detector_model

    def timed_model(*args):
        if args not in models:
            models[args] = TimedModel(real_model(*args), timers)
        return models[args]

    patches.append((pipeline, "detector_model", timed_model))

    @contextlib.contextmanager
    def synchronous(cfg, say=print):
        import dask

        with dask.config.set(scheduler="synchronous"):
            yield None

    patches.append((cluster, "dask_client", synchronous))
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    for mod, name, value in patches:
        setattr(mod, name, value)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


def sca_centre() -> tuple[float, float]:
    """(ra, dec) of the SCA's centre at the pointing (GalSim's focal-plane layout)."""
    import galsim
    import galsim.roman

    world = galsim.CelestialCoord(POINTING["ra"] * galsim.degrees,
                                  POINTING["dec"] * galsim.degrees)
    wcs = galsim.roman.getWCS(world, PA=POINTING["pa"] * galsim.degrees, SCAs=[SCA],
                              date=__import__("datetime").datetime.fromisoformat(DATE))[SCA]
    centre = wcs.toWorld(galsim.PositionD(2044.5, 2044.5))
    return centre.ra.deg % 360.0, centre.dec.deg


#: radius (deg) of the catalog's cap around the SCA: its half-diagonal is 0.088 deg
CAP_RADIUS = 0.2


def make_catalog(path: Path, objects: float, seed: int = 11) -> int:
    """The synthetic sky around the SCA, thinned to ``objects`` on it; returns rows."""
    from romandask.scene.catalog import (expected_galaxy_density, expected_star_density,
                                         synthesize_catalog, write_catalog)

    from astropy import units as u
    from astropy.coordinates import SkyCoord

    b_deg = SkyCoord(ra=POINTING["ra"] * u.deg, dec=POINTING["dec"] * u.deg).galactic.b.deg
    sca_area = (4088 * 0.11 / 3600.0) ** 2  # deg^2
    full = expected_galaxy_density(18.0, 26.0) + expected_star_density(16.0, 24.0, b_deg)
    scale = min(1.0, objects / (full * sca_area))
    rng = np.random.default_rng(seed)
    ra, dec = sca_centre()
    table = synthesize_catalog(ra, dec, CAP_RADIUS, rng,
                               galaxy_mag_range=(18.0, 26.0), star_mag_range=(16.0, 24.0),
                               density_scale=scale, filters=("F158",))
    write_catalog(table, path)
    return len(table)


def config_for(catalog: Path, out: Path, args) -> dict:
    return {
        "seed": 2027,
        "survey": {"scas": [SCA], "exposures": [{**POINTING, "filter": "F158", "ma_table": 4,
                                                 "start_time": DATE}]},
        "catalog": {"file": str(catalog)},
        "detector": {"window": args.window, "tile": min(args.tile, args.window), "model": args.model},
        "calibration": {"fitter": args.fitter},
        "output": {"directory": str(out), "products": ["counts", "truth", "ramps", "l1", "l2"]},
        "cluster": {"type": "threads", "n_workers": 1, "progress": False},
    }


def run_romandask(catalog: Path, out: Path, args, profile: cProfile.Profile | None = None):
    from romandask.config import parse_config
    from romandask.pipeline import run

    timers = Timers()
    config = parse_config(config_for(catalog, out, args), out.parent)
    c0 = _cpu()
    with instrumented(timers):
        if profile is not None:
            profile.enable()
        written = run(config, say=lambda s: None)
        if profile is not None:
            profile.disable()
    total = _cpu() - c0
    import xarray as xr

    truth = xr.open_zarr(written["store"], group="truth")
    return timers, total, int(truth.sizes["source"])


def warm_up(tmp: Path, args) -> None:
    """Compile (or load) the numba kernels on a small run, outside the figures."""
    from romandask.config import parse_config
    from romandask.pipeline import run

    cfg = config_for(tmp / "none.ecsv", tmp / "warm", args)
    cfg["catalog"] = {"synthetic": {"density_scale": 0.01}}
    cfg["detector"].update(window=64, tile=64)
    run(parse_config(cfg, tmp), say=lambda s: None)


def run_romanisim(catalog: Path, out: Path) -> tuple[float, float, float, int] | None:
    """romanisim-make-image (level 2) on the catalog: (core-s, wall s, peak RSS GB, sources)."""
    exe = shutil.which("romanisim-make-image") or str(Path(sys.executable).parent
                                                       / "romanisim-make-image")
    if not Path(exe).exists():
        return None
    target = out / "romanisim_l2.asdf"
    cmd = [exe, "--catalog", str(catalog), "--radec", str(POINTING["ra"]), str(POINTING["dec"]),
           "--roll", str(POINTING["pa"]), "--bandpass", "F158", "--sca", str(SCA),
           "--ma_table_number", "4", "--date", DATE, "--level", "2", "--rng_seed", "1",
           str(target)]
    c0, w0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - w0
    cpu = _children_cpu() - c0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0 ** 2
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print("  romanisim-make-image failed: " + " | ".join(tail))
        return None
    return cpu, wall, rss, _romanisim_sources(target, catalog)


def _gnomonic(ra, dec, ra0: float, dec0: float):
    """Tangent-plane coordinates (radians) about (ra0, dec0); NaN on the far side."""
    ra, dec, ra0, dec0 = (np.radians(np.asarray(v, float)) for v in (ra, dec, ra0, dec0))
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    cosc = np.where(cosc > 0, cosc, np.nan)
    xi = np.cos(dec) * np.sin(ra - ra0) / cosc
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return xi, eta


def _romanisim_sources(path: Path, catalog: Path) -> int:
    """Catalog objects whose position falls on romanisim's image (inside the outline
    of its pixel edges, mapped to the sky by the file's gWCS; -1 if it cannot be read)."""
    import roman_datamodels.datamodels as rdm
    from astropy.table import Table
    from matplotlib.path import Path as Outline

    cat = Table.read(catalog)
    try:
        with rdm.open(path) as model:
            ny, nx = model.data.shape
            wcs = model.meta.wcs
            tx, ty = np.linspace(-0.5, nx - 0.5, 65), np.linspace(-0.5, ny - 0.5, 65)
            xs = np.concatenate([tx, np.full(65, nx - 0.5), tx[::-1], np.full(65, -0.5)])
            ys = np.concatenate([np.full(65, -0.5), ty, np.full(65, ny - 0.5), ty[::-1]])
            ra, dec = wcs(xs, ys)
            ra0, dec0 = wcs(nx / 2.0, ny / 2.0)
    except Exception as exc:  # noqa: BLE001 - a figure of the report, not the run's
        print(f"  (romanisim's image outline could not be read: {exc})")
        return -1
    outline = Outline(np.column_stack(_gnomonic(ra, dec, ra0, dec0)))
    xi, eta = _gnomonic(cat["ra"], cat["dec"], ra0, dec0)
    ok = np.isfinite(xi) & np.isfinite(eta)
    inside = outline.contains_points(np.column_stack([xi[ok], eta[ok]]))
    return int(inside.sum())


def report(timers: Timers, total: float, nsrc: int, args) -> dict[str, float]:
    c = timers.cpu
    ref_l1 = c.get("refdata@l1_tiles", 0.0) + c.get("refdata@readout", 0.0)
    ref_l2 = c.get("refdata@cal_tiles", 0.0) + c.get("refdata@refpix", 0.0)
    ref_other = sum(v for k, v in c.items() if k.startswith("refdata@")) - ref_l1 - ref_l2
    ref_other += c.get("refdata", 0.0)
    fit = c.get("fit@cal_tiles", 0.0)
    psf = sum(v for k, v in c.items() if k.startswith("psf"))
    stages = {
        "render": c["render"], "counts": c["counts"], "readout": c["readout"],
        "l1_tiles": c["l1_tiles"], "refpix": c["refpix"], "cal_tiles": c["cal_tiles"],
        "store_write": c["store_write"], "l1_file": c["l1_file"], "l2_file": c["l2_file"],
        "model": c.get("model", 0.0),
    }
    driver = total - sum(stages.values())
    l1 = c["readout"] + c["l1_tiles"]
    l2 = c["refpix"] + c["cal_tiles"]
    rows = [
        ("PSF model build (in rendering)", psf),
        (f"rendering, {nsrc} sources on the SCA (PSF build included)", c["render"]),
        ("counts product (Poisson draw)", c["counts"]),
        ("readout task (1/f noise, amp33, cosmic rays)", c["readout"]),
        ("L1 tiles", c["l1_tiles"]),
        ("  of which reference data", ref_l1),
        ("  of which charge kernel, bias, noise, ADC", c["l1_tiles"] - ref_l1),
        ("reference-pixel task", c["refpix"]),
        (f"calibration tiles ({args.fitter} fit)", c["cal_tiles"]),
        ("  of which reference data", ref_l2),
        ("  of which ramp fit", fit),
        ("  of which the other steps", c["cal_tiles"] - ref_l2 - fit),
        ("store chunk writes", c["store_write"]),
        ("L1 file writer", c["l1_file"]),
        ("L2 file writer", c["l2_file"]),
        ("detector model drawn into the store (once per SCA and run)", c.get("model", 0.0)),
        ("driver (footprint, catalog, selection, graph, store skeleton)", driver),
    ]
    if ref_other > 0.005:
        rows.append(("reference data elsewhere (file writers)", ref_other))
    print(f"romandask, one SCA ({args.window}^2), F158, MA table 4, tile {args.tile}, "
          f"{args.model} detector model, {args.fitter} fit, one thread:")
    for label, value in rows:
        print(f"  {label:<64s} {value:7.2f} core-s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 ** 2
    print(f"  {'total':<64s} {total:7.2f} core-s")
    print(f"  {'peak RSS of the process':<64s} {rss:7.2f} GB")
    sums = {"window": args.window, "total": total, "l1": l1, "l2": l2, "rss_gb": rss,
            "counts_l1_l2": c["render"] + c["counts"] + l1 + l2, "model": c.get("model", 0.0)}
    return sums


def targets(sums: dict[str, float], romanisim_cpu: float | None) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print("targets (per full SCA, one thread):"
          + ("" if sums["window"] == 4088 else
             f" [this run simulated a {sums['window']}^2 window, not the full SCA]"))
    print(f"  counts + L1 + L2 <= {TARGETS['total']:.0f} core-s: "
          f"{sums['counts_l1_l2']:.1f} (with writes and driver {sums['total']:.1f}, of which "
          f"{sums['model']:.1f} drawing the SCA's detector model, once per SCA and run) "
          f"-> {verdict(sums['counts_l1_l2'] <= TARGETS['total'])}")
    print(f"  L1 stage <= {TARGETS['l1']:.0f} core-s: {sums['l1']:.1f} "
          f"-> {verdict(sums['l1'] <= TARGETS['l1'])}")
    print(f"  L2 stage <= {TARGETS['l2']:.0f} core-s: {sums['l2']:.1f} "
          f"-> {verdict(sums['l2'] <= TARGETS['l2'])}")
    print(f"  peak RSS <= {TARGETS['rss_gb']} GB: {sums['rss_gb']:.2f} (the whole process: "
          f"one worker thread and the driver) -> {verdict(sums['rss_gb'] <= TARGETS['rss_gb'])}")
    if romanisim_cpu is not None:
        ratio = romanisim_cpu / sums["total"]
        print(f"  romanisim / romandask core-s >= {TARGETS['romanisim_ratio']:.0f}: "
              f"{ratio:.1f} -> {verdict(ratio >= TARGETS['romanisim_ratio'])}")


def hot_spots(profile: cProfile.Profile, n: int) -> None:
    buf = io.StringIO()
    stats = pstats.Stats(profile, stream=buf)
    stats.sort_stats("tottime").print_stats(n)
    lines = buf.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    print(f"hot spots (cProfile, own time, top {n}; a profiled run is slower):")
    for line in lines[start:start + n + 1]:
        print("  " + line.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=float, default=1000.0,
                    help="catalog objects per SCA on average [1000]")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--window", type=int, default=4088,
                    help="simulate the central N x N pixels only (a quick check) [4088]")
    ap.add_argument("--model", choices=("synthetic", "scalar"), default="synthetic")
    ap.add_argument("--fitter", choices=("fixed", "ols_cas22", "likely"), default="fixed")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also profile a second run and print its N hot spots")
    ap.add_argument("--no-romanisim", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep the outputs in this directory")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_sca_")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        catalog = tmp / "catalog.ecsv"
        rows = make_catalog(catalog, args.objects)
        print(f"catalog: {rows} objects in a {CAP_RADIUS} deg cap around SCA {SCA} ({catalog})")
        warm_up(tmp, args)
        timers, total, nsrc = run_romandask(catalog, tmp / "romandask", args)
        sums = report(timers, total, nsrc, args)
        romanisim = None
        if not args.no_romanisim:
            romanisim = run_romanisim(catalog, tmp)
            if romanisim is None:
                print("romanisim: not run (romanisim-make-image not installed, or failed)")
            else:
                cpu, wall, rss, nsrc_r = romanisim
                print(f"romanisim-make-image, level 2, same catalog, SCA {SCA}, F158, MA table 4"
                      f" ({nsrc_r} catalog objects on its image):")
                print(f"  {'total':<64s} {cpu:7.2f} core-s ({wall:.0f} s wall)")
                print(f"  {'peak RSS':<64s} {rss:7.2f} GB")
                print(f"  romanisim / romandask: {cpu / total:.1f}x the core-seconds, "
                      f"{rss / sums['rss_gb']:.1f}x the peak RSS")
        targets(sums, None if romanisim is None else romanisim[0])
        if args.profile:
            profile = cProfile.Profile(time.process_time)  # CPU time, not wall
            run_romandask(catalog, tmp / "romandask-profiled", args, profile)
            hot_spots(profile, args.profile)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

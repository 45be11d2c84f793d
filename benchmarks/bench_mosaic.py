"""Benchmark: coadd L2 files onto sky tiles (``romandask.mosaic``).

Writes synthetic L2 files of SCA 1 (the galsim.roman WCS, a uniform sky, a
lattice of stars, Gaussian noise; ``tests/mosaic_fixture.py``) for a few
dithered F158 exposures, then coadds them in this process on Dask's threaded
scheduler with one thread, so that the process's CPU time is the work's
core-seconds and its peak RSS the worker's.  Prints, per case:

* core-seconds and wall seconds of the coadd;
* core-seconds per input megapixel and per output megapixel (tile pixels
  written, and those with data);
* peak RSS of the process (one worker).

Cases: ``small`` (4 exposures of a 512 x 512 window, the quick-start's
input size) and, with ``--full``, ``full`` (2 exposures of the whole
4088 x 4088 SCA).  Where romancal is installed, its ``ResampleStep`` runs on
the same inputs and the ratio of the times is printed; otherwise that is
skipped with a message.

    python benchmarks/bench_mosaic.py [--full] [--tile-size 2048]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mosaic_fixture as mf  # noqa: E402

DITHERS = [(0.0, 0.0), (0.0031, 0.0017), (-0.0021, 0.0029), (0.0012, -0.0033)]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_inputs(directory: Path, window: int, nexp: int) -> list[Path]:
    from romandask.survey.footprint import footprint

    exposures = [mf.exposure(9.70 + a, -44.0 + d, k) for k, (a, d) in
                 enumerate(DITHERS[:nexp])]
    view = footprint(mf.survey_config(directory, exposures, window))[0]
    ra, dec = view.center()
    stars = mf.stars_near(ra, dec, 5, window * 0.11 / 6, 2e5)
    return mf.write_l2_files(directory, exposures, stars, window, seed=1)


def run_case(name: str, window: int, nexp: int, tile_size: int, workdir: Path) -> None:
    import roman_datamodels as rdm

    from romandask.config import ClusterConfig
    from romandask.mosaic import mosaic

    inputs = make_inputs(workdir / name, window, nexp)
    npix_in = nexp * window * window
    out = workdir / name / "mosaic"
    t0, c0 = time.perf_counter(), cpu_seconds()
    tiles = mosaic([str(p) for p in inputs], out, tile_size=tile_size,
                   cluster=ClusterConfig(type="threads", n_workers=1, progress=False))
    wall, cores = time.perf_counter() - t0, cpu_seconds() - c0
    covered = 0
    for path in tiles:
        with rdm.open(path) as m:
            covered += int((np.asarray(m.weight) > 0).sum())
    written = len(tiles) * tile_size ** 2
    print(f"{name}: {nexp} inputs of {window}^2 = {npix_in / 1e6:.2f} Mpix -> {len(tiles)} "
          f"tiles of {tile_size}^2 ({written / 1e6:.1f} Mpix written, "
          f"{covered / 1e6:.2f} Mpix with data)")
    print(f"  {cores:.1f} core-s ({wall:.1f} s wall): {cores / (npix_in / 1e6):.2f} core-s per "
          f"input Mpix, {cores / (written / 1e6):.3f} per written output Mpix, "
          f"{cores / (covered / 1e6):.2f} per output Mpix with data; "
          f"peak RSS {peak_rss_mib():.0f} MiB")
    try:
        import romancal  # noqa: F401
    except ImportError:
        print("  romancal is not installed: no ResampleStep comparison")
        return
    from romancal.datamodels import ModelLibrary
    from romancal.resample import ResampleStep

    # its parameters from CRDS, which is not reachable here: the step's defaults
    os.environ["STPIPE_DISABLE_CRDS_STEPPARS"] = "true"
    t0 = time.perf_counter()
    ResampleStep.call(ModelLibrary([str(p) for p in inputs]), pixel_scale=0.055)  # arcsec
    ref = time.perf_counter() - t0
    print(f"  romancal ResampleStep: {ref:.1f} s wall; romandask / romancal = {wall / ref:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also full-SCA inputs")
    parser.add_argument("--tile-size", type=int, default=2048)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at the start "
          "(figures from a loaded machine are upper bounds)")
    workdir = Path(tempfile.mkdtemp(prefix="bench_mosaic_"))
    try:
        run_case("small", 512, 4, args.tile_size, workdir)
        if args.full:
            run_case("full", 4088, 2, args.tile_size, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

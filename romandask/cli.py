"""The ``romandask`` command line.

    romandask plan CONFIG          what would run: exposures x SCAs, tasks, bytes, cost
                                   (--pointings FILE.ecsv: write the exposure table)
    romandask run  CONFIG          run it
    romandask calibrate CONFIG     calibrate L1 files to L2 (gen_cal_image's config)
    romandask inject L2... CATALOG OUT   inject catalog sources into L2 files
    romandask reffiles OUTDIR      write a synthetic detector model as CALDIR ASDF files
    romandask mosaic L2... OUTDIR  coadd L2 files onto sky tiles (L3 mosaics)

User errors (bad config, bad input files, unwritable outputs) print one line
to stderr and exit with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
import warnings

from . import __version__
from .config import FITTERS
from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="romandask",
                                description="Survey-scale Roman WFI simulation on Dask.")
    p.add_argument("--version", action="version", version=f"romandask {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = sub.add_parser("plan", help="show what a run would do and cost")
    plan.add_argument("config", help="survey YAML config")
    plan.add_argument("--no-measure", action="store_true",
                      help="skip timing a representative task (no cost estimate)")
    plan.add_argument("--rows", type=int, default=200,
                      help="show at most this many (exposure, SCA) rows [200]")
    plan.add_argument("--pointings", metavar="FILE.ecsv",
                      help="write the exposure table as a pointing table (ECSV) that "
                           "survey.pointings reads back")

    run = sub.add_parser("run", help="run the survey simulation")
    run.add_argument("config", help="survey YAML config")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the outputs of an earlier run in output.directory")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="use this running Dask scheduler (tcp:// or tls://) instead of "
                            "the config's cluster")
    where.add_argument("--scheduler-file", metavar="FILE",
                       help="use the running Dask scheduler this file names (as written by "
                            "`dask scheduler --scheduler-file`)")

    cal = sub.add_parser("calibrate", help="calibrate L1 files to L2 (gen_cal_image's config)")
    cal.add_argument("config", help="YAML with IN, OUT, CALDIR, FITSWCS, JUMP_DETECT_PARS, ...")
    cal.add_argument("--overwrite", action="store_true", help="replace existing L2 files")
    cal.add_argument("--no-progress", action="store_true", help="no progress bar")
    inj = sub.add_parser(
        "inject", help="inject catalog sources into L2 files",
        description="Inject the sources of CATALOG into each L2 file (romanisim's method: "
                    "a virtual ramp from the L2 rate, the injected electrons apportioned into "
                    "its reads, the ramp refitted).  One input: OUT is the .asdf file to "
                    "write; several inputs (files or quoted globs): OUT is a directory that "
                    "receives each input's name.")
    inj.add_argument("paths", nargs="+", metavar="PATH",
                     help="L2 file(s) or glob(s), then CATALOG (ECSV or Parquet), then OUT")
    inj.add_argument("--seed", type=int, default=0, help="seed of the random draws [0]")
    inj.add_argument("--fitter", choices=FITTERS,
                     help="ramp fitter for the refit [the file's own; ols_cas22 for files "
                          "that do not say]")
    inj.add_argument("--stamp-radius", type=int, default=64,
                     help="half-side of each source's stamp, pixels [64]")
    inj.add_argument("--caldir", help="reference files (CALDIR) for files that do not record "
                                      "their detector model [romanisim's scalar values]")
    inj.add_argument("--gain", type=float, help="gain (e-/DN) for such files [2]")
    inj.add_argument("--read-noise", type=float, help="read noise (DN) for such files [5]")
    inj.add_argument("--workers", type=int, default=2,
                     help="local worker processes, one file each at a time [2]")
    inj.add_argument("--scheduler", help="address of a running Dask scheduler to use instead")
    inj.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    inj.add_argument("--no-progress", action="store_true", help="no progress bar")

    ref = sub.add_parser("reffiles", help="write synthetic reference files (a CALDIR)")
    ref.add_argument("outdir", help="directory for roman_wfi_<kind>_<tag>_SCA<NN>.asdf")
    ref.add_argument("--sca", default="1..18",
                     help="SCAs: a number, a list (1,4,7) or a range (1..18) [1..18]")
    ref.add_argument("--seed", type=int, default=0, help="seed of the synthetic model [0]")
    ref.add_argument("--ma-table", type=int, default=4,
                     help="numbered MA table of the dark and bias-correction cubes [4]")
    ref.add_argument("--tag", default="romandask", help="file name tag [romandask]")
    ref.add_argument("--overwrite", action="store_true",
                     help="replace reference files of the same names in OUTDIR")
    _mosaic_parser(sub)
    return p


def _mosaic_parser(sub) -> None:
    mos = sub.add_parser(
        "mosaic", help="coadd L2 files onto sky tiles (L3 mosaics)",
        description="Coadd L2 files (files or quoted globs) onto the fixed grid of sky tiles "
                    "with drizzle: one <tile>_<filter>_coadd.asdf MosaicModel per tile and "
                    "filter, and a quick-look mosaic_<filter>.png, in OUTDIR.")
    mos.add_argument("paths", nargs="+", metavar="PATH", help="L2 file(s) or glob(s), then OUTDIR")
    mos.add_argument("--pixel-scale", type=float, default=0.055,
                     help="mosaic pixel scale, arcsec [0.055]")
    mos.add_argument("--tile-size", type=int, default=2048, help="tile side, pixels [2048]")
    mos.add_argument("--pixfrac", type=float, default=1.0, help="drizzle drop size [1.0]")
    mos.add_argument("--kernel", default="square",
                     help="drizzle kernel: square, point, turbo, gaussian, lanczos2, lanczos3 "
                          "[square]")
    mos.add_argument("--weight", default="ivm", help="ivm or exptime [ivm]")
    mos.add_argument("--workers", type=int, default=2, help="local worker processes [2]")
    mos.add_argument("--scheduler", help="address of a running Dask scheduler to use instead")
    mos.add_argument("--overwrite", action="store_true", help="replace existing tile files")
    mos.add_argument("--no-progress", action="store_true", help="no progress bar")


def mosaic(args) -> None:
    """Coadd L2 files onto sky tiles, as ``romandask mosaic`` was asked."""
    from .errors import ConfigError
    from .mosaic import mosaic as run_mosaic

    if len(args.paths) < 2:
        raise ConfigError("mosaic", f"got {len(args.paths)} path(s)",
                          "give the L2 file(s) or glob(s), then OUTDIR")
    *inputs, output = args.paths
    run_mosaic(inputs, output, pixel_scale=args.pixel_scale, tile_size=args.tile_size,
               pixfrac=args.pixfrac, kernel=args.kernel, weight=args.weight,
               workers=args.workers, scheduler=args.scheduler, overwrite=args.overwrite,
               progress=not args.no_progress, say=_say)


def parse_scas(text: str) -> list[int]:
    """SCA numbers from '7', '1,4,7' or '1..18' (ranges inclusive)."""
    from .config import ALL_SCAS
    from .errors import ConfigError

    scas = []
    try:
        for part in text.split(","):
            if ".." in part:
                lo, hi = (int(v) for v in part.split(".."))
                scas.extend(range(lo, hi + 1))
            else:
                scas.append(int(part))
    except ValueError:
        raise ConfigError("--sca", f"cannot read {text!r}",
                          "write a number, a list like 1,4,7 or a range like 1..18") from None
    bad = [s for s in scas if s not in ALL_SCAS]
    if bad or not scas:
        raise ConfigError("--sca", f"{bad or text!r} are not SCAs", "SCAs are 1 to 18")
    return sorted(set(scas))


def reffiles(args) -> None:
    """Write the synthetic model of each SCA as a CALDIR set."""
    import time
    from pathlib import Path

    from .cluster import ProgressLines, format_duration
    from .config import N_PIX
    from .detector.reference import (OPTIONAL_KINDS, REQUIRED_KINDS, SyntheticModel,
                                     reffile_name, write_reffiles)
    from .errors import ConfigError, OutputError, check_writable_directory
    from .instrument.matables import NUMBERED_TABLES, MATable

    scas = parse_scas(args.sca)
    check_seed(args.seed)
    if args.ma_table not in NUMBERED_TABLES:
        raise ConfigError("--ma-table", f"unknown MA table {args.ma_table}",
                          f"use one of {', '.join(map(str, NUMBERED_TABLES))}")
    outdir = Path(args.outdir)
    check_writable_directory(outdir, str(outdir))
    if not args.overwrite:
        for sca in scas:
            for kind in REQUIRED_KINDS + OPTIONAL_KINDS:
                path = outdir / reffile_name(kind, args.tag, sca)
                if path.exists():
                    raise OutputError(str(path), "already exists",
                                      "choose another directory or --tag, or pass --overwrite")
    table = MATable.numbered(args.ma_table)
    kinds = REQUIRED_KINDS + OPTIONAL_KINDS
    _say(f"writing {len(kinds)} reference files for each of {len(scas)} SCA(s) to {outdir} "
         f"(about 2.7 GB per SCA)")
    start = time.perf_counter()
    for i, sca in enumerate(scas):
        t0 = time.perf_counter()
        names = [reffile_name(kind, args.tag, sca) for kind in kinds]
        since = time.time() - 1.0  # files written from now (--overwrite replaces older ones)

        def written(names=names, since=since):
            return sum((outdir / n).exists() and (outdir / n).stat().st_mtime >= since
                       for n in names)

        with ProgressLines(written, len(names), "files", say=_say, label=f"SCA {sca:2d}"):
            paths = write_reffiles(SyntheticModel(args.seed, sca, N_PIX), outdir, table, args.tag)
        elapsed = time.perf_counter() - start
        left = len(scas) - i - 1
        _say(f"SCA {sca:2d}: {len(paths)} files in {outdir} [{time.perf_counter() - t0:.0f} s]"
             + (f"; {i + 1} of {len(scas)} SCAs done, about "
                f"{format_duration(elapsed / (i + 1) * left)} to go" if left else ""))


def check_seed(seed: int) -> None:
    """A seed given as --seed: a whole number >= 0."""
    from .errors import ConfigError

    if not 0 <= seed < 2**63:
        raise ConfigError("--seed", f"is {seed}", "give a whole number from 0 to 2**63 - 1")


def inject(args) -> None:
    """Inject a catalog into L2 files, as ``romandask inject`` was asked."""
    from pathlib import Path

    from .config import ClusterConfig, DetectorConfig, ScalarDetectorConfig
    from .errors import ConfigError
    from .inject import inject as run_inject

    if len(args.paths) < 3:
        raise ConfigError("inject", f"got {len(args.paths)} path(s)",
                          "give the L2 file(s), then the catalog, then OUT")
    *inputs, catalog, output = args.paths
    check_seed(args.seed)
    if not 4 <= args.stamp_radius <= 256:
        raise ConfigError("--stamp-radius", f"is {args.stamp_radius}",
                          "give a whole number of pixels from 4 to 256")
    if args.scheduler and not args.scheduler.startswith(("tcp://", "tls://", "inproc://",
                                                         "ucx://")):
        raise ConfigError("--scheduler", f"{args.scheduler!r} is not a scheduler address",
                          "write it as tcp://HOST:PORT or tls://HOST:PORT")
    detector = None
    if args.caldir is not None:
        if args.gain is not None or args.read_noise is not None:
            raise ConfigError("--caldir", "is given with --gain or --read-noise",
                              "give either the reference files or the scalar values")
        if not Path(args.caldir).is_dir():
            raise ConfigError("--caldir", f"{args.caldir} is not a directory",
                              "give the directory of roman_wfi_<kind>_*_SCA<NN>.asdf files")
        detector = DetectorConfig(model="caldir", caldir=Path(args.caldir))
    elif args.gain is not None or args.read_noise is not None:
        scalar = ScalarDetectorConfig()
        for flag, name, value in (("--gain", "gain", args.gain),
                                  ("--read-noise", "read_noise", args.read_noise)):
            if value is not None:
                if not value > 0:
                    raise ConfigError(flag, f"is {value}", "give a positive number")
                scalar = dataclasses.replace(scalar, **{name: value})
        detector = DetectorConfig(model="scalar", scalar=scalar)
    if args.workers < 1:
        raise ConfigError("--workers", f"is {args.workers}", "give at least 1")
    cluster = (ClusterConfig(type="address", address=args.scheduler,
                             progress=not args.no_progress)
               if args.scheduler else
               ClusterConfig(n_workers=args.workers, progress=not args.no_progress))
    try:
        run_inject(inputs, catalog, output, seed=args.seed, fitter=args.fitter,
                   stamp_radius=args.stamp_radius, detector=detector, overwrite=args.overwrite,
                   cluster=cluster, say=_say, warn=_warn)
    except ConfigError as exc:
        if exc.where.startswith("cluster.address"):  # the scheduler given as --scheduler
            raise ConfigError("--scheduler", exc.problem, exc.fix) from None
        raise


def scheduler_from_file(path: str) -> str:
    """The address in a Dask scheduler file."""
    import json

    from .errors import InputError

    try:
        address = json.loads(Path(path).read_text())["address"]
        if not isinstance(address, str):
            raise TypeError(f"address is {address!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--scheduler-file {path}", f"has no scheduler address ({exc})",
                         "give the file `dask scheduler --scheduler-file` wrote") from None
    return address


def pointings_path(text: str) -> Path:
    """The --pointings file: a new .ecsv file in a writable directory."""
    from .errors import ConfigError, OutputError, check_writable_directory

    path = Path(text)
    if path.suffix.lower() != ".ecsv":
        raise ConfigError("--pointings", f"{text!r} is not an .ecsv file name",
                          "give a file name ending in .ecsv")
    if path.exists():
        raise OutputError(f"--pointings {text}", "already exists",
                          "choose another file name, or remove it")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--pointings {text}", f"{folder} is not a directory",
                          "choose a file in a directory you can write to")
    check_writable_directory(folder, f"--pointings {text}")
    return path


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        if args.command == "reffiles":
            reffiles(args)
            return 0
        if args.command == "inject":
            inject(args)
            return 0
        if args.command == "mosaic":
            mosaic(args)
            return 0
        if args.command == "calibrate":
            from .calibrate.standalone import calibrate

            calibrate(args.config, overwrite=args.overwrite, say=_say)
            return 0
        from .config import load_config

        config = load_config(args.config)
        if args.command == "plan":
            from .errors import check_writable_directory
            from .pipeline import plan_checks, prepare
            from .plan import plan

            directory = config.output.directory
            check_writable_directory(directory, f"output.directory {directory}")  # as run
            table = pointings_path(args.pointings) if args.pointings else None
            survey = prepare(config, _say)
            plan_checks(config, survey, _say)
            print(plan(survey, measure=not args.no_measure, show_rows=args.rows))
            if table is not None:
                from .survey.tiling import write_pointings

                table.parent.mkdir(parents=True, exist_ok=True)
                write_pointings(config.survey.exposures, table)
                _say(f"wrote {table} ({len(config.survey.exposures)} pointings)")
            return 0
        if args.command == "run":
            from .pipeline import run

            if args.overwrite:
                config = dataclasses.replace(
                    config, output=dataclasses.replace(config.output, overwrite=True))
            if args.no_progress:
                config = dataclasses.replace(
                    config, cluster=dataclasses.replace(config.cluster, progress=False))
            address = args.scheduler or (scheduler_from_file(args.scheduler_file)
                                         if args.scheduler_file else None)
            if address:
                # TLS, if any, from Dask's configuration (distributed.comm.tls)
                config = dataclasses.replace(config, cluster=dataclasses.replace(
                    config.cluster, type="address", address=address, tls=None, slurm=None))
            run(config, _say)
            return 0
    except UserError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

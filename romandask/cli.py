"""The ``romandask`` command line.

    romandask plan CONFIG     what would run: exposures x SCAs, tasks, bytes, cost
    romandask run  CONFIG     run it

User errors (bad config, bad input files, unwritable outputs) print one line
to stderr and exit with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings

from . import __version__
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

    run = sub.add_parser("run", help="run the survey simulation")
    run.add_argument("config", help="survey YAML config")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the outputs of an earlier run in output.directory")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from .config import load_config

        config = load_config(args.config)
        if args.command == "plan":
            from .pipeline import prepare
            from .plan import plan

            survey = prepare(config, _say)
            print(plan(survey, measure=not args.no_measure, show_rows=args.rows))
            return 0
        if args.command == "run":
            from .pipeline import run

            if args.overwrite:
                config = dataclasses.replace(
                    config, output=dataclasses.replace(config.output, overwrite=True))
            if args.no_progress:
                config = dataclasses.replace(
                    config, cluster=dataclasses.replace(config.cluster, progress=False))
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

"""Every bad input to every command, as a table.

Each row is one command line (``run``, ``plan``, ``calibrate``, ``inject``,
``mosaic``, ``reffiles``) with one thing wrong.  Every row must give exit status 2,
exactly one line on stderr (no traceback) naming what is wrong, and write
nothing: the files of an earlier run and every input stay byte for byte as
they were, and no new file or directory appears.

A new command or option gets its rows here: a :class:`Row` is an id, a
function from the :class:`Workspace` (good and damaged inputs, an earlier
run's outputs) and the test's own directory to the argument list, and the
words the error line must contain.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from astropy.table import Table

from conftest import BASE, merge
from romandask import cli


# --------------------------------------------------------------------------
# the inputs: made once, small
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Workspace:
    root: Path
    l1: list[Path]            # two good L1 files (window 32)
    l2: list[Path]            # their L2 files
    catalog: Path             # an ECSV catalog with a source on each image
    earlier: Path             # the output directory of a finished run

    def cut(self, path: Path, nbytes: int | None = None, name: str | None = None) -> Path:
        """A copy of ``path`` cut to ``nbytes`` (default: half its size)."""
        data = path.read_bytes()
        out = self.root / "damaged" / (name or f"cut{nbytes or 'half'}_{path.name}")
        if not out.exists():
            out.parent.mkdir(exist_ok=True)
            out.write_bytes(data[: nbytes if nbytes is not None else len(data) // 2])
        return out


def corrupt(ws: Workspace, path: Path) -> Path:
    """A copy of ``path`` with the first 200 bytes of its first block's
    compressed data (``data``'s) zeroed: its sizes are whole, so only reading
    the array finds it out."""
    out = ws.root / "damaged" / f"corrupt_{path.name}"
    if not out.exists():
        data = bytearray(path.read_bytes())
        start = data.find(b"\xd3BLK") + 6 + 48
        data[start:start + 200] = bytes(200)
        out.parent.mkdir(exist_ok=True)
        out.write_bytes(bytes(data))
    return out


RUN = merge(BASE, {"survey": {"exposures": BASE["survey"]["exposures"][:1]},
                   "detector": {"window": 32, "tile": 32},
                   "output": {"products": ["l1", "l2"]}})


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    from romandask.config import parse_config
    from romandask.pipeline import run

    root = tmp_path_factory.mktemp("inputs")
    earlier = root / "earlier"
    written = run(parse_config(merge(RUN, {"output": {"directory": str(earlier)}}), root),
                  say=lambda s: None)
    ra, dec = [], []
    import roman_datamodels.datamodels as rdm

    for path in written["l2"]:
        with rdm.open(path) as model:
            r, d = model.meta.wcs(16.0, 16.0)
        ra.append(r)
        dec.append(d)
    n = len(ra)
    catalog = root / "stars.ecsv"
    Table({"ra": ra, "dec": dec, "type": ["PSF"] * n, "n": np.full(n, -1.0),
           "half_light_radius": np.zeros(n), "pa": np.zeros(n), "ba": np.ones(n),
           "F158": np.full(n, 1e-8)}).write(catalog)
    ws = Workspace(root, sorted(written["l1"]), sorted(written["l2"]), catalog, earlier)
    (root / "afile").write_text("a file, not a directory")
    return ws


def _snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _yaml(tmp: Path, data: dict, name: str = "config.yaml") -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


# --------------------------------------------------------------------------
# the rows
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    id: str
    argv: Callable[[Workspace, Path], list[str]]
    expect: tuple[str, ...]       # words the one line must contain


def run_config(overrides: dict, out: str | None = None):
    """A run config: the small run, changed by ``overrides``, into ``out``
    (default: a fresh directory of the test's own)."""
    def config(ws: Workspace, tmp: Path) -> str:
        directory = out(ws, tmp) if callable(out) else str(tmp / "out")
        return _yaml(tmp, merge(merge(RUN, {"output": {"directory": directory}}), overrides))
    return config


#: Bad run configs: each is a row for ``run`` and a row for ``plan``.
CONFIGS = {
    "memory_limit not a size": (run_config({"cluster": {"type": "local",
                                                        "memory_limit": "lots"}}),
                                ("cluster.memory_limit", "'lots'", "4GiB")),
    "slurm memory not a size": (run_config({"cluster": {"type": "slurm", "memory": "lots"}}),
                                ("cluster.memory", "'lots'", "120GB")),
    "unknown filter": (run_config({"survey": {"exposures": [
        {**BASE["survey"]["exposures"][0], "filter": "F185"}]}}),
        ("survey.exposures[0].filter", "F184")),
    "odd window": (run_config({"detector": {"window": 33}}), ("detector.window", "even")),
    "unknown key": (run_config({"detector": {"windw": 32}}), ("detector.windw", "window")),
    "output directory under a file": (
        run_config({}, out=lambda ws, tmp: str(ws.root / "afile" / "out")),
        ("output.directory", "not a writable directory")),
    "output directory is a file": (run_config({}, out=lambda ws, tmp: str(ws.root / "afile")),
                                   ("output.directory", "not a directory")),
    "task larger than the workers' memory": (
        run_config({"detector": {"window": 4088, "tile": 4088},
                    "cluster": {"type": "local", "memory_limit": "1GiB"}}),
        ("cluster", "needs", "detector.tile")),
    "catalog file missing": (run_config({"catalog": {"file": "nope.ecsv", "synthetic": None}}),
                             ("nope.ecsv",)),
    "mosaic without l2": (run_config({"output": {"products": ["l1", "mosaic"]}}),
                          ("output.products", "add l2")),
    "fits without l2": (run_config({"output": {"products": ["l1", "fits"]}}),
                        ("output.products", "fits", "add l2")),
    "fits layout unknown": (run_config({"output": {"products": ["l2", "fits"],
                                                   "fits_layout": "mef"}}),
                            ("output.fits_layout", "'mef'", "gen_cal_image")),
    "mosaic pixel scale 0": (run_config({"output": {"products": ["l1", "l2", "mosaic"]},
                                         "mosaic": {"pixel_scale": 0}}),
                             ("mosaic.pixel_scale",)),
    "mosaic kernel unknown": (run_config({"output": {"products": ["l1", "l2", "mosaic"]},
                                          "mosaic": {"kernel": "bilinear"}}),
                              ("mosaic.kernel",)),
    "model_store with a scalar model": (
        run_config({"detector": {"model": "scalar", "model_store": "models"}}),
        ("detector.model_store", "synthetic")),
    "model_store under a file": (run_config({"detector": {"model_store": "/dev/null/models"}}),
                                 ("detector.model_store", "not a writable directory")),
}

#: A region survey: the small run's one exposure replaced by a region and a pattern.
PATTERN = {"filters": ["F158"], "ma_table": 4, "dithers": 2, "start_time": "2027-06-01T00:00:00"}


def region_run(region: dict, pattern: dict | None = None, keep_exposures: bool = False):
    survey = {"region": region, "pattern": {**PATTERN, **(pattern or {})}}
    if not keep_exposures:
        survey["exposures"] = None
    return run_config({"survey": survey})


BOX = {"ra": [9.6, 9.8], "dec": [-44.1, -43.9]}
CONFIGS.update({
    "region polygon crosses itself": (
        region_run({"polygon": [[9.5, -44.2], [9.9, -43.8], [9.9, -44.2], [9.5, -43.8]]}),
        ("survey.region.polygon", "crosses itself", "no edge crossing")),
    "region polygon of 2 vertices": (region_run({"polygon": [[9.5, -44.0], [9.9, -44.0]]}),
                                     ("survey.region.polygon", "2 vertices", "at least 3")),
    "region dec below -90": (region_run({"ra": [9.6, 9.8], "dec": [-95.0, -43.9]}),
                             ("survey.region.dec", "-95", "-90 to 90")),
    "region ra range empty": (region_run({"ra": [9.8, 9.6], "dec": [-44.1, -43.9]}),
                              ("survey.region.ra", "empty range", "[-0.5, 0.5]")),
    "region HEALPix nside not a power of 2": (
        region_run({"healpix": {"nside": 3, "pixels": [1]}}),
        ("survey.region.healpix.nside", "power of 2")),
    "pattern unknown filter": (region_run(BOX, {"filters": ["F158", "F185"]}),
                               ("survey.pattern.filters[1]", "'F185'", "F184")),
    "pattern dithers 0": (region_run(BOX, {"dithers": 0}),
                          ("survey.pattern.dithers", "minimum 1", "gaps between SCAs")),
    "pattern dithers negative": (region_run(BOX, {"dithers": -2}),
                                 ("survey.pattern.dithers", "-2", "minimum 1")),
    "region and exposures both": (region_run(BOX, keep_exposures=True),
                                  ("survey.region", "survey.exposures", "remove one")),
    "pattern without a region": (run_config({"survey": {"pattern": PATTERN}}),
                                 ("survey.pattern", "only used with survey.region")),
    "region on a date the Sun forbids": (
        region_run(BOX, {"start_time": "2027-09-01T00:00:00"}),
        ("survey.pattern.start_time", "Sun is 136", "start on or after")),
    "pattern roll Roman cannot take": (region_run(BOX, {"pa": 0.0}),
                                       ("survey.pattern.pa", "nominal roll", "pa: auto")),
})

ROWS: list[Row] = []
for name, (config, expect) in CONFIGS.items():
    ROWS.append(Row(f"run: {name}", lambda ws, tmp, c=config: ["run", c(ws, tmp)], expect))
    ROWS.append(Row(f"plan: {name}",
                    lambda ws, tmp, c=config: ["plan", "--no-measure", c(ws, tmp)], expect))

ROWS += [
    Row("run: an earlier run in output.directory",
        lambda ws, tmp: ["run", run_config({}, out=lambda ws, tmp: str(ws.earlier))(ws, tmp)],
        ("output.directory", "already exists", "--overwrite")),
    Row("run: config file missing", lambda ws, tmp: ["run", str(tmp / "nope.yaml")],
        ("nope.yaml", "not found")),
    Row("plan: --pointings not an ECSV file",
        lambda ws, tmp: ["plan", "--no-measure", run_config({})(ws, tmp),
                         "--pointings", str(tmp / "p.csv")], ("--pointings", ".ecsv")),
    Row("plan: --pointings exists",
        lambda ws, tmp: ["plan", "--no-measure", run_config({})(ws, tmp),
                         "--pointings", str(ws.catalog)], ("--pointings", "already exists")),
    Row("plan: --pointings under a file",
        lambda ws, tmp: ["plan", "--no-measure", run_config({})(ws, tmp),
                         "--pointings", str(ws.root / "afile" / "p.ecsv")],
        ("--pointings", "afile is not a directory")),
]


def calibrate(**entries):
    """A calibrate command line; entry values may be functions of (ws, tmp)."""
    def argv(ws: Workspace, tmp: Path) -> list[str]:
        data = {k: (v(ws, tmp) if callable(v) else v) for k, v in entries.items()}
        data.setdefault("OUT", str(tmp / "l2"))
        return ["calibrate", _yaml(tmp, data, "calibrate.yaml")]
    return argv


ROWS += [
    Row("calibrate: an L1 file cut to half",
        calibrate(IN=lambda ws, tmp: str(ws.cut(ws.l1[0]))),
        ("cut", "_uncal.asdf", "is damaged", "cut short")),
    Row("calibrate: an L1 file cut inside its tree",
        calibrate(IN=lambda ws, tmp: str(ws.cut(ws.l1[0], 3000))),
        ("_uncal.asdf", "ASDF tree", "cut short")),
    Row("calibrate: an L1 file cut after its first block",
        calibrate(IN=lambda ws, tmp: str(ws.cut(ws.l1[0], _block_end(ws.l1[0], 0)))),
        ("_uncal.asdf", "blocks", "cut short")),
    Row("calibrate: a good file and a cut one",
        calibrate(IN=lambda ws, tmp: [str(ws.l1[0]), str(ws.cut(ws.l1[1]))]),
        ("is damaged", "wfi02_uncal.asdf")),
    Row("calibrate: an L1 file whose data do not decompress (found inside the task)",
        calibrate(IN=lambda ws, tmp: str(corrupt(ws, ws.l1[0]))),
        ("corrupt_", "is damaged: its data array cannot be read")),
    Row("calibrate: the same on a worker process",
        calibrate(IN=lambda ws, tmp: str(corrupt(ws, ws.l1[0])),
                  cluster={"type": "local", "n_workers": 1, "progress": False}),
        ("corrupt_", "is damaged: its data array cannot be read")),
    Row("calibrate: an L2 file", calibrate(IN=lambda ws, tmp: str(ws.l2[0])),
        ("_cal.asdf", "not L1")),
    Row("calibrate: one OUT file for two inputs",
        calibrate(IN=lambda ws, tmp: [str(p) for p in ws.l1],
                  OUT=lambda ws, tmp: str(tmp / "one.asdf")),
        ("OUT", "one file but IN names 2")),
    Row("calibrate: OUT exists", calibrate(IN=lambda ws, tmp: str(ws.l1[0]),
                                           OUT=lambda ws, tmp: str(ws.l2[0])),
        ("OUT", "already exists", "OVERWRITE")),
    Row("calibrate: IN matches nothing", calibrate(IN=lambda ws, tmp: str(tmp / "*.asdf")),
        ("IN", "matches no file")),
    Row("calibrate: unknown fitter", calibrate(IN=lambda ws, tmp: str(ws.l1[0]),
                                               FITTER="fast"),
        ("FITTER", "'fast'")),
    Row("calibrate: memory_limit not a size",
        calibrate(IN=lambda ws, tmp: str(ws.l1[0]),
                  cluster={"type": "local", "memory_limit": "lots"}),
        ("cluster.memory_limit", "'lots'")),
]

#: The arrays romandask reads from each kind of CALDIR file (under ``roman``; the
#: read file's amp33 output under ``roman.amp33``), at their full-frame shapes.
CALDIR_ARRAYS = {
    "dark": {"data": (9, 4096, 4096), "dark_slope": (4096, 4096)},
    "flat": {"data": (4096, 4096)},
    "gain": {"data": (4096, 4096)},
    "ipc4d": {"data": (3, 3, 4088, 4088)},
    "linearitylegendre": {"data": (4, 4096, 4096), "Smin": (4096, 4096),
                          "Smax": (4096, 4096), "Sref": (4096, 4096), "dq": (4096, 4096)},
    "mask": {"dq": (4096, 4096)},
    "read": {"data": (4096, 4096), "resetnoise": (4096, 4096), "amp33.med": (4096, 128),
             "amp33.std": (4096, 128)},
    "saturation": {"data": (4096, 4096)},
    "biascorr": {"data": (9, 4088, 4088)},
}


def caldir_file(ws: Workspace, kind: str, without: str | None = None) -> Path:
    """A CALDIR file of ``kind`` for SCA 1, every array at its shape but ``without``.

    The arrays are zeros of one byte each, lz4-compressed: a few MB on disk, and
    only their shapes are read before the error.
    """
    import asdf

    tag = "t" if without is None else f"no-{without}"
    path = ws.root / "caldir" / f"roman_wfi_{kind}_{tag}_SCA01.asdf"
    if not path.exists():
        roman: dict = {}
        if kind == "read":
            roman["anc"] = {"C_PINK": 3.0, "U_PINK": 1.0}
            roman["amp33"] = {"valid": True, "M_PINK": 1.0, "RU_PINK": 1.0}
        for name, shape in CALDIR_ARRAYS[kind].items():
            if name != without:
                *parent, leaf = name.split(".")
                (roman[parent[0]] if parent else roman)[leaf] = np.zeros(shape, np.uint8)
        path.parent.mkdir(exist_ok=True)
        asdf.AsdfFile({"roman": roman}).write_to(path, all_array_compression="lz4")
    return path


def caldir_without(kind: str, name: str):
    """CALDIR (a mapping of kind to file) whose ``kind`` file lacks array ``name``."""
    def caldir(ws: Workspace, tmp: Path) -> dict[str, str]:
        files = {k: str(caldir_file(ws, k)) for k in CALDIR_ARRAYS}
        files[kind] = str(caldir_file(ws, kind, name))
        return files
    return caldir


ROWS += [
    Row(f"calibrate: CALDIR {kind} file without {name}",
        calibrate(IN=lambda ws, tmp: str(ws.l1[0]), CALDIR=caldir_without(kind, name)),
        (f"roman_wfi_{kind}_no-{name}_SCA01.asdf", f"has no array roman.{name}",
         f"{shape[-2]}, {shape[-1]})"))
    for kind, arrays in CALDIR_ARRAYS.items() for name, shape in arrays.items()
]


def _l1(ws: Workspace, tmp: Path) -> str:
    return str(ws.l1[0])


#: gen_cal_image's keys with bad values, and the keys romandask refuses.
CALIBRATE_KEYS = [
    ("SKYORDER not an integer", {"SKYORDER": "two"}, ("SKYORDER", "must be an integer")),
    ("SKYORDER too high", {"SKYORDER": 12}, ("SKYORDER", "above the maximum 9")),
    ("SKYORDER negative", {"SKYORDER": -1}, ("SKYORDER", "below the minimum 0")),
    ("EXCLUDE_FIRST not a boolean", {"EXCLUDE_FIRST": "yes"},
     ("EXCLUDE_FIRST", "true or false")),
    ("SATURATION_BACKUP negative", {"SATURATION_BACKUP": -1},
     ("SATURATION_BACKUP", "below the minimum 0")),
    ("SATURATION_BACKUP not whole", {"SATURATION_BACKUP": 1.5},
     ("SATURATION_BACKUP", "must be an integer")),
    ("SLICEOUT not a boolean", {"SLICEOUT": 1}, ("SLICEOUT", "true or false")),
    ("REJECTION_THRESHOLD zero", {"REJECTION_THRESHOLD": 0},
     ("REJECTION_THRESHOLD", "below the minimum")),
    ("romancal_ramp_fit with another FITTER", {"romancal_ramp_fit": True, "FITTER": "fixed"},
     ("romancal_ramp_fit", "FITTER is fixed")),
    ("JUMP_KW snowballs", {"JUMP_KW": {"expand_large_events": True}},
     ("JUMP_KW.expand_large_events", "snowball")),
    ("JUMP_KW unknown key", {"JUMP_KW": {"min_jump_areaa": 5}},
     ("JUMP_KW.min_jump_areaa", "min_jump_area")),
    ("WFI18 transient correction", {"correct_wfi18_transient": True},
     ("correct_wfi18_transient", "WFI18")),
    ("gen_noise_image's NOISE", {"NOISE": {"LAYER": ["RP"]}}, ("NOISE", "gen_noise_image")),
    ("CALDIR dark_decay", {"CALDIR": {"dark_decay": "decay.asdf"}},
     ("CALDIR.dark_decay", "dark-decay")),
    ("UNITS unknown", {"UNITS": "MJy/sr"}, ("UNITS", "'MJy/sr'", "gen_cal_image")),
    ("FITSLAYOUT unknown", {"FITSLAYOUT": "mef"}, ("FITSLAYOUT", "'mef'", "romandask")),
]
ROWS += [Row(f"calibrate: {name}", calibrate(IN=_l1, **entries), expect)
         for name, entries, expect in CALIBRATE_KEYS]


def inject(*paths, flags=()):
    """An inject command line: input paths (functions of ws, tmp), then flags."""
    def argv(ws: Workspace, tmp: Path) -> list[str]:
        return ["inject", *[str(p(ws, tmp)) for p in paths], *flags]
    return argv


def good_l2(i):
    return lambda ws, tmp: ws.l2[i]


def catalog(ws, tmp):
    return ws.catalog


def out_dir(ws, tmp):
    return tmp / "injected"


def l2_in_gen_cal_image_units(ws: Workspace, tmp: Path) -> Path:
    """An L2 file calibrated with UNITS: gen_cal_image (made once)."""
    import romandask

    path = ws.root / "units" / "gci_cal.asdf"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        romandask.calibrate({"IN": str(ws.l1[0]), "OUT": str(path), "UNITS": "gen_cal_image"})
    return path


ROWS += [
    Row("inject: an L2 file cut to half beside a good one",
        inject(good_l2(0), lambda ws, tmp: ws.cut(ws.l2[1]), catalog, out_dir),
        ("wfi02_cal.asdf", "is damaged", "cut short")),
    Row("inject: an L2 file whose data do not decompress, on a worker process",
        inject(lambda ws, tmp: corrupt(ws, ws.l2[0]), catalog, lambda ws, tmp: tmp / "o.asdf",
               flags=("--workers", "1", "--no-progress")),
        ("corrupt_", "is damaged", "cannot be read")),
    Row("inject: two inputs, OUT one .asdf file",
        inject(good_l2(0), good_l2(1), catalog, lambda ws, tmp: tmp / "o_many.asdf"),
        ("o_many.asdf", "one file but the inputs name 2", "directory")),
    Row("inject: one input, OUT not .asdf",
        inject(good_l2(0), catalog, lambda ws, tmp: tmp / "o.fits"),
        ("o.fits", ".asdf")),
    Row("inject: an L1 file", inject(lambda ws, tmp: ws.l1[0], catalog,
                                     lambda ws, tmp: tmp / "o.asdf"),
        ("_uncal.asdf", "not L2")),
    Row("inject: an L2 file in gen_cal_image's units",
        inject(l2_in_gen_cal_image_units, catalog, lambda ws, tmp: tmp / "o.asdf"),
        ("gci_cal.asdf", "UNITS: gen_cal_image", "UNITS: romandask")),
    Row("inject: output exists", inject(good_l2(0), catalog, good_l2(1)),
        ("wfi02_cal.asdf", "already exists", "--overwrite")),
    Row("inject: output is the input", inject(good_l2(0), catalog, good_l2(0), flags=(
        "--overwrite",)), ("wfi01_cal.asdf", "is the input file")),
    Row("inject: catalog missing", inject(good_l2(0), lambda ws, tmp: tmp / "nope.ecsv",
                                          lambda ws, tmp: tmp / "o.asdf"), ("nope.ecsv",)),
    Row("inject: negative seed", inject(good_l2(0), catalog, out_dir, flags=("--seed", "-1")),
        ("--seed", "-1")),
    Row("inject: stamp radius too small",
        inject(good_l2(0), catalog, out_dir, flags=("--stamp-radius", "2")),
        ("--stamp-radius", "4 to 256")),
    Row("inject: scheduler not an address",
        inject(good_l2(0), catalog, out_dir, flags=("--scheduler", "10.0.0.5:8786")),
        ("--scheduler", "tcp://")),
    Row("inject: zero workers", inject(good_l2(0), catalog, out_dir, flags=("--workers", "0")),
        ("--workers",)),
    Row("inject: gain with caldir",
        inject(good_l2(0), catalog, out_dir,
               flags=("--gain", "2", "--caldir", ".")), ("--caldir", "--gain")),
    Row("inject: negative gain", inject(good_l2(0), catalog, out_dir, flags=("--gain", "-2")),
        ("--gain", "positive")),
    Row("inject: input missing", inject(lambda ws, tmp: tmp / "nope_cal.asdf", catalog,
                                        lambda ws, tmp: tmp / "o.asdf"),
        ("nope_cal.asdf", "does not exist")),
]

ROWS += [
    Row("reffiles: negative seed",
        lambda ws, tmp: ["reffiles", str(tmp / "caldir"), "--seed", "-1"], ("--seed", "-1")),
    Row("reffiles: not an SCA", lambda ws, tmp: ["reffiles", str(tmp / "caldir"), "--sca", "19"],
        ("--sca", "1 to 18")),
    Row("reffiles: unreadable SCA list",
        lambda ws, tmp: ["reffiles", str(tmp / "caldir"), "--sca", "1-3"], ("--sca", "1..18")),
    Row("reffiles: unknown MA table",
        lambda ws, tmp: ["reffiles", str(tmp / "caldir"), "--ma-table", "99"],
        ("--ma-table", "99")),
    Row("reffiles: OUTDIR under a file",
        lambda ws, tmp: ["reffiles", str(ws.root / "afile" / "caldir")],
        ("afile", "not a writable directory")),
]


def mosaic(*parts, flags=()):
    """``romandask mosaic`` of ``parts`` (paths, or functions of (ws, tmp))."""
    def argv(ws, tmp):
        return ["mosaic", *[str(p(ws, tmp) if callable(p) else p) for p in parts],
                "--workers", "1", "--no-progress", *flags]
    return argv


def mosaic_out(ws, tmp):
    return tmp / "mosaic"


ROWS += [
    Row("mosaic: an L2 file in gen_cal_image's units",
        mosaic(l2_in_gen_cal_image_units, mosaic_out),
        ("gci_cal.asdf", "UNITS: gen_cal_image", "UNITS: romandask")),
    Row("mosaic: no file matches",
        mosaic(lambda ws, tmp: tmp / "l2" / "*_cal.asdf", mosaic_out), ("matches no file",)),
    Row("mosaic: pixel scale 0",
        mosaic(good_l2(0), mosaic_out, flags=("--pixel-scale", "0")), ("--pixel-scale",)),
    Row("mosaic: negative pixel scale",
        mosaic(good_l2(0), mosaic_out, flags=("--pixel-scale", "-0.1")), ("--pixel-scale",)),
    Row("mosaic: OUTDIR under a file",
        mosaic(good_l2(0), lambda ws, tmp: ws.root / "afile" / "mosaic"),
        ("afile", "not a writable directory")),
    Row("mosaic: an L1 file", mosaic(lambda ws, tmp: ws.l1[0], mosaic_out),
        ("_uncal.asdf",)),
    Row("mosaic: an L2 file cut to half beside a good one",
        mosaic(good_l2(0), lambda ws, tmp: ws.cut(ws.l2[1]), mosaic_out),
        ("wfi02_cal.asdf", "is damaged", "cut short")),
    Row("mosaic: input missing", mosaic(lambda ws, tmp: tmp / "nope_cal.asdf", mosaic_out),
        ("nope_cal.asdf",)),
]


def _block_end(path: Path, n: int) -> int:
    """The byte where block ``n`` of an ASDF file ends (its header read as the
    ASDF standard lays it out)."""
    import struct

    data = path.read_bytes()
    pos = data.find(b"\xd3BLK")
    for _ in range(n + 1):
        header_size = struct.unpack(">H", data[pos + 4:pos + 6])[0]
        allocated = struct.unpack(">Q", data[pos + 14:pos + 22])[0]
        pos += 6 + header_size + allocated
    return pos


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(row, ws, tmp_path, capsys):
    argv = row.argv(ws, tmp_path)
    before = _snapshot(ws.root, tmp_path)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(("config error: ", "input error: ", "output error: ")), lines[0]
    for word in row.expect:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert _snapshot(ws.root, tmp_path) == before


def test_every_command_has_rows():
    commands = {r.id.split(":")[0] for r in ROWS}
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert commands == set(sub.choices)


def test_a_tile_larger_than_the_window_is_clamped_and_said(ws, tmp_path, capsys):
    config = run_config({"detector": {"window": 32, "tile": 64}})(ws, tmp_path)
    assert cli.main(["plan", "--no-measure", config]) == 0
    out = capsys.readouterr().out
    assert "note: detector.tile 64 is larger than detector.window 32" in out
    assert "tiles of 32" in out


def test_plan_says_what_run_will_do_with_an_earlier_run(ws, tmp_path, capsys):
    config = run_config({}, out=lambda ws, tmp: str(ws.earlier))(ws, tmp_path)
    before = _snapshot(ws.earlier)
    assert cli.main(["plan", "--no-measure", config]) == 0
    out = capsys.readouterr().out
    assert "`romandask run` refuses this output directory" in out and "--overwrite" in out
    assert _snapshot(ws.earlier) == before


def test_inject_names_the_scheduler_flag_it_was_given(ws, tmp_path, capsys):
    import dask

    before = _snapshot(ws.root, tmp_path)
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = cli.main(["inject", str(ws.l2[0]), str(ws.catalog), str(tmp_path / "o.asdf"),
                         "--no-progress", "--scheduler", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("config error: --scheduler: cannot reach the scheduler")
    assert "cluster.address" not in err
    assert _snapshot(ws.root, tmp_path) == before

"""Tests for romandask.config: validation of the YAML config, and the CLI's
handling of user errors (one line on stderr, exit status 2, nothing written)."""

from __future__ import annotations

import copy
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.table import Table

from conftest import BASE as SMALL_CONFIG, merge
from romandask import cli
from romandask.config import DEFAULT_FITTER, N_PIX, load_config
from romandask.errors import ConfigError
from romandask.instrument.matables import FRAME_TIME

#: Where the Sun is on 2027-06-01 (astropy get_sun): Roman cannot point there.
SUN_RA, SUN_DEC = 68.28, 21.94

#: The small valid config shared by the tests (conftest.py), tiled in one tile here.
BASE = merge(SMALL_CONFIG, {"seed": 2027, "scene": {"margin": 64},
                            "detector": {"window": 64, "tile": 64}})


def base_config() -> dict:
    return copy.deepcopy(BASE)


def write_config(tmp_path: Path, mutate=None, name: str = "config.yaml") -> Path:
    """Write the small valid config to ``tmp_path``, after ``mutate(cfg, tmp_path)``."""
    cfg = base_config()
    if mutate is not None:
        mutate(cfg, tmp_path)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *expected: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.strip()
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    return line


# --------------------------------------------------------------------------
# mutations: each makes the config invalid in one way
# --------------------------------------------------------------------------

def setter(*keys, value):
    """A mutation that sets cfg[k0][k1]... = value."""
    def mutate(cfg, tmp_path):
        node = cfg
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return mutate


def deleter(*keys):
    def mutate(cfg, tmp_path):
        node = cfg
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return mutate


def renamer(*keys, to):
    """Rename the key at ``keys`` to ``to``, keeping its value (a typo)."""
    def mutate(cfg, tmp_path):
        node = cfg
        for k in keys[:-1]:
            node = node[k]
        node[to] = node.pop(keys[-1])
    return mutate


def exposure(i, **fields):
    def mutate(cfg, tmp_path):
        cfg["survey"]["exposures"][i].update(fields)
    return mutate


def both(*mutations):
    def mutate(cfg, tmp_path):
        for m in mutations:
            m(cfg, tmp_path)
    return mutate


def pointing_rows(cfg) -> list[dict]:
    return [dict(e) for e in cfg["survey"]["exposures"]]


def write_pointings(tmp_path: Path, rows: list[dict], name="pointings.ecsv",
                    drop=()) -> Path:
    table = Table(rows=[{k: v for k, v in r.items() if k not in drop} for r in rows])
    path = tmp_path / name
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path


def use_pointings(drop=(), **row0):
    def mutate(cfg, tmp_path):
        rows = pointing_rows(cfg)
        rows[0].update(row0)
        write_pointings(tmp_path, rows, drop=drop)
        del cfg["survey"]["exposures"]
        cfg["survey"]["pointings"] = "pointings.ecsv"
    return mutate


def catalog_file(name):
    def mutate(cfg, tmp_path):
        cfg["catalog"] = {"file": name}
    return mutate


def custom_table(pattern, name="x"):
    def mutate(cfg, tmp_path):
        cfg["survey"]["ma_tables"] = {name: {"read_pattern": pattern}}
        cfg["survey"]["exposures"][0]["ma_table"] = name
    return mutate


BAD_CONFIGS = {
    # unknown keys
    "unknown top-level key": (setter("sede", value=1), ["sede", "unknown key", "`seed`"]),
    "misspelled required section": (renamer("survey", to="survy"),
                                    ["survy", "unknown key", "`survey`"]),
    "unknown nested key": (renamer("detector", "window", to="windw"),
                           ["detector.windw", "unknown key", "did you mean `window`"]),
    "misspelled required exposure key": (
        lambda cfg, p: cfg["survey"]["exposures"][1].update(
            fliter=cfg["survey"]["exposures"][1].pop("filter")),
        ["survey.exposures[1].fliter", "did you mean `filter`"]),
    "unknown psf key": (setter("scene", "psf", value={"gird": 3}),
                        ["scene.psf.gird", "did you mean `grid`"]),
    "unknown cluster key": (setter("cluster", "n_worker", value=2),
                            ["cluster.n_worker", "did you mean `n_workers`"]),
    # wrong types
    "string for a number": (exposure(0, ra="ten"), ["survey.exposures[0].ra", "number"]),
    "string for an int": (setter("detector", "window", value="64"),
                          ["detector.window", "integer"]),
    "bool for an int": (setter("detector", "window", value=True),
                        ["detector.window", "integer"]),
    "float for an int": (setter("seed", value=1.5), ["seed", "integer"]),
    "list for a mapping": (setter("scene", value=[1, 2]), ["scene", "mapping"]),
    "string for a mapping": (setter("output", value="out"), ["output", "mapping"]),
    "number for a bool": (setter("scene", "sky", value=1), ["scene.sky", "true or false"]),
    "mapping for a list": (setter("survey", "exposures", value={"ra": 1}),
                           ["survey.exposures", "list"]),
    "exposure not a mapping": (lambda cfg, p: cfg["survey"]["exposures"].__setitem__(1, 5),
                               ["survey.exposures[1]", "mapping"]),
    "psf grid not an int": (setter("scene", "psf", value={"grid": "three"}),
                            ["scene.psf.grid", "integer"]),
    "psf grid too large": (setter("scene", "psf", value={"grid": 99}),
                           ["scene.psf.grid", "maximum"]),
    "infinite number": (exposure(0, pa=float("inf")), ["survey.exposures[0].pa", "finite"]),
    # values
    "unknown filter": (exposure(1, filter="F159"),
                       ["survey.exposures[1].filter", "'F159'", "did you mean 'F158'"]),
    "lower-case filter": (exposure(0, filter="f158"),
                          ["survey.exposures[0].filter", "did you mean 'F158'"]),
    "ra above 360": (exposure(0, ra=361.0), ["survey.exposures[0].ra", "361", "360"]),
    "ra negative": (exposure(1, ra=-1.0), ["survey.exposures[1].ra", "minimum"]),
    "dec below -90": (exposure(0, dec=-91.0), ["survey.exposures[0].dec", "-91", "-90"]),
    "pa out of range": (exposure(0, pa=400.0), ["survey.exposures[0].pa", "maximum"]),
    "missing ra": (lambda cfg, p: cfg["survey"]["exposures"][0].pop("ra"),
                   ["survey.exposures[0].ra", "required"]),
    "missing start_time": (lambda cfg, p: cfg["survey"]["exposures"][1].pop("start_time"),
                           ["survey.exposures[1].start_time", "required", "2027"]),
    "missing ma_table": (lambda cfg, p: cfg["survey"]["exposures"][0].pop("ma_table"),
                         ["survey.exposures[0].ma_table", "required"]),
    "sun forbids pointing": (exposure(1, ra=SUN_RA, dec=SUN_DEC),
                             ["survey.exposures[1]", "Sun", "2027-06-01"]),
    "bad start_time string": (exposure(0, start_time="yesterday"),
                              ["survey.exposures[0].start_time", "'yesterday'", "ISO 8601"]),
    "start_time not a time": (exposure(0, start_time=[2027]),
                              ["survey.exposures[0].start_time", "ISO 8601"]),
    "negative id": (exposure(0, id=-1), ["survey.exposures[0].id", "minimum"]),
    "duplicate exposure ids": (both(exposure(0, id=7), exposure(1, id=7)),
                               ["survey.exposures[1].id", "7", "more than once"]),
    "duplicate id with default": (exposure(1, id=0),
                                  ["survey.exposures[1].id", "0", "more than once"]),
    "empty exposures": (setter("survey", "exposures", value=[]),
                        ["survey.exposures", "empty"]),
    "both exposures and pointings": (setter("survey", "pointings", value="p.ecsv"),
                                     ["survey", "exactly one of", "pointings"]),
    "neither exposures nor pointings": (deleter("survey", "exposures"),
                                        ["survey", "exactly one of", "exposures"]),
    "missing survey": (deleter("survey"), ["survey", "mapping"]),
    # MA tables
    "unknown MA table number": (exposure(0, ma_table=99),
                                ["survey.exposures[0].ma_table", "unknown MA table 99",
                                 "survey.ma_tables"]),
    "unknown MA table name": (exposure(1, ma_table="fast"),
                              ["survey.exposures[1].ma_table", "'fast'"]),
    "boolean MA table": (exposure(1, ma_table=True),
                         ["survey.exposures[1].ma_table", "True"]),
    "overlapping reads": (custom_table([[1, 2], [2, 3]]),
                          ["survey.ma_tables.x.read_pattern", "read 2"]),
    "empty resultant": (custom_table([[1], [], [3]]),
                        ["survey.ma_tables.x.read_pattern", "resultant 1 is empty"]),
    "read beyond the last supported": (custom_table([[1], [2000]]),
                                       ["survey.ma_tables.x.read_pattern", "up to 1022"]),
    "non-integer read": (custom_table([[1], [2.5]]),
                         ["survey.ma_tables.x.read_pattern", "2.5"]),
    "read pattern not a list": (custom_table("1,2,3"),
                                ["survey.ma_tables.x.read_pattern", "list"]),
    "empty read pattern": (custom_table([]), ["survey.ma_tables.x.read_pattern"]),
    "MA table missing read_pattern": (
        setter("survey", "ma_tables", value={"x": {"frame_time": 3.0}}),
        ["survey.ma_tables.x.read_pattern", "required"]),
    "MA table unknown key": (
        setter("survey", "ma_tables", value={"x": {"read_pattern": [[1]], "frametime": 3.0}}),
        ["survey.ma_tables.x.frametime", "did you mean `frame_time`"]),
    # SCAs
    "SCA out of range": (setter("survey", "scas", value=[0, 1]), ["survey.scas[0]", "1 to 18"]),
    "SCA not an int": (setter("survey", "scas", value=[1, "two"]), ["survey.scas[1]"]),
    "duplicate SCAs": (setter("survey", "scas", value=[1, 1]), ["survey.scas", "distinct"]),
    "scas not a list": (setter("survey", "scas", value=5), ["survey.scas", "list"]),
    # catalog
    "missing catalog file": (catalog_file("nope.ecsv"),
                             ["catalog.file", "file not found", "nope.ecsv"]),
    "catalog file and synthetic": (setter("catalog", "file", value="cat.ecsv"),
                                   ["catalog", "exactly one of"]),
    "neither catalog file nor synthetic": (setter("catalog", value={}),
                                           ["catalog", "exactly one of"]),
    "bad magnitude range": (setter("catalog", "synthetic", value={"star_mag_range": [24, 16]}),
                            ["catalog.synthetic.star_mag_range", "bright < faint"]),
    "unknown synthetic key": (setter("catalog", "synthetic", value={"density": 2.0}),
                              ["catalog.synthetic.density", "did you mean `density_scale`"]),
    # pointings
    "missing pointings file": (both(deleter("survey", "exposures"),
                                    setter("survey", "pointings", value="missing.ecsv")),
                               ["survey.pointings", "file not found", "missing.ecsv"]),
    "pointing table lacks a column": (use_pointings(drop=("filter",)),
                                      ["survey.pointings", "filter", "lacks column"]),
    "pointing with unknown filter": (use_pointings(filter="F999"),
                                     ["survey.pointings[row 0].filter", "F999"]),
    "pointing with dec below -90": (use_pointings(dec=-95.0),
                                    ["survey.pointings[row 0].dec", "-95"]),
    "pointing table unsupported suffix": (
        both(deleter("survey", "exposures"), setter("survey", "pointings", value="p.csv"),
             lambda cfg, p: (p / "p.csv").write_text("ra,dec\n1,2\n")),
        ["survey.pointings", "p.csv", ".ecsv"]),
    "pointing table unreadable": (
        both(deleter("survey", "exposures"), setter("survey", "pointings", value="p.ecsv"),
             lambda cfg, p: (p / "p.ecsv").write_text("# %ECSV 1.0\n# ---\n# garbage: [\n")),
        ["survey.pointings", "cannot read p.ecsv"]),
    # detector, scene
    "window too large": (setter("detector", "window", value=N_PIX + 1),
                         ["detector.window", str(N_PIX + 1), "4088"]),
    "window too small": (setter("detector", "window", value=8), ["detector.window", "minimum"]),
    "margin too large": (setter("scene", "margin", value=10_000), ["scene.margin", "maximum"]),
    "negative dark current": (
        setter("detector", value={"window": 64, "model": "scalar",
                                  "scalar": {"dark_current": -1.0}}),
        ["detector.scalar.dark_current", "minimum"]),
    "odd window": (setter("detector", "window", value=65), ["detector.window", "odd"]),
    "unknown detector model": (setter("detector", "model", value="synthetc"),
                               ["detector.model", "did you mean 'synthetic'"]),
    "caldir missing": (setter("detector", "model", value="caldir"),
                       ["detector.caldir", "is required"]),
    "caldir not a directory": (
        setter("detector", value={"window": 64, "model": "caldir", "caldir": "nowhere"}),
        ["detector.caldir", "nowhere", "not a directory"]),
    "caldir without its model": (setter("detector", "caldir", value="."),
                                 ["detector.caldir", "only used with model caldir"]),
    "scalar values without their model": (setter("detector", "scalar", value={"gain": 2.0}),
                                          ["detector.scalar", "only used with model scalar"]),
    "unknown scalar value": (
        setter("detector", value={"window": 64, "model": "scalar", "scalar": {"gian": 2}}),
        ["detector.scalar.gian", "gain"]),
    "negative cosmic-ray flux": (setter("detector", "cosmic_ray_flux", value=-1),
                                 ["detector.cosmic_ray_flux", "minimum"]),
    "persistence not a boolean": (setter("detector", "persistence", value="maybe"),
                                  ["detector.persistence"]),
    "persistence with overlapping exposures": (
        both(setter("detector", "persistence", value=True),
             setter("survey", "exposures", 1, "start_time", value="2027-06-01T00:01:00")),
        ["detector.persistence", "exposure 1", "before exposure 0 ends"]),
    # output, cluster
    "unknown product": (setter("output", "products", value=["counts", "images"]),
                        ["output.products[1]", "'images'"]),
    "unknown product first": (setter("output", "products", value=["cube"]),
                              ["output.products[0]", "'cube'"]),
    "missing output directory": (setter("output", value={}),
                                 ["output.directory", "required"]),
    "unknown cluster type": (setter("cluster", "type", value="thread"),
                             ["cluster.type", "'thread'", "did you mean 'threads'"]),
    "cluster address without address": (setter("cluster", "type", value="address"),
                                        ["cluster.address", "required"]),
    "cluster address not a URL": (both(setter("cluster", "type", value="address"),
                                       setter("cluster", "address", value="10.0.0.5:8786")),
                                  ["cluster.address", "tcp://"]),
    "zero workers": (setter("cluster", "n_workers", value=0), ["cluster.n_workers", "minimum"]),
}


@pytest.mark.parametrize("mutate, expected", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_one_line_exit_2_nothing_written(tmp_path, capsys, mutate, expected):
    cfg = write_config(tmp_path, mutate)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli(capsys, "run", str(cfg))
    line = assert_one_line_error(code, err, *expected)
    assert line.startswith("config error: ")
    assert not out_dir(tmp_path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("mutate, expected", list(BAD_CONFIGS.values())[:3],
                         ids=list(BAD_CONFIGS.keys())[:3])
def test_plan_reports_bad_config_the_same_way(tmp_path, capsys, mutate, expected):
    cfg = write_config(tmp_path, mutate)
    code, out, err = run_cli(capsys, "plan", "--no-measure", str(cfg))
    assert_one_line_error(code, err, *expected)
    assert not out_dir(tmp_path).exists()


@pytest.mark.parametrize("mutate", [setter("catalog", "density", value=1), exposure(0, ra=400.0)])
def test_load_config_raises_config_error(tmp_path, mutate):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, mutate))
    assert info.value.where.startswith(("catalog.density", "survey.exposures[0].ra"))
    assert info.value.fix


# --------------------------------------------------------------------------
# the YAML file itself
# --------------------------------------------------------------------------

def test_invalid_yaml_names_the_line(tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("seed: 1\nsurvey:\n  exposures: [1, 2\ncatalog: {}\n")
    code, out, err = run_cli(capsys, "run", str(cfg))
    line = assert_one_line_error(code, err, str(cfg), "YAML", "line ")
    assert "fix the YAML syntax" in line
    assert not out_dir(tmp_path).exists()


def test_invalid_yaml_tab_indent(tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("seed: 1\nsurvey:\n\texposures: []\n")
    code, out, err = run_cli(capsys, "run", str(cfg))
    assert_one_line_error(code, err, "line 3")


@pytest.mark.parametrize("text", ["2027-13-01", "2027-02-30T00:00:00"])
def test_impossible_unquoted_date(tmp_path, capsys, text):
    # PyYAML turns these into datetimes and raises ValueError; must not be a traceback.
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("'2027-06-01T00:03:00'", text))
    assert text in path.read_text()
    code, out, err = run_cli(capsys, "run", str(path))
    assert_one_line_error(code, err, "survey.exposures[1].start_time", text)


@pytest.mark.parametrize("text", ["seed: !!int abc\n", "seed: !!float abc\n",
                                  "seed: !!timestamp abc\n"])
def test_bad_explicit_yaml_tag(tmp_path, capsys, text):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    code, out, err = run_cli(capsys, "run", str(cfg))
    assert_one_line_error(code, err, "abc")


def test_empty_config_file(tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("")
    code, out, err = run_cli(capsys, "run", str(cfg))
    assert_one_line_error(code, err, "config", "mapping")


def test_config_not_a_mapping(tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("- seed\n- survey\n")
    code, out, err = run_cli(capsys, "run", str(cfg))
    assert_one_line_error(code, err, "config", "mapping, got a list")


def test_config_file_not_found(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    code, out, err = run_cli(capsys, "run", str(missing))
    assert_one_line_error(code, err, str(missing), "not found")
    assert list(tmp_path.iterdir()) == []


def test_config_path_is_a_directory(tmp_path, capsys):
    code, out, err = run_cli(capsys, "plan", str(tmp_path))
    assert_one_line_error(code, err, str(tmp_path), "not found")


# --------------------------------------------------------------------------
# a catalog file with bad contents (checked when the run reads it)
# --------------------------------------------------------------------------

def small_catalog(n=3) -> Table:
    return Table({
        "ra": np.full(n, 9.70), "dec": np.full(n, -44.0), "type": ["PSF"] * n,
        "n": np.full(n, -1.0), "half_light_radius": np.zeros(n), "pa": np.zeros(n),
        "ba": np.ones(n), "F158": np.full(n, 1e-8),
    })


@pytest.mark.parametrize("column", ["dec", "F158"])
def test_catalog_missing_column_named(tmp_path, capsys, column):
    from romandask.scene.catalog import write_catalog

    table = small_catalog()
    del table[column]
    write_catalog(table, tmp_path / "cat.ecsv")
    cfg = write_config(tmp_path, catalog_file("cat.ecsv"))
    code, out, err = run_cli(capsys, "run", "--no-progress", str(cfg))
    assert_one_line_error(code, err, "cat.ecsv", column, "column")
    assert not out_dir(tmp_path).exists()


def test_catalog_unsupported_suffix(tmp_path, capsys):
    (tmp_path / "cat.csv").write_text("ra,dec\n1,2\n")
    cfg = write_config(tmp_path, catalog_file("cat.csv"))
    code, out, err = run_cli(capsys, "run", str(cfg))
    assert_one_line_error(code, err, "catalog.file", "cat.csv", ".ecsv")
    assert not out_dir(tmp_path).exists()


# --------------------------------------------------------------------------
# output problems
# --------------------------------------------------------------------------

def test_existing_run_is_not_overwritten(tmp_path, capsys):
    cfg = write_config(tmp_path)
    store_dir = out_dir(tmp_path) / "romandask.zarr"
    store_dir.mkdir(parents=True)
    (store_dir / "keep").write_text("old run")
    code, out, err = run_cli(capsys, "run", str(cfg))
    line = assert_one_line_error(code, err, "output.directory", "overwrite",
                                 "romandask.zarr")
    assert line.startswith("output error: ")
    assert sorted(p.name for p in out_dir(tmp_path).iterdir()) == ["romandask.zarr"]
    assert [p.name for p in store_dir.iterdir()] == ["keep"]
    assert (store_dir / "keep").read_text() == "old run"


def test_existing_footprint_is_not_overwritten(tmp_path, capsys):
    cfg = write_config(tmp_path)
    out_dir(tmp_path).mkdir()
    (out_dir(tmp_path) / "footprint.png").write_bytes(b"png")
    code, out, err = run_cli(capsys, "run", str(cfg))
    assert_one_line_error(code, err, "output.directory", "overwrite", "footprint.png")
    assert (out_dir(tmp_path) / "footprint.png").read_bytes() == b"png"


def test_unwritable_output_directory(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a directory")
    cfg = write_config(tmp_path, setter("output", "directory", value="afile/out"))
    code, out, err = run_cli(capsys, "run", str(cfg))
    line = assert_one_line_error(code, err, "output.directory", "afile")
    assert line.startswith("output error: ")
    assert (tmp_path / "afile").read_text() == "not a directory"


def test_output_directory_is_a_file(tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    cfg = write_config(tmp_path)
    code, out, err = run_cli(capsys, "run", str(cfg))
    assert_one_line_error(code, err, "output.directory", "not a directory")
    assert (tmp_path / "out").read_text() == "a file"


# --------------------------------------------------------------------------
# the real command, in a subprocess
# --------------------------------------------------------------------------

def test_subprocess_bad_config(tmp_path):
    cfg = write_config(tmp_path, exposure(1, filter="F159"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "romandask.cli", "run", str(cfg)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "survey.exposures[1].filter" in lines[0]
    assert "did you mean 'F158'" in lines[0]
    assert not out_dir(tmp_path).exists()


# --------------------------------------------------------------------------
# valid configs
# --------------------------------------------------------------------------

def test_valid_config_loads_typed_objects(tmp_path):
    path = write_config(tmp_path)
    config = load_config(path)
    assert config.seed == 2027
    assert config.source == path.resolve()
    exps = config.survey.exposures
    assert [e.id for e in exps] == [0, 1]
    assert [e.filter for e in exps] == ["F158", "F158"]
    assert exps[0].ra == pytest.approx(9.70) and exps[1].dec == pytest.approx(-43.9966)
    assert exps[1].start_time == dt.datetime(2027, 6, 1, 0, 3, 0)
    ma = exps[0].ma_table
    assert ma.number == 4
    assert ma.nresultants == 9
    assert exps[0].exposure_time == pytest.approx(44 * 3.16247)
    assert config.survey.scas == (1, 2)
    assert config.detector.window == 64 and config.detector.tile == 64
    assert config.catalog.file is None
    assert config.catalog.synthetic.star_mag_range == (16.0, 24.0)
    assert config.scene.margin == 64 and config.scene.psf.grid == 3
    assert config.output.directory == out_dir(tmp_path)
    assert config.output.overwrite is False
    assert config.cluster.type == "threads" and config.cluster.n_workers == 1
    assert not out_dir(tmp_path).exists()  # validation writes nothing


def test_quickstart_config_is_valid():
    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "configs" / "quickstart.yaml")
    assert len(config.survey.exposures) == 2
    assert config.output.directory == root / "out" / "quickstart"


def test_exponent_numbers_and_dates_are_read(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 as a string; the config reads it as a number.
    path = write_config(tmp_path, setter("detector", "cosmic_ray_flux", value="__DC__"))
    text = path.read_text()
    assert text.count("__DC__") == 1 and text.count("'2027-06-01T00:00:00'") == 1
    text = text.replace("__DC__", "1e-3").replace("'2027-06-01T00:00:00'",
                                                  "2027-06-01T02:00:00+02:00")
    path.write_text(text)
    config = load_config(path)
    assert config.detector.cosmic_ray_flux == pytest.approx(1e-3)
    assert config.survey.exposures[0].start_time == dt.datetime(2027, 6, 1)


def test_pointing_table_equals_inline_exposures(tmp_path):
    inline = load_config(write_config(tmp_path, name="inline.yaml"))
    write_pointings(tmp_path, pointing_rows(base_config()))
    path = write_config(tmp_path, use_pointings(), name="table.yaml")
    table = load_config(path)
    assert table.survey.exposures == inline.survey.exposures


def test_pointing_table_with_ids_is_sorted(tmp_path):
    rows = pointing_rows(base_config())
    rows[0]["id"], rows[1]["id"] = 5, 2
    write_pointings(tmp_path, rows)
    config = load_config(write_config(tmp_path, both(
        deleter("survey", "exposures"), setter("survey", "pointings", value="pointings.ecsv"))))
    assert [e.id for e in config.survey.exposures] == [2, 5]
    assert config.survey.exposures[0].ra == pytest.approx(9.7046)


def test_custom_ma_table_is_used(tmp_path):
    def mutate(cfg, tmp_path):
        cfg["survey"]["ma_tables"] = {"short": {"read_pattern": [[1], [2, 3], [5, 6, 7]],
                                                "frame_time": 2.0}}
        cfg["survey"]["exposures"][1]["ma_table"] = "short"

    config = load_config(write_config(tmp_path, mutate))
    ma = config.survey.exposures[1].ma_table
    assert ma.name == "short" and ma.number is None
    assert ma.read_pattern == ((1,), (2, 3), (5, 6, 7))
    assert ma.frame_time == 2.0
    assert config.survey.exposures[1].exposure_time == pytest.approx(14.0)
    assert config.survey.exposures[0].ma_table.number == 4


def test_custom_ma_table_default_frame_time(tmp_path):
    config = load_config(write_config(tmp_path, custom_table([[1, 2], [3]], name="t")))
    assert config.survey.exposures[0].ma_table.frame_time == FRAME_TIME
    assert config.survey.exposures[0].exposure_time == pytest.approx(3 * FRAME_TIME)


def test_custom_ma_table_with_a_numeric_name(tmp_path):
    config = load_config(write_config(tmp_path, custom_table([[1], [2]], name="99")))
    assert config.survey.exposures[0].ma_table.name == "99"


def test_numbered_ma_table_as_string(tmp_path):
    config = load_config(write_config(tmp_path, exposure(0, ma_table="17")))
    assert config.survey.exposures[0].ma_table.number == 17


def test_relative_paths_resolve_against_config_folder(tmp_path, monkeypatch):
    from romandask.scene.catalog import write_catalog

    sub = tmp_path / "configs"
    sub.mkdir()
    write_catalog(small_catalog(), tmp_path / "cat.ecsv")
    write_pointings(tmp_path, pointing_rows(base_config()), name="pt.ecsv")

    def mutate(cfg, _):
        cfg["catalog"] = {"file": "../cat.ecsv"}
        del cfg["survey"]["exposures"]
        cfg["survey"]["pointings"] = "../pt.ecsv"
        cfg["output"]["directory"] = "../results/run1"

    path = write_config(sub, mutate)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(path, elsewhere))
    assert config.catalog.file == tmp_path / "cat.ecsv"
    assert config.output.directory == tmp_path / "results" / "run1"
    assert len(config.survey.exposures) == 2


def test_absolute_and_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(write_config(tmp_path, setter("output", "directory", value="~/o")))
    assert config.output.directory == tmp_path / "o"
    absolute = tmp_path / "abs"
    config = load_config(write_config(tmp_path, setter("output", "directory",
                                                       value=str(absolute))))
    assert config.output.directory == absolute


def test_defaults_when_sections_omitted(tmp_path):
    def mutate(cfg, _):
        for key in ("scene", "detector", "cluster", "seed"):
            del cfg[key]
        del cfg["survey"]["scas"]

    config = load_config(write_config(tmp_path, mutate))
    assert config.seed == 0
    assert config.survey.scas == tuple(range(1, 19))
    assert config.detector.window == N_PIX and config.detector.tile == 1024
    assert config.cluster.type == "local"
    assert config.output.products == ("counts", "truth", "ramps", "l1", "l2", "footprint")
    assert config.detector.model == "synthetic" and config.detector.cosmic_ray_flux == 8.0
    assert config.calibration.fitter == DEFAULT_FITTER == "fixed" and config.calibration.use_jump


def test_tile_is_capped_at_window(tmp_path):
    config = load_config(write_config(tmp_path, setter("detector", "tile", value=512)))
    assert config.detector.tile == 64


def test_cli_overwrite_flag_reaches_config(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(config, say):
        seen["config"] = config

    import romandask.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run", fake_run)
    code, out, err = run_cli(capsys, "run", "--overwrite", "--no-progress",
                             str(write_config(tmp_path)))
    assert code == 0, err
    assert seen["config"].output.overwrite is True
    assert seen["config"].cluster.progress is False

"""A survey defined by a sky region (``survey.region`` with ``survey.pattern``).

Coverage is checked here independently of the tiling code: the SCA outlines
come from ``galsim.roman.getWCS`` for every exposure, the region is sampled
with random points, and a point is on an SCA when it lies on the inner side
of the four great circles through the SCA's corners.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BASE, merge
from romandask import cli
from romandask.config import parse_config
from romandask.errors import ConfigError
from romandask.survey import sky

CORNERS_X = np.array([0.5, 4088.5, 4088.5, 0.5])
CORNERS_Y = np.array([0.5, 0.5, 4088.5, 4088.5])
DATE = "2027-06-01T00:00:00"


def region_config(region: dict, **pattern) -> dict:
    """The small config of the tests, its survey a region and a pattern."""
    pat = {"filters": ["F158"], "ma_table": 4, "dithers": 2, "start_time": DATE, **pattern}
    return merge(BASE, {"survey": {"exposures": None, "region": region, "pattern": pat,
                                   "scas": [1]}})


def parse(tmp_path: Path, data: dict):
    return parse_config(data, tmp_path)


def unit(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)


def galsim_outlines(exposures) -> np.ndarray:
    """(exposures x 18, 4, 3) corners of the full SCAs, from galsim.roman.getWCS."""
    import galsim
    import galsim.roman

    quads = []
    for e in exposures:
        pos = galsim.CelestialCoord(e.ra * galsim.degrees, e.dec * galsim.degrees)
        wcs = galsim.roman.getWCS(pos, PA=e.pa * galsim.degrees, date=e.start_time)
        for sca in range(1, 19):
            ra, dec = wcs[sca].toWorld(CORNERS_X, CORNERS_Y, units="deg")
            quads.append(unit(ra, dec))
    return np.array(quads)


def depth_at(points: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """How many of the spherical quadrilaterals hold each point."""
    depth = np.zeros(len(points), int)
    for q in quads:
        centre = q.mean(axis=0)
        centre /= np.linalg.norm(centre)
        near = points @ centre > math.cos(math.radians(0.2))
        inside = near.copy()
        for k in range(4):
            normal = np.cross(q[k], q[(k + 1) % 4])
            side = np.sign(normal @ centre)
            inside &= side * (points @ normal) >= 0
        depth += inside
    return depth


def box_points(ra, dec, n=20000, seed=3) -> np.ndarray:
    """Points uniform on the sky within an RA/Dec box."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(ra[0], ra[1], n)
    s = rng.uniform(math.sin(math.radians(dec[0])), math.sin(math.radians(dec[1])), n)
    return unit(r, np.degrees(np.arcsin(s)))


def sphere_quad_area(q: np.ndarray) -> float:
    """Area (deg^2) of a spherical quadrilateral: two triangles (L'Huilier)."""
    def tri(a, b, c):
        num = abs(np.dot(a, np.cross(b, c)))
        den = 1 + a @ b + b @ c + c @ a
        return 2 * math.atan2(num, den)
    return (tri(q[0], q[1], q[2]) + tri(q[0], q[2], q[3])) * (180 / math.pi) ** 2


def field_area(exposure) -> float:
    return sum(sphere_quad_area(q) for q in galsim_outlines([exposure]))


# --------------------------------------------------------------------------
# the field, the Sun, the roll
# --------------------------------------------------------------------------

@pytest.mark.parametrize("ra, dec, pa, date", [
    (9.7, -44.0, 142.9, "2027-06-01"), (0.2, 0.1, -20.0, "2027-06-01"),
    (200.0, 85.0, 10.0, "2027-06-01"), (33.0, 89.95, -70.0, "2027-06-01"),
    (300.0, -89.9, 100.0, "2027-01-01")])
def test_the_field_is_placed_as_galsim_places_it(ra, dec, pa, date):
    from romandask.survey.field import place

    exposure = type("E", (), {"ra": ra, "dec": dec, "pa": pa,
                              "start_time": dt.datetime.fromisoformat(date)})
    ours = place(ra, dec, pa)[0].reshape(-1, 3)
    galsim_ = galsim_outlines([exposure]).reshape(-1, 3)
    error = np.degrees(np.arccos(np.clip(np.sum(ours * galsim_, -1), -1, 1))) * 3600
    assert error.max() < 0.05  # arcsec


def test_the_layout_steps_are_the_field_s_size():
    from romandask.survey.field import layout

    lay = layout()
    # 6 columns of 3 SCAs; the steps lie between the field's outer and inner extents
    assert [len(c) for c in lay.columns] == [3] * 6
    u, v = lay.corners[..., 0], lay.corners[..., 1]
    assert 0.95 * (u.max() - u.min()) < lay.step_u <= u.max() - u.min()
    column_heights = [v[np.array(c) - 1].max() - v[np.array(c) - 1].min() for c in lay.columns]
    assert 0.95 * min(column_heights) < lay.step_v <= min(column_heights)
    # gaps: tens of arcsec, narrower than the dither steps
    step = lay.dither_offsets(2)[1] - lay.dither_offsets(2)[0]
    assert 20 / 3600 < lay.gap_u < step[0] and 20 / 3600 < lay.gap_v < step[1]
    # many dithers stay within one SCA pitch of the tile position
    assert np.all(np.ptp(lay.dither_offsets(12), axis=0) < lay.sca_pitch)
    assert lay.area == pytest.approx(18 * (4088 * 0.107 / 3600) ** 2, rel=0.05)


@pytest.mark.parametrize("ra, dec, date", [
    (9.7, -44.0, "2027-06-01"),    # Sun 85 deg away
    (270.0, 66.5, "2027-05-01"),   # 90
    (30.0, -10.0, "2027-06-01"),   # 41: not observable, but the roll is still defined
    (200.0, 10.0, "2027-01-10"),   # 115
    (120.0, -70.0, "2027-09-01")])
def test_the_nominal_roll_puts_the_sun_on_the_solar_array_side(ra, dec, date):
    """At the nominal roll, GalSim's focal plane (its SCA centres) sits so that
    the observatory's +Z axis (X the boresight, Y = Z x X at the roll ``pa``)
    points towards the Sun and +Y is square to it."""
    import galsim
    import galsim.roman
    from galsim.roman import roman_wcs

    when = dt.datetime.fromisoformat(date)
    bore = unit(ra, dec)
    sun = sky.sun_unit([when])[0]
    pa = float(sky.nominal_pa(bore, sun))
    pos = galsim.CelestialCoord(ra * galsim.degrees, dec * galsim.degrees)
    # getWCS wants a date Roman may point there; for a given roll the WCS does not
    # depend on the date
    allowed = next(when + dt.timedelta(days=d) for d in range(0, 366, 30)
                   if galsim.roman.allowedPos(pos, when + dt.timedelta(days=d)))
    wcs = galsim.roman.getWCS(pos, PA=pa * galsim.degrees, date=allowed, SCAs=[2, 11])
    # SCAs 2 and 11 sit symmetrically about the focal plane's Y axis
    mid = sum(np.array(wcs[s].toWorld(galsim.PositionD(2044.5, 2044.5)).get_xyz())
              for s in (2, 11))
    v_axis = mid - (mid @ bore) * bore
    v_axis /= np.linalg.norm(v_axis)
    # the observatory Y axis is the focal-plane Y axis turned back by theta_fpa
    theta = math.radians(roman_wcs.theta_fpa / galsim.degrees)
    east, north = sky.local_axes(bore)
    pa_v = math.atan2(v_axis @ east, v_axis @ north)
    y_axis = math.cos(pa_v - theta) * north + math.sin(pa_v - theta) * east
    z_axis = np.cross(bore, y_axis)
    sun_perp = sun - (sun @ bore) * bore
    sun_perp /= np.linalg.norm(sun_perp)
    assert sun_perp @ z_axis > math.cos(math.radians(0.1))
    assert abs(y_axis @ sun) < 1e-3


def test_sun_positions_are_galsim_s():
    import coord

    times = [dt.datetime(2027, 6, 1) + dt.timedelta(days=37 * k, seconds=1234 * k)
             for k in range(12)]
    for t, v in zip(times, sky.sun_unit(times)):
        lam = coord.util.sun_position_ecliptic(t)
        ref = np.array(coord.CelestialCoord.from_ecliptic(lam, 0 * coord.radians,
                                                          t.year).get_xyz())
        assert np.degrees(np.arccos(min(1.0, v @ ref))) * 3600 < 0.1


# --------------------------------------------------------------------------
# coverage and tiling, checked against GalSim's outlines
# --------------------------------------------------------------------------

def _assert_covered(cfg, points, ndither, nfilter, area, minimum=0.95):
    exposures = cfg.survey.exposures
    depth = depth_at(points, galsim_outlines(exposures))
    covered = float(np.mean(depth >= 1))
    assert covered >= minimum, covered
    estimate = area / field_area(exposures[0]) * ndither * nfilter
    assert len(exposures) <= 2 * estimate, (len(exposures), estimate)
    return covered, depth


def test_a_square_degree_with_two_dithers_is_covered(tmp_path):
    half = 0.5 / math.cos(math.radians(44.0))   # 1 deg x 1 deg on the sky
    ra, dec = (9.7 - half, 9.7 + half), (-44.5, -43.5)
    cfg = parse(tmp_path, region_config({"ra": list(ra), "dec": list(dec)}))
    area = math.radians(2 * half) * (math.sin(math.radians(-43.5))
                                     - math.sin(math.radians(-44.5))) * (180 / math.pi) ** 2
    covered, depth = _assert_covered(cfg, box_points(ra, dec), 2, 1, area)
    # and plan's own count of the same region agrees with this one
    from romandask.survey.tiling import coverage

    ours = coverage(cfg.survey.region.region, cfg.survey.exposures)
    assert ours.fractions("F158", 2)[0] == pytest.approx(covered, abs=0.01)
    assert ours.fractions("F158", 2)[1] == pytest.approx(np.mean(depth >= 2), abs=0.02)
    # the ids are 0, 1, ... in time order, every exposure after the last one ends
    exposures = cfg.survey.exposures
    assert [e.id for e in exposures] == list(range(len(exposures)))
    for a, b in zip(exposures, exposures[1:]):
        gap = (b.start_time - a.start_time).total_seconds() - a.exposure_time
        assert gap >= sky.SLEW_SETTLE[0][1] - 1e-6


def test_a_region_across_ra_0(tmp_path):
    cfg = parse(tmp_path, region_config({"ra": [-0.5, 0.5], "dec": [-0.5, 0.5]}))
    ra = np.array([e.ra for e in cfg.survey.exposures])
    assert np.all((ra >= 0) & (ra < 360))
    assert np.any(ra < 1) and np.any(ra > 359)
    points = box_points((-0.5, 0.5), (-0.5, 0.5))
    covered, _ = _assert_covered(cfg, points, 2, 1, 1.0 * 1.0 * 0.99997)
    # the same box written from 359.5 is the same survey
    again = parse(tmp_path, region_config({"ra": [359.5, 360.5], "dec": [-0.5, 0.5]}))
    assert again.survey.exposures == cfg.survey.exposures


def test_a_polar_cap(tmp_path):
    cfg = parse(tmp_path, region_config({"ra": [0, 360], "dec": [89.0, 90.0]}))
    area = 2 * math.pi * (1 - math.sin(math.radians(89.0))) * (180 / math.pi) ** 2
    _assert_covered(cfg, box_points((0, 360), (89.0, 90.0)), 2, 1, area)


def test_a_polygon_and_healpix_pixels(tmp_path):
    from astropy_healpix import HEALPix
    from matplotlib.path import Path as MPath

    from romandask.survey.tiling import coverage

    vertices = [[150.0, 2.0], [151.5, 2.2], [151.2, 3.4], [150.6, 2.7], [150.1, 3.3]]
    cfg = parse(tmp_path, region_config({"polygon": vertices},
                                        start_time="2027-04-22T00:00:00"))
    # the notch between the two peaks is not in the region: points there are not counted
    pts = box_points((149.9, 151.6), (1.9, 3.5), 30000)
    plane = sky.Plane(unit(*np.array(vertices).T).mean(axis=0))
    x, y = plane.project(pts)
    inside = MPath(np.c_[plane.project(unit(*np.array(vertices).T))]).contains_points(
        np.c_[x, y])
    area = cfg.survey.region.region.area()
    _assert_covered(cfg, pts[inside], 2, 1, area)
    assert area == pytest.approx(np.mean(inside) * math.radians(1.7) * (
        math.sin(math.radians(3.5)) - math.sin(math.radians(1.9))) * (180 / math.pi) ** 2,
        rel=0.03)
    hp = HEALPix(nside=64, order="nested")
    pixels = [20000, 20001, 20002, 20003, 20008]
    cfg = parse(tmp_path, region_config({"healpix": {"nside": 64, "pixels": pixels}}))
    cov = coverage(cfg.survey.region.region, cfg.survey.exposures)
    assert cov.fractions("F158", 1)[0] >= 0.95
    assert cfg.survey.region.region.area() == pytest.approx(
        5 * hp.pixel_area.to_value("deg2"), rel=1e-9)


def test_the_exposures_keep_roman_s_constraints(tmp_path):
    import galsim
    import galsim.roman

    cfg = parse(tmp_path, region_config({"ra": [9.2, 10.2], "dec": [-44.5, -43.5]},
                                        filters=["F158", "F106", "F213"],
                                        ma_table={"F158": 4, "F106": 3, "F213": 5},
                                        dithers=3))
    exposures = cfg.survey.exposures
    assert [e.filter for e in exposures[::len(exposures) // 3]] == ["F158", "F106", "F213"]
    assert {e.filter: e.ma_table.label for e in exposures} == {"F158": "4", "F106": "3",
                                                               "F213": "5"}
    xyz = unit(np.array([e.ra for e in exposures]), np.array([e.dec for e in exposures]))
    sun = sky.sun_unit([e.start_time for e in exposures])
    roll = sky.wrap(np.array([e.pa for e in exposures]) - sky.nominal_pa(xyz, sun))
    assert np.all(np.abs(roll) <= sky.MAX_ROLL_OFFSET)
    for e in exposures:
        pos = galsim.CelestialCoord(e.ra * galsim.degrees, e.dec * galsim.degrees)
        assert galsim.roman.allowedPos(pos, e.start_time)


def test_a_given_roll_is_kept_and_a_roll_roman_cannot_take_is_refused(tmp_path):
    region = {"ra": [9.2, 10.2], "dec": [-44.5, -43.5]}
    auto = parse(tmp_path, region_config(region)).survey.region.tiling
    cfg = parse(tmp_path, region_config(region, pa=auto.nominal_pa + 10))
    assert cfg.survey.region.tiling.pa == pytest.approx(auto.nominal_pa + 10)
    centre = cfg.survey.region.region.centre()
    near = min(cfg.survey.exposures, key=lambda e: -unit(e.ra, e.dec) @ centre)
    assert near.pa == pytest.approx(auto.nominal_pa + 10, abs=1.0)
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, region_config(region, pa=auto.nominal_pa + 40))
    assert err.value.where == "survey.pattern.pa" and "15 deg" in err.value.one_line()


def test_cadence_sets_the_start_times(tmp_path):
    cfg = parse(tmp_path, region_config({"ra": [9.6, 9.8], "dec": [-44.1, -43.9]},
                                        cadence=200))
    starts = [e.start_time for e in cfg.survey.exposures]
    assert all((b - a).total_seconds() == 200 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, region_config({"ra": [9.6, 9.8], "dec": [-44.1, -43.9]},
                                      cadence=100))
    assert err.value.where == "survey.pattern.cadence" and "139.15" in err.value.one_line()


def test_a_thousand_exposures_expand_in_linear_time():
    """~9 deg^2, 8 filters x 4 dithers: about 1000 exposures (a guard against
    anything worse than O(exposures); the README gives measured times)."""
    from romandask.instrument.filters import FILTERS
    from romandask.instrument.matables import MATable
    from romandask.survey.region import Box
    from romandask.survey.tiling import Pattern, coverage, expand

    region = Box((8.2, 12.4), (-45.5, -42.5))
    pattern = Pattern(FILTERS, (MATable.numbered(4),) * len(FILTERS), 4,
                      dt.datetime(2027, 6, 1))
    t0 = time.perf_counter()
    exposures, tiling = expand(region, pattern)
    t_expand = time.perf_counter() - t0
    assert 900 <= len(exposures) <= 1200
    assert len(exposures) <= 2 * tiling.estimate(4, len(FILTERS))
    t0 = time.perf_counter()
    cov = coverage(region, exposures)
    t_cover = time.perf_counter() - t0
    assert all(cov.fractions(f, 1)[0] > 0.99 for f in FILTERS)
    assert t_expand < 30 and t_cover < 60, (t_expand, t_cover)


# --------------------------------------------------------------------------
# plan --pointings: the table feeds back unchanged
# --------------------------------------------------------------------------

def _run_config(tmp_path: Path, survey: dict, out: str) -> Path:
    data = merge(BASE, {"survey": None, "detector": {"window": 16, "tile": 16},
                        "output": {"directory": out,
                                   "products": ["counts", "truth", "ramps", "l1",
                                                "footprint"]}})
    data["survey"] = survey
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_the_pointing_table_feeds_back_to_the_same_bytes(tmp_path, capsys):
    import xarray as xr

    region = {"region": {"ra": [9.6, 9.8], "dec": [-44.1, -43.9]},
              "pattern": {"filters": ["F158"], "ma_table": 4, "dithers": 2,
                          "start_time": DATE},
              "scas": [1]}
    first = _run_config(tmp_path, region, "by_region")
    table = tmp_path / "pointings.ecsv"
    assert cli.main(["plan", "--no-measure", str(first), "--pointings", str(table)]) == 0
    out = capsys.readouterr().out
    assert "coverage:" in out and ">=1" in out and f"wrote {table}" in out
    second = _run_config(tmp_path, {"pointings": str(table), "scas": [1]}, "by_table")
    assert cli.main(["run", "--no-progress", str(first)]) == 0
    assert cli.main(["run", "--no-progress", str(second)]) == 0
    capsys.readouterr()
    a, b = tmp_path / "by_region", tmp_path / "by_table"
    with xr.open_zarr(a / "romandask.zarr") as ds:
        assert ds.sizes["exposure"] == 2 and int(ds["counts"].sum()) > 0
    store_a, store_b = _digest(a / "romandask.zarr"), _digest(b / "romandask.zarr")
    assert any(k.startswith("ramps/") for k in store_a) and store_a == store_b
    l1a, l1b = _digest(a / "l1"), _digest(b / "l1")
    assert len(l1a) == 2 and l1a == l1b
    assert _digest(a)["footprint.png"] == _digest(b)["footprint.png"]
    # the region's run draws its depth map beside the footprint
    assert (a / "coverage.png").is_file() and not (b / "coverage.png").exists()


def test_plan_refuses_an_existing_pointing_table(tmp_path, capsys):
    config = _run_config(tmp_path, {"region": {"ra": [9.6, 9.8], "dec": [-44.1, -43.9]},
                                    "pattern": {"filters": ["F158"], "ma_table": 4,
                                                "start_time": DATE}}, "o")
    table = tmp_path / "p.ecsv"
    table.write_text("mine")
    assert cli.main(["plan", "--no-measure", str(config), "--pointings", str(table)]) == 2
    err = capsys.readouterr().err
    assert "--pointings" in err and "already exists" in err
    assert table.read_text() == "mine"


# --------------------------------------------------------------------------
# the depth map
# --------------------------------------------------------------------------

def test_the_coverage_map_shows_the_depth(tmp_path):
    import matplotlib.image

    from romandask.plots import plot_coverage

    cfg = parse(tmp_path, region_config({"ra": [9.2, 10.2], "dec": [-44.5, -43.5]},
                                        filters=["F158", "F106"]))
    path = tmp_path / "coverage.png"
    plot_coverage(cfg, path)
    first = path.read_bytes()
    plot_coverage(cfg, path)
    assert path.read_bytes() == first  # same bytes on a rerun
    image = matplotlib.image.imread(path)[..., :3]
    assert image.shape[1] > image.shape[0] > 300  # two panels side by side
    # the colour of depth 2 (holes red, then viridis from 1 exposure up) fills much of it
    import matplotlib.pyplot as plt

    from romandask.survey.tiling import coverage

    cov = coverage(cfg.survey.region.region, cfg.survey.exposures)
    top = max(int(cov.depth[f][cov.inside].max()) for f in cov.filters)
    two = np.array(plt.get_cmap("viridis")(np.linspace(0.1, 1.0, top)[1])[:3])
    share = np.mean(np.all(np.abs(image - two) < 0.02, axis=-1))
    assert share > 0.1, share
    red = np.array([0xc0, 0x39, 0x2b]) / 255  # the holes: a few, not none
    assert 0 < np.mean(np.all(np.abs(image - red) < 0.02, axis=-1)) < 0.02


# --------------------------------------------------------------------------
# what the config refuses (one field named; more rows in test_bad_inputs.py)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("region, pattern, where, words", [
    ({"ra": [0, 360], "dec": [-10, 10]}, {}, "survey.region", "no centre"),
    ({"ra": [0, 60], "dec": [-10, 10]}, {}, "survey.region", "20 deg"),
    ({"ra": [9.6, 9.8]}, {}, "survey.region.dec", "required"),
    ({"ra": [9.6, 9.8], "dec": [-44.1, -43.9], "polygon": [[1, 2]] * 3}, {}, "survey.region",
     "not ra and dec and polygon"),
    ({"ra": [9.6, 9.8, 10.0], "dec": [-44.1, -43.9]}, {}, "survey.region.ra", "RA range"),
    ({"ra": [9.6, 400.0], "dec": [-44.1, -43.9]}, {}, "survey.region.ra", "360 deg above"),
    ({"polygon": [[9.5, -44.0], [9.9, -44.0], [9.9, -44.0], [9.6, -43.8]]}, {},
     "survey.region.polygon", "repeats vertex 1"),
    ({"polygon": [[9.5, -44.2], [9.5, -43.8], [9.5, -44.0]]}, {}, "survey.region.polygon",
     "folds back on itself"),  # along one meridian: up, then back down
    ({"polygon": [[9.5, -44.0], [9.9, -95.0], [9.7, -43.8]]}, {}, "survey.region.polygon[1]",
     "-95"),
    ({"healpix": {"nside": 4, "pixels": [192]}}, {}, "survey.region.healpix.pixels[0]",
     "0 to 191"),
    ({"healpix": {"nside": 4, "pixels": [5, 5]}}, {}, "survey.region.healpix.pixels",
     "distinct"),
    ({"ra": [9.6, 9.8], "dec": [-44.1, -43.9]}, {"filters": ["F158", "F158"]},
     "survey.pattern.filters", "twice"),
    ({"ra": [9.6, 9.8], "dec": [-44.1, -43.9]},
     {"filters": ["F158", "F106"], "ma_table": {"F158": 4}}, "survey.pattern.ma_table.F106",
     "required"),
    ({"ra": [9.6, 9.8], "dec": [-44.1, -43.9]}, {"ma_table": {"F158": 4, "F062": 3}},
     "survey.pattern.ma_table.F062", "not one of the pattern's filters"),
    ({"ra": [9.6, 9.8], "dec": [-44.1, -43.9]}, {"ma_table": 99}, "survey.pattern.ma_table",
     "unknown MA table 99"),
    ({"ra": [9.6, 9.8], "dec": [-44.1, -43.9]}, {"pa": "best"}, "survey.pattern.pa", "auto"),
    ({"ra": [9.6, 9.8], "dec": [-44.1, -43.9]}, {"start_time": "soon"},
     "survey.pattern.start_time", "ISO 8601"),
])
def test_bad_regions_and_patterns_name_their_field(tmp_path, region, pattern, where, words):
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, region_config(region, **pattern))
    assert err.value.where == where, err.value.one_line()
    assert words in err.value.one_line()


def test_a_closed_ring_and_an_empty_roll_are_accepted(tmp_path):
    ring = [[9.5, -44.0], [9.9, -44.0], [9.7, -43.8], [9.5, -44.0]]
    cfg = parse(tmp_path, region_config({"polygon": ring}, pa=None))
    assert len(cfg.survey.region.region.vertices) == 3
    assert cfg.survey.region.pattern.pa is None  # auto

"""Tests for romandask.scene.catalog: reading, validation, writing, synthesis."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from romandask.errors import InputError
from romandask.instrument.filters import FILTERS
from romandask.scene import catalog as cat
from romandask.scene.catalog import (
    REQUIRED_COLUMNS,
    cap_area,
    expected_galaxy_density,
    expected_star_density,
    median_galaxy_size,
    read_catalog,
    synthesize_catalog,
    write_catalog,
)

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env


def separation_deg(ra1, dec1, ra2, dec2):
    """Great-circle separation in degrees (Vincenty formula, stable at all angles)."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    num = np.hypot(
        np.cos(dec2) * np.sin(dra),
        np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra),
    )
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den))


def assert_tables_equal(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames
    for name in a.colnames:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


# -------------------------------------------------------------------------
# Synthesis
# -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deep_field():
    """A 0.2-degree cap at high latitude: ~3e4 galaxies, ~4e2 stars."""
    return synthesize_catalog(150.0, 2.0, 0.2, np.random.default_rng(2024))


def galaxy_mags(table: Table) -> np.ndarray:
    ser = table["type"] == "SER"
    return -2.5 * np.log10(np.asarray(table[cat.REFERENCE_FILTER][ser]))


def test_same_seed_gives_identical_table():
    a = synthesize_catalog(53.1, -27.8, 0.05, np.random.default_rng(7))
    b = synthesize_catalog(53.1, -27.8, 0.05, np.random.default_rng(7))
    assert len(a) > 100
    assert_tables_equal(a, b)


def test_different_seed_gives_different_table():
    a = synthesize_catalog(53.1, -27.8, 0.05, np.random.default_rng(7))
    b = synthesize_catalog(53.1, -27.8, 0.05, np.random.default_rng(8))
    assert len(a) != len(b) or not np.array_equal(a["ra"], b["ra"])


def test_catalog_format(deep_field):
    t = deep_field
    assert t.colnames == ["id", *REQUIRED_COLUMNS[:2], "type", *REQUIRED_COLUMNS[3:], *FILTERS]
    assert t["id"].dtype == np.int64
    np.testing.assert_array_equal(t["id"], np.arange(len(t)))
    for name in ("ra", "dec", "n", "half_light_radius", "pa", "ba", *FILTERS):
        assert t[name].dtype == np.float64, name
        assert np.all(np.isfinite(t[name])), name
    assert set(t["type"]) == {"SER", "PSF"}
    assert np.all((t["ra"] >= 0) & (t["ra"] < 360))

    ser = t["type"] == "SER"
    g = t[ser]
    assert np.all((g["n"] >= 0.3) & (g["n"] <= 6.2))
    assert np.all((g["ba"] >= 0.1) & (g["ba"] <= 1.0))
    assert np.all((g["half_light_radius"] >= 0.05) & (g["half_light_radius"] <= 5.0))
    assert np.all((g["pa"] >= 0) & (g["pa"] < 180))
    assert 0.5 < np.median(g["n"]) < 4.0

    s = t[~ser]
    np.testing.assert_array_equal(s["n"], -1.0)
    np.testing.assert_array_equal(s["half_light_radius"], 0.0)
    np.testing.assert_array_equal(s["pa"], 0.0)
    np.testing.assert_array_equal(s["ba"], 1.0)

    for name in FILTERS:
        assert np.all(np.asarray(t[name]) > 0), name


def test_only_requested_filters():
    t = synthesize_catalog(0.0, 0.0, 0.02, np.random.default_rng(1), filters=("F106", "F213"))
    assert t.colnames[-2:] == ["F106", "F213"]
    assert not any(f in t.colnames for f in FILTERS if f not in ("F106", "F213"))


def test_galaxy_count_matches_expected_density(deep_field):
    n_gal = int(np.sum(deep_field["type"] == "SER"))
    expected = expected_galaxy_density(18.0, 26.0) * cap_area(0.2)
    assert abs(n_gal - expected) < 5 * np.sqrt(expected)


def test_density_figures():
    # ~4-5e4 per deg^2 per mag at H=24 and 1e5-2e5 per deg^2 brighter than H=25.
    assert 4e4 <= expected_galaxy_density(23.5, 24.5) <= 5e4
    assert 1e5 <= expected_galaxy_density(-30.0, 25.0) <= 2e5
    # A few thousand stars per deg^2 brighter than H=24 at high latitude.
    assert 1e3 <= expected_star_density(-30.0, 24.0, 75.0) <= 1e4


def test_density_scale_scales_counts():
    full = synthesize_catalog(150.0, 2.0, 0.1, np.random.default_rng(3))
    tenth = synthesize_catalog(150.0, 2.0, 0.1, np.random.default_rng(3), density_scale=0.1)
    expected = 0.1 * len(full)
    assert abs(len(tenth) - expected) < 5 * np.sqrt(expected)


def test_magnitude_histogram_follows_power_law(deep_field):
    mags = galaxy_mags(deep_field)
    assert mags.min() >= 18.0 and mags.max() <= 26.0
    counts, edges = np.histogram(mags, bins=np.arange(18.0, 26.01, 0.5))
    centres = 0.5 * (edges[1:] + edges[:-1])
    good = counts > 0
    # sigma(log10 N) = 1 / (ln 10 sqrt N): weight by sqrt(N).
    slope, _ = np.polyfit(centres[good], np.log10(counts[good]), 1, w=np.sqrt(counts[good]))
    assert slope == pytest.approx(cat.GALAXY_COUNT_SLOPE, abs=0.02)


def test_sizes_follow_size_magnitude_relation(deep_field):
    g = deep_field[deep_field["type"] == "SER"]
    mags = galaxy_mags(deep_field)
    log_r = np.log10(np.asarray(g["half_light_radius"]))
    medians = {}
    for lo, hi in ((19.0, 20.5), (24.0, 25.0)):
        sel = (mags >= lo) & (mags < hi)
        assert sel.sum() > 200
        residual = log_r[sel] - np.log10(median_galaxy_size(mags[sel]))
        assert np.median(residual) == pytest.approx(0.0, abs=0.05)
        assert np.std(residual) == pytest.approx(cat.GALAXY_SIZE_SCATTER_DEX, abs=0.05)
        medians[lo] = 10 ** np.median(log_r[sel])
    assert medians[19.0] > 2 * medians[24.0]
    assert 0.2 < medians[24.0] < 0.4


def test_colours_follow_power_law_sed(deep_field):
    t = deep_field
    lam = cat.WAVELENGTH_UM
    ref = np.log(np.asarray(t["F158"]))
    beta_062 = (np.log(np.asarray(t["F062"])) - ref) / np.log(lam["F062"] / lam["F158"])
    beta_213 = (np.log(np.asarray(t["F213"])) - ref) / np.log(lam["F213"] / lam["F158"])
    np.testing.assert_allclose(beta_062, beta_213, atol=1e-9)
    assert np.std(beta_062) > 0.3  # sources have a spread of colours


@pytest.mark.parametrize(
    "ra, dec, radius",
    [
        (0.05, 10.0, 0.5),  # straddles ra = 0
        (359.9, -45.0, 0.3),  # straddles ra = 360
        (123.0, 89.8, 0.5),  # contains the north pole
        (10.0, -90.0, 0.4),  # centred on the south pole
    ],
)
def test_sources_lie_uniformly_inside_cap(ra, dec, radius):
    t = synthesize_catalog(ra, dec, radius, np.random.default_rng(11), density_scale=0.02)
    assert len(t) > 1000
    ra_s, dec_s = np.asarray(t["ra"]), np.asarray(t["dec"])
    assert np.all((ra_s >= 0) & (ra_s < 360))
    assert np.all(np.abs(dec_s) <= 90)
    sep = separation_deg(ra, dec, ra_s, dec_s)
    assert sep.max() <= radius + 1e-9
    # Uniform in area: the inner half-radius cap holds (1-cos(r/2))/(1-cos r) ~ 1/4.
    p = cap_area(radius / 2) / cap_area(radius)
    inner = int(np.sum(sep <= radius / 2))
    assert abs(inner - p * len(t)) < 5 * np.sqrt(len(t) * p * (1 - p))
    if abs(dec) < 80:
        # Both sides of ra = 0 are populated.
        assert np.any(ra_s < 1.0) and np.any(ra_s > 359.0)


def test_star_density_higher_at_low_latitude():
    assert expected_star_density(16, 24, 10.0) > 3 * expected_star_density(16, 24, 80.0)
    # Galactic plane (l ~ 90, b ~ 3) versus the north Galactic pole.
    plane = synthesize_catalog(318.0, 48.0, 0.1, np.random.default_rng(5), galaxy_mag_range=(18, 19))
    pole = synthesize_catalog(192.86, 27.13, 0.1, np.random.default_rng(5), galaxy_mag_range=(18, 19))
    assert abs(plane.meta["galactic_b"]) < 10 and pole.meta["galactic_b"] > 85
    n_plane = int(np.sum(plane["type"] == "PSF"))
    n_pole = int(np.sum(pole["type"] == "PSF"))
    assert n_plane > 3 * n_pole
    expected = expected_star_density(16, 24, pole.meta["galactic_b"]) * cap_area(0.1)
    assert abs(n_pole - expected) < 5 * np.sqrt(expected)


def test_synthesize_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        synthesize_catalog(0, 0, 0.0, rng)
    with pytest.raises(ValueError):
        synthesize_catalog(0, 95, 0.1, rng)
    with pytest.raises(ValueError):
        synthesize_catalog(0, 0, 0.1, rng, filters=("H158",))


# -------------------------------------------------------------------------
# Round trip
# -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ecsv", ".parquet", ".pq"])
def test_round_trip(tmp_path, suffix):
    table = synthesize_catalog(30.0, -5.0, 0.03, np.random.default_rng(9))
    path = tmp_path / f"scene{suffix}"
    write_catalog(table, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    back = read_catalog(path, FILTERS)
    assert_tables_equal(back, table)

    # Deterministic bytes, and overwriting works.
    first = path.read_bytes()
    write_catalog(table, path)
    assert path.read_bytes() == first


def test_write_rejects_unknown_suffix(tmp_path):
    from romandask.errors import OutputError

    with pytest.raises(OutputError, match="suffix"):
        write_catalog(synthesize_catalog(0, 0, 0.01, np.random.default_rng(0)), tmp_path / "x.fits")


# -------------------------------------------------------------------------
# Reading and validation
# -------------------------------------------------------------------------


def good_table() -> Table:
    """Three valid rows: a star with romanisim's placeholders, two galaxies."""
    return Table(
        {
            "ra": [10.0, 10.001, 10.002],
            "dec": [-5.0, -5.001, -5.002],
            "type": ["PSF", "SER", "SER"],
            "n": [-1.0, 1.0, 4.0],
            "half_light_radius": [0.0, 0.3, 1.2],
            "pa": [0.0, 45.0, 120.0],
            "ba": [1.0, 0.5, 0.8],
            "F158": [1e-9, 2e-10, 3e-10],
            "F213": [1.1e-9, 2.5e-10, 3.5e-10],
        }
    )


def write_raw(table: Table, path) -> None:
    fmt = "ascii.ecsv" if path.suffix == ".ecsv" else "parquet"
    table.write(path, format=fmt)


def test_read_normalises(tmp_path):
    t = good_table()
    t["type"] = ["psf", " Ser", "SER"]
    t["ra"] = [-10.0, 360.0, 725.5]
    t["F158"] = np.array([1, 0, 2], dtype=np.int32)  # integer fluxes are fine
    t["zmag"] = ["a", "b", "c"]
    path = tmp_path / "cat.ecsv"
    write_raw(t, path)
    out = read_catalog(path, ["F158"])
    assert out.colnames == ["id", *REQUIRED_COLUMNS[:2], "type", *REQUIRED_COLUMNS[3:], "F158", "F213", "zmag"]
    np.testing.assert_array_equal(out["id"], [0, 1, 2])
    assert out["id"].dtype == np.int64
    np.testing.assert_array_equal(out["type"], ["PSF", "SER", "SER"])
    np.testing.assert_allclose(out["ra"], [350.0, 0.0, 5.5])
    assert out["F158"].dtype == np.float64
    np.testing.assert_array_equal(out["zmag"], ["a", "b", "c"])


def test_read_keeps_given_ids(tmp_path):
    t = good_table()
    t["id"] = np.array([7, 3, 100], dtype=np.int32)
    path = tmp_path / "ids.parquet"
    write_raw(t, path)
    out = read_catalog(path, ["F158"])
    np.testing.assert_array_equal(out["id"], [7, 3, 100])
    assert out["id"].dtype == np.int64


def test_psf_row_may_have_nan_shape(tmp_path):
    t = good_table()
    for name in ("n", "half_light_radius", "pa", "ba"):
        t[name][0] = np.nan
    for suffix in (".ecsv", ".parquet"):
        path = tmp_path / f"nanpsf{suffix}"
        write_raw(t, path)
        out = read_catalog(path, ["F158", "F213"])
        assert np.isnan(out["n"][0])
        assert out["type"][0] == "PSF"


def test_unneeded_filter_may_hold_nan(tmp_path):
    t = good_table()
    t["F213"][1] = np.nan
    path = tmp_path / "cat.ecsv"
    write_raw(t, path)
    out = read_catalog(path, ["F158"])
    assert "F213" in out.colnames and np.isnan(out["F213"][1])


def test_empty_catalog_is_valid(tmp_path):
    t = good_table()[:0]
    for suffix in (".ecsv", ".parquet"):
        path = tmp_path / f"empty{suffix}"
        write_raw(t, path)
        out = read_catalog(path, ["F158"])
        assert len(out) == 0
        assert out["id"].dtype == np.int64 and out["ra"].dtype == np.float64


def _drop(*names):
    def edit(t):
        t.remove_columns(list(names))

    return edit


def _set(column, rows, value):
    def edit(t):
        for row in rows:
            t[column][row] = value

    return edit


def _set_type(values):
    def edit(t):
        t["type"] = values

    return edit


def _set_id(values):
    def edit(t):
        t["id"] = values

    return edit


BAD_CASES = {
    # name: (edit, filters, words that must appear in the message)
    "missing column": (_drop("ba", "pa"), ["F158"], ["missing required", "ba", "pa"]),
    "missing filter": (_drop("F213"), ["F158", "F213"], ["F213"]),
    "nan ra": (_set("ra", [0, 2], np.nan), ["F158"], ["'ra'", "2 rows"]),
    "inf dec": (_set("dec", [1], np.inf), ["F158"], ["'dec'", "1 row"]),
    "nan flux": (_set("F158", [1], np.nan), ["F158"], ["'F158'", "1 row"]),
    "negative flux": (_set("F213", [0, 1], -1e-9), ["F213"], ["'F213'", "2 rows", "negative"]),
    "unknown type": (_set_type(["PSF", "GAL", "gal"]), ["F158"], ["'type'", "GAL", "2 rows"]),
    "dec out of range": (_set("dec", [0], 91.0), ["F158"], ["'dec'", "1 row"]),
    "bad ba": (_set("ba", [1], 0.0), ["F158"], ["'ba'", "1 SER row"]),
    "ba above one": (_set("ba", [1, 2], 1.5), ["F158"], ["'ba'", "2 SER rows"]),
    "zero radius": (_set("half_light_radius", [2], 0.0), ["F158"], ["'half_light_radius'", "1 SER row"]),
    "n too large": (_set("n", [2], 8.0), ["F158"], ["'n'", "1 SER row", "6.2"]),
    "nan n for SER": (_set("n", [1], np.nan), ["F158"], ["'n'", "1 SER row"]),
    "duplicate ids": (_set_id([4, 4, 5]), ["F158"], ["'id'", "2 rows", "4"]),
    "float ids": (_set_id([1.0, 2.5, 3.0]), ["F158"], ["'id'", "1 row"]),
}


@pytest.mark.parametrize("suffix", [".ecsv", ".parquet"])
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_catalog_raises_one_line_input_error(tmp_path, case, suffix):
    edit, filters, words = BAD_CASES[case]
    t = good_table()
    edit(t)
    path = tmp_path / f"bad{suffix}"
    write_raw(t, path)
    with pytest.raises(InputError) as info:
        read_catalog(path, filters)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"input error: catalog bad{suffix}: ")
    for word in words:
        assert word in message, (word, message)
    assert info.value.fix  # tells the user what to do


def test_text_column_where_number_expected(tmp_path):
    t = good_table()
    t["ra"] = ["a", "b", "c"]
    path = tmp_path / "text.ecsv"
    write_raw(t, path)
    with pytest.raises(InputError, match="'ra'.*not numeric"):
        read_catalog(path, ["F158"])


@pytest.mark.parametrize("name", ["cat.csv", "cat.fits", "cat"])
def test_unsupported_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_text("ra,dec\n1,2\n")
    with pytest.raises(InputError) as info:
        read_catalog(path, ["F158"])
    message = str(info.value)
    assert "\n" not in message and "suffix" in message and ".ecsv" in message


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as info:
        read_catalog(tmp_path / "nowhere.ecsv", ["F158"])
    message = str(info.value)
    assert "\n" not in message
    assert "catalog nowhere.ecsv" in message and "not found" in message


@pytest.mark.parametrize("name", ["junk.ecsv", "junk.parquet"])
def test_unreadable_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 this is not a table\n\nat all\n")
    with pytest.raises(InputError) as info:
        read_catalog(path, ["F158"])
    message = str(info.value)
    assert "\n" not in message and "could not be read" in message

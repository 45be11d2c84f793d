"""Cosmic rays: event rates, sampled distributions, exact rasterisation, tiling."""

from __future__ import annotations

import numpy as np
import pytest

from romandask.detector.cosmic_rays import (
    CosmicRays,
    cosmic_ray_deposits,
    rasterize_segments,
    sample_dedx,
    sample_path_lengths,
)

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

FRAME = (4096, 4096)
READ_TIMES = 3.16247 * np.arange(1, 45)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def frame() -> CosmicRays:
    return cosmic_ray_deposits(_rng(2024), FRAME, READ_TIMES)


def _expected_events(shape, durations, flux=8.0, pixel_um=10.0):
    return flux * shape[0] * shape[1] * (pixel_um * 1e-4) ** 2 * np.asarray(durations)


def _truncated_moyal_cdf(location=120.0, scale=50.0, lo=10.0, hi=10000.0):
    """The truncated Moyal CDF on a fine grid, by trapezoidal integration."""
    grid = np.linspace(lo, hi, 2_000_001)
    z = (grid - location) / scale
    pdf = np.exp(-(z + np.exp(-z)) / 2)
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
    return grid, cdf / cdf[-1]


def _clipped_length(y0, x0, y1, x1, shape):
    """Length of the part of a segment inside [-0.5, n - 0.5] on both axes."""
    lo, hi = 0.0, 1.0
    for a, b, n in ((y0, y1, shape[0]), (x0, x1, shape[1])):
        if a == b:
            if not -0.5 <= a <= n - 0.5:
                return 0.0
            continue
        s0, s1 = (-0.5 - a) / (b - a), (n - 0.5 - a) / (b - a)
        lo, hi = max(lo, min(s0, s1)), min(hi, max(s0, s1))
    return max(hi - lo, 0.0) * float(np.hypot(y1 - y0, x1 - x0))


# --- event rates --------------------------------------------------------------

def test_events_per_read_match_flux_area_and_duration(frame):
    mu = _expected_events(FRAME, np.diff(READ_TIMES, prepend=0.0))
    assert mu[0] == pytest.approx(425.0, rel=0.01)
    counts = np.bincount(frame.event_read, minlength=len(READ_TIMES) + 1)[1:]
    assert abs(counts.sum() - mu.sum()) < 3 * np.sqrt(mu.sum())
    chi2 = np.sum((counts - mu) ** 2 / mu)
    assert chi2 < len(mu) + 5 * np.sqrt(2 * len(mu))


def test_events_follow_uneven_read_durations():
    read_times = np.cumsum([3.0, 0.0, 30.0, 3.0, 60.0, 6.0])
    shape = (1024, 2048)
    n_draws = 40
    counts = np.zeros(len(read_times))
    for seed in range(n_draws):
        cr = cosmic_ray_deposits(_rng(seed), shape, read_times)
        counts += np.bincount(cr.event_read, minlength=len(read_times) + 1)[1:]
    mu = n_draws * _expected_events(shape, np.diff(read_times, prepend=0.0))
    assert counts[1] == 0
    nonzero = mu > 0
    assert np.all(np.abs(counts - mu)[nonzero] < 3 * np.sqrt(mu[nonzero]))


def test_flux_scales_the_rate_and_zero_flux_gives_nothing():
    none = cosmic_ray_deposits(_rng(1), (64, 64), READ_TIMES, flux=0.0)
    assert none.n_events == 0 and len(none) == 0
    assert none.y.dtype == np.int32 and none.read.dtype == np.int16
    assert none.electrons.dtype == np.float32
    lots = cosmic_ray_deposits(_rng(1), (64, 64), READ_TIMES, flux=8000.0)
    mu = _expected_events((64, 64), [READ_TIMES[-1]], flux=8000.0)[0]
    assert abs(lots.n_events - mu) < 3 * np.sqrt(mu)


# --- sampled distributions ----------------------------------------------------

def _power_law_slope(lengths, lo):
    """Maximum-likelihood log-slope of a power law above ``lo``, and its error."""
    alpha = 1 + lengths.size / np.sum(np.log(lengths / lo))
    return -alpha, (alpha - 1) / np.sqrt(lengths.size)


@pytest.mark.parametrize("source", ["sampler", "deposits"])
def test_path_lengths_follow_the_power_law(source, frame):
    if source == "sampler":
        lengths = sample_path_lengths(_rng(5), 200_000)
    else:
        lengths = frame.event_length_um
    assert lengths.min() >= 10.0 and lengths.max() <= 2000.0
    slope, error = _power_law_slope(lengths, 10.0)
    assert abs(slope - (-4.33)) < 3 * error


def test_path_length_sampler_reaches_the_upper_end_of_a_shallow_law():
    lengths = sample_path_lengths(_rng(6), 100_000, slope=-1.0, length_range=(10.0, 1000.0))
    # log-uniform: a quarter of the draws in each quarter of the log range
    quarter = np.histogram(np.log10(lengths), bins=4, range=(1.0, 3.0))[0]
    assert np.all(np.abs(quarter - 25_000) < 3 * np.sqrt(25_000 * 0.75))
    assert lengths.min() >= 10.0 and lengths.max() <= 1000.0


@pytest.mark.parametrize("source", ["sampler", "deposits"])
def test_dedx_follows_the_truncated_moyal(source, frame):
    dedx = sample_dedx(_rng(7), 200_000) if source == "sampler" else frame.event_dedx
    assert dedx.min() >= 10.0 and dedx.max() <= 10000.0
    grid, cdf = _truncated_moyal_cdf()
    for q in (0.1, 0.5, 0.9):
        expected = np.interp(q, cdf, grid)
        assert np.quantile(dedx, q) == pytest.approx(expected, rel=0.02)
    # the untruncated median, 120 + 50 * (-2 ln(sqrt(2) erfcinv(1/2))), ~ 159.4
    assert np.interp(0.5, cdf, grid) == pytest.approx(159.4, abs=0.5)


def test_dedx_truncation_is_respected_for_a_narrow_range():
    dedx = sample_dedx(_rng(8), 50_000, dedx_range=(100.0, 200.0))
    assert dedx.min() >= 100.0 and dedx.max() <= 200.0
    grid, cdf = _truncated_moyal_cdf(lo=100.0, hi=200.0)
    assert np.median(dedx) == pytest.approx(np.interp(0.5, cdf, grid), rel=0.01)


# --- rasterisation ------------------------------------------------------------

def test_horizontal_track_hits_whole_and_half_pixels():
    seg, y, x, chord = rasterize_segments(10.0, 0.0, 10.0, 5.0, (20, 20))
    np.testing.assert_array_equal(seg, 0)
    np.testing.assert_array_equal(y, 10)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(chord, [0.5, 1, 1, 1, 1, 0.5], rtol=0, atol=1e-12)


def test_reversed_track_gives_the_same_pixels_in_reverse():
    forward = rasterize_segments(3.2, 1.7, 8.9, 12.4, (20, 20))
    backward = rasterize_segments(8.9, 12.4, 3.2, 1.7, (20, 20))
    for a, b in zip(forward[1:], backward[1:]):
        np.testing.assert_allclose(a, b[::-1], rtol=0, atol=1e-12)


def test_diagonal_through_corners_skips_the_corner_neighbours():
    _, y, x, chord = rasterize_segments(0.0, 0.0, 3.0, 3.0, (20, 20))
    np.testing.assert_array_equal(y, [0, 1, 2, 3])
    np.testing.assert_array_equal(x, [0, 1, 2, 3])
    np.testing.assert_allclose(chord, np.sqrt(2) * np.array([0.5, 1, 1, 0.5]), atol=1e-12)
    # and down-left through corners
    _, y, x, _ = rasterize_segments(5.0, 5.0, 2.0, 2.0, (20, 20))
    np.testing.assert_array_equal(y, [5, 4, 3, 2])
    np.testing.assert_array_equal(x, [5, 4, 3, 2])


@pytest.mark.parametrize("x0, x1, pixels", [(3.5, 1.0, [3, 2, 1]), (1.0, 3.5, [1, 2, 3]),
                                            (3.5, 0.5, [3, 2, 1]), (0.5, 3.5, [1, 2, 3])])
def test_tracks_starting_or_ending_on_a_pixel_boundary(x0, x1, pixels):
    _, y, x, chord = rasterize_segments(5.0, x0, 5.0, x1, (20, 20))
    np.testing.assert_array_equal(x, pixels)
    assert chord.sum() == pytest.approx(abs(x1 - x0), abs=1e-12)
    assert np.all(chord > 0.4)


def test_tracks_along_grid_lines_go_to_the_upper_pixel():
    _, y, x, chord = rasterize_segments(0.5, 0.0, 0.5, 3.0, (20, 20))
    np.testing.assert_array_equal(y, 1)
    np.testing.assert_array_equal(x, [0, 1, 2, 3])
    np.testing.assert_allclose(chord, [0.5, 1, 1, 0.5], atol=1e-12)
    _, y, x, chord = rasterize_segments(4.0, 2.5, 1.0, 2.5, (20, 20))
    np.testing.assert_array_equal(x, 3)
    np.testing.assert_array_equal(y, [4, 3, 2, 1])
    # along the outer edges, the edge pixels take the charge
    _, y, x, chord = rasterize_segments(19.5, 3.0, 19.5, 5.0, (20, 20))
    np.testing.assert_array_equal(y, 19)
    assert chord.sum() == pytest.approx(2.0, abs=1e-12)
    _, y, x, chord = rasterize_segments(-0.5, 3.0, -0.5, 5.0, (20, 20))
    np.testing.assert_array_equal(y, 0)
    assert chord.sum() == pytest.approx(2.0, abs=1e-12)


def test_segments_outside_or_of_zero_length_deposit_nothing():
    seg, _, _, _ = rasterize_segments([-3.0, 25.0, 4.0, -0.6], [2.0, 2.0, 4.0, 3.0],
                                      [-1.0, 30.0, 4.0, -0.6], [9.0, 9.0, 4.0, 8.0], (20, 20))
    assert seg.size == 0


def test_segments_are_cut_at_the_edge_of_the_area():
    _, y, x, chord = rasterize_segments(5.0, -3.0, 5.0, 2.0, (10, 10))
    np.testing.assert_array_equal(x, [0, 1, 2])
    np.testing.assert_allclose(chord, [1, 1, 0.5], atol=1e-12)
    _, y, x, chord = rasterize_segments(-10.0, -10.0, 30.0, 30.0, (10, 10))
    assert chord.sum() == pytest.approx(10 * np.sqrt(2), abs=1e-9)
    assert y.min() == 0 and y.max() == 9


def test_chords_add_up_to_the_clipped_length_of_each_segment():
    rng = _rng(11)
    shape = (37, 53)
    n = 3000
    y0 = rng.uniform(-10, shape[0] + 10, n)
    x0 = rng.uniform(-10, shape[1] + 10, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    length = rng.exponential(8.0, n)
    y1, x1 = y0 + length * np.sin(angle), x0 + length * np.cos(angle)
    seg, y, x, chord = rasterize_segments(y0, x0, y1, x1, shape)
    assert np.all((y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1]))
    assert np.all(np.diff(seg) >= 0)
    total = np.bincount(seg, weights=chord, minlength=n)
    expected = np.array([_clipped_length(*p, shape) for p in zip(y0, x0, y1, x1)])
    np.testing.assert_allclose(total, expected, rtol=0, atol=1e-9)
    # no pixel is visited twice by one segment
    key = (seg * shape[0] + y) * shape[1] + x
    assert np.unique(key).size == key.size


def test_pixels_and_chords_agree_with_dense_sampling_along_the_track():
    rng = _rng(12)
    shape = (30, 30)
    step = 1e-4
    for _ in range(50):
        y0, x0 = rng.uniform(-2, 32, 2)
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.5, 15.0)
        y1, x1 = y0 + length * np.sin(angle), x0 + length * np.cos(angle)
        _, y, x, chord = rasterize_segments(y0, x0, y1, x1, shape)
        s = np.arange(step / 2, length, step)
        py = np.floor(y0 + s * np.sin(angle) + 0.5).astype(int)
        px = np.floor(x0 + s * np.cos(angle) + 0.5).astype(int)
        inside = (py >= 0) & (py < shape[0]) & (px >= 0) & (px < shape[1])
        sampled, hits = np.unique(np.stack([py[inside], px[inside]]), axis=1,
                                  return_counts=True)
        found = {(int(a), int(b)): c for a, b, c in zip(y, x, chord)}
        assert set(map(tuple, sampled.T.tolist())) <= set(found)
        for (a, b), n in zip(sampled.T.tolist(), hits):
            assert found[(a, b)] == pytest.approx(n * step, abs=2 * step)
        missed = set(found) - set(map(tuple, sampled.T.tolist()))
        assert all(found[p] < 2 * step for p in missed)


# --- deposits -----------------------------------------------------------------

def test_deposits_are_unique_sorted_and_inside(frame):
    assert frame.shape == FRAME
    assert frame.y.dtype == np.int32 and frame.x.dtype == np.int32
    assert frame.read.dtype == np.int16 and frame.electrons.dtype == np.float32
    assert np.all((frame.y >= 0) & (frame.y < FRAME[0]))
    assert np.all((frame.x >= 0) & (frame.x < FRAME[1]))
    assert frame.read.min() >= 1 and frame.read.max() <= len(READ_TIMES)
    key = (frame.read.astype(np.int64) * FRAME[0] + frame.y) * FRAME[1] + frame.x
    assert np.all(np.diff(key) > 0)
    assert np.all(frame.electrons > 0)
    np.testing.assert_array_equal(frame.electrons, np.round(frame.electrons))
    assert np.all((frame.event_y >= -0.5) & (frame.event_y < FRAME[0] - 0.5))
    assert np.all((frame.event_x >= -0.5) & (frame.event_x < FRAME[1] - 0.5))
    assert np.all(np.diff(frame.event_read) >= 0)


def test_deposits_follow_the_tracks_and_energy_loss_of_the_truth(frame):
    length_px = frame.event_length_um / 10.0
    seg, y, x, chord = rasterize_segments(
        frame.event_y, frame.event_x,
        frame.event_y + length_px * np.sin(frame.event_angle),
        frame.event_x + length_px * np.cos(frame.event_angle), FRAME)
    read = frame.event_read[seg]
    key = (read.astype(np.int64) * FRAME[0] + y) * FRAME[1] + x
    got = (frame.read.astype(np.int64) * FRAME[0] + frame.y) * FRAME[1] + frame.x
    np.testing.assert_array_equal(np.unique(key), got)
    # mean electrons: dE/dx x 3-D path (chord in the plane, 5 um deep) / 0.5 eV
    path_um = 10.0 * np.sqrt(chord ** 2 + 0.5 ** 2)
    mean = np.sum(frame.event_dedx[seg] * path_um / 0.5)
    total = frame.electrons.astype(np.float64).sum()
    assert abs(total - mean) < 4 * np.sqrt(mean)


def test_pixel_geometry_changes_the_yield():
    thin = cosmic_ray_deposits(_rng(3), (512, 512), READ_TIMES, pixel_depth_um=0.0)
    thick = cosmic_ray_deposits(_rng(3), (512, 512), READ_TIMES, pixel_depth_um=50.0)
    np.testing.assert_array_equal(thin.event_dedx, thick.event_dedx)
    assert thick.electrons.sum() > 3 * thin.electrons.sum()


def test_select_of_quadrants_reassembles_the_frame(frame):
    ny, nx = FRAME
    cuts_y, cuts_x = (0, 1500, ny), (0, 2900, nx)
    parts = []
    for y0, y1 in zip(cuts_y[:-1], cuts_y[1:]):
        for x0, x1 in zip(cuts_x[:-1], cuts_x[1:]):
            part = frame.select(y0, y1, x0, x1)
            assert part.shape == (y1 - y0, x1 - x0)
            assert np.all((part.y >= 0) & (part.y < y1 - y0))
            assert np.all((part.x >= 0) & (part.x < x1 - x0))
            assert np.all((part.event_y >= -0.5) & (part.event_y < y1 - y0 - 0.5))
            parts.append((part, y0, x0))
    y = np.concatenate([p.y + y0 for p, y0, _ in parts])
    x = np.concatenate([p.x + x0 for p, _, x0 in parts])
    read = np.concatenate([p.read for p, _, _ in parts])
    electrons = np.concatenate([p.electrons for p, _, _ in parts])
    order = np.lexsort((x, y, read))
    np.testing.assert_array_equal(y[order], frame.y)
    np.testing.assert_array_equal(x[order], frame.x)
    np.testing.assert_array_equal(read[order], frame.read)
    np.testing.assert_array_equal(electrons[order], frame.electrons)
    assert sum(p.n_events for p, _, _ in parts) == frame.n_events
    start_y = np.sort(np.concatenate([p.event_y + y0 for p, y0, _ in parts]))
    np.testing.assert_array_equal(start_y, np.sort(frame.event_y))


def test_a_window_and_a_rectangle_work_like_the_frame():
    for shape in [(72, 72), (30, 200)]:
        cr = cosmic_ray_deposits(_rng(4), shape, READ_TIMES, flux=5000.0)
        assert cr.shape == shape and len(cr) > 0
        assert np.all((cr.y >= 0) & (cr.y < shape[0]) & (cr.x >= 0) & (cr.x < shape[1]))


# --- reproducibility and arguments --------------------------------------------

_FIELDS = ("y", "x", "read", "electrons", "event_read", "event_y", "event_x",
           "event_angle", "event_length_um", "event_dedx")


def test_same_generator_state_gives_identical_arrays():
    a = cosmic_ray_deposits(_rng(99), (1024, 1024), READ_TIMES)
    b = cosmic_ray_deposits(_rng(99), (1024, 1024), READ_TIMES)
    for name in _FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype
    c = cosmic_ray_deposits(_rng(100), (1024, 1024), READ_TIMES)
    assert c.n_events != a.n_events or not np.array_equal(c.event_y, a.event_y)
    assert len(c) != len(a) or not np.array_equal(c.electrons, a.electrons)


@pytest.mark.parametrize("read_times", [[], [[1.0, 2.0]], [2.0, 1.0], [-1.0, 1.0],
                                        [1.0, np.nan]])
def test_bad_read_times_are_rejected(read_times):
    with pytest.raises(ValueError):
        cosmic_ray_deposits(_rng(0), (8, 8), np.asarray(read_times, dtype=float))


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError):
        cosmic_ray_deposits(_rng(0), (0, 8), READ_TIMES)

"""Cosmic-ray hits on the WFI detectors (a physics kernel).

The model is romanisim's (``romanisim.cr``), with its default figures
(``romanisim.models.parameters.cr``):

* events arrive at a rate of 8 cm^-2 s^-1, the value assumed by the JWST
  exposure time calculator, over the area that can be hit (romanisim takes
  16.8 cm^2 for a full SCA; here the area is computed from the shape and the
  pixel pitch, 16.78 cm^2 for 4096 x 4096 pixels of 10 um);
* each event starts at a uniformly distributed point of that area and travels
  in a uniformly distributed direction;
* its path length in the detector plane follows a power law
  dN/dL ~ L^-4.33 between 10 um and 2000 um (Miles et al. 2021);
* its energy loss per unit path, dE/dx, follows a Moyal distribution
  (location 120 eV/um, scale 50 eV/um) truncated to [10, 10000] eV/um;
* in every pixel the track crosses, with a chord of c pixels in the detector
  plane, it travels sqrt(c^2 + (depth / size)^2) pixels in three dimensions
  (pixels 10 um across and 5 um deep), and frees a Poisson number of
  electrons with mean dE/dx times that path over 0.5 eV per electron (the
  conversion romanisim uses).

The samplers are exact: path lengths by the analytic inverse of the
truncated power law's cumulative distribution, and dE/dx from the identity
that ``z = -ln(N^2)``, with N standard normal, follows the standard Moyal
distribution (``N^2`` is chi-squared with one degree of freedom), so that
``location + scale * z`` is the Moyal energy loss; the truncation is by
rejection (about 0.3 per cent of draws fall below 10 eV/um with the default
figures and are redrawn).

Tracks are rasterised exactly and all at once: the points where each track
crosses the pixel boundaries (half-integer coordinates) are merged and sorted
per track, and the pieces between consecutive points are the chords.  Unlike
romanisim, a track leaving the area is cut where it crosses the edge, rather
than having its end point's coordinates clipped one by one.

Events are drawn once for the whole frame, read by read, so a track crossing
the boundary between two tiles of that frame deposits consistently in both;
:meth:`CosmicRays.select` hands each tile its share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CosmicRays",
    "cosmic_ray_deposits",
    "rasterize_segments",
    "sample_dedx",
    "sample_path_lengths",
]


@dataclass(frozen=True, eq=False)
class CosmicRays:
    """Electrons deposited by cosmic rays in a rectangle of pixels, read by read.

    Deposits are unique ``(read, y, x)`` rows sorted in that order: all the
    charge that arrives in one pixel during one read, from any number of
    events, is summed into one row.  The charge of read ``k`` arrives between
    the end of read ``k - 1`` and the end of read ``k``, so it is first seen
    in read ``k`` and stays in every later read.

    Attributes
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the rectangle the pixel coordinates refer to.
    y, x : numpy.ndarray of int32
        Pixel indices (row, column) of each deposit, in ``[0, ny)`` and ``[0, nx)``.
    read : numpy.ndarray of int16
        1-based index of the read in which the charge arrives.
    electrons : numpy.ndarray of float32
        Electrons deposited (whole numbers).
    event_read : numpy.ndarray of int16
        Truth, one entry per event: the read in which it happened.
    event_y, event_x : numpy.ndarray of float64
        Truth: the event's start point in continuous pixel coordinates
        (pixel centres at integers, pixel edges at half-integers).
    event_angle : numpy.ndarray of float64
        Truth: the track's direction in radians, counter-clockwise from +x
        towards +y.
    event_length_um : numpy.ndarray of float64
        Truth: the track's length in the detector plane in microns, as drawn
        (before any part beyond the edge of the frame is cut).
    event_dedx : numpy.ndarray of float64
        Truth: energy loss in eV per micron of path.
    """

    shape: tuple[int, int]
    y: np.ndarray
    x: np.ndarray
    read: np.ndarray
    electrons: np.ndarray
    event_read: np.ndarray
    event_y: np.ndarray
    event_x: np.ndarray
    event_angle: np.ndarray
    event_length_um: np.ndarray
    event_dedx: np.ndarray

    def __len__(self) -> int:
        """The number of deposits (unique ``(read, y, x)`` rows)."""
        return len(self.electrons)

    @property
    def n_events(self) -> int:
        """The number of events in the truth arrays."""
        return len(self.event_read)

    def select(self, y0: int, y1: int, x0: int, x1: int) -> CosmicRays:
        """The deposits in rows ``[y0, y1)`` and columns ``[x0, x1)``.

        Pixel coordinates of the result are relative to ``(y0, x0)``, and its
        ``shape`` is ``(y1 - y0, x1 - x0)``.  An event's truth goes with the
        rectangle containing its start point (the continuous coordinates
        ``[y0 - 0.5, y1 - 0.5) x [x0 - 0.5, x1 - 0.5)``), shifted likewise,
        so a set of rectangles tiling the frame shares out both the deposits
        and the events without repeats; the charge of an event may still
        reach beyond the rectangle that lists it.

        Parameters
        ----------
        y0, y1, x0, x1 : int
            The rectangle, half-open, in this object's pixel indices.

        Returns
        -------
        CosmicRays
            The deposits and events of the rectangle.
        """
        y0, y1, x0, x1 = int(y0), int(y1), int(x0), int(x1)
        if y1 < y0 or x1 < x0:
            raise ValueError(f"inverted rectangle y[{y0}, {y1}) x[{x0}, {x1})")
        keep = (self.y >= y0) & (self.y < y1) & (self.x >= x0) & (self.x < x1)
        own = ((self.event_y >= y0 - 0.5) & (self.event_y < y1 - 0.5)
               & (self.event_x >= x0 - 0.5) & (self.event_x < x1 - 0.5))
        return CosmicRays(
            shape=(y1 - y0, x1 - x0),
            y=(self.y[keep] - y0).astype(np.int32),
            x=(self.x[keep] - x0).astype(np.int32),
            read=self.read[keep],
            electrons=self.electrons[keep],
            event_read=self.event_read[own],
            event_y=self.event_y[own] - y0,
            event_x=self.event_x[own] - x0,
            event_angle=self.event_angle[own],
            event_length_um=self.event_length_um[own],
            event_dedx=self.event_dedx[own],
        )


def sample_path_lengths(generator: np.random.Generator, n: int, *, slope: float = -4.33,
                        length_range: tuple[float, float] = (10.0, 2000.0)) -> np.ndarray:
    """Draw path lengths from a power law truncated to ``length_range``.

    The density is proportional to ``L**slope`` for ``lo <= L <= hi``; the
    draw inverts its cumulative distribution analytically (log-uniform when
    ``slope == -1``).

    Parameters
    ----------
    generator : numpy.random.Generator
        Source of randomness (one uniform deviate per length).
    n : int
        Number of lengths.
    slope : float
        Logarithmic slope of the density (Miles et al. 2021: -4.33).
    length_range : tuple of float
        ``(lo, hi)``, with ``0 < lo <= hi``; same units as the result.

    Returns
    -------
    numpy.ndarray of float64
        ``n`` lengths.
    """
    lo, hi = (float(v) for v in length_range)
    if not 0 < lo <= hi:
        raise ValueError(f"length_range must satisfy 0 < lo <= hi, got {length_range}")
    u = generator.random(n)
    k = slope + 1.0
    if k == 0.0:
        lengths = lo * (hi / lo) ** u
    else:
        a, b = lo ** k, hi ** k
        lengths = (a + u * (b - a)) ** (1.0 / k)
    return np.clip(lengths, lo, hi)


def sample_dedx(generator: np.random.Generator, n: int, *, location: float = 120.0,
                scale: float = 50.0,
                dedx_range: tuple[float, float] = (10.0, 10000.0)) -> np.ndarray:
    """Draw energy losses from a Moyal distribution truncated to ``dedx_range``.

    The Moyal density is proportional to ``exp(-(z + exp(-z)) / 2)`` with
    ``z = (dedx - location) / scale``.  If N is standard normal, ``-ln(N**2)``
    has exactly this distribution of ``z``; draws outside the range are
    rejected and drawn again until all ``n`` are inside.

    Parameters
    ----------
    generator : numpy.random.Generator
        Source of randomness.
    n : int
        Number of values.
    location, scale : float
        Moyal location (the mode) and scale, in eV per micron.
    dedx_range : tuple of float
        ``(lo, hi)`` in eV per micron.  The range must hold a reasonable
        fraction of the distribution, or rejection takes long.

    Returns
    -------
    numpy.ndarray of float64
        ``n`` values of dE/dx in eV per micron.
    """
    lo, hi = (float(v) for v in dedx_range)
    if not lo < hi or scale <= 0:
        raise ValueError(f"need lo < hi and scale > 0, got dedx_range={dedx_range}, "
                         f"scale={scale}")
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        with np.errstate(divide="ignore"):
            dedx = location - scale * np.log(generator.standard_normal(todo.size) ** 2)
        ok = (dedx >= lo) & (dedx <= hi)
        out[todo[ok]] = dedx[ok]
        todo = todo[~ok]
    return out


def _concatenated_ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Owner index and value of ``concatenate([arange(s, s + c) for s, c in ...])``."""
    owner = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    values = starts[owner] + (np.arange(owner.size) - first[owner])
    return owner, values


def rasterize_segments(y0, x0, y1, x1, shape: tuple[int, int], *,
                       min_chord: float = 1e-9
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels crossed by straight segments and the chord length in each.

    Pixel ``(j, i)`` is the square ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``
    of continuous coordinates ``(y, x)``.  Each segment is first cut to the
    rectangle ``[-0.5, ny - 0.5] x [-0.5, nx - 0.5]``; the chords of the
    pixels it then crosses add up to the length of what is left.  A piece
    running exactly along a pixel boundary is given to the pixel on the
    side of larger coordinate (to the last row or column on the outer edge).
    Pieces shorter than ``min_chord`` pixels, which arise where a segment
    passes through or within rounding error of a pixel corner, are dropped.
    Chords are returned ordered by segment, and along each segment from its
    start; no pixel appears twice for one segment.

    Parameters
    ----------
    y0, x0, y1, x1 : array_like
        Start and end points, broadcast together and flattened.
    shape : tuple of int
        ``(ny, nx)`` of the pixel grid.
    min_chord : float
        Shortest chord kept, in pixels.

    Returns
    -------
    segment : numpy.ndarray of int64
        Index of the segment each chord belongs to.
    y, x : numpy.ndarray of int64
        Pixel indices.
    chord : numpy.ndarray of float64
        Chord lengths in pixels.
    """
    ny, nx = (int(v) for v in shape)
    y0, x0, y1, x1 = (np.ravel(v) for v in np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (y0, x0, y1, x1))))
    dy, dx = y1 - y0, x1 - x0
    length = np.hypot(dy, dx)
    moving = length > 0
    safe = np.where(moving, length, 1.0)
    uy, ux = np.where(moving, dy / safe, 0.0), np.where(moving, dx / safe, 0.0)

    # Cut each segment, parametrised by arc length t in [0, length], to the
    # rectangle (Liang-Barsky).
    t_in = np.zeros_like(length)
    t_out = length.copy()
    for start, u, n in ((y0, uy, ny), (x0, ux, nx)):
        lo, hi = -0.5, n - 0.5
        moves = u != 0
        safe_u = np.where(moves, u, 1.0)
        ta, tb = (lo - start) / safe_u, (hi - start) / safe_u
        t_in = np.where(moves, np.maximum(t_in, np.minimum(ta, tb)), t_in)
        t_out = np.where(moves, np.minimum(t_out, np.maximum(ta, tb)), t_out)
        t_out = np.where(~moves & ((start < lo) | (start > hi)), -np.inf, t_out)
    hit = np.flatnonzero(t_out > t_in)
    y0, x0, uy, ux = y0[hit], x0[hit], uy[hit], ux[hit]
    t_in, t_out = t_in[hit], t_out[hit]
    k = hit.size

    # Per axis: the pixel holding the start of the cut segment, and the pixel
    # boundaries m + 1/2 strictly between its two ends, each crossed once.
    starts, crossings = [], []
    for start, u, n in ((y0, uy, ny), (x0, ux, nx)):
        a = np.clip(start + t_in * u, -0.5, n - 0.5)
        b = np.clip(start + t_out * u, -0.5, n - 0.5)
        first_pixel = np.where(u < 0, np.ceil(a + 0.5) - 1, np.floor(a + 0.5))
        starts.append(np.clip(first_pixel, 0, n - 1).astype(np.int64))
        lower, upper = np.minimum(a, b), np.maximum(a, b)
        m_first = np.floor(lower - 0.5).astype(np.int64) + 1
        count = np.maximum(np.ceil(upper - 0.5).astype(np.int64) - m_first, 0)
        owner, m = _concatenated_ranges(m_first, count)
        t = np.clip((m + 0.5 - start[owner]) / u[owner], t_in[owner], t_out[owner])
        crossings.append((owner, t, np.sign(u[owner]).astype(np.int64)))

    # Merge the ends and both axes' crossings, sorted along each segment;
    # a crossing changes the pixel index of its axis by +-1.
    (own_y, t_y, s_y), (own_x, t_x, s_x) = crossings
    idx = np.arange(k)
    zeros = np.zeros(k, dtype=np.int64)
    seg = np.concatenate([idx, idx, own_y, own_x])
    t = np.concatenate([t_in, t_out, t_y, t_x])
    rank = np.concatenate([zeros, zeros + 2, np.ones(own_y.size + own_x.size, np.int64)])
    step_y = np.concatenate([zeros, zeros, s_y, np.zeros(own_x.size, np.int64)])
    step_x = np.concatenate([zeros, zeros, np.zeros(own_y.size, np.int64), s_x])
    order = np.lexsort((rank, t, seg))
    seg, t, step_y, step_x = seg[order], t[order], step_y[order], step_x[order]

    first = np.searchsorted(seg, idx)
    cum_y, cum_x = np.cumsum(step_y), np.cumsum(step_x)
    iy = starts[0][seg] + cum_y - cum_y[first][seg]
    ix = starts[1][seg] + cum_x - cum_x[first][seg]

    chord = np.diff(t)
    piece = (seg[1:] == seg[:-1]) & (chord >= min_chord) & (chord > 0)
    return hit[seg[:-1][piece]], iy[:-1][piece], ix[:-1][piece], chord[piece]


def cosmic_ray_deposits(generator: np.random.Generator, shape: tuple[int, int],
                        read_times: np.ndarray, *, flux: float = 8.0,
                        pixel_size_um: float = 10.0, pixel_depth_um: float = 5.0,
                        ev_per_electron: float = 0.5, length_slope: float = -4.33,
                        length_range_um: tuple[float, float] = (10.0, 2000.0),
                        dedx_location: float = 120.0, dedx_scale: float = 50.0,
                        dedx_range: tuple[float, float] = (10.0, 10000.0)) -> CosmicRays:
    """Draw the cosmic rays of one exposure of a pixel area and their deposits.

    Parameters
    ----------
    generator : numpy.random.Generator
        Source of randomness; the result depends only on its state (and the
        other arguments), bit for bit.
    shape : tuple of int
        ``(ny, nx)`` of the pixel area that can be hit.
    read_times : array_like
        Times in seconds at the end of reads 1, ..., nreads, non-decreasing
        and non-negative; read ``k`` collects the events between
        ``read_times[k - 2]`` (0, the reset, for ``k = 1``) and
        ``read_times[k - 1]``.
    flux : float
        Event rate in cm^-2 s^-1.
    pixel_size_um, pixel_depth_um : float
        Pixel pitch and depth in microns.
    ev_per_electron : float
        Energy deposited per electron freed, in eV.
    length_slope : float
        Logarithmic slope of the path-length distribution.
    length_range_um : tuple of float
        Range of path lengths in the detector plane, in microns.
    dedx_location, dedx_scale : float
        Moyal parameters of the energy loss, in eV per micron.
    dedx_range : tuple of float
        Range of the energy loss, in eV per micron.

    Returns
    -------
    CosmicRays
        The deposits, unique per ``(read, y, x)``, and each event's truth.
    """
    ny, nx = (int(v) for v in shape)
    if ny <= 0 or nx <= 0:
        raise ValueError(f"shape must be positive, got {shape}")
    times = np.asarray(read_times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)):
        raise ValueError("read_times must be a non-empty 1-D array of finite times")
    durations = np.diff(times, prepend=0.0)
    if np.any(durations < 0):
        raise ValueError("read_times must be non-negative and non-decreasing")
    if flux < 0 or pixel_size_um <= 0 or pixel_depth_um < 0 or ev_per_electron <= 0:
        raise ValueError("need flux >= 0, pixel_size_um > 0, pixel_depth_um >= 0 "
                         "and ev_per_electron > 0")
    if times.size > np.iinfo(np.int16).max:
        raise ValueError(f"at most {np.iinfo(np.int16).max} reads, got {times.size}")

    area_cm2 = ny * nx * (pixel_size_um * 1e-4) ** 2
    counts = generator.poisson(flux * area_cm2 * durations)
    n = int(counts.sum())
    event_read = np.repeat(np.arange(1, times.size + 1, dtype=np.int16), counts)
    event_y = generator.random(n) * ny - 0.5
    event_x = generator.random(n) * nx - 0.5
    event_angle = generator.random(n) * (2 * np.pi)
    event_length_um = sample_path_lengths(generator, n, slope=length_slope,
                                          length_range=length_range_um)
    event_dedx = sample_dedx(generator, n, location=dedx_location, scale=dedx_scale,
                             dedx_range=dedx_range)

    length_px = event_length_um / pixel_size_um
    seg, y, x, chord = rasterize_segments(
        event_y, event_x,
        event_y + length_px * np.sin(event_angle), event_x + length_px * np.cos(event_angle),
        (ny, nx))
    path_um = pixel_size_um * np.sqrt(chord ** 2 + (pixel_depth_um / pixel_size_um) ** 2)
    electrons = generator.poisson(event_dedx[seg] * path_um / ev_per_electron)

    key = (event_read[seg].astype(np.int64) - 1) * (ny * nx) + y * nx + x
    key, where = np.unique(key, return_inverse=True)
    total = np.bincount(where, weights=electrons, minlength=key.size)
    return CosmicRays(
        shape=(ny, nx),
        y=((key // nx) % ny).astype(np.int32),
        x=(key % nx).astype(np.int32),
        read=(key // (ny * nx) + 1).astype(np.int16),
        electrons=total.astype(np.float32),
        event_read=event_read,
        event_y=event_y,
        event_x=event_x,
        event_angle=event_angle,
        event_length_um=event_length_um,
        event_dedx=event_dedx,
    )

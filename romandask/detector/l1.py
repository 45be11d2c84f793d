"""One tile of L1: ideal counts in, raw uint16 resultants and group DQ out.

The tile is a rectangle of the detector *frame* (the simulated window plus
its 4-pixel reference border).  Its inputs are the expected counts on the
rectangle grown by one pixel (IPC reaches one pixel), the detector model, and
what the (exposure, SCA) shares across tiles (:class:`~.readout.Readout`).
Random draws of the charge are keyed by pixel (see :mod:`.forward`), the
rest by tile, so the result does not depend on which worker runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import rng
from ..instrument.matables import MATable
from .forward import TileInputs, finish_resultants, ramp_means
from .readout import Readout
from .reference import NBORDER

#: romanisim's persistence model (Fermi function of the fluence, power law in
#: time; romanisim.parameters.persistence): amplitude in e-/s at 1000 s.
PERSISTENCE = dict(A=0.017, x0=6.0e4, dx=5.0e4, alpha=0.045, gamma=1.0, half_well=5.0e4)


def persistence_amplitude(fluence: np.ndarray) -> np.ndarray:
    """Persistence current (e-/s) 1000 s after a fluence (e-), romanisim's Fermi model.

    Linear in the fluence below half well, a Fermi step in the fluence above.
    """
    p = PERSISTENCE
    x = np.maximum(np.asarray(fluence, np.float64), 0.0)

    def fermi(v):
        return p["A"] / (1.0 + np.exp(-(v - p["x0"]) / p["dx"])) * (v / p["x0"]) ** p["alpha"]

    hw = p["half_well"]
    return np.where(x < hw, fermi(hw) * x / hw, fermi(np.maximum(x, hw)))


def persistence_weights(gap: float, ma_table: MATable) -> np.ndarray:
    """Electrons in each read per unit amplitude, ``gap`` s after the earlier exposure.

    The current falls as (t / 1000 s)^-gamma; read k collects its integral
    over (t_{k-1}, t_k].  Index 0 (the reset) is 0.
    """
    gamma = PERSISTENCE["gamma"]
    t = gap + ma_table.frame_time * np.arange(ma_table.nreads + 1)
    if gamma == 1.0:
        integral = 1000.0 * np.log(t)
    else:
        integral = 1000.0 ** gamma * t ** (1.0 - gamma) / (1.0 - gamma)
    return np.concatenate([[0.0], np.diff(integral)])


@dataclass(frozen=True)
class L1Tile:
    """Where a tile sits and how to draw it; small and picklable."""

    seed: int
    exposure: int
    sca: int
    tile: int
    rows: tuple[int, int]           # frame rows [start, stop)
    cols: tuple[int, int]           # frame columns [start, stop)
    window: int
    ma_table: MATable
    nresultants_max: int
    persistence_gap: float | None = None  # s since the earlier exposure ended


def charge_key(seed: int, exposure: int, sca: int) -> int:
    """The 64-bit key of the per-pixel charge draws of one (exposure, SCA)."""
    return int(rng.generator(seed, "l1", exposure, sca).integers(2 ** 63, dtype=np.int64))


def grown_rectangle(rows: tuple[int, int], cols: tuple[int, int], depth: int, frame: int
                    ) -> tuple[tuple[slice, slice], tuple[tuple[int, int], tuple[int, int]]]:
    """A frame rectangle grown by ``depth`` pixels: its part within the frame
    (row and column slices) and the padding that restores the rest."""
    r0, r1 = max(rows[0] - depth, 0), min(rows[1] + depth, frame)
    c0, c1 = max(cols[0] - depth, 0), min(cols[1] + depth, frame)
    pad = ((r0 - (rows[0] - depth), rows[1] + depth - r1),
           (c0 - (cols[0] - depth), cols[1] + depth - c1))
    return (slice(r0, r1), slice(c0, c1)), pad


def extended_region(model, rows: tuple[int, int], cols: tuple[int, int], depth: int):
    """The Region of a frame rectangle grown by ``depth`` pixels on every side.

    Beyond the frame, every array repeats its edge (reference pixels: no
    signal, identity IPC).
    """
    (rs, cs), pad = grown_rectangle(rows, cols, depth, model.frame_shape[0])
    region = model.region(rs, cs)
    if not any(any(side) for side in pad):
        return region  # inside the frame: nothing to pad
    out = {}
    for name, value in vars(region).items():
        if isinstance(value, np.ndarray) and value.ndim >= 2:
            width = [(0, 0)] * (value.ndim - 2) + list(pad)
            out[name] = np.pad(value, width, mode="edge")
        else:
            out[name] = value
    return type(region)(**out)


def science_mask(rows: tuple[int, int], cols: tuple[int, int], frame: int) -> np.ndarray:
    """True on light-sensitive pixels of a frame rectangle (may extend past the frame)."""
    y = np.arange(rows[0], rows[1])
    x = np.arange(cols[0], cols[1])
    iy = (y >= NBORDER) & (y < frame - NBORDER)
    ix = (x >= NBORDER) & (x < frame - NBORDER)
    return iy[:, None] & ix[None, :]


def simulate_tile(spec: L1Tile, model, expected: np.ndarray, readout: Readout,
                  previous: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw resultants (uint16) and group DQ (uint8) of one tile.

    ``expected`` is the ideal count image on the tile grown by one pixel
    (electrons over the exposure; 0 off the science array); ``previous``,
    if given, the same for the earlier exposure of this SCA (persistence).
    Both outputs are (nresultants_max, ny, nx); resultants beyond this
    exposure's table are 0.
    """
    frame = spec.window + 2 * NBORDER
    (y0, y1), (x0, x1) = spec.rows, spec.cols
    ext_rows, ext_cols = (y0 - 1, y1 + 1), (x0 - 1, x1 + 1)
    region = extended_region(model, spec.rows, spec.cols, 1)
    science = science_mask(ext_rows, ext_cols, frame)
    persistence = weights = None
    if previous is not None and spec.persistence_gap is not None:
        persistence = np.where(science, persistence_amplitude(previous * region.flat), 0.0)
        weights = persistence_weights(spec.persistence_gap, spec.ma_table)

    crs = None
    if readout.cosmic_rays is not None:
        sel = readout.cosmic_rays.select(ext_rows[0], ext_rows[1], ext_cols[0], ext_cols[1])
        keep = science[sel.y, sel.x]
        crs = {"row": sel.y[keep], "col": sel.x[keep], "read": sel.read[keep],
               "electrons": sel.electrons[keep]}

    row_stride = frame + 2
    pixel0 = (ext_rows[0] + 1) * row_stride + (ext_cols[0] + 1)
    inputs = TileInputs(np.where(science, expected, 0.0), region, science, persistence)
    means, first_sat = ramp_means(inputs, spec.ma_table,
                                  charge_key(spec.seed, spec.exposure, spec.sca),
                                  pixel0, row_stride, crs, weights)

    inner = (slice(1, -1), slice(1, -1))
    tile_science = science[inner]
    gen = rng.generator(spec.seed, "l1", spec.exposure, spec.sca, 1 + spec.tile)
    reference_level = region.sref[inner] + region.reset_noise[inner] * gen.standard_normal(
        tile_science.shape, dtype=np.float32)
    reads = np.array([len(r) for r in spec.ma_table.read_pattern], np.float64)
    data, dq = finish_resultants(
        means, tile_science, model.biascorr(slice(y0, y1), slice(x0, x1), spec.ma_table),
        region.read_noise[inner], reads,
        readout.row_noise(slice(y0, y1), slice(x0, x1), spec.window), gen, reference_level,
        first_sat, spec.ma_table)

    nres, nmax = spec.ma_table.nresultants, spec.nresultants_max
    if nmax > nres:
        fill = ((0, nmax - nres), (0, 0), (0, 0))
        data, dq = np.pad(data, fill), np.pad(dq, fill)
    return data, dq

"""Reference data of one WFI detector (SCA): gain, noise, bias, dark, flat,
non-linearity, inter-pixel capacitance and bad-pixel flags.

Geometry
--------
An H4RG-10 has 4096 x 4096 pixels (:data:`NDET`) read through 32 channels
(:data:`NCHAN`) of 128 columns (:data:`CHANNEL_WIDTH`); a border of 4
reference pixels (:data:`NBORDER`) surrounds the 4088 x 4088 science pixels
(:data:`NSCI`), detector rows and columns 4 to 4091 (0-based).  romandask
simulates a central *window* of N x N science pixels; its *frame* is the
window plus the detector's reference border, (N + 8) x (N + 8) pixels.
:func:`frame_index` maps frame positions to detector indices.  Every method
of a :class:`DetectorModel` takes a rectangle of the frame.

Conventions
-----------
The arrays follow the calibration files of romanimpreprocess (its CALDIR):

* *linearity* (``linearitylegendre``): a raw signal S (DN) maps to the
  linearised signal ``Slin(S) = sum_L c_L P_L(z)`` (DN), with
  ``z = -1 + 2 (S - Smin) / (Smax - Smin)`` and P_L the Legendre
  polynomials; beyond ``|z| = 1`` the curve continues along its tangent.
  ``Slin(Sref) = 0``: Sref is the raw level of an empty well;
* *IPC* (``ipc4d``): ``K[dy, dx, y, x]`` is the fraction of the charge
  collected in pixel (y, x) that is sensed in pixel (y + dy - 1, x + dx - 1);
  every kernel sums to 1.  Reference pixels have the identity kernel;
* *bias correction* (``biascorr``): DN added to each resultant beyond the
  signal the linearity curve predicts, with ``t0`` the time after reset that
  romanimpreprocess takes as the linearised zero of its dark reference;
* *dark* (``dark``): ``data`` is the mean raw level of each resultant of a
  dark exposure, ``dark_slope`` the dark current in DN/s;
* *readout noise* (``read``): white read noise and reset noise per pixel
  (DN), 1/f noise common to the 32 channels (``C_PINK``) and uncorrelated
  between them (``U_PINK``), and the reference output ``amp33`` (median and
  white noise per sample, its coupling ``M_PINK`` to the common 1/f noise and
  its own 1/f amplitude ``RU_PINK``).

Models
------
:class:`ScalarModel` holds uniform values, romanisim's defaults
(``romanisim.models.parameters.reference_data``: dark current 0.01 e-/s,
gain 2 e-/DN, read noise 5 DN, saturation 55000 DN; pedestal 10000 e-),
with an exactly linear response and no IPC.

:class:`SyntheticModel` draws a realistic detector from (seed, SCA).  Its
figures, with their sources (those marked *assumed* are plausible values
not taken from a measurement):

* gain: 2.0 e-/DN (romanisim); channel-to-channel scatter 1.5 %,
  pixel-to-pixel 2 % (assumed);
* read noise of one read: lognormal, median 5 DN (romanisim), sigma of
  ln 0.1; 0.5 % of pixels three times noisier (assumed);
* reset (kTC) noise: 20 DN, i.e. 40 e-, the sqrt(kTC)/q of a 31 fF
  node at 95 K (assumed capacitance and temperature);
* bias ``Sref``: 12000 DN, channel offsets of sigma 300 DN, pixel offsets of
  sigma 400 DN (assumed); reference pixels have the same statistics;
* saturation: ``Sref`` plus a full well of 45000 DN (90 ke- at 2 e-/DN)
  with 3 % pixel scatter, at most 65000 DN (assumed);
  the linearity range is ``[Sref - 2000, saturation]``;
* non-linearity: ``Slin = d (1 + beta d + gamma d^2)`` with ``d = S - Sref``;
  ``beta`` = 1.2e-6 /DN with 5 % pixel scatter, the inverse of GalSim's
  classical non-linearity (``galsim.roman.nonlinearity_beta`` = -6e-7 /e-)
  at 2 e-/DN, 5 % at full well; ``gamma`` = 1e-12 /DN^2 (assumed).  The
  cubic is converted exactly into order-3 Legendre coefficients, stored as
  float32, so ``Slin(Sref)`` is 0 up to float32 rounding (a few 1e-3 DN).
  Reference pixels are linear;
* dark current: lognormal, median 0.005 e-/s, sigma of ln 0.5 (assumed;
  romanisim uses 0.01 and GalSim ``galsim.roman.dark_current`` 0.015 e-/s,
  both uniform); 1 % warm pixels, 0.1-1 e-/s, and 0.1 % hot pixels,
  1-20 e-/s, both log-uniform and flagged WARM and HOT (assumed);
  0 on reference pixels;
* flat (relative QE): three large-scale plane waves of 1.5 % amplitude
  (RMS ~1.8 %) times 1 % pixel scatter; 0.05 % low-QE pixels (0.3-0.7,
  flagged LOW_QE) and 0.01 % dead pixels (0, flagged DEAD) (assumed);
  1 on reference pixels;
* IPC: the mean kernel is GalSim's ``galsim.roman.ipc_kernel`` (nearest
  neighbours 1.29-1.51 %, diagonals 0.11-0.12 %), each coupling scattered
  by 3 % per pixel (assumed), the centre 1 minus their sum.  Couplings that
  would reach the reference border are added to the centre, so each kernel
  still sums to 1 and charge is conserved;
* flags: REFERENCE_PIXEL on the border (in ``mask`` and the linearity
  ``dq``), WARM, HOT, LOW_QE and DEAD as above;
* bias correction of resultant i: a pixel offset (sigma 2 DN) plus a reset
  transient ``A exp(-tbar_i / tau)``, A = 30 DN with 20 % pixel scatter,
  tau = 10 s (assumed); 0 on reference pixels; ``t0`` is 0 (the well is at Sref at reset);
* readout noise: ``C_PINK`` 3 DN, ``U_PINK`` 1 DN, amp33 median 12000 DN
  plus a slow row drift of 10 DN amplitude, its white noise 4 DN,
  ``M_PINK`` 1, ``RU_PINK`` 1 DN (assumed).

The synthetic detector is drawn in 128 x 128 blocks of the full detector,
each from its own random stream, ``rng.generator(seed, "detector", sca,
block_row, block_col)``, drawing every per-pixel field in a fixed order;
large-scale terms are functions of the detector coordinates with parameters
from ``(sca, 1000)`` and channel terms from ``(sca, 2000)``.  A block lies
in one channel, so every value depends only on the pixel, and any rectangle
equals, bit for bit, the same pixels of any larger one.

:class:`CalDirModel` reads the same quantities from romanimpreprocess-style
ASDF files; :func:`write_reffiles` writes such a set from any full-frame
model, so that reading it back reproduces the model exactly.
"""

from __future__ import annotations

import math
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import asdf
import numpy as np
from roman_datamodels.dqflags import pixel as pixelflags

from ..errors import InputError
from ..instrument.matables import MATable
from ..rng import generator

__all__ = [
    "CHANNEL_WIDTH",
    "NBORDER",
    "NCHAN",
    "NDET",
    "NSCI",
    "MEAN_IPC",
    "OPTIONAL_KINDS",
    "REQUIRED_KINDS",
    "CalDirModel",
    "DetectorModel",
    "Region",
    "ScalarModel",
    "SyntheticFigures",
    "SyntheticModel",
    "channel_of",
    "frame_index",
    "inverse_linearize",
    "legendre_value",
    "linearize",
    "resolve_caldir",
    "write_reffiles",
]

#: Width of the reference-pixel border (pixels).
NBORDER = 4
#: Pixels per side of the detector.
NDET = 4096
#: Science pixels per side.
NSCI = NDET - 2 * NBORDER
#: Readout channels, each a band of whole columns.
NCHAN = 32
#: Columns per readout channel.
CHANNEL_WIDTH = NDET // NCHAN

_REFERENCE = np.uint32(pixelflags.REFERENCE_PIXEL)


# --------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------

def frame_index(window: int) -> np.ndarray:
    """Detector index (0..4095) of each frame row, or column, of a window.

    Frame positions 0-3 are the first reference rows, N+4 to N+7 the last
    ones, and 4 to N+3 the central N science pixels.  For N = 4088 this is the
    identity.
    """
    window = _check_window(window)
    first = NBORDER + (NSCI - window) // 2
    return np.concatenate([np.arange(NBORDER), np.arange(first, first + window),
                           np.arange(NDET - NBORDER, NDET)]).astype(np.int64)


def channel_of(detector_column):
    """Readout channel (0-31) of a detector column, or of an array of them."""
    return detector_column // CHANNEL_WIDTH


def _check_window(window) -> int:
    if isinstance(window, bool) or int(window) != window or not 2 <= window <= NSCI \
            or window % 2:
        raise ValueError(f"window must be an even integer from 2 to {NSCI}, got {window!r}")
    return int(window)


def _positions(s: slice, n: int, axis: str) -> np.ndarray:
    """Frame positions of a slice (step 1, within 0..n)."""
    start = 0 if s.start is None else s.start
    stop = n if s.stop is None else s.stop
    if s.step not in (None, 1) or not 0 <= start < stop <= n:
        raise ValueError(f"{axis} must be a non-empty slice of 0..{n} with step 1, got {s}")
    return np.arange(start, stop)


def _runs(index: np.ndarray, period: int | None = None):
    """Split increasing indices into maximal runs of consecutive values.

    Yields ``(output slice, source start)``; with ``period``, runs also break
    where ``index // period`` changes.
    """
    step = np.diff(index) != 1
    if period is not None:
        step |= np.diff(index // period) != 0
    edges = np.concatenate([[0], np.flatnonzero(step) + 1, [len(index)]])
    for a, b in zip(edges[:-1], edges[1:]):
        yield slice(int(a), int(b)), int(index[a])


# --------------------------------------------------------------------------
# linearity
# --------------------------------------------------------------------------

def legendre_value(z, coeffs) -> tuple[np.ndarray, np.ndarray]:
    """``sum_L c_L P_L(z)`` and its derivative in z, continued linearly past ``|z| = 1``.

    ``coeffs`` has the order on its first axis, the rest broadcasting with
    ``z``.  Beyond ``|z| = 1`` the value follows the tangent at ``z = +-1``
    (romanimpreprocess's extrapolation).  Returns float64 arrays.
    """
    z = np.asarray(z, np.float64)
    coeffs = np.asarray(coeffs, np.float64)
    zc = np.clip(z, -1.0, 1.0)
    value = coeffs[0] + np.zeros_like(zc)
    slope = np.zeros_like(value)
    p_prev, p = np.ones_like(zc), zc                 # P_0, P_1
    d_prev, d = np.zeros_like(zc), np.ones_like(zc)  # P_0', P_1'
    for order in range(1, len(coeffs)):
        value += coeffs[order] * p
        slope += coeffs[order] * d
        if order + 1 < len(coeffs):
            # Bonnet's recursion, and P'_{L+1} = P'_{L-1} + (2L + 1) P_L
            p_prev, p = p, ((2 * order + 1) * zc * p - order * p_prev) / (order + 1)
            d_prev, d = d, d_prev + (2 * order + 1) * p_prev
    value += slope * (z - zc)
    return value, slope


def _z(signal, region: "Region") -> np.ndarray:
    smin = region.smin.astype(np.float64)
    return -1.0 + 2.0 * (np.asarray(signal, np.float64) - smin) / (region.smax - smin)


def linearize(signal, region: "Region") -> np.ndarray:
    """Linearised signal (DN, float64) of raw signal ``signal`` (DN) in ``region``."""
    return legendre_value(_z(signal, region), region.lin_coeffs)[0]


def inverse_linearize(slin, region: "Region", tol: float = 1e-4, start=None,
                      max_iter: int = 50) -> np.ndarray:
    """Raw signal (DN, float64) whose linearised signal is ``slin``.

    Newton's method on the monotonic linearity curve, from the raw signal
    ``start`` (default ``Sref + slin``); each pixel stops once its step is
    below ``tol`` DN, so its result does not depend on the other pixels of the
    call.  Pixels whose curve is not increasing keep their last iterate.
    """
    shape = np.broadcast_shapes(np.shape(slin), region.sref.shape)
    target = np.broadcast_to(np.asarray(slin, np.float64), shape).ravel()
    smin = np.broadcast_to(region.smin.astype(np.float64), shape).ravel()
    half = (np.broadcast_to(region.smax.astype(np.float64), shape).ravel() - smin) / 2.0
    coeffs = region.lin_coeffs.astype(np.float64)
    coeffs = np.broadcast_to(coeffs[(slice(None),) + (None,) * (len(shape) - coeffs.ndim + 1)],
                             coeffs.shape[:1] + shape).reshape(len(coeffs), -1)
    if start is None:
        start = region.sref.astype(np.float64) + target.reshape(shape)
    z = (np.broadcast_to(start, shape).ravel() - smin) / half - 1.0
    active = slice(None)  # every pixel, until some converge
    for _ in range(max_iter):
        value, slope = legendre_value(z[active], coeffs[:, active])
        rising = slope > 0
        step = np.where(rising, (value - target[active]) / np.where(rising, slope, 1.0), 0.0)
        z[active] -= step
        going = rising & (np.abs(step) * half[active] >= tol)
        active = np.arange(z.size)[active][going]
        if active.size == 0:
            break
    return (smin + half * (z + 1.0)).reshape(shape)


def _legendre_from_cubic(smin, smax, sref, beta, gamma) -> np.ndarray:
    """Legendre coefficients (4, ...) of ``d (1 + beta d + gamma d^2)``, ``d = S - Sref``.

    With ``S = Smin + h (1 + z)``, ``h = (Smax - Smin) / 2``, d = a + h z and
    ``a = (Smin + Smax) / 2 - Sref``; the cubic's power coefficients in z are
    turned into Legendre ones with z^2 = (2 P_2 + P_0) / 3 and
    z^3 = (2 P_3 + 3 P_1) / 5.
    """
    h = (smax - smin) / 2.0
    a = (smin + smax) / 2.0 - sref
    p0 = a + beta * a**2 + gamma * a**3
    p1 = h * (1.0 + 2.0 * beta * a + 3.0 * gamma * a**2)
    p2 = h**2 * (beta + 3.0 * gamma * a)
    p3 = gamma * h**3
    return np.stack([p0 + p2 / 3.0, p1 + 0.6 * p3, 2.0 * p2 / 3.0, 0.4 * p3])


# --------------------------------------------------------------------------
# the model interface
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """Reference data of a rectangle of the frame, arrays (ny, nx) unless noted.

    ``gain`` e-/DN; ``read_noise`` DN (sigma of one read); ``reset_noise`` DN;
    ``dark_slope`` DN/s; ``flat`` relative QE; ``saturation`` raw DN;
    ``mask`` DQ bits (``roman_datamodels.dqflags.pixel``); ``lin_coeffs``
    (p+1, ny, nx) Legendre coefficients with ``smin``, ``smax``, ``sref`` (raw
    DN) and ``lin_dq``; ``ipc`` (3, 3, ny, nx) kernels in the ipc4d convention.
    """

    gain: np.ndarray
    read_noise: np.ndarray
    reset_noise: np.ndarray
    dark_slope: np.ndarray
    flat: np.ndarray
    saturation: np.ndarray
    mask: np.ndarray
    lin_coeffs: np.ndarray
    smin: np.ndarray
    smax: np.ndarray
    sref: np.ndarray
    lin_dq: np.ndarray
    ipc: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.gain.shape


_REGION_FIELDS = tuple(f.name for f in fields(Region))
_FLAG_FIELDS = ("mask", "lin_dq")


class DetectorModel(ABC):
    """Reference data of the frame of one SCA's simulated window.

    Rectangles are given as ``rows`` and ``cols`` slices of the frame
    (0 to N + 8, step 1).  Besides the methods below, a model has the
    readout-noise figures ``c_pink``, ``u_pink`` (1/f noise common to the
    channels and of each channel alone), ``m_pink`` (the amp33 output's
    coupling to the common noise) and ``ru_pink`` (its own 1/f noise), all DN.
    A model is not modified after construction.
    """

    c_pink: float
    u_pink: float
    m_pink: float
    ru_pink: float

    def __init__(self, sca: int, window: int):
        if isinstance(sca, bool) or int(sca) != sca or not 1 <= sca <= 18:
            raise ValueError(f"sca must be an integer from 1 to 18, got {sca!r}")
        self.sca = int(sca)
        self.window = _check_window(window)
        self._index = frame_index(self.window)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """Shape of the frame: the window plus the reference border."""
        n = self.window + 2 * NBORDER
        return (n, n)

    def _detector(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Detector rows and columns of a frame rectangle."""
        n = self.frame_shape[0]
        return (self._index[_positions(rows, n, "rows")],
                self._index[_positions(cols, n, "cols")])

    def _detector_rows(self, rows: slice) -> np.ndarray:
        return self._index[_positions(rows, self.frame_shape[0], "rows")]

    @abstractmethod
    def region(self, rows: slice, cols: slice) -> Region:
        """The reference data of a frame rectangle."""

    @abstractmethod
    def biascorr(self, rows: slice, cols: slice, ma_table: MATable) -> np.ndarray:
        """Bias correction (float32, DN, (nresultants, ny, nx)); 0 on reference pixels."""

    @abstractmethod
    def t0(self, ma_table: MATable) -> float:
        """romanimpreprocess's biascorr ``t0`` (s after reset) for an MA table."""

    @abstractmethod
    def amp33_med(self, rows: slice) -> np.ndarray:
        """Median level (float32, DN, (ny, 128)) of the amp33 reference output."""

    @abstractmethod
    def amp33_std(self, rows: slice) -> np.ndarray:
        """White noise (float32, DN, (ny, 128)) of one amp33 sample."""

    @abstractmethod
    def reference_gain(self) -> float:
        """The detector's typical gain (e-/DN): L2 rates are DN/s at this gain."""

    def dark_cube(self, rows: slice, cols: slice, ma_table: MATable) -> np.ndarray:
        """Mean raw level (float32, DN, (nresultants, ny, nx)) of a dark exposure.

        Charge accumulates from the reset, where the raw level is ``Sref``:
        read k, at ``k * frame_time``, is at the raw signal whose linearised
        value is ``dark_slope * k * frame_time``; the reads of each resultant
        are averaged and the bias correction added.  Reference pixels sit at
        ``Sref``.  IPC is left out, as in romanimpreprocess's dark model: it
        conserves charge, so it only moves the difference between neighbours'
        dark currents, a fraction of a DN except beside hot pixels.
        """
        region = self.region(rows, cols)
        slope = region.dark_slope.astype(np.float64)
        # Newton starts from the tangent at Sref, which is exact for a linear response
        sref = region.sref.astype(np.float64)
        at_sref, dz = legendre_value(_z(sref, region), region.lin_coeffs)
        ds = dz * 2.0 / (region.smax.astype(np.float64) - region.smin)
        cube = np.empty((ma_table.nresultants, *region.shape))
        for i, reads in enumerate(ma_table.read_pattern):
            total = np.zeros(region.shape)
            for k in reads:
                slin = slope * (k * ma_table.frame_time)
                start = sref + np.where(ds > 0, (slin - at_sref) / np.where(ds > 0, ds, 1.0),
                                        slin)
                total += inverse_linearize(slin, region, start=start)
            cube[i] = total / len(reads)
        reference = (region.mask & _REFERENCE) != 0
        cube[:, reference] = region.sref[reference]
        return (cube + self.biascorr(rows, cols, ma_table)).astype(np.float32)


# --------------------------------------------------------------------------
# uniform values
# --------------------------------------------------------------------------

#: romanisim's pedestal: the reset level in electrons (models/parameters.py).
ROMANISIM_PEDESTAL = 10000.0


class ScalarModel(DetectorModel):
    """Uniform reference data, romanisim's defaults unless given.

    Gain ``gain`` e-/DN, read noise ``read_noise`` DN, dark current
    ``dark_current`` e-/s, saturation ``saturation`` raw DN, reset noise
    ``reset_noise`` DN, bias ``sref`` raw DN (default romanisim's pedestal of
    10000 e- over the gain).  The response is exactly linear,
    ``Slin = S - Sref`` over ``[Sref - 5000, saturation]``; no IPC; flat 1;
    no bias correction (t0 = 0); no correlated noise; the amp33 output sits
    at ``sref`` with the read noise.  The border is flagged REFERENCE_PIXEL,
    with no dark current.
    """

    def __init__(self, sca: int, window: int, gain: float = 2.0, read_noise: float = 5.0,
                 dark_current: float = 0.01, saturation: float = 55000.0,
                 reset_noise: float = 0.0, sref: float | None = None):
        super().__init__(sca, window)
        self.gain = float(gain)
        self.read_noise = float(read_noise)
        self.dark_current = float(dark_current)
        self.saturation = float(saturation)
        self.reset_noise = float(reset_noise)
        self.sref = ROMANISIM_PEDESTAL / self.gain if sref is None else float(sref)
        if not self.sref < self.saturation:
            raise ValueError(f"sref ({self.sref} DN) must be below saturation "
                             f"({self.saturation} DN)")
        self.c_pink = self.u_pink = self.m_pink = self.ru_pink = 0.0

    def __repr__(self) -> str:
        return (f"ScalarModel(sca={self.sca}, window={self.window}, gain={self.gain}, "
                f"read_noise={self.read_noise}, dark_current={self.dark_current}, "
                f"saturation={self.saturation}, reset_noise={self.reset_noise}, "
                f"sref={self.sref})")

    def region(self, rows: slice, cols: slice) -> Region:
        ydet, xdet = self._detector(rows, cols)
        shape = (len(ydet), len(xdet))
        reference = _reference_pixels(ydet, xdet)
        smin, smax = self.sref - 5000.0, self.saturation

        def full(value):
            return np.full(shape, value, np.float32)

        coeffs = np.stack([full((smin + smax) / 2.0 - self.sref), full((smax - smin) / 2.0)])
        flags = np.where(reference, _REFERENCE, np.uint32(0))
        return Region(
            gain=full(self.gain), read_noise=full(self.read_noise),
            reset_noise=full(self.reset_noise),
            dark_slope=np.where(reference, 0.0, self.dark_current / self.gain).astype(np.float32),
            flat=full(1.0), saturation=full(self.saturation), mask=flags,
            lin_coeffs=coeffs, smin=full(smin), smax=full(smax), sref=full(self.sref),
            lin_dq=flags.copy(), ipc=_identity_ipc(shape))

    def biascorr(self, rows: slice, cols: slice, ma_table: MATable) -> np.ndarray:
        ydet, xdet = self._detector(rows, cols)
        return np.zeros((ma_table.nresultants, len(ydet), len(xdet)), np.float32)

    def t0(self, ma_table: MATable) -> float:
        return 0.0

    def reference_gain(self) -> float:
        return self.gain

    def amp33_med(self, rows: slice) -> np.ndarray:
        return np.full((len(self._detector_rows(rows)), CHANNEL_WIDTH), self.sref, np.float32)

    def amp33_std(self, rows: slice) -> np.ndarray:
        return np.full((len(self._detector_rows(rows)), CHANNEL_WIDTH), self.read_noise,
                       np.float32)


def _reference_pixels(ydet: np.ndarray, xdet: np.ndarray) -> np.ndarray:
    """True on reference pixels of the rectangle ``ydet`` x ``xdet``."""
    def border(i):
        return (i < NBORDER) | (i >= NDET - NBORDER)
    return border(ydet)[:, None] | border(xdet)[None, :]


def _identity_ipc(shape: tuple[int, int]) -> np.ndarray:
    ipc = np.zeros((3, 3, *shape), np.float32)
    ipc[1, 1] = 1.0
    return ipc


# --------------------------------------------------------------------------
# synthetic detector
# --------------------------------------------------------------------------

#: Side of the blocks the synthetic detector is drawn in (one channel wide).
BLOCK = CHANNEL_WIDTH

#: The per-pixel fields of the synthetic detector that are drawn (and stored, see
#: :mod:`.stored`): dtype and leading shape.  The Region's other fields follow
#: from these and the geometry.
STORED_FIELDS = {
    "gain": (np.float32, ()), "read_noise": (np.float32, ()),
    "dark_slope": (np.float32, ()), "flat": (np.float32, ()),
    "saturation": (np.float32, ()), "mask": (np.uint32, ()),
    "lin_coeffs": (np.float32, (4,)), "sref": (np.float32, ()),
    "ipc": (np.float32, (3, 3)),
    "bias_offset": (np.float32, ()), "bias_transient": (np.float32, ()),
}
STORED_REGION_FIELDS = tuple(name for name in STORED_FIELDS
                             if name not in ("bias_offset", "bias_transient"))

#: galsim.roman.ipc_kernel before normalisation (GalSim 2.5): element [i, j]
#: is the coupling into a pixel from its neighbour at (y + i - 1, x + j - 1).
_GALSIM_IPC = np.array([[0.001269938, 0.015399776, 0.001199862],
                        [0.013800177, 1.0, 0.015600367],
                        [0.001270391, 0.016129619, 0.001200137]])
#: The same kernel in the ipc4d convention (charge sent from a pixel).
MEAN_IPC = (_GALSIM_IPC / _GALSIM_IPC.sum())[::-1, ::-1].copy()
_IPC_NEIGHBOURS = [(a, b) for a in range(3) for b in range(3) if (a, b) != (1, 1)]


@dataclass(frozen=True)
class SyntheticFigures:
    """The statistics of :class:`SyntheticModel` (see the module docstring)."""

    gain: float = 2.0                     # e-/DN
    gain_channel_scatter: float = 0.015
    gain_pixel_scatter: float = 0.02
    read_noise: float = 5.0               # DN, median of one read
    read_noise_log_sigma: float = 0.1
    noisy_fraction: float = 0.005
    noisy_factor: float = 3.0
    reset_noise: float = 20.0             # DN
    sref: float = 12000.0                 # DN
    sref_channel_sigma: float = 300.0     # DN
    sref_pixel_sigma: float = 400.0       # DN
    full_well: float = 45000.0            # DN above Sref
    full_well_scatter: float = 0.03
    saturation_max: float = 65000.0       # DN
    smin_below_sref: float = 2000.0       # DN
    beta: float = 1.2e-6                  # 1/DN
    beta_scatter: float = 0.05
    gamma: float = 1e-12                  # 1/DN^2
    dark_current: float = 0.005           # e-/s, median
    dark_log_sigma: float = 0.5
    warm_fraction: float = 0.01
    warm_range: tuple[float, float] = (0.1, 1.0)    # e-/s
    hot_fraction: float = 0.001
    hot_range: tuple[float, float] = (1.0, 20.0)    # e-/s
    flat_wave_amplitude: float = 0.015
    flat_waves: int = 3
    flat_max_frequency: float = 1.5       # cycles across the detector
    flat_pixel_scatter: float = 0.01
    low_qe_fraction: float = 5e-4
    low_qe_range: tuple[float, float] = (0.3, 0.7)
    dead_fraction: float = 1e-4
    ipc_scatter: float = 0.03
    bias_offset_sigma: float = 2.0        # DN
    transient_amplitude: float = 30.0     # DN
    transient_scatter: float = 0.2
    transient_tau: float = 10.0           # s
    c_pink: float = 3.0                   # DN
    u_pink: float = 1.0                   # DN
    amp33_level: float = 12000.0          # DN
    amp33_drift: float = 10.0             # DN
    amp33_drift_period: tuple[float, float] = (1000.0, 4000.0)  # rows
    amp33_std: float = 4.0                # DN
    m_pink: float = 1.0
    ru_pink: float = 1.0                  # DN


class SyntheticModel(DetectorModel):
    """A realistic detector drawn from ``(seed, sca)``, independent of how it is sliced.

    The detector is drawn lazily in 128 x 128 blocks; the last
    ``cache_blocks`` blocks used are kept (1.5 MB each; a 1024 x 1024 tile
    grown by one pixel touches up to 121 blocks).  Thread-safe; pickles
    without its cache.
    """

    figures = SyntheticFigures()

    def __init__(self, seed: int, sca: int, window: int, cache_blocks: int = 128):
        super().__init__(sca, window)
        self.seed = int(seed)
        self.cache_blocks = int(cache_blocks)
        fig = self.figures
        smooth = generator(self.seed, "detector", self.sca, 1000)
        n = fig.flat_waves
        self._waves = (smooth.uniform(-fig.flat_max_frequency, fig.flat_max_frequency, n),
                       smooth.uniform(-fig.flat_max_frequency, fig.flat_max_frequency, n),
                       smooth.uniform(0.0, 2.0 * np.pi, n))
        period = smooth.uniform(*fig.amp33_drift_period)
        phase = smooth.uniform(0.0, 2.0 * np.pi)
        channels = generator(self.seed, "detector", self.sca, 2000)
        self._channel_gain = 1.0 + fig.gain_channel_scatter * channels.standard_normal(NCHAN)
        self._channel_sref = fig.sref_channel_sigma * channels.standard_normal(NCHAN)
        drift = fig.amp33_drift * np.sin(2.0 * np.pi * np.arange(NDET) / period + phase)
        self._amp33_med = np.repeat((fig.amp33_level + drift)[:, None], CHANNEL_WIDTH,
                                    axis=1).astype(np.float32)
        self.c_pink, self.u_pink = fig.c_pink, fig.u_pink
        self.m_pink, self.ru_pink = fig.m_pink, fig.ru_pink
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SyntheticModel(seed={self.seed}, sca={self.sca}, window={self.window})"

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_cache"], state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = OrderedDict()
        self._lock = threading.Lock()

    def region(self, rows: slice, cols: slice) -> Region:
        ydet, xdet = self._detector(rows, cols)
        return self._region(self._gather(ydet, xdet, STORED_REGION_FIELDS), ydet, xdet)

    def biascorr(self, rows: slice, cols: slice, ma_table: MATable) -> np.ndarray:
        ydet, xdet = self._detector(rows, cols)
        return self._biascorr(self._gather(ydet, xdet, ("bias_offset", "bias_transient")),
                              ma_table)

    def _region(self, stored: dict[str, np.ndarray], ydet: np.ndarray,
                xdet: np.ndarray) -> Region:
        """The Region of a rectangle from its :data:`STORED_FIELDS`: the fields that
        follow from them (``smin``, ``smax``) or from the geometry (``reset_noise``,
        ``lin_dq``) are computed."""
        reference = _reference_pixels(ydet, xdet)
        fig = self.figures
        return Region(
            **{name: stored[name] for name in STORED_REGION_FIELDS},
            reset_noise=np.full(reference.shape, fig.reset_noise, np.float32),
            smin=(stored["sref"] - np.float32(fig.smin_below_sref)).astype(np.float32),
            smax=stored["saturation"].copy(),
            lin_dq=np.where(reference, _REFERENCE, np.uint32(0)))

    def _biascorr(self, stored: dict[str, np.ndarray], ma_table: MATable) -> np.ndarray:
        decay = np.exp(-ma_table.tbar / self.figures.transient_tau).astype(np.float32)
        return stored["bias_offset"] + stored["bias_transient"] * decay[:, None, None]

    def t0(self, ma_table: MATable) -> float:
        # The forward model resets the well to Sref ("0 e-"), so the reference
        # level is the reset itself, consistent with dark_cube.
        return 0.0

    def reference_gain(self) -> float:
        return self.figures.gain

    def amp33_med(self, rows: slice) -> np.ndarray:
        return self._amp33_med[self._detector_rows(rows)]

    def amp33_std(self, rows: slice) -> np.ndarray:
        return np.full((len(self._detector_rows(rows)), CHANNEL_WIDTH),
                       self.figures.amp33_std, np.float32)

    def _gather(self, ydet: np.ndarray, xdet: np.ndarray, names) -> dict[str, np.ndarray]:
        """Fields ``names`` on the rectangle ``ydet`` x ``xdet``, copied from the blocks."""
        out: dict[str, np.ndarray] = {}
        for oy, y0 in _runs(ydet, BLOCK):
            iy = slice(y0 % BLOCK, y0 % BLOCK + oy.stop - oy.start)
            for ox, x0 in _runs(xdet, BLOCK):
                ix = slice(x0 % BLOCK, x0 % BLOCK + ox.stop - ox.start)
                block = self._block(y0 // BLOCK, x0 // BLOCK)
                for name in names:
                    src = block[name]
                    if name not in out:
                        out[name] = np.empty(src.shape[:-2] + (len(ydet), len(xdet)), src.dtype)
                    out[name][..., oy, ox] = src[..., iy, ix]
        return out

    def _block(self, block_row: int, block_col: int) -> dict[str, np.ndarray]:
        key = (block_row, block_col)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        block = self._draw_block(block_row, block_col)
        with self._lock:
            self._cache[key] = block
            while len(self._cache) > self.cache_blocks:
                self._cache.popitem(last=False)
        return block

    def _draw_block(self, block_row: int, block_col: int) -> dict[str, np.ndarray]:
        """Every per-pixel field of one 128 x 128 block of the detector."""
        fig = self.figures
        rng = generator(self.seed, "detector", self.sca, block_row, block_col)
        shape = (BLOCK, BLOCK)
        # the draws, always all of them and in this order
        n_gain = rng.standard_normal(shape)
        n_read = rng.standard_normal(shape)
        u_noisy = rng.random(shape)
        n_sref = rng.standard_normal(shape)
        n_well = rng.standard_normal(shape)
        n_beta = rng.standard_normal(shape)
        n_dark = rng.standard_normal(shape)
        u_dark_class = rng.random(shape)
        u_dark_rate = rng.random(shape)
        n_flat = rng.standard_normal(shape)
        u_flat_class = rng.random(shape)
        u_low_qe = rng.random(shape)
        n_ipc = rng.standard_normal((len(_IPC_NEIGHBOURS), *shape))
        n_bias = rng.standard_normal(shape)
        n_transient = rng.standard_normal(shape)

        y = (block_row * BLOCK + np.arange(BLOCK))[:, None]
        x = (block_col * BLOCK + np.arange(BLOCK))[None, :]
        reference = _reference_pixels(y[:, 0], x[0])
        science = ~reference
        channel = block_col

        gain = (fig.gain * self._channel_gain[channel]
                * (1.0 + fig.gain_pixel_scatter * n_gain))
        read_noise = (fig.read_noise * np.exp(fig.read_noise_log_sigma * n_read)
                      * np.where(u_noisy < fig.noisy_fraction, fig.noisy_factor, 1.0))

        sref = (fig.sref + self._channel_sref[channel]
                + fig.sref_pixel_sigma * n_sref).astype(np.float32)
        saturation = np.minimum(sref + fig.full_well * (1.0 + fig.full_well_scatter * n_well),
                                fig.saturation_max).astype(np.float32)
        smin = (sref - np.float32(fig.smin_below_sref)).astype(np.float32)  # as _region's
        beta = np.where(science, fig.beta * (1.0 + fig.beta_scatter * n_beta), 0.0)
        gamma = np.where(science, fig.gamma, 0.0)
        lin_coeffs = _legendre_from_cubic(smin.astype(np.float64), saturation.astype(np.float64),
                                          sref.astype(np.float64), beta, gamma)

        hot = u_dark_class < fig.hot_fraction
        warm = ~hot & (u_dark_class < fig.hot_fraction + fig.warm_fraction)
        dark = fig.dark_current * np.exp(fig.dark_log_sigma * n_dark)
        for chosen, (lo, hi) in ((warm, fig.warm_range), (hot, fig.hot_range)):
            dark = np.where(chosen, lo * (hi / lo) ** u_dark_rate, dark)
        dark_slope = np.where(science, dark / gain, 0.0)

        dead = u_flat_class < fig.dead_fraction
        low_qe = ~dead & (u_flat_class < fig.dead_fraction + fig.low_qe_fraction)
        fx, fy, phase = self._waves
        large = 1.0 + fig.flat_wave_amplitude * sum(
            np.cos(2.0 * np.pi * (fx[k] * x + fy[k] * y) / NDET + phase[k])
            for k in range(fig.flat_waves))
        lo, hi = fig.low_qe_range
        flat = np.select([reference, dead, low_qe],
                         [1.0, 0.0, lo + (hi - lo) * u_low_qe],
                         large * (1.0 + fig.flat_pixel_scatter * n_flat))

        mask = np.zeros(shape, np.uint32)
        for chosen, flag in ((warm, pixelflags.WARM), (hot, pixelflags.HOT),
                             (low_qe, pixelflags.LOW_QE), (dead, pixelflags.DEAD)):
            mask |= np.where(chosen & science, np.uint32(flag), np.uint32(0))
        mask |= np.where(reference, _REFERENCE, np.uint32(0))

        # STORED_FIELDS; the Region's other fields follow from them (_region)
        return {
            "gain": gain.astype(np.float32),
            "read_noise": read_noise.astype(np.float32),
            "dark_slope": dark_slope.astype(np.float32),
            "flat": flat.astype(np.float32),
            "saturation": saturation,
            "mask": mask,
            "lin_coeffs": lin_coeffs.astype(np.float32),
            "sref": sref,
            "ipc": self._ipc(n_ipc, y[:, 0], x[0], reference),
            "bias_offset": np.where(science, fig.bias_offset_sigma * n_bias,
                                    0.0).astype(np.float32),
            "bias_transient": np.where(science, fig.transient_amplitude
                                       * (1.0 + fig.transient_scatter * n_transient),
                                       0.0).astype(np.float32),
        }

    def _ipc(self, n_ipc, y, x, reference) -> np.ndarray:
        """IPC kernels of a block: scattered mean couplings, none into the border."""
        kernel = np.zeros((3, 3, len(y), len(x)))
        for (a, b), noise in zip(_IPC_NEIGHBOURS, n_ipc):
            kernel[a, b] = MEAN_IPC[a, b] * (1.0 + self.figures.ipc_scatter * noise)
        # a coupling that would land in the border stays in the pixel
        kernel[0, :, y == NBORDER, :] = 0.0
        kernel[2, :, y == NDET - NBORDER - 1, :] = 0.0
        kernel[:, 0, :, x == NBORDER] = 0.0
        kernel[:, 2, :, x == NDET - NBORDER - 1] = 0.0
        kernel[1, 1] = 1.0 - kernel.sum(axis=(0, 1))
        kernel[:, :, reference] = 0.0
        kernel[1, 1, reference] = 1.0
        return kernel.astype(np.float32)


# --------------------------------------------------------------------------
# CALDIR files
# --------------------------------------------------------------------------

#: Kinds of reference file a CALDIR must hold, and the optional ones.
REQUIRED_KINDS = ("dark", "flat", "gain", "ipc4d", "linearitylegendre", "mask", "read",
                  "saturation")
OPTIONAL_KINDS = ("biascorr",)

_FULL = (NDET, NDET)
#: Arrays of each kind (under ``roman``) and their shapes; a name is a free size.
_ARRAYS = {
    "dark": {"data": ("ngroup", NDET, NDET), "dark_slope": _FULL},
    "flat": {"data": _FULL},
    "gain": {"data": _FULL},
    "ipc4d": {"data": (3, 3, NSCI, NSCI)},
    "linearitylegendre": {"data": ("order+1", NDET, NDET), "Smin": _FULL, "Smax": _FULL,
                          "Sref": _FULL, "dq": _FULL},
    "mask": {"dq": _FULL},
    "read": {"data": _FULL, "resetnoise": _FULL},
    "saturation": {"data": _FULL},
    "biascorr": {"data": ("ngroup", NSCI, NSCI)},
}
_AMP33 = {"med": (NDET, CHANNEL_WIDTH), "std": (NDET, CHANNEL_WIDTH)}
#: Region fields stored in each kind of file: {array name: field}.
_REGION_ARRAYS = {
    "dark": {"dark_slope": "dark_slope"},
    "flat": {"data": "flat"},
    "gain": {"data": "gain"},
    "ipc4d": {"data": "ipc"},
    "linearitylegendre": {"data": "lin_coeffs", "Smin": "smin", "Smax": "smax",
                          "Sref": "sref", "dq": "lin_dq"},
    "mask": {"dq": "mask"},
    "read": {"data": "read_noise", "resetnoise": "reset_noise"},
    "saturation": {"data": "saturation"},
}
#: Kinds whose arrays cover the science pixels only.
_SCIENCE_ONLY = ("ipc4d", "biascorr")
#: Other names a kind's files may carry in their file name.
_FILE_KINDS = {"flat": ("flat", "pflat")}


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ")"


def resolve_caldir(directory, sca: int) -> dict[str, Path]:
    """The reference file of each kind for one SCA in a CALDIR directory.

    Looks for exactly one ``roman_wfi_<kind>_*_SCA<NN>.asdf`` per kind (a flat
    may also be named ``pflat``); the optional kinds may be absent.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(str(directory), "is not a directory",
                         "give the directory holding the CALDIR ASDF files")
    found = {}
    for kind in REQUIRED_KINDS + OPTIONAL_KINDS:
        patterns = [f"roman_wfi_{name}_*_SCA{sca:02d}.asdf"
                    for name in _FILE_KINDS.get(kind, (kind,))]
        matches = sorted({p for pattern in patterns for p in directory.glob(pattern)})
        pattern_text = " or ".join(patterns)
        if len(matches) > 1:
            raise InputError(str(directory),
                             f"{len(matches)} {kind} files match {pattern_text}: "
                             + ", ".join(p.name for p in matches),
                             "keep exactly one per kind and SCA")
        if matches:
            found[kind] = matches[0]
        elif kind in REQUIRED_KINDS:
            raise InputError(str(directory), f"no {kind} file for SCA {sca} ({pattern_text})",
                             f"add the {kind} reference file of SCA {sca:02d}")
    return found


class CalDirModel(DetectorModel):
    """Reference data read from romanimpreprocess-style ASDF files (a CALDIR).

    ``paths`` maps each kind (:data:`REQUIRED_KINDS`, optionally ``biascorr``)
    to a full-frame file of one SCA; every file is checked on construction.
    Arrays are memory-mapped and only the slices asked for are read (a
    compressed array is read whole).  Without a ``biascorr`` file the bias
    correction is 0 and t0 is 0; without a valid ``amp33`` entry in the read
    file the amp33 output and its figures are 0.  ``dark_cube`` and
    ``biascorr`` return the files' cubes, which must have one group per
    resultant of the MA table.
    """

    def __init__(self, paths: dict, sca: int, window: int):
        super().__init__(sca, window)
        where = f"CALDIR for SCA {self.sca:02d}"
        paths = {kind: Path(path) for kind, path in paths.items()}
        unknown = sorted(set(paths) - set(REQUIRED_KINDS + OPTIONAL_KINDS))
        if unknown:
            raise InputError(where, f"unknown reference file kind {', '.join(unknown)}",
                             f"use {', '.join(REQUIRED_KINDS + OPTIONAL_KINDS)}")
        missing = [kind for kind in REQUIRED_KINDS if kind not in paths]
        if missing:
            raise InputError(where, f"no {', '.join(missing)} reference file",
                             "give a file for each of " + ", ".join(REQUIRED_KINDS))
        self.paths = paths
        self._ngroup = {}
        self._t0 = 0.0
        self._reference_gain = None
        for kind in [k for k in REQUIRED_KINDS + OPTIONAL_KINDS if k in paths]:
            path = paths[kind]
            with _open(kind, path) as roman:
                shapes = {name: _check_array(kind, path, roman, name, shape)
                          for name, shape in _ARRAYS[kind].items()}
                if kind == "read":
                    self._read_noise_figures(path, roman)
                elif kind == "biascorr":
                    self._t0 = _number(path, roman, "t0")
            if kind in ("dark", "biascorr"):
                self._ngroup[kind] = shapes["data"][0]

    def _read_noise_figures(self, path: Path, roman: Mapping) -> None:
        anc = roman.get("anc")
        if not isinstance(anc, Mapping):
            raise InputError(str(path), "has no roman.anc with C_PINK and U_PINK",
                             "give a read file made by romanimpreprocess or write_reffiles")
        self.c_pink = _number(path, anc, "C_PINK", "roman.anc.")
        self.u_pink = _number(path, anc, "U_PINK", "roman.anc.")
        amp33 = roman.get("amp33")
        self._has_amp33 = isinstance(amp33, Mapping) and amp33.get("valid") is True
        if self._has_amp33:
            for name, shape in _AMP33.items():
                _check_array("read", path, amp33, name, shape, "roman.amp33.")
            self.m_pink = _number(path, amp33, "M_PINK", "roman.amp33.")
            self.ru_pink = _number(path, amp33, "RU_PINK", "roman.amp33.")
        else:
            self.m_pink = self.ru_pink = 0.0

    def __repr__(self) -> str:
        paths = {kind: str(path) for kind, path in self.paths.items()}
        return f"CalDirModel({paths!r}, sca={self.sca}, window={self.window})"

    def region(self, rows: slice, cols: slice) -> Region:
        ydet, xdet = self._detector(rows, cols)
        arrays = {"ipc": _identity_ipc((len(ydet), len(xdet)))}
        for kind, names in _REGION_ARRAYS.items():
            with _open(kind, self.paths[kind]) as roman:
                for name, field in names.items():
                    if kind in _SCIENCE_ONLY:
                        _take_science(roman[name], ydet, xdet, arrays[field])
                    else:
                        dtype = np.uint32 if field in _FLAG_FIELDS else np.float32
                        arrays[field] = _take(roman[name], ydet, xdet, dtype)
        return Region(**arrays)

    def biascorr(self, rows: slice, cols: slice, ma_table: MATable) -> np.ndarray:
        ydet, xdet = self._detector(rows, cols)
        out = np.zeros((ma_table.nresultants, len(ydet), len(xdet)), np.float32)
        if "biascorr" in self.paths:
            self._check_groups("biascorr", ma_table)
            with _open("biascorr", self.paths["biascorr"]) as roman:
                _take_science(roman["data"], ydet, xdet, out)
        return out

    def dark_cube(self, rows: slice, cols: slice, ma_table: MATable) -> np.ndarray:
        ydet, xdet = self._detector(rows, cols)
        self._check_groups("dark", ma_table)
        with _open("dark", self.paths["dark"]) as roman:
            return _take(roman["data"], ydet, xdet, np.float32)

    def t0(self, ma_table: MATable) -> float:
        return self._t0

    def reference_gain(self) -> float:
        """The median gain of the science pixels of the whole SCA."""
        if self._reference_gain is None:
            with _open("gain", self.paths["gain"]) as roman:
                science = np.asarray(roman["data"][NBORDER:-NBORDER, NBORDER:-NBORDER])
            self._reference_gain = float(np.median(science))
        return self._reference_gain

    def amp33_med(self, rows: slice) -> np.ndarray:
        return self._amp33("med", rows)

    def amp33_std(self, rows: slice) -> np.ndarray:
        return self._amp33("std", rows)

    def _amp33(self, name: str, rows: slice) -> np.ndarray:
        ydet = self._detector_rows(rows)
        if not self._has_amp33:
            return np.zeros((len(ydet), CHANNEL_WIDTH), np.float32)
        with _open("read", self.paths["read"]) as roman:
            return _take(roman["amp33"][name], ydet, np.arange(CHANNEL_WIDTH), np.float32)

    def _check_groups(self, kind: str, ma_table: MATable) -> None:
        ngroup, n = self._ngroup[kind], ma_table.nresultants
        if ngroup != n:
            side = NDET if kind == "dark" else NSCI
            raise InputError(str(self.paths[kind]),
                             f"roman.data has {ngroup} groups but MA table {ma_table.label} "
                             f"has {n} resultants; expected shape {_shape_text((n, side, side))}",
                             f"give a {kind} file made for MA table {ma_table.label}")


@contextmanager
def _open(kind: str, path: Path):
    """``with _open(kind, path) as roman``: the ``roman`` tree of a reference file."""
    if not path.is_file():
        raise InputError(str(path), f"{kind} reference file does not exist",
                         "fix the path, or the CALDIR directory")
    try:
        af = asdf.open(path, memmap=True, lazy_load=True)
    except Exception as exc:
        raise InputError(str(path), f"cannot be read as ASDF ({exc})",
                         f"give a valid ASDF {kind} reference file") from exc
    with af:
        roman = af.tree.get("roman")
        if not isinstance(roman, Mapping):
            raise InputError(str(path), "has no 'roman' tree",
                             f"give a romanimpreprocess-style {kind} reference file")
        yield roman


def _check_array(kind: str, path: Path, tree: Mapping, name: str, shape,
                 prefix: str = "roman.") -> tuple[int, ...]:
    """Shape of array ``name`` of ``tree``, which must match ``shape``."""
    expected = _shape_text(shape)
    fix = f"give a full-frame {kind} reference file of one SCA"
    array = tree.get(name)
    found = getattr(array, "shape", None)
    if found is None:
        raise InputError(str(path), f"has no array {prefix}{name} (expected shape {expected})",
                         fix)
    found = tuple(int(n) for n in found)
    if len(found) != len(shape) or any(isinstance(want, int) and want != got
                                       for want, got in zip(shape, found)) \
            or any(got < 1 for got in found):
        raise InputError(str(path), f"{prefix}{name} has shape {_shape_text(found)}; "
                         f"expected {expected}", fix)
    return found


def _number(path: Path, tree: Mapping, name: str, prefix: str = "roman.") -> float:
    value = tree.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise InputError(str(path), f"{prefix}{name} is {value!r}, not a finite number",
                         "give a reference file with that value")
    return float(value)


def _take(array, ydet: np.ndarray, xdet: np.ndarray, dtype) -> np.ndarray:
    """``array[..., ydet, :][..., xdet]`` as ``dtype``, read in rectangular pieces."""
    out = np.empty(array.shape[:-2] + (len(ydet), len(xdet)), dtype)
    for oy, y0 in _runs(ydet):
        for ox, x0 in _runs(xdet):
            out[..., oy, ox] = array[..., y0:y0 + oy.stop - oy.start,
                                     x0:x0 + ox.stop - ox.start]
    return out


def _take_science(array, ydet: np.ndarray, xdet: np.ndarray, out: np.ndarray) -> None:
    """Fill the science pixels of ``out`` from a science-only (4088-wide) array."""
    iy = np.flatnonzero((ydet >= NBORDER) & (ydet < NDET - NBORDER))
    ix = np.flatnonzero((xdet >= NBORDER) & (xdet < NDET - NBORDER))
    if iy.size and ix.size:
        rows, cols = slice(iy[0], iy[-1] + 1), slice(ix[0], ix[-1] + 1)
        out[..., rows, cols] = _take(array, ydet[rows] - NBORDER, xdet[cols] - NBORDER,
                                     out.dtype)


# --------------------------------------------------------------------------
# writing a CALDIR
# --------------------------------------------------------------------------

#: Rows of the frame computed at a time while writing (one block row).
_STRIP = BLOCK


def reffile_name(kind: str, tag: str, sca: int) -> str:
    """``roman_wfi_<kind>_<tag>_SCA<NN>.asdf``, the name :func:`resolve_caldir` finds."""
    return f"roman_wfi_{kind}_{tag}_SCA{sca:02d}.asdf"


def write_reffiles(model: DetectorModel, outdir, ma_table: MATable,
                   tag: str = "romandask") -> dict[str, Path]:
    """Write the CALDIR of a full-frame model: one ASDF file per kind.

    Files are named ``roman_wfi_<kind>_<tag>_SCA<NN>.asdf``; the dark and
    bias-correction cubes are those of ``ma_table``.  Each kind is computed
    in strips of rows, held in memory whole (the largest, ipc4d, is 600 MB)
    and written to a temporary name that is then renamed.  Returns the paths
    by kind, as :func:`resolve_caldir` would find them.
    """
    if model.window != NSCI:
        raise ValueError(f"write_reffiles needs a full-frame model (window {NSCI}), "
                         f"got window {model.window}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in REQUIRED_KINDS + OPTIONAL_KINDS:
        path = outdir / reffile_name(kind, tag, model.sca)
        roman = _build_tree(kind, model, ma_table)
        roman["meta"] = {"reftype": kind.upper(), "origin": "romandask",
                         "instrument": {"name": "WFI", "detector": f"WFI{model.sca:02d}"},
                         "description": repr(model), "ma_table": ma_table.label}
        _write_atomically({"roman": roman}, path)
        paths[kind] = path
    return paths


def _build_tree(kind: str, model: DetectorModel, table: MATable) -> dict:
    """The ``roman`` tree of one kind of reference file."""
    def strip(rows, cols):
        arrays = {}
        if kind in _REGION_ARRAYS:
            region = model.region(rows, cols)
            arrays = {name: getattr(region, field)
                      for name, field in _REGION_ARRAYS[kind].items()}
        if kind == "dark":
            arrays["data"] = model.dark_cube(rows, cols, table)
        elif kind == "biascorr":
            arrays["data"] = model.biascorr(rows, cols, table)
        return arrays

    tree = _full_frame(strip, science_only=kind in _SCIENCE_ONLY)
    tree.update(_schema_extras(kind, model))
    if kind == "read":
        every_row = slice(0, NDET)
        tree["anc"] = {"C_PINK": float(model.c_pink), "U_PINK": float(model.u_pink),
                       "UNIT": "DN"}
        tree["amp33"] = {"valid": True, "med": model.amp33_med(every_row),
                         "std": model.amp33_std(every_row), "M_PINK": float(model.m_pink),
                         "RU_PINK": float(model.ru_pink)}
    elif kind == "biascorr":
        tree["t0"] = float(model.t0(table))
    return tree


#: Arrays the rad reference-file schemas require of a kind (romancal's steps read
#: them) beyond those the model needs: the pixel flags (the model's mask, so
#: that a step which ORs them in flags what the mask step would), and the
#: uncertainties of the dark slope and the flat, 0 for a synthetic model whose
#: values are exact.
_SCHEMA_EXTRAS = {"dark": ("dq", "dark_slope_error"), "saturation": ("dq",),
                  "flat": ("dq", "err")}


def _schema_extras(kind: str, model: DetectorModel) -> dict[str, np.ndarray]:
    out = {}
    for name in _SCHEMA_EXTRAS.get(kind, ()):
        if name == "dq":
            out[name] = _full_frame(lambda rows, cols: {"dq": model.region(rows, cols).mask})["dq"]
        else:
            out[name] = np.zeros(_FULL, np.float32)
    return out


def _full_frame(strip, science_only: bool = False) -> dict[str, np.ndarray]:
    """Full-frame arrays assembled from ``strip(rows, cols) -> {name: array}``."""
    start, n = (NBORDER, NSCI) if science_only else (0, NDET)
    cols = slice(start, start + n)
    out: dict[str, np.ndarray] = {}
    for r0 in range(0, n, _STRIP):
        r1 = min(r0 + _STRIP, n)
        for name, array in strip(slice(start + r0, start + r1), cols).items():
            if name not in out:
                out[name] = np.empty(array.shape[:-2] + (n, n), array.dtype)
            out[name][..., r0:r1, :] = array
    return out


def _write_atomically(tree: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        asdf.AsdfFile(tree).write_to(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

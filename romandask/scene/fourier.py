"""Drawing a source's stamp in Fourier space, with the PSF's transform computed once.

This is the computation of GalSim's ``drawImage`` for ``Convolve(profile, psf)``
(method ``auto``: the profile, the PSF and the pixel response multiplied in k
space, the k image folded onto the output grid, one inverse FFT; see
``GSObject.drawFFT``), reorganised for many sources sharing one PSF model:

* the transform of each PSF grid image times the pixel response is made once
  per FFT size (GalSim re-evaluates the interpolated PSF images for every
  source, which costs more than the rest of the drawing), and exactly: the
  image's discrete Fourier sum times the interpolant's transform, where
  GalSim interpolates a k table (to ~1e-4 of the flux);
* a Sersic profile's transform is read from a table of GalSim's own Hankel
  transform of that index (``SersicTable``), evaluated at the source's
  sheared, WCS-mapped wave vectors in one compiled loop (``_fold``);
* the sub-pixel offset is a phase, and the k image is folded (aliased) onto
  the ``n x n`` grid of the stamp's FFT as ``drawFFT`` does.

A stamp agrees with GalSim's ``drawImage`` to ~1e-5 of its peak pixel (the
k interpolation of GalSim's PSF images); the FFT size (``fft_size``) is the
smallest fast size that holds the stamp and the PSF's support without any
of the PSF folding onto the stamp, and keeps GalSim's folding criterion for
extended profiles, capped at six stamp radii.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import galsim
import numba
import numpy as np

#: Sersic transform tables: unit half-light radius, wavenumbers in octaves from
#: KAPPA0 up to 2^14, each octave sampled at TABLE_STEPS equal steps; and, for
#: kappa <= FINE_MAX^2 (most of what a galaxy needs), equal steps FINE_STEP in
#: sqrt(kappa), which a compiled loop looks up faster.  Linear interpolation in
#: both: errors below 2e-6 of the flux (GalSim's kvalue_accuracy is 1e-5).
KAPPA0 = 2.0 ** -12
TABLE_OCTAVES = 26
TABLE_STEPS = 512
FINE_MAX = 10.0
FINE_STEP = 1e-3

#: GalSim's Hankel integrals for the Sersic transforms, to 1e-5 relative and 1e-7
#: absolute (its defaults are 1e-6 and 1e-8): the transforms change by less than
#: 5e-6 of the flux, within GalSim's kvalue_accuracy (1e-5), and a new index
#: costs half the time (measured over the synthetic catalog's 119 indices).
SERSIC_GSPARAMS = galsim.GSParams(integration_relerr=1e-5, integration_abserr=1e-7)


@dataclass(frozen=True)
class SersicTable:
    """GalSim's Fourier transform of a unit-flux, unit-half-light-radius Sersic profile.

    ``values[0]`` samples [0, KAPPA0] and ``values[1 + o]`` the octave
    [KAPPA0 2^o, KAPPA0 2^(o+1)], each at TABLE_STEPS + 1 equal steps;
    ``fine[i]`` is the transform at kappa = (i FINE_STEP)^2, interpolated in
    ``values``; ``stepk`` and ``maxk`` are GalSim's for the profile.
    """

    n: float
    values: np.ndarray
    fine: np.ndarray
    stepk: float
    maxk: float


@lru_cache(maxsize=512)
def sersic_table(n: float) -> SersicTable:
    """The transform table of Sersic index ``n`` (built once per process and index).

    The values are GalSim's ``kValue`` (its Hankel-transform table, built on
    first use of each index), sampled along one axis of k.
    """
    profile = galsim.Sersic(n=n, half_light_radius=1.0, gsparams=SERSIC_GSPARAMS)
    values = np.empty((TABLE_OCTAVES + 1, TABLE_STEPS + 1))
    for row in range(TABLE_OCTAVES + 1):
        # row 0: kappa = i * KAPPA0 / M; row 1 + o: kappa = i * KAPPA0 2^o / M, i in [M, 2M]
        scale = KAPPA0 * 2.0 ** max(row - 1, 0) / TABLE_STEPS
        first = 0 if row == 0 else TABLE_STEPS
        kimage = galsim.ImageCD(galsim.BoundsI(first, first + TABLE_STEPS, 0, 0), scale=scale)
        profile.drawKImage(image=kimage, recenter=False)
        values[row] = kimage.array[0].real
    u = FINE_STEP * np.arange(int(round(FINE_MAX / FINE_STEP)) + 1)
    fine = _octave_values(values, u * u)
    # float32 holds the transform to 6e-8 of the flux (a table of ~100 kB per index)
    return SersicTable(float(n), values.astype(np.float32), fine.astype(np.float32),
                       float(profile.stepk), float(profile.maxk))


#: Even FFT sizes 2^k, 3 2^k and 9 2^k: fast, and few enough that the PSF
#: transforms of every size used stay cached.
_SIZES = np.array(sorted({m * 2 ** k for m in (1, 3, 9) for k in range(1, 15)
                          if m * 2 ** k >= 8}))


def good_size(n: float) -> int:
    """The smallest FFT size of the set used here that is at least ``n``."""
    return int(_SIZES[np.searchsorted(_SIZES, math.ceil(n))])


class PSFTransforms:
    """The PSF grid images times the pixel response, in k, for each FFT size used.

    Each grid PSF is the image ``arrays[key]`` (unit sum, pixels of ``scale``
    detector pixels) interpolated by ``interpolant`` and shifted by minus its
    centroid ``shifts[key]``: GalSim's ``InterpolatedImage`` of ``profiles``.
    Its transform is exact on any grid of wave numbers: the image's discrete
    Fourier sum there (one zero-padded FFT) times the interpolant's transform
    (GalSim instead interpolates a k table, to ~1e-4 of the flux).
    ``support`` is the radius (pixels) beyond which the PSFs are zero.
    """

    def __init__(self, arrays: dict, shifts: dict, scale: float,
                 interpolant: galsim.Interpolant, profiles: dict, support: float):
        self.keys = sorted(arrays)
        self.index = {key: g for g, key in enumerate(self.keys)}
        self._arrays = [arrays[key] for key in self.keys]
        self._shifts = [shifts[key] for key in self.keys]
        self.scale = float(scale)
        self.interpolant = interpolant
        self.maxk = max(profiles[key].maxk for key in self.keys)
        self.stepk = min(profiles[key].stepk for key in self.keys)
        self.support = float(support)
        self._grids: dict[int, np.ndarray] = {}

    @property
    def nbytes(self) -> int:
        """Bytes of the transforms made so far."""
        return sum(g.nbytes for g in self._grids.values())

    def kgrid_half(self, n: int) -> int:
        """Half-size of the k grid GalSim draws the PSF on for FFT size ``n``."""
        return extended_half(n, self.maxk)

    def grid(self, n: int) -> np.ndarray:
        """(grid points, 2h + 1, h + 1) complex64: rows ky = (j - h) dk, columns kx = i dk.

        complex64 holds the transforms to 6e-8 of the flux, far below what
        a stamp of any flux can show.
        """
        if n not in self._grids:
            self._grids[n] = np.stack([self._transform(g, n) for g in range(len(self.keys))])
        return self._grids[n]

    def _transform(self, g: int, n: int) -> np.ndarray:
        """Grid PSF ``g`` times the pixel, on the (2h + 1, h + 1) half plane of FFT size n."""
        half = self.kgrid_half(n)
        dk = 2.0 * np.pi / n
        a = self._arrays[g]
        size = a.shape[0]
        # k = m dk, dk = 2 pi / n, on an image of pixel s: exp(-i k x_j) = exp(-2 pi i m L j / P)
        # with the FFT period P = L n / s, L the least integer making P >= the image
        step = int(math.ceil(size * self.scale / n))
        period = int(round(step * n / self.scale))
        padded = np.zeros((period, period))
        padded[:size, :size] = a
        m = np.arange(-half, half + 1)
        columns = step * np.arange(half + 1)
        # (the sum is periodic in k, 2 pi / s: a coarse image's reaches past its Nyquist)
        dft = np.fft.rfft2(padded) if columns[-1] <= period // 2 else np.fft.fft2(padded)
        out = dft[np.ix_((step * m) % period, columns % period)]
        ky, kx = dk * m, dk * np.arange(half + 1)
        # ... times the phase of the image's first pixel centre, (size - 1) / 2 pixels of s
        # before the centre, and of the shift by minus the centroid (cx, cy)
        cx, cy = self._shifts[g]
        centre = 0.5 * (size - 1) * self.scale
        wy = np.exp(1j * ky * (centre + cy)) * self.interpolant.kval(ky * self.scale)
        wx = np.exp(1j * kx * (centre + cx)) * self.interpolant.kval(kx * self.scale)
        pixel = np.sinc(ky / (2.0 * np.pi))[:, None] * np.sinc(kx / (2.0 * np.pi))[None, :]
        return (out * wy[:, None] * wx[None, :] * pixel).astype(np.complex64)


def extended_half(n: int, maxk: float) -> int:
    """Half-size of the k grid for FFT size ``n`` and a profile reaching ``maxk``.

    As GalSim's ``drawFFT_makeKImage``: the grid of the FFT itself when it
    reaches ``maxk``, else one extending to ``maxk`` (and folded back).
    """
    dk = 2.0 * np.pi / n
    if n * dk / 2 > maxk:
        return n // 2
    return int(np.ceil(maxk / dk))


@numba.njit(cache=True, nogil=True)
def _octave_value(values: np.ndarray, kappa: float) -> float:
    """Linear interpolation in a SersicTable's ``values`` at wavenumber ``kappa``."""
    steps = values.shape[1] - 1
    if kappa < KAPPA0:
        pos = kappa / KAPPA0 * steps
        row = 0
    else:
        mant, expo = math.frexp(kappa / KAPPA0)  # kappa / KAPPA0 = mant 2^expo, mant in [.5, 1)
        row = expo
        if row >= values.shape[0]:
            return 0.0
        pos = (2.0 * mant - 1.0) * steps
    i = min(int(pos), steps - 1)
    f = pos - i
    return values[row, i] * (1.0 - f) + values[row, i + 1] * f


@numba.njit(cache=True, nogil=True)
def _octave_values(values: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    out = np.empty(kappa.shape[0])
    for i in range(kappa.shape[0]):
        out[i] = _octave_value(values, kappa[i])
    return out


@numba.njit(cache=True, nogil=True)
def _fold(psf: np.ndarray, grid_index: np.ndarray, grid_weight: np.ndarray, half: int,
          n: int, dx: float, dy: float, flux: float, cxx: float, cxy: float, cyy: float,
          table: np.ndarray, fine: np.ndarray, out: np.ndarray) -> None:
    """Add the k image of one source, folded onto the n x (n/2 + 1) FFT grid, to ``out``.

    The source is ``flux`` times the weighted sum of PSF grid transforms
    times (if ``table`` has rows) the Sersic transform (``table``, ``fine``)
    at wavenumber sqrt(k^T C k), shifted by (dx, dy) pixels.  k runs over the
    half plane kx = a dk (0 <= a <= half), ky = b dk (|b| <= half); each point and,
    for a > 0, its Hermitian mirror (-kx, -ky) are added where they alias
    onto the half plane 0 <= kx <= pi of the FFT (as GalSim's ``Image.wrap``).
    """
    dk = 2.0 * np.pi / n
    center = (psf.shape[1] - 1) // 2
    hn = n // 2
    galaxy = table.shape[0] > 0
    ngrid = grid_index.shape[0]
    # the shift by (dx, dy), and by n/2 in both axes, which puts the origin of the
    # inverse FFT at the centre of the n x n output: (-1)^(a + b) (n even)
    phase_x = np.empty(half + 1, np.complex128)
    for a in range(half + 1):
        phase_x[a] = complex(math.cos(a * dk * dx), -math.sin(a * dk * dx)) * (1 - 2 * (a % 2))
    values = np.empty(half + 1, np.complex128)
    weight = np.empty(ngrid, np.complex128)
    sersic = np.empty(half + 1)
    fine_steps = fine.shape[0] - 1
    fine_limit = (fine_steps * FINE_STEP) ** 4  # kappa^2 below which ``fine`` reaches
    # kx = a dk aliases to column a mod n, its mirror -kx to (-a) mod n: kept where
    # they land on the half plane (column <= n/2); -1 elsewhere
    column = np.full(half + 1, -1, np.int64)
    column_mirror = np.full(half + 1, -1, np.int64)
    for a in range(half + 1):
        if a % n <= hn:
            column[a] = a % n
        if a > 0 and (-a) % n <= hn:
            column_mirror[a] = (-a) % n
    for b in range(-half, half + 1):
        ky = b * dk
        j = center + b
        phase_y = complex(math.cos(ky * dy), -math.sin(ky * dy)) * (flux * (1 - 2 * (b % 2)))
        for g in range(ngrid):
            weight[g] = grid_weight[g] * phase_y
        first = psf[grid_index[0], j]
        for a in range(half + 1):
            values[a] = weight[0] * first[a]
        for g in range(1, ngrid):
            part = psf[grid_index[g], j]
            for a in range(half + 1):
                values[a] += weight[g] * part[a]
        for a in range(half + 1):
            values[a] *= phase_x[a]
        if galaxy:
            # the transform at kappa^2 = k^T C k: from ``fine``, or (a second loop, which
            # keeps the first one lean) the octave table
            for a in range(half + 1):
                kx = a * dk
                t = max(cxx * kx * kx + 2.0 * cxy * kx * ky + cyy * ky * ky, 0.0)
                if t < fine_limit:
                    pos = math.sqrt(math.sqrt(t)) * (1.0 / FINE_STEP)
                    i = min(int(pos), fine_steps - 1)
                    f = pos - i
                    sersic[a] = fine[i] * (1.0 - f) + fine[i + 1] * f
                else:
                    sersic[a] = -t - 1.0  # below -1: no transform value; carries t
            for a in range(half + 1):
                if sersic[a] < -1.0:
                    sersic[a] = _octave_value(table, math.sqrt(-sersic[a] - 1.0))
            for a in range(half + 1):
                values[a] *= sersic[a]
        # ky = b dk aliases to row b mod n; the mirror (-kx, -ky) to row -b mod n
        row, mirror = b % n, (-b) % n
        for a in range(half + 1):
            if column[a] >= 0:
                out[row, column[a]] += values[a]
            if column_mirror[a] >= 0:
                out[mirror, column_mirror[a]] += values[a].conjugate()


_NO_TABLE, _NO_FINE = np.zeros((0, 0), np.float32), np.zeros(0, np.float32)


@dataclass(frozen=True)
class Shape:
    """A Sersic profile in pixel coordinates: index, table, and k^T C k = kappa^2."""

    table: SersicTable
    cxx: float
    cxy: float
    cyy: float
    major: float  # largest and smallest singular values of the unit-profile -> pixel map
    minor: float


def sersic_shape(n: float, hlr: float, pa: float, ba: float,
                 jacobian: galsim.JacobianWCS) -> Shape:
    """The pixel-coordinate Sersic of ``source_profile``: as ``jacobian.toImage(sheared)``.

    The world profile is the unit Sersic stretched by ``hlr`` (arcsec) and
    sheared by GalSim's matrix for (q = ``ba``, beta = ``pa`` + 90 deg);
    pixel coordinates are x = J^-1 u with J the local WCS Jacobian (arcsec per
    pixel).  The unit profile maps to pixels by T = hlr J^-1 A, so its
    transform at pixel wave vector k is the unit transform at |T^T k|.
    """
    beta = math.radians(pa + 90.0)
    g = (1.0 - ba) / (1.0 + ba)
    g1, g2 = g * math.cos(2.0 * beta), g * math.sin(2.0 * beta)
    shear = np.array([[1.0 + g1, g2], [g2, 1.0 - g1]]) / math.sqrt(1.0 - g * g)
    jac = np.array([[jacobian.dudx, jacobian.dudy], [jacobian.dvdx, jacobian.dvdy]])
    t = hlr * np.linalg.solve(jac, shear)
    c = t @ t.T
    s = np.linalg.svd(t, compute_uv=False)
    return Shape(sersic_table(float(n)), float(c[0, 0]), float(c[0, 1]), float(c[1, 1]),
                 float(s[0]), float(s[1]))


def fft_size(radius: int, psf: PSFTransforms, shape: Shape | None) -> int:
    """The FFT size for a stamp of ``radius`` pixels.

    Large enough that the stamp fits and no PSF light folds onto it (the PSF
    model is zero beyond ``psf.support``): n > radius + support + 1/2.  For
    a galaxy also GalSim's own size, 2 pi / stepk of the convolution: twice
    the radius enclosing all but ``folding_threshold`` (0.5 %) of the flux,
    which leaves ~1e-5 of the flux folded onto the stamp; capped at six stamp
    radii, where light folds only from beyond five (of the largest n ~ 4
    spheroids, ~2 % of the synthetic galaxies: up to ~1e-3 of their flux, a
    small part of what the stamp leaves out beyond one radius).
    """
    need = max(2 * radius + 2, radius + psf.support + 1.0)
    if shape is not None:
        stepk = shape.table.stepk / shape.major
        folding = 2.0 * np.pi * math.sqrt(psf.stepk ** -2 + stepk ** -2)
        need = max(need, min(folding, 6.0 * radius))
    return good_size(need)


def draw_stamp(psf: PSFTransforms, grid: list[tuple[tuple[int, int], float]], flux: float,
               offset: tuple[float, float], radius: int, shape: Shape | None,
               n: int | None = None) -> np.ndarray:
    """The expected electrons of one source on its (2 radius + 1)^2 stamp.

    ``grid`` holds the PSF grid keys and bilinear weights at the source,
    ``offset`` its position relative to the stamp's central pixel; ``n``
    the FFT size (``fft_size`` by default).  The result (a view of the FFT's
    output) is what GalSim's ``drawImage`` gives for the profile convolved
    with the PSF, pixel response included (see the module's notes).
    """
    if n is None:
        n = fft_size(radius, psf, shape)
    maxk = psf.maxk if shape is None else min(psf.maxk, shape.table.maxk / shape.minor)
    half = min(extended_half(n, maxk), psf.kgrid_half(n))
    index = np.array([psf.index[key] for key, _ in grid], np.int64)
    weight = np.array([w for _, w in grid], np.float64)
    out = np.zeros((n, n // 2 + 1), np.complex128)
    if shape is None:
        _fold(psf.grid(n), index, weight, half, n, offset[0], offset[1], flux,
              0.0, 0.0, 0.0, _NO_TABLE, _NO_FINE, out)
    else:
        _fold(psf.grid(n), index, weight, half, n, offset[0], offset[1], flux,
              shape.cxx, shape.cxy, shape.cyy, shape.table.values, shape.table.fine, out)
    image = np.fft.irfft2(out, s=(n, n))
    centre = n // 2
    return image[centre - radius:centre + radius + 1, centre - radius:centre + radius + 1]

"""What one (exposure, SCA) shares across its tiles: readout noise and cosmic rays.

The correlated read noise of an H4RG comes from the readout electronics, not
the pixels: 1/f noise common to the 32 channels (``C_PINK``), 1/f noise of
each channel alone (``U_PINK``), and the reference output ``amp33``, which
sees the common noise (``M_PINK``) plus its own (``RU_PINK``) over its
median level and white noise (romanimpreprocess's ``read`` reference file;
Rauscher et al. 2017, "New and better detectors for JWST ... IRS2").  Rows
are read in time order, so the 1/f series run along the rows; every pixel of
a row of one channel gets that row's value for the read.  Reference-pixel
correction removes the common part (from amp33 and the side reference
columns) and channel offsets (from the top and bottom reference rows).

One task per (exposure, SCA) draws these series and the cosmic rays for the
whole frame; each tile then takes its rows, channels and deposits, so tiles
never disagree about a track that crosses their edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..instrument.matables import MATable
from .cosmic_rays import CosmicRays, cosmic_ray_deposits
from .forward import RowNoise
from .reference import CHANNEL_WIDTH, NCHAN, channel_of, frame_index


def pink_noise(generator: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """Series of ``n`` samples of 1/f noise with unit variance (last axis).

    Gaussian Fourier coefficients with power 1/f on a grid twice as long as
    the series (so it does not wrap), no DC term; the analytic variance of
    the synthesised series normalises it.
    """
    m = 2 * n
    freqs = np.arange(1, m // 2 + 1, dtype=np.float64)
    amplitude = freqs ** -0.5
    coeffs = (generator.standard_normal((*shape, m // 2)) +
              1j * generator.standard_normal((*shape, m // 2))) * amplitude
    spectrum = np.concatenate([np.zeros((*shape, 1)), coeffs], axis=-1)
    series = np.fft.irfft(spectrum, m, axis=-1)[..., :n]
    # Var = (1/m^2) sum over the two-sided spectrum of E|c|^2 = 2 * 2 sum 1/f / m^2
    # (Nyquist counted once, a negligible difference)
    return series * (m / np.sqrt(4.0 * np.sum(1.0 / freqs)))


def pink_correlation(n: int) -> np.ndarray:
    """Correlation of :func:`pink_noise` samples ``lag`` = 0 .. n - 1 apart.

    The series is stationary: ``rho(lag) = sum_f cos(2 pi f lag / m) / f /
    sum_f 1 / f`` over the frequencies f = 1 .. m / 2 of its grid of m = 2n.
    1/f noise stays correlated over long lags (rho falls as the logarithm of
    the lag), which is what sets how far reference rows tell about the rows
    between them.
    """
    m = 2 * n
    spectrum = np.zeros(m // 2 + 1)
    spectrum[1:] = 1.0 / np.arange(1, m // 2 + 1)
    # irfft gives (1/m)(2 sum_{f < m/2} S_f cos + S_{m/2} cos(pi lag))
    cov = np.fft.irfft(spectrum, m)[:n] * m
    return cov / cov[0]


@dataclass
class Readout:
    """Shared per (exposure, SCA): read-averaged correlated noise, amp33, cosmic rays.

    ``common`` (nres, nrows) and ``channel`` (nres, 32, nrows) are in DN and
    already averaged over each resultant's reads; ``amp33`` (nres, nrows, 128)
    is the finished reference output (uint16); ``cosmic_rays`` holds deposits
    on science pixels in frame coordinates.
    """

    common: np.ndarray
    channel: np.ndarray
    amp33: np.ndarray
    cosmic_rays: CosmicRays | None

    def correlated(self, rows: slice, cols: slice, window: int) -> np.ndarray:
        """Read-averaged correlated noise (nres, ny, nx) of a frame rectangle."""
        return self.row_noise(rows, cols, window).cube()

    def row_noise(self, rows: slice, cols: slice, window: int) -> RowNoise:
        """The same noise as rows and channels, without a cube of every pixel."""
        return RowNoise(np.ascontiguousarray(self.common[:, rows]),
                        np.ascontiguousarray(self.channel[:, :, rows]),
                        channel_of(frame_index(window)[cols]))


def _average(per_read: np.ndarray, ma_table: MATable) -> np.ndarray:
    """Average axis 0 (read 1..nreads) over each resultant's reads."""
    return np.stack([per_read[[k - 1 for k in reads]].mean(axis=0)
                     for reads in ma_table.read_pattern])


def make_readout(model, ma_table: MATable, generator: np.random.Generator,
                 cosmic_ray_flux: float | None) -> Readout:
    """Draw one exposure's readout noise and cosmic rays for ``model``'s frame."""
    nrows = model.frame_shape[0]
    nreads = ma_table.nreads
    common = model.c_pink * pink_noise(generator, (nreads,), nrows)
    channel = model.u_pink * pink_noise(generator, (nreads, NCHAN), nrows)
    own = model.ru_pink * pink_noise(generator, (nreads,), nrows)
    rows = slice(0, nrows)
    reads_per = np.array([len(r) for r in ma_table.read_pattern], np.float64)
    amp33 = (model.amp33_med(rows)[None]
             + _average(model.m_pink * common + own, ma_table)[:, :, None]
             + model.amp33_std(rows)[None] / np.sqrt(reads_per)[:, None, None]
             * generator.standard_normal((ma_table.nresultants, nrows, CHANNEL_WIDTH)))
    amp33 = np.clip(np.rint(amp33), 0, 65535).astype(np.uint16)
    crs = None
    if cosmic_ray_flux:
        read_times = ma_table.frame_time * np.arange(1, nreads + 1)
        crs = cosmic_ray_deposits(generator, model.frame_shape, read_times,
                                  flux=cosmic_ray_flux)
    return Readout(_average(common, ma_table).astype(np.float32),
                   _average(channel, ma_table).astype(np.float32), amp33, crs)

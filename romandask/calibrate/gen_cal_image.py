"""What romanimpreprocess's gen_cal_image adds to an L2 image, on numpy arrays.

``fit_sky``
    ``SKYORDER``: a 2-D Legendre polynomial fitted to the medians of an 8 x 8
    grid of blocks of the image, to be subtracted from it.
``good_pixels``
    The pixels its FITS output keeps (the rest become -1000): a mask grown
    from the DQ bits, flag by flag (its ``PixelMask1``).

Both follow the definitions of romanimpreprocess 1.0 (``utils/sky.py``
``medfit``, ``utils/maskhandling.py``), which the README's Calibration
section states in full.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.polynomial import legendre
from roman_datamodels.dqflags import pixel as pixelflags

__all__ = ["MASK_GROWTH", "SKY_BLOCKS", "MAX_SKYORDER", "fit_sky", "good_pixels", "sky_model"]

#: Blocks per side whose medians the sky polynomial is fitted to.
SKY_BLOCKS = 8
#: Highest SKYORDER: (order + 1)(order + 2)/2 coefficients from 64 medians.
MAX_SKYORDER = 9

#: How far each DQ flag is grown in gen_cal_image's FITS mask: 1 the pixel,
#: 5 it and its four nearest neighbours, 9 a 3 x 3 block, 25 a 5 x 5 block.
#: SATURATED is not among them: its FITS output keeps saturated pixels.
MASK_GROWTH = {
    "DO_NOT_USE": 1, "JUMP_DET": 5, "DROPOUT": 25, "GW_AFFECTED_DATA": 1, "PERSISTENCE": 1,
    "AD_FLOOR": 5, "UNRELIABLE_ERROR": 1, "NON_SCIENCE": 1, "DEAD": 9, "HOT": 9, "WARM": 1,
    "LOW_QE": 9, "TELEGRAPH": 1, "NO_FLAT_FIELD": 9, "NO_GAIN_VALUE": 9, "NO_LIN_CORR": 9,
    "NO_SAT_CHECK": 9, "UNRELIABLE_BIAS": 1, "UNRELIABLE_DARK": 9, "UNRELIABLE_SLOPE": 9,
    "UNRELIABLE_FLAT": 9, "UNRELIABLE_RESET": 9, "OTHER_BAD_PIXEL": 9,
}
#: The offsets each growth covers.
_FOOTPRINTS = {
    1: [(0, 0)],
    5: [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)],
    9: [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)],
    25: [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)],
}


def _grow(mask: np.ndarray, offsets) -> np.ndarray:
    """``mask`` OR-ed with its copies shifted by each offset (nothing enters from outside)."""
    ny, nx = mask.shape
    out = np.zeros_like(mask)
    for dy, dx in offsets:
        out[max(dy, 0):ny + min(dy, 0), max(dx, 0):nx + min(dx, 0)] |= \
            mask[max(-dy, 0):ny + min(-dy, 0), max(-dx, 0):nx + min(-dx, 0)]
    return out


def good_pixels(dq: np.ndarray) -> np.ndarray:
    """True where gen_cal_image's FITS output keeps the data (its mask, grown, is False)."""
    dq = np.asarray(dq, np.uint32)
    by_growth: dict[int, np.uint32] = {}
    for name, growth in MASK_GROWTH.items():
        by_growth[growth] = np.uint32(by_growth.get(growth, 0) | int(getattr(pixelflags, name)))
    bad = np.zeros(dq.shape, bool)
    for growth, bits in sorted(by_growth.items()):
        bad |= _grow((dq & bits) != 0, _FOOTPRINTS[growth])
    return ~bad


def _block_grid(n: int) -> tuple[int, int, np.ndarray]:
    """Block size, first pixel, and the blocks' centres in [-1, 1) along one axis."""
    size = n // SKY_BLOCKS
    start = (n % SKY_BLOCKS) // 2
    centres = start - 0.5 + size * (np.arange(SKY_BLOCKS) + 0.5)
    return size, start, 2.0 * centres / n - 1.0


def _terms(order: int) -> list[tuple[int, int]]:
    """(i, j) of P_i(u) P_j(v), i + j <= order, in gen_cal_image's order."""
    return [(i, j) for i in range(order + 1) for j in range(order + 1 - i)]


def _legendre(k: int, z: np.ndarray) -> np.ndarray:
    return legendre.legval(z, np.eye(k + 1)[k])


def sky_model(coefficients: np.ndarray, order: int, shape: tuple[int, int]) -> np.ndarray:
    """The sky polynomial on the pixel grid: sum c_ij P_i(u) P_j(v), u = 2x/nx - 1,
    v = 2y/ny - 1 (x, y the 0-based column and row), float64."""
    ny, nx = shape
    u = 2.0 * np.arange(nx) / nx - 1.0
    v = 2.0 * np.arange(ny) / ny - 1.0
    out = np.zeros((ny, nx))
    for c, (i, j) in zip(coefficients, _terms(order)):
        out += c * np.outer(_legendre(j, v), _legendre(i, u))
    return out


def fit_sky(image: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """gen_cal_image's ``SKYORDER`` sky: (coefficients, model on the pixel grid).

    The image is cut into :data:`SKY_BLOCKS` x :data:`SKY_BLOCKS` blocks
    (``n // 8`` pixels, the remainder split between both edges and left
    out); each block's median over its finite pixels is a sample of the sky
    at the block's centre, and the coefficients of ``P_i(u) P_j(v)``
    (``i + j <= order``, in the order (0, 0), (0, 1), ..., (0, order),
    (1, 0), ..., (order, 0)) are their least-squares fit.  Blocks without a
    finite pixel are left out.

    Raises ValueError if fewer blocks have data than there are coefficients.
    """
    ny, nx = image.shape
    ky, y0, v = _block_grid(ny)
    kx, x0, u = _block_grid(nx)
    n = SKY_BLOCKS
    blocks = np.asarray(image, np.float64)[y0:y0 + n * ky, x0:x0 + n * kx]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a block with no finite pixel
        medians = np.nanmedian(blocks.reshape(n, ky, n, kx), axis=(1, 3))
    terms = _terms(order)
    uu, vv = np.meshgrid(u, v)
    design = np.stack([_legendre(i, uu) * _legendre(j, vv) for i, j in terms], axis=-1)
    ok = np.isfinite(medians)
    if ok.sum() < len(terms):
        raise ValueError(f"{ok.sum()} of the {n * n} sky blocks have data; order {order} "
                         f"needs {len(terms)}")
    a = design[ok]
    coefficients = np.linalg.solve(a.T @ a, a.T @ medians[ok])
    return coefficients, sky_model(coefficients, order, image.shape)

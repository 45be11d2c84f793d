"""Aperture-correction (``apcorr``) reference files of romandask's PSF, for romancal.

romancal's ``SourceCatalogStep`` asks CRDS for an ``apcorr`` reference file
(rad's ``ApcorrRefModel``): per filter, the encircled-energy fraction
``ee_fractions`` of the PSF within the radii ``ee_radii`` (pixels) and the
aperture corrections ``ap_corrections = 1 / ee_fractions``.  Where CRDS is
out of reach, :func:`write_apcorr` writes one for the PSF romandask renders
with, to give the step as ``override_apcorr``.

The encircled energy is the fraction of a point source's flux (the truth
table's ``flux``) that a circular aperture of that radius holds on an image,
summed over pixels with their exact overlap as photutils (and so romancal)
sums them, averaged over where the source falls within its pixel.  For the
PSF model of :mod:`romandask.scene.psf` (GalSim's Cycle-9 optical PSF,
centred and normalised to unit flux within the stamp radius ``margin``) at
the centre of the simulated window, that is the integral over the circle of
the PSF convolved twice with the pixel's square response: once by the
pixels that integrate the light, once by the aperture's overlap with them
(averaged over positions, a pixel's overlap with the circle and the light
it holds are correlated by the triangle function of the pixel, the square
convolved with itself).  It is integrated on a grid oversampled
``ee_oversample`` times.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import asdf
import galsim
import numpy as np

from .config import N_PIX, PSFConfig
from .errors import atomic_path
from .instrument.filters import FILTERS
from .scene.psf import PSFKey, psf_model
from .survey.footprint import window_bounds

__all__ = ["DEFAULT_RADII", "apcorr_model", "encircled_energy", "write_apcorr"]

#: Radii (pixels) at which :func:`write_apcorr` tabulates the encircled energy.
DEFAULT_RADII = np.arange(0.5, 40.01, 0.5)


def encircled_energy(sca: int, filter_name: str, radii, *, window: int = N_PIX,
                     psf: PSFConfig = PSFConfig(), margin: int = 64,
                     ee_oversample: int = 8) -> np.ndarray:
    """Fraction of a point source's flux within each radius (pixels), float64.

    For the PSF romandask renders on SCA ``sca`` in ``filter_name`` at the
    centre of the central ``window`` x ``window`` pixels (``psf`` and
    ``margin`` as in the run's ``scene`` section).
    """
    radii = np.asarray(radii, np.float64)
    if radii.ndim != 1 or not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError("radii must be a 1-D array of positive numbers")
    b = window_bounds(window)
    key = PSFKey(sca, filter_name, b.xmin, b.xmax, b.ymin, b.ymax, psf.grid, psf.pupil_bin,
                 psf.oversample, margin)
    centre = b.true_center
    profile = galsim.Convolve(psf_model(key).at(centre.x, centre.y), galsim.Pixel(1.0),
                              galsim.Pixel(1.0))
    n = 2 * margin * ee_oversample
    image = profile.drawImage(nx=n, ny=n, scale=1.0 / ee_oversample, method="no_pixel")
    flux = image.array.astype(np.float64).ravel()
    offsets = (np.arange(n) - (n - 1) / 2.0) / ee_oversample
    r = np.hypot(offsets[:, None], offsets[None, :]).ravel()
    order = np.argsort(r, kind="stable")
    cumulative = np.cumsum(flux[order])
    inside = np.searchsorted(r[order], radii, side="right")
    return np.where(inside > 0, cumulative[np.maximum(inside - 1, 0)], 0.0)


def apcorr_model(sca: int, filters: Iterable[str] = FILTERS, radii=DEFAULT_RADII, *,
                 window: int = N_PIX, psf: PSFConfig = PSFConfig(), margin: int = 64):
    """A validated ``ApcorrRefModel`` of the PSF of SCA ``sca`` in ``filters``.

    ``ee_radii`` are ``radii`` (pixels, as rad's schema has them); the sky
    annulus radii are left null (romancal 1.1 uses its own annulus).
    """
    import roman_datamodels.datamodels as rdm

    filters = list(filters)
    unknown = [f for f in filters if f not in FILTERS]
    if unknown or not filters:
        raise ValueError(f"filters must be some of {', '.join(FILTERS)}, got {filters}")
    radii = np.asarray(radii, np.float64)
    model = rdm.ApcorrRefModel.create_fake_data()
    model.meta.description = (f"Encircled energy of romandask's PSF model, SCA {sca}, "
                              f"centre of the central {window} x {window} pixels")
    model.meta.author = "romandask"
    model.meta.origin = "romandask"
    model.meta.pedigree = "MODEL"
    model.meta.instrument.detector = f"WFI{int(sca):02d}"
    for name in filters:
        ee = encircled_energy(sca, name, radii, window=window, psf=psf, margin=margin)
        model.data[name] = {"ap_corrections": 1.0 / ee, "ee_fractions": ee,
                            "ee_radii": radii.copy(), "sky_background_rin": None,
                            "sky_background_rout": None}
    model.validate()
    return model


def write_apcorr(path, sca: int, filters: Iterable[str] = FILTERS, radii=DEFAULT_RADII, *,
                 window: int = N_PIX, psf: PSFConfig = PSFConfig(), margin: int = 64
                 ) -> Path:
    """Write :func:`apcorr_model` to ``path`` (written whole, then renamed); returns it."""
    path = Path(path)
    model = apcorr_model(sca, filters, radii, window=window, psf=psf, margin=margin)
    with atomic_path(path) as partial:
        asdf.AsdfFile({"roman": model._instance}).write_to(partial)
    return path

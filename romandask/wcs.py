"""World coordinates of the Level 2 products: gWCS, FITS headers, pixel areas.

GalSim's ``galsim.roman.getWCS`` gives each SCA a FITS TAN-SIP WCS
(:class:`galsim.GSFitsWCS`).  This module turns it, analytically, into

* the gWCS of an L2 image (:func:`gwcs_from_galsim`), the
  ``meta.wcs`` of a ``roman_datamodels`` ``ImageModel``;
* a standard FITS header (:func:`fits_header_from_galsim`), which
  :func:`gwcs_from_fits_header` reads back, as it reads GalSim's
  ``writeToFitsHeader`` headers and romanimpreprocess's ``FITSWCS`` files;
* the map of pixel areas on the sky (:func:`pixel_area_map`);

and writes the FITS companion (``_asdf_to.fits``) of an L2 file
(:func:`write_fits_image`).

Pixel conventions
    GalSim works in 1-based coordinates of the full 4088 x 4088 science
    array.  L2 arrays hold a window of it and are indexed from 0: pixel
    ``(x, y)`` of the array (``data[y, x]``) is GalSim position
    ``(x + 1 + origin[0], y + 1 + origin[1])``, where ``origin`` is the
    0-based offset of the window in the science array
    (``SCAView.bounds.xmin - 1, SCAView.bounds.ymin - 1``).  Standard FITS
    headers put the centre of an image's first pixel at 1.  The
    ``*_asdf_wcshead.txt`` files of romanimpreprocess's ``sim_to_isim``
    (the ``FITSWCS`` input of its L1 to L2 step) do not: it subtracts 1 from
    ``CRPIX`` before writing them, because romanisim's
    ``wcs_from_fits_header`` puts the first pixel at 0; such a header is
    recognised by the ``COMMENT`` card ``sim_to_isim`` adds
    (:data:`SIM_TO_ISIM_COMMENT`).

The transform
    From 0-based pixel ``(x, y)`` to ICRS ``(ra, dec)`` in degrees::

        Shift & Shift             x' = x + x_first - CRPIX1 (likewise y')
        | SIP distortion          u = x' + A(x', y'), v = y' + B(x', y')
        | AffineTransformation2D  (CD matrix) @ (u, v), degrees
        | Pix2Sky_TAN             gnomonic projection
        | RotateNative2Celestial  (CRVAL1, CRVAL2, LONPOLE)

    where ``x_first`` is the header coordinate of the array's first pixel.
    These are GalSim's own operations in the same order, so the gWCS agrees
    with ``wcs.toWorld`` to rounding error (about 1e-7 mas).  The SIP
    distortion is two :class:`~astropy.modeling.polynomial.Polynomial2D`
    (all standard ASDF transforms) and carries its inverse: the SIP
    ``AP, BP`` polynomials, taken from GalSim or the header when present and
    otherwise fitted to the forward polynomials over the science array (see
    :func:`fit_sip_inverse`).  So ``gwcs.WCS.invert`` and ``world_to_pixel``
    evaluate a closed form and never reach gwcs's numerical inverse, whose
    initial-guess fit fails with an ``AttributeError`` in gwcs 1.0.3.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import astropy.units as u
import galsim
import galsim.roman
import gwcs
import numpy as np
from astropy.coordinates import ICRS
from astropy.io import fits
from astropy.modeling import models
from gwcs import coordinate_frames as cf

from .config import N_PIX
from .errors import atomic_path

#: Nominal area of a WFI pixel, arcsec^2: ``galsim.roman.pixel_scale`` squared.
NOMINAL_PIXEL_AREA = galsim.roman.pixel_scale ** 2
#: The ``COMMENT`` romanimpreprocess's ``sim_to_isim`` adds to the WCS header
#: it writes with 0-based ``CRPIX``.
SIM_TO_ISIM_COMMENT = "truth wcs from sim_to_isim"
#: Largest error, in pixels, accepted from a fitted SIP inverse.
INVERSE_TOLERANCE = 1e-6
#: Pixels beyond the science array over which a fitted inverse holds.
INVERSE_MARGIN = 64
#: Highest order tried for a fitted SIP inverse.
MAX_INVERSE_ORDER = 9

#: Extension names of the usual L2 arrays; other names are upper-cased.
EXTNAMES = {"data": "SCI", "err": "ERR", "dq": "DQ", "var_poisson": "VAR_POISSON",
            "var_rnoise": "VAR_RNOISE", "var_flat": "VAR_FLAT"}

#: Header cards that describe a file's structure rather than its WCS.
_STRUCTURAL = re.compile(r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|BZERO|BSCALE"
                         r"|BLANK|EXTNAME|EXTVER|INHERIT|CHECKSUM|DATASUM|END)$")
#: Header cards of the WCS (copied into each image extension).
_WCS_KEY = re.compile(r"^(WCSAXES|WCSNAME|CTYPE\d|CUNIT\d|CRPIX\d|CRVAL\d|CDELT\d|CD\d_\d"
                      r"|PC\d_\d|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|(A|B|AP|BP)_ORDER"
                      r"|(A|B|AP|BP)_\d+_\d+|(A|B)_DMAX|GS_XMIN|GS_YMIN|GS_WCS)$")
_TAN = {"": False, "-SIP": True}


# --------------------------------------------------------------------------
# the TAN-SIP parameters
# --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _TanSip:
    """A FITS TAN or TAN-SIP WCS.

    ``crpix`` is in the header's pixel coordinates; ``cd`` is in degrees per
    pixel; ``a, b`` (``ap, bp``) are the standard SIP coefficient matrices,
    entry ``[p, q]`` multiplying ``x**p * y**q``, without the identity.
    """

    crpix: tuple[float, float]
    crval: tuple[float, float]
    cd: np.ndarray
    lonpole: float = 180.0
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    ap: np.ndarray | None = None
    bp: np.ndarray | None = None

    @property
    def sip(self) -> bool:
        return self.a is not None

    @classmethod
    def from_galsim(cls, wcs: galsim.GSFitsWCS) -> _TanSip:
        if not isinstance(wcs, galsim.GSFitsWCS):
            raise TypeError(f"expected a galsim.GSFitsWCS, got {type(wcs).__name__}")
        if wcs.wcs_type not in ("TAN", "TAN-SIP") or wcs.pv is not None:
            raise ValueError(f"only TAN and TAN-SIP WCSs are supported, not {wcs.wcs_type}")
        a = b = ap = bp = None
        if wcs.ab is not None:
            a, b = _standard_sip(wcs.ab)
        if wcs.abp is not None:
            ap, bp = _standard_sip(wcs.abp)
        return cls(crpix=(float(wcs.crpix[0]), float(wcs.crpix[1])),
                   crval=(float(wcs.center.ra.deg), float(wcs.center.dec.deg)),
                   cd=np.array(wcs.cd, dtype=float), a=a, b=b, ap=ap, bp=bp)

    @classmethod
    def from_header(cls, header: fits.Header) -> _TanSip:
        sip = []
        for axis, prefix in ((1, "RA---TAN"), (2, "DEC--TAN")):
            ctype = str(header.get(f"CTYPE{axis}", "")).strip().upper()
            if not ctype.startswith(prefix) or ctype[len(prefix):] not in _TAN:
                raise ValueError(f"CTYPE{axis} = {ctype!r}: only RA---TAN(-SIP), "
                                 "DEC--TAN(-SIP) headers are supported")
            sip.append(_TAN[ctype[len(prefix):]])
        if sip[0] != sip[1]:
            raise ValueError("CTYPE1 and CTYPE2 disagree about the SIP distortion")
        frame = str(header.get("RADESYS", header.get("RADECSYS", "ICRS"))).strip().upper()
        if frame not in ("ICRS", "FK5"):
            raise ValueError(f"RADESYS = {frame!r}: only ICRS (or FK5 J2000, read as ICRS) "
                             "is supported")
        scale = [u.Unit(str(header.get(f"CUNIT{i}", "deg")).strip() or "deg").to(u.deg)
                 for i in (1, 2)]
        if any(f"CD{i}_{j}" in header for i in (1, 2) for j in (1, 2)):
            cd = np.array([[float(header.get(f"CD{i}_{j}", 0.0)) for j in (1, 2)]
                           for i in (1, 2)])
        else:
            pc = np.array([[float(header.get(f"PC{i}_{j}", float(i == j))) for j in (1, 2)]
                           for i in (1, 2)])
            cd = pc * np.array([[float(header.get("CDELT1", 1.0))],
                                [float(header.get("CDELT2", 1.0))]])
        cd = cd * np.array([[scale[0]], [scale[1]]])
        a = b = ap = bp = None
        if sip[0]:
            a, b = _read_sip(header, "A"), _read_sip(header, "B")
            if "AP_ORDER" in header or "BP_ORDER" in header:
                ap, bp = _read_sip(header, "AP"), _read_sip(header, "BP")
        return cls(crpix=(float(header["CRPIX1"]), float(header["CRPIX2"])),
                   crval=(float(header["CRVAL1"]) * scale[0], float(header["CRVAL2"]) * scale[1]),
                   cd=cd, lonpole=float(header.get("LONPOLE", 180.0)), a=a, b=b, ap=ap, bp=bp)

    def with_inverse(self, lo: tuple[float, float], hi: tuple[float, float]) -> _TanSip:
        """This WCS with a SIP inverse, fitted over header pixels ``lo..hi`` if missing."""
        if not self.sip or self.ap is not None:
            return self
        xlo, ylo = lo[0] - self.crpix[0], lo[1] - self.crpix[1]
        xhi, yhi = hi[0] - self.crpix[0], hi[1] - self.crpix[1]
        ap, bp, _ = fit_sip_inverse(self.a, self.b, (xlo, xhi), (ylo, yhi))
        return replace(self, ap=ap, bp=bp)

    def header(self, crpix_shift: tuple[float, float] = (0.0, 0.0)) -> fits.Header:
        """A standard FITS header, ``CRPIX`` moved by ``crpix_shift``."""
        suffix = "-SIP" if self.sip else ""
        h = fits.Header()
        h["WCSAXES"] = 2
        h["CTYPE1"] = "RA---TAN" + suffix
        h["CTYPE2"] = "DEC--TAN" + suffix
        h["CUNIT1"] = "deg"
        h["CUNIT2"] = "deg"
        h["CRPIX1"] = self.crpix[0] + crpix_shift[0]
        h["CRPIX2"] = self.crpix[1] + crpix_shift[1]
        h["CRVAL1"] = self.crval[0]
        h["CRVAL2"] = self.crval[1]
        for i in (1, 2):
            for j in (1, 2):
                h[f"CD{i}_{j}"] = float(self.cd[i - 1, j - 1])
        h["LONPOLE"] = self.lonpole
        h["RADESYS"] = "ICRS"
        for name, coeffs in (("A", self.a), ("B", self.b), ("AP", self.ap), ("BP", self.bp)):
            if coeffs is None:
                continue
            order = coeffs.shape[0] - 1
            h[f"{name}_ORDER"] = order
            for p in range(order + 1):
                for q in range(order + 1 - p):
                    if coeffs[p, q] != 0.0:
                        h[f"{name}_{p}_{q}"] = float(coeffs[p, q])
        return h


def _standard_sip(ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GalSim's (2, n+1, n+1) SIP array (identity included) -> standard A, B."""
    order = ab.shape[1] - 1
    triangle = np.add.outer(np.arange(order + 1), np.arange(order + 1)) <= order
    a = np.where(triangle, ab[0], 0.0)
    b = np.where(triangle, ab[1], 0.0)
    a[1, 0] -= 1.0
    b[0, 1] -= 1.0
    return a, b


def _read_sip(header: fits.Header, name: str) -> np.ndarray:
    order = int(header[f"{name}_ORDER"])
    coeffs = np.zeros((order + 1, order + 1))
    for p in range(order + 1):
        for q in range(order + 1 - p):
            coeffs[p, q] = float(header.get(f"{name}_{p}_{q}", 0.0))
    return coeffs


def _pair(origin, name: str = "origin") -> tuple[int, int]:
    try:
        x, y = origin
        pair = (int(x), int(y))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of integers, got {origin!r}") from None
    if pair != (x, y):
        raise ValueError(f"{name} must be a pair of integers, got {origin!r}")
    return pair


# --------------------------------------------------------------------------
# SIP inverse
# --------------------------------------------------------------------------

def _monomials(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    """Columns ``x**p * y**q`` for ``p + q <= order`` (p outer, q inner)."""
    return np.stack([x ** p * y ** q for p in range(order + 1) for q in range(order + 1 - p)],
                    axis=-1)


def _unpack(values: np.ndarray, order: int, scale: float) -> np.ndarray:
    coeffs = np.zeros((order + 1, order + 1))
    k = 0
    for p in range(order + 1):
        for q in range(order + 1 - p):
            coeffs[p, q] = values[k] / scale ** (p + q)
            k += 1
    return coeffs


def fit_sip_inverse(a: np.ndarray, b: np.ndarray, xrange: tuple[float, float],
                    yrange: tuple[float, float], tolerance: float = INVERSE_TOLERANCE
                    ) -> tuple[np.ndarray, np.ndarray, float]:
    """SIP ``AP, BP`` polynomials inverting the distortion ``A, B``.

    The forward distortion maps pixel offsets from ``CRPIX`` ``(x, y)`` to
    ``(u, v) = (x + A(x, y), y + B(x, y))``; the inverse is
    ``x = u + AP(u, v)``, ``y = v + BP(u, v)``.  It is fitted by least squares
    (in coordinates scaled to about [-1, 1]) on a 48 x 48 grid spanning
    ``xrange`` x ``yrange`` (offsets from ``CRPIX``), raising the order from
    that of ``A, B`` until the largest error on a second, offset 61 x 61 grid
    is below ``tolerance`` pixels or the order reaches
    :data:`MAX_INVERSE_ORDER`.

    Parameters
    ----------
    a, b : numpy.ndarray
        Standard SIP coefficient matrices; entry ``[p, q]`` multiplies
        ``x**p * y**q``.
    xrange, yrange : tuple of float
        The region to cover, pixels from ``CRPIX``.
    tolerance : float
        Error aimed at, pixels.

    Returns
    -------
    ap, bp : numpy.ndarray
        The inverse coefficient matrices (standard SIP form).
    error : float
        The largest error of ``x, y`` on the check grid, pixels.  A
        ``RuntimeWarning`` says when it exceeds ``tolerance``.
    """
    poly = np.polynomial.polynomial.polyval2d
    scale = float(max(abs(v) for v in (*xrange, *yrange))) or 1.0

    def sample(n: int, inset: float) -> tuple[np.ndarray, ...]:
        step_x = (xrange[1] - xrange[0]) / (n - 1)
        step_y = (yrange[1] - yrange[0]) / (n - 1)
        xs = np.linspace(xrange[0] + inset * step_x, xrange[1] - inset * step_x, n)
        ys = np.linspace(yrange[0] + inset * step_y, yrange[1] - inset * step_y, n)
        x, y = (g.ravel() for g in np.meshgrid(xs, ys))
        return x, y, x + poly(x, y, a), y + poly(x, y, b)

    x, y, uu, vv = sample(48, 0.0)
    xc, yc, uc, vc = sample(61, 0.25)
    best = None
    for order in range(max(a.shape[0] - 1, 1), MAX_INVERSE_ORDER + 1):
        design = _monomials(uu / scale, vv / scale, order)
        fit, *_ = np.linalg.lstsq(design, np.stack([x - uu, y - vv], axis=-1), rcond=None)
        ap, bp = _unpack(fit[:, 0], order, scale), _unpack(fit[:, 1], order, scale)
        error = float(max(np.abs(uc + poly(uc, vc, ap) - xc).max(),
                          np.abs(vc + poly(uc, vc, bp) - yc).max()))
        if best is None or error < best[2]:
            best = (ap, bp, error)
        if error <= tolerance:
            break
    if best[2] > tolerance:
        warnings.warn(f"the fitted SIP inverse is good to {best[2]:.2g} pixels only",
                      RuntimeWarning, stacklevel=2)
    return best


# --------------------------------------------------------------------------
# gWCS
# --------------------------------------------------------------------------

def _polynomial(coeffs: np.ndarray, linear: tuple[int, int], name: str) -> models.Polynomial2D:
    """``Polynomial2D`` of a SIP coefficient matrix plus the term ``linear`` = 1."""
    order = coeffs.shape[0] - 1
    params = {f"c{p}_{q}": float(coeffs[p, q])
              for p in range(order + 1) for q in range(order + 1 - p)}
    params[f"c{linear[0]}_{linear[1]}"] += 1.0
    return models.Polynomial2D(order, name=name, **params)


def _sip_model(a: np.ndarray, b: np.ndarray, name: str):
    """(x, y) -> (x + A(x, y), y + B(x, y))."""
    model = (models.Mapping((0, 1, 0, 1))
             | _polynomial(a, (1, 0), f"{name}_x") & _polynomial(b, (0, 1), f"{name}_y"))
    model.name = name
    return model


def _gwcs(params: _TanSip, first: tuple[float, float],
          shape: tuple[int, int] | None) -> gwcs.WCS:
    """The gWCS of ``params`` for arrays whose pixel 0 is header coordinate ``first``."""
    transform = (models.Shift(first[0] - params.crpix[0], name="crpix1")
                 & models.Shift(first[1] - params.crpix[1], name="crpix2"))
    if params.sip:
        distortion = _sip_model(params.a, params.b, "sip")
        distortion.inverse = _sip_model(params.ap, params.bp, "sip_inverse")
        transform = transform | distortion
    transform = (transform
                 | models.AffineTransformation2D(matrix=params.cd, translation=[0.0, 0.0],
                                                 name="cd")
                 | models.Pix2Sky_TAN(name="tan")
                 | models.RotateNative2Celestial(params.crval[0], params.crval[1],
                                                 params.lonpole, name="crval"))
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), axes_names=("x", "y"),
                          unit=(u.pix, u.pix))
    world = cf.CelestialFrame(name="world", reference_frame=ICRS(), unit=(u.deg, u.deg))
    result = gwcs.WCS([(detector, transform), (world, None)])
    if shape is not None:
        ny, nx = _pair(shape, "shape")
        result.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
        result.pixel_shape = (nx, ny)
    return result


def _with_inverse(params: _TanSip, first_pixel: float,
                  size: tuple[int, int] = (N_PIX, N_PIX)) -> _TanSip:
    """``params`` with a SIP inverse covering an image of ``size`` (plus a margin).

    ``first_pixel`` is the header coordinate of the image's first pixel.
    """
    lo = (first_pixel - 0.5 - INVERSE_MARGIN,) * 2
    hi = tuple(first_pixel - 0.5 + n + INVERSE_MARGIN for n in size)
    return params.with_inverse(lo, hi)


def gwcs_from_galsim(wcs: galsim.GSFitsWCS, origin: tuple[int, int], *,
                     shape: tuple[int, int] | None = None) -> gwcs.WCS:
    """The exact gWCS of an L2 array cut from GalSim's science-array WCS.

    Parameters
    ----------
    wcs : galsim.GSFitsWCS
        A TAN or TAN-SIP WCS in GalSim's 1-based coordinates of the full
        science array (as ``SCAView.wcs``).
    origin : tuple of int
        0-based offset of the array in the science array: array pixel
        ``(x, y)`` is GalSim position ``(x + 1 + origin[0], y + 1 + origin[1])``
        (``SCAView.bounds.xmin - 1, SCAView.bounds.ymin - 1``).
    shape : tuple of int, optional
        ``(ny, nx)`` of the array: sets the bounding box (and
        ``pixel_shape``), outside which gwcs returns NaN by default.

    Returns
    -------
    gwcs.WCS
        Frames ``detector`` (pixels) -> ``world`` (ICRS, degrees), with an
        analytic inverse (GalSim's SIP inverse, or one fitted over the science
        array to better than :data:`INVERSE_TOLERANCE` pixels).
    """
    ox, oy = _pair(origin)
    params = _with_inverse(_TanSip.from_galsim(wcs), 1.0)
    return _gwcs(params, (1.0 + ox, 1.0 + oy), shape)


def read_fits_header(source: fits.Header | str | os.PathLike) -> fits.Header:
    """A FITS header from a Header, a text file of header cards, or such text.

    Parameters
    ----------
    source : astropy.io.fits.Header, galsim.FitsHeader, str or path-like
        A header (copied); a path to a text file of header cards, 80
        characters each, back to back (as ``Header.tofile`` writes them) or
        one per line; or, for a ``str`` that names no file, the cards
        themselves.

    Returns
    -------
    astropy.io.fits.Header
    """
    if isinstance(source, galsim.FitsHeader):
        source = source.header
    if isinstance(source, fits.Header):
        return source.copy()
    if isinstance(source, str) and "=" in source and not os.path.isfile(source):
        text = source
    elif isinstance(source, (str, os.PathLike)):
        text = Path(source).read_text(encoding="ascii", errors="replace")
    else:
        raise TypeError(f"expected a FITS Header, a path or header text, "
                        f"got {type(source).__name__}")
    text = text.replace("\r\n", "\n").strip("\n")
    if "\n" in text:
        return fits.Header.fromstring(text, sep="\n")
    return fits.Header.fromstring(text)


def header_first_pixel(header: fits.Header) -> float:
    """Header pixel coordinate of the centre of the first pixel: 1, or 0 for sim_to_isim.

    romanimpreprocess's ``sim_to_isim`` writes its WCS header with ``CRPIX``
    decremented by one and marks it with ``COMMENT truth wcs from sim_to_isim``
    (:data:`SIM_TO_ISIM_COMMENT`); every other header follows the FITS
    standard.
    """
    comments = header.get("COMMENT", [])
    if isinstance(comments, str):
        comments = [comments]
    return 0.0 if any(str(c).strip() == SIM_TO_ISIM_COMMENT for c in comments) else 1.0


def _header_size(header: fits.Header) -> tuple[int, int]:
    """Image size a header describes: its NAXISn when given, else the science array."""
    if int(header.get("NAXIS", 0) or 0) == 2:
        nx, ny = int(header.get("NAXIS1", 0) or 0), int(header.get("NAXIS2", 0) or 0)
        if nx > 0 and ny > 0:
            return nx, ny
    return N_PIX, N_PIX


def gwcs_from_fits_header(header: fits.Header | str | os.PathLike,
                          origin: tuple[int, int] = (0, 0), *,
                          first_pixel: float | None = None,
                          shape: tuple[int, int] | None = None) -> gwcs.WCS:
    """The gWCS of an L2 array from a FITS TAN or TAN-SIP header.

    Parameters
    ----------
    header : astropy.io.fits.Header, str or path-like
        The header, or a text file of its cards (see :func:`read_fits_header`):
        e.g. romanimpreprocess's ``FITSWCS`` file, a header GalSim's
        ``writeToFitsHeader`` filled, or :func:`fits_header_from_galsim`'s.
    origin : tuple of int
        0-based offset of the array in the image the header describes: array
        pixel ``(x, y)`` is header pixel
        ``(x + first_pixel + origin[0], y + first_pixel + origin[1])``.
    first_pixel : float, optional
        Header pixel coordinate of the centre of the image's first pixel: 1
        in the FITS standard, 0 in ``sim_to_isim``'s files; by default
        :func:`header_first_pixel` tells.
    shape : tuple of int, optional
        ``(ny, nx)`` of the array, for the bounding box.

    Returns
    -------
    gwcs.WCS
        As :func:`gwcs_from_galsim`.  Without ``AP, BP`` in the header the
        inverse is fitted over the image (``NAXISn`` or, without them, the
        4088 x 4088 science array).
    """
    header = read_fits_header(header)
    ox, oy = _pair(origin)
    if first_pixel is None:
        first_pixel = header_first_pixel(header)
    params = _with_inverse(_TanSip.from_header(header), first_pixel, _header_size(header))
    return _gwcs(params, (first_pixel + ox, first_pixel + oy), shape)


def fits_header_from_galsim(wcs: galsim.GSFitsWCS, origin: tuple[int, int]) -> fits.Header:
    """Standard FITS TAN-SIP header of an L2 array cut from GalSim's WCS.

    The header's pixel 1 is array pixel 0, i.e. GalSim position
    ``origin + 1``; :func:`gwcs_from_fits_header` of it equals
    :func:`gwcs_from_galsim` ``(wcs, origin)``.  It carries the SIP inverse
    (``AP, BP``: GalSim's, or the fitted one :func:`gwcs_from_galsim` uses),
    ``RADESYS = 'ICRS'``, and ``GS_XMIN, GS_YMIN = origin + 1`` so that GalSim
    (``galsim.fits.read``) gives the image its science-array bounds and
    ``wcs`` back.
    """
    ox, oy = _pair(origin)
    params = _with_inverse(_TanSip.from_galsim(wcs), 1.0)
    header = params.header(crpix_shift=(-ox, -oy))
    header["GS_XMIN"] = (ox + 1, "GalSim x of the first pixel (science array)")
    header["GS_YMIN"] = (oy + 1, "GalSim y of the first pixel (science array)")
    return header


def window_header(header: fits.Header | str | os.PathLike, origin: tuple[int, int], *,
                  first_pixel: float | None = None) -> fits.Header:
    """A science-array WCS header made the standard FITS header of a window.

    ``CRPIX`` is moved so that the window's first pixel (0-based science
    pixel ``origin``) is pixel 1, whatever convention the input follows
    (``first_pixel``, as in :func:`gwcs_from_fits_header`); sim_to_isim's
    marker comment and the structural cards (``NAXIS`` ...) are dropped, and
    ``GS_XMIN, GS_YMIN`` are set so that GalSim reads the WCS back in the
    input's coordinates.
    """
    header = read_fits_header(header)
    ox, oy = _pair(origin)
    if first_pixel is None:
        first_pixel = header_first_pixel(header)
    out = fits.Header()
    for card in header.cards:
        if _STRUCTURAL.match(card.keyword) or (
                card.keyword == "COMMENT" and str(card.value).strip() == SIM_TO_ISIM_COMMENT):
            continue
        out.append(card)
    out["CRPIX1"] = float(header["CRPIX1"]) - (first_pixel - 1 + ox)
    out["CRPIX2"] = float(header["CRPIX2"]) - (first_pixel - 1 + oy)
    # GalSim coordinates of the window's first pixel, in the input's GalSim frame
    first = int(round(first_pixel)) - 1
    out["GS_XMIN"] = first + int(header.get("GS_XMIN", 1)) + ox
    out["GS_YMIN"] = first + int(header.get("GS_YMIN", 1)) + oy
    return out


# --------------------------------------------------------------------------
# pixel areas
# --------------------------------------------------------------------------

def _indices(index: slice, name: str) -> np.ndarray:
    if not isinstance(index, slice):
        raise TypeError(f"{name} must be a slice, got {type(index).__name__}")
    start, stop = index.start or 0, index.stop
    step = 1 if index.step is None else index.step
    if stop is None or start < 0 or stop < 0 or step <= 0:
        raise ValueError(f"{name} must be a slice with explicit, non-negative start/stop "
                         f"and a positive step, got {index}")
    return np.arange(start, stop, step, dtype=float)


def _polymul2d(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Product of two polynomials given as coefficient matrices ``[power of x, power of y]``."""
    out = np.zeros((p.shape[0] + q.shape[0] - 1, p.shape[1] + q.shape[1] - 1))
    for (i, j), c in np.ndenumerate(p):
        if c != 0.0:
            out[i:i + q.shape[0], j:j + q.shape[1]] += c * q
    return out


def _derivative(c: np.ndarray, axis: int) -> np.ndarray:
    """Coefficient matrix of the derivative along ``axis`` (0: x, 1: y)."""
    return np.polynomial.polynomial.polyder(c, axis=axis)


def pixel_area_map(wcs: galsim.GSFitsWCS, origin: tuple[int, int], rows: slice, cols: slice,
                   *, block: int = 64) -> np.ndarray:
    """Area on the sky of each pixel of a block of an L2 array, in nominal pixels.

    The area is the Jacobian determinant of the TAN-SIP map at the pixel
    centre, evaluated analytically: ``|det CD|`` times the determinant of the
    SIP distortion's Jacobian ``J(x, y)`` times the gnomonic solid-angle
    factor ``(1 + R(x, y))**-1.5``, where ``R = xi**2 + eta**2`` is the
    squared distance (radians) from the tangent point in the projection
    plane.  ``J`` and ``R`` are themselves polynomials in the pixel offsets
    from ``CRPIX``, whose coefficients are computed once; on the grid they
    are evaluated as products of matrices of powers of ``y`` and of ``x``
    (``numpy.einsum``, which unlike BLAS runs in the calling thread),
    ``block`` rows at a time: a full 4088 x 4088 map takes a few tenths of a
    second.  This is what GalSim's ``wcs.pixelArea`` gives, and it differs
    from the area integrated over the pixel by a relative 1e-10 or less
    (second-order terms across a 0.11 arcsec pixel).

    Parameters
    ----------
    wcs : galsim.GSFitsWCS
        TAN or TAN-SIP WCS in GalSim's coordinates of the science array.
    origin : tuple of int
        0-based offset of the array in the science array, as in
        :func:`gwcs_from_galsim`.
    rows, cols : slice
        The block of array pixels, ``[rows, cols]`` (explicit non-negative
        start and stop; no wrap-around).
    block : int
        Rows evaluated at a time.

    Returns
    -------
    numpy.ndarray
        float64 (ny, nx): each pixel's area divided by
        :data:`NOMINAL_PIXEL_AREA` (0.11 arcsec)^2.
    """
    params = _TanSip.from_galsim(wcs)
    ox, oy = _pair(origin)
    x = _indices(cols, "cols") + (1 + ox - params.crpix[0])
    y = _indices(rows, "rows") + (1 + oy - params.crpix[1])
    # (U, V) = (x + A, y + B): pixel offsets -> distortion-corrected offsets.
    if params.sip:
        cu, cv = params.a.copy(), params.b.copy()
    else:
        cu, cv = np.zeros((2, 2)), np.zeros((2, 2))
    cu[1, 0] += 1.0
    cv[0, 1] += 1.0
    jac = (_polymul2d(_derivative(cu, 0), _derivative(cv, 1))
           - _polymul2d(_derivative(cu, 1), _derivative(cv, 0)))
    cd = params.cd * (np.pi / 180.0)  # radians per pixel
    xi, eta = cd[0, 0] * cu + cd[0, 1] * cv, cd[1, 0] * cu + cd[1, 1] * cv
    radius2 = _polymul2d(xi, xi) + _polymul2d(eta, eta)
    scale = abs(np.linalg.det(params.cd)) * 3600.0 ** 2 / NOMINAL_PIXEL_AREA

    def on_rows(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # f[r, k] = sum_pq c[p, q] x_k**p y_r**q = ((y**q) @ c.T)[r] @ (x**p)[:, k]
        return (y[:, None] ** np.arange(c.shape[1])) @ c.T, x ** np.arange(c.shape[0])[:, None]

    (jac_y, jac_x), (r2_y, r2_x) = on_rows(jac), on_rows(radius2)
    out = np.empty((y.size, x.size))
    step = max(int(block), 1)
    for r0 in range(0, y.size, step):
        r1 = min(r0 + step, y.size)
        factor = np.einsum("rp,pk->rk", r2_y[r0:r1], r2_x)
        factor += 1.0
        factor *= np.sqrt(factor)
        np.abs(np.einsum("rp,pk->rk", jac_y[r0:r1], jac_x), out=out[r0:r1])
        out[r0:r1] *= scale
        out[r0:r1] /= factor
    return out


# --------------------------------------------------------------------------
# FITS companion of an L2 file
# --------------------------------------------------------------------------

def _meta_card(key: str, value: Any) -> fits.Card:
    value, comment = value if isinstance(value, tuple) else (value, None)
    if isinstance(value, np.generic):
        value = value.item()
    key = key.upper()
    if len(key) > 8 or not re.fullmatch(r"[A-Z0-9_-]+", key):
        key = "HIERARCH " + key
    return fits.Card(key, value, comment)


def _fits_array(array: np.ndarray) -> np.ndarray:
    """A big-endian copy FITS can hold (astropy byteswaps arrays in place when writing)."""
    array = np.asarray(array)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    return np.array(array, dtype=array.dtype.newbyteorder(">"), order="C")


def write_fits_image(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                     header: fits.Header, meta_cards: Mapping[str, Any] | None = None, *,
                     primary: str | None = None) -> None:
    """Write the FITS companion (``_asdf_to.fits``) of an L2 image.

    The primary HDU carries ``header`` (its structural cards dropped) and
    ``meta_cards``, and no data unless ``primary`` names one of the arrays,
    which it then holds; then comes one ``ImageHDU`` per (other) array, in
    the order given, named by :data:`EXTNAMES` (``data`` -> ``SCI``, ``err``
    -> ``ERR`` ...; other names upper-cased), each carrying the WCS cards of
    ``header`` so that viewers show sky coordinates.  float16 arrays are
    written as float32, booleans as uint8; unsigned integers use FITS's
    ``BZERO`` convention and read back as such.  The caller's arrays are not
    modified, even temporarily.

    The file is written as ``<path>.partial`` and renamed when complete, and
    carries no wall-clock date: the same inputs give the same bytes.

    Parameters
    ----------
    path : str or path-like
        The file to write (replaced if it exists).
    arrays : mapping of str to numpy.ndarray
        The 2-D image planes, all of one shape.
    header : astropy.io.fits.Header
        The WCS of the array in the standard FITS convention (first pixel at
        1), e.g. :func:`fits_header_from_galsim` ``(wcs, origin)`` or
        :func:`window_header` of a ``FITSWCS`` header.
    meta_cards : mapping, optional
        Further primary-header cards: ``KEY: value`` or
        ``KEY: (value, comment)``; keys longer than 8 characters become
        ``HIERARCH`` cards.  They replace cards of ``header`` of the same
        name (e.g. the ``TELESCOP`` of a GalSim header), WCS cards excepted.
    primary : str, optional
        The array the primary HDU holds (romanimpreprocess's layout puts the
        data there); the others follow as image extensions.

    Raises
    ------
    ValueError
        For no arrays, arrays not 2-D or of different shapes, a header still
        in sim_to_isim's 0-based convention, or a meta card naming a WCS or
        structural card.
    romandask.errors.OutputError
        If the file cannot be written; nothing is left behind then.
    """
    hdus = fits_image_hdus(arrays, header, meta_cards, primary=primary)
    with atomic_path(Path(path)) as partial:
        hdus.writeto(partial, overwrite=True, output_verify="exception")


def fits_image_hdus(arrays: Mapping[str, np.ndarray], header: fits.Header,
                    meta_cards: Mapping[str, Any] | None = None, *,
                    primary: str | None = None) -> fits.HDUList:
    """The HDUs :func:`write_fits_image` writes (same arguments, same checks)."""
    primary_array = primary
    if not arrays:
        raise ValueError("no arrays to write")
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        raise ValueError(f"the arrays must be 2-D and of one shape, got {shapes}")
    if header_first_pixel(header) != 1.0:
        raise ValueError("the header uses sim_to_isim's 0-based CRPIX; convert it with "
                         "window_header(header, origin) first")

    primary_header = fits.Header()
    for card in header.cards:
        if not _STRUCTURAL.match(card.keyword):
            primary_header.append(card)
    for key, value in (meta_cards or {}).items():
        card = _meta_card(key, value)
        if _WCS_KEY.match(card.keyword) or _STRUCTURAL.match(card.keyword):
            raise ValueError(f"meta card {key!r} would replace a WCS or structural card")
        if card.keyword in primary_header:
            primary_header[card.keyword] = (card.value, card.comment)
        else:
            primary_header.append(card)
    wcs_cards = fits.Header([card for card in header.cards if _WCS_KEY.match(card.keyword)])

    if primary_array is not None and primary_array not in arrays:
        raise ValueError(f"primary names no array: {primary_array!r}")
    rest = {name: array for name, array in arrays.items() if name != primary_array}
    names = [EXTNAMES.get(name, name.upper()) for name in rest]
    if len(set(names)) != len(names):
        raise ValueError(f"extension names repeat: {names}")
    data = None if primary_array is None else _fits_array(arrays[primary_array])
    hdus = [fits.PrimaryHDU(data=data, header=primary_header)]
    for name, array in zip(names, rest.values()):
        hdus.append(fits.ImageHDU(data=_fits_array(array), header=wcs_cards.copy(), name=name))
    return fits.HDUList(hdus)

"""Skies and catalogs kept in HEALPix pixels: what a survey-scale run reads.

A survey of 10^4-10^5 SCA-images covers tens to thousands of square
degrees; its sources are kept in HEALPix pixels (NESTED ordering, through
``hpgeom``) so that what is read or drawn is only what the footprint
touches, pixel by pixel:

* the synthetic sky is drawn pixel by pixel, each pixel from its own random
  stream keyed by ``(seed, nside, pixel)``: a pixel holds the same sources in
  every survey that covers it, whatever else that survey covers, and any
  worker draws them alike.  Galaxy and star counts follow the number-count
  model of :func:`~romandask.scene.catalog.synthesize_catalog` (the star
  density at each pixel's own Galactic latitude), with a Poisson number of
  each per pixel and positions uniform within the pixel;
* a user catalog may be a directory of Parquet files, one per pixel, of
  which only the pixels needed are read.

Layout of a partitioned catalog directory (:func:`write_partitioned`)::

    <dir>/romandask_catalog.json   {"format": "romandask-healpix-catalog",
                                    "version": 1, "nside": 64,
                                    "ordering": "nested",
                                    "pixels": {"<pixel>": <rows>, ...}}
    <dir>/pixel_<pixel>.parquet    the rows whose (ra, dec) lies in <pixel>

Every file holds the catalog columns (romanisim's: ``ra``, ``dec``, ``type``,
``n``, ``half_light_radius``, ``pa``, ``ba``, one flux column per filter in
maggies, and ``id``), so a pixel file reads as a catalog on its own.

Source ids of the synthetic sky are ``pixel * 2**24 + k``: unique over the
sky, and the same for a source in every survey that draws its pixel.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import hpgeom
import numpy as np
from astropy.table import Table, vstack

from .. import rng as rngmod
from ..errors import InputError, OutputError
from .catalog import (FILTERS, GALAXY_COUNT_SLOPE, STAR_COUNT_SLOPE, _GALAXY_BETA, _STAR_BETA,
                      _check_filter_names, _draw_beta, _draw_power_law, _draw_sersic_shapes,
                      _fluxes, expected_galaxy_density, expected_star_density, fill_sources,
                      validate_catalog)

__all__ = ["INDEX_NAME", "SKY_NSIDE", "PartitionedCatalog", "galactic_latitude",
           "pixel_sources", "pixels_near", "synthesize_pixels", "write_partitioned"]

#: HEALPix resolution of the synthetic sky: 13.7' pixels (0.0525 deg^2), ~13,000
#: sources each at the default density; an SCA (7.5' on a side) touches 2 to 6.
SKY_NSIDE = 256
#: Source ids are ``pixel * ID_STRIDE + k``.
ID_STRIDE = 1 << 24
#: The index file of a partitioned catalog directory.
INDEX_NAME = "romandask_catalog.json"
FORMAT_NAME = "romandask-healpix-catalog"


def galactic_latitude(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Galactic latitude (deg) of ICRS positions (deg)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    return SkyCoord(ra=np.asarray(ra) * u.deg, dec=np.asarray(dec) * u.deg,
                    frame="icrs").galactic.b.deg


def _draw_in_pixel(rng: np.random.Generator, size: int, nside: int, pixel: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``size`` points uniform on the sphere within one (NESTED) HEALPix pixel.

    Rejection from the pixel's box in (longitude about its centre, sin dec):
    uniform in that box is uniform on the sphere, and a point is kept where
    the pixel holds it.  The box comes from the pixel's boundary, padded (the
    edges curve between the sampled points); a pixel at a pole takes every
    longitude.
    """
    lon_c, lat_c = hpgeom.pixel_to_angle(nside, pixel, nest=True)
    lon_b, lat_b = hpgeom.boundaries(nside, pixel, step=8, nest=True)
    z_b = np.sin(np.radians(lat_b))
    z_lo, z_hi = z_b.min(), z_b.max()
    pad = 0.05 * (z_hi - z_lo)
    z_lo, z_hi = max(z_lo - pad, -1.0), min(z_hi + pad, 1.0)
    if np.abs(lat_b).max() > 89.999:
        d_lo, d_hi = -180.0, 180.0
        z_lo, z_hi = (z_lo, 1.0) if lat_c > 0 else (-1.0, z_hi)
    else:
        d = (lon_b - lon_c + 180.0) % 360.0 - 180.0
        pad = 0.05 * (d.max() - d.min())
        d_lo, d_hi = d.min() - pad, d.max() + pad
    ra = np.empty(0)
    dec = np.empty(0)
    while ra.size < size:
        batch = max(2 * (size - ra.size), 16)
        z = z_lo + (z_hi - z_lo) * rng.random(batch)
        lon = (lon_c + d_lo + (d_hi - d_lo) * rng.random(batch)) % 360.0
        lat = np.degrees(np.arcsin(z))
        keep = hpgeom.angle_to_pixel(nside, lon, lat, nest=True) == pixel
        ra = np.concatenate([ra, lon[keep]])
        dec = np.concatenate([dec, lat[keep]])
    return ra[:size], dec[:size]


def pixel_sources(seed: int, pixel: int, nside: int = SKY_NSIDE,
                  filters: Iterable[str] = FILTERS, *,
                  galaxy_mag_range: tuple[float, float] = (18.0, 26.0),
                  star_mag_range: tuple[float, float] = (16.0, 24.0),
                  density_scale: float = 1.0) -> Table:
    """The synthetic sources of one HEALPix pixel (NESTED), galaxies then stars.

    A Poisson number of galaxies and of stars with the means the number-count
    model gives for the pixel's area (stars at the Galactic latitude of the
    pixel's centre), positions uniform in the pixel, and magnitudes, shapes
    and colours as :func:`~romandask.scene.catalog.synthesize_catalog` draws
    them.  The stream is keyed by ``(seed, nside, pixel)``; the columns are
    those of a catalog, with ``id = pixel * 2**24 + k``.
    """
    filters = _check_filter_names(filters)
    nside, pixel = int(nside), int(pixel)
    if not 0 <= pixel < hpgeom.nside_to_npixel(nside):
        raise ValueError(f"pixel {pixel} is not a pixel of nside {nside}")
    rng = rngmod.generator(seed, "catalog", nside, pixel)
    area = hpgeom.nside_to_pixel_area(nside, degrees=True)
    lon_c, lat_c = hpgeom.pixel_to_angle(nside, pixel, nest=True)
    b_deg = float(galactic_latitude(lon_c, lat_c))

    n_gal = int(rng.poisson(expected_galaxy_density(*galaxy_mag_range) * area * density_scale))
    n_star = int(rng.poisson(expected_star_density(*star_mag_range, b_deg) * area
                             * density_scale))
    if n_gal + n_star >= ID_STRIDE:
        raise ValueError(f"pixel {pixel} would hold {n_gal + n_star} sources: more than "
                         f"its ids allow ({ID_STRIDE}); use a larger nside")
    gal_ra, gal_dec = _draw_in_pixel(rng, n_gal, nside, pixel)
    gal_mag = _draw_power_law(rng, n_gal, GALAXY_COUNT_SLOPE, *galaxy_mag_range)
    gal_shape = _draw_sersic_shapes(rng, gal_mag)
    gal_flux = _fluxes(gal_mag, _draw_beta(rng, n_gal, _GALAXY_BETA), filters)
    star_ra, star_dec = _draw_in_pixel(rng, n_star, nside, pixel)
    star_mag = _draw_power_law(rng, n_star, STAR_COUNT_SLOPE, *star_mag_range)
    star_flux = _fluxes(star_mag, _draw_beta(rng, n_star, _STAR_BETA), filters)

    ids = pixel * np.int64(ID_STRIDE) + np.arange(n_gal + n_star, dtype=np.int64)
    return fill_sources(Table(), ids, (gal_ra, gal_dec), gal_shape, gal_flux,
                        (star_ra, star_dec), star_flux, filters)


def synthesize_pixels(seed: int, pixels: Sequence[int], nside: int = SKY_NSIDE,
                      filters: Iterable[str] = FILTERS, **model) -> Table:
    """The synthetic sources of several pixels, in the order of ``pixels``."""
    filters = _check_filter_names(filters)
    tables = [pixel_sources(seed, p, nside, filters, **model) for p in pixels]
    if not tables:
        return pixel_sources(seed, 0, nside, filters, **{**model, "density_scale": 0.0})
    table = vstack(tables, metadata_conflicts="silent")
    table.meta = {"synthetic": True, "healpix_nside": int(nside), "ordering": "nested",
                  **{k: (list(v) if isinstance(v, tuple) else v) for k, v in model.items()}}
    return table


def pixels_near(ra: np.ndarray, dec: np.ndarray, margin_deg: float,
                nside: int = SKY_NSIDE) -> np.ndarray:
    """The (NESTED) pixels that may hold a source within ``margin_deg`` of a polygon.

    ``ra``, ``dec`` (deg) are the polygon's vertices (an SCA window's four
    corners).  Taken generously: every pixel that overlaps the circle around
    the vertices' mean that holds them all, grown by the margin.
    """
    from ..survey.footprint import unit_vectors

    xyz = unit_vectors(np.asarray(ra, float), np.asarray(dec, float))
    centre = xyz.mean(axis=0)
    centre /= np.linalg.norm(centre)
    radius = np.degrees(np.arccos(np.clip(xyz @ centre, -1.0, 1.0))).max() + margin_deg
    lon, lat = hpgeom.vector_to_angle(centre[None, :])
    return np.sort(hpgeom.query_circle(nside, float(lon[0]), float(lat[0]), float(radius),
                                       inclusive=True, fact=8, nest=True))


# --------------------------------------------------------------------------
# partitioned catalogs
# --------------------------------------------------------------------------

def write_partitioned(table: Table, directory: str | os.PathLike, nside: int = 64) -> Path:
    """Write a catalog as a directory of one Parquet file per (NESTED) HEALPix pixel.

    The directory is made under a temporary name and renamed when complete;
    an existing directory of that name is refused.  Returns its path.
    """
    directory = Path(directory)
    where = f"catalog {directory}"
    if directory.exists():
        raise OutputError(where, "already exists", "choose a new directory name")
    if not 1 <= int(nside) <= 8192 or int(nside) & (int(nside) - 1):
        raise ValueError(f"nside must be a power of 2 from 1 to 8192, got {nside}")
    partial = directory.with_name(f".{directory.name}.{os.getpid()}.partial")
    pixels = hpgeom.angle_to_pixel(nside, np.asarray(table["ra"], float),
                                   np.asarray(table["dec"], float), nest=True)
    order = np.argsort(pixels, kind="stable")
    pixels = pixels[order]
    table = table[order]
    bounds = np.flatnonzero(np.diff(pixels)) + 1
    starts, stops = np.r_[0, bounds], np.r_[bounds, len(pixels)]
    counts = {}
    try:
        partial.mkdir(parents=True)
        for a, b in zip(starts, stops):
            if a == b:
                continue
            p = int(pixels[a])
            table[a:b].write(partial / f"pixel_{p}.parquet", format="parquet")
            counts[str(p)] = int(b - a)
        index = {"format": FORMAT_NAME, "version": 1, "nside": int(nside),
                 "ordering": "nested", "rows": int(len(table)), "pixels": counts}
        (partial / INDEX_NAME).write_text(json.dumps(index, indent=1) + "\n")
        os.replace(partial, directory)
    except OSError as exc:
        raise OutputError(where, f"could not be written ({exc.strerror or exc})",
                          "check the output directory") from exc
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return directory


class PartitionedCatalog:
    """A directory of per-pixel catalog files (see the module docstring).

    Only its index is read on opening; :meth:`read` reads the pixels asked for.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        where = f"catalog {self.directory}"
        path = self.directory / INDEX_NAME
        if not path.is_file():
            raise InputError(where, f"has no {INDEX_NAME}",
                             "give a catalog file, or a directory written by "
                             "romandask.scene.healpix.write_partitioned")
        try:
            index = json.loads(path.read_text())
            if index.get("format") != FORMAT_NAME:
                raise ValueError(f"format is {index.get('format')!r}")
            self.nside = int(index["nside"])
            if index.get("ordering", "nested") != "nested":
                raise ValueError("ordering is not nested")
            self.counts = {int(k): int(v) for k, v in index["pixels"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"catalog {path}", f"is not a partitioned-catalog index ({exc})",
                             "rewrite the directory with write_partitioned") from None
        self.rows = sum(self.counts.values())

    def __repr__(self) -> str:
        return (f"PartitionedCatalog({str(self.directory)!r}, nside={self.nside}, "
                f"{len(self.counts)} pixels, {self.rows} rows)")

    def pixel_path(self, pixel: int) -> Path:
        """The file of one pixel."""
        return self.directory / f"pixel_{int(pixel)}.parquet"

    def pixels_for(self, pixels_at_nside: np.ndarray, nside: int) -> np.ndarray:
        """This catalog's pixels that overlap the given pixels of another nside."""
        pixels_at_nside = np.unique(np.asarray(pixels_at_nside, np.int64))
        if nside == self.nside:
            mine = pixels_at_nside
        elif nside > self.nside:  # finer pixels: their parents
            mine = np.unique(pixels_at_nside >> (2 * int(np.log2(nside // self.nside))))
        else:  # coarser pixels: all their children
            shift = 2 * int(np.log2(self.nside // nside))
            mine = (pixels_at_nside[:, None] << shift) + np.arange(1 << shift)[None, :]
            mine = mine.ravel()
        return np.array([p for p in mine if int(p) in self.counts], np.int64)

    def check_columns(self, pixels: Iterable[int], filters: Iterable[str]) -> None:
        """Refuse (InputError) a file among ``pixels`` that lacks a column a run
        needs: read from the files' Parquet footers only, so that a run can check
        before it starts (their values are checked as each pixel is read)."""
        import pyarrow.parquet as pq

        from .catalog import REQUIRED_COLUMNS

        needed = ("id", *REQUIRED_COLUMNS, *_check_filter_names(filters))
        for p in sorted({int(p) for p in pixels} & set(self.counts)):
            path = self.pixel_path(p)
            try:
                names = set(pq.read_schema(path).names)
            except Exception as exc:  # noqa: BLE001  (pyarrow raises many kinds)
                raise InputError(f"catalog {path}", f"could not be read as Parquet "
                                 f"({type(exc).__name__})",
                                 "rewrite the directory with write_partitioned") from None
            missing = [c for c in needed if c not in names]
            if missing:
                raise InputError(f"catalog {path}", f"has no column(s) {', '.join(missing)}",
                                 "give every pixel file the catalog columns, an id and a "
                                 "flux column per simulated filter (rewrite the directory "
                                 "with write_partitioned)")

    def read_pixel(self, pixel: int, filters: Iterable[str]) -> Table:
        """The validated rows of one pixel the catalog has.

        Each pixel's file must give its sources' ids: a pixel read on its own
        cannot number its rows uniquely over the catalog.
        """
        path = self.pixel_path(pixel)
        table = self._read_file(path)
        if "id" not in table.colnames:
            raise InputError(f"catalog {path}", "has no 'id' column",
                             "give every source of a partitioned catalog an id (rewrite the "
                             "directory with write_partitioned)")
        return validate_catalog(table, filters, f"catalog {path}")

    @staticmethod
    def _read_file(path: Path) -> Table:
        try:
            return Table.read(path, format="parquet")
        except Exception as exc:  # noqa: BLE001  (pyarrow raises many kinds)
            raise InputError(f"catalog {path}", f"could not be read as Parquet "
                             f"({type(exc).__name__})",
                             "rewrite the directory with write_partitioned") from None

    def read(self, pixels: Iterable[int], filters: Iterable[str]) -> Table:
        """The validated rows of ``pixels`` (those the catalog has), in pixel order."""
        filters = _check_filter_names(filters)
        wanted = sorted(int(p) for p in set(int(p) for p in pixels) if int(p) in self.counts)
        tables = []
        for p in wanted:
            tables.append(self._read_file(self.pixel_path(p)))
        if not tables:
            empty = Table.read(next(self.directory.glob("pixel_*.parquet")), format="parquet")
            return validate_catalog(empty[:0], filters, f"catalog {self.directory}")
        table = vstack(tables, metadata_conflicts="silent")
        return validate_catalog(table, filters, f"catalog {self.directory}")

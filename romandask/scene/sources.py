"""The survey's sky as a small, picklable description, read where it is used.

A survey of 10^4-10^5 SCA-images sees far more sources than a driver should
hold, so the driver keeps only a :class:`Sky`: what the sources are (a
catalog file, a HEALPix-partitioned catalog directory, or the synthetic
sky's model and seed) and how far beyond a window they matter.  Each task
that needs the sources of an (exposure, SCA) asks :meth:`Sky.select`, on
its worker:

* a partitioned catalog or the HEALPix synthetic sky: the candidate pixels
  of the window's sky polygon grown by the margin
  (:func:`~romandask.scene.healpix.pixels_near`), each read or drawn once
  per worker process and kept in a cache bounded in bytes, then the exact
  cut in pixel space (:func:`~romandask.scene.select.sources_in`) pixel by
  pixel, concatenated in pixel order;
* one catalog file, or the synthetic sky drawn in one cap over the
  footprint: read (or drawn) once per worker process, then the same cut.

Either way a window's sources are the rows, in catalog order, that a cut over
the whole catalog would give: pixel order is catalog order for the
partitioned and HEALPix skies, and each pixel's rows keep theirs.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .select import CatalogIndex, margin_radius_deg, select_sources

__all__ = ["Sky", "cache_info", "clear_cache", "empty_sources"]

#: Bytes of per-pixel catalogs a worker process keeps (least recently used go first).
PIXEL_CACHE_BYTES = 256 << 20

#: The columns of a window's sources (:func:`~romandask.scene.select.sources_in`).
SOURCE_DTYPES = {"id": np.int64, "ra": np.float64, "dec": np.float64, "x": np.float64,
                 "y": np.float64, "flux": np.float64, "type": "U3", "n": np.float64,
                 "half_light_radius": np.float64, "pa": np.float64, "ba": np.float64}


def empty_sources() -> dict[str, np.ndarray]:
    """A window's sources when it has none."""
    return {k: np.zeros(0, dtype) for k, dtype in SOURCE_DTYPES.items()}


@dataclass(frozen=True)
class Sky:
    """Where a survey's sources come from (small: what tasks carry).

    ``kind`` is ``file`` (one catalog file), ``partitioned`` (a directory of
    per-pixel Parquet files, :mod:`romandask.scene.healpix`), ``healpix``
    (the synthetic sky drawn per pixel) or ``cap`` (the synthetic sky drawn
    in one cap, ``cap`` = (ra, dec, radius) in degrees).
    """

    kind: str
    filters: tuple[str, ...]
    margin: int
    seed: int = 0
    path: str | None = None
    nside: int = 0
    cap: tuple[float, float, float] | None = None
    model: tuple[tuple[str, object], ...] = ()

    @classmethod
    def from_config(cls, config, views) -> Sky:
        """The sky of ``config``; ``views`` (the footprint) for the cap's extent and the
        pixel files a partitioned catalog's run reads.

        A catalog file is read and validated here once, so that a bad catalog
        is refused before a run starts; of a partitioned catalog, the index and
        the columns of the pixel files the footprint needs (their values are
        checked before a run starts by :meth:`check_values`, on the workers).
        """
        from .catalog import read_catalog

        filters = tuple(sorted({e.filter for e in config.survey.exposures}))
        margin = config.scene.margin
        path = config.catalog.file
        if path is not None:
            if path.is_dir():
                from .healpix import PartitionedCatalog

                catalog = PartitionedCatalog(path)
                sky = cls("partitioned", filters, margin, path=str(path), nside=catalog.nside)
                # the columns of every pixel file the run reads, before it starts
                catalog.check_columns(sky.footprint_pixels(views), filters)
                return sky
            read_catalog(path, filters)  # refused here, not on a worker
            return cls("file", filters, margin, path=str(path))
        syn = config.catalog.synthetic
        model = (("galaxy_mag_range", tuple(syn.galaxy_mag_range)),
                 ("star_mag_range", tuple(syn.star_mag_range)),
                 ("density_scale", float(syn.density_scale)))
        if syn.partition == "healpix":
            from .healpix import SKY_NSIDE

            return cls("healpix", filters, margin, seed=config.seed, nside=SKY_NSIDE,
                       model=model)
        from ..survey.footprint import footprint_cap

        cap = footprint_cap(views, margin_radius_deg(margin)) if views else (0.0, 0.0, 0.0)
        return cls("cap", filters, margin, seed=config.seed, cap=cap, model=model)

    def describe(self) -> str:
        """One line: what the sources are and where they are cut."""
        where = "cut per (exposure, SCA) on the workers"
        if self.kind == "file":
            return f"catalog file {self.path}, {where}"
        if self.kind == "partitioned":
            catalog = _partitioned(self.path)
            return (f"partitioned catalog {self.path} ({catalog.rows} sources in "
                    f"{len(catalog.counts)} HEALPix pixels of nside {self.nside}), read by "
                    f"pixel and {where}")
        if self.kind == "healpix":
            return f"synthetic, drawn per HEALPix pixel (nside {self.nside}) and {where}"
        ra, dec, radius = self.cap
        return (f"synthetic, drawn in one cap of radius {radius:.4f} deg about RA {ra:.4f}, "
                f"Dec {dec:.4f} and {where}")

    @property
    def partitioned(self) -> bool:
        """Whether the sky is kept in HEALPix pixels (read or drawn pixel by pixel)."""
        return self.kind in ("partitioned", "healpix")

    def pixels(self, view) -> np.ndarray:
        """The (NESTED, at :attr:`nside`) pixels that may hold a source of ``view``."""
        from .healpix import pixels_near

        return pixels_near(*view.corners(), margin_radius_deg(self.margin), self.nside)

    def footprint_pixels(self, views) -> np.ndarray:
        """The pixels that may hold a source of any of ``views``, in order."""
        if not views:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate([self.pixels(v) for v in views]))

    def select(self, view) -> dict[str, np.ndarray]:
        """The sources of ``view`` (:func:`~romandask.scene.select.select_sources`)."""
        if not self.partitioned:
            return select_sources(view, self._whole(), self.margin)
        parts = [select_sources(view, index, self.margin)
                 for index in (self.pixel_index(int(p)) for p in self.pixels(view))
                 if index is not None and len(index)]
        if not parts:
            return empty_sources()
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    # -- what one process reads or draws, once -----------------------------

    def _whole(self) -> CatalogIndex:
        # a file is read again when it changes (a long-lived process, a notebook)
        stamp = None
        if self.kind == "file":
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        return _whole_index(self, stamp)

    def pixel_index(self, pixel: int) -> CatalogIndex | None:
        """The indexed rows of one pixel (None: a partitioned catalog without it).

        A pixel file is read again when it changes (a long-lived process, a
        notebook)."""
        key = (self, pixel, self._pixel_stamp(pixel))
        with _LOCK:
            if key in _PIXELS:
                _PIXELS.move_to_end(key)
                _STATS["hits"] += 1
                return _PIXELS[key][0]
            _STATS["misses"] += 1
        index = self._read_pixel(pixel)
        nbytes = 0 if index is None else _index_bytes(index)
        with _LOCK:
            global _PIXEL_BYTES
            if key not in _PIXELS:
                _PIXELS[key] = (index, nbytes)
                _PIXEL_BYTES += nbytes
            while _PIXEL_BYTES > PIXEL_CACHE_BYTES and len(_PIXELS) > 1:
                _, (_, old) = _PIXELS.popitem(last=False)
                _PIXEL_BYTES -= old
        return index

    def _pixel_stamp(self, pixel: int):
        if self.kind != "partitioned":
            return None
        try:
            stat = os.stat(_partitioned(self.path).pixel_path(pixel))
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _read_pixel(self, pixel: int) -> CatalogIndex | None:
        if self.kind == "healpix":
            from .healpix import pixel_sources

            return CatalogIndex(pixel_sources(self.seed, pixel, self.nside, self.filters,
                                              **dict(self.model)))
        catalog = _partitioned(self.path)
        if pixel not in catalog.counts:
            return None
        return CatalogIndex(catalog.read_pixel(pixel, self.filters))

    def positions(self, views) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) of the sources near ``views`` (all of a catalog file's), for
        maps: the pixels the views touch, read or drawn here."""
        if not self.partitioned:
            catalog = self._whole().catalog
            return np.asarray(catalog["ra"], float), np.asarray(catalog["dec"], float)
        found = [index for index in (self.pixel_index(int(p))
                                     for p in self.footprint_pixels(views))
                 if index is not None]
        ra = [np.asarray(index.catalog["ra"], float) for index in found]
        dec = [np.asarray(index.catalog["dec"], float) for index in found]
        return (np.concatenate(ra), np.concatenate(dec)) if found else (np.zeros(0),
                                                                        np.zeros(0))

    def check_values(self, views, compute) -> int:
        """Read and validate, as tasks, every pixel file of a partitioned catalog that
        ``views`` need, so that a bad value is refused before a run writes
        anything (InputError, naming the file).  ``compute`` runs a list of
        ``dask.delayed`` tasks (on the run's workers, whose caches then hold
        the pixels).  Returns the number of files read (0 for the other skies:
        a catalog file is validated whole when the sky is made, and the
        synthetic sky is valid by construction)."""
        if self.kind != "partitioned" or not views:
            return 0
        import dask

        counts = _partitioned(self.path).counts
        pixels = [int(p) for p in self.footprint_pixels(views) if int(p) in counts]
        compute([dask.delayed(_pixel_rows, pure=True)(self, p) for p in pixels])
        return len(pixels)

    def rows(self, pixels) -> int:
        """Sources in ``pixels`` (a partitioned catalog: from its index, no reading)."""
        if self.kind == "partitioned":
            counts = _partitioned(self.path).counts
            return sum(counts.get(int(p), 0) for p in pixels)
        return sum(len(self.pixel_index(int(p))) for p in pixels)


_LOCK = threading.Lock()
_PIXELS: OrderedDict = OrderedDict()
_PIXEL_BYTES = 0
_STATS = {"hits": 0, "misses": 0}


def cache_info() -> dict[str, int]:
    """This process's per-pixel catalog cache: hits, misses, entries and bytes."""
    with _LOCK:
        return {**_STATS, "entries": len(_PIXELS), "bytes": _PIXEL_BYTES}


def clear_cache() -> None:
    """Empty this process's per-pixel catalog cache and its counts."""
    global _PIXEL_BYTES
    with _LOCK:
        _PIXELS.clear()
        _PIXEL_BYTES = 0
        _STATS.update(hits=0, misses=0)


def _index_bytes(index: CatalogIndex) -> int:
    table = index.catalog
    return int(sum(np.asarray(table[c]).nbytes for c in table.colnames)
               + index.xyz.nbytes + index._order.nbytes + index._pixels.nbytes)


def _pixel_rows(sky: Sky, pixel: int) -> int:
    """Read (and validate) one pixel of ``sky`` into this process's cache; its rows."""
    index = sky.pixel_index(pixel)
    return 0 if index is None else len(index)


@functools.lru_cache(maxsize=2)
def _whole_index(sky: Sky, stamp) -> CatalogIndex:
    """A whole catalog file, or the synthetic cap, indexed (once per process)."""
    if sky.kind == "file":
        from .catalog import read_catalog

        return CatalogIndex(read_catalog(Path(sky.path), sky.filters))
    from .. import rng
    from .catalog import synthesize_catalog

    ra, dec, radius = sky.cap
    return CatalogIndex(synthesize_catalog(ra, dec, radius, rng.generator(sky.seed, "catalog"),
                                           **dict(sky.model)))


@functools.lru_cache(maxsize=4)
def _partitioned(path: str):
    from .healpix import PartitionedCatalog

    return PartitionedCatalog(path)


"""The run's zarr (v3) store: labelled cubes readable with ``xarray.open_zarr``.

Layout of ``<output.directory>/romandask.zarr``::

    /                 counts (exposure, sca, y, x) float32, electrons
                      ramps (exposure, sca, resultant, frame_y, frame_x) uint16,
                      raw L1 resultants in DN over the window's frame (the
                      window plus its 4-pixel reference border); groupdq (same
                      dims, uint8, truth group DQ: SATURATED, AD_FLOOR); amp33
                      (exposure, sca, resultant, frame_y, amp33_x) uint16.  The
                      resultant axis is padded to the run's longest MA table:
                      ``nresultants``, ``read_pattern`` (JSON) and
                      ``frame_time`` along ``exposure`` say what is real
                      l2_data, l2_err, l2_var_poisson, l2_var_rnoise, l2_dq
                      (exposure, sca, y, x): the L2 cubes
                      fits_wcs (exposure, sca) string: each window's FITS
                      TAN-SIP WCS header (80-character cards, header pixel 1 =
                      window pixel 0), the L1 and L2 files'
                      ``meta.romandask.fits_wcs``
                      coordinates: exposure (ids), sca (1-18), y, x (0-based
                      window pixels), corner (0-3), and the exposure table
                      along ``exposure`` (ra, dec, pa, filter, ma_table,
                      start_time, exposure_time) plus the centre and the
                      four outer corners of each (exposure, SCA) window
                      (ra_center, dec_center, ra_corners, dec_corners)
    /truth            one row per (exposure, SCA, source) along ``source``,
                      whose coordinate is the 0-based row: exposure, sca, id,
                      ra, dec, x, y (0-based window pixels), flux (electrons
                      over the exposure), type ('PSF' or 'SER')
    /mosaic           (product mosaic) the L3 tiles: data, err, var_poisson,
                      var_rnoise (MJy/sr and its square), weight, exposure_time
                      (s), each (tile, y, x) float32 with one entry along tile
                      per (tile, filter) and chunks of one tile; coordinates
                      tile_name, filter, ring, cell, tx, ty along tile
                      (:func:`romandask.mosaic.create_store_group`)

Attributes
    Every coordinate of every group has ``long_name`` and ``units``: a
    UDUNITS unit (``deg``, ``s``, ``pixel``), or ``"1"`` for whatever has no
    unit (counts, indices, ids, labels and other strings).  ``start_time`` is
    stored CF-encoded (``microseconds since 1970-01-01T00:00:00``, proleptic
    Gregorian calendar, UTC), so that xarray decodes it to ``datetime64`` and
    keeps its units in the variable's ``encoding``.

Chunks
    The cubes have one chunk per (exposure, SCA) and tile; the small arrays
    along ``exposure`` and ``sca`` (the exposure table, the windows' sky
    polygons) are chunked the same way, one chunk per exposure or per
    (exposure, SCA), so that ``Dataset.chunks`` is defined, and sharded: each
    of their files holds about :data:`SHARD_CHUNKS` chunks
    (:mod:`romandask.shards` writes and reads them whole).  The mosaic
    group's coordinates along ``tile`` likewise; the truth group has chunks
    of :data:`TRUTH_ROWS` rows.  Dimension coordinates are xarray indexes,
    read whole when the store is opened.  :func:`open_store` opens the store
    with the small arrays read whole too (NumPy), and finds the windows that
    see a sky position (:meth:`RunStore.images_at`).

The store is written under a temporary name and renamed when complete, so a
store with the final name is always whole.  Its skeleton (metadata,
coordinates) is written first; then one task per chunk writes that chunk
(:func:`block_writes`), so that the chunks of one (exposure, SCA) can be
written, and rewritten after an interruption, on their own.  The truth
group comes last: each (exposure, SCA) keeps its rows in a piece
(:data:`TRUTH_DTYPE`), and once all are done one task per chunk of
:data:`TRUTH_ROWS` rows gathers them (:func:`write_truth_chunk`).  Strings are
stored as zarr v3 variable-length strings.  Metadata are consolidated at the
end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize

from . import shards
from .errors import InputError

STORE_NAME = "romandask.zarr"
#: About how many chunks one file (shard) of a small array along exposure holds.
SHARD_CHUNKS = 1024
#: Rows per chunk of the truth table.
TRUTH_ROWS = 1 << 20
#: How ``start_time`` is stored (CF): integer microseconds since the Unix epoch, UTC.
TIME_ENCODING = {"units": "microseconds since 1970-01-01T00:00:00",
                 "calendar": "proleptic_gregorian", "dtype": "int64"}
#: The WFI pixel corners ``ra_corners`` and ``dec_corners`` run through.
CORNERS = "(x, y) = (min, min), (max, min), (max, max), (min, max)"

_STRING = np.dtypes.StringDType()


def _coord(dims, values, long_name: str, units: str, **attrs) -> xr.Variable:
    return xr.Variable(dims, values, {"long_name": long_name, "units": units, **attrs})


def _strings(values) -> np.ndarray:
    return np.array(list(values), dtype=_STRING)


def pixel_coords(ny: int, nx: int, what: str = "window") -> dict[str, xr.Variable]:
    """0-based pixel coordinates ``y``, ``x`` of a ``what`` of ``ny`` x ``nx`` pixels."""
    return {"y": _coord("y", np.arange(ny, dtype=np.int32), f"0-based pixel row of the {what}",
                        "pixel"),
            "x": _coord("x", np.arange(nx, dtype=np.int32),
                        f"0-based pixel column of the {what}", "pixel")}


def exposure_coords(views, exposures, scas) -> dict[str, xr.Variable]:
    """Coordinates of the exposure table and of each (exposure, SCA) window."""
    shape = (len(exposures), len(scas))
    centres = np.array([v.center() for v in views]).reshape(*shape, 2)
    corners = np.array([v.corners() for v in views]).reshape(*shape, 2, 4)
    start = np.array([np.datetime64(e.start_time, "us") for e in exposures],
                     dtype="datetime64[us]").astype("datetime64[ns]")
    # CF-encoded: its units are the encoding's (TIME_ENCODING)
    start_time = xr.Variable("exposure", start, {"long_name": "exposure start time (UTC)",
                                                 "standard_name": "time", "timezone": "UTC"},
                             dict(TIME_ENCODING))
    return {
        "exposure": _coord("exposure", np.array([e.id for e in exposures], np.int64),
                           "exposure id", "1"),
        "sca": _coord("sca", np.array(scas, np.int64), "WFI sensor chip assembly (SCA) number",
                      "1"),
        "corner": _coord("corner", np.arange(4, dtype=np.int32),
                         f"outer pixel corner of the window, {CORNERS}", "1"),
        "ra": _coord("exposure", np.array([e.ra for e in exposures]),
                     "right ascension of the WFI centre (ICRS)", "deg"),
        "dec": _coord("exposure", np.array([e.dec for e in exposures]),
                      "declination of the WFI centre (ICRS)", "deg"),
        "pa": _coord("exposure", np.array([e.pa for e in exposures]),
                     "position angle of the observatory +Y axis, east of north", "deg"),
        "filter": _coord("exposure", _strings(e.filter for e in exposures),
                         "optical element (filter)", "1"),
        "ma_table": _coord("exposure", _strings(e.ma_table.label for e in exposures),
                           "multi-accumulation (MA) table", "1"),
        "start_time": start_time,
        "exposure_time": _coord("exposure", np.array([e.exposure_time for e in exposures]),
                                "exposure time (last read of the MA table)", "s"),
        "ra_center": _coord(("exposure", "sca"), centres[..., 0],
                            "right ascension of the window centre (ICRS)", "deg"),
        "dec_center": _coord(("exposure", "sca"), centres[..., 1],
                             "declination of the window centre (ICRS)", "deg"),
        "ra_corners": _coord(("exposure", "sca", "corner"), corners[:, :, 0, :] % 360.0,
                             "right ascension of the window's outer pixel corners (ICRS)",
                             "deg"),
        "dec_corners": _coord(("exposure", "sca", "corner"), corners[:, :, 1, :],
                              "declination of the window's outer pixel corners (ICRS)", "deg"),
    }


def counts_dataset(counts) -> xr.Dataset:
    ny, nx = counts.shape[-2:]
    return xr.Dataset(
        {"counts": (("exposure", "sca", "y", "x"), counts,
                    {"units": "electron", "long_name": "ideal counts over the exposure"})},
        coords=pixel_coords(ny, nx),
    )


def ramps_dataset(cubes: dict, exposures) -> xr.Dataset:
    """The L1 cubes with the per-exposure resultant bookkeeping.

    The resultant axis is as long as the longest MA table of the run; an
    exposure with fewer resultants has zeros beyond ``nresultants``.
    """
    ramps = cubes["ramps"]
    nmax, ny, nx = ramps.shape[-3:]
    dims = ("exposure", "sca", "resultant", "frame_y", "frame_x")
    patterns = [json.dumps([list(r) for r in e.ma_table.read_pattern]) for e in exposures]
    frame = "the window's frame (the window and its 4-pixel reference border)"
    return xr.Dataset(
        {
            "ramps": (dims, ramps, {"units": "DN", "long_name": "raw resultants (L1)"}),
            "groupdq": (dims, cubes["groupdq"],
                        {"long_name": "truth group DQ (roman_datamodels dqflags.group)"}),
            "amp33": (("exposure", "sca", "resultant", "frame_y", "amp33_x"), cubes["amp33"],
                      {"units": "DN", "long_name": "reference output (amp33)"}),
        },
        coords={
            "resultant": _coord("resultant", np.arange(nmax, dtype=np.int32),
                                "0-based resultant (beyond nresultants: zero padding)", "1"),
            "frame_y": _coord("frame_y", np.arange(ny, dtype=np.int32),
                              f"0-based pixel row of {frame}", "pixel"),
            "frame_x": _coord("frame_x", np.arange(nx, dtype=np.int32),
                              f"0-based pixel column of {frame}", "pixel"),
            "amp33_x": _coord("amp33_x", np.arange(cubes["amp33"].shape[-1], dtype=np.int32),
                              "0-based column of the reference output (amp33)", "pixel"),
            "nresultants": _coord("exposure", np.array([e.ma_table.nresultants
                                                        for e in exposures], np.int32),
                                  "number of resultants of the MA table", "1"),
            "frame_time": _coord("exposure", np.array([e.ma_table.frame_time
                                                       for e in exposures]),
                                 "frame (read) time", "s"),
            "read_pattern": _coord("exposure", _strings(patterns),
                                   "read pattern: JSON list of resultants, each the list of "
                                   "its 1-based reads", "1"),
        },
    )


L2_ATTRS = {
    "data": {"units": "DN/s", "long_name": "count rate, flat-fielded, per nominal pixel area, "
                                           "at the detector's reference gain (L2)"},
    "err": {"units": "DN/s", "long_name": "total error of the rate"},
    "var_poisson": {"units": "DN2/s2", "long_name": "Poisson variance of the rate"},
    "var_rnoise": {"units": "DN2/s2", "long_name": "read-noise variance of the rate"},
    "dq": {"long_name": "pixel DQ (roman_datamodels dqflags.pixel)"},
}


def l2_dataset(cubes: dict) -> xr.Dataset:
    """The L2 cubes (exposure, sca, y, x), stored as ``l2_data``, ``l2_err``, ..."""
    return xr.Dataset({f"l2_{name}": (("exposure", "sca", "y", "x"), cube, L2_ATTRS[name])
                       for name, cube in cubes.items()})


def wcs_dataset(headers: da.Array) -> xr.Dataset:
    """Each window's FITS WCS header text, (exposure, sca), one chunk per window."""
    return xr.Dataset({"fits_wcs": (("exposure", "sca"), headers, {
        "long_name": "FITS TAN-SIP WCS header of the window: 80-character cards, header "
                     "pixel 1 = 0-based window pixel 0 (romandask.wcs.fits_header_from_galsim)"
    })})


TRUTH_ATTRS = {
    "exposure": ("exposure id", "1"),
    "sca": ("WFI sensor chip assembly (SCA) number", "1"),
    "id": ("catalog source id", "1"),
    "ra": ("right ascension (ICRS)", "deg"),
    "dec": ("declination (ICRS)", "deg"),
    "x": ("0-based window pixel column of the source's position", "pixel"),
    "y": ("0-based window pixel row of the source's position", "pixel"),
    "flux": ("flux over the exposure", "electron"),
    "type": ("source type: PSF (point source) or SER (Sersic profile)", None),
}


def truth_dataset(truth: dict) -> xr.Dataset:
    """The truth table along ``source``, whose coordinate is the 0-based row (columns
    NumPy, or Dask for a skeleton)."""
    data = {}
    nrows = len(next(iter(truth.values())))
    chunks = (max(1, min(nrows, TRUTH_ROWS)),)
    for name, values in truth.items():
        if isinstance(values, np.ndarray) and values.dtype.kind in "UO":
            values = values.astype(_STRING)
        long_name, units = TRUTH_ATTRS[name]
        attrs = {"long_name": long_name, **({"units": units} if units else {})}
        data[name] = xr.Variable("source", values, attrs, {"chunks": chunks})
    source = _coord("source", np.arange(nrows, dtype=np.int64),
                    "0-based row of the truth table", "1")
    source.encoding = {"chunks": chunks}
    return xr.Dataset(data, coords={"source": source},
                      attrs={"pixel_convention":
                             "x, y: 0-based pixel centres of the simulated window"})


#: The truth table's columns as stored in an (exposure, SCA)'s piece (``type``:
#: at most 3 characters, ``PSF`` or ``SER``).
TRUTH_DTYPE = np.dtype([("exposure", np.int64), ("sca", np.int64), ("id", np.int64),
                        ("ra", np.float64), ("dec", np.float64), ("x", np.float64),
                        ("y", np.float64), ("flux", np.float64), ("type", "U3")])


def truth_records(truth: dict[str, np.ndarray]) -> np.ndarray:
    """Truth columns as one structured array of :data:`TRUTH_DTYPE`."""
    n = len(truth["id"])
    out = np.empty(n, TRUTH_DTYPE)
    for name in TRUTH_DTYPE.names:
        out[name] = truth[name]
    return out


def piece_rows(path: Path) -> int:
    """Rows of a truth piece (read from its header only)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, _, _ = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                       else np.lib.format.read_array_header_2_0(f))
    return int(shape[0])


def write_truth_skeleton(path: Path, nrows: int) -> int:
    """Write the truth group's metadata and ``source`` coordinate for ``nrows``
    rows (their values left to :func:`write_truth_chunk`); returns the rows per
    chunk.  Zero rows: the whole (empty) group."""
    chunk = max(1, min(nrows, TRUTH_ROWS))
    if nrows == 0:
        empty = {name: np.zeros(0, TRUTH_DTYPE[name]) for name in TRUTH_DTYPE.names}
        write_group(truth_dataset(empty), path, "truth")
        return chunk
    dtypes = {name: _STRING if TRUTH_DTYPE[name].kind == "U" else TRUTH_DTYPE[name]
              for name in TRUTH_DTYPE.names}
    # Dask stand-ins of the columns: what their metadata need; never computed
    stand_ins = {name: da.zeros(nrows, chunks=chunk, dtype=dtype)
                 for name, dtype in dtypes.items()}
    write_group(truth_dataset(stand_ins), path, "truth", compute=False)
    return chunk


def write_truth_chunk(group: str, start: int, parts: list[tuple[str, int, int]]) -> None:
    """Write the truth rows from ``start`` on: the rows ``[a, b)`` of each piece in
    ``parts``, in order (a whole chunk of the group)."""
    rows = np.concatenate([np.load(p, mmap_mode="r")[a:b] for p, a, b in parts])
    stop = start + len(rows)
    for name in TRUTH_DTYPE.names:
        values = rows[name]
        if values.dtype.kind == "U":
            values = values.astype(_STRING)
        zarr.open_array(f"{group}/{name}", mode="r+")[start:stop] = values


def data_chunks(ds: xr.Dataset) -> dict[str, int]:
    """The chunk size of ``ds``'s Dask variables along each dimension they have."""
    out: dict[str, int] = {}
    for var in ds.variables.values():
        if isinstance(var.data, da.Array):
            for dim, sizes in zip(var.dims, var.data.chunks):
                out.setdefault(dim, sizes[0])
    return out


def small_layout(dims, shape, chunks: dict[str, int]
                 ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(chunk, shard) shapes of an in-memory variable chunked as ``chunks`` says
    along its dimensions (whole along the others); None if that is one chunk.

    A shard holds about :data:`SHARD_CHUNKS` chunks, filled from the last
    dimension: (1, 1, 4) chunks of an (exposure, sca, corner) array of 18 SCAs
    make (56, 18, 4) shards.
    """
    inner = tuple(min(chunks.get(d, n), n) if n else 1 for d, n in zip(dims, shape))
    if inner == tuple(shape) or 0 in shape:
        return None
    shard, budget = list(inner), SHARD_CHUNKS
    for k in reversed(range(len(shape))):
        take = max(1, min(math.ceil(shape[k] / inner[k]), budget))
        shard[k] = inner[k] * take
        budget = max(1, budget // take)
    return inner, tuple(shard)


def store_chunks(name, var: xr.Variable) -> tuple[int, ...]:
    """The zarr chunks of a Dask variable: its own, which must be regular."""
    sizes = []
    for dim, chunks in zip(var.dims, var.data.chunks):
        if any(c != chunks[0] for c in chunks[:-1]) or chunks[-1] > chunks[0]:
            raise ValueError(f"{name}: irregular chunks along {dim}: {chunks}")
        sizes.append(chunks[0])
    return tuple(sizes)


def _metadata_only(var: xr.Variable) -> xr.Variable:
    """``var`` with a one-chunk Dask array that is never computed: what xarray needs
    to write its metadata, without building a graph of all its chunks."""
    return var.copy(data=da.empty(var.shape, chunks=-1, dtype=var.dtype))


def write_group(ds: xr.Dataset, path: Path, group: str | None = None, compute: bool = True):
    """Write one group of a new store (zarr v3, metadata consolidated later).

    ``compute``: write everything (a group of in-memory variables, as the
    truth).  Otherwise write the group's skeleton: all metadata, and the
    in-memory variables; the chunks of its Dask variables, stored as their
    Dask chunks, are left to their own tasks (:func:`block_writes`, the
    mosaic's tile writers).  In-memory variables along dimensions the Dask
    variables are chunked along (the exposure table, the windows' polygons,
    the mosaic's tile table) are stored chunked as the Dask variables are,
    sharded (:func:`small_layout`), and written whole by
    :func:`romandask.shards.write_array`.
    """
    kwargs = dict(group=group, mode="w-", zarr_format=3, consolidated=False)
    if compute:
        return ds.to_zarr(path, compute=True, **kwargs)
    chunks = data_chunks(ds)
    encoding, small, stand_ins = {}, {}, {}
    for name, var in ds.variables.items():
        if isinstance(var.data, da.Array):
            encoding[name] = {**var.encoding, "chunks": store_chunks(name, var)}
            stand_ins[name] = _metadata_only(var)
            continue
        plan = None if name in ds.xindexes else small_layout(var.dims, var.shape, chunks)
        if plan is not None:
            if var.dtype == object:  # strings: zarr v3 variable-length strings
                var = var.copy(data=var.data.astype(_STRING))
            encoding[name] = {**var.encoding, "chunks": plan[0], "shards": plan[1],
                              "compressors": None}
            small[name] = var
            stand_ins[name] = _metadata_only(var)
    ds = ds.assign_coords({n: v for n, v in stand_ins.items() if n in ds.coords})
    ds = ds.assign({n: v for n, v in stand_ins.items() if n not in ds.coords})
    ds.to_zarr(path, compute=False, encoding=encoding, **kwargs)
    root = Path(path) / group if group else Path(path)
    for name, var in small.items():
        shards.write_array(root / name, xr.conventions.encode_cf_variable(var, name=name).values)


def create(ds: xr.Dataset, path: Path) -> None:
    """Write the skeleton of a new store: all metadata, and the in-memory variables
    (coordinates); the chunks of the Dask variables are left to :func:`block_writes`."""
    write_group(ds, path, compute=False)


def block_writes(ds: xr.Dataset, path: Path, annotations: dict | None = None
                 ) -> dict[str, da.Array]:
    """Tasks writing each chunk of ``ds``'s Dask variables into the store at ``path``:
    per variable, an array of one flag per chunk (``map_blocks``), each computed
    by writing its chunk.

    The variables lead with (exposure, sca), one chunk each, and their Dask
    chunks are the store's chunks, so no two tasks write the same chunk and a
    chunk can be written again with the same bytes.  ``annotations`` go on the
    writes.
    """
    arrays = {var: value.data for var, value in ds.data_vars.items()
              if isinstance(value.data, da.Array)}
    for var, arr in arrays.items():
        if ds[var].dims[:2] != ("exposure", "sca") or arr.chunks[0] != (1,) * arr.shape[0] \
                or arr.chunks[1] != (1,) * arr.shape[1]:
            raise ValueError(f"{var}: not chunked one (exposure, sca) per chunk")
    out = {}
    with dask.annotate(**(annotations or {})):
        for var, arr in arrays.items():
            out[var] = da.map_blocks(
                _write_chunk, arr, str(path / var),
                name="store-" + tokenize(str(path), arr.name),
                chunks=tuple((1,) * n for n in arr.numblocks),
                meta=np.empty((0,) * arr.ndim, dtype=bool))
    return out


def _write_chunk(block: np.ndarray, array_path: str, block_info=None) -> np.ndarray:
    """Write one chunk where ``block_info`` places it; a flag, shaped one per chunk."""
    region = tuple(slice(lo, hi) for lo, hi in block_info[0]["array-location"])
    write_block(array_path, region, block)
    return np.ones((1,) * block.ndim, dtype=bool)


def write_block(array_path: str, region: tuple[slice, ...], block: np.ndarray) -> None:
    """Write one chunk into an existing zarr array (a whole chunk: no read-modify-write)."""
    zarr.open_array(array_path, mode="r+")[region] = block


def finalise(partial: Path, final: Path) -> None:
    """Consolidate the metadata and move the complete store to its final name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not")
        zarr.consolidate_metadata(str(partial))
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------

#: The rows of :meth:`RunStore.images_at`.
IMAGE_ROW = np.dtype([("exposure", np.int64), ("sca", np.int64), ("x", np.float64),
                      ("y", np.float64)])
#: Slack, in pixels, of the sky-polygon prefilter of :meth:`RunStore.images_at`.
#: In the gnomonic projection at a point, a window's edges are straight lines
#: to 0.004 pixel (full SCAs of every SCA's GalSim WCS).
PREFILTER_MARGIN = 2.0


def _unit(ra, dec) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def in_polygons(ra: float, dec: float, ra_corners: np.ndarray, dec_corners: np.ndarray,
                margin: float = 0.0) -> np.ndarray:
    """Whether (ra, dec) lies in each convex sky polygon (degrees; corners on the last axis).

    The corners are projected gnomonically about the point, which makes great
    circles straight lines; the point is inside when it is on the inner side
    of every edge, or less than ``margin`` times the polygon's mean edge
    length outside.  Polygons reaching 90 degrees from the point are outside.
    """
    p = _unit(ra, dec)
    east = np.cross([0.0, 0.0, 1.0], p)
    if np.linalg.norm(east) < 1e-12:  # at a pole any basis of the tangent plane does
        east = np.array([1.0, 0.0, 0.0])
    east /= np.linalg.norm(east)
    north = np.cross(p, east)
    c = _unit(ra_corners, dec_corners)
    depth = c @ p
    front = np.all(depth > 0, axis=-1)
    depth = np.where(depth > 0, depth, 1.0)
    x, y = (c @ east) / depth, (c @ north) / depth
    xn, yn = np.roll(x, -1, axis=-1), np.roll(y, -1, axis=-1)
    cross = x * yn - xn * y  # twice the signed area of (point, corner k, corner k + 1)
    edge = np.hypot(xn - x, yn - y)
    inside = cross * np.sign(cross.sum(axis=-1, keepdims=True)) / np.maximum(edge, 1e-300)
    slack = margin * edge.mean(axis=-1, keepdims=True)
    return front & np.all(inside >= -slack, axis=-1)


def read_whole(ds: xr.Dataset, directory: Path) -> xr.Dataset:
    """``ds`` (opened from ``directory``) with its non-index coordinates read whole,
    as NumPy (:func:`romandask.shards.read_array`) and CF-decoded as xarray does."""
    whole = {}
    for name, coord in ds.coords.items():
        if name in ds.xindexes or not isinstance(coord.data, da.Array):
            continue
        var = coord.variable
        raw = shards.read_array(directory / str(name))
        cf = {k: var.encoding[k] for k in ("units", "calendar") if k in var.encoding}
        values = xr.conventions.decode_cf_variable(name, xr.Variable(var.dims, raw, cf)).values
        whole[name] = xr.Variable(var.dims, np.asarray(values).astype(var.dtype), var.attrs,
                                  var.encoding)
    return ds.assign_coords(whole)


@dataclass
class RunStore:
    """A run's store, opened by :func:`open_store`.

    ``dataset`` is the root group: the cubes as Dask arrays, the exposure
    table and the windows' sky polygons as NumPy coordinates; ``truth`` the
    truth group and ``mosaic`` the mosaic group (None when the run made no
    such product), opened with ``xarray.open_zarr`` (Dask).
    """

    path: Path
    dataset: xr.Dataset
    truth: xr.Dataset | None
    mosaic: xr.Dataset | None
    _wcs: dict = field(default_factory=dict, repr=False)

    def window_wcs(self, exposure_index: int, sca_index: int):
        """The GalSim WCS (``GSFitsWCS``, FITS pixels: 1 = window pixel 0) of one
        window, from its stored header (``fits_wcs``)."""
        import galsim

        from .wcs import read_fits_header

        key = (int(exposure_index), int(sca_index))
        if key not in self._wcs:
            if "fits_wcs" not in self.dataset:
                raise InputError(f"store {self.path}", "has no fits_wcs (the windows' WCS): "
                                 "it was written by an older romandask",
                                 "run its config again to rewrite it")
            text = str(zarr.open_array(str(self.path / "fits_wcs"), mode="r")[key])
            self._wcs[key] = galsim.GSFitsWCS(header=galsim.FitsHeader(read_fits_header(text)))
        return self._wcs[key]

    def images_at(self, ra: float, dec: float) -> np.ndarray:
        """Every window whose pixels contain the sky position ``(ra, dec)`` (degrees, ICRS).

        Returns a NumPy structured array of :data:`IMAGE_ROW`, one row per
        window in store order (exposures, then SCAs): its exposure id and SCA
        number, and ``x``, ``y``, the position in 0-based window pixels, as the
        truth table's (a window holds ``-0.5 <= x < nx - 0.5``, likewise y).
        The windows' sky polygons (``ra_corners``, ``dec_corners``) pick the
        candidates, vectorised over all windows (:func:`in_polygons`, with
        :data:`PREFILTER_MARGIN` pixels of slack); each candidate's stored
        FITS WCS then places the position.
        """
        try:
            ra, dec = float(ra), float(dec)
        except (TypeError, ValueError):
            raise InputError("images_at(ra, dec)", f"needs two numbers, got {ra!r}, {dec!r}",
                             "give degrees, e.g. images_at(9.70, -44.0)") from None
        if not (np.isfinite(ra) and -90.0 <= dec <= 90.0):
            raise InputError("images_at(ra, dec)", f"({ra}, {dec}) is not a sky position",
                             "give a finite ra and a dec within [-90, 90] degrees")
        ds = self.dataset
        ny, nx = ds.sizes["y"], ds.sizes["x"]
        hits = in_polygons(ra, dec, ds["ra_corners"].values, ds["dec_corners"].values,
                           PREFILTER_MARGIN / max(nx, ny))
        rows = []
        for ie, isca in np.argwhere(hits):
            x, y = self.window_wcs(ie, isca).radecToxy(ra, dec, units="deg")
            x, y = float(x) - 1.0, float(y) - 1.0  # FITS pixel 1 is window pixel 0
            if -0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5:
                rows.append((int(ds["exposure"].values[ie]), int(ds["sca"].values[isca]), x, y))
        return np.array(rows, dtype=IMAGE_ROW)


def open_store(path: str | os.PathLike) -> RunStore:
    """Open a run's store (``<output.directory>/romandask.zarr``) for reading.

    The root group's small coordinates are read whole (NumPy), so that they
    cost a few file reads whatever the survey's size (``xarray.open_zarr``
    reads them chunk by chunk, one chunk per exposure or window); the cubes
    stay Dask arrays.  See :class:`RunStore`.
    """
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise InputError(f"store {path}", "is not a zarr store (it has no zarr.json)",
                         f"give the {STORE_NAME} directory of a finished run")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*consolidated metadata",
                                category=RuntimeWarning)
        dataset = read_whole(xr.open_zarr(path), path)
        groups = {}
        for group in ("truth", "mosaic"):
            if (path / group / "zarr.json").is_file():
                groups[group] = read_whole(xr.open_zarr(path, group=group), path / group)
    return RunStore(path, dataset, groups.get("truth"), groups.get("mosaic"))

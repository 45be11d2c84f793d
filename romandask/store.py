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
                      coordinates: exposure (ids), sca (1-18), y, x (0-based
                      window pixels), and the exposure table along
                      ``exposure`` (ra, dec, pa, filter, ma_table,
                      start_time, exposure_time) plus the centre and the
                      four outer corners of each (exposure, sca) window
                      (ra_center, dec_center, ra_corners, dec_corners)
    /truth            one row per (exposure, SCA, source): exposure, sca, id,
                      ra, dec, x, y (0-based window pixels), flux (electrons
                      over the exposure), type ('PSF' or 'SER')
    /mosaic           (product mosaic) the L3 tiles: data, err, var_poisson,
                      var_rnoise (MJy/sr and its square), weight, exposure_time
                      (s), each (tile, y, x) float32 with one entry along tile
                      per (tile, filter) and chunks of one tile; coordinates
                      tile_name, filter, ring, cell, tx, ty along tile
                      (:func:`romandask.mosaic.create_store_group`)

The store is written under a temporary name and renamed when complete, so a
store with the final name is always whole.  Its skeleton (metadata,
coordinates, truth) is written first; then one task per chunk writes that
chunk (:func:`block_writes`), so that the chunks of one (exposure, SCA) can be
written, and rewritten after an interruption, on their own.  Strings are
stored as zarr v3 variable-length strings.  Metadata are consolidated at the
end.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

STORE_NAME = "romandask.zarr"


def exposure_coords(views, exposures, scas) -> dict:
    """Coordinates of the exposure table and of each (exposure, SCA) window."""
    shape = (len(exposures), len(scas))
    centres = np.array([v.center() for v in views]).reshape(*shape, 2)
    corners = np.array([v.corners() for v in views]).reshape(*shape, 2, 4)
    return {
        "exposure": ("exposure", np.array([e.id for e in exposures], np.int64)),
        "sca": ("sca", np.array(scas, np.int64)),
        "ra": ("exposure", np.array([e.ra for e in exposures])),
        "dec": ("exposure", np.array([e.dec for e in exposures])),
        "pa": ("exposure", np.array([e.pa for e in exposures])),
        "filter": ("exposure", np.array([e.filter for e in exposures], dtype=object)),
        "ma_table": ("exposure", np.array([e.ma_table.label for e in exposures], dtype=object)),
        "start_time": ("exposure", np.array([e.start_time.isoformat() for e in exposures],
                                            dtype=object)),
        "exposure_time": ("exposure", np.array([e.exposure_time for e in exposures])),
        "ra_center": (("exposure", "sca"), centres[..., 0]),
        "dec_center": (("exposure", "sca"), centres[..., 1]),
        "ra_corners": (("exposure", "sca", "corner"), corners[:, :, 0, :] % 360.0),
        "dec_corners": (("exposure", "sca", "corner"), corners[:, :, 1, :]),
    }


def counts_dataset(counts) -> xr.Dataset:
    ny, nx = counts.shape[-2:]
    return xr.Dataset(
        {"counts": (("exposure", "sca", "y", "x"), counts,
                    {"units": "electron", "long_name": "ideal counts over the exposure"})},
        coords={"y": ("y", np.arange(ny, dtype=np.int32)),
                "x": ("x", np.arange(nx, dtype=np.int32))},
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
    return xr.Dataset(
        {
            "ramps": (dims, ramps, {"units": "DN", "long_name": "raw resultants (L1)"}),
            "groupdq": (dims, cubes["groupdq"],
                        {"long_name": "truth group DQ (roman_datamodels dqflags.group)"}),
            "amp33": (("exposure", "sca", "resultant", "frame_y", "amp33_x"), cubes["amp33"],
                      {"units": "DN", "long_name": "reference output (amp33)"}),
        },
        coords={
            "resultant": ("resultant", np.arange(nmax, dtype=np.int32)),
            "frame_y": ("frame_y", np.arange(ny, dtype=np.int32)),
            "frame_x": ("frame_x", np.arange(nx, dtype=np.int32)),
            "amp33_x": ("amp33_x", np.arange(cubes["amp33"].shape[-1], dtype=np.int32)),
            "nresultants": ("exposure", np.array([e.ma_table.nresultants for e in exposures],
                                                 np.int32)),
            "frame_time": ("exposure", np.array([e.ma_table.frame_time for e in exposures])),
            "read_pattern": ("exposure", np.array(patterns, dtype=object)),
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


def truth_dataset(truth: dict[str, np.ndarray]) -> xr.Dataset:
    units = {"ra": "deg", "dec": "deg", "x": "pixel", "y": "pixel", "flux": "electron"}
    data = {}
    for name, values in truth.items():
        if values.dtype.kind == "U":
            values = values.astype(object)
        data[name] = ("source", values, {"units": units[name]} if name in units else {})
    return xr.Dataset(data, attrs={"pixel_convention":
                                   "x, y: 0-based pixel centres of the simulated window"})


def write_group(ds: xr.Dataset, path: Path, group: str | None = None, compute: bool = True):
    """Write one group of a new store (zarr v3, metadata consolidated later)."""
    return ds.to_zarr(path, group=group, mode="w-", zarr_format=3, consolidated=False,
                      compute=compute)


def create(ds: xr.Dataset, path: Path) -> None:
    """Write the skeleton of a new store: all metadata, and the in-memory variables
    (coordinates); the chunks of the Dask variables are left to :func:`block_writes`."""
    write_group(ds, path, compute=False)


def block_writes(ds: xr.Dataset, path: Path, annotations: dict | None = None
                 ) -> tuple[HighLevelGraph, str, dict]:
    """Tasks writing each chunk of ``ds``'s Dask variables into the store at ``path``.

    The variables lead with (exposure, sca), one chunk each, and their Dask
    chunks are the store's chunks, so no two tasks write the same chunk and a
    chunk can be written again with the same bytes.  The variables' graphs
    are optimised together first (as ``dask.array.store`` does, but without
    low-level fusion, which would drop the layers' resource annotations);
    ``annotations`` go on the writes.  Returns the graph, the name of its
    write layer and, per (exposure index, SCA index), the keys of its writes.
    """
    arrays = {var: value.data for var, value in ds.data_vars.items()
              if isinstance(value.data, da.Array)}
    for var, arr in arrays.items():
        if ds[var].dims[:2] != ("exposure", "sca") or arr.chunks[0] != (1,) * arr.shape[0] \
                or arr.chunks[1] != (1,) * arr.shape[1]:
            raise ValueError(f"{var}: not chunked one (exposure, sca) per chunk")
    sources = HighLevelGraph.merge(*(arr.__dask_graph__() for arr in arrays.values()))
    with dask.config.set({"optimization.fuse.active": False}):
        sources = da.Array.__dask_optimize__(
            sources, [key for arr in arrays.values() for key in flatten(arr.__dask_keys__())])
    name = "store-" + tokenize(str(path), *(arr.name for arr in arrays.values()))
    layer, keys = {}, {}
    for var, arr in arrays.items():
        starts = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in arr.chunks]
        for index in np.ndindex(*arr.numblocks):
            region = tuple(slice(int(s[i]), int(s[i + 1])) for s, i in zip(starts, index))
            key = (name, len(layer))
            layer[key] = (write_block, str(path / var), region, (arr.name, *index))
            keys.setdefault(index[:2], []).append(key)
    with dask.annotate(**(annotations or {})):
        writes = MaterializedLayer(layer)
    graph = HighLevelGraph({**sources.layers, name: writes},
                           {**sources.dependencies, name: set(sources.layers)})
    return graph, name, keys


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

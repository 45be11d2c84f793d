"""Whole-array reads and writes of small sharded zarr (v3) arrays, at NumPy speed.

The store keeps its small per-exposure arrays (the exposure table, each
window's sky polygon) chunked like the pixel cubes, one chunk per exposure
or per (exposure, SCA), so that ``xarray.open_zarr`` gives every variable
the same chunks along a dimension; the zarr ``sharding_indexed`` codec packs
about a thousand of those chunks into each file.  zarr-python encodes and
decodes a shard's inner chunks one at a time (about 0.2-0.4 ms each on this
project's machines), which for the 10^6 windows of a survey would take tens
of minutes per array.  :func:`write_array` and :func:`read_array` do the
same, whole array at a time, with NumPy.

They follow the Zarr v3 specification of the ``sharding_indexed`` codec: a
shard is the encoded inner chunks back to back, then the index, an array of
(offset, nbytes) ``uint64`` little-endian pairs in C order over the shard's
grid of inner chunks (``2**64 - 1`` twice for an absent chunk), followed by
its CRC32C (``uint32`` little-endian).  Inner chunks are encoded with the
``bytes`` codec (little-endian) or ``vlen-utf8`` (a ``uint32`` item count,
then per item its ``uint32`` byte length and UTF-8 bytes).  Only arrays whose
codecs are exactly these are handled here (:func:`layout`); any other array
is read and written through zarr itself, so nothing is ever written that
zarr would read differently.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import NamedTuple

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import (BytesCodec, Crc32cCodec, Endian, ShardingCodec,
                         ShardingCodecIndexLocation, VLenUTF8Codec)

#: The index entry of an absent inner chunk.
ABSENT = 2 ** 64 - 1


class Layout(NamedTuple):
    """How a sharded array is cut and encoded."""

    shard: tuple[int, ...]  # shard shape (the array's chunk grid)
    inner: tuple[int, ...]  # inner chunk shape
    strings: bool  # vlen-utf8 inner chunks (else fixed-size little-endian bytes)


def layout(array: zarr.Array) -> Layout | None:
    """The array's :class:`Layout` when this module can write and read it, else None."""
    codecs = array.metadata.codecs
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sharding = codecs[0]
    index = sharding.index_codecs
    if (sharding.index_location != ShardingCodecIndexLocation.end or len(index) != 2
            or not isinstance(index[0], BytesCodec) or index[0].endian != Endian.little
            or not isinstance(index[1], Crc32cCodec) or len(sharding.codecs) != 1):
        return None
    inner = sharding.codecs[0]
    dtype = array.dtype
    if isinstance(inner, VLenUTF8Codec) and dtype.kind in "TUO":
        strings = True
    elif isinstance(inner, BytesCodec) and dtype.kind in "biuf" and (
            inner.endian == Endian.little or dtype.itemsize == 1):
        strings = False
    else:
        return None
    return Layout(tuple(array.metadata.chunk_grid.chunk_shape), tuple(sharding.chunk_shape),
                  strings)


def _shards(shape: tuple[int, ...], lay: Layout):
    """(shard grid coordinates, region of the array, inner chunks present per axis)."""
    grid = [math.ceil(n / s) for n, s in zip(shape, lay.shard)]
    for coords in np.ndindex(*grid):
        region = tuple(slice(c * s, min((c + 1) * s, n))
                       for c, s, n in zip(coords, lay.shard, shape))
        present = tuple(math.ceil((r.stop - r.start) / i) for r, i in zip(region, lay.inner))
        yield coords, region, present


def _cells(block: np.ndarray, present: tuple[int, ...], inner: tuple[int, ...],
           fill) -> np.ndarray:
    """The inner chunks of a shard's block, (number present, items per chunk), C order."""
    full = tuple(p * i for p, i in zip(present, inner))
    if block.shape != full:  # a partial inner chunk at the array's edge: padded
        padded = np.full(full, fill, dtype=block.dtype)
        padded[tuple(slice(0, n) for n in block.shape)] = block
        block = padded
    nd = len(inner)
    split = block.reshape([n for pair in zip(present, inner) for n in pair])
    cells = split.transpose(list(range(0, 2 * nd, 2)) + list(range(1, 2 * nd, 2)))
    return cells.reshape(math.prod(present), math.prod(inner))


def _vlen(items) -> bytes:
    """One vlen-utf8 inner chunk."""
    parts = [struct.pack("<I", len(items))]
    for item in items:
        data = str(item).encode("utf-8")
        parts += [struct.pack("<I", len(data)), data]
    return b"".join(parts)


def _unvlen(data: bytes, count: int) -> list[str]:
    n, = struct.unpack_from("<I", data, 0)
    if n != count:
        raise ValueError(f"inner chunk holds {n} strings, expected {count}")
    items, at = [], 4
    for _ in range(n):
        size, = struct.unpack_from("<I", data, at)
        items.append(data[at + 4:at + 4 + size].decode("utf-8"))
        at += 4 + size
    return items


def _index_bytes(index: np.ndarray) -> bytes:
    raw = index.astype("<u8").tobytes()
    return raw + struct.pack("<I", google_crc32c.value(raw))


def write_array(path: str | Path, values: np.ndarray) -> None:
    """Write all of ``values`` into the existing zarr array at ``path`` (a directory).

    Each shard is written whole, every inner chunk present; an array this
    module does not handle (:func:`layout`) is written through zarr.
    """
    array = zarr.open_array(str(path), mode="r+")
    lay = layout(array)
    values = np.asarray(values)
    if values.shape != array.shape:
        raise ValueError(f"{path}: values of shape {values.shape} for an array of "
                         f"shape {array.shape}")
    if lay is None:
        array[...] = values
        return
    per_shard = tuple(s // i for s, i in zip(lay.shard, lay.inner))
    dtype = None if lay.strings else array.dtype.newbyteorder("<")
    for coords, region, present in _shards(array.shape, lay):
        block = values[region]
        if lay.strings:
            cells = _cells(block.astype(object), present, lay.inner, array.fill_value or "")
            chunks = [_vlen(row) for row in cells]
            sizes = np.array([len(c) for c in chunks], np.uint64)
            payload = b"".join(chunks)
        else:
            cells = _cells(block.astype(dtype), present, lay.inner, array.fill_value)
            payload = np.ascontiguousarray(cells).tobytes()
            sizes = np.full(len(cells), cells.shape[1] * dtype.itemsize, np.uint64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.uint64)
        index = np.full(per_shard + (2,), ABSENT, np.uint64)
        index[tuple(slice(0, p) for p in present)] = np.stack(
            [offsets, sizes], axis=-1).reshape(present + (2,))
        key = Path(path) / array.metadata.encode_chunk_key(coords)
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(payload + _index_bytes(index))


def read_array(path: str | Path) -> np.ndarray:
    """All of the zarr array at ``path`` (a directory), as stored (not CF-decoded).

    An array this module does not handle, or a shard it cannot parse, is read
    through zarr.
    """
    array = zarr.open_array(str(path), mode="r")
    lay = layout(array)
    if lay is None:
        return array[...]
    per_shard = tuple(s // i for s, i in zip(lay.shard, lay.inner))
    nitems = math.prod(lay.inner)
    if lay.strings:
        out = np.empty(array.shape, dtype=object)
        out[...] = array.fill_value or ""
    else:
        out = np.full(array.shape, array.fill_value, dtype=array.dtype)
    index_size = 16 * math.prod(per_shard) + 4
    for coords, region, present in _shards(array.shape, lay):
        key = Path(path) / array.metadata.encode_chunk_key(coords)
        if not key.exists():
            continue  # an absent shard: the fill value
        raw = key.read_bytes()
        tail = raw[len(raw) - index_size:]
        if len(raw) < index_size or _index_bytes(
                np.frombuffer(tail[:-4], "<u8")) != tail:
            return array[...]  # not a shard this module can read: let zarr say why
        index = np.frombuffer(tail[:-4], "<u8").reshape(per_shard + (2,))
        index = index[tuple(slice(0, p) for p in present)].reshape(-1, 2)
        offsets, sizes = index[:, 0], index[:, 1]
        absent = offsets == ABSENT
        if lay.strings:
            cells = np.empty((len(index), nitems), dtype=object)
            for k, (offset, size) in enumerate(index):
                cells[k] = (array.fill_value or "",) * nitems if absent[k] else \
                    _unvlen(raw[int(offset):int(offset + size)], nitems)
        else:
            dtype = array.dtype.newbyteorder("<")
            nbytes = nitems * dtype.itemsize
            if np.any(sizes[~absent] != nbytes):
                return array[...]  # compressed or otherwise encoded: zarr's to read
            starts = offsets[~absent].astype(np.int64)
            if len(starts) and starts.max() + nbytes > len(raw) - index_size:
                return array[...]
            data = np.frombuffer(raw, np.uint8)
            cells = np.full((len(index), nitems), array.fill_value, dtype=array.dtype)
            cells[~absent] = data[starts[:, None] + np.arange(nbytes)].view(dtype).reshape(
                -1, nitems)
        nd = len(lay.inner)
        block = cells.reshape(present + lay.inner).transpose(
            [k for pair in zip(range(nd), range(nd, 2 * nd)) for k in pair])
        block = block.reshape([p * i for p, i in zip(present, lay.inner)])
        out[region] = block[tuple(slice(0, r.stop - r.start) for r in region)]
    if lay.strings and array.dtype.kind == "T":
        out = out.astype(array.dtype)
    return out

"""The synthetic detector of a run, drawn once per (seed, SCA) and kept on disk.

A :class:`~.reference.SyntheticModel` is drawn lazily, block by block, by
whichever process asks; a survey asks for the same SCA in every L1 tile, every
L2 tile and every exposure.  :func:`stored_model` instead draws the frame of
the simulated window once and writes it as memory-mappable ``.npy`` files,
one per drawn field (:data:`~.reference.STORED_FIELDS`), in an *entry*
directory of a store::

    <store>/sca07-seed42-window4088-<digest>/
        model.json          seed, SCA, window, format and romandask version
        gain.npy            (N + 8, N + 8) float32
        lin_coeffs.npy      (4, N + 8, N + 8) float32
        ipc.npy             (3, 3, N + 8, N + 8) float32
        ...

88 bytes per frame pixel: 1.48 GB (1.37 GiB) for a full SCA, 26.6 GB for
the 18 SCAs; a 256-pixel window takes 6 MB.  The digest covers the format,
the romandask version and the synthetic figures, so an entry is only ever
read by the code that would draw it.

The entry is written under a temporary name (``.<name>.partial-<random>``),
strip by strip with plain writes (a full disk is a one-line error, not a
fault in a memory map), and renamed when complete: a directory with the
entry's name is always a complete model, and of several processes that draw
the same SCA at once the first to finish wins and the others read its files.
Writing holds one block row of the detector at a time.  A :class:`StoredModel`
reads slices of the files through memory maps held only for the copy, so a
worker's resident memory stays that of its tiles, and pickles to its path.
Its regions are, bit for bit, those of the lazily drawn model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError, OutputError
from ..instrument.matables import MATable
from .reference import (
    BLOCK,
    NCHAN,
    STORED_FIELDS,
    STORED_REGION_FIELDS,
    Region,
    SyntheticModel,
    _runs,
    frame_index,
)

#: Name of a run's store in its output directory.
STORE_NAME = "romandask.detector"
#: Layout of an entry; a change gives every entry a new name.
FORMAT = 1
#: Bytes per frame pixel of an entry.
BYTES_PER_PIXEL = sum(np.dtype(dtype).itemsize * int(np.prod(lead, dtype=np.int64))
                      for dtype, lead in STORED_FIELDS.values())
_PARTIAL = ".partial-"


def entry_name(seed: int, sca: int, window: int) -> str:
    """The directory name of the model of (seed, SCA, window) in a store."""
    digest = hashlib.sha256(
        f"{FORMAT} {__version__} {SyntheticModel.figures!r}".encode()).hexdigest()[:12]
    return f"sca{int(sca):02d}-seed{int(seed)}-window{int(window)}-{digest}"


def entry_bytes(window: int) -> int:
    """Bytes on disk of one SCA's entry for a window (its frame, N + 8 square)."""
    return BYTES_PER_PIXEL * (int(window) + 8) ** 2


def _record(seed: int, sca: int, window: int) -> dict:
    return {"model": "synthetic", "seed": int(seed), "sca": int(sca), "window": int(window),
            "format": FORMAT, "romandask": __version__}


def stored_model(seed: int, sca: int, window: int, store: Path) -> StoredModel:
    """The synthetic model of (seed, SCA, window) from ``store``, drawn there first if
    it is not there yet (by this process, or by whichever process finishes first)."""
    store = Path(store)
    entry = store / entry_name(seed, sca, window)
    if not entry.is_dir():
        _write(SyntheticModel(seed, sca, window, cache_blocks=NCHAN), entry)
    return StoredModel(entry, seed, sca, window)


def _write(model: SyntheticModel, entry: Path) -> None:
    """Draw ``model``'s frame into ``entry``: a temporary directory, renamed when complete."""
    where = f"detector model store {entry.parent}"
    tmp = entry.with_name(f".{entry.name}{_PARTIAL}{uuid.uuid4().hex}")
    n = model.frame_shape[0]
    try:
        tmp.mkdir(parents=True)
        offsets = {}
        for name, (dtype, lead) in STORED_FIELDS.items():
            # a header and its array's size (sparse), filled below strip by strip with
            # plain writes: a full disk is an OSError, not a fault in a memory map
            header = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype,
                                               shape=(*lead, n, n))
            offsets[name] = header.offset
            del header
        every = slice(0, n)
        files = {name: open(tmp / f"{name}.npy", "r+b") for name in STORED_FIELDS}
        try:
            # one strip per block row of the detector: each block is drawn once
            for out, _ in _runs(frame_index(model.window), BLOCK):
                ydet, xdet = model._detector(out, every)
                for name, values in model._gather(ydet, xdet, tuple(STORED_FIELDS)).items():
                    row_bytes = n * values.itemsize
                    # the (n, n) planes in C order, e.g. ipc[0, 0], ipc[0, 1], ...
                    for flat, plane in enumerate(np.ndindex(values.shape[:-2])):
                        files[name].seek(offsets[name] + (flat * n + out.start) * row_bytes)
                        files[name].write(np.ascontiguousarray(values[plane]).data)
        finally:
            for f in files.values():
                f.close()
        (tmp / "model.json").write_text(
            json.dumps(_record(model.seed, model.sca, model.window), indent=1) + "\n")
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(where, f"cannot write {entry.name} ({exc.strerror or exc})",
                          f"free {entry_bytes(model.window) / 1e9:.2f} GB there, or set "
                          "detector.model_store to a directory with room") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_partial_entries(store: Path) -> None:
    """Remove the temporary directories of interrupted writers (never a complete entry)."""
    if Path(store).is_dir():
        for stale in Path(store).glob(f".*{_PARTIAL}*"):
            shutil.rmtree(stale, ignore_errors=True)


class StoredModel(SyntheticModel):
    """A :class:`~.reference.SyntheticModel` read from an entry of a store.

    Every rectangle equals the lazily drawn model's bit for bit; only the
    drawing is gone.  Pickles to its entry's path.
    """

    def __init__(self, entry: Path, seed: int, sca: int, window: int):
        super().__init__(seed, sca, window, cache_blocks=0)
        self.entry = Path(entry)
        self._checked = False
        self._check_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"StoredModel({str(self.entry)!r}, seed={self.seed}, sca={self.sca}, "
                f"window={self.window})")

    def __getstate__(self):
        return {"entry": self.entry, "seed": self.seed, "sca": self.sca, "window": self.window}

    def __setstate__(self, state):
        self.__init__(state["entry"], state["seed"], state["sca"], state["window"])

    def region(self, rows: slice, cols: slice) -> Region:
        ydet, xdet = self._detector(rows, cols)
        return self._region(self._read(STORED_REGION_FIELDS, rows, cols), ydet, xdet)

    def biascorr(self, rows: slice, cols: slice, ma_table: MATable) -> np.ndarray:
        self._detector(rows, cols)  # checks the rectangle
        return self._biascorr(self._read(("bias_offset", "bias_transient"), rows, cols),
                              ma_table)

    def _read(self, names, rows: slice, cols: slice) -> dict[str, np.ndarray]:
        """Copies of fields ``names`` on a frame rectangle."""
        self._check()
        out = {}
        for name in names:
            source = np.load(self.entry / f"{name}.npy", mmap_mode="r")
            out[name] = np.array(source[..., rows, cols])
            del source  # unmapped: only the copy stays resident
        return out

    def _check(self) -> None:
        """Refuse an entry that is not this model's (once per process)."""
        if self._checked:
            return
        with self._check_lock:
            fix = "delete it: it is drawn again when needed"
            try:
                record = json.loads((self.entry / "model.json").read_text())
            except (OSError, ValueError) as exc:
                raise InputError(str(self.entry), f"is not a complete detector model ({exc})",
                                 fix) from exc
            if record != _record(self.seed, self.sca, self.window):
                raise InputError(str(self.entry), f"holds another detector model ({record})",
                                 fix)
            n = self.frame_shape[0]
            for name, (dtype, lead) in STORED_FIELDS.items():
                path = self.entry / f"{name}.npy"
                try:
                    array = np.load(path, mmap_mode="r")
                except (OSError, ValueError) as exc:
                    raise InputError(str(path), f"cannot be read ({exc})", fix) from exc
                found = (array.shape, array.dtype)
                del array
                if found != ((*lead, n, n), np.dtype(dtype)):
                    raise InputError(str(path), f"has shape {found[0]} and dtype {found[1]}; "
                                     f"expected {(*lead, n, n)} {np.dtype(dtype)}", fix)
            self._checked = True

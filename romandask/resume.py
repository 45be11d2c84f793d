"""What a run has finished, so that a rerun after an interruption finishes the rest.

A run in progress keeps ``romandask.progress/`` beside its partial store::

    fingerprint     what makes the run's bytes: the config (but its cluster
                    section, ``overwrite`` and ``detector.model_store``), the
                    romandask version and the catalog file's checksum
    done/E-S        one empty file per finished (exposure index, SCA index):
                    its store chunks and its L1 and L2 files are all written
    truth/E-S.npy   its rows of the truth table (a NumPy structured array,
                    :data:`romandask.store.TRUTH_DTYPE`), written before its
                    marker; the store's truth group is gathered from them
                    once every (exposure, SCA) is done

A marker is made only after everything it stands for is on disk, and every
file is written under a temporary name and renamed, so a rerun that trusts
the markers never keeps a partial product.  The same config and seed give
the same bytes whatever was interrupted: products are pure functions of
(seed, exposure, SCA).  The directory goes when the run completes.

The run's synthetic detector models (``romandask.detector/``, see
:mod:`romandask.detector.stored`) stay beside it until then: a resumed run
reads the complete ones and draws only what a killed writer left unfinished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from . import __version__
from .config import ClusterConfig, Config

PROGRESS_NAME = "romandask.progress"


def fingerprint(config: Config) -> str:
    """What makes a run's outputs: a rerun may resume only a run of the same."""
    neutral = dataclasses.replace(
        config, cluster=ClusterConfig(), source=None,
        output=dataclasses.replace(config.output, overwrite=False),
        detector=dataclasses.replace(config.detector, model_store=None))
    digest = hashlib.sha256(repr(neutral).encode())
    if config.catalog.file is not None:
        path = config.catalog.file
        # a partitioned catalog: every file of the directory, in name order
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for name in files:
            digest.update(name.name.encode())
            with open(name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return f"romandask {__version__}\nconfig {digest.hexdigest()}\n"


@dataclasses.dataclass(frozen=True)
class Progress:
    """The progress record of the run writing into ``directory``."""

    directory: Path

    @property
    def path(self) -> Path:
        return self.directory / PROGRESS_NAME

    def exists(self) -> bool:
        return (self.path / "fingerprint").exists()

    def matches(self, config: Config) -> bool:
        return (self.path / "fingerprint").read_text() == fingerprint(config)

    def start(self, config: Config) -> None:
        """Begin a record (the fingerprint last: a record without one is not a run's)."""
        self.remove()
        (self.path / "done").mkdir(parents=True)
        (self.path / "truth").mkdir()
        tmp = self.path / "fingerprint.partial"
        tmp.write_text(fingerprint(config))
        os.replace(tmp, self.path / "fingerprint")

    def done(self) -> set[tuple[int, int]]:
        """The finished (exposure index, SCA index) pairs."""
        if not self.exists():
            return set()
        out = set()
        for marker in (self.path / "done").iterdir():
            ie, _, isca = marker.name.partition("-")
            if ie.isdigit() and isca.isdigit():
                out.add((int(ie), int(isca)))
        return out

    def mark(self, ie: int, isca: int, *written) -> tuple[int, int]:
        """Record (ie, isca) as finished; a Dask task after everything in ``written``."""
        (self.path / "done" / f"{ie}-{isca}").touch()
        return ie, isca

    def truth_piece(self, ie: int, isca: int) -> Path:
        """Where (ie, isca)'s rows of the truth table are kept."""
        return self.path / "truth" / f"{ie}-{isca}.npy"

    def write_truth(self, ie: int, isca: int, truth: dict) -> None:
        """Keep (ie, isca)'s rows of the truth table (written whole, then renamed)."""
        from .store import truth_records

        path = self.truth_piece(ie, isca)
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as f:
            np.save(f, truth_records(truth))
        os.replace(tmp, path)

    def remove(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)

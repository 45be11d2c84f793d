"""The detector model a run uses, built once per worker and SCA."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from ..config import DetectorConfig, ScalarDetectorConfig
from .reference import CalDirModel, ScalarModel, SyntheticModel, resolve_caldir


@lru_cache(maxsize=2)
def detector_model(config: DetectorConfig, seed: int, sca: int):
    """The reference data of one SCA as the config chooses them (cached per process).

    A synthetic model is drawn lazily, tile by tile, so a worker holds only the
    blocks it touches; a CALDIR model reads slices of memory-mapped files.
    """
    if config.model == "synthetic":
        return SyntheticModel(seed, sca, config.window)
    if config.model == "scalar":
        s = config.scalar
        return ScalarModel(sca, config.window, gain=s.gain, read_noise=s.read_noise,
                           dark_current=s.dark_current, saturation=s.saturation,
                           reset_noise=s.reset_noise)
    return CalDirModel(resolve_caldir(config.caldir, sca), sca, config.window)


def model_from_record(record: Mapping, sca: int, window: int):
    """Rebuild the model a romandask file records under ``romandask.detector``."""
    det = DetectorConfig(window=window, model=str(record["model"]),
                         caldir=Path(record["caldir"]) if "caldir" in record else None,
                         scalar=ScalarDetectorConfig(**dict(record.get("scalar", {}))))
    return detector_model(det, int(record["seed"]), sca)

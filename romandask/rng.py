"""Deterministic random streams.

Every random draw in romandask comes from a generator keyed by
``(run seed, stage, exposure id, SCA, tile)``.  The key, not the order in which
tasks happen to run, fixes the stream, so results are identical whatever the
number of workers, the scheduler, retries or resumes.
"""

from __future__ import annotations

import numpy as np

#: Stage numbers: part of every key, never reused for a different purpose.
STAGES = {
    "catalog": 1,
    "counts": 2,
    "detector": 3,
    "readout": 4,
    "l1": 5,
    "inject": 6,
}


def generator(seed: int, stage: str, *key: int) -> np.random.Generator:
    """A PCG64 generator for ``(seed, stage, *key)``; all key parts are ints >= 0."""
    entropy = [int(seed), STAGES[stage], *(int(k) for k in key)]
    if any(k < 0 for k in entropy):
        raise ValueError(f"random-stream key parts must be >= 0, got {entropy}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))

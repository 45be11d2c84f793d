"""What each kind of task needs in memory, and what workers offer.

Every heavy layer of the survey graph carries a Dask resource annotation
``resources={"MEMORY": bytes}``: the peak memory one of its tasks adds to a
worker.  romandask's own workers (``local`` and ``slurm`` clusters) offer
``MEMORY`` equal to their memory limit less a fixed baseline (the
interpreter, GalSim, stcal, caches), so the scheduler never runs at once
more than a worker can hold, and a task too big for every worker is refused
before the run starts, with the setting to change.

The figures are the arrays each task holds at its peak, times factors
measured with ``benchmarks/bench_memory.py`` (peak RSS added by each kind of
task over its worker's RSS before it, on a full-frame run), with headroom.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dask.utils import format_bytes, parse_bytes

RESOURCE = "MEMORY"
# a worker's own memory before any task: Python, NumPy, GalSim, stcal,
# numba-compiled kernels and the per-process caches (PSFs, detector models,
# the sky's pixels: romandask.scene.sources.PIXEL_CACHE_BYTES)
BASELINE = parse_bytes("768 MiB")
MIB = 1 << 20


@dataclass(frozen=True)
class Needs:
    """Peak bytes one task of each kind adds to its worker."""

    select: int      # the sources of one (exposure, SCA), cut from the sky's pixels
    render: int      # expected counts of one tile (GalSim)
    counts: int      # Poisson draw of one tile
    readout: int     # correlated noise, amp33 and cosmic rays of one (exposure, SCA)
    model: int       # the synthetic detector model of one SCA, drawn into its store
    l1_tile: int     # the detector model on one frame tile
    reference: int   # reference-pixel correction of one (exposure, SCA)
    calibrate: int   # calibration and ramp fit of one frame tile with its halo
    write: int       # one store chunk
    files: int       # the L1 or L2 ASDF file of one (exposure, SCA)
    image: int = 0   # all of one (exposure, SCA) in one task (windows of one tile), or 0

    def largest(self) -> tuple[str, int]:
        return max(vars(self).items(), key=lambda item: item[1])

    def annotation(self, kind: str) -> dict:
        return {"resources": {RESOURCE: getattr(self, kind)}}


def needs(window: int, tile: int, frame_tile: int, cal_tile: int, nresultants: int,
          cal_halo: int, fused: bool = False) -> Needs:
    """Per-task needs for a run's geometry.

    ``tile``: rows (and columns) of a counts tile; ``frame_tile``: of an L1
    tile of the frame; ``cal_tile``: of a calibration tile (before its halo of
    ``cal_halo`` pixels); ``nresultants``: the longest MA table's; ``fused``:
    each (exposure, SCA) is one task, which runs the stages one after another
    and holds their outputs: the largest stage's need plus those arrays.
    """
    n = nresultants
    frame = window + 8
    px_tile = tile * tile
    px_l1 = (frame_tile + 2) ** 2
    px_cal = (cal_tile + 2 * cal_halo) ** 2
    stages = Needs(
        # the candidate pixels read or drawn (a few of ~13,000 sources each) and
        # the cut's temporaries
        select=64 * MIB,
        # float64 image and draws, GalSim's stamps, FFT space and the PSF model
        # it builds (a full-SCA model and its transforms, ~110 MB, and
        # GalSim's own tables: 314 MiB measured at tile 1022)
        render=px_tile * 8 * 6 + 384 * MIB,
        counts=px_tile * (8 + 4) * 6 + 32 * MIB,
        # float64 noise of each read of the 128-column amp33 and the reference
        # rows, and the cosmic rays of the frame
        readout=frame * 136 * 8 * (2 * n + 4) * 2 + 256 * MIB,
        # one block row of the frame twice (the blocks drawn and their copy) and
        # the float64 temporaries of drawing a block
        model=frame * 128 * 88 * 2 + 64 * MIB,
        # float64 means of every resultant, the reads being apportioned and the
        # region's reference data; uint16 + uint8 out
        l1_tile=px_l1 * (8 * (6 * n + 24) + 3 * n) + 64 * MIB,
        reference=frame * 136 * 8 * (n + 4) + 32 * MIB,
        # float32 resultants through the steps, float64 for the fit, the outputs
        calibrate=px_cal * (4 * 4 * n + 8 * 9 * n + 8 * 16) + 128 * MIB,
        # a chunk and zarr's compression buffers
        write=max(n * frame_tile * frame_tile * 2, px_tile * 4) * 4 + 64 * MIB,
        # a file's arrays, their copies in the model and its compressed blocks
        files=(n * frame * frame * 2 * 3 + window * window * 4 * 5 * 3) + 128 * MIB,
    )
    if not fused:
        return stages
    # expected (float64) and counts (float32); resultants (uint16) and group DQ
    # (uint8), and their copies grown by the halo; the L2 arrays
    held = (window * window * 12 + 2 * n * (frame + 2 * cal_halo) ** 2 * 3
            + window * window * 20)
    return dataclasses.replace(stages, image=max(vars(stages).values()) + held)


def worker_budget(memory_limit: int) -> int:
    """``MEMORY`` a worker with ``memory_limit`` bytes offers to tasks."""
    return max(memory_limit - BASELINE, 0)


def check_fits(needs: Needs, budget: int, where: str, fix: str) -> None:
    """Raise ConfigError if the largest task needs more than a worker offers."""
    from .errors import ConfigError

    kind, need = needs.largest()
    if need > budget:
        raise ConfigError(where, f"one {kind} task needs {format_bytes(need)} but a worker "
                                 f"offers {format_bytes(budget)} (its memory less "
                                 f"{format_bytes(BASELINE)} of its own)", fix)

"""Multi-accumulation (MA) tables: which reads are averaged into each resultant.

A read pattern is a list of resultants, each a list of 1-based read indices;
read ``k`` ends ``k * frame_time`` seconds after the reset.  The exposure time
is ``frame_time`` times the last read index (romanisim's convention).

The numbered tables 3 to 17 are the WFI's Rev F imaging tables as distributed
with romanisim (``romanisim.parameters.read_pattern``), with romanisim's frame
time of 3.16247 s.  All of them are contiguous from read 1, so each is stored
here as the number of reads averaged into each resultant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Frame (read) time in seconds used by romanisim >= 0.10.
FRAME_TIME = 3.16247

#: Reads per resultant of the numbered MA tables (Rev F, via romanisim).
_READS_PER_RESULTANT = {
    3: [1, 2, 6, 8, 1],
    4: [1, 1, 2, 5, 8, 8, 8, 10, 1],
    5: [1, 1, 2, 6, 6, 6, 6, 6, 8, 10, 10, 1],
    6: [1, 1, 2, 6, 6, 6, 8, 8, 8, 8, 8, 10, 10, 10, 1],
    7: [1, 1, 2, 8, 8, 10, 10, 12, 12, 12, 12, 12, 12, 12, 1],
    8: [1, 1, 2, 8, 9, 10, 12, 16, 16, 16, 16, 16, 16, 16, 1],
    9: [1, 1, 2, 8, 8, 10, 12, 16, 16, 16, 16, 16, 32, 32, 1],
    10: [1, 1, 2, 8, 12, 16, 16, 16, 16, 16, 32, 32, 32, 32, 1],
    11: [1, 1, 2, 16, 16, 16, 32, 32, 32, 32, 32, 32, 32, 32, 1],
    12: [1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8, 1],
    13: [1, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 1],
    14: [1, 2, 2, 4, 6, 8, 8, 8, 8, 8, 8, 8, 8, 16, 1],
    15: [1, 2, 2, 4, 6, 6, 12, 12, 12, 12, 12, 12, 12, 12, 1],
    16: [1, 2, 2, 8, 12, 12, 12, 12, 12, 12, 12, 16, 16, 16, 1],
    17: [2, 2, 2, 6, 8, 12, 16, 16, 16, 16, 16, 16, 32, 32, 1],
}

NUMBERED_TABLES = tuple(sorted(_READS_PER_RESULTANT))
#: Highest read index a pattern may use (about 54 minutes at the frame time).
MAX_READ = 1022


def _contiguous(reads_per_resultant: list[int]) -> list[list[int]]:
    pattern, first = [], 1
    for n in reads_per_resultant:
        pattern.append(list(range(first, first + n)))
        first += n
    return pattern


def check_read_pattern(pattern) -> str | None:
    """Return why ``pattern`` is not a valid read pattern, or None if it is."""
    if not isinstance(pattern, (list, tuple)) or len(pattern) == 0:
        return "must be a non-empty list of resultants, each a list of read indices"
    last = 0
    for i, resultant in enumerate(pattern):
        if not isinstance(resultant, (list, tuple)) or len(resultant) == 0:
            return f"resultant {i} is empty; every resultant needs at least one read"
        for read in resultant:
            if isinstance(read, bool) or not isinstance(read, (int, np.integer)):
                return f"resultant {i} holds {read!r}; reads are integer indices"
            if read <= last:
                return (f"resultant {i} holds read {read} after read {last}; "
                        "reads must be positive, increasing and non-overlapping")
            if read > MAX_READ:
                return f"resultant {i} holds read {read}; reads go up to {MAX_READ}"
            last = int(read)
    return None


@dataclass(frozen=True)
class MATable:
    """A read pattern and frame time, with the times derived from them."""

    read_pattern: tuple[tuple[int, ...], ...]
    frame_time: float = FRAME_TIME
    number: int | None = None
    name: str | None = None

    @classmethod
    def numbered(cls, number: int) -> "MATable":
        """One of romanisim's numbered tables (3 to 17)."""
        pattern = _contiguous(_READS_PER_RESULTANT[number])
        return cls(tuple(map(tuple, pattern)), FRAME_TIME, number, str(number))

    @classmethod
    def from_pattern(cls, pattern, frame_time: float = FRAME_TIME,
                     name: str | None = None) -> "MATable":
        problem = check_read_pattern(pattern)
        if problem:
            raise ValueError(problem)
        return cls(tuple(tuple(int(r) for r in res) for res in pattern),
                   float(frame_time), None, name)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.number)

    @property
    def nresultants(self) -> int:
        return len(self.read_pattern)

    @property
    def nreads(self) -> int:
        """Index of the last read (reads skipped by the pattern included)."""
        return self.read_pattern[-1][-1]

    @property
    def exposure_time(self) -> float:
        """Seconds from reset to the end of the last read."""
        return self.frame_time * self.nreads

    @property
    def tbar(self) -> np.ndarray:
        """Mean time of the reads in each resultant (s), Casertano (2022)."""
        return np.array([self.frame_time * np.mean(r) for r in self.read_pattern])

    @property
    def effective_exposure_time(self) -> float:
        """Time between the first and last resultants' mean read times (s)."""
        tb = self.tbar
        return float(tb[-1] - tb[0])

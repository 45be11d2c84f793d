"""User-facing errors.

Every error a user can cause (a bad config, a malformed catalog, an unwritable
output) is raised as a :class:`UserError`.  The CLI prints its message on one
line and exits with status 2; no traceback is shown.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class UserError(Exception):
    """An error caused by the user's input: ``where: problem; fix``."""

    exit_code = 2
    kind = "error"

    def __init__(self, where: str, problem: str, fix: str | None = None):
        self.where = where
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def __reduce__(self):
        # raised in a worker process, it reaches the driver whole (pickled)
        return (self.__class__, (self.where, self.problem, self.fix))

    def one_line(self) -> str:
        msg = f"{self.kind}: {self.where}: {self.problem}"
        if self.fix:
            msg += f"; {self.fix}"
        return " ".join(msg.split())


class ConfigError(UserError):
    """A problem with the YAML config; ``where`` is the field's YAML path."""

    kind = "config error"


class InputError(UserError):
    """A problem with an input file (catalog, pointing table, reference file)."""

    kind = "input error"


class OutputError(UserError):
    """A problem with where the outputs go (exists, not writable)."""

    kind = "output error"


def check_writable_directory(directory: Path, where: str) -> None:
    """Raise OutputError unless ``directory`` is, or can be made as, a writable directory."""
    if directory.exists() and not directory.is_dir():
        raise OutputError(where, "exists and is not a directory", "choose a directory path")
    parent = next((p for p in (directory, *directory.parents) if p.exists()), Path("/"))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(where, "is not a writable directory",
                          "choose a directory you can write to")


def partial_path(path: Path) -> Path:
    """The temporary name a file or store is written under before its rename."""
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary name for ``path``; rename it to ``path`` when the block succeeds.

    On failure the temporary file is removed; an OSError becomes a one-line
    OutputError.  A file with the final name is therefore always complete.
    """
    path = Path(path)
    partial = partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OutputError(str(path), f"cannot write the file ({exc.strerror or exc})",
                          "check that the directory exists, is writable and has "
                          "space") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise

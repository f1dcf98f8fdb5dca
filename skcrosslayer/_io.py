"""Writing result files so that a file only appears when it is complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "check_writable"]


def check_writable(path: Path, overwrite: bool) -> None:
    """Raise when ``path`` exists and ``overwrite`` is False."""
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"output {str(path)!r} already exists; pass --overwrite to replace it "
            "or choose another output path"
        )


def atomic_write(path: Path, write: Callable[[object], None], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it.

    The rename is atomic on POSIX file systems, so readers see either the old
    file or the complete new one, and an interrupted write leaves no partial
    output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

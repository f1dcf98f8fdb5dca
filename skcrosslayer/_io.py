"""Writing result files so that a file only appears when it is complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "check_writable", "temporary_file"]


def check_writable(path: Path, overwrite: bool) -> None:
    """Raise when ``path`` exists and ``overwrite`` is False."""
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"output {str(path)!r} already exists; pass --overwrite to replace it "
            "or choose another output path"
        )


def _current_umask() -> int:
    """Return the process's umask, from /proc on Linux, else by setting it back."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def temporary_file(path: Path) -> tuple[int, str]:
    """Create a hidden temporary file next to ``path``; return its handle and path.

    Unlike a bare ``tempfile.mkstemp``, which makes the file readable by its
    owner only, the file gets the permissions that ``open()`` would give it
    under the current umask, and keeps them when renamed to ``path``.
    """
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    os.chmod(temporary, 0o666 & ~_current_umask())
    return handle, temporary


def atomic_write(path: Path, write: Callable[[object], None], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it.

    The rename is atomic on POSIX file systems, so readers see either the old
    file or the complete new one, and an interrupted write leaves no partial
    output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = temporary_file(path)
    try:
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

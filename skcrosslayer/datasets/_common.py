"""Exceptions, path checks and line parsing shared by the dataset readers."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "MissingImagesWarning",
]

# File name suffixes (compared in lower case) that the folder readers treat as images.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)

# How many names of missing images an error or warning message lists.
_N_NAMES_SHOWN = 5

# Modules whose frames a warning skips, so that it points at the user's call.
_INTERNAL_MODULES = ("skcrosslayer.datasets", "sklearn.utils._param_validation")


class DatasetNotFoundError(FileNotFoundError):
    """A file or folder of a dataset's official layout that is not on disk.

    Also raised for images that a dataset's list files name but that are not on
    disk, unless the reader is called with ``missing="skip"``.
    """


class DatasetFormatError(ValueError):
    """A dataset file whose content does not follow the dataset's official format."""


class MissingImagesWarning(UserWarning):
    """Images listed by a dataset's files but not on disk, dropped on request."""


def resolve_root(root: str | os.PathLike, dataset: str) -> Path:
    """Return ``root`` as an absolute path, raising if it is not a folder."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"{dataset}: root folder not found: '{path}'. Pass the folder into which "
            "the official archives were extracted."
        )
    return path


def require_file(path: Path, dataset: str, provided_by: str) -> Path:
    """Return ``path`` if it is a file, else raise naming its archive."""
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{dataset}: file not found: '{path}'. It is provided by {provided_by}."
        )
    return path


def require_dir(path: Path, dataset: str, provided_by: str) -> Path:
    """Return ``path`` if it is a folder, else raise naming its archive."""
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"{dataset}: folder not found: '{path}'. It is provided by {provided_by}."
        )
    return path


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Read a text file as ``(line_number, stripped_line)`` pairs, without blank lines.

    Line numbers start at 1. Windows line ends and a UTF-8 byte order mark are
    accepted.
    """
    with open(path, encoding="utf-8-sig") as file:
        lines = file.read().splitlines()
    return [
        (number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()
    ]


def format_error(path: Path, line_number: int, expected: str, line: str) -> str:
    """Build the message of a :class:`DatasetFormatError` for one bad line."""
    return f"{path}, line {line_number}: expected {expected}, got {line!r}."


def is_image_file(path: Path, extensions: Iterable[str]) -> bool:
    """Return whether ``path`` is a visible file whose suffix is in ``extensions``."""
    return (
        path.suffix.lower() in extensions
        and not path.name.startswith(".")
        and path.is_file()
    )


def index_images_by_stem(folder: Path, extensions: Iterable[str]) -> dict[str, Path]:
    """Map each image file name without its suffix to its path, searching subfolders.

    Indexing by name makes flat and nested copies of the same dataset (Paris6k
    ships in one subfolder per landmark) give the same result.

    Raises
    ------
    DatasetFormatError
        If two files under ``folder`` have the same name without suffix, because
        the dataset's lists could not tell them apart.
    """
    extensions = tuple(extensions)
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if not is_image_file(path, extensions):
            continue
        if path.stem in index:
            raise DatasetFormatError(
                f"Two images named '{path.stem}' under '{folder}': "
                f"'{index[path.stem]}' and '{path}'. Remove one so that each image "
                "name is unique."
            )
        index[path.stem] = path
    return index


def report_missing(
    missing_names: list[str],
    *,
    missing: str,
    dataset: str,
    listed_in: str,
    provided_by: str,
) -> None:
    """Raise or warn about images that the dataset lists but that are not on disk.

    Parameters
    ----------
    missing_names : list of str
        Names of the missing images, in the order the dataset lists them.
    missing : {"raise", "skip"}
        ``"raise"`` raises :class:`DatasetNotFoundError`. ``"skip"`` warns with
        :class:`MissingImagesWarning`, and the caller drops the images.
    dataset : str
        Dataset name shown in the message.
    listed_in : str
        Where the images are listed, as words that complete "N images ... are
        not on disk", such as ``"listed in '/data/cub/images.txt'"``.
    provided_by : str
        Archives that contain the images, shown in the message.
    """
    if not missing_names:
        return

    shown_names = ", ".join(f"'{name}'" for name in missing_names[:_N_NAMES_SHOWN])
    if len(missing_names) > _N_NAMES_SHOWN:
        shown_names += ", ..."
    if len(missing_names) == 1:
        count, verb = "1 image", "is"
    else:
        count, verb = f"{len(missing_names)} images", "are"
    if missing == "raise":
        raise DatasetNotFoundError(
            f"{dataset}: {count} {listed_in} {verb} not on disk: "
            f"{shown_names}. They are provided by {provided_by}. Extract them, or pass "
            "missing='skip' to drop them from the dataset."
        )

    warnings.warn(
        f"{dataset}: skipped {count} {listed_in} that {verb} not on disk: "
        f"{shown_names}.",
        MissingImagesWarning,
        stacklevel=_caller_stacklevel(),
    )


def _caller_stacklevel() -> int:
    """Return the ``stacklevel`` that makes the caller's warning point at user code.

    Level 1 is the function that calls this one. Each frame of the readers and of
    scikit-learn's parameter validation adds one level.
    """
    level = 1
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
        _INTERNAL_MODULES
    ):
        frame = frame.f_back
        level += 1
    return level

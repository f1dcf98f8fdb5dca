"""Readers for retrieval sets whose ground truth is given by file and folder names.

INRIA Holidays and UKBench encode each image's group in its file number, and a
folder-per-group tree encodes it in the folder name. Every reader returns a
:class:`~skcrosslayer.datasets.RetrievalDataset` whose ``groups`` attribute
contains the group of each image.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import StrOptions, validate_params

from ._common import (
    IMAGE_EXTENSIONS,
    DatasetFormatError,
    DatasetNotFoundError,
    is_image_file,
    report_missing,
    resolve_root,
)
from .retrieval import RetrievalDataset

__all__ = ["load_holidays", "load_image_groups", "load_ukbench"]

logger = logging.getLogger(__name__)

_HOLIDAYS_ARCHIVES = "jpg1.tar.gz and jpg2.tar.gz of INRIA Holidays"
_UKBENCH_ARCHIVE = "ukbench.zip"

# Images a UKBench group contains: numbers 4g, 4g + 1, 4g + 2 and 4g + 3.
_UKBENCH_GROUP_SIZE = 4


def _list_images(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """Return the image files directly inside ``folder``, sorted by name."""
    return sorted(path for path in folder.iterdir() if is_image_file(path, extensions))


def _number_images(
    paths: list[Path], pattern: re.Pattern, dataset: str, expected: str
) -> list[tuple[int, Path]]:
    """Return ``(number, path)`` pairs sorted by number, parsed by ``pattern``.

    Raises
    ------
    DatasetFormatError
        If a file name does not match ``pattern``.
    """
    numbered = []
    for path in paths:
        match = pattern.fullmatch(path.stem)
        if match is None:
            raise DatasetFormatError(
                f"{dataset}: image '{path}' does not follow the file naming "
                f"{expected}. Move other images out of '{path.parent}'."
            )
        numbered.append((int(match[1]), path))
    return sorted(numbered)


def _dataset_from_groups(
    name: str,
    root: Path,
    names: list[str],
    paths: list[Path],
    groups: np.ndarray,
    query_indices: np.ndarray,
    *,
    include_query: bool,
    group_names: list[str] | None = None,
) -> RetrievalDataset:
    """Build a dataset whose positives are the other images of the query's group.

    With ``include_query`` the query image itself is a positive. Otherwise it is
    junk, so that a ranking that returns the query first is not penalised.
    """
    positives, junk = [], []
    for query in query_indices:
        members = np.flatnonzero(groups == groups[query])
        if include_query:
            positives.append(members.astype(np.intp))
            junk.append(np.empty(0, dtype=np.intp))
        else:
            positives.append(members[members != query].astype(np.intp))
            junk.append(np.array([query], dtype=np.intp))

    logger.info(
        "Read %s from %s: %d database images, %d queries",
        name,
        root,
        len(paths),
        len(query_indices),
    )
    return RetrievalDataset(
        name=name,
        root=str(root),
        database_names=names,
        database_paths=[str(path) for path in paths],
        query_names=[names[q] for q in query_indices],
        query_paths=[str(paths[q]) for q in query_indices],
        query_indices=np.asarray(query_indices, dtype=np.intp),
        query_boxes=None,
        positives=positives,
        junk=junk,
        groups=groups,
        group_names=group_names,
    )


@validate_params({"root": [str, os.PathLike]}, prefer_skip_nested_validation=True)
def load_holidays(root: str | os.PathLike) -> RetrievalDataset:
    """Read the INRIA Holidays retrieval benchmark.

    Parameters
    ----------
    root : str or path-like
        Folder of the Holidays images (``100000.jpg``, ``100001.jpg``, ...), as
        extracted from jpg1.tar.gz and jpg2.tar.gz, or a folder that contains
        them in a ``jpg/`` subfolder.

    Returns
    -------
    RetrievalDataset
        Database: every image, sorted by number. ``groups`` is the image number
        divided by 100 (``100301.jpg`` is in group 1003). Each group's first image
        (lowest number, ``100300.jpg``) is its query. Positives are the other
        images of the group, and the query image itself is junk, because the
        Holidays evaluation leaves the query out of its own ranking.

    Raises
    ------
    DatasetNotFoundError
        If ``root`` contains no ``.jpg`` images.
    DatasetFormatError
        If an image's name is not a number.

    Notes
    -----
    The reader cannot tell a group whose query image was not extracted: the
    group's next image then becomes the query.
    """
    root_path = resolve_root(root, "Holidays")
    extensions = (".jpg", ".jpeg")
    folder = root_path
    image_paths = _list_images(folder, extensions)
    if not image_paths and (root_path / "jpg").is_dir():
        folder = root_path / "jpg"
        image_paths = _list_images(folder, extensions)
    if not image_paths:
        raise DatasetNotFoundError(
            f"Holidays: no .jpg images in '{root_path}' or '{root_path / 'jpg'}'. "
            f"They are provided by {_HOLIDAYS_ARCHIVES}."
        )

    numbered = _number_images(
        image_paths, re.compile(r"(\d+)"), "Holidays", "'<number>.jpg' (100000.jpg)"
    )
    numbers = np.array([number for number, _ in numbered])
    paths = [path for _, path in numbered]
    groups = numbers // 100

    # Images are sorted by number, so the first image of each group is its query.
    _, query_indices = np.unique(groups, return_index=True)
    return _dataset_from_groups(
        "holidays",
        root_path,
        [path.stem for path in paths],
        paths,
        groups,
        query_indices,
        include_query=False,
    )


@validate_params(
    {"root": [str, os.PathLike], "missing": [StrOptions({"raise", "skip"})]},
    prefer_skip_nested_validation=True,
)
def load_ukbench(
    root: str | os.PathLike, *, missing: str = "raise"
) -> RetrievalDataset:
    """Read the UKBench (University of Kentucky) retrieval benchmark.

    Parameters
    ----------
    root : str or path-like
        Folder that contains ``full/`` (``full/ukbench00000.jpg`` ...) as
        extracted from ukbench.zip, or the ``full`` folder itself.
    missing : {"raise", "skip"}, default="raise"
        What to do when a group lacks some of its four images.
        ``"raise"`` raises :class:`DatasetNotFoundError`. ``"skip"`` warns with
        :class:`MissingImagesWarning` and keeps the incomplete groups.

    Returns
    -------
    RetrievalDataset
        Database: every image, sorted by number. ``groups`` is the image number
        divided by 4. Every image is a query, and its positives are the images of
        its group including itself, because the UKBench score counts how many of
        the 4 group images, the query included, rank in the top 4.

    Raises
    ------
    DatasetNotFoundError
        If no UKBench image is found, or with ``missing="raise"`` if a group has
        fewer than 4 images.
    DatasetFormatError
        If an image's name does not follow ``ukbench<number>.jpg``.
    """
    root_path = resolve_root(root, "UKBench")
    extensions = (".jpg", ".jpeg")
    folder = root_path / "full"
    if not folder.is_dir():
        folder = root_path
    image_paths = _list_images(folder, extensions)
    if not image_paths:
        raise DatasetNotFoundError(
            f"UKBench: no .jpg images in '{root_path / 'full'}' or '{root_path}'. "
            f"They are provided by {_UKBENCH_ARCHIVE}, which extracts to 'full/'."
        )

    numbered = _number_images(
        image_paths,
        re.compile(r"ukbench(\d+)"),
        "UKBench",
        "'ukbench<number>.jpg' (ukbench00000.jpg)",
    )
    numbers = np.array([number for number, _ in numbered])
    paths = [path for _, path in numbered]
    groups = numbers // _UKBENCH_GROUP_SIZE

    present = set(numbers.tolist())
    expected = [
        group * _UKBENCH_GROUP_SIZE + offset
        for group in np.unique(groups).tolist()
        for offset in range(_UKBENCH_GROUP_SIZE)
    ]
    report_missing(
        [f"ukbench{number:05d}" for number in expected if number not in present],
        missing=missing,
        dataset="UKBench",
        listed_in=f"expected in groups of 4 in '{folder}'",
        provided_by=_UKBENCH_ARCHIVE,
    )

    return _dataset_from_groups(
        "ukbench",
        root_path,
        [path.stem for path in paths],
        paths,
        groups,
        np.arange(len(paths)),
        include_query=True,
    )


def _check_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    """Return ``extensions`` in lower case, raising if one is not a suffix."""
    valid = bool(extensions) and all(
        isinstance(suffix, str) and suffix.startswith(".") for suffix in extensions
    )
    if not valid:
        raise ValueError(
            f"Invalid extensions {extensions!r}: expected a non-empty list of file "
            "suffixes starting with '.', such as ['.jpg', '.png']."
        )
    return tuple(suffix.lower() for suffix in extensions)


@validate_params(
    {"root": [str, os.PathLike], "extensions": [list, tuple]},
    prefer_skip_nested_validation=True,
)
def load_image_groups(
    root: str | os.PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> RetrievalDataset:
    """Read a retrieval set stored as one folder per group: ``root/<group>/<image>``.

    Parameters
    ----------
    root : str or path-like
        Folder whose subfolders are the groups. Files directly in ``root`` and
        hidden folders are ignored.
    extensions : list or tuple of str, default=IMAGE_EXTENSIONS
        File suffixes read as images, compared in lower case. Only files directly
        inside a group folder are read.

    Returns
    -------
    RetrievalDataset
        Database: the images of every group, groups sorted by folder name and
        images by file name, named ``"<group>/<file>"``. ``groups`` indexes
        ``group_names``, the names of the folders that contain images. Every image
        is a query: its positives are the other images of its group, and the
        query image itself is junk. A group of one image gives a query without
        positives, which the evaluation excludes.

    Raises
    ------
    DatasetNotFoundError
        If no group folder contains an image.
    ValueError
        If ``extensions`` is empty or contains a suffix that does not start with
        ``'.'``.
    """
    suffixes = _check_extensions(extensions)
    root_path = resolve_root(root, "Image groups")

    group_names: list[str] = []
    names, paths, groups = [], [], []
    for folder in sorted(root_path.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        images = _list_images(folder, suffixes)
        if not images:
            logger.debug("Skipped group folder %s: no images", folder)
            continue
        for path in images:
            names.append(f"{folder.name}/{path.name}")
            paths.append(path)
            groups.append(len(group_names))
        group_names.append(folder.name)
    if not paths:
        raise DatasetNotFoundError(
            f"Image groups: no images with suffix in {list(suffixes)} in the "
            f"subfolders of '{root_path}'. Put each group's images into its own "
            "subfolder, root/<group>/<image>."
        )

    return _dataset_from_groups(
        "image_groups",
        root_path,
        names,
        paths,
        np.array(groups, dtype=np.intp),
        np.arange(len(paths)),
        include_query=False,
        group_names=group_names,
    )

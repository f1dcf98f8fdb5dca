"""Readers for the Oxford5k / Paris6k retrieval benchmarks and their revisited versions.

Each reader returns a :class:`RetrievalDataset`: absolute image paths for the
database and the queries, and per query the database indices of its positives and
of its junk images. Junk images are removed from a ranking before average
precision is computed, as the revisitop evaluation code does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.utils._param_validation import StrOptions, validate_params

from ._common import (
    DatasetFormatError,
    DatasetNotFoundError,
    format_error,
    index_images_by_stem,
    read_lines,
    report_missing,
    require_dir,
    require_file,
    resolve_root,
)

__all__ = [
    "RetrievalDataset",
    "RevisitedRetrievalDataset",
    "load_oxford5k",
    "load_paris6k",
    "load_roxford5k",
    "load_rparis6k",
]

logger = logging.getLogger(__name__)

_REVISITED_PROTOCOLS = ("easy", "medium", "hard")

# Oxford5k query files name their image with this prefix, which the jpg files lack.
_OXFORD_QUERY_PREFIX = "oxc1_"

_QUERY_FILE_PATTERN = re.compile(r"(?P<landmark>.+)_(?P<number>\d+)_query\.txt")


@dataclass(frozen=True, kw_only=True)
class RetrievalDataset:
    """Image paths and ground truth of a retrieval benchmark.

    Index arrays refer to positions in ``database_paths``. Every index array is
    sorted and contains no duplicates.

    Attributes
    ----------
    name : str
        Dataset identifier, such as ``"oxford5k"``.
    root : str
        Absolute path of the folder that was read.
    database_names : list of str
        Image names as the dataset's files spell them, usually without suffix.
    database_paths : list of str
        Absolute path of each database image, shape ``(n_database,)``.
    query_names : list of str
        Name of each query, shape ``(n_queries,)``.
    query_paths : list of str
        Absolute path of each query image.
    query_indices : ndarray of shape (n_queries,), dtype intp
        Database index of each query image, or -1 where the query image is not
        in the database.
    query_boxes : ndarray of shape (n_queries, 4) or None
        Query regions as ``(x1, y1, x2, y2)`` pixel coordinates in float64, or
        None for datasets whose queries are whole images.
    positives : list of ndarray of intp
        Per query, the database indices of the relevant images.
    junk : list of ndarray of intp
        Per query, the database indices to remove from the ranking before
        average precision is computed. They count neither as relevant nor as
        irrelevant.
    groups : ndarray of shape (n_database,) or None
        Group label of each database image for datasets defined by groups
        (Holidays, UKBench, one folder per group), else None. Usable as ``y``.
    group_names : list of str or None
        Name of each group label where groups come from folder names, else None.
    """

    name: str
    root: str
    database_names: list[str]
    database_paths: list[str]
    query_names: list[str]
    query_paths: list[str]
    query_indices: np.ndarray
    query_boxes: np.ndarray | None
    positives: list[np.ndarray]
    junk: list[np.ndarray]
    groups: np.ndarray | None = None
    group_names: list[str] | None = None

    @property
    def n_database(self) -> int:
        """Number of database images."""
        return len(self.database_paths)

    @property
    def n_queries(self) -> int:
        """Number of queries."""
        return len(self.query_paths)


@dataclass(frozen=True, kw_only=True)
class RevisitedRetrievalDataset(RetrievalDataset):
    """Revisited Oxford / Paris ground truth with its three evaluation protocols.

    ``positives`` and ``junk`` contain the labels of ``protocol``. The per-query
    labels of the ground-truth file are kept, so that :meth:`with_protocol` can
    switch protocols without reading the files again. The protocols follow the
    evaluation example of the revisitop code by F. Radenović, A. Iscen,
    G. Tolias, Y. Avrithis and O. Chum ("Revisiting Oxford and Paris: Large-Scale
    Image Retrieval Benchmarking", CVPR 2018):

    - ``"easy"``: positives are the ``'easy'`` images. The ``'hard'`` and
      ``'junk'`` images are junk.
    - ``"medium"``: positives are the ``'easy'`` and ``'hard'`` images. The
      ``'junk'`` images are junk.
    - ``"hard"``: positives are the ``'hard'`` images. The ``'easy'`` and
      ``'junk'`` images are junk.

    Queries without positives under a protocol stay in the dataset, and the
    evaluation excludes them.

    Attributes
    ----------
    protocol : {"easy", "medium", "hard"}
        Protocol that ``positives`` and ``junk`` follow.
    gnd_easy : list of ndarray of intp
        Per query, the database indices of the file's ``'easy'`` list.
    gnd_hard : list of ndarray of intp
        Per query, the database indices of the file's ``'hard'`` list.
    gnd_junk : list of ndarray of intp
        Per query, the database indices of the file's ``'junk'`` list.
    """

    protocol: str
    gnd_easy: list[np.ndarray]
    gnd_hard: list[np.ndarray]
    gnd_junk: list[np.ndarray]

    def with_protocol(self, protocol: str) -> RevisitedRetrievalDataset:
        """Return a copy whose ``positives`` and ``junk`` follow ``protocol``.

        Parameters
        ----------
        protocol : {"easy", "medium", "hard"}
            Evaluation protocol.

        Returns
        -------
        RevisitedRetrievalDataset
            The same images with the labels of ``protocol``.
        """
        positives, junk = _protocol_labels(
            self.gnd_easy, self.gnd_hard, self.gnd_junk, protocol
        )
        return dataclasses.replace(
            self, protocol=protocol, positives=positives, junk=junk
        )


def _protocol_labels(
    gnd_easy: list[np.ndarray],
    gnd_hard: list[np.ndarray],
    gnd_junk: list[np.ndarray],
    protocol: str,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Combine the easy / hard / junk lists into positives and junk for a protocol."""
    if protocol not in _REVISITED_PROTOCOLS:
        raise ValueError(
            f"Invalid protocol {protocol!r} for a revisited dataset. Expected one of "
            f"{_REVISITED_PROTOCOLS}."
        )

    positives, junk = [], []
    for easy_q, hard_q, junk_q in zip(gnd_easy, gnd_hard, gnd_junk, strict=True):
        if protocol == "easy":
            positives.append(easy_q)
            junk.append(np.union1d(junk_q, hard_q))
        elif protocol == "medium":
            positives.append(np.union1d(easy_q, hard_q))
            junk.append(junk_q)
        else:
            positives.append(hard_q)
            junk.append(np.union1d(junk_q, easy_q))
    return positives, junk


def _as_indices(values: list[int]) -> np.ndarray:
    """Return database indices as a sorted, duplicate-free intp array."""
    return np.unique(np.asarray(values, dtype=np.intp)).astype(np.intp, copy=False)


# ---------------------------------------------------------------- Oxford5k / Paris6k


@dataclass(frozen=True)
class _BuildingsLayout:
    """Names and archives of one of the two original building datasets."""

    name: str
    title: str
    image_archives: str
    gt_archive: str
    gt_dirs: tuple[str, ...]


_OXFORD5K = _BuildingsLayout(
    name="oxford5k",
    title="Oxford5k",
    image_archives="oxbuild_images-v1.tgz (older copies: oxbuild_images.tgz)",
    gt_archive="gt_files_170407.tgz",
    gt_dirs=("gt_files", "gt_files_170407"),
)

_PARIS6K = _BuildingsLayout(
    name="paris6k",
    title="Paris6k",
    image_archives=(
        "paris_1-v1.tgz and paris_2-v1.tgz (older copies: paris_1.tgz, paris_2.tgz)"
    ),
    gt_archive="paris_120310.tgz",
    gt_dirs=("gt_files", "paris_120310"),
)


def _find_gt_dir(
    root: Path, gt_dir: str | os.PathLike | None, layout: _BuildingsLayout
) -> Path:
    """Return the ground-truth folder: ``gt_dir`` if given, else a known name."""
    provided_by = f"{layout.gt_archive}, extracted into a folder under '{root}'"
    if gt_dir is not None:
        return require_dir(root / gt_dir, layout.title, provided_by)

    for name in layout.gt_dirs:
        if (root / name).is_dir():
            return root / name
    tried = " or ".join(f"'{root / name}'" for name in layout.gt_dirs)
    raise DatasetNotFoundError(
        f"{layout.title}: ground-truth folder not found: tried {tried}. It is "
        f"provided by {provided_by}. Pass gt_dir= if it has another name."
    )


def _read_query_file(path: Path) -> tuple[str, np.ndarray]:
    """Read a ``*_query.txt`` file: one line ``<image> x1 y1 x2 y2``."""
    lines = read_lines(path)
    expected = "one line '<image name> x1 y1 x2 y2'"
    if len(lines) != 1:
        raise DatasetFormatError(
            f"{path}: expected {expected}, got {len(lines)} non-blank lines."
        )

    line_number, line = lines[0]
    parts = line.split()
    try:
        box = np.array([float(value) for value in parts[1:]], dtype=np.float64)
    except ValueError:
        box = np.empty(0)
    if len(parts) != 5 or box.shape != (4,):
        raise DatasetFormatError(format_error(path, line_number, expected, line))
    return parts[0].removeprefix(_OXFORD_QUERY_PREFIX), box


def _read_name_list(path: Path, layout: _BuildingsLayout) -> list[str]:
    """Read a ``_good`` / ``_ok`` / ``_junk`` file: one image name a line."""
    provided_by = f"{layout.gt_archive}, next to the '*_query.txt' files"
    require_file(path, layout.title, provided_by)
    return [line for _, line in read_lines(path)]


class _BuildingsQuery(NamedTuple):
    """One query of Oxford5k or Paris6k as its ground-truth files give it."""

    name: str
    image: str
    box: np.ndarray
    good: list[str]
    ok: list[str]
    junk: list[str]


def _read_buildings_queries(
    gt_path: Path, layout: _BuildingsLayout
) -> list[_BuildingsQuery]:
    """Read every ``<landmark>_<n>_query.txt`` file and its three image lists."""
    query_files = []
    for path in gt_path.glob("*_query.txt"):
        match = _QUERY_FILE_PATTERN.fullmatch(path.name)
        if match is not None:
            query_files.append((match["landmark"], int(match["number"]), path))
    if not query_files:
        raise DatasetNotFoundError(
            f"{layout.title}: no '<landmark>_<n>_query.txt' files in '{gt_path}'. They "
            f"are provided by {layout.gt_archive}."
        )

    # Sorted by landmark, then by number, so all_souls_2 comes before all_souls_10.
    queries = []
    for landmark, number, path in sorted(query_files):
        name = f"{landmark}_{number}"
        image, box = _read_query_file(path)
        good, ok, junk = (
            _read_name_list(gt_path / f"{name}_{kind}.txt", layout)
            for kind in ("good", "ok", "junk")
        )
        queries.append(_BuildingsQuery(name, image, box, good, ok, junk))
    return queries


def _load_buildings(
    layout: _BuildingsLayout,
    root: str | os.PathLike,
    gt_dir: str | os.PathLike | None,
    image_dir: str | os.PathLike,
    missing: str,
) -> RetrievalDataset:
    """Read Oxford5k or Paris6k as :func:`load_oxford5k` describes."""
    root_path = resolve_root(root, layout.title)
    images_path = root_path / image_dir
    images_provided_by = f"{layout.image_archives}, extracted into '{images_path}'"
    require_dir(images_path, layout.title, images_provided_by)
    gt_path = _find_gt_dir(root_path, gt_dir, layout)

    index = index_images_by_stem(images_path, (".jpg",))
    if not index:
        raise DatasetNotFoundError(
            f"{layout.title}: no .jpg images under '{images_path}'. They are provided "
            f"by {images_provided_by}."
        )
    database_names = sorted(index)
    position = {name: i for i, name in enumerate(database_names)}

    queries = _read_buildings_queries(gt_path, layout)
    referenced = [query.image for query in queries]
    for query in queries:
        referenced.extend(query.good + query.ok + query.junk)
    report_missing(
        [name for name in dict.fromkeys(referenced) if name not in index],
        missing=missing,
        dataset=layout.title,
        listed_in=f"listed in '{gt_path}'",
        provided_by=layout.image_archives,
    )

    # With missing="skip", queries whose image is missing are dropped, and so are
    # missing names in the lists.
    queries = [query for query in queries if query.image in index]
    positives = [
        _as_indices([position[n] for n in query.good + query.ok if n in position])
        for query in queries
    ]
    junk = [
        _as_indices([position[n] for n in query.junk if n in position])
        for query in queries
    ]

    logger.info(
        "Read %s from %s: %d database images, %d queries",
        layout.title,
        root_path,
        len(database_names),
        len(queries),
    )
    return RetrievalDataset(
        name=layout.name,
        root=str(root_path),
        database_names=database_names,
        database_paths=[str(index[name]) for name in database_names],
        query_names=[query.name for query in queries],
        query_paths=[str(index[query.image]) for query in queries],
        query_indices=np.array([position[q.image] for q in queries], dtype=np.intp),
        query_boxes=np.array([q.box for q in queries], dtype=np.float64).reshape(-1, 4),
        positives=positives,
        junk=junk,
    )


_BUILDINGS_PARAMETERS = {
    "root": [str, os.PathLike],
    "gt_dir": [str, os.PathLike, None],
    "image_dir": [str, os.PathLike],
    "missing": [StrOptions({"raise", "skip"})],
}


@validate_params(_BUILDINGS_PARAMETERS, prefer_skip_nested_validation=True)
def load_oxford5k(
    root: str | os.PathLike,
    *,
    gt_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike = "jpg",
    missing: str = "raise",
) -> RetrievalDataset:
    """Read the Oxford Buildings (Oxford5k) retrieval benchmark.

    Parameters
    ----------
    root : str or path-like
        Folder that contains the images (``jpg/``, from oxbuild_images-v1.tgz) and
        the ground-truth files (from gt_files_170407.tgz).
    gt_dir : str or path-like, default=None
        Folder of the ``<landmark>_<n>_{query,good,ok,junk}.txt`` files, relative
        to ``root`` or absolute. None tries ``gt_files`` then ``gt_files_170407``.
    image_dir : str or path-like, default="jpg"
        Folder of the images, relative to ``root`` or absolute. Images in its
        subfolders are found too.
    missing : {"raise", "skip"}, default="raise"
        What to do with images that the ground-truth files name but that are not
        on disk. ``"raise"`` raises :class:`DatasetNotFoundError`. ``"skip"``
        warns with :class:`MissingImagesWarning`, drops those names from the
        positives and junk, and drops queries whose image is missing.

    Returns
    -------
    RetrievalDataset
        Database: every ``.jpg`` under ``image_dir``, sorted by file name.
        Queries: the ``*_query.txt`` files sorted by landmark and number, named
        like ``all_souls_1``, with their boxes. Positives are the images of the
        ``_good`` and ``_ok`` lists, junk the images of the ``_junk`` list.
        ``query_indices`` is the database index of each query image.

    Raises
    ------
    DatasetNotFoundError
        If a folder or ground-truth file is not on disk, or with
        ``missing="raise"`` if a listed image is not on disk.
    DatasetFormatError
        If a query file does not contain exactly one line
        ``<image> x1 y1 x2 y2``, or two images under ``image_dir`` have the same
        file name.

    Notes
    -----
    Query files spell the image name with an ``oxc1_`` prefix
    (``oxc1_all_souls_000013``) that the jpg files lack, so the reader removes it.
    Query images are also database images, as in the standard protocol. The box
    is returned for callers that crop the query, and this reader does not apply it.
    """
    return _load_buildings(_OXFORD5K, root, gt_dir, image_dir, missing)


@validate_params(_BUILDINGS_PARAMETERS, prefer_skip_nested_validation=True)
def load_paris6k(
    root: str | os.PathLike,
    *,
    gt_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike = "jpg",
    missing: str = "raise",
) -> RetrievalDataset:
    """Read the Paris Buildings (Paris6k) retrieval benchmark.

    Parameters
    ----------
    root : str or path-like
        Folder that contains the images (``jpg/``, from paris_1-v1.tgz and
        paris_2-v1.tgz) and the ground-truth files (from paris_120310.tgz).
    gt_dir : str or path-like, default=None
        Folder of the ``<landmark>_<n>_{query,good,ok,junk}.txt`` files, relative
        to ``root`` or absolute. None tries ``gt_files`` then ``paris_120310``.
    image_dir : str or path-like, default="jpg"
        Folder of the images, relative to ``root`` or absolute. The archives
        extract to one subfolder per landmark (``paris/defense/...``). Flat and
        nested layouts give the same result because images are found by name.
    missing : {"raise", "skip"}, default="raise"
        What to do with images that the ground-truth files name but that are not
        on disk, as in :func:`load_oxford5k`.

    Returns
    -------
    RetrievalDataset
        Same structure as :func:`load_oxford5k`, with queries named like
        ``defense_1``.

    Raises
    ------
    DatasetNotFoundError
        If a folder or ground-truth file is not on disk, or with
        ``missing="raise"`` if a listed image is not on disk.
    DatasetFormatError
        If a query file does not contain exactly one line
        ``<image> x1 y1 x2 y2``, or two images under ``image_dir`` have the same
        file name.

    Notes
    -----
    This reader lists files without decoding them. Some files of the official
    Paris archives are known not to decode, so the image loader has to cope.
    """
    return _load_buildings(_PARIS6K, root, gt_dir, image_dir, missing)


# ------------------------------------------------------------ revisited Oxford / Paris


def _check_index_list(values: object, n_database: int, where: str) -> np.ndarray:
    """Validate one ``easy`` / ``hard`` / ``junk`` list and return it as indices."""
    array = (
        np.asarray(values) if isinstance(values, list | tuple | np.ndarray) else None
    )
    if array is not None and array.size == 0:
        return np.empty(0, dtype=np.intp)
    if array is None or array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DatasetFormatError(
            f"{where}: expected a list of integer database indices, got "
            f"{type(values).__name__} {str(values)[:80]}."
        )
    if array.min() < 0 or array.max() >= n_database:
        bad = array[(array < 0) | (array >= n_database)][0]
        raise DatasetFormatError(
            f"{where}: database index {bad} is out of range for the {n_database} "
            "images of 'imlist'."
        )
    return np.unique(array).astype(np.intp, copy=False)


def _check_box(values: object, where: str) -> np.ndarray:
    """Validate one ``bbx`` entry and return it as float64 ``(x1, y1, x2, y2)``."""
    try:
        box = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        box = np.empty(0)
    if box.shape != (4,):
        raise DatasetFormatError(
            f"{where}: expected 4 numbers x1, y1, x2, y2, got {values!r}."
        )
    return box


class _RevisitedGroundTruth(NamedTuple):
    """Checked content of a ``gnd_*.pkl`` file, indices referring to ``imlist``."""

    imlist: list[str]
    qimlist: list[str]
    boxes: list[np.ndarray]
    easy: list[np.ndarray]
    hard: list[np.ndarray]
    junk: list[np.ndarray]


def _read_revisited_ground_truth(path: Path) -> _RevisitedGroundTruth:
    """Unpickle a ``gnd_*.pkl`` file and check its structure and indices."""
    # Unpickling runs code named in the file, so only trusted files may be read.
    # The public loaders' docstrings warn about it.
    with open(path, "rb") as file:
        content = pickle.load(file)  # noqa: S301

    keys = ("imlist", "qimlist", "gnd")
    if not isinstance(content, dict) or any(key not in content for key in keys):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise DatasetFormatError(
            f"{path}: expected a dict with keys {keys}, got {found}."
        )

    imlist, qimlist, gnd = (content[key] for key in keys)
    for key, names in (("imlist", imlist), ("qimlist", qimlist)):
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DatasetFormatError(f"{path}: '{key}' must be a list of image names.")
    if not isinstance(gnd, list) or len(gnd) != len(qimlist):
        size = len(gnd) if isinstance(gnd, list) else type(gnd).__name__
        raise DatasetFormatError(
            f"{path}: 'gnd' must be a list with one entry per query "
            f"({len(qimlist)}), got {size}."
        )

    ground_truth = _RevisitedGroundTruth(imlist, qimlist, [], [], [], [])
    fields = ("bbx", "easy", "hard", "junk")
    for q, entry in enumerate(gnd):
        if not isinstance(entry, dict) or any(key not in entry for key in fields):
            raise DatasetFormatError(
                f"{path}: gnd[{q}] must be a dict with keys {fields}."
            )
        where = f"{path}, gnd[{q}]"
        ground_truth.boxes.append(_check_box(entry["bbx"], f"{where}['bbx']"))
        for key, target in zip(
            ("easy", "hard", "junk"),
            (ground_truth.easy, ground_truth.hard, ground_truth.junk),
            strict=True,
        ):
            target.append(
                _check_index_list(entry[key], len(imlist), f"{where}['{key}']")
            )
    return ground_truth


def _renumber(labels: list[np.ndarray], new_index: np.ndarray) -> list[np.ndarray]:
    """Map old database indices to new ones, dropping those mapped to -1."""
    renumbered = [new_index[labels_q] for labels_q in labels]
    return [labels_q[labels_q >= 0] for labels_q in renumbered]


def _load_revisited(
    name: str,
    title: str,
    image_archives: str,
    root: str | os.PathLike,
    protocol: str,
    image_dir: str | os.PathLike,
    missing: str,
) -> RevisitedRetrievalDataset:
    """Read rOxford5k or rParis6k as :func:`load_roxford5k` describes."""
    root_path = resolve_root(root, title)
    gnd_path = require_file(
        root_path / f"gnd_{name}.pkl",
        title,
        f"the revisited ground truth gnd_{name}.pkl of the revisitop project "
        "(http://cmp.felk.cvut.cz/revisitop/), saved into the root folder",
    )
    images_path = root_path / image_dir
    images_provided_by = f"{image_archives}, extracted into '{images_path}'"
    require_dir(images_path, title, images_provided_by)

    gt = _read_revisited_ground_truth(gnd_path)
    index = index_images_by_stem(images_path, (".jpg",))
    report_missing(
        [n for n in dict.fromkeys(gt.imlist + gt.qimlist) if n not in index],
        missing=missing,
        dataset=title,
        listed_in=f"listed in '{gnd_path}'",
        provided_by=image_archives,
    )

    # Old database index -> new one, -1 for images dropped with missing="skip".
    on_disk = [i for i, image in enumerate(gt.imlist) if image in index]
    new_index = np.full(len(gt.imlist), -1, dtype=np.intp)
    new_index[on_disk] = np.arange(len(on_disk))
    database_names = [gt.imlist[i] for i in on_disk]
    position = {image: i for i, image in enumerate(database_names)}
    queries = [q for q, image in enumerate(gt.qimlist) if image in index]
    query_names = [gt.qimlist[q] for q in queries]
    gnd_easy, gnd_hard, gnd_junk = (
        _renumber([labels[q] for q in queries], new_index)
        for labels in (gt.easy, gt.hard, gt.junk)
    )

    positives, junk = _protocol_labels(gnd_easy, gnd_hard, gnd_junk, protocol)
    logger.info(
        "Read %s from %s: %d database images, %d queries",
        title,
        root_path,
        len(database_names),
        len(query_names),
    )
    return RevisitedRetrievalDataset(
        name=name,
        root=str(root_path),
        database_names=database_names,
        database_paths=[str(index[image]) for image in database_names],
        query_names=query_names,
        query_paths=[str(index[image]) for image in query_names],
        query_indices=np.array([position.get(q, -1) for q in query_names], np.intp),
        query_boxes=np.array([gt.boxes[q] for q in queries]).reshape(-1, 4),
        positives=positives,
        junk=junk,
        protocol=protocol,
        gnd_easy=gnd_easy,
        gnd_hard=gnd_hard,
        gnd_junk=gnd_junk,
    )


_REVISITED_PARAMETERS = {
    "root": [str, os.PathLike],
    "protocol": [StrOptions(set(_REVISITED_PROTOCOLS))],
    "image_dir": [str, os.PathLike],
    "missing": [StrOptions({"raise", "skip"})],
}


@validate_params(_REVISITED_PARAMETERS, prefer_skip_nested_validation=True)
def load_roxford5k(
    root: str | os.PathLike,
    *,
    protocol: str = "medium",
    image_dir: str | os.PathLike = "jpg",
    missing: str = "raise",
) -> RevisitedRetrievalDataset:
    """Read the revisited Oxford benchmark (rOxford5k).

    .. warning::
       The ground truth is a Python pickle, and unpickling a file can run
       arbitrary code. Read only a ``gnd_roxford5k.pkl`` from a source you trust.

    Parameters
    ----------
    root : str or path-like
        Folder that contains ``gnd_roxford5k.pkl`` (from the revisitop project) and
        the Oxford5k images (``jpg/``, from oxbuild_images-v1.tgz).
    protocol : {"easy", "medium", "hard"}, default="medium"
        Evaluation protocol that ``positives`` and ``junk`` follow, as
        described in :class:`RevisitedRetrievalDataset`.
    image_dir : str or path-like, default="jpg"
        Folder of the images, relative to ``root`` or absolute. Images in its
        subfolders are found too.
    missing : {"raise", "skip"}, default="raise"
        What to do with images of ``imlist`` or ``qimlist`` that are not on
        disk. ``"raise"`` raises :class:`DatasetNotFoundError`. ``"skip"`` warns
        with :class:`MissingImagesWarning`, drops the database images (the
        remaining indices are renumbered) and the queries whose image is missing.

    Returns
    -------
    RevisitedRetrievalDataset
        Database in the order of ``imlist``, queries in the order of
        ``qimlist`` (named by their image) with their ``bbx`` boxes, and the
        easy / hard / junk lists of each query.

    Raises
    ------
    DatasetNotFoundError
        If the pickle or the image folder is not on disk, or with
        ``missing="raise"`` if a listed image is not on disk.
    DatasetFormatError
        If the pickle lacks a key, a query's box is not 4 numbers, or an index
        is out of range.
    """
    return _load_revisited(
        "roxford5k",
        "rOxford5k",
        "oxbuild_images-v1.tgz (older copies: oxbuild_images.tgz)",
        root,
        protocol,
        image_dir,
        missing,
    )


@validate_params(_REVISITED_PARAMETERS, prefer_skip_nested_validation=True)
def load_rparis6k(
    root: str | os.PathLike,
    *,
    protocol: str = "medium",
    image_dir: str | os.PathLike = "jpg",
    missing: str = "raise",
) -> RevisitedRetrievalDataset:
    """Read the revisited Paris benchmark (rParis6k).

    .. warning::
       The ground truth is a Python pickle, and unpickling a file can run
       arbitrary code. Read only a ``gnd_rparis6k.pkl`` from a source you trust.

    Parameters
    ----------
    root : str or path-like
        Folder that contains ``gnd_rparis6k.pkl`` (from the revisitop project) and
        the Paris6k images (``jpg/``, from paris_1-v1.tgz and paris_2-v1.tgz,
        flat or in one subfolder per landmark).
    protocol : {"easy", "medium", "hard"}, default="medium"
        Evaluation protocol that ``positives`` and ``junk`` follow.
    image_dir : str or path-like, default="jpg"
        Folder of the images, relative to ``root`` or absolute.
    missing : {"raise", "skip"}, default="raise"
        What to do with listed images that are not on disk, as in
        :func:`load_roxford5k`.

    Returns
    -------
    RevisitedRetrievalDataset
        Same structure as :func:`load_roxford5k`.

    Raises
    ------
    DatasetNotFoundError
        If the pickle or the image folder is not on disk, or with
        ``missing="raise"`` if a listed image is not on disk.
    DatasetFormatError
        If the pickle lacks a key, a query's box is not 4 numbers, or an index
        is out of range.
    """
    return _load_revisited(
        "rparis6k",
        "rParis6k",
        "paris_1-v1.tgz and paris_2-v1.tgz (older copies: paris_1.tgz, paris_2.tgz)",
        root,
        protocol,
        image_dir,
        missing,
    )

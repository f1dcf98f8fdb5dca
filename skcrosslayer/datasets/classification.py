"""Readers for the MIT Indoor-67, CUB-200-2011 and PASCAL VOC 2007 classification sets.

Each reader returns a :class:`ClassificationDataset` with the official train and
test splits: absolute image paths and targets that scikit-learn estimators take
as ``y``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.utils._param_validation import StrOptions, validate_params

from ._common import (
    DatasetFormatError,
    format_error,
    read_lines,
    report_missing,
    require_dir,
    require_file,
    resolve_root,
)

__all__ = [
    "VOC2007_CLASSES",
    "ClassificationDataset",
    "load_cub200",
    "load_mit_indoor67",
    "load_voc2007",
    "voc_binary_targets",
]

logger = logging.getLogger(__name__)

# The 20 PASCAL VOC 2007 classes in the order of the development kit.
VOC2007_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

_MISSING_CONSTRAINT = [StrOptions({"raise", "skip"})]


@dataclass(frozen=True, kw_only=True)
class ClassificationDataset:
    """Image paths and targets of a classification benchmark's train and test splits.

    Attributes
    ----------
    name : str
        Dataset identifier, such as ``"cub200"``.
    root : str
        Absolute path of the folder that was read.
    class_names : list of str
        Class name of each label value, or of each column of a multi-label
        target.
    ids_train, ids_test : list of str
        The dataset's own identifier of each image: the listed relative path
        (MIT Indoor-67), the image id (CUB-200-2011, PASCAL VOC).
    paths_train, paths_test : list of str
        Absolute path of each image.
    y_train, y_test : ndarray
        Integer labels of shape ``(n_images,)`` indexing ``class_names``, or for
        PASCAL VOC a ``(n_images, 20)`` array of ``{1, 0, -1}`` as described in
        :func:`load_voc2007`.
    boxes_train, boxes_test : ndarray of shape (n_images, 4) or None
        Object boxes as ``(x1, y1, x2, y2)`` pixel coordinates in float64
        (CUB-200-2011), else None.
    """

    name: str
    root: str
    class_names: list[str]
    ids_train: list[str]
    paths_train: list[str]
    y_train: np.ndarray
    ids_test: list[str]
    paths_test: list[str]
    y_test: np.ndarray
    boxes_train: np.ndarray | None = None
    boxes_test: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


def _drop_missing(
    paths: list[Path],
    *,
    missing: str,
    dataset: str,
    listed_in: str,
    provided_by: str,
) -> np.ndarray:
    """Report images not on disk and return the boolean mask of those on disk."""
    on_disk = np.array([path.is_file() for path in paths], dtype=bool)
    report_missing(
        [str(path) for path, found in zip(paths, on_disk, strict=True) if not found],
        missing=missing,
        dataset=dataset,
        listed_in=listed_in,
        provided_by=provided_by,
    )
    return on_disk


def _log_read(dataset: ClassificationDataset) -> ClassificationDataset:
    logger.info(
        "Read %s from %s: %d train and %d test images, %d classes",
        dataset.name,
        dataset.root,
        len(dataset.paths_train),
        len(dataset.paths_test),
        dataset.n_classes,
    )
    return dataset


# ---------------------------------------------------------------------- MIT Indoor-67

_MIT67 = "MIT Indoor-67"
_MIT67_IMAGES = "indoorCVPR_09.tar"
_MIT67_LISTS = "the MIT Indoor-67 dataset page (a separate download from the images)"


def _read_mit67_list(path: Path) -> list[tuple[str, str]]:
    """Read TrainImages.txt or TestImages.txt as ``(relative path, class)`` pairs."""
    entries = []
    for line_number, line in read_lines(path):
        class_name, _, file_name = line.partition("/")
        if not class_name or not file_name:
            raise DatasetFormatError(
                format_error(path, line_number, "'<class>/<file>'", line)
            )
        entries.append((line, class_name))
    return entries


@validate_params(
    {"root": [str, os.PathLike], "missing": _MISSING_CONSTRAINT},
    prefer_skip_nested_validation=True,
)
def load_mit_indoor67(
    root: str | os.PathLike, *, missing: str = "raise"
) -> ClassificationDataset:
    """Read the MIT Indoor-67 scene classification set with its official split.

    Parameters
    ----------
    root : str or path-like
        Folder that contains ``Images/<class>/<file>`` (from indoorCVPR_09.tar,
        which may also extract to ``indoorCVPR_09/Images``) and the official
        split files ``TrainImages.txt`` and ``TestImages.txt``.
    missing : {"raise", "skip"}, default="raise"
        What to do with listed images that are not on disk. ``"raise"`` raises
        :class:`DatasetNotFoundError`. ``"skip"`` warns with
        :class:`MissingImagesWarning` and drops them.

    Returns
    -------
    ClassificationDataset
        Train and test images in the order of the split files, ``ids_*`` being
        the listed paths (``kitchen/int474.jpg``). ``class_names`` are the
        classes named in either file, sorted, and ``y_*`` index them.

    Raises
    ------
    DatasetNotFoundError
        If a split file or the image folder is not on disk, or with
        ``missing="raise"`` if a listed image is not on disk.
    DatasetFormatError
        If a split file line is not ``<class>/<file>``.
    """
    root_path = resolve_root(root, _MIT67)
    images_path = root_path / "Images"
    if not images_path.is_dir() and (root_path / "indoorCVPR_09" / "Images").is_dir():
        images_path = root_path / "indoorCVPR_09" / "Images"
    require_dir(images_path, _MIT67, f"{_MIT67_IMAGES}, extracted into '{root_path}'")
    splits = {}
    for split, file_name in (("train", "TrainImages.txt"), ("test", "TestImages.txt")):
        list_path = require_file(root_path / file_name, _MIT67, _MIT67_LISTS)
        splits[split] = (list_path, _read_mit67_list(list_path))

    class_names = sorted({c for _, entries in splits.values() for _, c in entries})
    label_of = {class_name: label for label, class_name in enumerate(class_names)}
    fields = {}
    for split, (list_path, entries) in splits.items():
        paths = [images_path / relative for relative, _ in entries]
        on_disk = _drop_missing(
            paths,
            missing=missing,
            dataset=_MIT67,
            listed_in=f"listed in '{list_path}'",
            provided_by=_MIT67_IMAGES,
        )
        on_disk_entries = [
            entry for entry, found in zip(entries, on_disk, strict=True) if found
        ]
        fields[f"ids_{split}"] = [relative for relative, _ in on_disk_entries]
        fields[f"paths_{split}"] = [
            str(images_path / relative) for relative, _ in on_disk_entries
        ]
        fields[f"y_{split}"] = np.array(
            [label_of[c] for _, c in on_disk_entries], dtype=np.intp
        )

    return _log_read(
        ClassificationDataset(
            name="mit_indoor67",
            root=str(root_path),
            class_names=class_names,
            **fields,
        )
    )


# ----------------------------------------------------------------------- CUB-200-2011

_CUB = "CUB-200-2011"
_CUB_ARCHIVE = "CUB_200_2011.tgz"


def _read_id_table(
    path: Path, n_values: int, convert: Callable[[list[str]], object], expected: str
) -> dict[int, object]:
    """Read a CUB file of lines ``<id> <value> ...`` into an id -> value dict.

    The last value takes the rest of the line, so image paths and class names
    may contain spaces. ``convert`` raises ValueError on a bad value.
    """
    require_file(path, _CUB, _CUB_ARCHIVE)
    table: dict[int, object] = {}
    for line_number, line in read_lines(path):
        parts = line.split(maxsplit=n_values)
        try:
            if len(parts) != n_values + 1:
                raise ValueError(line)
            key = int(parts[0])
            value = convert(parts[1:])
        except ValueError:
            raise DatasetFormatError(
                format_error(path, line_number, expected, line)
            ) from None
        if key in table:
            raise DatasetFormatError(
                f"{path}, line {line_number}: id {key} appears a second time."
            )
        table[key] = value
    return table


def _parse_is_train(values: list[str]) -> bool:
    if values[0] not in ("0", "1"):
        raise ValueError(values[0])
    return values[0] == "1"


def _parse_xywh_box(values: list[str]) -> tuple[float, float, float, float]:
    """Convert CUB's ``x y width height`` to ``(x1, y1, x2, y2)``."""
    x, y, width, height = (float(value) for value in values)
    if width < 0 or height < 0:
        raise ValueError(values)
    return x, y, x + width, y + height


def _require_ids(table: dict[int, object], image_ids: list[int], path: Path) -> None:
    """Raise if ``table`` lacks an image id of images.txt."""
    for image_id in image_ids:
        if image_id not in table:
            raise DatasetFormatError(
                f"{path}: no line for image id {image_id}, which images.txt lists."
            )


class _CubAnnotations(NamedTuple):
    """Checked content of the CUB-200-2011 text files, keyed by image id."""

    relative_paths: dict[int, str]
    class_names: list[str]
    labels: dict[int, int]
    is_train: dict[int, bool]
    boxes: dict[int, tuple[float, float, float, float]]


def _read_cub_annotations(base: Path) -> _CubAnnotations:
    """Read the five CUB-200-2011 text files and check that they agree."""
    files = {
        name: base / f"{name}.txt"
        for name in (
            "images",
            "classes",
            "image_class_labels",
            "train_test_split",
            "bounding_boxes",
        )
    }
    relative_paths = _read_id_table(
        files["images"], 1, lambda v: v[0], "'<image id> <path>'"
    )
    class_table = _read_id_table(
        files["classes"], 1, lambda v: v[0], "'<class id> <name>'"
    )
    class_ids = _read_id_table(
        files["image_class_labels"], 1, lambda v: int(v[0]), "'<image id> <class id>'"
    )
    is_train = _read_id_table(
        files["train_test_split"], 1, _parse_is_train, "'<image id> <0 or 1>'"
    )
    boxes = _read_id_table(
        files["bounding_boxes"], 4, _parse_xywh_box, "'<image id> <x> <y> <w> <h>'"
    )

    image_ids = list(relative_paths)
    for table, name in (
        (class_ids, "image_class_labels"),
        (is_train, "train_test_split"),
        (boxes, "bounding_boxes"),
    ):
        _require_ids(table, image_ids, files[name])

    # Labels are 0-based ranks of the class ids, which run from 1 in the archive.
    sorted_class_ids = sorted(class_table)
    label_of = {class_id: label for label, class_id in enumerate(sorted_class_ids)}
    for image_id in image_ids:
        if class_ids[image_id] not in label_of:
            raise DatasetFormatError(
                f"{files['image_class_labels']}: image id {image_id} has class id "
                f"{class_ids[image_id]}, which {files['classes']} does not list."
            )

    return _CubAnnotations(
        relative_paths=relative_paths,
        class_names=[class_table[class_id] for class_id in sorted_class_ids],
        labels={i: label_of[class_ids[i]] for i in image_ids},
        is_train=is_train,
        boxes=boxes,
    )


@validate_params(
    {"root": [str, os.PathLike], "missing": _MISSING_CONSTRAINT},
    prefer_skip_nested_validation=True,
)
def load_cub200(
    root: str | os.PathLike, *, missing: str = "raise"
) -> ClassificationDataset:
    """Read the CUB-200-2011 bird species set with its official split and boxes.

    Parameters
    ----------
    root : str or path-like
        The ``CUB_200_2011`` folder extracted from CUB_200_2011.tgz, or a folder
        that contains it. It must contain ``images/``, ``images.txt``,
        ``image_class_labels.txt``, ``train_test_split.txt``,
        ``bounding_boxes.txt`` and ``classes.txt``.
    missing : {"raise", "skip"}, default="raise"
        What to do with listed images that are not on disk. ``"raise"`` raises
        :class:`DatasetNotFoundError`. ``"skip"`` warns with
        :class:`MissingImagesWarning` and drops them.

    Returns
    -------
    ClassificationDataset
        Train and test images in the order of ``images.txt``, ``ids_*`` being
        the image ids. ``class_names`` are the names of ``classes.txt``
        (``001.Black_footed_Albatross``) sorted by class id, and ``y_*`` index
        them (0-based). ``boxes_*`` contain each image's bird box as
        ``(x1, y1, x2, y2)`` = ``(x, y, x + width, y + height)``.

    Raises
    ------
    DatasetNotFoundError
        If a listed file or the image folder is not on disk, or with
        ``missing="raise"`` if a listed image is not on disk.
    DatasetFormatError
        If a line is malformed, an id appears twice, an image id of
        ``images.txt`` has no label, split flag or box, or a label names a class
        that ``classes.txt`` lacks.

    Notes
    -----
    The standard CUB-200-2011 protocol crops each image to its box. The boxes are
    returned, not applied: the image-loading code crops them, for instance with
    ``PIL.Image.crop(tuple(box))``, which takes the same ``(x1, y1, x2, y2)``
    order.
    """
    root_path = resolve_root(root, _CUB)
    base = root_path / "CUB_200_2011"
    if not base.is_dir():
        base = root_path
    images_path = require_dir(base / "images", _CUB, _CUB_ARCHIVE)

    annotations = _read_cub_annotations(base)
    image_ids = list(annotations.relative_paths)
    paths = [images_path / annotations.relative_paths[i] for i in image_ids]
    on_disk = _drop_missing(
        paths,
        missing=missing,
        dataset=_CUB,
        listed_in=f"listed in '{base / 'images.txt'}'",
        provided_by=_CUB_ARCHIVE,
    )
    fields = {}
    for split, flag in (("train", True), ("test", False)):
        selected = [
            (image_id, path)
            for image_id, path, found in zip(image_ids, paths, on_disk, strict=True)
            if found and annotations.is_train[image_id] == flag
        ]
        fields[f"ids_{split}"] = [str(image_id) for image_id, _ in selected]
        fields[f"paths_{split}"] = [str(path) for _, path in selected]
        fields[f"y_{split}"] = np.array(
            [annotations.labels[image_id] for image_id, _ in selected], dtype=np.intp
        )
        fields[f"boxes_{split}"] = np.array(
            [annotations.boxes[image_id] for image_id, _ in selected], dtype=np.float64
        ).reshape(-1, 4)

    return _log_read(
        ClassificationDataset(
            name="cub200",
            root=str(base),
            class_names=annotations.class_names,
            **fields,
        )
    )


# ---------------------------------------------------------------------- PASCAL VOC 2007

_VOC = "PASCAL VOC 2007"
_VOC_ARCHIVES = {
    "trainval": "VOCtrainval_06-Nov-2007.tar",
    "test": "VOCtest_06-Nov-2007.tar",
}


def _find_voc_base(root: Path) -> Path:
    """Return ``root/VOCdevkit/VOC2007`` or ``root/VOC2007`` if a folder, else root."""
    for candidate in (root / "VOCdevkit" / "VOC2007", root / "VOC2007"):
        if candidate.is_dir():
            return candidate
    return root


def _read_voc_split(base: Path, split: str) -> tuple[list[str], np.ndarray]:
    """Read the image ids of a split and their ``{1, 0, -1}`` label matrix."""
    main = base / "ImageSets" / "Main"
    provided_by = f"{_VOC_ARCHIVES[split]}, which extracts to 'VOCdevkit/VOC2007'"
    split_path = require_file(main / f"{split}.txt", _VOC, provided_by)
    ids = []
    for line_number, line in read_lines(split_path):
        if len(line.split()) != 1:
            raise DatasetFormatError(
                format_error(split_path, line_number, "one image id", line)
            )
        ids.append(line)
    row_of = {image_id: row for row, image_id in enumerate(ids)}

    Y = np.zeros((len(ids), len(VOC2007_CLASSES)), dtype=np.intp)
    for column, class_name in enumerate(VOC2007_CLASSES):
        class_path = require_file(main / f"{class_name}_{split}.txt", _VOC, provided_by)
        seen = np.zeros(len(ids), dtype=bool)
        for line_number, line in read_lines(class_path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("1", "0", "-1"):
                raise DatasetFormatError(
                    format_error(
                        class_path, line_number, "'<image id> <1, 0 or -1>'", line
                    )
                )
            if parts[0] not in row_of:
                raise DatasetFormatError(
                    f"{class_path}, line {line_number}: image id '{parts[0]}' is not "
                    f"in {split_path}."
                )
            Y[row_of[parts[0]], column] = int(parts[1])
            seen[row_of[parts[0]]] = True
        if not seen.all():
            raise DatasetFormatError(
                f"{class_path}: no line for image id '{ids[np.argmin(seen)]}' of "
                f"{split_path}. Each class file must list every image of the split."
            )
    return ids, Y


@validate_params(
    {"root": [str, os.PathLike], "missing": _MISSING_CONSTRAINT},
    prefer_skip_nested_validation=True,
)
def load_voc2007(
    root: str | os.PathLike, *, missing: str = "raise"
) -> ClassificationDataset:
    """Read the PASCAL VOC 2007 classification task: trainval and test splits.

    Parameters
    ----------
    root : str or path-like
        Folder that contains ``VOCdevkit/VOC2007`` (VOCtrainval_06-Nov-2007.tar
        and VOCtest_06-Nov-2007.tar both extract there), or ``VOC2007`` itself.
        It must contain ``JPEGImages/`` and ``ImageSets/Main/`` with
        ``{trainval,test}.txt`` and ``<class>_{trainval,test}.txt``.
    missing : {"raise", "skip"}, default="raise"
        What to do with listed images that are not on disk. ``"raise"`` raises
        :class:`DatasetNotFoundError`. ``"skip"`` warns with
        :class:`MissingImagesWarning` and drops them.

    Returns
    -------
    ClassificationDataset
        ``*_train`` is the trainval split and ``*_test`` the test split, in the
        order of ``trainval.txt`` and ``test.txt``. ``ids_*`` are the image ids
        (``000005``). ``class_names`` is :data:`VOC2007_CLASSES`. ``y_*`` has
        shape ``(n_images, 20)`` with the development kit's values: 1 when the
        image contains an object of the class, -1 when it contains none, and 0 when
        all its objects of the class are marked difficult. The VOC 2007 average
        precision ignores the 0 entries. :func:`voc_binary_targets` turns
        ``y_train`` into a ``{0, 1}`` target for training.

    Raises
    ------
    DatasetNotFoundError
        If a list file or the image folder is not on disk, or with
        ``missing="raise"`` if a listed image is not on disk.
    DatasetFormatError
        If a list line is malformed, or a class file does not list exactly the
        images of its split.
    """
    root_path = resolve_root(root, _VOC)
    base = _find_voc_base(root_path)
    images_path = require_dir(
        base / "JPEGImages",
        _VOC,
        f"{_VOC_ARCHIVES['trainval']} and {_VOC_ARCHIVES['test']}, which extract to "
        "'VOCdevkit/VOC2007'",
    )

    fields = {}
    for split, name in (("trainval", "train"), ("test", "test")):
        ids, Y = _read_voc_split(base, split)
        paths = [images_path / f"{image_id}.jpg" for image_id in ids]
        on_disk = _drop_missing(
            paths,
            missing=missing,
            dataset=_VOC,
            listed_in=f"listed in '{base / 'ImageSets' / 'Main' / f'{split}.txt'}'",
            provided_by=_VOC_ARCHIVES[split],
        )
        fields[f"ids_{name}"] = [
            i for i, found in zip(ids, on_disk, strict=True) if found
        ]
        fields[f"paths_{name}"] = [
            str(p) for p, f in zip(paths, on_disk, strict=True) if f
        ]
        fields[f"y_{name}"] = Y[on_disk]

    return _log_read(
        ClassificationDataset(
            name="voc2007",
            root=str(base),
            class_names=list(VOC2007_CLASSES),
            **fields,
        )
    )


@validate_params(
    {"Y": ["array-like"], "difficult": [StrOptions({"positive", "negative"})]},
    prefer_skip_nested_validation=True,
)
def voc_binary_targets(Y: np.ndarray, *, difficult: str = "positive") -> np.ndarray:
    """Convert a VOC ``{1, 0, -1}`` label matrix into a ``{0, 1}`` training target.

    Parameters
    ----------
    Y : array-like of shape (n_images, n_classes)
        Labels as returned by :func:`load_voc2007`: 1 positive, -1 negative,
        0 holding only difficult objects of the class.
    difficult : {"positive", "negative"}, default="positive"
        Target of the 0 entries. The default makes them positives because the
        image does contain an object of the class. The VOC 2007 average precision
        ignores those entries, so this choice affects training only.

    Returns
    -------
    ndarray of shape (n_images, n_classes), dtype intp
        1 for positives, 0 for negatives: a multi-label indicator matrix that
        scikit-learn's multi-label estimators take as ``y``.

    Raises
    ------
    ValueError
        If ``Y`` is not 2-D or contains a value outside ``{1, 0, -1}``.

    Examples
    --------
    >>> voc_binary_targets([[1, 0, -1]])
    array([[1, 1, 0]])
    >>> voc_binary_targets([[1, 0, -1]], difficult="negative")
    array([[1, 0, 0]])
    """
    labels = np.asarray(Y)
    if labels.ndim != 2 or not np.isin(labels, (-1, 0, 1)).all():
        found = np.unique(labels)[:10].tolist() if labels.size else []
        raise ValueError(
            "Invalid Y: expected a 2-D array of VOC labels in {1, 0, -1}, got shape "
            f"{labels.shape} with values {found}. Pass y_train or y_test of "
            "load_voc2007()."
        )

    positive = labels == 1
    if difficult == "positive":
        positive |= labels == 0
    return positive.astype(np.intp)

"""Readers for the benchmark datasets, from local copies in their official layouts.

Nothing is downloaded: each reader takes the folder into which the official
archives were extracted and returns a plain dataclass of absolute image paths
and targets. Retrieval readers return :class:`RetrievalDataset` (database,
queries, positives and junk per query). Classification readers return
:class:`ClassificationDataset` (train and test paths with labels).

A file or folder that is not on disk raises :class:`DatasetNotFoundError`,
naming it and the official archive that provides it. Images that the dataset's
files list but that are not on disk raise the same error, or with
``missing="skip"`` are dropped with a :class:`MissingImagesWarning`.
"""

from ._common import (
    IMAGE_EXTENSIONS,
    DatasetFormatError,
    DatasetNotFoundError,
    MissingImagesWarning,
)
from .classification import (
    VOC2007_CLASSES,
    ClassificationDataset,
    load_cub200,
    load_mit_indoor67,
    load_voc2007,
    voc_binary_targets,
)
from .folders import load_holidays, load_image_groups, load_ukbench
from .retrieval import (
    RetrievalDataset,
    RevisitedRetrievalDataset,
    load_oxford5k,
    load_paris6k,
    load_roxford5k,
    load_rparis6k,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VOC2007_CLASSES",
    "ClassificationDataset",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "MissingImagesWarning",
    "RetrievalDataset",
    "RevisitedRetrievalDataset",
    "load_cub200",
    "load_holidays",
    "load_image_groups",
    "load_mit_indoor67",
    "load_oxford5k",
    "load_paris6k",
    "load_roxford5k",
    "load_rparis6k",
    "load_ukbench",
    "load_voc2007",
    "voc_binary_targets",
]

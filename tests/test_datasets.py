"""Tests of the dataset readers on small trees written in the official layouts.

Only the Holidays fixture contains real 8x8 JPEG files, to check that the returned
paths open as images. The other fixtures write empty image files, because the
readers list files without decoding them.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.utils._param_validation import InvalidParameterError

from skcrosslayer.datasets import (
    VOC2007_CLASSES,
    ClassificationDataset,
    DatasetFormatError,
    DatasetNotFoundError,
    MissingImagesWarning,
    RetrievalDataset,
    RevisitedRetrievalDataset,
    load_cub200,
    load_holidays,
    load_image_groups,
    load_mit_indoor67,
    load_oxford5k,
    load_paris6k,
    load_roxford5k,
    load_rparis6k,
    load_ukbench,
    load_voc2007,
    voc_binary_targets,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _write_jpeg(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 255 - value, 0)).save(path, format="JPEG")
    return path


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _as_lists(arrays: list[np.ndarray]) -> list[list[int]]:
    return [array.tolist() for array in arrays]


def _group_reference(
    groups: np.ndarray, queries: np.ndarray, include_query: bool
) -> tuple[list[list[int]], list[list[int]]]:
    """Positives and junk of group-defined datasets by a plain double loop."""
    positives, junk = [], []
    for q in queries:
        same = []
        for i in range(len(groups)):
            if groups[i] == groups[q] and (include_query or i != q):
                same.append(i)
        positives.append(same)
        junk.append([] if include_query else [int(q)])
    return positives, junk


# ------------------------------------------------------------------------ Holidays

HOLIDAYS_NAMES = ["100000", "100001", "100002", "100100", "100200", "100201"]


@pytest.fixture
def holidays_root(tmp_path: Path) -> Path:
    root = tmp_path / "holidays"
    # Written out of order, so that the result's order comes from the reader.
    for value, name in enumerate(reversed(HOLIDAYS_NAMES)):
        _write_jpeg(root / f"{name}.jpg", 40 * value)
    _write_text(root / "README.txt", "not an image")
    return root


def test_holidays_groups_and_queries(holidays_root: Path) -> None:
    dataset = load_holidays(holidays_root)

    assert isinstance(dataset, RetrievalDataset)
    assert dataset.name == "holidays"
    assert dataset.root == str(holidays_root)
    assert dataset.database_names == HOLIDAYS_NAMES
    assert dataset.database_paths == [
        str(holidays_root / f"{name}.jpg") for name in HOLIDAYS_NAMES
    ]
    assert dataset.groups.tolist() == [1000, 1000, 1000, 1001, 1002, 1002]
    assert dataset.group_names is None
    assert dataset.query_indices.tolist() == [0, 3, 4]
    assert dataset.query_names == ["100000", "100100", "100200"]
    assert dataset.query_paths == [dataset.database_paths[i] for i in (0, 3, 4)]
    assert dataset.query_boxes is None
    assert _as_lists(dataset.positives) == [[1, 2], [], [5]]
    assert _as_lists(dataset.junk) == [[0], [3], [4]]
    assert dataset.n_database == 6
    assert dataset.n_queries == 3


def test_holidays_paths_open_as_images(holidays_root: Path) -> None:
    dataset = load_holidays(holidays_root)

    for path in dataset.database_paths:
        with Image.open(path) as image:
            assert image.size == (8, 8)


def test_holidays_jpg_subfolder(holidays_root: Path, tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    holidays_root.rename(parent / "jpg")

    dataset = load_holidays(parent)

    assert dataset.database_paths[0] == str(parent / "jpg" / "100000.jpg")
    assert dataset.query_indices.tolist() == [0, 3, 4]


def test_holidays_relative_root_gives_absolute_paths(
    holidays_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    dataset = load_holidays("holidays")

    assert dataset.root == str(holidays_root)
    assert all(os.path.isabs(path) for path in dataset.database_paths)


def test_holidays_positives_match_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    numbers = sorted(rng.choice(np.arange(100000, 102000), 60, replace=False))
    for number in numbers:
        _touch(tmp_path / f"{number}.jpg")

    dataset = load_holidays(tmp_path)

    first_of_group = {}
    for i, number in enumerate(numbers):
        first_of_group.setdefault(number // 100, i)
    queries = np.array(sorted(first_of_group.values()))
    positives, junk = _group_reference(dataset.groups, queries, include_query=False)
    assert dataset.query_indices.tolist() == queries.tolist()
    assert _as_lists(dataset.positives) == positives
    assert _as_lists(dataset.junk) == junk


def test_holidays_non_numeric_name_raises(holidays_root: Path) -> None:
    _touch(holidays_root / "holiday_photo.jpg")

    with pytest.raises(DatasetFormatError, match=r"holiday_photo\.jpg.*<number>\.jpg"):
        load_holidays(holidays_root)


def test_holidays_empty_folder_names_archives(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"jpg1\.tar\.gz and jpg2\.tar\.gz"):
        load_holidays(tmp_path)


def test_holidays_root_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="root folder not found: '.*absent'"):
        load_holidays(tmp_path / "absent")


def test_holidays_root_type_rejected() -> None:
    with pytest.raises(
        InvalidParameterError, match="'root' parameter of load_holidays"
    ):
        load_holidays(3)


# ------------------------------------------------------------------------ Oxford5k

OXFORD_IMAGES = [
    "all_souls_000013",
    "all_souls_000026",
    "ashmolean_000000",
    "oxford_000001",
]


@pytest.fixture
def oxford_root(tmp_path: Path) -> Path:
    root = tmp_path / "oxford"
    for name in OXFORD_IMAGES:
        _touch(root / "jpg" / f"{name}.jpg")
    gt = root / "gt_files_170407"
    _write_text(
        gt / "all_souls_2_query.txt", "oxc1_all_souls_000013 136.5 34.1 648.5 955.7\n"
    )
    _write_text(gt / "all_souls_2_good.txt", "all_souls_000013\nall_souls_000026\n")
    _write_text(gt / "all_souls_2_ok.txt", "ashmolean_000000\n")
    _write_text(gt / "all_souls_2_junk.txt", "oxford_000001\n")
    # Query 10 sorts after query 2 by number, though not as a string.
    _write_text(gt / "all_souls_10_query.txt", "oxc1_oxford_000001 1 2 3 4\n")
    _write_text(gt / "all_souls_10_good.txt", "ashmolean_000000\n")
    _write_text(gt / "all_souls_10_ok.txt", "")
    _write_text(gt / "all_souls_10_junk.txt", "")
    return root


def test_oxford_queries_boxes_and_labels(oxford_root: Path) -> None:
    dataset = load_oxford5k(oxford_root)

    assert dataset.name == "oxford5k"
    assert dataset.database_names == OXFORD_IMAGES
    assert dataset.database_paths == [
        str(oxford_root / "jpg" / f"{name}.jpg") for name in OXFORD_IMAGES
    ]
    assert dataset.query_names == ["all_souls_2", "all_souls_10"]
    assert dataset.query_paths == [
        str(oxford_root / "jpg" / "all_souls_000013.jpg"),
        str(oxford_root / "jpg" / "oxford_000001.jpg"),
    ]
    assert dataset.query_indices.tolist() == [0, 3]
    assert dataset.query_boxes.dtype == np.float64
    assert dataset.query_boxes.tolist() == [
        [136.5, 34.1, 648.5, 955.7],
        [1.0, 2.0, 3.0, 4.0],
    ]
    assert _as_lists(dataset.positives) == [[0, 1, 2], [2]]
    assert _as_lists(dataset.junk) == [[3], []]
    assert dataset.groups is None


def test_oxford_gt_dir_parameter(oxford_root: Path) -> None:
    (oxford_root / "gt_files_170407").rename(oxford_root / "lab")

    dataset = load_oxford5k(oxford_root, gt_dir="lab")

    assert dataset.query_names == ["all_souls_2", "all_souls_10"]


def test_oxford_gt_dir_not_found_names_archive(oxford_root: Path) -> None:
    (oxford_root / "gt_files_170407").rename(oxford_root / "lab")

    with pytest.raises(
        DatasetNotFoundError, match=r"tried .*gt_files'.*gt_files_170407'.*170407\.tgz"
    ):
        load_oxford5k(oxford_root)


def test_oxford_image_folder_not_found(oxford_root: Path) -> None:
    (oxford_root / "jpg").rename(oxford_root / "images")

    with pytest.raises(
        DatasetNotFoundError, match=r"folder not found: .*jpg'.*oxbuild_images-v1\.tgz"
    ):
        load_oxford5k(oxford_root)


def test_oxford_junk_file_not_found(oxford_root: Path) -> None:
    (oxford_root / "gt_files_170407" / "all_souls_10_junk.txt").unlink()

    with pytest.raises(
        DatasetNotFoundError,
        match=r"file not found: .*all_souls_10_junk\.txt'.*gt_files_170407\.tgz",
    ):
        load_oxford5k(oxford_root)


def test_oxford_listed_image_missing_raises(oxford_root: Path) -> None:
    (oxford_root / "jpg" / "ashmolean_000000.jpg").unlink()

    with pytest.raises(
        DatasetNotFoundError,
        match=r"1 image listed in .* is not on disk: 'ashmolean_000000'.*'skip'",
    ):
        load_oxford5k(oxford_root)


def test_oxford_listed_image_missing_skipped(oxford_root: Path) -> None:
    (oxford_root / "jpg" / "ashmolean_000000.jpg").unlink()

    with pytest.warns(
        MissingImagesWarning, match="skipped 1 image listed .*ashmolean_000000"
    ):
        dataset = load_oxford5k(oxford_root, missing="skip")

    assert dataset.database_names == [
        "all_souls_000013",
        "all_souls_000026",
        "oxford_000001",
    ]
    assert _as_lists(dataset.positives) == [[0, 1], []]
    assert _as_lists(dataset.junk) == [[2], []]


def test_oxford_missing_query_image_drops_query(oxford_root: Path) -> None:
    (oxford_root / "jpg" / "oxford_000001.jpg").unlink()

    with pytest.warns(MissingImagesWarning, match="oxford_000001"):
        dataset = load_oxford5k(oxford_root, missing="skip")

    assert dataset.query_names == ["all_souls_2"]
    assert dataset.query_boxes.tolist() == [[136.5, 34.1, 648.5, 955.7]]
    assert _as_lists(dataset.junk) == [[]]


def test_oxford_missing_names_first_five(oxford_root: Path) -> None:
    extra = [f"radcliffe_camera_{i:06d}" for i in range(7)]
    _write_text(
        oxford_root / "gt_files_170407" / "all_souls_10_ok.txt", "\n".join(extra)
    )

    with pytest.raises(DatasetNotFoundError, match=r"7 images .*000004', \.\.\."):
        load_oxford5k(oxford_root)


@pytest.mark.parametrize(
    "line",
    ["oxc1_all_souls_000013 1 2 3", "oxc1_all_souls_000013 1 2 3 x", "1 2 3 4 5 6"],
)
def test_oxford_malformed_query_line(oxford_root: Path, line: str) -> None:
    _write_text(oxford_root / "gt_files_170407" / "all_souls_2_query.txt", line)

    with pytest.raises(DatasetFormatError, match=r"line 1: expected one line"):
        load_oxford5k(oxford_root)


def test_oxford_missing_value_rejected(oxford_root: Path) -> None:
    with pytest.raises(InvalidParameterError, match="'missing' parameter"):
        load_oxford5k(oxford_root, missing="ignore")


# ------------------------------------------------------------------------ Paris6k

PARIS_IMAGES = ["paris_defense_000605", "paris_eiffel_000001", "paris_eiffel_000002"]


def _write_paris_ground_truth(root: Path) -> None:
    gt = root / "gt_files"
    _write_text(gt / "defense_1_query.txt", "paris_defense_000605 10.0 20.5 30 40\n")
    _write_text(gt / "defense_1_good.txt", "paris_defense_000605\n")
    _write_text(gt / "defense_1_ok.txt", "paris_eiffel_000002\r\n")
    _write_text(gt / "defense_1_junk.txt", "paris_eiffel_000001\n")


def test_paris_nested_layout(tmp_path: Path) -> None:
    for name in PARIS_IMAGES:
        landmark = name.split("_")[1]
        _touch(tmp_path / "jpg" / "paris" / landmark / f"{name}.jpg")
    _write_paris_ground_truth(tmp_path)

    dataset = load_paris6k(tmp_path)

    assert dataset.name == "paris6k"
    assert dataset.database_names == PARIS_IMAGES
    assert dataset.database_paths[0] == str(
        tmp_path / "jpg" / "paris" / "defense" / "paris_defense_000605.jpg"
    )
    assert dataset.query_names == ["defense_1"]
    assert dataset.query_indices.tolist() == [0]
    assert dataset.query_boxes.tolist() == [[10.0, 20.5, 30.0, 40.0]]
    assert _as_lists(dataset.positives) == [[0, 2]]
    assert _as_lists(dataset.junk) == [[1]]


def test_paris_flat_layout_same_indices(tmp_path: Path) -> None:
    for name in PARIS_IMAGES:
        _touch(tmp_path / "jpg" / f"{name}.jpg")
    _write_paris_ground_truth(tmp_path)

    dataset = load_paris6k(tmp_path)

    assert dataset.database_paths == [
        str(tmp_path / "jpg" / f"{name}.jpg") for name in PARIS_IMAGES
    ]
    assert _as_lists(dataset.positives) == [[0, 2]]
    assert _as_lists(dataset.junk) == [[1]]


def test_paris_duplicate_file_names_raise(tmp_path: Path) -> None:
    _touch(tmp_path / "jpg" / "paris_defense_000605.jpg")
    _touch(tmp_path / "jpg" / "paris" / "defense" / "paris_defense_000605.jpg")
    _write_paris_ground_truth(tmp_path)

    with pytest.raises(
        DatasetFormatError, match="Two images named 'paris_defense_000605'"
    ):
        load_paris6k(tmp_path)


def test_paris_gt_folder_names_archive(tmp_path: Path) -> None:
    _touch(tmp_path / "jpg" / "paris_defense_000605.jpg")

    with pytest.raises(DatasetNotFoundError, match=r"paris_120310\.tgz"):
        load_paris6k(tmp_path)


def test_paris_no_query_files(tmp_path: Path) -> None:
    _touch(tmp_path / "jpg" / "paris_defense_000605.jpg")
    (tmp_path / "gt_files").mkdir()

    with pytest.raises(DatasetNotFoundError, match=r"no '<landmark>_<n>_query\.txt'"):
        load_paris6k(tmp_path)


# ------------------------------------------------------------ revisited Oxford / Paris


def _revisited_ground_truth() -> dict:
    return {
        "imlist": ["a", "b", "c", "d"],
        "qimlist": ["q1", "b"],
        "gnd": [
            {"bbx": [1.5, 2.0, 30.0, 40.0], "easy": [1, 0], "hard": [2], "junk": [3]},
            {"bbx": [0, 0, 5, 5], "easy": [], "hard": [0, 3], "junk": []},
        ],
    }


def _write_revisited(root: Path, name: str, content: object) -> Path:
    for image in ("a", "b", "c", "d", "q1"):
        _touch(root / "jpg" / f"{image}.jpg")
    with open(root / f"gnd_{name}.pkl", "wb") as file:
        pickle.dump(content, file)
    return root


def test_roxford_medium_protocol(tmp_path: Path) -> None:
    root = _write_revisited(tmp_path, "roxford5k", _revisited_ground_truth())

    dataset = load_roxford5k(root)

    assert isinstance(dataset, RevisitedRetrievalDataset)
    assert dataset.name == "roxford5k"
    assert dataset.protocol == "medium"
    assert dataset.database_names == ["a", "b", "c", "d"]
    assert dataset.database_paths == [str(root / "jpg" / f"{n}.jpg") for n in "abcd"]
    assert dataset.query_names == ["q1", "b"]
    assert dataset.query_paths == [
        str(root / "jpg" / "q1.jpg"),
        str(root / "jpg" / "b.jpg"),
    ]
    assert dataset.query_indices.tolist() == [-1, 1]
    assert dataset.query_boxes.tolist() == [[1.5, 2.0, 30.0, 40.0], [0, 0, 5, 5]]
    assert _as_lists(dataset.gnd_easy) == [[0, 1], []]
    assert _as_lists(dataset.gnd_hard) == [[2], [0, 3]]
    assert _as_lists(dataset.gnd_junk) == [[3], []]
    assert _as_lists(dataset.positives) == [[0, 1, 2], [0, 3]]
    assert _as_lists(dataset.junk) == [[3], []]


@pytest.mark.parametrize(
    ("protocol", "positives", "junk"),
    [
        ("easy", [[0, 1], []], [[2, 3], [0, 3]]),
        ("medium", [[0, 1, 2], [0, 3]], [[3], []]),
        ("hard", [[2], [0, 3]], [[0, 1, 3], []]),
    ],
)
def test_revisited_protocols(
    tmp_path: Path, protocol: str, positives: list, junk: list
) -> None:
    root = _write_revisited(tmp_path, "rparis6k", _revisited_ground_truth())

    dataset = load_rparis6k(root, protocol=protocol)
    switched = load_rparis6k(root).with_protocol(protocol)

    assert dataset.name == "rparis6k"
    assert _as_lists(dataset.positives) == positives
    assert _as_lists(dataset.junk) == junk
    assert switched.protocol == protocol
    assert _as_lists(switched.positives) == positives
    assert _as_lists(switched.junk) == junk


def test_revisited_protocols_match_set_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n_database = 40
    gnd = []
    for _ in range(6):
        labels = rng.permutation(n_database)[:24]
        gnd.append(
            {
                "bbx": [0, 0, 1, 1],
                "easy": labels[:8].tolist(),
                "hard": labels[8:16].tolist(),
                "junk": labels[16:].tolist(),
            }
        )
    content = {
        "imlist": [f"img{i}" for i in range(n_database)],
        "qimlist": ["img0"] * 6,
        "gnd": gnd,
    }
    for i in range(n_database):
        _touch(tmp_path / "jpg" / f"img{i}.jpg")
    with open(tmp_path / "gnd_roxford5k.pkl", "wb") as file:
        pickle.dump(content, file)
    dataset = load_roxford5k(tmp_path)

    for protocol, positive_keys, junk_keys in [
        ("easy", ["easy"], ["junk", "hard"]),
        ("medium", ["easy", "hard"], ["junk"]),
        ("hard", ["hard"], ["junk", "easy"]),
    ]:
        switched = dataset.with_protocol(protocol)
        for q, entry in enumerate(gnd):
            expected_positives = sorted(set().union(*(entry[k] for k in positive_keys)))
            expected_junk = sorted(set().union(*(entry[k] for k in junk_keys)))
            assert switched.positives[q].tolist() == expected_positives
            assert switched.junk[q].tolist() == expected_junk


def test_revisited_with_protocol_rejects_name(tmp_path: Path) -> None:
    dataset = load_roxford5k(
        _write_revisited(tmp_path, "roxford5k", _revisited_ground_truth())
    )

    with pytest.raises(ValueError, match=r"Invalid protocol 'medium_hard'.*'easy'"):
        dataset.with_protocol("medium_hard")


def test_revisited_missing_database_image_renumbers(tmp_path: Path) -> None:
    root = _write_revisited(tmp_path, "roxford5k", _revisited_ground_truth())
    (root / "jpg" / "c.jpg").unlink()

    with pytest.warns(MissingImagesWarning, match="skipped 1 image listed .*'c'"):
        dataset = load_roxford5k(root, missing="skip")

    assert dataset.database_names == ["a", "b", "d"]
    assert dataset.query_indices.tolist() == [-1, 1]
    assert _as_lists(dataset.gnd_easy) == [[0, 1], []]
    assert _as_lists(dataset.gnd_hard) == [[], [0, 2]]
    assert _as_lists(dataset.gnd_junk) == [[2], []]
    assert _as_lists(dataset.positives) == [[0, 1], [0, 2]]


def test_revisited_missing_query_image(tmp_path: Path) -> None:
    root = _write_revisited(tmp_path, "roxford5k", _revisited_ground_truth())
    (root / "jpg" / "q1.jpg").unlink()

    with pytest.raises(
        DatasetNotFoundError, match=r"1 image listed in .* is not on disk: 'q1'"
    ):
        load_roxford5k(root)
    with pytest.warns(MissingImagesWarning, match="'q1'"):
        dataset = load_roxford5k(root, missing="skip")
    assert dataset.query_names == ["b"]
    assert dataset.query_boxes.tolist() == [[0, 0, 5, 5]]
    assert _as_lists(dataset.positives) == [[0, 3]]


def test_revisited_pickle_not_found(tmp_path: Path) -> None:
    (tmp_path / "jpg").mkdir()

    with pytest.raises(
        DatasetNotFoundError, match=r"gnd_rparis6k\.pkl'.*revisited ground truth"
    ):
        load_rparis6k(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("qimlist"), r"expected a dict with keys"),
        (lambda c: c["gnd"].pop(), r"'gnd' must be a list with one entry per query"),
        (lambda c: c["gnd"][0].pop("hard"), r"gnd\[0\] must be a dict with keys"),
        (lambda c: c["gnd"][1].update(easy=[4]), r"index 4 is out of range for the 4"),
        (lambda c: c["gnd"][1].update(junk=[-1]), r"index -1 is out of range"),
        (lambda c: c["gnd"][0].update(easy=[0.5]), r"\['easy'\]: expected a list of"),
        (lambda c: c["gnd"][0].update(bbx=[1, 2, 3]), r"\['bbx'\]: expected 4 numbers"),
        (lambda c: c.update(imlist=["a", 2]), r"'imlist' must be a list of image"),
    ],
)
def test_revisited_malformed_pickle(tmp_path: Path, change, message: str) -> None:
    content = _revisited_ground_truth()
    change(content)
    root = _write_revisited(tmp_path, "roxford5k", content)

    with pytest.raises(DatasetFormatError, match=message):
        load_roxford5k(root)


# ------------------------------------------------------------------------ UKBench


@pytest.fixture
def ukbench_root(tmp_path: Path) -> Path:
    for number in range(8):
        _touch(tmp_path / "full" / f"ukbench{number:05d}.jpg")
    return tmp_path


def test_ukbench_groups_of_four(ukbench_root: Path) -> None:
    dataset = load_ukbench(ukbench_root)

    assert dataset.name == "ukbench"
    assert dataset.database_names == [f"ukbench{n:05d}" for n in range(8)]
    assert dataset.database_paths[5] == str(ukbench_root / "full" / "ukbench00005.jpg")
    assert dataset.groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert dataset.query_indices.tolist() == list(range(8))
    assert dataset.query_paths == dataset.database_paths
    assert _as_lists(dataset.positives) == [[0, 1, 2, 3]] * 4 + [[4, 5, 6, 7]] * 4
    assert _as_lists(dataset.junk) == [[]] * 8


def test_ukbench_full_folder_as_root(ukbench_root: Path) -> None:
    dataset = load_ukbench(ukbench_root / "full")

    assert dataset.n_database == 8


def test_ukbench_positives_match_reference(tmp_path: Path) -> None:
    for number in range(40):
        _touch(tmp_path / "full" / f"ukbench{number:05d}.jpg")

    dataset = load_ukbench(tmp_path)

    positives, junk = _group_reference(
        dataset.groups, np.arange(40), include_query=True
    )
    assert _as_lists(dataset.positives) == positives
    assert _as_lists(dataset.junk) == junk


def test_ukbench_incomplete_group(ukbench_root: Path) -> None:
    (ukbench_root / "full" / "ukbench00005.jpg").unlink()

    with pytest.raises(
        DatasetNotFoundError,
        match=r"1 image expected in groups of 4 .* is not on disk: 'ukbench00005'",
    ):
        load_ukbench(ukbench_root)
    with pytest.warns(MissingImagesWarning, match="ukbench00005"):
        dataset = load_ukbench(ukbench_root, missing="skip")
    assert dataset.groups.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert _as_lists(dataset.positives)[4:] == [[4, 5, 6]] * 3


def test_ukbench_no_images_names_archive(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"ukbench\.zip, which extracts"):
        load_ukbench(tmp_path)


# ------------------------------------------------------------------ folder per group


@pytest.fixture
def groups_root(tmp_path: Path) -> Path:
    _touch(tmp_path / "Notre Dame" / "c 1.JPG")
    _touch(tmp_path / "Notre Dame" / "d.png")
    _touch(tmp_path / "Eiffel Tower" / "b.jpeg")
    _touch(tmp_path / "Eiffel Tower" / "a.jpg")
    _touch(tmp_path / "Eiffel Tower" / "notes.txt")
    _touch(tmp_path / "Eiffel Tower" / "nested" / "deep.jpg")
    _touch(tmp_path / "single" / "e.jpg")
    _touch(tmp_path / ".cache" / "f.jpg")
    _touch(tmp_path / "loose.jpg")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_image_groups_layout(groups_root: Path) -> None:
    dataset = load_image_groups(groups_root)

    assert dataset.name == "image_groups"
    assert dataset.group_names == ["Eiffel Tower", "Notre Dame", "single"]
    assert dataset.database_names == [
        "Eiffel Tower/a.jpg",
        "Eiffel Tower/b.jpeg",
        "Notre Dame/c 1.JPG",
        "Notre Dame/d.png",
        "single/e.jpg",
    ]
    assert dataset.database_paths[2] == str(groups_root / "Notre Dame" / "c 1.JPG")
    assert dataset.groups.tolist() == [0, 0, 1, 1, 2]
    assert dataset.query_indices.tolist() == [0, 1, 2, 3, 4]
    assert dataset.query_names == dataset.database_names
    assert _as_lists(dataset.positives) == [[1], [0], [3], [2], []]
    assert _as_lists(dataset.junk) == [[0], [1], [2], [3], [4]]


def test_image_groups_extensions(groups_root: Path) -> None:
    dataset = load_image_groups(groups_root, extensions=[".PNG"])

    assert dataset.database_names == ["Notre Dame/d.png"]
    assert dataset.group_names == ["Notre Dame"]


def test_image_groups_positives_match_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i, size in enumerate(rng.integers(1, 6, size=12)):
        for j in range(size):
            _touch(tmp_path / f"group{i:02d}" / f"{j}.jpg")

    dataset = load_image_groups(tmp_path)

    positives, junk = _group_reference(
        dataset.groups, dataset.query_indices, include_query=False
    )
    assert _as_lists(dataset.positives) == positives
    assert _as_lists(dataset.junk) == junk


@pytest.mark.parametrize("extensions", [[], ["jpg"], [".jpg", 3]])
def test_image_groups_invalid_extensions(groups_root: Path, extensions: list) -> None:
    with pytest.raises(ValueError, match=r"Invalid extensions .*starting with '\.'"):
        load_image_groups(groups_root, extensions=extensions)


def test_image_groups_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(DatasetNotFoundError, match=r"no images .* subfolders of"):
        load_image_groups(tmp_path)


# ------------------------------------------------------------------ MIT Indoor-67


@pytest.fixture
def mit_root(tmp_path: Path) -> Path:
    for relative in ("kitchen/int474.jpg", "kitchen/b.jpg", "wine cellar/img 1.jpg"):
        _touch(tmp_path / "Images" / relative)
    _touch(tmp_path / "Images" / "bar" / "x.jpg")
    _write_text(
        tmp_path / "TrainImages.txt", "kitchen/int474.jpg\r\nwine cellar/img 1.jpg\r\n"
    )
    _write_text(tmp_path / "TestImages.txt", "bar/x.jpg\n\nkitchen/b.jpg\n")
    return tmp_path


def test_mit67_split_and_labels(mit_root: Path) -> None:
    dataset = load_mit_indoor67(mit_root)

    assert isinstance(dataset, ClassificationDataset)
    assert dataset.name == "mit_indoor67"
    assert dataset.class_names == ["bar", "kitchen", "wine cellar"]
    assert dataset.n_classes == 3
    assert dataset.ids_train == ["kitchen/int474.jpg", "wine cellar/img 1.jpg"]
    assert dataset.paths_train == [
        str(mit_root / "Images" / "kitchen" / "int474.jpg"),
        str(mit_root / "Images" / "wine cellar" / "img 1.jpg"),
    ]
    assert dataset.y_train.tolist() == [1, 2]
    assert dataset.ids_test == ["bar/x.jpg", "kitchen/b.jpg"]
    assert dataset.y_test.tolist() == [0, 1]
    assert dataset.boxes_train is None


def test_mit67_indoorcvpr_folder(mit_root: Path) -> None:
    (mit_root / "indoorCVPR_09").mkdir()
    (mit_root / "Images").rename(mit_root / "indoorCVPR_09" / "Images")

    dataset = load_mit_indoor67(mit_root)

    assert dataset.paths_test[0] == str(
        mit_root / "indoorCVPR_09" / "Images" / "bar" / "x.jpg"
    )


def test_mit67_missing_image(mit_root: Path) -> None:
    (mit_root / "Images" / "kitchen" / "b.jpg").unlink()

    with pytest.raises(
        DatasetNotFoundError, match=r"TestImages\.txt' is not on disk: .*b\.jpg"
    ):
        load_mit_indoor67(mit_root)
    with pytest.warns(MissingImagesWarning, match=r"skipped 1 image listed in"):
        dataset = load_mit_indoor67(mit_root, missing="skip")
    assert dataset.ids_test == ["bar/x.jpg"]
    assert dataset.y_test.tolist() == [0]
    assert dataset.class_names == ["bar", "kitchen", "wine cellar"]


def test_mit67_split_file_not_found(mit_root: Path) -> None:
    (mit_root / "TrainImages.txt").unlink()

    with pytest.raises(
        DatasetNotFoundError, match=r"TrainImages\.txt'.*separate download"
    ):
        load_mit_indoor67(mit_root)


def test_mit67_images_folder_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"Images'.*indoorCVPR_09\.tar"):
        load_mit_indoor67(tmp_path)


def test_mit67_line_without_class(mit_root: Path) -> None:
    _write_text(mit_root / "TestImages.txt", "bar/x.jpg\nx.jpg\n")

    with pytest.raises(DatasetFormatError, match=r"line 2: expected '<class>/<file>'"):
        load_mit_indoor67(mit_root)


# ------------------------------------------------------------------ CUB-200-2011

CUB_FILES = {
    "classes.txt": (
        "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n3 003.Sooty Albatross\n"
    ),
    "images.txt": (
        "1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg\n"
        "2 002.Laysan_Albatross/Laysan 1.jpg\n"
        "3 003.Sooty Albatross/Sooty_1.jpg\n"
    ),
    "image_class_labels.txt": "1 1\n2 2\n3 3\n",
    "train_test_split.txt": "1 1\n2 0\n3 1\n",
    "bounding_boxes.txt": "1 60.0 27.0 325.0 304.0\n2 0.5 1.5 2.0 3.0\n3 10 20 0 5\n",
}


@pytest.fixture
def cub_root(tmp_path: Path) -> Path:
    base = tmp_path / "CUB_200_2011"
    for name, text in CUB_FILES.items():
        _write_text(base / name, text)
    for line in CUB_FILES["images.txt"].splitlines():
        _touch(base / "images" / line.split(maxsplit=1)[1])
    return tmp_path


def test_cub_split_labels_and_boxes(cub_root: Path) -> None:
    dataset = load_cub200(cub_root)
    images = cub_root / "CUB_200_2011" / "images"

    assert dataset.name == "cub200"
    assert dataset.root == str(cub_root / "CUB_200_2011")
    assert dataset.class_names == [
        "001.Black_footed_Albatross",
        "002.Laysan_Albatross",
        "003.Sooty Albatross",
    ]
    assert dataset.ids_train == ["1", "3"]
    assert dataset.paths_train == [
        str(images / "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"),
        str(images / "003.Sooty Albatross/Sooty_1.jpg"),
    ]
    assert dataset.y_train.tolist() == [0, 2]
    assert dataset.boxes_train.tolist() == [
        [60.0, 27.0, 385.0, 331.0],
        [10.0, 20.0, 10.0, 25.0],
    ]
    assert dataset.ids_test == ["2"]
    assert dataset.paths_test == [str(images / "002.Laysan_Albatross/Laysan 1.jpg")]
    assert dataset.y_test.tolist() == [1]
    assert dataset.boxes_test.tolist() == [[0.5, 1.5, 2.5, 4.5]]


def test_cub_root_is_content_folder(cub_root: Path) -> None:
    dataset = load_cub200(cub_root / "CUB_200_2011")

    assert dataset.ids_train == ["1", "3"]


def test_cub_labels_follow_class_ids(cub_root: Path) -> None:
    base = cub_root / "CUB_200_2011"
    _write_text(base / "classes.txt", "7 seven\n3 three\n5 five\n")
    _write_text(base / "image_class_labels.txt", "1 5\n2 7\n3 3\n")

    dataset = load_cub200(cub_root)

    assert dataset.class_names == ["three", "five", "seven"]
    assert dataset.y_train.tolist() == [1, 0]
    assert dataset.y_test.tolist() == [2]


def test_cub_missing_image(cub_root: Path) -> None:
    sooty = cub_root / "CUB_200_2011" / "images" / "003.Sooty Albatross" / "Sooty_1.jpg"
    sooty.unlink()

    with pytest.raises(DatasetNotFoundError, match=r"images\.txt' is not on disk"):
        load_cub200(cub_root)
    with pytest.warns(MissingImagesWarning, match="Sooty_1"):
        dataset = load_cub200(cub_root, missing="skip")
    assert dataset.ids_train == ["1"]
    assert dataset.boxes_train.tolist() == [[60.0, 27.0, 385.0, 331.0]]


def test_cub_boxes_file_not_found(cub_root: Path) -> None:
    (cub_root / "CUB_200_2011" / "bounding_boxes.txt").unlink()

    with pytest.raises(
        DatasetNotFoundError, match=r"bounding_boxes\.txt'.*CUB_200_2011\.tgz"
    ):
        load_cub200(cub_root)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bounding_boxes.txt",
            "1 1 2 3 4\n2 1 2 -3 4\n3 1 2 3 4\n",
            r"line 2: expected",
        ),
        ("bounding_boxes.txt", "1 1 2 3\n", r"line 1: expected '<image id> <x>"),
        ("train_test_split.txt", "1 1\n2 2\n3 0\n", r"line 2: expected '<image id> <0"),
        ("image_class_labels.txt", "1 1\n3 3\n", r"no line for image id 2"),
        ("image_class_labels.txt", "1 1\n2 9\n3 3\n", r"class id 9, which .* not list"),
        ("images.txt", "1 a.jpg\n1 b.jpg\n", r"line 2: id 1 appears a second time"),
        ("classes.txt", "one 001.Albatross\n", r"line 1: expected '<class id> <name>'"),
    ],
)
def test_cub_malformed_files(
    cub_root: Path, name: str, text: str, message: str
) -> None:
    _write_text(cub_root / "CUB_200_2011" / name, text)

    with pytest.raises(DatasetFormatError, match=message):
        load_cub200(cub_root)


# ------------------------------------------------------------------ PASCAL VOC 2007

VOC_TRAINVAL = ["000005", "000007", "000009"]
VOC_TEST = ["000001", "000002"]


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    base = tmp_path / "VOCdevkit" / "VOC2007"
    main = base / "ImageSets" / "Main"
    for split, ids in (("trainval", VOC_TRAINVAL), ("test", VOC_TEST)):
        _write_text(main / f"{split}.txt", "".join(f"{i}\n" for i in ids))
        for class_name in VOC2007_CLASSES:
            _write_text(
                main / f"{class_name}_{split}.txt", "".join(f"{i} -1\n" for i in ids)
            )
        for image_id in ids:
            _touch(base / "JPEGImages" / f"{image_id}.jpg")
    # Devkit spacing: a value of 1 or 0 is preceded by two spaces.
    _write_text(main / "car_trainval.txt", "000005 -1\n000007  1\n000009  0\n")
    _write_text(main / "person_trainval.txt", "000009  1\n000005  1\n000007 -1\n")
    _write_text(main / "dog_test.txt", "000001  0\n000002  1\n")
    return tmp_path


def test_voc_labels_follow_devkit(voc_root: Path) -> None:
    dataset = load_voc2007(voc_root)
    base = voc_root / "VOCdevkit" / "VOC2007"
    car = VOC2007_CLASSES.index("car")
    person = VOC2007_CLASSES.index("person")
    dog = VOC2007_CLASSES.index("dog")

    assert dataset.name == "voc2007"
    assert dataset.root == str(base)
    assert dataset.class_names == list(VOC2007_CLASSES)
    assert dataset.n_classes == 20
    assert dataset.ids_train == VOC_TRAINVAL
    assert dataset.paths_train == [
        str(base / "JPEGImages" / f"{i}.jpg") for i in VOC_TRAINVAL
    ]
    assert dataset.y_train.shape == (3, 20)
    assert dataset.y_train[:, car].tolist() == [-1, 1, 0]
    assert dataset.y_train[:, person].tolist() == [1, -1, 1]
    others = np.delete(dataset.y_train, [car, person], axis=1)
    assert (others == -1).all()
    assert dataset.ids_test == VOC_TEST
    assert dataset.y_test[:, dog].tolist() == [0, 1]
    assert (np.delete(dataset.y_test, dog, axis=1) == -1).all()


def test_voc_class_order() -> None:
    assert VOC2007_CLASSES[:5] == ("aeroplane", "bicycle", "bird", "boat", "bottle")
    assert VOC2007_CLASSES[-3:] == ("sofa", "train", "tvmonitor")
    assert len(VOC2007_CLASSES) == 20


def test_voc_root_is_voc2007(voc_root: Path) -> None:
    dataset = load_voc2007(voc_root / "VOCdevkit" / "VOC2007")

    assert dataset.ids_test == VOC_TEST


def test_voc_missing_test_image(voc_root: Path) -> None:
    (voc_root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000001.jpg").unlink()
    dog = VOC2007_CLASSES.index("dog")

    with pytest.raises(
        DatasetNotFoundError, match=r"test\.txt' is not on disk.*VOCtest_06-Nov-2007"
    ):
        load_voc2007(voc_root)
    with pytest.warns(MissingImagesWarning, match=r"000001\.jpg"):
        dataset = load_voc2007(voc_root, missing="skip")
    assert dataset.ids_test == ["000002"]
    assert dataset.y_test.shape == (1, 20)
    assert dataset.y_test[0, dog] == 1
    assert dataset.ids_train == VOC_TRAINVAL


def test_voc_class_file_not_found(voc_root: Path) -> None:
    main = voc_root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    (main / "tvmonitor_test.txt").unlink()

    with pytest.raises(
        DatasetNotFoundError, match=r"tvmonitor_test\.txt'.*VOCtest_06-Nov-2007\.tar"
    ):
        load_voc2007(voc_root)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("000005 -1\n000007 2\n000009 1\n", r"line 2: expected '<image id> <1, 0 or"),
        ("000005 -1\n000009 1\n", r"no line for image id '000007'"),
        ("000005 -1\n000007 1\n000009 1\n000042 1\n", r"'000042' is not in"),
    ],
)
def test_voc_malformed_class_file(voc_root: Path, text: str, message: str) -> None:
    main = voc_root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    _write_text(main / "bird_trainval.txt", text)

    with pytest.raises(DatasetFormatError, match=message):
        load_voc2007(voc_root)


def test_voc_binary_targets_difficult() -> None:
    Y = np.array([[1, 0, -1], [0, -1, 1]])

    assert voc_binary_targets(Y).tolist() == [[1, 1, 0], [1, 0, 1]]
    assert voc_binary_targets(Y, difficult="negative").tolist() == [
        [1, 0, 0],
        [0, 0, 1],
    ]


def test_voc_binary_targets_match_elementwise_reference(voc_root: Path) -> None:
    Y = load_voc2007(voc_root).y_train
    target_of = {
        "positive": {1: 1, 0: 1, -1: 0},
        "negative": {1: 1, 0: 0, -1: 0},
    }

    for difficult, targets in target_of.items():
        expected = [[targets[value] for value in row] for row in Y.tolist()]
        assert voc_binary_targets(Y, difficult=difficult).tolist() == expected


@pytest.mark.parametrize(
    ("Y", "message"),
    [
        ([1, 0, -1], r"got shape \(3,\)"),
        ([[1, 2]], r"with values \[1, 2\]"),
    ],
)
def test_voc_binary_targets_invalid(Y: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        voc_binary_targets(Y)


def test_voc_binary_targets_difficult_option() -> None:
    with pytest.raises(InvalidParameterError, match="'difficult' parameter"):
        voc_binary_targets([[1]], difficult="ignore")


def test_readers_warn_nothing_on_complete_data(
    oxford_root: Path, mit_root: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_oxford5k(oxford_root, missing="skip")
        load_mit_indoor67(mit_root, missing="skip")


def test_missing_images_warning_points_at_caller(mit_root: Path) -> None:
    (mit_root / "Images" / "bar" / "x.jpg").unlink()

    with pytest.warns(MissingImagesWarning) as record:
        load_mit_indoor67(mit_root, missing="skip")

    assert record[0].filename == __file__

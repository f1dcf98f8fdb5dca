"""Tests of benchmarks/reproduce_paper.py on tiny datasets in the official layouts.

Each fixture writes a few real photos (crops of scikit-image photos) in the
layout its reader expects, and the harness runs in-process on AlexNet with
random weights at a small image size. The numbers mean nothing; the tests
check the code paths, the JSON report and the checks that run before any
computation.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.svm import LinearSVC

from skcrosslayer import CrossLayerPooler, GlobalPooler
from skcrosslayer.datasets import (
    VOC2007_CLASSES,
    RetrievalDataset,
    load_mit_indoor67,
    load_oxford5k,
)
from skcrosslayer.search import packed_similarities

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_paper.py"

# Options shared by every end-to-end run: AlexNet with random weights, small
# images, no worker processes.
FAST_OPTIONS = [
    "--backbone",
    "alexnet",
    "--weights",
    "none",
    "--image-size",
    "96",
    "--max-size",
    "128",
    "--device",
    "cpu",
    "--n-workers",
    "0",
]


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("reproduce_paper", HARNESS)
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while the file runs.
    sys.modules["reproduce_paper"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["reproduce_paper"]


@pytest.fixture
def no_regional(monkeypatch):
    """Make ``import skcrosslayer.regional`` fail, as when it is not written yet."""
    monkeypatch.setitem(sys.modules, "skcrosslayer.regional", None)


def photo_crops(photo: np.ndarray, n_crops: int, size: tuple[int, int], seed: int):
    """Return ``n_crops`` random crops of ``photo`` resized to ``size`` (w, h)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(photo).convert("RGB")
    width, height = image.size
    side = min(width, height)
    crops = []
    for _ in range(n_crops):
        crop_side = int(side * rng.uniform(0.5, 0.8))
        left = int(rng.integers(0, width - crop_side + 1))
        top = int(rng.integers(0, height - crop_side + 1))
        crop = image.crop((left, top, left + crop_side, top + crop_side))
        crops.append(crop.resize(size, Image.Resampling.BILINEAR))
    return crops


def save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


# Each class of the classification fixtures is cut from one photo.
CLASS_PHOTOS = {"bar": "coffee", "kitchen": "chelsea", "wine cellar": "rocket"}
N_TRAIN, N_TEST = 4, 2


@pytest.fixture(scope="module")
def mit_root(tmp_path_factory, sample_photos) -> Path:
    root = tmp_path_factory.mktemp("mit67")
    train, test = [], []
    for seed, (name, photo) in enumerate(CLASS_PHOTOS.items()):
        crops = photo_crops(sample_photos[photo], N_TRAIN + N_TEST, (64, 64), seed)
        for i, crop in enumerate(crops):
            relative = f"{name}/{photo}_{i}.jpg"
            save(crop, root / "Images" / relative)
            (train if i < N_TRAIN else test).append(relative)
    write_lines(root / "TrainImages.txt", train)
    write_lines(root / "TestImages.txt", test)
    return root


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory, sample_photos) -> Path:
    base = tmp_path_factory.mktemp("cub") / "CUB_200_2011"
    tables = {name: [] for name in ("images", "labels", "split", "boxes")}
    classes = []
    image_id = 0
    for class_id, photo in enumerate(("chelsea", "coffee", "rocket"), start=1):
        folder = f"{class_id:03d}.{photo.title()}"
        classes.append(f"{class_id} {folder}")
        crops = photo_crops(sample_photos[photo], N_TRAIN + N_TEST, (96, 80), class_id)
        for i, crop in enumerate(crops):
            image_id += 1
            relative = f"{folder}/{photo}_{i}.jpg"
            save(crop, base / "images" / relative)
            tables["images"].append(f"{image_id} {relative}")
            tables["labels"].append(f"{image_id} {class_id}")
            tables["split"].append(f"{image_id} {int(i < N_TRAIN)}")
            # x y width height, inside the 96 x 80 image
            tables["boxes"].append(f"{image_id} 10.0 6.5 70.0 64.0")
    write_lines(base / "classes.txt", classes)
    write_lines(base / "images.txt", tables["images"])
    write_lines(base / "image_class_labels.txt", tables["labels"])
    write_lines(base / "train_test_split.txt", tables["split"])
    write_lines(base / "bounding_boxes.txt", tables["boxes"])
    return base.parent


VOC_PHOTOS = {"aeroplane": "rocket", "cat": "chelsea", "person": "astronaut"}


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory, sample_photos) -> Path:
    root = tmp_path_factory.mktemp("voc")
    base = root / "VOCdevkit" / "VOC2007"
    ids = {"trainval": [], "test": []}
    labels = {"trainval": {}, "test": {}}
    number = 0
    for seed, (class_name, photo) in enumerate(VOC_PHOTOS.items()):
        crops = photo_crops(sample_photos[photo], N_TRAIN + N_TEST, (64, 64), seed)
        for i, crop in enumerate(crops):
            number += 1
            image_id = f"{number:06d}"
            split = "trainval" if i < N_TRAIN else "test"
            save(crop, base / "JPEGImages" / f"{image_id}.jpg")
            ids[split].append(image_id)
            # The first test image of each class holds only difficult objects.
            labels[split][image_id] = (class_name, 0 if i == N_TRAIN else 1)
    main = base / "ImageSets" / "Main"
    for split, split_ids in ids.items():
        write_lines(main / f"{split}.txt", split_ids)
        for class_name in VOC2007_CLASSES:
            lines = []
            for image_id in split_ids:
                owner, value = labels[split][image_id]
                lines.append(f"{image_id} {value if owner == class_name else -1:2d}")
            write_lines(main / f"{class_name}_{split}.txt", lines)
    return root


# Holidays groups: image number // 100; the first image of a group is its query.
HOLIDAYS_GROUPS = {1000: "chelsea", 1001: "coffee", 1002: "rocket", 1003: "astronaut"}


@pytest.fixture(scope="module")
def holidays_root(tmp_path_factory, sample_photos) -> Path:
    root = tmp_path_factory.mktemp("holidays")
    for group, photo in HOLIDAYS_GROUPS.items():
        n_images = 3 if group == 1000 else 2
        crops = photo_crops(sample_photos[photo], n_images, (128, 112), group)
        for i, crop in enumerate(crops):
            save(crop, root / "jpg" / f"{group * 100 + i}.jpg")
    return root


@pytest.fixture(scope="module")
def oxford_root(tmp_path_factory, sample_photos) -> Path:
    root = tmp_path_factory.mktemp("oxford")
    names = {
        "all_souls": ("chelsea", 3),
        "ashmolean": ("coffee", 3),
        "oxford": ("rocket", 3),
    }
    for seed, (landmark, (photo, n_images)) in enumerate(names.items()):
        crops = photo_crops(sample_photos[photo], n_images, (128, 112), seed)
        for i, crop in enumerate(crops, start=1):
            save(crop, root / "jpg" / f"{landmark}_{i:06d}.jpg")
    gt = root / "gt_files_170407"
    write_lines(gt / "all_souls_1_query.txt", ["oxc1_all_souls_000001 5 5 90 90"])
    write_lines(gt / "all_souls_1_good.txt", ["all_souls_000001", "all_souls_000002"])
    write_lines(gt / "all_souls_1_ok.txt", ["all_souls_000003"])
    write_lines(gt / "all_souls_1_junk.txt", ["oxford_000001"])
    write_lines(gt / "ashmolean_1_query.txt", ["oxc1_ashmolean_000001 0 0 64 64"])
    write_lines(gt / "ashmolean_1_good.txt", ["ashmolean_000001", "ashmolean_000002"])
    write_lines(gt / "ashmolean_1_ok.txt", [])
    write_lines(gt / "ashmolean_1_junk.txt", ["ashmolean_000003"])
    return root


ROOT_FIXTURES = {
    "mit67": "mit_root",
    "cub200": "cub_root",
    "voc2007": "voc_root",
    "holidays": "holidays_root",
    "oxford5k": "oxford_root",
}


def run_harness(harness, dataset: str, root: Path, tmp_path: Path, *extra: str):
    output = tmp_path / f"{dataset}.json"
    argv = ["--dataset", dataset, "--root", str(root), "--json", str(output)]
    status = harness.main([*argv, *FAST_OPTIONS, *extra])
    report = json.loads(output.read_text()) if output.exists() else None
    return status, report


def check_report(harness, report: dict, dataset: str, methods=None) -> dict:
    """Check the fields every report has; return the rows by method."""
    assert report["dataset"] == dataset
    assert report["backbone"] == "alexnet"
    assert report["weights"] == "none"
    assert report["quick"] is False
    assert report["environment"]["device"] == "cpu"
    assert "torch" in report["environment"]
    assert "TPAMI 2017" in report["published_source"]
    rows = {row["method"]: row for row in report["results"]}
    assert list(rows) == list(methods or harness.methods_of(dataset))
    for row in rows.values():
        assert row["status"] in ("ok", "skipped"), row
        if row["status"] == "ok":
            assert 0.0 <= row["measured"] <= 100.0, row
        if row["published"] is not None and row["measured"] is not None:
            assert row["difference"] == pytest.approx(
                row["measured"] - row["published"], abs=1e-3
            )
    return rows


# ------------------------------------------------------------ end-to-end runs


# Rows of each end-to-end run. MIT-67 runs every row; CUB and VOC run the rows
# whose inputs differ (box crops, 448 px, multi-label targets) to save time.
END_TO_END_METHODS = {
    "mit67": None,
    "cub200": (
        "fc6_ten_crop",
        "crosslayer_conv",
        "crosslayer_conv_sign",
        "crosslayer_conv_2x",
        "crosslayer_conv_2x_sign",
        "crosslayer_aconv",
    ),
    "voc2007": ("fc7", "crosslayer_conv", "crosslayer_conv_sign", "crosslayer_aconv"),
}


@pytest.mark.parametrize("dataset", ["mit67", "cub200", "voc2007"])
def test_classification_end_to_end(
    harness, dataset, request, tmp_path, no_regional, capsys
) -> None:
    root = request.getfixturevalue(ROOT_FIXTURES[dataset])
    methods = END_TO_END_METHODS[dataset]
    extra = [] if methods is None else ["--methods", ",".join(methods)]

    status, report = run_harness(harness, dataset, root, tmp_path, *extra)

    assert status == 0
    rows = check_report(harness, report, dataset, methods)
    for method in ("fc6", "fc7", "fc6_ten_crop", "fc7_ten_crop"):
        if method in rows:
            assert rows[method]["status"] == "ok"
            assert rows[method]["n_features"] == 4096
            assert rows[method]["published"] is None
            assert rows[method]["difference"] is None
    for method in ("crosslayer_conv", "crosslayer_conv_sign"):
        assert rows[method]["status"] == "ok"
        # AlexNet conv4 -> conv5: 256 guidance channels x 256 PCA dims
        assert rows[method]["n_features"] == 256 * 256
        assert rows[method]["image_size"] == 96
    assert rows["crosslayer_aconv"]["status"] == "skipped"
    assert "cannot be imported" in rows["crosslayer_aconv"]["reason"]
    protocol = report["protocol"]
    assert protocol["n_train"] == 12
    assert protocol["n_test"] == 6
    assert protocol["crop_to_box"] is (dataset == "cub200")
    if dataset == "cub200":
        assert rows["crosslayer_conv_2x"]["image_size"] == 192
        assert rows["crosslayer_conv_2x_sign"]["status"] == "ok"
    if dataset == "voc2007":
        assert report["metric"] == "11-point mAP (%)"
        assert protocol["n_classes"] == 20
        assert "ignored in the test AP" in protocol["difficult"]
    else:
        assert report["metric"] == "accuracy (%)"
        assert protocol["n_classes"] == 3
    printed = capsys.readouterr().out
    assert "crosslayer_conv" in printed
    assert "published" in printed


def make_run(harness, dataset: str, **settings):
    values = dict(
        dataset=dataset,
        backbone="alexnet",
        weights=None,
        image_size=96,
        max_size=128,
        quick=False,
        methods=harness.methods_of(dataset),
        n_fit_images=1000,
        chunk_size=5,
        batch_size=32,
        n_workers=0,
        device="cpu",
        seed=0,
        verbose=0,
    )
    return harness.Run(**{**values, **settings})


def test_chunked_grams_match_direct_products(harness, mit_root) -> None:
    dataset = load_mit_indoor67(mit_root)
    run = make_run(harness, "mit67")
    data = harness.classification_data(dataset, run)
    pooler = CrossLayerPooler(
        "alexnet", None, image_size=96, n_workers=0, device="cpu", random_state=0
    ).fit(dataset.paths_train)

    grams = harness.gram_matrices(pooler, data, run)

    train = pooler.transform(dataset.paths_train).astype(np.float64)
    test = pooler.transform(dataset.paths_test).astype(np.float64)
    assert grams["n_features"] == 256 * 256
    np.testing.assert_allclose(grams["float"][0], train @ train.T, atol=1e-5)
    np.testing.assert_allclose(grams["float"][1], test @ train.T, atol=1e-5)
    np.testing.assert_array_equal(grams["sign"][0], np.sign(train) @ np.sign(train).T)
    np.testing.assert_array_equal(grams["sign"][1], np.sign(test) @ np.sign(train).T)


def test_retrieval_codes_match_sign_products(harness, oxford_root) -> None:
    dataset = load_oxford5k(oxford_root)
    run = make_run(harness, "oxford5k", chunk_size=4)
    pooler = CrossLayerPooler(
        "alexnet",
        None,
        max_size=128,
        channel_strengths=True,
        n_workers=0,
        device="cpu",
        random_state=0,
    ).fit(dataset.database_paths)

    codes = harness.crosslayer_codes(pooler, dataset, run)

    width = 256 * 256
    queries = pooler.transform(dataset.query_paths)
    database = pooler.transform(dataset.database_paths)[:, :width]
    # pack_signs binarises 0 to -1, as the all-zero blocks of guidance channels
    # that never fire are.
    query_bits = np.where(queries[:, :width] > 0, 1.0, -1.0)
    database_bits = np.where(database > 0, 1.0, -1.0)
    expected_signs = query_bits @ database_bits.T
    similarities = packed_similarities(
        codes["packed_queries"], codes["packed_database"], 256
    )
    np.testing.assert_array_equal(similarities, expected_signs)
    np.testing.assert_allclose(
        codes["float_similarities"], queries[:, :width] @ database.T, atol=1e-5
    )
    np.testing.assert_array_equal(codes["query_strengths"], queries[:, width:])


@pytest.mark.parametrize("dataset", ["holidays", "oxford5k"])
def test_retrieval_end_to_end(harness, dataset, request, tmp_path) -> None:
    root = request.getfixturevalue(ROOT_FIXTURES[dataset])

    status, report = run_harness(harness, dataset, root, tmp_path)

    assert status == 0
    rows = check_report(harness, report, dataset)
    assert all(row["status"] == "ok" for row in rows.values())
    assert rows["crosslayer_binary_top10"]["n_features"] == 256 * 256
    assert rows["spoc"]["n_features"] == 256
    protocol = report["protocol"]
    assert protocol["queries_in_database"] is True
    assert protocol["max_size"] == 128
    assert protocol["n_queries"] == (4 if dataset == "holidays" else 2)


def test_quick_classification_subset(harness, mit_root, tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "QUICK_CLASSES", 2)
    monkeypatch.setattr(harness, "QUICK_TRAIN_PER_CLASS", 3)
    monkeypatch.setattr(harness, "QUICK_TEST_PER_CLASS", 1)

    _, report = run_harness(
        harness, "mit67", mit_root, tmp_path, "--quick", "--methods", "fc7"
    )

    assert report["quick"] is True
    assert report["protocol"]["n_classes"] == 2
    assert report["protocol"]["n_train"] == 6
    assert report["protocol"]["n_test"] == 2
    assert report["protocol"]["C_grid_before_scaling"] == [0.1, 1.0, 10.0]
    assert report["results"][0]["status"] == "ok"


def test_quick_retrieval_subset(harness, oxford_root, tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "QUICK_QUERIES", 1)
    monkeypatch.setattr(harness, "QUICK_DISTRACTORS", 1)

    _, report = run_harness(
        harness, "oxford5k", oxford_root, tmp_path, "--quick", "--methods", "spoc"
    )

    # Query all_souls_1: its image, 2 more positives, 1 junk and 1 distractor.
    assert report["protocol"]["n_queries"] == 1
    assert report["protocol"]["n_database"] == 5


def test_regional_pooler_used_when_importable(
    harness, mit_root, tmp_path, monkeypatch
) -> None:
    fitted_with = {}

    class LabelledPooler(GlobalPooler):
        """Stands in for RegionalCrossLayerPooler, whose fit takes labels."""

        def fit(self, X, y=None):
            fitted_with["n_images"], fitted_with["y"] = len(X), y
            return super().fit(X)

    monkeypatch.setattr(
        harness, "regional_pooler_class", lambda: (LabelledPooler, None)
    )
    methods = "crosslayer_aconv,crosslayer_aconv_sign"

    _, report = run_harness(harness, "mit67", mit_root, tmp_path, "--methods", methods)

    rows = {row["method"]: row for row in report["results"]}
    assert rows["crosslayer_aconv"]["status"] == "ok"
    assert rows["crosslayer_aconv_sign"]["status"] == "ok"
    assert rows["crosslayer_aconv"]["published"] == 68.2
    assert fitted_with["n_images"] == 12
    assert fitted_with["y"].tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_failed_method_is_recorded(harness, mit_root, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(harness, "gram_matrices", broken)

    status, report = run_harness(
        harness, "mit67", mit_root, tmp_path, "--methods", "fc6"
    )

    assert status == 1
    row = report["results"][0]
    assert row["status"] == "failed"
    assert row["reason"] == "RuntimeError: out of memory"


def test_fc_rows_skipped_without_fc_layers(harness, mit_root, tmp_path) -> None:
    options = ["--backbone", "resnet50", "--methods", "fc6,fc7_ten_crop"]

    status, report = run_harness(harness, "mit67", mit_root, tmp_path, *options)

    assert status == 0
    for row in report["results"]:
        assert row["status"] == "skipped"
        assert row["reason"].startswith("resnet50 has no fc6 and fc7 layers")


# ------------------------------------------------ checks before any computation


def test_missing_dataset_exits_2(harness, tmp_path, monkeypatch, capsys) -> None:
    def must_not_run(*args):
        raise AssertionError("computation started despite missing data")

    monkeypatch.setattr(harness, "run_classification", must_not_run)

    status, report = run_harness(harness, "mit67", tmp_path, tmp_path)

    assert status == 2
    assert report is None
    message = capsys.readouterr().err
    assert "cannot start, 2 problem(s)" in message
    assert f"folder not found: '{tmp_path / 'Images'}'" in message
    assert "indoorCVPR_09.tar" in message
    assert "TrainImages.txt and TestImages.txt" in message
    assert "http://web.mit.edu/torralba/www/indoor.html" in message


@pytest.mark.parametrize(
    ("dataset", "archive"),
    [
        ("cub200", "CUB_200_2011.tgz"),
        ("voc2007", "VOCtrainval_06-Nov-2007.tar"),
        ("holidays", "jpg1.tar.gz"),
        ("oxford5k", "oxbuild_images-v1.tgz"),
    ],
)
def test_missing_dataset_names_archive(harness, dataset, archive, tmp_path, capsys):
    status, _ = run_harness(harness, dataset, tmp_path, tmp_path)

    assert status == 2
    assert archive in capsys.readouterr().err


def test_missing_default_weights_name_cache_file(
    harness, mit_root, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    argv = ["--dataset", "mit67", "--root", str(mit_root), "--backbone", "vgg19"]

    status = harness.main([*argv, "--weights", "DEFAULT"])

    assert status == 2
    message = capsys.readouterr().err
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert f"{cache / 'vgg19-dcbb9e9d.pth'} not found" in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert "~/.cache/torch/hub/checkpoints/" in message


def test_missing_weights_file_and_dataset_listed_together(
    harness, tmp_path, capsys
) -> None:
    argv = ["--dataset", "oxford5k", "--root", str(tmp_path / "absent")]

    status = harness.main([*argv, "--backbone", "alexnet", "--weights", "w.pth"])

    assert status == 2
    message = capsys.readouterr().err
    assert "cannot start, 3 problem(s)" in message
    assert "root folder not found" in message
    assert "weights: file w.pth not found" in message


def test_unknown_method_rejected(harness, mit_root, capsys) -> None:
    argv = ["--dataset", "holidays", "--root", str(mit_root), "--methods", "fc6"]

    with pytest.raises(SystemExit) as raised:
        harness.main(argv)

    assert raised.value.code == 2
    assert "--methods: fc6 not available for holidays" in capsys.readouterr().err


# ---------------------------------------------------------------- pure helpers


def test_make_row_difference(harness) -> None:
    row = harness.make_row("mit67", "vgg19", "crosslayer_conv", "d", measured=75.0)

    assert row["published"] == 74.4
    assert row["difference"] == pytest.approx(0.6)
    assert row["status"] == "ok"


def test_make_row_without_published_number(harness) -> None:
    row = harness.make_row("mit67", "vgg16", "crosslayer_conv", "d", measured=75.0)

    assert row["published"] is None
    assert row["difference"] is None


def test_make_row_nan_becomes_none(harness) -> None:
    row = harness.make_row("mit67", "vgg19", "fc6", "d", measured=float("nan"))

    assert row["measured"] is None
    assert row["difference"] is None


def test_cross_gram_slabs_match_direct_product(harness, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 23)).astype(np.float32)
    b = rng.standard_normal((5, 23)).astype(np.float32)
    monkeypatch.setattr(harness, "GRAM_SLAB", 7)

    floats = harness.cross_gram(a, b, harness.as_float)
    signs = harness.cross_gram(a, b, harness.as_sign_codes)

    np.testing.assert_allclose(floats, a.astype(np.float64) @ b.T, rtol=1e-5)
    np.testing.assert_array_equal(signs, np.sign(a) @ np.sign(b).T)


@pytest.mark.parametrize("multilabel", [False, True])
def test_span_embedding_keeps_svm_decisions(harness, multilabel: bool) -> None:
    rng = np.random.default_rng(1)
    train = rng.standard_normal((12, 300))
    test = rng.standard_normal((5, 300))
    if multilabel:
        y = (rng.random((12, 3)) < 0.5).astype(int)
    else:
        y = np.repeat([0, 1, 2], 4)
    svc = LinearSVC(C=0.1, dual=True, max_iter=100_000, tol=1e-8, random_state=0)
    embedded_train, embedded_test = harness.span_embedding(
        train @ train.T, test @ train.T
    )

    if multilabel:
        from sklearn.multiclass import OneVsRestClassifier

        svc = OneVsRestClassifier(svc)
    full = svc.fit(train, y).decision_function(test)
    embedded = svc.fit(embedded_train, y).decision_function(embedded_test)

    assert embedded_train.shape == (12, 12)
    np.testing.assert_allclose(embedded, full, atol=1e-4)


def test_retrieval_subset_renumbers(harness) -> None:
    dataset = RetrievalDataset(
        name="toy",
        root="/toy",
        database_names=list("abcdef"),
        database_paths=[f"/toy/{c}.jpg" for c in "abcdef"],
        query_names=["q0", "q1"],
        query_paths=["/toy/b.jpg", "/toy/e.jpg"],
        query_indices=np.array([1, 4]),
        query_boxes=None,
        positives=[np.array([3, 5]), np.array([0])],
        junk=[np.array([4]), np.array([])],
    )

    subset = harness.retrieval_subset(dataset, n_queries=1, n_distractors=0, seed=0)

    # Kept: b (query), d and f (positives), e (junk), renumbered 0..3.
    assert subset.database_names == ["b", "d", "e", "f"]
    assert subset.query_names == ["q0"]
    assert subset.query_indices.tolist() == [0]
    assert subset.positives[0].tolist() == [1, 3]
    assert subset.junk[0].tolist() == [2]


def test_n_cv_folds(harness) -> None:
    assert harness.n_cv_folds(np.array([0, 0, 0, 1, 1, 1, 1]), False) == 3
    assert harness.n_cv_folds(np.array([0, 0, 1, 1, 1]), False) == 2
    assert harness.n_cv_folds(np.zeros((2, 4)), True) == 2


def test_crop_to_box_clips_to_image(harness, tmp_path) -> None:
    path = tmp_path / "image.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(path)

    inside = harness.crop_to_box(str(path), np.array([4.4, 5.6, 20.5, 25.0]))
    outside = harness.crop_to_box(str(path), np.array([-3.0, 2.0, 55.0, 90.0]))

    assert inside.size == (16, 19)
    assert outside.size == (40, 28)

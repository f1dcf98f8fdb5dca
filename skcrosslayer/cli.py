"""Command-line interface of skcrosslayer.

Commands: ``demo``, ``layers``, ``extract``, ``classify``, ``retrieve`` and
``evaluate-retrieval``. The two retrieval commands live in
:mod:`skcrosslayer.retrieval_cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__

__all__ = ["main"]

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
}  # fmt: skip


def find_images(inputs: list[str]) -> list[Path]:
    """Expand files and folders (searched recursively) into sorted image paths."""
    paths = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(
                p
                for p in entry.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
            if not found:
                raise FileNotFoundError(
                    f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found "
                    f"under {str(entry)!r}"
                )
            paths.extend(found)
        elif entry.is_file():
            paths.append(entry)
        else:
            raise FileNotFoundError(f"input {str(entry)!r} not found")
    return paths


def _add_pooler_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cross-layer pooling")
    group.add_argument("--backbone", default="efficientnet_lite0")
    group.add_argument(
        "--weights",
        default="DEFAULT",
        help="'DEFAULT', a state-dict file, or 'none' for random initialisation",
    )
    group.add_argument(
        "--layers",
        nargs=2,
        metavar=("LOCAL", "GUIDANCE"),
        help="local and guidance layer names (default: the backbone's preset)",
    )
    group.add_argument("--neighborhood", type=int, default=1)
    group.add_argument("--n-components", type=int, default=None)
    group.add_argument("--pooling", choices=["sum", "max"], default="sum")
    group.add_argument(
        "--image-size", type=int, default=None, help="square input side in pixels"
    )
    group.add_argument(
        "--max-size",
        type=int,
        default=None,
        help="keep the aspect ratio, longer side at most this many pixels; "
        "images with a side under 64 px are upscaled until it is 64 px",
    )
    group.add_argument(
        "--size-multiple",
        type=int,
        default=None,
        help="with --max-size, round each side to a multiple of this (e.g. 32) "
        "so that batches stay full",
    )
    group.add_argument("--batch-size", type=int, default=32)
    group.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    group.add_argument(
        "--workers", type=int, default=2, help="image decoding processes"
    )
    group.add_argument(
        "--decode-on-device",
        action="store_true",
        help="decode JPEG files on the device (nvJPEG on CUDA) instead of in "
        "the workers",
    )


# Options of how a pooler runs, which may change for a loaded pooler. Every
# other pooler option defines the features, so the saved model fixes it.
_RUN_OPTIONS = {
    "batch_size": "batch_size",
    "device": "device",
    "workers": "n_workers",
    "decode_on_device": "decode_on_device",
}


def _loaded_pooler(args):
    """Load the pooler of ``--model`` and apply the run options given."""
    defaults = argparse.ArgumentParser()
    _add_pooler_options(defaults)
    defaults = vars(defaults.parse_args([]))
    changed = [name for name in defaults if getattr(args, name) != defaults[name]]
    fixed = [name for name in changed if name not in _RUN_OPTIONS]
    if fixed:
        flags = ", ".join("--" + name.replace("_", "-") for name in fixed)
        raise ValueError(
            f"{flags} would change the features, which the saved pooler "
            f"{args.model!r} fixes; leave out {flags} to use the saved pooler, "
            "or --model to fit a new one"
        )
    import joblib

    pooler = joblib.load(args.model)
    pooler.set_params(
        **{_RUN_OPTIONS[name]: getattr(args, name) for name in changed},
        verbose=args.verbose,
    )
    return pooler


def _pooler_from_args(args):
    from .pooler import CrossLayerPooler

    weights = None if args.weights.lower() == "none" else args.weights
    return CrossLayerPooler(
        backbone=args.backbone,
        weights=weights,
        layers=tuple(args.layers) if args.layers else None,
        neighborhood=args.neighborhood,
        n_components=args.n_components,
        pooling=args.pooling,
        image_size=args.image_size,
        max_size=args.max_size,
        size_multiple=args.size_multiple,
        batch_size=args.batch_size,
        device=args.device,
        n_workers=args.workers,
        decode_on_device=args.decode_on_device,
        random_state=0,
        verbose=args.verbose,
    )


# -- commands ----------------------------------------------------------------


def _run_demo(args) -> int:
    from .demo import format_demo, run_demo

    results = run_demo(n_workers=args.workers, verbose=args.verbose)
    print(json.dumps(results, indent=2) if args.json else format_demo(results))
    return 0


def _run_layers(args) -> int:
    from .backbones import list_layers

    layers = list_layers(args.backbone, args.image_size)
    width = max(len(layer.name) for layer in layers) + 2
    print(f"{'layer':<{width}}{'channels':>9}{'grid':>10}  output")
    for layer in layers:
        grid = f"{layer.height}x{layer.width}"
        sign = "nonnegative" if layer.nonnegative else "linear, can be negative"
        print(f"{layer.name:<{width}}{layer.n_channels:>9}{grid:>10}  {sign}")
    return 0


def _run_extract(args) -> int:
    import joblib

    from ._io import atomic_write, check_writable
    from ._resumable import extract_resumable

    output = Path(args.output)
    if output.suffix != ".npy":
        output = output.with_name(output.name + ".npy")
    sidecar = output.with_suffix(".paths.txt")
    check_writable(output, args.overwrite)
    if args.save_model:
        check_writable(Path(args.save_model), args.overwrite)
    paths = find_images(args.inputs)

    def fit(paths):
        if args.model:
            return _loaded_pooler(args)
        return _pooler_from_args(args).fit(paths)

    # Finished chunks are kept in OUTPUT.npy.partial/, so rerunning an
    # interrupted command only computes the rest.
    pooler, features, n_resumed = extract_resumable(
        fit, paths, output, overwrite=args.overwrite, chunk_size=args.chunk_size
    )
    if n_resumed:
        print(f"resumed an interrupted run: {n_resumed} images were already done")
    if args.save_model:
        atomic_write(Path(args.save_model), lambda f: joblib.dump(pooler, f))

    lines = "".join(f"{os.fspath(p)}\n" for p in paths)
    atomic_write(sidecar, lambda f: f.write(lines), mode="w")
    print(f"wrote {features.shape[0]} x {features.shape[1]} features to {output}")
    print(f"wrote the image paths in row order to {sidecar}")
    return 0


def _read_class_folders(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ValueError(
            f"{str(root)!r} must hold one folder per class (at least 2), "
            f"found {len(classes)}"
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = find_images([str(root / name)])
        paths.extend(found)
        labels.extend([label] * len(found))
    return paths, np.asarray(labels), classes


def _read_split_file(split_file: Path, root: Path, paths: list[Path]) -> np.ndarray:
    """Return a boolean mask of test images from ``<path> <train|test>`` lines."""
    split = {}
    for number, line in enumerate(split_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, _, part = line.rpartition(" ")
        if part not in ("train", "test") or not name:
            raise ValueError(
                f"{split_file}:{number}: expected '<path relative to DATA_DIR> "
                f"train' or '... test', got {line!r}"
            )
        split[(root / name.strip()).resolve()] = part
    missing = [p for p in paths if p.resolve() not in split]
    if missing:
        raise ValueError(
            f"{len(missing)} images are not listed in {split_file}, for example "
            f"{str(missing[0])!r}; list every image as train or test"
        )
    return np.asarray([split[p.resolve()] == "test" for p in paths])


def _run_classify(args) -> int:
    from sklearn.metrics import accuracy_score, classification_report
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.svm import LinearSVC

    from .quantization import SignQuantizer

    root = Path(args.data_dir)
    paths, labels, classes = _read_class_folders(root)
    if args.split_file:
        is_test = _read_split_file(Path(args.split_file), root, paths)
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    else:
        train, test = train_test_split(
            np.arange(len(paths)),
            test_size=args.test_size,
            stratify=labels,
            random_state=args.seed,
        )
    pooler = _pooler_from_args(args).fit([paths[i] for i in train])
    features_train = pooler.transform([paths[i] for i in train])
    features_test = pooler.transform([paths[i] for i in test])
    if args.sign:
        quantizer = SignQuantizer()
        features_train = quantizer.fit_transform(features_train)
        features_test = quantizer.transform(features_test)

    # The features are computed once; cross-validation only refits the SVM.
    n_folds = min(args.cv, np.bincount(labels[train]).min())
    search = GridSearchCV(
        LinearSVC(random_state=0),
        {"C": [0.01, 0.1, 1.0, 10.0]},
        cv=max(2, n_folds),
    ).fit(features_train, labels[train])
    predicted = search.predict(features_test)
    accuracy = accuracy_score(labels[test], predicted)
    report = classification_report(
        labels[test],
        predicted,
        labels=np.arange(len(classes)),
        target_names=classes,
        output_dict=args.json,
        zero_division=0,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "accuracy": accuracy,
                    "C": search.best_params_["C"],
                    "n_train": len(train),
                    "n_test": len(test),
                    "layers": list(pooler.layers_),
                    "backbone": pooler.backbone,
                    "n_features": pooler.n_features_out_,
                    "report": report,
                },
                indent=2,
            )
        )
    else:
        print(
            f"{len(train)} training and {len(test)} test images, {len(classes)} classes"
        )
        print(
            f"features: {pooler.backbone} {' x '.join(pooler.layers_)}, "
            f"{pooler.n_features_out_} dims; LinearSVC C={search.best_params_['C']}"
        )
        print(f"accuracy: {accuracy:.4f}\n")
        print(report)
    return 0


def _run_retrieve(args) -> int:
    from .retrieval_cli import run_retrieve

    return run_retrieve(args)


def _run_evaluate_retrieval(args) -> int:
    from .retrieval_cli import run_evaluate_retrieval

    return run_evaluate_retrieval(args)


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("search")
    group.add_argument(
        "--binary",
        action="store_true",
        help="compare packed sign codes by Hamming distance in place of floats",
    )
    group.add_argument(
        "--n-channels",
        type=int,
        default=None,
        metavar="K",
        help="keep the K guidance channels of largest mean activation in each "
        "query (default: all channels)",
    )
    group.add_argument(
        "--selection-mode",
        choices=["query", "symmetric"],
        default="query",
        help="'query': only queries drop channels; 'symmetric': database "
        "images keep their own K channels too (default: query)",
    )


def _add_retrieval_parsers(commands) -> list[argparse.ArgumentParser]:
    retrieve = commands.add_parser(
        "retrieve", help="rank database images by similarity to query images"
    )
    retrieve.add_argument(
        "--database", nargs="+", required=True, help="database image files or folders"
    )
    retrieve.add_argument(
        "--queries", nargs="+", required=True, help="query image files or folders"
    )
    retrieve.add_argument(
        "-k",
        "--n-neighbors",
        type=int,
        default=10,
        help="database images listed per query (default: 10)",
    )
    retrieve.add_argument("--json", action="store_true", help="print results as JSON")
    _add_search_options(retrieve)
    _add_pooler_options(retrieve)

    evaluate = commands.add_parser(
        "evaluate-retrieval",
        help="score retrieval on a benchmark stored in its official layout",
    )
    evaluate.add_argument("root", help="folder of the extracted benchmark")
    evaluate.add_argument(
        "--protocol",
        required=True,
        choices=[
            "holidays",
            "oxford",
            "paris",
            "roxford",
            "rparis",
            "ukbench",
            "groups",
        ],
        help="benchmark layout and scoring: INRIA Holidays, Oxford5k, Paris6k, "
        "revisited Oxford or Paris (Easy/Medium/Hard), UKBench, or one folder "
        "per group of images",
    )
    evaluate.add_argument(
        "--query-images",
        choices=["full", "box"],
        default="full",
        help="'full': whole query images, as in the TPAMI 2017 cross-layer "
        "pooling setup; 'box': crop Oxford and Paris queries to their box "
        "(default: full)",
    )
    evaluate.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="folder for pooled vectors (default: ROOT/.skcrosslayer-cache, or "
        "$XDG_CACHE_HOME/skcrosslayer/features when ROOT is read-only)",
    )
    evaluate.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write cached vectors; the database vectors then "
        "go to a temporary file under TMPDIR, removed at the end",
    )
    evaluate.add_argument("--json", action="store_true", help="print results as JSON")
    _add_search_options(evaluate)
    _add_pooler_options(evaluate)
    return [retrieve, evaluate]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skcrosslayer",
        description="Cross-convolutional-layer pooling of pretrained CNNs.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run the offline demo on bundled real photos"
    )
    demo.add_argument("--json", action="store_true", help="print results as JSON")
    demo.add_argument("--workers", type=int, default=2)

    layers = commands.add_parser("layers", help="list the layers of a backbone")
    layers.add_argument("backbone")
    layers.add_argument(
        "--image-size", type=int, default=None, help="input side for the grids"
    )

    extract = commands.add_parser(
        "extract", help="write cross-layer pooled features of images to .npy"
    )
    extract.add_argument("inputs", nargs="+", help="image files or folders")
    extract.add_argument("-o", "--output", required=True, help="output .npy file")
    extract.add_argument(
        "--model",
        help="a fitted CrossLayerPooler saved with joblib (else fit here); only "
        "--batch-size, --device, --workers and --decode-on-device apply to it",
    )
    extract.add_argument("--save-model", help="save the fitted pooler with joblib")
    extract.add_argument(
        "--overwrite", action="store_true", help="replace an existing output"
    )
    extract.add_argument(
        "--chunk-size",
        type=int,
        default=1000,
        help="images per saved chunk; an interrupted run resumes after the "
        "last finished chunk",
    )
    _add_pooler_options(extract)

    classify = commands.add_parser(
        "classify", help="train and test a linear SVM on a folder per class"
    )
    classify.add_argument("data_dir", help="folder with one subfolder per class")
    classify.add_argument("--test-size", type=float, default=0.25)
    classify.add_argument(
        "--split-file",
        help="text file of '<path relative to DATA_DIR> <train|test>' lines",
    )
    classify.add_argument("--cv", type=int, default=3, help="folds to choose C")
    classify.add_argument("--seed", type=int, default=0, help="split seed")
    classify.add_argument(
        "--sign", action="store_true", help="apply feature sign quantisation"
    )
    classify.add_argument("--json", action="store_true", help="print results as JSON")
    _add_pooler_options(classify)

    retrieval = _add_retrieval_parsers(commands)
    for sub in (demo, layers, extract, classify, *retrieval):
        sub.add_argument("-v", "--verbose", action="count", default=0)
    return parser


_COMMANDS = {
    "demo": _run_demo,
    "layers": _run_layers,
    "extract": _run_extract,
    "classify": _run_classify,
    "retrieve": _run_retrieve,
    "evaluate-retrieval": _run_evaluate_retrieval,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO if args.verbose == 1 else logging.DEBUG,
            format="%(levelname)s %(name)s: %(message)s",
        )
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"skcrosslayer {args.command}: error: {exc}", file=sys.stderr)
        return 2

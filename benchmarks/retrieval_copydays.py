"""Near-duplicate retrieval among real distractors: cross-layer vs global pooling.

Queries: the near-duplicate set of :func:`skcrosslayer.demo.copy_detection_images`,
12 photos bundled with scikit-image, scikit-learn and matplotlib in 8 versions
each (the original and 7 edits in the manner of INRIA Copydays: crop, rotation,
strong JPEG, blur, colour change, mirrored crop, downscale). Every one of the
96 images queries the database. Its positives are the 7 other versions of its
photo, and the query itself is junk, as in the INRIA Holidays protocol.

Database: the 96 images plus real distractors from Debian packages, obtained
with ``apt-get download`` and extracted with ``dpkg-deb -x`` into the
git-ignored ``benchmarks/data``:

- the photographs among the stamps of ``tuxpaint-stamps-default``, selected
  by ``benchmarks/tuxpaint.py`` and composited on white;
- the JPEG photographs of the wallpaper packages ``lomiri-wallpapers-16.04``
  and ``mate-backgrounds`` (artwork and resolution variants left out, see
  :func:`wallpaper_photos`).

Methods, all on EfficientNet-Lite0 with its ImageNet weights, aspect ratio
kept and the longer side capped at 448 px:

- cross-layer pooling (L. Liu, C. Shen, A. van den Hengel,
  "Cross-convolutional-layer Pooling for Image Recognition", TPAMI 2017) of
  the last block (320 channels, local features) by the head ``conv_head``
  (1280 guidance channels), float or binarised, with adaptive channel
  selection of k channels per query ("query" mode) or per image
  ("symmetric" mode), and binarised with every channel but the query's
  all-zero blocks (channels that never fire) left out, as
  :class:`~skcrosslayer.selection.SelectedChannelRetriever` does;
- MAC, SPoC, GeM and R-MAC of ``conv_head``, l2-normalised, raw and with PCA
  whitening.

The cross-layer PCA and the whitening are fitted on the distractors only, so
no query image takes part in any fit. The report gives the mAP, the bytes a
database image needs in storage, and the search time per query per 1,000
database images (one BLAS thread, best of three runs).

Run from the repository root::

    .venv/bin/python benchmarks/retrieval_copydays.py \\
        --json benchmarks/results/retrieval_copydays.json
    .venv/bin/python benchmarks/retrieval_copydays.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tuxpaint  # noqa: E402

from skcrosslayer import CrossLayerPooler, GlobalPooler  # noqa: E402
from skcrosslayer.baselines import PCAWhitening  # noqa: E402
from skcrosslayer.binary import FeatureBinarizer  # noqa: E402
from skcrosslayer.demo import copy_detection_images  # noqa: E402
from skcrosslayer.metrics import mean_average_precision  # noqa: E402
from skcrosslayer.search import ImageRetriever  # noqa: E402
from skcrosslayer.selection import (  # noqa: E402
    ChannelSelector,
    SelectedChannelRetriever,
)

logger = logging.getLogger("retrieval_copydays")

BACKBONE = "efficientnet_lite0"
MAX_SIZE = 448

WALLPAPER_PACKAGES = ("lomiri-wallpapers-16.04", "mate-backgrounds")

# Wallpapers that are artwork, not photographs: mate-backgrounds' "abstract"
# and "desktop" folders (a painting, a logo) and one colour gradient.
ARTWORK_FOLDERS = ("abstract", "desktop")
ARTWORK_FILES = ("umang_by_Abhishek_Mudgal.jpg",)

# Larger copies of one wallpaper are named <name>_<width>x<height>.jpg.
RESOLUTION_VARIANT = re.compile(r".+_\d+x\d+")

# Channels kept per query; None keeps all 1280.
CHANNEL_COUNTS = (10, 30, 50, 100, None)

GLOBAL_METHODS = {"MAC": "max", "SPoC": "sum", "GeM": "gem", "R-MAC": "rmac"}

# Search timings: repetitions, of which the fastest is reported.
N_TIMING_RUNS = 3

# Quick run: few distractors and two channel counts.
QUICK_DISTRACTORS = 24
QUICK_CHANNEL_COUNTS = (10, None)


# -- distractors ---------------------------------------------------------------


def _run(command: list[str], cwd: Path | None = None) -> str:
    """Run ``command`` and return its stdout, raising RuntimeError on failure."""
    if shutil.which(command[0]) is None:
        raise RuntimeError(
            f"{command[0]} not found; the wallpaper distractors come from Debian "
            "packages, so run this on Debian or Ubuntu"
        )
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"command {' '.join(command)!r} failed with exit status "
            f"{result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout


def extract_package(package: str, data_dir: Path) -> tuple[Path, str]:
    """Return the extracted file tree and version of a Debian package.

    A ``<package>_*.deb`` in ``data_dir`` is used, or one is downloaded there
    with ``apt-get download``. It is extracted once with ``dpkg-deb -x`` into
    ``data_dir/<package>_<version>``, which later runs reuse.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(data_dir.glob(f"{package}_*.deb"))
    if not debs:
        logger.info("Downloading %s with apt-get into %s", package, data_dir)
        _run(["apt-get", "download", package], cwd=data_dir)
        debs = sorted(data_dir.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} left no .deb in {data_dir}")
    deb = debs[-1]
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    target = data_dir / f"{package}_{version}"
    marker = target / ".extraction-complete"
    if not marker.is_file():
        shutil.rmtree(target, ignore_errors=True)
        # Extract beside the target and rename, so the target is never partial.
        staging = Path(tempfile.mkdtemp(prefix="extracting-", dir=data_dir))
        try:
            _run(["dpkg-deb", "-x", str(deb), str(staging)])
            (staging / marker.name).write_text(f"{deb.name}\n")
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target, version


def wallpaper_photos(tree: Path) -> list[Path]:
    """Return the JPEG photographs of an extracted wallpaper package, sorted.

    Left out: artwork (mate-backgrounds' ``abstract`` and ``desktop`` folders,
    :data:`ARTWORK_FILES`) and larger resolution copies of another file.
    """
    photos = []
    for path in sorted(tree.rglob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg") or not path.is_file():
            continue
        if set(ARTWORK_FOLDERS) & set(path.parent.parts) or path.name in ARTWORK_FILES:
            continue
        if RESOLUTION_VARIANT.fullmatch(path.stem):
            continue
        photos.append(path)
    return photos


def load_distractors(data_dir: Path, tuxpaint_deb: Path | None) -> dict:
    """Return the distractor images and where they come from."""
    location = tuxpaint.find_stamps(data_dir, tuxpaint_deb)
    stamps = tuxpaint.select_photos(location.root)
    sources = {
        f"{tuxpaint.PACKAGE} {location.version}": f"{len(stamps.images)} photographs"
    }
    images = list(stamps.images)
    for package in WALLPAPER_PACKAGES:
        tree, version = extract_package(package, data_dir)
        photos = wallpaper_photos(tree)
        sources[f"{package} {version}"] = f"{len(photos)} JPEG photographs"
        images.extend(photos)
    return {"images": images, "sources": sources}


# -- features ------------------------------------------------------------------


def pool_cross_layer(queries, distractors, args) -> tuple[np.ndarray, CrossLayerPooler]:
    """Return the cross-layer vectors with strengths of queries then distractors."""
    pooler = CrossLayerPooler(
        BACKBONE,
        max_size=MAX_SIZE,
        channel_strengths=True,
        random_state=0,
        device="cpu",
        batch_size=args.batch_size,
        n_workers=args.n_workers,
    )
    pooler.fit(distractors)
    return pooler.transform(list(queries) + list(distractors)), pooler


def pool_global(method: str, images, args) -> np.ndarray:
    pooler = GlobalPooler(
        BACKBONE,
        method=method,
        max_size=MAX_SIZE,
        device="cpu",
        batch_size=args.batch_size,
        n_workers=args.n_workers,
    )
    return pooler.fit(images).transform(images)


# -- search --------------------------------------------------------------------


def timed_rankings(retriever, queries, n_database, query_block_mask=None):
    """Return the full rankings and the fastest of N_TIMING_RUNS search times."""
    seconds = []
    for _ in range(N_TIMING_RUNS):
        start = time.perf_counter()
        rankings = retriever.kneighbors(
            queries,
            n_database,
            return_distance=False,
            query_block_mask=query_block_mask,
        )
        seconds.append(time.perf_counter() - start)
    return rankings, min(seconds)


def score(rankings, groups, n_queries) -> float:
    """Return the mAP: positives are the other versions, the query is junk."""
    positives, junk = [], []
    for query in range(n_queries):
        members = np.flatnonzero(groups == groups[query])
        positives.append(members[members != query])
        junk.append([query])
    return mean_average_precision(rankings, positives, junk)


def result_row(name, rankings, seconds, n_bytes, groups, n_queries, n_database):
    return {
        "method": name,
        "mAP": score(rankings, groups, n_queries),
        "bytes_per_image": int(n_bytes),
        # Milliseconds per query per 1,000 database images.
        "ms_per_query_per_1000": 1000 * seconds / n_queries / (n_database / 1000),
    }


def cross_layer_rows(features, block_size, groups, n_queries, channel_counts):
    """Evaluate cross-layer pooling: float and binary, query and symmetric modes."""
    n_database = features.shape[0]
    n_guidance = features.shape[1] // (block_size + 1)
    queries = features[:n_queries]
    n_packed_bytes = -(-block_size // 8)
    rows = []
    for binary in (False, True):
        for mode in ("query", "symmetric"):
            for n_channels in channel_counts:
                if mode == "symmetric" and n_channels is None:
                    continue
                selector = ChannelSelector(n_channels, mode=mode, block_size=block_size)
                database = selector.fit_transform(features)
                query_vectors = selector.transform(queries)
                n_kept = n_guidance if n_channels is None else n_channels
                query_mask = database_mask = None
                if binary:
                    binarizer = FeatureBinarizer(block_size=block_size).fit(database)
                    database = binarizer.transform(database)
                    query_vectors = binarizer.transform(query_vectors)
                    if n_channels is not None:
                        query_mask = selector.block_mask(queries)
                    if mode == "symmetric":
                        database_mask = selector.block_mask(features)
                    retriever = ImageRetriever(
                        "hamming", block_size=block_size, mode=mode
                    ).fit(database, database_block_mask=database_mask)
                    block_bytes = n_packed_bytes
                else:
                    retriever = ImageRetriever(block_size=block_size).fit(database)
                    block_bytes = 4 * block_size
                rankings, seconds = timed_rankings(
                    retriever, query_vectors, n_database, query_mask
                )
                # Symmetric storage: the kept blocks and a 2-byte index each.
                if mode == "symmetric":
                    n_bytes = n_kept * (block_bytes + 2)
                else:
                    n_bytes = n_guidance * block_bytes
                label = "all" if n_channels is None else str(n_channels)
                name = (
                    f"cross-layer {'binary' if binary else 'float'}, {mode} "
                    f"mode, k = {label}"
                )
                rows.append(
                    result_row(
                        name, rankings, seconds, n_bytes, groups, n_queries, n_database
                    )
                )
                logger.info("%s: mAP %.4f", name, rows[-1]["mAP"])
                if binary and n_channels is None:
                    rows.append(
                        zero_blocks_left_out_row(
                            database, query_vectors, block_size, groups, n_queries
                        )
                    )
    return rows


def zero_blocks_left_out_row(database, queries, block_size, groups, n_queries):
    """Evaluate binary codes of every channel, leaving all-zero query blocks out.

    A guidance channel that never fires in an image pools to a zero block,
    which packs to all -1 signs and matches the zero blocks of every other
    image. SelectedChannelRetriever leaves such query blocks out, as a float
    inner product does.
    """
    n_database = database.shape[0]
    retriever = SelectedChannelRetriever("hamming", block_size=block_size).fit(database)
    rankings, seconds = timed_rankings(retriever, queries, n_database)
    name = "cross-layer binary, query mode, k = all, zero blocks left out"
    n_bytes = database.shape[1]
    row = result_row(name, rankings, seconds, n_bytes, groups, n_queries, n_database)
    logger.info("%s: mAP %.4f", name, row["mAP"])
    return row


def global_rows(vectors, name, groups, n_queries):
    n_database = vectors.shape[0]
    rows = []
    whitening = PCAWhitening().fit(vectors[n_queries:])
    for suffix, database in (("", vectors), (" + whitening", None)):
        if database is None:
            database = whitening.transform(vectors)
        retriever = ImageRetriever().fit(database)
        rankings, seconds = timed_rankings(retriever, database[:n_queries], n_database)
        n_bytes = 4 * database.shape[1]
        rows.append(
            result_row(
                name + suffix, rankings, seconds, n_bytes, groups, n_queries, n_database
            )
        )
        logger.info("%s: mAP %.4f", name + suffix, rows[-1]["mAP"])
    return rows


# -- report --------------------------------------------------------------------


def machine_facts() -> dict:
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
        "load_average_at_start": [round(v, 1) for v in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def format_table(rows: list[dict]) -> str:
    lines = [
        "| method | mAP | bytes / image | ms / query / 1,000 images |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['mAP']:.4f} | {row['bytes_per_image']:,} | "
            f"{row['ms_per_query_per_1000']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Near-duplicate retrieval with Debian photo distractors: "
        "cross-layer pooling with channel selection against MAC, SPoC, GeM and "
        "R-MAC on EfficientNet-Lite0.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(__file__).resolve().parent / "data",
        help="folder for downloaded and extracted packages (default: benchmarks/data)",
    )
    parser.add_argument(
        "--tuxpaint-deb",
        type=Path,
        help="a local tuxpaint-stamps-default_*.deb to use in place of a system "
        "install or apt-get download",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_DISTRACTORS} distractors, k in 10 and all",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per pass")
    parser.add_argument(
        "--n-workers", type=int, default=2, help="image decoding worker processes"
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    facts = machine_facts()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    queries, groups, _ = copy_detection_images()
    distractors = load_distractors(args.data_dir, args.tuxpaint_deb)
    distractor_images = distractors["images"]
    channel_counts = CHANNEL_COUNTS
    if args.quick:
        step = max(1, len(distractor_images) // QUICK_DISTRACTORS)
        distractor_images = distractor_images[::step][:QUICK_DISTRACTORS]
        channel_counts = QUICK_CHANNEL_COUNTS
    n_queries = len(queries)
    # Distractors get labels no query has.
    labels = np.concatenate([groups, np.full(len(distractor_images), -1)])
    images = list(queries) + list(distractor_images)
    print(
        f"{n_queries} queries ({len(set(groups))} photos x 8 versions), "
        f"{len(distractor_images)} distractors, {len(images)} database images"
    )
    for source, description in distractors["sources"].items():
        print(f"  {source}: {description}")

    timings = {}
    start = time.perf_counter()
    features, pooler = pool_cross_layer(queries, distractor_images, args)
    timings["cross-layer pooling (s)"] = round(time.perf_counter() - start, 1)
    block_size = pooler.n_components_
    n_guidance = pooler.n_guidance_channels_
    # Guidance channels with zero mean activation pool to zero blocks.
    zero_strengths = features[:, n_guidance * block_size :] == 0
    zero_channels = {
        "mean_fraction_of_channels": round(float(zero_strengths.mean()), 4),
        "max_fraction_of_channels": round(float(zero_strengths.mean(axis=1).max()), 4),
    }
    print(f"guidance channels that never fire in an image: {zero_channels}")

    with threadpool_limits(1, user_api="blas"):
        rows = cross_layer_rows(features, block_size, labels, n_queries, channel_counts)
    del features

    for name, method in GLOBAL_METHODS.items():
        start = time.perf_counter()
        vectors = pool_global(method, images, args)
        timings[f"{name} pooling (s)"] = round(time.perf_counter() - start, 1)
        with threadpool_limits(1, user_api="blas"):
            rows.extend(global_rows(vectors, name, labels, n_queries))

    table = format_table(rows)
    print()
    print(table)
    report = {
        "date": date,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": facts,
        "backbone": f"{BACKBONE}, ImageNet weights, max_size={MAX_SIZE}",
        "layers": list(pooler.layers_),
        "n_components": block_size,
        "n_guidance_channels": n_guidance,
        "zero_guidance_channels": zero_channels,
        "n_queries": n_queries,
        "n_distractors": len(distractor_images),
        "distractor_sources": distractors["sources"],
        "rows": rows,
        "seconds": {**timings, "total": round(time.perf_counter() - started, 1)},
    }
    print(json.dumps({k: report[k] for k in ("date", "machine", "seconds")}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of a grid search over pooling parameters with the activation cache.

In one run on the same real photos (two classes: edits of two photos):

- one candidate: ``GridSearchCV`` over a single pooling setting, no cache;
- six candidates: ``GridSearchCV`` over six pooling settings (neighbourhood,
  PCA size, normalisation) with ``CrossLayerPooler(memory=...)``, cold cache.

It prints both times, their ratio (the goal is at most 1.5) and the number of
images the backbone ran on, then checks that changing the backbone, the
weights or the resizing misses the cache.

Run: python benchmarks/gridsearch_cache.py [--n-images 48] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

import skcrosslayer._base
from skcrosslayer import CrossLayerPooler

GRID_6 = [
    {
        "pooler__neighborhood": [1],
        "pooler__n_components": [32, 64],
        "pooler__signed_sqrt": [True, False],
    },
    {"pooler__neighborhood": [3], "pooler__n_components": [32, 64]},
]


def two_class_images(folder: Path, n_images: int):
    import skimage.data

    paths, labels = [], []
    for label, photo in enumerate([skimage.data.chelsea(), skimage.data.rocket()]):
        base = Image.fromarray(photo)
        for i in range(n_images // 2):
            edited = base.crop((i * 3, i * 2, base.width - i * 4, base.height - i))
            edited = ImageEnhance.Color(edited).enhance(0.6 + 0.02 * i)
            if i % 2:
                edited = ImageOps.mirror(edited)
            path = folder / f"{label}-{i:03d}.jpg"
            edited.save(path, quality=90)
            paths.append(path)
            labels.append(label)
    return paths, np.asarray(labels)


class ImageCounter:
    def __init__(self):
        self.n_images = 0
        self.original = skcrosslayer._base.iter_activations

    def __call__(self, network, backbone, specs, items, *args, **kwargs):
        self.n_images += len(items)
        return self.original(network, backbone, specs, items, *args, **kwargs)


def search(paths, labels, grid, memory):
    pipeline = Pipeline(
        [
            ("pooler", CrossLayerPooler(n_workers=0, random_state=0, memory=memory)),
            ("svm", LinearSVC(random_state=0)),
        ]
    )
    counter = ImageCounter()
    start = time.perf_counter()
    with mock.patch.object(skcrosslayer._base, "iter_activations", counter):
        fitted = GridSearchCV(pipeline, grid, cv=2).fit(paths, labels)
    seconds = time.perf_counter() - start
    n_candidates = len(fitted.cv_results_["params"])
    return seconds, counter.n_images, n_candidates


def misses(paths, memory) -> dict:
    base = dict(n_workers=0, random_state=0, memory=memory, n_components=16)
    CrossLayerPooler(**base).fit(paths)
    changes = {
        "same parameters": {},
        "backbone": {"backbone": "efficientnet_lite1"},
        "weights": {"weights": None},
        "resizing": {"image_size": 192},
    }
    counts = {}
    for name, change in changes.items():
        counter = ImageCounter()
        with mock.patch.object(skcrosslayer._base, "iter_activations", counter):
            CrossLayerPooler(**{**base, **change}).fit(paths)
        counts[name] = counter.n_images
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=48)
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        paths, labels = two_class_images(folder, args.n_images)
        # Warm the network cache and the convolution kernels, untimed.
        CrossLayerPooler(n_workers=0, n_components=8).fit(paths[:4])

        one_grid = {"pooler__neighborhood": [1], "pooler__n_components": [32]}
        one_s, one_images, _ = search(paths, labels, one_grid, memory=None)
        six_s, six_images, n_candidates = search(
            paths, labels, GRID_6, memory=folder / "cache"
        )
        missed = misses(paths, folder / "cache-misses")

    results = {
        "n_images": len(paths),
        "one_candidate_s": round(one_s, 1),
        "one_candidate_backbone_images": one_images,
        "n_candidates": n_candidates,
        "cached_grid_s": round(six_s, 1),
        "cached_grid_backbone_images": six_images,
        "ratio": round(six_s / one_s, 2),
        "backbone_images_after_change": missed,
        "torch_threads": torch.get_num_threads(),
    }
    print(
        f"1 candidate, no cache: {one_s:.1f} s ({one_images} backbone images)\n"
        f"{n_candidates} candidates, cache: {six_s:.1f} s ({six_images} backbone "
        f"images)\nratio {six_s / one_s:.2f} (goal <= 1.5)"
    )
    print("backbone images after a change (0 = cache hit):", missed)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

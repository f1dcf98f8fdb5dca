"""Reduced-precision forward passes against float32, on real photos.

For each precision (float32, bfloat16, float16 where the device supports it)
it transforms the demo's 96 near-duplicate photos and 200 face patches with
the same fitted pooler, and reports the cosine similarity of every descriptor
to its float32 version (min and median), the near-duplicate mAP and the faces
accuracy of the demo protocol.

Run: python benchmarks/precision_check.py [--device cuda] [--json F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.svm import LinearSVC

from skcrosslayer import CrossLayerPooler
from skcrosslayer._extraction import resolve_device
from skcrosslayer.demo import copy_detection_images, face_patches
from skcrosslayer.metrics import rank_by_similarity, retrieval_average_precision


def near_duplicate_map(features, groups) -> float:
    rankings = rank_by_similarity(features @ features.T, exclude_self=True)
    scores = []
    for query, ranking in enumerate(rankings):
        positives = np.flatnonzero(
            (groups == groups[query]) & (np.arange(len(groups)) != query)
        )
        scores.append(retrieval_average_precision(ranking, positives))
    return float(np.mean(scores))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    precisions = ["float32", "bfloat16"] + (
        ["float16"] if device.type == "cuda" else []
    )

    photos, groups, _ = copy_detection_images()
    faces, labels = face_patches()
    train = np.r_[0:10, 100:110]
    test = np.setdiff1d(np.arange(200), train)
    base = CrossLayerPooler(device=args.device, n_workers=2, random_state=0)
    photo_pooler = base.fit(photos)
    reference = photo_pooler.transform(photos)

    results = []
    for precision in precisions:
        pooler = photo_pooler.set_params(precision=precision)
        features = pooler.transform(photos)
        cosine = np.sum(features * reference, axis=1) / (
            np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12
        )
        face_pooler = CrossLayerPooler(
            device=args.device, n_workers=2, random_state=0, precision=precision
        ).fit([faces[i] for i in train])
        face_features = face_pooler.transform(faces)
        svm = LinearSVC(random_state=0).fit(face_features[train], labels[train])
        row = {
            "precision": precision,
            "cosine_min": float(cosine.min()),
            "cosine_median": float(np.median(cosine)),
            "mAP": near_duplicate_map(features, groups),
            "faces_accuracy": float(
                np.mean(svm.predict(face_features[test]) == labels[test])
            ),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": str(device), "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

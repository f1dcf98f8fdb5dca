"""The offline demo: real photos, real EfficientNet-Lite0 weights, two tasks.

(a) Faces against non-faces: the 200 real 25x25 patches of scikit-image's
``lfw_subset`` (100 faces, 100 non-faces), a stratified half for training,
LinearSVC on the features, accuracy on the other half.

(b) Near-duplicate retrieval: photos that ship with scikit-image,
scikit-learn and matplotlib, each with seven edited copies (centre crop,
rotation, strong JPEG, blur, colour change, flip, downscale) in the manner of
the INRIA Copydays benchmark. Every image queries all the others; the copies
of the same photo are its positives; the score is the mean average precision.

Both tasks compare cross-layer pooling with global average pooling of the
local layer and of the guidance layer of the same network.
"""

from __future__ import annotations

import io
import logging
import time

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

from .baselines import GlobalPooler
from .metrics import retrieval_average_precision
from .pooler import CrossLayerPooler

__all__ = ["copy_detection_images", "face_patches", "run_demo"]

logger = logging.getLogger(__name__)

# Photos bundled with the installed packages (no download).
# Training images of the faces task: few, so that the methods separate.
_N_FACE_TRAIN = 20

_SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "rocket",
)


def face_patches() -> tuple[list[np.ndarray], np.ndarray]:
    """Return scikit-image's 200 real 25x25 patches and labels (1 = face)."""
    from skimage.data import lfw_subset

    patches = lfw_subset()
    images = [np.round(p * 255).astype(np.uint8) for p in patches]
    labels = np.r_[np.ones(100, dtype=int), np.zeros(100, dtype=int)]
    return images, labels


def _bundled_photos() -> dict[str, Image.Image]:
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {n: Image.fromarray(getattr(skimage.data, n)()) for n in _SKIMAGE_PHOTOS}
    photos["motorcycle"] = Image.fromarray(skimage.data.stereo_motorcycle()[0])
    sample = load_sample_images()
    for name, array in zip(("china", "flower"), sample.images):
        photos[name] = Image.fromarray(array)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        photos["grace_hopper"] = Image.open(file).convert("RGB")
    return {name: photo.convert("RGB") for name, photo in photos.items()}


def _edited_copies(photo: Image.Image) -> dict[str, Image.Image]:
    """Return seven strong edits of ``photo``, as in copy-detection benchmarks."""
    width, height = photo.size

    def crop(left, top, right, bottom):
        box = (width * left, height * top, width * right, height * bottom)
        return photo.crop(tuple(round(v) for v in box))

    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=5)
    buffer.seek(0)
    tiny = photo.resize((max(1, width // 10), max(1, height // 10)))
    return {
        # A quarter of the area, off centre.
        "crop": crop(0.1, 0.35, 0.6, 0.85),
        "rotate": photo.rotate(25, resample=Image.Resampling.BICUBIC, expand=True),
        "jpeg": Image.open(buffer).convert("RGB"),
        "blur": photo.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 60)),
        "colour": ImageOps.posterize(
            ImageEnhance.Color(ImageEnhance.Brightness(photo).enhance(1.6)).enhance(
                0.1
            ),
            3,
        ),
        "flip-crop": ImageOps.mirror(crop(0.25, 0.0, 1.0, 0.75)),
        "downscale": tiny,
    }


def copy_detection_images() -> tuple[list[Image.Image], np.ndarray, list[str]]:
    """Return the near-duplicate set: images, photo group labels and names."""
    images, groups, names = [], [], []
    for group, (name, photo) in enumerate(sorted(_bundled_photos().items())):
        variants = {"original": photo, **_edited_copies(photo)}
        for edit, image in variants.items():
            images.append(image)
            groups.append(group)
            names.append(f"{name}/{edit}")
    return images, np.asarray(groups), names


def _classification_accuracy(transformer, images, labels) -> float:
    train, test = train_test_split(
        np.arange(len(images)),
        train_size=_N_FACE_TRAIN,
        stratify=labels,
        random_state=0,
    )
    train_images = [images[i] for i in train]
    features_train = transformer.fit(train_images).transform(train_images)
    features_test = transformer.transform([images[i] for i in test])
    classifier = LinearSVC(C=1.0, random_state=0).fit(features_train, labels[train])
    return float(np.mean(classifier.predict(features_test) == labels[test]))


def _retrieval_map(transformer, images, groups) -> float:
    features = transformer.fit(images).transform(images)
    similarities = features @ features.T
    precisions = []
    for query in range(len(images)):
        order = np.argsort(-similarities[query], kind="stable")
        ranking = order[order != query]
        positives = np.flatnonzero(
            (groups == groups[query]) & (np.arange(len(groups)) != query)
        )
        precisions.append(retrieval_average_precision(ranking, positives))
    return float(np.mean(precisions))


def _methods(n_workers: int, verbose: int) -> dict:
    common = dict(n_workers=n_workers, verbose=verbose)
    pooler = CrossLayerPooler(random_state=0, **common)
    local, guidance = pooler._backbone_spec().default_pair
    return {
        f"cross-layer {local} x {guidance}": pooler,
        f"average pooling {local}": GlobalPooler(layer=local, **common),
        f"average pooling {guidance}": GlobalPooler(layer=guidance, **common),
    }


def run_demo(n_workers: int = 2, verbose: int = 0) -> dict:
    """Run both tasks and return their scores per method.

    Returns
    -------
    dict
        ``{"backbone": ..., "classification": {"dataset": ..., "results":
        {method: {"accuracy": float}}}, "retrieval": {..., "results":
        {method: {"mAP": float}}}, "seconds": float}``.
    """
    start = time.perf_counter()
    faces, face_labels = face_patches()
    photos, photo_groups, _ = copy_detection_images()

    classification, retrieval = {}, {}
    for name, transformer in _methods(n_workers, verbose).items():
        logger.info("Demo: %s", name)
        classification[name] = {
            "accuracy": _classification_accuracy(transformer, faces, face_labels)
        }
        retrieval[name] = {"mAP": _retrieval_map(transformer, photos, photo_groups)}

    return {
        "backbone": "efficientnet_lite0 (ImageNet weights, offline package)",
        "classification": {
            "dataset": "scikit-image lfw_subset: 100 faces vs 100 non-faces, "
            f"{_N_FACE_TRAIN} training images (stratified), the other "
            f"{200 - _N_FACE_TRAIN} for testing, LinearSVC(C=1)",
            "results": classification,
        },
        "retrieval": {
            "dataset": f"{len(set(photo_groups))} bundled photos x 8 versions "
            "(original and 7 edits), every image queries the others",
            "results": retrieval,
        },
        "seconds": round(time.perf_counter() - start, 1),
    }


def format_demo(results: dict) -> str:
    """Format :func:`run_demo` results as a plain-text table."""
    lines = [f"backbone: {results['backbone']}", ""]
    width = max(len(m) for m in results["classification"]["results"]) + 2
    lines.append(f"{'method':<{width}}{'faces accuracy':>16}{'copies mAP':>12}")
    for method, scores in results["classification"]["results"].items():
        retrieval = results["retrieval"]["results"][method]
        lines.append(
            f"{method:<{width}}{scores['accuracy']:>16.3f}{retrieval['mAP']:>12.3f}"
        )
    lines += [
        "",
        f"classification: {results['classification']['dataset']}",
        f"retrieval: {results['retrieval']['dataset']}",
        f"total time: {results['seconds']} s",
    ]
    return "\n".join(lines)

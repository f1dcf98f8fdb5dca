"""End-to-end checks on a CUDA machine, written to one JSON file.

Each check records what it measured and whether it passed, and a failing
check does not stop the others:

- ``device_auto``: ``device="auto"`` resolves to CUDA, and the same fitted
  pooler gives the same descriptors on CUDA as on the CPU (cosine);
- ``decode_on_device``: JPEG files decoded with nvJPEG and resized on the GPU
  against PIL decoding (cosine), and a truncated JPEG reported by its path;
- ``grid_search``: ``GridSearchCV(n_jobs=2)`` over a pipeline whose pooler
  runs on CUDA with two decoding workers, after CUDA is initialised in the
  parent process, finishes without errors from forked children.

Run: python benchmarks/gpu_smoke.py [--json F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from skcrosslayer import CrossLayerPooler, SignQuantizer
from skcrosslayer._extraction import resolve_device
from skcrosslayer.demo import copy_detection_images, face_patches
from skcrosslayer.exceptions import ImageLoadError


def cosines(a: np.ndarray, b: np.ndarray) -> dict:
    values = np.sum(a * b, axis=1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    )
    return {"min": float(values.min()), "median": float(np.median(values))}


def photo_files(folder: Path) -> list[Path]:
    images, _, _ = copy_detection_images()
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:03d}.jpg"
        image.convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


def check_device_auto(paths) -> dict:
    pooler = CrossLayerPooler(device="cpu", n_workers=2, random_state=0)
    pooler.fit(paths[:32])
    on_cpu = pooler.transform(paths)
    on_cuda = pooler.set_params(device="auto").transform(paths)
    similarity = cosines(on_cpu, on_cuda)
    return {
        "auto_resolves_to": str(resolve_device("auto")),
        "cosine_cuda_to_cpu": similarity,
        "passed": resolve_device("auto").type == "cuda" and similarity["min"] > 0.99,
    }


def check_decode_on_device(paths, folder: Path) -> dict:
    pooler = CrossLayerPooler(device="cuda", n_workers=2, max_size=512, random_state=0)
    pooler.fit(paths[:32])
    start = time.perf_counter()
    with_pil = pooler.transform(paths)
    pil_seconds = time.perf_counter() - start
    pooler.set_params(decode_on_device=True)
    start = time.perf_counter()
    with_nvjpeg = pooler.transform(paths)
    nvjpeg_seconds = time.perf_counter() - start
    similarity = cosines(with_pil, with_nvjpeg)

    truncated = folder / "truncated.jpg"
    truncated.write_bytes(paths[0].read_bytes()[:2000])
    try:
        pooler.transform([paths[1], truncated])
        message = None
    except ImageLoadError as exc:
        message = str(exc)
    _, valid = pooler.set_params(on_error="skip").transform_with_mask(
        [truncated, paths[1]]
    )
    return {
        "cosine_nvjpeg_to_pil": similarity,
        "seconds_pil": round(pil_seconds, 3),
        "seconds_nvjpeg": round(nvjpeg_seconds, 3),
        "truncated_error": message,
        "truncated_mask": valid.tolist(),
        "passed": similarity["median"] > 0.9
        and message is not None
        and "truncated.jpg" in message
        and valid.tolist() == [False, True],
    }


def check_grid_search() -> dict:
    images, labels = face_patches()
    # CUDA is initialised in this process before the search starts workers.
    torch.zeros(1, device="cuda")
    pipeline = Pipeline(
        [
            (
                "pooler",
                CrossLayerPooler(
                    device="cuda", n_workers=2, image_size=64, random_state=0
                ),
            ),
            ("sign", SignQuantizer()),
            ("svm", LinearSVC(C=1.0)),
        ]
    )
    search = GridSearchCV(
        pipeline,
        {"pooler__neighborhood": [1, 3]},
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        n_jobs=2,
    )
    search.fit(images, labels)
    return {
        "best_params": search.best_params_,
        "best_score": float(search.best_score_),
        "passed": bool(search.best_score_ > 0.5),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="gpu_smoke.json")
    args = parser.parse_args(argv)
    results = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    folder = Path(tempfile.mkdtemp(prefix="skcrosslayer-gpu-"))
    paths = photo_files(folder)
    checks = {
        "device_auto": lambda: check_device_auto(paths),
        "decode_on_device": lambda: check_decode_on_device(paths, folder),
        "grid_search": check_grid_search,
    }
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            results[name] = check()
        except Exception:
            results[name] = {"passed": False, "error": traceback.format_exc()}
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(results[name]), flush=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(results[name]["passed"] for name in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

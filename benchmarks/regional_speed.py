"""Time the dense and the per-region paths of RegionalCrossLayerPooler.

Both paths compute the same augmented layer: the features of a grid of image
regions (by default 169 regions of 128 px at stride 32 on the image warped to
512 px, each warped to 256 px). The per-region path runs the network once per
region. The dense path runs the convolutional trunk once on the image
enlarged to 1024 px and reads every region from a window of the shared
feature map. The script times ``extract_regional_features`` on the same real
photos for both, takes the median over repeats, and reports how close the two
outputs are (cosine similarity per region).

AlexNet runs with random weights, because no registry package ships its
ImageNet weights and the time does not depend on the weight values;
EfficientNet-Lite0 runs with its real ImageNet weights.

Run from the repository root::

    .venv/bin/python benchmarks/regional_speed.py --json results/regional_speed.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch

from skcrosslayer.regional import RegionalCrossLayerPooler

# (backbone, weights): weights=None is a seeded random initialisation.
BACKBONES = [("alexnet", None), ("efficientnet_lite0", "DEFAULT")]

PHOTO_NAMES = ("astronaut", "chelsea", "coffee")


def photos() -> list[np.ndarray]:
    """Return real RGB photos from scikit-image."""
    return [getattr(skimage.data, name)() for name in PHOTO_NAMES]


def time_extraction(
    pooler, images: list, n_repeats: int
) -> tuple[list, list, np.ndarray]:
    """Return wall and CPU seconds per image of each repeat, and the last output.

    CPU seconds are ``time.process_time``, summed over the threads of this
    process, so they depend less than wall seconds on other jobs sharing the
    cores.
    """
    pooler.extract_regional_features(images[:1])  # loads the network, warms up
    wall, cpu = [], []
    for _ in range(n_repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        features = pooler.extract_regional_features(images)
        wall.append((time.perf_counter() - wall_start) / len(images))
        cpu.append((time.process_time() - cpu_start) / len(images))
    return wall, cpu, features


def cosine_per_region(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the cosine similarity of matching rows of ``(..., D)`` arrays."""
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (a * b).sum(axis=-1) / np.maximum(norms, 1e-30)


def machine_facts() -> dict:
    """Return the CPU, thread count, load and library versions of this run."""
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
        "platform": platform.platform(),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds per image of the dense and the per-region paths of "
        "RegionalCrossLayerPooler on real photos."
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats per path (default: 3)"
    )
    parser.add_argument(
        "--dense-batch-size",
        type=int,
        default=8,
        help="enlarged images per forward pass of the dense path (default: 8)",
    )
    parser.add_argument(
        "--region-batch-size",
        type=int,
        default=32,
        help="region crops per forward pass of the per-region path (default: 32)",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device, such as cpu or cuda"
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    images = photos()
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = []
    for backbone, weights in BACKBONES:
        outputs = {}
        for dense, batch_size in (
            (True, args.dense_batch_size),
            (False, args.region_batch_size),
        ):
            pooler = RegionalCrossLayerPooler(
                backbone,
                weights,
                dense=dense,
                batch_size=batch_size,
                device=args.device,
                n_workers=0,
            )
            seconds, cpu, outputs[dense] = time_extraction(pooler, images, args.repeats)
            geometry = pooler._geometry()
            row = {
                "backbone": backbone,
                "weights": weights or "random",
                "path": "dense" if dense else "per-region",
                "batch_size": batch_size,
                "seconds_per_image": seconds,
                "median_seconds_per_image": statistics.median(seconds),
                "cpu_seconds_per_image": cpu,
                "median_cpu_seconds_per_image": statistics.median(cpu),
                "n_regions": geometry.n_regions,
                "region_input_size": geometry.region_input_size,
            }
            results.append(row)
            print(
                f"{backbone:20s} {row['path']:10s} "
                f"{row['median_seconds_per_image']:7.3f} s/image wall, "
                f"{row['median_cpu_seconds_per_image']:7.3f} s/image CPU "
                f"(wall repeats: {', '.join(f'{s:.3f}' for s in seconds)})",
                flush=True,
            )
        similarity = cosine_per_region(outputs[True], outputs[False])
        results[-1]["speedup_of_dense"] = (
            results[-1]["median_seconds_per_image"]
            / results[-2]["median_seconds_per_image"]
        )
        results[-1]["cosine_dense_vs_per_region"] = {
            "min": float(similarity.min()),
            "median": float(np.median(similarity)),
            "max": float(similarity.max()),
        }
        print(
            f"{backbone:20s} dense is {results[-1]['speedup_of_dense']:.1f}x faster; "
            f"cosine per region min {similarity.min():.3f}, "
            f"median {np.median(similarity):.3f}",
            flush=True,
        )
    total = time.perf_counter() - started

    print()
    print(
        "| backbone | path | s/image wall (CPU) | dense speed-up | cosine min/median |"
    )
    print("|---|---|---|---|---|")
    for row in results:
        speedup = cosine = ""
        if "speedup_of_dense" in row:
            speedup = f"{row['speedup_of_dense']:.1f}x"
            c = row["cosine_dense_vs_per_region"]
            cosine = f"{c['min']:.3f} / {c['median']:.3f}"
        print(
            f"| {row['backbone']} ({row['weights']}) | {row['path']} | "
            f"{row['median_seconds_per_image']:.3f} "
            f"({row['median_cpu_seconds_per_image']:.3f}) | {speedup} | {cosine} |"
        )
    print(
        f"total time: {total:.0f} s; load average before/after: "
        f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f}"
    )

    if args.json is not None:
        report = {
            "benchmark": "regional_speed",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine_facts(),
            "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
            "images": list(PHOTO_NAMES),
            "geometry": "image 512 px, regions 128 px at stride 32 (13 x 13), "
            "each warped to 256 px; dense: 1024 px enlarged image",
            "results": results,
            "total_seconds": total,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

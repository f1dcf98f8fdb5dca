"""Throughput of CrossLayerPooler.transform against the backbone alone.

For each backbone and resizing, in one run on the same image files:

- forward: the backbone's forward pass up to the guidance layer on images
  already decoded, resized and stacked in memory (the limit);
- transform: the full ``CrossLayerPooler.transform`` from the files on disk
  (decoding, resizing, forward, pooling, PCA, normalisation, copy to numpy).

It prints images per second of both (median over repeats) and their ratio.
``--size-multiple`` and ``--decode-on-device`` set the pooler parameters of
the same names for both measurements.

Run: python benchmarks/throughput.py [--n-images 64] [--repeats 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _photos import write_photo_files  # noqa: E402

from skcrosslayer import CrossLayerPooler  # noqa: E402
from skcrosslayer._extraction import (  # noqa: E402
    capture_layers,
    normalize_images,
    resolve_device,
)
from skcrosslayer.backbones import load_network, resolve_layer  # noqa: E402
from skcrosslayer.images import iter_image_batches  # noqa: E402

CONFIGURATIONS = [
    ("efficientnet_lite0", "DEFAULT", {"image_size": 224}),
    ("efficientnet_lite0", "DEFAULT", {"image_size": None, "max_size": 512}),
    ("vgg16", None, {"image_size": 224}),
    ("vgg16", None, {"image_size": None, "max_size": 512}),
]


def preload_batches(pooler, paths):
    """Decode and resize every image once, grouped in the transform's batches."""
    return [
        images
        for _, images in iter_image_batches(
            paths, pooler._resize_policy(), pooler.batch_size, n_workers=0
        )
    ]


def time_forward(pooler, batches, device) -> float:
    network = load_network(pooler.backbone, pooler.weights)
    specs = [resolve_layer(pooler.backbone, name) for name in pooler.layers_]
    spec = pooler._backbone_spec()
    start = time.perf_counter()
    with torch.inference_mode():
        for images in batches:
            outputs = capture_layers(
                network, specs, normalize_images(images, spec, device)
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
            del outputs
    return time.perf_counter() - start


def time_transform(pooler, paths) -> float:
    start = time.perf_counter()
    pooler.transform(paths)
    return time.perf_counter() - start


def run(n_images, repeats, batch_size, n_workers, device, configurations, options):
    folder = Path(tempfile.mkdtemp(prefix="skcrosslayer-throughput-"))
    paths = write_photo_files(folder, n_images)
    results = []
    for backbone, weights, resize in configurations:
        pooler = CrossLayerPooler(
            backbone,
            weights=weights,
            batch_size=batch_size,
            n_workers=n_workers,
            device=device,
            random_state=0,
            **resize,
            **options,
        )
        if pooler.max_size is None:
            pooler.set_params(size_multiple=None)
        pooler.fit(paths[: min(16, n_images)])
        batches = preload_batches(pooler, paths)
        resolved = resolve_device(device)
        # One untimed pass of each warms the convolution kernels for every size.
        time_forward(pooler, batches, resolved)
        time_transform(pooler, paths)
        forward, transform = defaultdict(list), defaultdict(list)
        for _ in range(repeats):
            forward["s"].append(time_forward(pooler, batches, resolved))
            transform["s"].append(time_transform(pooler, paths))
        forward_ips = n_images / statistics.median(forward["s"])
        transform_ips = n_images / statistics.median(transform["s"])
        row = {
            "backbone": backbone,
            "resize": resize,
            **options,
            "n_batches": len(batches),
            "layers": list(pooler.layers_),
            "n_features": pooler.n_features_out_,
            "forward_images_per_s": round(forward_ips, 2),
            "transform_images_per_s": round(transform_ips, 2),
            "ratio": round(transform_ips / forward_ips, 3),
        }
        results.append(row)
        print(
            f"{backbone:<20} {str(resize):<36} forward {forward_ips:7.2f} img/s  "
            f"transform {transform_ips:7.2f} img/s  ratio {row['ratio']:.3f}",
            flush=True,
        )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument(
        "--size-multiple",
        type=int,
        default=None,
        help="round aspect-kept sizes to multiples of this (max_size rows only)",
    )
    parser.add_argument(
        "--decode-on-device",
        action="store_true",
        help="decode JPEG files on the device in the transform",
    )
    parser.add_argument(
        "--configurations",
        type=int,
        nargs="+",
        default=list(range(len(CONFIGURATIONS))),
        help="indices into CONFIGURATIONS to run (default: all)",
    )
    args = parser.parse_args(argv)
    configurations = [CONFIGURATIONS[i] for i in args.configurations]

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(resolve_device(args.device)),
    }
    print(json.dumps(machine))
    results = run(
        args.n_images,
        args.repeats,
        args.batch_size,
        args.workers,
        args.device,
        configurations,
        {
            "size_multiple": args.size_multiple,
            "decode_on_device": args.decode_on_device,
        },
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"machine": machine, "args": vars(args), "results": results}, indent=2
            )
        )
    ratios = [r["ratio"] for r in results]
    print(f"median ratio {np.median(ratios):.3f}, min {min(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

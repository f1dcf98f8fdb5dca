"""Peak memory of CrossLayerPooler.transform for 200 and for 2,000 images.

Each size runs in a fresh process, which reports its peak resident set size
(``ru_maxrss``). If memory is bounded by the batch and the output array, the
difference between the two peaks is the difference in output size
(1,800 rows x n_features x 4 bytes), not the activations of 1,800 images.
With ``--npy`` the features stream to a memory-mapped ``.npy`` file instead,
and the peak should then barely grow with the number of images.

Run: python benchmarks/memory_peak.py [--sizes 200 2000] [--npy] [--json F]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def measure(n_images: int, folder: Path, npy: bool) -> None:
    """Child process: transform ``n_images`` files, print the peak RSS."""
    from _photos import write_photo_files

    from skcrosslayer import CrossLayerPooler

    paths = write_photo_files(folder, n_images)
    pooler = CrossLayerPooler(n_workers=2, random_state=0).fit(paths[:16])
    if npy:
        features = pooler.transform_to_npy(paths, folder / f"features-{n_images}.npy")
    else:
        features = pooler.transform(paths)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {"n_images": n_images, "peak_rss": peak, "output_bytes": features.nbytes}
        )
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--npy", action="store_true", help="stream to a .npy file")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        measure(args.child, Path(args.folder), args.npy)
        return 0

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n_images in args.sizes:
            command = [
                sys.executable,
                __file__,
                "--child",
                str(n_images),
                "--folder",
                folder,
            ]
            if args.npy:
                command.append("--npy")
            output = subprocess.run(command, capture_output=True, text=True)
            if output.returncode:
                sys.exit(f"child for {n_images} images failed:\n{output.stderr}")
            row = json.loads(output.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{n_images:>6} images: peak RSS {row['peak_rss'] / 2**20:8.0f} MiB, "
                f"output {row['output_bytes'] / 2**20:8.0f} MiB",
                flush=True,
            )
    first, last = rows[0], rows[-1]
    growth = last["peak_rss"] - first["peak_rss"]
    output_growth = last["output_bytes"] - first["output_bytes"]
    print(
        f"peak grows by {growth / 2**20:.0f} MiB for {output_growth / 2**20:.0f} MiB "
        f"more output ({'streamed to .npy' if args.npy else 'in memory'})"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"npy": args.npy, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Queries per second of packed sign codes against float vectors.

The same database is searched three ways with :func:`skcrosslayer.search.search`
and, when faiss is installed, with ``faiss.IndexBinaryFlat``:

- ``float``: inner products of float32 vectors (``metric="inner_product"``),
- ``packed``: ±1 inner products of the packed sign codes of those vectors
  (``metric="hamming"``), XOR and bit counts in NumPy,
- ``faiss``: Hamming distances of the same codes in faiss (unmasked only,
  because the faiss index has no per-query block masks).

Each is run without channel selection and with a query block mask that keeps
``n_selected`` of the ``n_blocks`` blocks of every query (the adaptive channel
selection of L. Liu, C. Shen, A. van den Hengel, "Cross-convolutional-layer
Pooling for Image Recognition", TPAMI 2017). Vectors are random: the speed of
BLAS products and of bit counts does not depend on the values, only on the
sizes. The script prints a Markdown table of the median wall and CPU seconds
of one search call over all queries, queries per second, and the ratios to
float search.

Run from the repository root::

    python benchmarks/search.py --database-sizes 10000 100000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from skcrosslayer.binary import pack_signs
from skcrosslayer.search import search, select_top_blocks

# Rows generated per step, which bounds the size of the temporary arrays.
_GENERATION_ROWS = 4096


def make_vectors(rng: np.random.Generator, n_vectors: int, n_features: int):
    """Return unit-norm float32 vectors whose signs lean to one side per dim.

    A per-dimension offset makes some signs more frequent than others, as in
    pooled vectors, where a dimension's sign is shared by many images.
    """
    offsets = rng.normal(scale=0.5, size=n_features).astype(np.float32)
    vectors = np.empty((n_vectors, n_features), dtype=np.float32)
    for start in range(0, n_vectors, _GENERATION_ROWS):
        stop = min(start + _GENERATION_ROWS, n_vectors)
        block = rng.standard_normal((stop - start, n_features), dtype=np.float32)
        block += offsets
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start:stop] = block
    return vectors


def median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Return the median wall and CPU seconds of ``repeats`` calls.

    One warm-up call comes first. CPU seconds are those of this process, summed
    over its threads, so they change less than wall time when other processes
    share the cores.
    """
    run()
    wall, cpu = [], []
    for _ in range(repeats):
        wall_started, cpu_started = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - wall_started)
        cpu.append(time.process_time() - cpu_started)
    return statistics.median(wall), statistics.median(cpu)


def _import_faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _check_faiss_agrees(faiss_search, packed_search, n_bits: int) -> None:
    """Raise if faiss and NumPy return different top-k similarities."""
    faiss_distances, _ = faiss_search()
    packed_similarities, _ = packed_search()
    if not np.array_equal(n_bits - 2 * faiss_distances, packed_similarities):
        raise RuntimeError(
            "faiss and NumPy returned different similarities for the same codes; "
            "the timings would compare different work"
        )


def benchmark_database(
    n_database: int, queries: np.ndarray, query_mask: np.ndarray, args, faiss
) -> list[dict]:
    """Time every method on one database size and return one row per method."""
    rng = np.random.default_rng(args.seed + n_database)
    n_features = args.n_blocks * args.block_size
    database = make_vectors(rng, n_database, n_features)
    database_codes, _ = pack_signs(database, block_size=args.block_size)
    query_codes, _ = pack_signs(queries, block_size=args.block_size)

    def float_search(mask=None):
        return search(
            queries,
            database,
            args.n_neighbors,
            block_size=args.block_size,
            query_block_mask=mask,
        )

    def packed_search(mask=None):
        return search(
            query_codes,
            database_codes,
            args.n_neighbors,
            metric="hamming",
            block_size=args.block_size,
            query_block_mask=mask,
        )

    runs = {
        ("float", "all"): float_search,
        ("packed", "all"): packed_search,
        ("float", "selected"): lambda: float_search(query_mask),
        ("packed", "selected"): lambda: packed_search(query_mask),
    }
    if faiss is not None:
        index = faiss.IndexBinaryFlat(8 * database_codes.shape[1])
        index.add(database_codes)
        runs[("faiss", "all")] = lambda: index.search(query_codes, args.n_neighbors)
        _check_faiss_agrees(runs[("faiss", "all")], packed_search, n_features)

    wall, cpu = {}, {}
    for (method, blocks), run in runs.items():
        wall[method, blocks], cpu[method, blocks] = median_seconds(run, args.repeats)
        print(
            f"  {n_database} {method} {blocks}: {wall[method, blocks]:.4f} s wall, "
            f"{cpu[method, blocks]:.4f} s CPU",
            file=sys.stderr,
        )

    rows = []
    for method, blocks in runs:
        rows.append(
            {
                "n_database": n_database,
                "method": method,
                "blocks": blocks,
                "seconds": wall[method, blocks],
                "cpu_seconds": cpu[method, blocks],
                "queries_per_second": len(queries) / wall[method, blocks],
                "speedup_over_float": wall["float", blocks] / wall[method, blocks],
                "cpu_speedup_over_float": cpu["float", blocks] / cpu[method, blocks],
                "bytes_per_vector": (
                    database.shape[1] * 4
                    if method == "float"
                    else database_codes.shape[1]
                ),
            }
        )
    return rows


def machine_description() -> dict:
    """Return the CPU model, core count, date and package versions."""
    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True
        ).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    faiss = _import_faiss()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": model,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": None if faiss is None else faiss.__version__,
        "faiss_threads": None if faiss is None else faiss.omp_get_max_threads(),
    }


def format_table(rows: list[dict]) -> str:
    lines = [
        "| database | method | query blocks | bytes / vector | wall s | queries / s "
        "| × float (wall) | CPU s | × float (CPU) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n_database']:,} | {row['method']} | {row['blocks']} "
            f"| {row['bytes_per_vector']:,} | {row['seconds']:.3f} "
            f"| {row['queries_per_second']:,.0f} "
            f"| {row['speedup_over_float']:.1f} | {row['cpu_seconds']:.3f} "
            f"| {row['cpu_speedup_over_float']:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Queries per second of packed sign codes against float vectors."
    )
    parser.add_argument(
        "--database-sizes",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        help="database sizes to time (default: 10000 100000)",
    )
    parser.add_argument(
        "--n-queries", type=int, default=100, help="queries per search call"
    )
    parser.add_argument(
        "--n-blocks",
        type=int,
        default=256,
        help="blocks K per vector, one per guidance channel (default: 256)",
    )
    parser.add_argument(
        "--block-size",
        type=int,
        default=32,
        help="dims d per block, the local-feature PCA size (default: 32)",
    )
    parser.add_argument(
        "--n-selected",
        type=int,
        default=32,
        help="blocks kept per query with channel selection (default: 32)",
    )
    parser.add_argument(
        "--n-neighbors", type=int, default=10, help="items returned per query"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--json", help="also write the rows and machine to this file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = machine_description()
    faiss = _import_faiss()
    print(f"machine: {machine}", file=sys.stderr)

    rng = np.random.default_rng(args.seed)
    queries = make_vectors(rng, args.n_queries, args.n_blocks * args.block_size)
    scores = rng.random((args.n_queries, args.n_blocks))
    query_mask = select_top_blocks(scores, args.n_selected)

    rows = []
    for n_database in args.database_sizes:
        rows += benchmark_database(n_database, queries, query_mask, args, faiss)

    print(
        f"{args.n_queries} queries, K = {args.n_blocks} blocks of d = "
        f"{args.block_size} dims ({args.n_blocks * args.block_size} dims), "
        f"{args.n_selected} of {args.n_blocks} blocks with selection, "
        f"top {args.n_neighbors}, median of {args.repeats} runs"
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"machine": machine, "args": vars(args), "rows": rows}, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())

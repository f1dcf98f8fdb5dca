"""Queries per second of packed sign codes against float vectors.

The same database is searched three ways with :func:`skcrosslayer.search.search`
and, when faiss is installed, with ``faiss.IndexBinaryFlat``:

- ``float``: inner products of float32 vectors (``metric="inner_product"``),
- ``packed``: ±1 inner products of the packed sign codes of those vectors
  (``metric="hamming"``), XOR and bit counts in NumPy,
- ``faiss``: Hamming distances of the same codes in faiss (unmasked only,
  because the faiss index has no per-query block masks).

Each is run with three block settings: "all" without channel selection,
"selected" with a query block mask that keeps ``n_selected`` of the
``n_blocks`` blocks of every query (the adaptive channel selection of L. Liu,
C. Shen, A. van den Hengel, "Cross-convolutional-layer Pooling for Image
Recognition", TPAMI 2017), and "symmetric", where every database item also
keeps ``n_selected`` blocks of its own. Vectors are random: the speed of BLAS
products and of bit counts does not depend on the values, only on the sizes.
The script prints a Markdown table of the median wall and CPU seconds of one
search call over all queries, queries per second, and the ratios to float
search. A second table times picking the top k of one chunk of similarities,
by a stable sort of the whole chunk and by the partition that ``search`` uses.

``--baseline FILE`` also times the ``search`` function of another version of
``skcrosslayer/search.py``, such as the one of an earlier COMMIT, checks that
it returns the same results, and reports the current code's speedup over it.
Run from the repository root::

    python benchmarks/search.py --database-sizes 10000 100000
    git show COMMIT:skcrosslayer/search.py > /tmp/search_before.py
    python benchmarks/search.py --database-sizes 10000 --baseline /tmp/search_before.py
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
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
from skcrosslayer.search import _top_k_positions, search, select_top_blocks

# Rows generated per step, which bounds the size of the temporary arrays.
_GENERATION_ROWS = 4096

# Top-k picks are timed this many times per --repeats, because one pick takes
# only milliseconds.
_RANKING_REPEAT_FACTOR = 5


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


def load_baseline_search(path: str) -> Callable:
    """Return the ``search`` function defined in the Python file at ``path``."""
    spec = importlib.util.spec_from_file_location("baseline_search", path)
    if spec is None or spec.loader is None:
        raise ValueError(
            f"--baseline {path!r} is not a Python file that can be imported; pass "
            "a copy of skcrosslayer/search.py, e.g. from git show."
        )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.search


def make_search_runs(search_function, vectors, codes, masks, args) -> dict:
    """Return one call of ``search_function`` per (method, blocks) pair.

    ``vectors`` and ``codes`` are (queries, database) pairs; ``masks`` maps
    each block setting to its (query_block_mask, database_block_mask).
    """

    def run(method: str, blocks: str):
        queries, database = vectors if method == "float" else codes
        metric = "inner_product" if method == "float" else "hamming"
        query_mask, database_mask = masks[blocks]
        return search_function(
            queries,
            database,
            args.n_neighbors,
            metric=metric,
            block_size=args.block_size,
            query_block_mask=query_mask,
            database_block_mask=database_mask,
            chunk_size=args.chunk_size,
        )

    return {
        (method, blocks): lambda method=method, blocks=blocks: run(method, blocks)
        for blocks in masks
        for method in ("float", "packed")
    }


def _check_same_results(run, reference_run, name: str) -> None:
    """Raise if two searches return different similarities or indices."""
    similarities, indices = run()
    reference_similarities, reference_indices = reference_run()
    same = np.array_equal(similarities, reference_similarities) and np.array_equal(
        indices, reference_indices
    )
    if not same:
        raise RuntimeError(
            f"{name} returned different results from the current search; the "
            "timings would compare different work"
        )


def time_runs(runs: dict, n_database: int, repeats: int) -> tuple[dict, dict]:
    """Return the median wall and CPU seconds of every run, by its key."""
    wall, cpu = {}, {}
    for key, run in runs.items():
        wall[key], cpu[key] = median_seconds(run, repeats)
        print(
            f"  {n_database} {' '.join(key)}: {wall[key]:.4f} s wall, "
            f"{cpu[key]:.4f} s CPU",
            file=sys.stderr,
        )
    return wall, cpu


def benchmark_database(
    n_database: int, queries: np.ndarray, query_mask: np.ndarray, args, context
) -> list[dict]:
    """Time every method on one database size and return one row per method."""
    rng = np.random.default_rng(args.seed + n_database)
    n_features = args.n_blocks * args.block_size
    database = make_vectors(rng, n_database, n_features)
    database_mask = select_top_blocks(
        rng.random((n_database, args.n_blocks)), args.n_selected
    )
    database_codes, _ = pack_signs(database, block_size=args.block_size)
    query_codes, _ = pack_signs(queries, block_size=args.block_size)
    masks = {
        "all": (None, None),
        "selected": (query_mask, None),
        "symmetric": (query_mask, database_mask),
    }
    vectors, codes = (queries, database), (query_codes, database_codes)

    runs = make_search_runs(search, vectors, codes, masks, args)
    if context["baseline"] is not None:
        baseline_runs = make_search_runs(
            context["baseline"], vectors, codes, masks, args
        )
        # Each baseline run is timed right after the same current run, so that
        # both see about the same load from other processes.
        current_runs, runs = runs, {}
        for (method, blocks), run in current_runs.items():
            baseline_run = baseline_runs[method, blocks]
            _check_same_results(baseline_run, run, "the baseline search")
            runs[method, blocks] = run
            runs[f"{method}, baseline", blocks] = baseline_run
    faiss = context["faiss"]
    if faiss is not None:
        index = faiss.IndexBinaryFlat(8 * database_codes.shape[1])
        index.add(database_codes)
        runs[("faiss", "all")] = lambda: index.search(query_codes, args.n_neighbors)
        _check_faiss_agrees(runs[("faiss", "all")], runs["packed", "all"], n_features)

    wall, cpu = time_runs(runs, n_database, args.repeats)
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
                    if method.startswith("float")
                    else database_codes.shape[1]
                ),
            }
        )
    return rows


def stable_sort_top_k(similarities: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Pick the top k by a stable sort of each whole row, the rule search keeps."""
    return np.argsort(-similarities, axis=1, kind="stable")[:, :n_neighbors]


def benchmark_ranking(args) -> list[dict]:
    """Time top-k selection on one chunk of float and of Hamming similarities."""
    rng = np.random.default_rng(args.seed)
    shape = (args.n_queries, args.chunk_size + args.n_neighbors)
    n_bits = args.n_blocks * args.block_size
    chunks = {
        "float32": rng.standard_normal(shape, dtype=np.float32),
        # ±1 inner products of random codes: few distinct values, many ties.
        "int32": (n_bits - 2 * rng.binomial(n_bits, 0.5, shape)).astype(np.int32),
    }
    rows = []
    for dtype, similarities in chunks.items():
        sorted_top_k = stable_sort_top_k(similarities, args.n_neighbors)
        if not np.array_equal(
            _top_k_positions(similarities, args.n_neighbors), sorted_top_k
        ):
            raise RuntimeError("partition and stable sort picked different top k")
        seconds = {}
        for name, pick in [
            ("stable sort", stable_sort_top_k),
            ("partition", _top_k_positions),
        ]:
            seconds[name], _ = median_seconds(
                lambda pick=pick, chunk=similarities: pick(chunk, args.n_neighbors),
                _RANKING_REPEAT_FACTOR * args.repeats,
            )
        rows.append({"dtype": dtype, "shape": shape, **seconds})
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


def format_baseline_table(rows: list[dict]) -> str:
    """Return the baseline's time over the current time, per method and blocks."""
    times = {(row["n_database"], row["method"], row["blocks"]): row for row in rows}
    lines = [
        "| database | method | query blocks | × baseline (wall) | × baseline (CPU) |",
        "|---:|---|---|---:|---:|",
    ]
    for (n_database, method, blocks), row in times.items():
        baseline = times.get((n_database, f"{method}, baseline", blocks))
        if baseline is None:
            continue
        lines.append(
            f"| {n_database:,} | {method} | {blocks} "
            f"| {baseline['seconds'] / row['seconds']:.1f} "
            f"| {baseline['cpu_seconds'] / row['cpu_seconds']:.1f} |"
        )
    return "\n".join(lines)


def format_ranking_table(rows: list[dict]) -> str:
    lines = [
        "| similarities | shape | stable sort ms | partition ms | × stable sort |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        n_rows, n_columns = row["shape"]
        lines.append(
            f"| {row['dtype']} | {n_rows} × {n_columns:,} "
            f"| {1000 * row['stable sort']:.2f} | {1000 * row['partition']:.2f} "
            f"| {row['stable sort'] / row['partition']:.1f} |"
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
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=4096,
        help="database items compared per step of search (default: 4096)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--json", help="also write the rows and machine to this file")
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="a copy of an earlier skcrosslayer/search.py whose search is also "
        "timed, for the speedup of the current code over it",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = machine_description()
    context = {
        "faiss": _import_faiss(),
        "baseline": None
        if args.baseline is None
        else load_baseline_search(args.baseline),
    }
    print(f"machine: {machine}", file=sys.stderr)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = os.getloadavg()

    rng = np.random.default_rng(args.seed)
    queries = make_vectors(rng, args.n_queries, args.n_blocks * args.block_size)
    scores = rng.random((args.n_queries, args.n_blocks))
    query_mask = select_top_blocks(scores, args.n_selected)

    rows = []
    for n_database in args.database_sizes:
        rows += benchmark_database(n_database, queries, query_mask, args, context)
    ranking_rows = benchmark_ranking(args)
    finished = datetime.datetime.now(datetime.timezone.utc)
    machine["run"] = (
        f"{started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC; 1-minute load average "
        f"{load_at_start[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end"
    )

    print(
        f"{args.n_queries} queries, K = {args.n_blocks} blocks of d = "
        f"{args.block_size} dims ({args.n_blocks * args.block_size} dims), "
        f"{args.n_selected} of {args.n_blocks} blocks with selection, "
        f"top {args.n_neighbors}, chunks of {args.chunk_size}, "
        f"median of {args.repeats} runs"
    )
    print(f"Run {machine['run']}.")
    print(format_table(rows))
    if context["baseline"] is not None:
        print(f"\nSpeedup over the baseline {args.baseline}:")
        print(format_baseline_table(rows))
    print(
        f"\nTop {args.n_neighbors} of one chunk, median of "
        f"{_RANKING_REPEAT_FACTOR * args.repeats} runs:"
    )
    print(format_ranking_table(ranking_rows))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {
                    "machine": machine,
                    "args": vars(args),
                    "rows": rows,
                    "ranking_rows": ranking_rows,
                },
                file,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

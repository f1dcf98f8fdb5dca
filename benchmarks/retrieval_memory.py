"""Peak memory of the retrieval search over a memory-mapped database.

Writes a synthetic database of pooled vectors to a ``.npy`` file (K = 256
guidance channels of d = 159 dims plus the K channel strengths, 40,960 float32
columns, as ``CrossLayerPooler(channel_strengths=True)`` returns) and ranks it
with ``skcrosslayer.retrieval_cli.rank_database`` reading the file memory-mapped,
as ``evaluate-retrieval`` does. For each database size, query set and search
setting it reports the tracemalloc peak of the call, next to the size of the
float database.

Query sets: "55 queries" (55 query vectors in memory, full ranking, as for
Oxford5k), "55 queries, rows reordered" (the same with the database listed in
reverse file order, read through ``database_rows``) and "every row" (each
database row is a query, top 4, as for UKBench).

Run: python benchmarks/retrieval_memory.py [--sizes 2000 4000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from skcrosslayer.retrieval_cli import SearchSettings, rank_database

N_GUIDANCE = 256
BLOCK_SIZE = 159
SETTINGS = {
    "float": SearchSettings(None, "query", False),
    "float, 50 channels, symmetric": SearchSettings(50, "symmetric", False),
    "binary": SearchSettings(None, "query", True),
    "binary, 50 channels, symmetric": SearchSettings(50, "symmetric", True),
}


def write_database(path: Path, n_images: int) -> np.memmap:
    """Write unit-norm random blocks and uniform strengths, and map the file."""
    n_pooled = N_GUIDANCE * BLOCK_SIZE
    output = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n_images, n_pooled + N_GUIDANCE)
    )
    rng = np.random.default_rng(0)
    for start in range(0, n_images, 100):
        stop = min(start + 100, n_images)
        rows = rng.standard_normal((stop - start, n_pooled), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        output[start:stop, :n_pooled] = rows
        output[start:stop, n_pooled:] = rng.random((stop - start, N_GUIDANCE))
    output.flush()
    del output
    return np.load(path, mmap_mode="r")


def query_sets(database: np.memmap) -> dict:
    """Return ``name: (queries, query_rows, database_rows, n_neighbors)``."""
    n_images = database.shape[0]
    reversed_rows = np.arange(n_images)[::-1].copy()
    return {
        "55 queries": (np.array(database[:55]), None, None, n_images),
        "55 queries, rows reordered": (
            np.array(database[reversed_rows[:55]]),
            None,
            reversed_rows,
            n_images,
        ),
        "every row": (database, None, None, 4),
    }


def peak_of_search(database, queries, query_rows, database_rows, n_neighbors, setting):
    tracemalloc.start()
    start = time.perf_counter()
    rank_database(
        database,
        queries,
        BLOCK_SIZE,
        setting,
        n_neighbors,
        database_rows=database_rows,
        query_rows=query_rows,
    )
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory(prefix="skcrosslayer-memory-") as folder:
        for n_images in args.sizes:
            path = Path(folder) / f"database-{n_images}.npy"
            database = write_database(path, n_images)
            database_mib = database.nbytes / 2**20
            for query_name, case in query_sets(database).items():
                for setting_name, setting in SETTINGS.items():
                    # One BLAS thread, so that thread buffers do not vary.
                    with threadpool_limits(1, user_api="blas"):
                        peak, seconds = peak_of_search(database, *case, setting)
                    row = {
                        "n_database": n_images,
                        "database_mib": round(database_mib, 1),
                        "queries": query_name,
                        "setting": setting_name,
                        "peak_mib": round(peak / 2**20, 1),
                        "seconds": round(seconds, 2),
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
            del database
    if args.json:
        record = {"machine": platform.platform(), "results": results}
        Path(args.json).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

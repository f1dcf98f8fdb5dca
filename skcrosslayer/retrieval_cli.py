"""The retrieval commands: ``skcrosslayer retrieve`` and ``evaluate-retrieval``.

Both commands pool images with ``CrossLayerPooler(channel_strengths=True)``,
fit its PCA on the database images, and rank the database for each query by
inner products of the pooled vectors or, with ``--binary``, of their packed
sign codes. ``--n-channels K`` keeps the K guidance channels of largest mean
activation in each query (adaptive channel selection).

``evaluate-retrieval`` caches the pooled vectors on disk. The key is a hash of
the pooler parameters, the skcrosslayer version and every image path with its
size and modification time. A second evaluation with other search settings
(``--binary``, ``--n-channels``, ``--selection-mode``) therefore reads the
vectors back and does not run the network.

The database vectors, K * (d + 1) * 4 bytes an image (1.6 MB with
EfficientNet-Lite0's default layers, K = 1280 and d = 320), never sit in memory
all at once. The pooler writes them batch by batch into a ``.npy`` file: the
cache entry, or with ``--no-cache`` and in ``retrieve`` a file in the system's
temporary folder (``TMPDIR``), removed at the end. On a RAM-backed folder
(tmpfs) that file takes memory, so point ``TMPDIR`` at a disk. The search reads
the file memory-mapped, 64 MiB of rows at a time. The binary search keeps the
packed sign codes of the database, K * ceil(d / 8) bytes an image (51 kB), and
the float search a batch of query vectors of up to 128 MiB. Both keep the
rankings, which ``evaluate-retrieval`` makes over the whole database (except
for UKBench): a 4-byte similarity and an 8-byte index for each query and
database image. Queries pooled from cropped or outside images are held in
memory too.

NOTE: the float search reads the database file once per batch of queries, about
80 queries with EfficientNet-Lite0's default layers. UKBench, where all 10,200
database images are queries, reads its 17 GB file about 126 times, which is
fast only while the whole file fits in the page cache. ``--binary`` reads it
once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from ._io import atomic_write
from .binary import FeatureBinarizer
from .cli import _pooler_from_args, find_images
from .search import (
    ImageRetriever,
    _check_n_neighbors,
    _rank_in_chunks,
    float_similarities,
)
from .selection import ChannelSelector

__all__ = ["SearchSettings", "rank_database", "run_evaluate_retrieval", "run_retrieve"]

logger = logging.getLogger(__name__)

# Pooler parameters that change how fast vectors are computed, not their values.
_SPEED_PARAMETERS = ("batch_size", "n_workers", "verbose", "memory")

# Upper bound, in bytes, on the float rows of database images that the search
# reads into memory at once.
_MAX_CHUNK_BYTES = 1 << 26

# Upper bound, in bytes, on the float rows of the queries that the float search
# compares at once. Each batch reads the whole database once, so larger batches
# mean fewer passes over its file.
_MAX_QUERY_BATCH_BYTES = 1 << 27

# Upper bound on the similarities of one ranking step, a batch of queries by a
# chunk of database items. Ranking them takes several times their 4 bytes each,
# for indices and sorting buffers.
_MAX_RANKING_ENTRIES = 1 << 21

# Depths of the mean precision reported for revisited Oxford and Paris.
_REVISITED_KS = (1, 5, 10)

# Relevant images per UKBench query, the depth its score reads.
_UKBENCH_DEPTH = 4

# Treatment of a query image that is also in the database, per protocol.
_QUERY_IN_OWN_RANKING = {
    "holidays": "junk: removed from its own ranking before scoring",
    "groups": "junk: removed from its own ranking before scoring",
    "ukbench": "kept: counted as one of its group's 4 relevant images",
    "oxford": "kept and scored as the ground-truth lists label it",
    "paris": "kept and scored as the ground-truth lists label it",
    "roxford": "kept and scored as the ground-truth lists label it",
    "rparis": "kept and scored as the ground-truth lists label it",
}


# -- search ------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSettings:
    """Settings of the comparison of pooled vectors.

    Attributes
    ----------
    n_channels : int or None
        Guidance channels kept per query (per image in symmetric mode); None
        compares every block.
    mode : {"query", "symmetric"}
        Mode of :class:`~skcrosslayer.selection.ChannelSelector`.
    binary : bool
        Compare packed sign codes (Hamming) in place of float vectors.
    """

    n_channels: int | None = None
    mode: str = "query"
    binary: bool = False

    def bytes_per_image(self, n_guidance: int, block_size: int) -> int:
        """Return the bytes a database image needs in storage with these settings.

        In symmetric mode only the kept blocks are needed, plus a 2-byte
        channel index for each. ``ImageRetriever`` itself stores full-width
        arrays with a block mask, so this is the size of a compact store.
        """
        block_bytes = -(-block_size // 8) if self.binary else 4 * block_size
        if self.mode == "symmetric" and self.n_channels is not None:
            return self.n_channels * (block_bytes + 2)
        return n_guidance * block_bytes


def rank_database(
    database: np.ndarray,
    queries: np.ndarray,
    block_size: int,
    settings: SearchSettings,
    n_neighbors: int,
    *,
    database_rows: np.ndarray | None = None,
    query_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank the database for each query, reading the database a chunk at a time.

    ``database`` can be a read-only memory map of a ``.npy`` file: it is read
    in chunks of rows and never copied whole. The float search reads it once
    for each batch of queries. The binary search reads it once and keeps the
    packed sign codes of all rows.

    Parameters
    ----------
    database : ndarray of shape (n_rows, K * (d + 1))
        Output of ``CrossLayerPooler(channel_strengths=True)``.
    queries : ndarray of shape (n_query_rows, K * (d + 1))
        Pooled the same way. It may be the database array itself, with
        ``query_rows`` naming the query images among its rows.
    block_size : int
        Dims d of one pooled block.
    settings : SearchSettings
    n_neighbors : int
        Database items returned per query, at most ``n_database``.
    database_rows : ndarray of shape (n_database,), default=None
        Row of ``database`` that contains each database item, so that a
        database in another order is searched without reordering its rows.
        Returned indices are positions in ``database_rows``. None takes every
        row in order.
    query_rows : ndarray of shape (n_queries,), default=None
        Row of ``queries`` that contains each query. None takes every row in
        order.

    Returns
    -------
    similarities : ndarray of shape (n_queries, n_neighbors)
        Float inner products, or ±1 inner products of sign codes (int32).
    indices : ndarray of shape (n_queries, n_neighbors)
        Database indices, best first; ties go to the lower index.
    """
    selector = ChannelSelector(
        settings.n_channels, mode=settings.mode, block_size=block_size
    )
    # Fitting reads only the number of columns, so one row is enough.
    selector.fit(database[:1])
    _check_n_neighbors(n_neighbors, _n_rows(database, database_rows))
    if not settings.binary:
        return _rank_float(
            selector, database, database_rows, queries, query_rows, n_neighbors
        )
    return _rank_binary(
        selector, database, database_rows, queries, query_rows, n_neighbors
    )


def _n_rows(array: np.ndarray, rows: np.ndarray | None) -> int:
    return array.shape[0] if rows is None else len(rows)


def _rows_within(array: np.ndarray, max_bytes: int) -> int:
    """Return how many rows of ``array`` fit in ``max_bytes``, at least one."""
    return max(1, max_bytes // (array.shape[1] * array.itemsize))


def _row_slices(n_rows: int, step: int) -> list[slice]:
    """Split ``range(n_rows)`` into slices of ``step`` rows, the last one shorter.

    No rows give one empty slice, so that the estimators that read it raise
    their error about empty input.
    """
    starts = range(0, max(n_rows, 1), step)
    return [slice(start, min(start + step, n_rows)) for start in starts]


def _read_rows(array: np.ndarray, rows: np.ndarray | None, part: slice) -> np.ndarray:
    """Return the rows ``rows[part]`` of ``array``, or ``array[part]`` without rows.

    Without rows the result is a view, of the file when ``array`` is a memory
    map. With rows only the requested rows are copied into memory.
    """
    if rows is None:
        return array[part]
    return array[rows[part]]


def _database_vectors(selector: ChannelSelector, pooled: np.ndarray) -> np.ndarray:
    """Return the (n, K * d) vectors that database rows are compared with."""
    if selector.mode == "symmetric":
        return selector.transform(pooled)
    # Complete vectors, as fit_transform returns them, but as a view: in query
    # mode only the queries drop channels.
    return pooled[:, : selector.n_features_out_]


def _queries_per_step(n_items: int) -> int:
    """Return how many queries to rank at once against ``n_items`` database items."""
    return max(1, _MAX_RANKING_ENTRIES // max(n_items, 1))


def _rank_in_batches(
    rank_batch: Callable[[slice], tuple[np.ndarray, np.ndarray]],
    n_queries: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Call ``rank_batch`` on each slice of queries and fill the whole result."""
    similarities = indices = None
    for batch in _row_slices(n_queries, batch_size):
        batch_similarities, batch_indices = rank_batch(batch)
        if similarities is None:
            n_neighbors = batch_similarities.shape[1]
            similarities = np.empty((n_queries, n_neighbors), batch_similarities.dtype)
            indices = np.empty((n_queries, n_neighbors), batch_indices.dtype)
        similarities[batch] = batch_similarities
        indices[batch] = batch_indices
    return similarities, indices


def _rank_float(
    selector: ChannelSelector,
    database: np.ndarray,
    database_rows: np.ndarray | None,
    queries: np.ndarray,
    query_rows: np.ndarray | None,
    n_neighbors: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank by float inner products, one batch of queries per pass over the rows."""
    n_database = _n_rows(database, database_rows)
    chunk_size = _rows_within(database, _MAX_CHUNK_BYTES)

    def rank_batch(batch: slice) -> tuple[np.ndarray, np.ndarray]:
        # Dropped blocks are zero and add nothing to a float inner product.
        query_vectors = selector.transform(_read_rows(queries, query_rows, batch))

        def chunk_similarities(start: int, stop: int) -> np.ndarray:
            pooled = _read_rows(database, database_rows, slice(start, stop))
            vectors = _database_vectors(selector, pooled)
            return float_similarities(query_vectors, vectors)

        return _rank_in_chunks(
            chunk_similarities, len(query_vectors), n_database, n_neighbors, chunk_size
        )

    batch_size = min(
        _rows_within(queries, _MAX_QUERY_BATCH_BYTES),
        _queries_per_step(min(chunk_size, n_database)),
    )
    return _rank_in_batches(rank_batch, _n_rows(queries, query_rows), batch_size)


def _rank_binary(
    selector: ChannelSelector,
    database: np.ndarray,
    database_rows: np.ndarray | None,
    queries: np.ndarray,
    query_rows: np.ndarray | None,
    n_neighbors: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank by ±1 inner products of packed sign codes, binarised a chunk at a time."""
    binarizer = FeatureBinarizer(block_size=selector.block_size)
    binarizer.fit(database[:1, : selector.n_features_out_])
    selected = selector.n_channels is not None
    symmetric = selected and selector.mode == "symmetric"
    database_codes, database_mask = _pack_rows(
        database,
        database_rows,
        lambda pooled: _database_vectors(selector, pooled),
        binarizer,
        selector.block_mask if symmetric else None,
    )
    query_codes, query_mask = _pack_rows(
        queries,
        query_rows,
        selector.transform,
        binarizer,
        selector.block_mask if selected else None,
    )

    # Zero blocks pack to -1 signs, so dropped blocks are left out by mask.
    retriever = ImageRetriever(
        "hamming",
        block_size=selector.block_size,
        mode="symmetric" if symmetric else "query",
    )
    retriever.fit(database_codes, database_block_mask=database_mask)

    def rank_batch(batch: slice) -> tuple[np.ndarray, np.ndarray]:
        batch_mask = None if query_mask is None else query_mask[batch]
        return retriever.kneighbors(
            query_codes[batch], n_neighbors, query_block_mask=batch_mask
        )

    n_items = min(retriever.chunk_size, len(database_codes))
    return _rank_in_batches(rank_batch, len(query_codes), _queries_per_step(n_items))


def _pack_rows(
    pooled: np.ndarray,
    rows: np.ndarray | None,
    to_vectors: Callable[[np.ndarray], np.ndarray],
    binarizer: FeatureBinarizer,
    to_mask: Callable[[np.ndarray], np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the packed sign codes of the rows, and their block masks with ``to_mask``.

    Rows are read and binarised a chunk at a time, so only the codes, about 1/32
    of the float vectors, stay in memory.
    """
    n_rows = _n_rows(pooled, rows)
    n_bytes = binarizer.n_blocks_ * binarizer.n_bytes_per_block_
    codes = np.empty((n_rows, n_bytes), dtype=np.uint8)
    mask = None
    if to_mask is not None:
        mask = np.empty((n_rows, binarizer.n_blocks_), dtype=bool)
    for part in _row_slices(n_rows, _rows_within(pooled, _MAX_CHUNK_BYTES)):
        chunk = _read_rows(pooled, rows, part)
        codes[part] = binarizer.transform(to_vectors(chunk))
        if mask is not None:
            mask[part] = to_mask(chunk)
        # Free this chunk before the next one is read, so that only one is in memory.
        del chunk
    return codes, mask


def _settings_from_args(args) -> SearchSettings:
    return SearchSettings(args.n_channels, args.selection_mode, args.binary)


def _strength_pooler(args):
    return _pooler_from_args(args).set_params(channel_strengths=True)


# -- retrieve ----------------------------------------------------------------


def run_retrieve(args) -> int:
    """Print the ranked database images for every query image."""
    database_paths = find_images(args.database)
    query_paths = find_images(args.queries)
    pooler = _strength_pooler(args).fit(database_paths)
    n_neighbors = min(args.n_neighbors, len(database_paths))
    if n_neighbors < args.n_neighbors:
        logger.info(
            "Only %d database images, fewer than -k %d: listing all of them",
            n_neighbors,
            args.n_neighbors,
        )
    with tempfile.TemporaryDirectory(prefix="skcrosslayer-") as scratch:
        database = pooler.transform_to_npy(
            database_paths, Path(scratch) / "database.npy"
        )
        queries = pooler.transform(query_paths)
        similarities, indices = rank_database(
            database,
            queries,
            pooler.n_components_,
            _settings_from_args(args),
            n_neighbors,
        )
        # Drop the memory map before its folder is removed, which Windows needs.
        del database

    rankings = [
        {
            "query": os.fspath(query),
            "results": [
                {
                    "rank": rank,
                    "similarity": similarity.item(),
                    "database": os.fspath(database_paths[index]),
                }
                for rank, (similarity, index) in enumerate(
                    zip(row_similarities, row_indices, strict=True), start=1
                )
            ],
        }
        for query, row_similarities, row_indices in zip(
            query_paths, similarities, indices, strict=True
        )
    ]
    if args.json:
        print(json.dumps(rankings, indent=2))
        return 0
    for entry in rankings:
        print(f"query {entry['query']}")
        for result in entry["results"]:
            similarity = result["similarity"]
            formatted = f"{similarity:d}" if args.binary else f"{similarity:.4f}"
            print(f"{result['rank']:>4}  {formatted:>8}  {result['database']}")
        print()
    return 0


# -- feature cache -----------------------------------------------------------


def _file_signature(path: str | os.PathLike) -> list:
    """Return ``[path, size, mtime in ns]`` of a file, for cache keys."""
    status = os.stat(path)
    return [os.fspath(path), status.st_size, status.st_mtime_ns]


def _pooler_key_parameters(pooler) -> dict:
    """Return the pooler parameters that decide the pooled values, JSON-ready."""
    parameters = {
        name: value
        for name, value in pooler.get_params().items()
        if name not in _SPEED_PARAMETERS
    }
    weights = parameters["weights"]
    if weights is not None and weights != "DEFAULT":
        parameters["weights"] = _file_signature(weights)
    if parameters["layers"] is not None:
        parameters["layers"] = list(parameters["layers"])
    return parameters


def _hash(content: dict) -> str:
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def default_cache_dir(root: Path) -> Path:
    """Return ``ROOT/.skcrosslayer-cache``, or a user cache folder if ROOT is read-only.

    The user cache folder is ``$XDG_CACHE_HOME/skcrosslayer/features``, with
    ``~/.cache`` when ``XDG_CACHE_HOME`` is not set.
    """
    if os.access(root, os.W_OK):
        return root / ".skcrosslayer-cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skcrosslayer" / "features"


class _FeatureCache:
    """Pooled vectors on disk: ``<name>.npy`` with a ``<name>.json`` written last.

    An entry counts as present only when its JSON file exists, so an
    interrupted write is recomputed. Every file is written atomically. Without
    a folder nothing is cached, and :meth:`npy_path` points into ``scratch``,
    a temporary folder that the caller removes.
    """

    def __init__(self, folder: Path | None, scratch: str | None):
        self.folder = folder
        self.scratch = scratch

    def _path(self, name: str, suffix: str) -> Path:
        return self.folder / f"{name}{suffix}"

    def load(self, name: str) -> tuple[np.ndarray, dict] | None:
        if self.folder is None or not self._path(name, ".json").is_file():
            return None
        metadata = json.loads(self._path(name, ".json").read_text())
        # Memory-mapped: rows are read from disk as the search needs them.
        features = np.load(self._path(name, ".npy"), mmap_mode="r")
        logger.info("Read cached features %s", self._path(name, ".npy"))
        return features, metadata

    def load_pooler(self, name: str):
        import joblib

        path = self._path(name, ".pooler.joblib")
        if not path.is_file():
            raise FileNotFoundError(
                f"cached database features {self._path(name, '.npy')} have no "
                f"fitted pooler {path}, which pooling new queries needs; delete "
                f"{self._path(name, '.json')} to recompute the entry, or pass "
                "--no-cache"
            )
        # This command wrote the pickle into the cache folder. Unpickling a
        # file from an untrusted source can run arbitrary code.
        return joblib.load(path)

    def npy_path(self, name: str) -> Path:
        """Return the path that the vectors of an entry are written to."""
        if self.folder is None:
            return Path(self.scratch, f"{name}.npy")
        self.folder.mkdir(parents=True, exist_ok=True)
        return self._path(name, ".npy")

    def save(self, name: str, features: np.ndarray, metadata: dict, pooler=None):
        """Write the vectors of an entry, then its pooler and metadata."""
        if self.folder is None:
            return
        atomic_write(self._path(name, ".npy"), lambda f: np.save(f, features))
        self.save_metadata(name, metadata, pooler)

    def save_metadata(self, name: str, metadata: dict, pooler=None):
        """Complete an entry whose vectors are already at :meth:`npy_path`."""
        if self.folder is None:
            return
        import joblib

        if pooler is not None:
            atomic_write(
                self._path(name, ".pooler.joblib"), lambda f: joblib.dump(pooler, f)
            )
        text = json.dumps(metadata, indent=2, default=str)
        atomic_write(self._path(name, ".json"), lambda f: f.write(text), mode="w")
        logger.info("Wrote cached features %s", self._path(name, ".npy"))


@dataclass
class _PooledSet:
    """Pooled vectors with the fitted pooler's sizes and where they came from.

    ``features`` is a read-only memory map of the rows in sorted path order,
    and ``rows`` gives the row of each database image in dataset order (None
    when the two orders agree). The search reads rows through this index
    because reordering the array would copy every row into memory.
    """

    features: np.ndarray
    rows: np.ndarray | None
    n_components: int
    n_guidance_channels: int
    layers: list[str]
    source: str
    key: str


def _pool_database(pooler, paths: Sequence[str], cache: _FeatureCache) -> tuple:
    """Return the database vectors, and the fitted pooler or None.

    The pooler's PCA is fitted on the database images. Vectors are computed in
    sorted path order, which the key uses, straight into the entry's ``.npy``
    file, batch by batch, and read back memory-mapped.
    """
    sorted_paths = sorted(paths)
    key = _hash(
        {
            "pooler": _pooler_key_parameters(pooler),
            "version": __version__,
            "images": [_file_signature(p) for p in sorted_paths],
        }
    )
    name = f"database-{key}"
    row_of = {path: row for row, path in enumerate(sorted_paths)}
    rows = _index_or_none([row_of[path] for path in paths], len(sorted_paths))

    cached = cache.load(name)
    if cached is not None:
        features, metadata = cached
        pooled = _PooledSet(
            features,
            rows,
            metadata["n_components"],
            metadata["n_guidance_channels"],
            metadata["layers"],
            "cache",
            key,
        )
        return pooled, None

    pooler.fit(sorted_paths)
    features = pooler.transform_to_npy(sorted_paths, cache.npy_path(name))
    metadata = {
        "n_components": pooler.n_components_,
        "n_guidance_channels": pooler.n_guidance_channels_,
        "layers": list(pooler.layers_),
        "pooler": _pooler_key_parameters(pooler),
        "version": __version__,
        "paths": sorted_paths,
    }
    cache.save_metadata(name, metadata, pooler)
    pooled = _PooledSet(
        features,
        rows,
        pooler.n_components_,
        pooler.n_guidance_channels_,
        list(pooler.layers_),
        "computed",
        key,
    )
    return pooled, pooler


def _index_or_none(rows: Sequence[int], n_rows: int) -> np.ndarray | None:
    """Return ``rows`` as an index array, or None when it lists every row in order."""
    rows = np.asarray(rows, dtype=np.intp)
    if np.array_equal(rows, np.arange(n_rows)):
        return None
    return rows


def _crop_to_box(path: str, box: np.ndarray):
    """Load an image and crop it to ``(x1, y1, x2, y2)``, clipped to the image."""
    from .images import load_rgb

    image = load_rgb(path)
    width, height = image.size
    left, top, right, bottom = (int(round(v)) for v in box)
    left, top = max(0, left), max(0, top)
    right, bottom = min(width, right), min(height, bottom)
    if right <= left or bottom <= top:
        raise ValueError(
            f"the query box {box.tolist()} of {path!r} has no pixels inside the "
            f"{width}x{height} image; check the dataset's ground-truth files"
        )
    return image.crop((left, top, right, bottom))


def _pool_queries(
    dataset,
    crop: bool,
    database: _PooledSet,
    fitted_pooler,
    cache: _FeatureCache,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Return the query vectors, the row of each query in them, and their source.

    Full query images that are database images reuse the database rows, read
    through an index as the database is. Other queries are pooled with the
    pooler fitted on the database, and their rows are in order (None).
    """
    in_database = dataset.query_indices >= 0
    if not crop and in_database.all():
        rows = dataset.query_indices
        if database.rows is not None:
            rows = database.rows[rows]
        n_rows = database.features.shape[0]
        return database.features, _index_or_none(rows, n_rows), "database rows"

    boxes = dataset.query_boxes.tolist() if crop else None
    key = _hash(
        {
            "database": database.key,
            "queries": [_file_signature(p) for p in dataset.query_paths],
            "boxes": boxes,
        }
    )
    name = f"queries-{key}"
    cached = cache.load(name)
    if cached is not None:
        return cached[0], None, "cache"

    pooler = fitted_pooler or cache.load_pooler(f"database-{database.key}")
    if crop:
        images = [
            _crop_to_box(path, box)
            for path, box in zip(dataset.query_paths, dataset.query_boxes, strict=True)
        ]
    else:
        images = list(dataset.query_paths)
    features = pooler.transform(images)
    metadata = {"database": database.key, "paths": dataset.query_paths, "boxes": boxes}
    cache.save(name, features, metadata)
    return features, None, "computed"


# -- evaluate-retrieval ------------------------------------------------------


def _load_dataset(protocol: str, root: str):
    from . import datasets

    loaders = {
        "holidays": datasets.load_holidays,
        "oxford": datasets.load_oxford5k,
        "paris": datasets.load_paris6k,
        "roxford": datasets.load_roxford5k,
        "rparis": datasets.load_rparis6k,
        "ukbench": datasets.load_ukbench,
        "groups": datasets.load_image_groups,
    }
    return loaders[protocol](root)


def _score(protocol: str, dataset, rankings: np.ndarray) -> dict:
    """Return the protocol's scores for the rankings of the dataset's queries."""
    from .metrics import mean_average_precision, revisited_map, ukbench_score

    if protocol == "ukbench":
        score = ukbench_score(
            rankings, dataset.groups, query_indices=dataset.query_indices
        )
        return {"ukbench_score": score}
    if protocol in ("roxford", "rparis"):
        gnd = [
            {"easy": easy, "hard": hard, "junk": junk}
            for easy, hard, junk in zip(
                dataset.gnd_easy, dataset.gnd_hard, dataset.gnd_junk, strict=True
            )
        ]
        result = revisited_map(
            rankings, gnd, ks=_REVISITED_KS, n_database=dataset.n_database
        )
        return {
            setting: {
                "mAP": values["map"],
                **{f"mP@{k}": values["mp_at_k"][k] for k in _REVISITED_KS},
                "n_excluded_queries": values["n_excluded"],
            }
            for setting, values in result.items()
        }
    score = mean_average_precision(
        rankings, dataset.positives, dataset.junk, n_database=dataset.n_database
    )
    return {"mAP": score}


def _check_crop(args, dataset) -> bool:
    crop = args.query_images == "box"
    if crop and dataset.query_boxes is None:
        raise ValueError(
            f"--query-images box needs query boxes, but the {args.protocol} "
            "protocol has whole-image queries; use --query-images full"
        )
    return crop


def _protocol_record(args, dataset, crop: bool, pooler, database, sources) -> dict:
    """Describe every choice that moves the scores, for the result record."""
    policy = pooler._resize_policy()
    settings = _settings_from_args(args)
    return {
        "protocol": args.protocol,
        "dataset": dataset.name,
        "root": dataset.root,
        "n_database": dataset.n_database,
        "n_queries": dataset.n_queries,
        "query_images": "cropped to the query box" if crop else "full images",
        "n_queries_in_database": int(np.sum(dataset.query_indices >= 0)),
        "query_in_own_ranking": _QUERY_IN_OWN_RANKING[args.protocol],
        "backbone": pooler.backbone,
        "weights": pooler.weights,
        "layers": database.layers,
        "image_size": policy.image_size,
        "max_size": policy.max_size,
        "size_multiple": policy.size_multiple,
        "resize_filter": policy.interpolation,
        "decoder": "torchvision on the device" if pooler.decode_on_device else "PIL",
        "neighborhood": pooler.neighborhood,
        "pooling": pooler.pooling,
        "pca": "fitted on the database images",
        "n_components": database.n_components,
        "n_guidance_channels": database.n_guidance_channels,
        "n_channels": args.n_channels,
        "selection_mode": args.selection_mode,
        "binary": args.binary,
        "bytes_per_database_image": settings.bytes_per_image(
            database.n_guidance_channels, database.n_components
        ),
        "features": sources,
    }


def _format_scores(scores: dict) -> list[str]:
    if "mAP" in scores:
        return [f"mAP: {scores['mAP']:.4f}"]
    if "ukbench_score" in scores:
        score = scores["ukbench_score"]
        return [f"UKBench score (relevant images in the top 4): {score:.4f}"]
    lines = []
    for setting, values in scores.items():
        precisions = ", ".join(f"mP@{k} {values[f'mP@{k}']:.4f}" for k in _REVISITED_KS)
        lines.append(f"{setting:<6}  mAP {values['mAP']:.4f}  {precisions}")
    return lines


def _evaluate(args, dataset, crop: bool, pooler, cache: _FeatureCache) -> dict:
    """Pool the images, rank the database for each query and score the rankings.

    Returns the result record that ``--json`` prints.
    """
    start = time.perf_counter()
    database, fitted = _pool_database(pooler, dataset.database_paths, cache)
    queries, query_rows, query_source = _pool_queries(
        dataset, crop, database, fitted, cache
    )
    pooled = time.perf_counter()

    n_neighbors = dataset.n_database
    if args.protocol == "ukbench":
        n_neighbors = min(_UKBENCH_DEPTH, dataset.n_database)
    _, rankings = rank_database(
        database.features,
        queries,
        database.n_components,
        _settings_from_args(args),
        n_neighbors,
        database_rows=database.rows,
        query_rows=query_rows,
    )
    scores = _score(args.protocol, dataset, rankings)
    searched = time.perf_counter()

    sources = {
        "cache_dir": None if cache.folder is None else os.fspath(cache.folder),
        "database": database.source,
        "queries": query_source,
    }
    return {
        "scores": scores,
        "protocol": _protocol_record(args, dataset, crop, pooler, database, sources),
        "seconds": {
            "pooling": round(pooled - start, 3),
            "search_and_scoring": round(searched - pooled, 3),
        },
    }


def run_evaluate_retrieval(args) -> int:
    """Evaluate retrieval on a benchmark in its official layout and print the scores."""
    if args.cache is not None and args.no_cache:
        raise ValueError("--cache and --no-cache contradict each other; pass one")
    dataset = _load_dataset(args.protocol, args.root)
    crop = _check_crop(args, dataset)
    pooler = _strength_pooler(args)
    pooler._resize_policy()
    if args.no_cache:
        folder = None
    elif args.cache is not None:
        folder = Path(args.cache)
    else:
        folder = default_cache_dir(Path(dataset.root))

    # Without a cache the database vectors go to a temporary file, removed here.
    scratch = contextlib.nullcontext()
    if folder is None:
        scratch = tempfile.TemporaryDirectory(prefix="skcrosslayer-")
    with scratch as scratch_folder:
        cache = _FeatureCache(folder, scratch_folder)
        record = _evaluate(args, dataset, crop, pooler, cache)

    if args.json:
        print(json.dumps(record, indent=2, default=str))
        return 0
    print(
        f"{args.protocol}: {dataset.n_database} database images, "
        f"{dataset.n_queries} queries"
    )
    for line in _format_scores(record["scores"]):
        print(line)
    print()
    for name, value in record["protocol"].items():
        if name not in ("protocol", "features"):
            print(f"{name}: {value}")
    sources = record["protocol"]["features"]
    print(f"features: database {sources['database']}, queries {sources['queries']}")
    return 0

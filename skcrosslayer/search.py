"""Image retrieval by inner product of pooled vectors or of their binary codes.

A cross-layer pooled vector is K blocks of d dims, one block per guidance
channel (channel-major: block k is columns ``[k * d, (k + 1) * d)``). Adaptive
channel selection keeps k blocks per query and scores a database vector by the
sum of the block inner products over the kept blocks only (L. Liu, C. Shen,
A. van den Hengel, "Cross-convolutional-layer Pooling for Image Recognition",
TPAMI 2017). Two modes are supported through boolean block masks:

- query mode (the TPAMI 2017 setup): only the query is masked, and every block
  of the database vector is compared.
- symmetric mode: every vector keeps its own blocks, and a block counts only
  when both the query and the database vector keep it. This stores k blocks per
  database vector in place of K.

Binary codes are packed with :func:`skcrosslayer.binary.pack_signs`. On ±1
codes a block inner product is ``n_bits_per_block - 2 * hamming`` over the
bytes of that block, so masked search counts set bits in the selected byte
ranges and never unpacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from numbers import Integral

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from skcrosslayer.binary import (
    _BYTE_BIT_COUNTS,
    _check_block_size,
    _check_packed,
    _hamming_distances,
)

__all__ = [
    "ImageRetriever",
    "float_similarities",
    "packed_similarities",
    "search",
    "select_top_blocks",
]

logger = logging.getLogger(__name__)

# Upper bound on the similarity entries ranked at once by ImageRetriever.score,
# which ranks the whole database for a batch of queries.
_MAX_RANKING_ENTRIES = 1 << 22


def _count_byte_bits(words: np.ndarray) -> np.ndarray:
    """Count the set bits of each element of a uint8 array with a lookup table."""
    return _BYTE_BIT_COUNTS[words]


# Masked packed search XORs and counts codes as words of the widest of these sizes
# (in bytes) that divides the bytes per block. np.bitwise_count exists from
# NumPy 2.0 on, and older versions count single bytes with a table.
if hasattr(np, "bitwise_count"):
    _WORD_BYTES = (8, 4, 2, 1)
    _count_word_bits = np.bitwise_count
else:
    _WORD_BYTES = (1,)
    _count_word_bits = _count_byte_bits


def _check_block_mask(
    mask: ArrayLike | None, n_rows: int, n_blocks: int, name: str
) -> np.ndarray | None:
    """Return the mask as a boolean array, raising if its shape or values are wrong."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != (n_rows, n_blocks):
        raise ValueError(
            f"{name} must have shape (n_vectors, n_blocks) = ({n_rows}, "
            f"{n_blocks}), one column per block; got shape {mask.shape}."
        )
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(
                f"{name} must be boolean or contain only 0 and 1; got values "
                f"{np.unique(mask)[:5]}. Build it with select_top_blocks."
            )
        mask = mask.astype(bool)
    return mask


def _check_same_width(queries: np.ndarray, database: np.ndarray, unit: str) -> None:
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"queries have {queries.shape[1]} {unit} and database vectors have "
            f"{database.shape[1]}; both must come from the same pooling settings."
        )


def _check_floats(values: ArrayLike, name: str) -> np.ndarray:
    return check_array(values, dtype=[np.float64, np.float32], input_name=name)


def _packed_block_count(n_bytes: int, n_bits_per_block: int) -> int:
    """Return the number of blocks in codes of n_bytes, raising if they do not tile."""
    n_bytes_per_block = -(-n_bits_per_block // 8)
    if n_bytes % n_bytes_per_block != 0:
        raise ValueError(
            f"codes of {n_bytes} bytes cannot hold whole blocks of "
            f"{n_bits_per_block} bits ({n_bytes_per_block} bytes each); pack them "
            f"with pack_signs(X, block_size={n_bits_per_block})."
        )
    return n_bytes // n_bytes_per_block


def _zero_unselected_blocks(
    vectors: np.ndarray, block_mask: np.ndarray, block_size: int
) -> np.ndarray:
    """Return a copy of the vectors with the blocks outside the mask set to zero."""
    return vectors * np.repeat(block_mask, block_size, axis=1)


def _float_similarities(
    queries: np.ndarray,
    database: np.ndarray,
    query_block_mask: np.ndarray | None,
    database_block_mask: np.ndarray | None,
    block_size: int,
) -> np.ndarray:
    # Zeroing the unselected blocks of both sides leaves, in the inner product,
    # the block products where both masks are set.
    if query_block_mask is not None:
        queries = _zero_unselected_blocks(queries, query_block_mask, block_size)
    if database_block_mask is not None:
        database = _zero_unselected_blocks(database, database_block_mask, block_size)
    return (queries @ database.T).astype(np.float32, copy=False)


@validate_params(
    {
        "queries": ["array-like"],
        "database": ["array-like"],
        "query_block_mask": ["array-like", None],
        "database_block_mask": ["array-like", None],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def float_similarities(
    queries: ArrayLike,
    database: ArrayLike,
    query_block_mask: ArrayLike | None = None,
    database_block_mask: ArrayLike | None = None,
    block_size: int | None = None,
) -> np.ndarray:
    """Compute block-masked inner products between real-valued vectors.

    Parameters
    ----------
    queries : array-like of shape (n_queries, n_features)
    database : array-like of shape (n_database, n_features)
    query_block_mask : array-like of shape (n_queries, n_blocks), bool, default=None
        Blocks selected for each query. None selects every block.
    database_block_mask : array-like of shape (n_database, n_blocks), bool, \
default=None
        Blocks kept by each database vector (symmetric mode). None keeps every
        block.
    block_size : int or None, default=None
        Features per block, ``n_blocks = n_features // block_size``. None makes
        the whole vector one block.

    Returns
    -------
    ndarray of shape (n_queries, n_database), float32
        Entry (q, x) is the sum over blocks k selected by both masks of the
        inner product of block k of query q and block k of database vector x.

    Examples
    --------
    >>> queries = [[1.0, 2.0, 3.0, 4.0]]
    >>> database = [[1.0, 1.0, 1.0, 1.0]]
    >>> float_similarities(queries, database)
    array([[10.]], dtype=float32)
    >>> float_similarities(queries, database, [[False, True]], block_size=2)
    array([[7.]], dtype=float32)
    """
    queries = _check_floats(queries, "queries")
    database = _check_floats(database, "database")
    _check_same_width(queries, database, "features")
    n_blocks = _check_block_size(queries.shape[1], block_size)
    query_block_mask = _check_block_mask(
        query_block_mask, queries.shape[0], n_blocks, "query_block_mask"
    )
    database_block_mask = _check_block_mask(
        database_block_mask, database.shape[0], n_blocks, "database_block_mask"
    )
    return _float_similarities(
        queries,
        database,
        query_block_mask,
        database_block_mask,
        queries.shape[1] // n_blocks,
    )


def _packed_similarities(
    queries: np.ndarray,
    database: np.ndarray,
    n_bits_per_block: int,
    query_block_mask: np.ndarray | None,
    database_block_mask: np.ndarray | None,
) -> np.ndarray:
    n_blocks = _packed_block_count(queries.shape[1], n_bits_per_block)
    if query_block_mask is None and database_block_mask is None:
        distances = _hamming_distances(queries, database)
        return n_blocks * n_bits_per_block - 2 * distances
    return _masked_packed_similarities(
        queries,
        database,
        n_bits_per_block,
        n_blocks,
        query_block_mask,
        database_block_mask,
    )


def _block_words(
    queries: np.ndarray, database: np.ndarray, n_blocks: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split packed codes into blocks of unsigned integer words.

    Returns the query words, of shape (n_queries, n_blocks, n_words), and the
    database words in block-major order, of shape (n_blocks, n_words,
    n_database). In that order each word of a block is one contiguous row over
    the database, so gathering the selected blocks of a query copies whole
    rows, and the bit counts are summed down columns.
    """
    n_bytes_per_block = queries.shape[1] // n_blocks
    word_bytes = next(size for size in _WORD_BYTES if n_bytes_per_block % size == 0)
    word = np.dtype(f"uint{8 * word_bytes}")
    n_words = n_bytes_per_block // word_bytes
    query_words = np.ascontiguousarray(queries).view(word)
    query_words = query_words.reshape(queries.shape[0], n_blocks, n_words)
    database_words = np.ascontiguousarray(database).view(word)
    database_words = database_words.reshape(database.shape[0], n_blocks, n_words)
    return query_words, np.ascontiguousarray(database_words.transpose(1, 2, 0))


def _masked_packed_similarities(
    queries: np.ndarray,
    database: np.ndarray,
    n_bits_per_block: int,
    n_blocks: int,
    query_block_mask: np.ndarray | None,
    database_block_mask: np.ndarray | None,
) -> np.ndarray:
    """Sum ``n_bits_per_block - 2 * hamming`` over the blocks both masks keep."""
    n_queries, n_database = queries.shape[0], database.shape[0]
    query_words, database_words = _block_words(queries, database, n_blocks)
    database_keeps = None
    if database_block_mask is not None:
        # (n_blocks, 1, n_database), 1 where the database code keeps the block
        database_keeps = np.ascontiguousarray(database_block_mask.T, dtype=np.uint8)
        database_keeps = database_keeps[:, None, :]

    similarities = np.empty((n_queries, n_database), dtype=np.int32)
    for q in range(n_queries):
        if query_block_mask is None:
            # (n_blocks, n_words, n_database)
            differing = database_words ^ query_words[q, :, :, None]
            keeps = database_keeps
        else:
            selected = np.flatnonzero(query_block_mask[q])
            # (n_selected, n_words, n_database)
            differing = database_words.take(selected, axis=0)
            differing ^= query_words[q, selected, :, None]
            keeps = None
            if database_keeps is not None:
                keeps = database_keeps.take(selected, axis=0)
        bit_counts = _count_word_bits(differing)

        if keeps is None:
            n_differing = bit_counts.sum(axis=(0, 1), dtype=np.int32)
            n_bits = differing.shape[0] * n_bits_per_block
            similarities[q] = n_bits - 2 * n_differing
            continue

        # Blocks that the database code drops add no bits and no differences.
        bit_counts *= keeps
        n_differing = bit_counts.sum(axis=(0, 1), dtype=np.int32)
        n_bits = n_bits_per_block * keeps.sum(axis=(0, 1), dtype=np.int32)
        similarities[q] = n_bits - 2 * n_differing
    return similarities


@validate_params(
    {
        "queries": ["array-like"],
        "database": ["array-like"],
        "n_bits_per_block": [Interval(Integral, 1, None, closed="left")],
        "query_block_mask": ["array-like", None],
        "database_block_mask": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def packed_similarities(
    queries: ArrayLike,
    database: ArrayLike,
    n_bits_per_block: int,
    query_block_mask: ArrayLike | None = None,
    database_block_mask: ArrayLike | None = None,
) -> np.ndarray:
    """Compute block-masked ±1 inner products from packed codes.

    Parameters
    ----------
    queries : array-like of shape (n_queries, n_bytes), uint8
        Codes from ``pack_signs(X, block_size=n_bits_per_block)``.
    database : array-like of shape (n_database, n_bytes), uint8
    n_bits_per_block : int
        Sign bits in one block, without padding. Each block takes
        ``ceil(n_bits_per_block / 8)`` bytes. For codes packed without blocks,
        pass the number of bits per code.
    query_block_mask : array-like of shape (n_queries, n_blocks), bool, default=None
        Blocks selected for each query. None selects every block.
    database_block_mask : array-like of shape (n_database, n_blocks), bool, \
default=None
        Blocks kept by each database code (symmetric mode). None keeps every
        block.

    Returns
    -------
    ndarray of shape (n_queries, n_database), int32
        Entry (q, x) is the sum over blocks selected by both masks of
        ``n_bits_per_block - 2 * hamming`` between the two blocks, which equals
        the inner product of their ±1 signs.

    Notes
    -----
    The padding bits of a block must be zero, as :func:`pack_signs` writes
    them. Without masks the result is ``n_blocks * n_bits_per_block - 2 *
    hamming`` over whole codes. With masks, the database codes are regrouped
    block by block once per call, and each query XORs and counts only the
    words of its selected blocks. A word is a uint64, uint32, uint16 or uint8,
    the widest that divides the bytes per block.

    Examples
    --------
    >>> import numpy as np
    >>> queries = np.array([[0b11000000, 0b10000000]], dtype=np.uint8)
    >>> database = np.array([[0b11000000, 0b01000000]], dtype=np.uint8)
    >>> packed_similarities(queries, database, 2)
    array([[0]], dtype=int32)
    >>> packed_similarities(queries, database, 2, query_block_mask=[[True, False]])
    array([[2]], dtype=int32)
    """
    queries = _check_packed(queries, "queries")
    database = _check_packed(database, "database")
    _check_same_width(queries, database, "bytes")
    n_blocks = _packed_block_count(queries.shape[1], n_bits_per_block)
    query_block_mask = _check_block_mask(
        query_block_mask, queries.shape[0], n_blocks, "query_block_mask"
    )
    database_block_mask = _check_block_mask(
        database_block_mask, database.shape[0], n_blocks, "database_block_mask"
    )
    return _packed_similarities(
        queries, database, n_bits_per_block, query_block_mask, database_block_mask
    )


@validate_params(
    {
        "block_scores": ["array-like"],
        "n_selected": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def select_top_blocks(block_scores: ArrayLike, n_selected: int) -> np.ndarray:
    """Build a block mask that keeps the highest-scoring blocks of each vector.

    For adaptive channel selection the score of a block is the mean activation
    of its guidance channel in the image.

    Parameters
    ----------
    block_scores : array-like of shape (n_vectors, n_blocks)
    n_selected : int
        Blocks kept per vector, at most ``n_blocks``. Among equal scores the
        lower block index is kept.

    Returns
    -------
    ndarray of shape (n_vectors, n_blocks), bool

    Examples
    --------
    >>> select_top_blocks([[0.1, 0.7, 0.7, 0.2]], 2)
    array([[False,  True,  True, False]])
    """
    block_scores = check_array(block_scores, input_name="block_scores")
    n_vectors, n_blocks = block_scores.shape
    if n_selected > n_blocks:
        raise ValueError(
            f"n_selected={n_selected} is more than the {n_blocks} blocks per "
            f"vector; pass n_selected <= {n_blocks}."
        )
    order = np.argsort(-block_scores, axis=1, kind="stable")[:, :n_selected]
    mask = np.zeros((n_vectors, n_blocks), dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def _top_k_positions(similarities: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Return the columns of the n_neighbors largest similarities of each row.

    The result, of shape (n_rows, min(n_neighbors, n_columns)), is best first.
    Equal similarities are ordered by increasing column, and at the cut the
    lowest columns are kept, exactly as ``argsort(-similarities,
    kind="stable")[:, :n_neighbors]``. A partition finds each row's
    n_neighbors-th value in linear time, and only the kept columns are sorted.
    """
    n_rows, n_columns = similarities.shape
    negated = -similarities
    if n_neighbors >= n_columns:
        return np.argsort(negated, axis=1, kind="stable")
    # (n_rows, 1): the n_neighbors-th smallest negated similarity of each row
    threshold = np.partition(negated, n_neighbors - 1, axis=1)[:, n_neighbors - 1, None]
    if np.isnan(threshold).any():
        # NaN compares unequal to itself, so the columns cannot be counted by value.
        return np.argsort(negated, axis=1, kind="stable")[:, :n_neighbors]

    better = negated < threshold
    tied = negated == threshold
    # Fill the places left after the better columns with the first tied columns.
    n_tied_kept = n_neighbors - better.sum(axis=1, keepdims=True)
    first_tied = np.cumsum(tied, axis=1, dtype=np.int32) <= n_tied_kept
    is_kept = better | (tied & first_tied)
    # Exactly n_neighbors columns per row are kept, listed in increasing order.
    positions = np.nonzero(is_kept)[1].reshape(n_rows, n_neighbors)
    kept_negated = np.take_along_axis(negated, positions, axis=1)
    order = np.argsort(kept_negated, axis=1, kind="stable")
    return np.take_along_axis(positions, order, axis=1)


def _rank_in_chunks(
    chunk_similarities: Callable[[int, int], np.ndarray],
    n_queries: int,
    n_database: int,
    n_neighbors: int,
    chunk_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the n_neighbors best database items per query, one chunk at a time.

    ``chunk_similarities(start, stop)`` returns the (n_queries, stop - start)
    similarities to database items start..stop - 1.
    """
    if n_neighbors == n_database:
        similarities = np.concatenate(
            [
                chunk_similarities(start, min(start + chunk_size, n_database))
                for start in range(0, n_database, chunk_size)
            ],
            axis=1,
        )
        order = np.argsort(-similarities, axis=1, kind="stable")
        return np.take_along_axis(similarities, order, axis=1), order

    best_similarities = None
    best_indices = np.empty((n_queries, 0), dtype=np.intp)
    for start in range(0, n_database, chunk_size):
        stop = min(start + chunk_size, n_database)
        similarities = chunk_similarities(start, stop)
        indices = np.broadcast_to(np.arange(start, stop), similarities.shape)
        if best_similarities is not None:
            similarities = np.concatenate([best_similarities, similarities], axis=1)
            indices = np.concatenate([best_indices, indices], axis=1)

        # Kept items precede the chunk and have lower indices, and among equal
        # similarities the lower column wins, so ties go to lower indices.
        order = _top_k_positions(similarities, n_neighbors)
        best_similarities = np.take_along_axis(similarities, order, axis=1)
        best_indices = np.take_along_axis(indices, order, axis=1)
    return best_similarities, best_indices


def _search(
    queries: np.ndarray,
    database: np.ndarray,
    n_neighbors: int,
    metric: str,
    block_width: int,
    query_block_mask: np.ndarray | None,
    database_block_mask: np.ndarray | None,
    chunk_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank validated inputs. block_width is the features or sign bits per block."""
    if metric == "inner_product" and query_block_mask is not None:
        # Mask the queries once here, not once per chunk.
        queries = _zero_unselected_blocks(queries, query_block_mask, block_width)
        query_block_mask = None

    def chunk_similarities(start: int, stop: int) -> np.ndarray:
        chunk = database[start:stop]
        database_mask = None
        if database_block_mask is not None:
            database_mask = database_block_mask[start:stop]
        if metric == "inner_product":
            return _float_similarities(
                queries, chunk, query_block_mask, database_mask, block_width
            )
        return _packed_similarities(
            queries, chunk, block_width, query_block_mask, database_mask
        )

    return _rank_in_chunks(
        chunk_similarities,
        queries.shape[0],
        database.shape[0],
        n_neighbors,
        chunk_size,
    )


def _check_search_inputs(
    queries: ArrayLike,
    database: ArrayLike,
    metric: str,
    block_size: int | None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validate the vectors and return them with n_blocks and the block width."""
    if metric == "inner_product":
        queries = _check_floats(queries, "queries")
        database = _check_floats(database, "database")
        _check_same_width(queries, database, "features")
        n_blocks = _check_block_size(queries.shape[1], block_size)
        return queries, database, n_blocks, queries.shape[1] // n_blocks

    queries = _check_packed(queries, "queries")
    database = _check_packed(database, "database")
    _check_same_width(queries, database, "bytes")
    n_bits_per_block = 8 * queries.shape[1] if block_size is None else block_size
    n_blocks = _packed_block_count(queries.shape[1], n_bits_per_block)
    return queries, database, n_blocks, n_bits_per_block


def _check_n_neighbors(n_neighbors: int, n_database: int) -> None:
    if n_neighbors > n_database:
        raise ValueError(
            f"n_neighbors={n_neighbors} is more than the {n_database} database "
            f"items; pass n_neighbors <= {n_database}."
        )


@validate_params(
    {
        "queries": ["array-like"],
        "database": ["array-like"],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "metric": [StrOptions({"inner_product", "hamming"})],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
        "query_block_mask": ["array-like", None],
        "database_block_mask": ["array-like", None],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def search(
    queries: ArrayLike,
    database: ArrayLike,
    n_neighbors: int,
    *,
    metric: str = "inner_product",
    block_size: int | None = None,
    query_block_mask: ArrayLike | None = None,
    database_block_mask: ArrayLike | None = None,
    chunk_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Find the most similar database items of each query, one chunk at a time.

    Parameters
    ----------
    queries : array-like of shape (n_queries, n_columns)
        Real-valued vectors for ``metric="inner_product"``, packed uint8 codes
        for ``metric="hamming"``.
    database : array-like of shape (n_database, n_columns)
    n_neighbors : int
        Items returned per query, at most ``n_database``.
    metric : {"inner_product", "hamming"}, default="inner_product"
        "hamming" ranks packed codes by Hamming distance and returns the ±1
        inner products ``n_bits - 2 * hamming``, not distances.
    block_size : int or None, default=None
        Features per block, or sign bits per block (without padding) for
        packed codes. None makes the whole vector one block. For packed codes
        this assumes ``8 * n_bytes`` bits, so pass the true bit count to get
        exact similarities when it is not a multiple of 8. The ranking does not
        depend on it, because padding bits are zero in every code.
    query_block_mask : array-like of shape (n_queries, n_blocks), bool, default=None
        Blocks selected for each query. None selects every block.
    database_block_mask : array-like of shape (n_database, n_blocks), bool, \
default=None
        Blocks kept by each database item (symmetric mode). None keeps every
        block.
    chunk_size : int, default=4096
        Database items compared per step. The similarity buffer contains
        ``n_queries * (chunk_size + n_neighbors)`` entries, or
        ``n_queries * n_database`` when ``n_neighbors == n_database``.

    Returns
    -------
    similarities : ndarray of shape (n_queries, n_neighbors)
        Best first, float32 for "inner_product" and int32 for "hamming".
        Equal similarities are ordered by increasing database index.
    indices : ndarray of shape (n_queries, n_neighbors), intp
        Database indices of the returned items.

    Examples
    --------
    >>> queries = [[1.0, 0.0]]
    >>> database = [[0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [2.0, 5.0]]
    >>> search(queries, database, 3)
    (array([[2., 2., 1.]], dtype=float32), array([[1, 3, 2]]))
    """
    queries, database, n_blocks, block_width = _check_search_inputs(
        queries, database, metric, block_size
    )
    _check_n_neighbors(n_neighbors, database.shape[0])
    query_block_mask = _check_block_mask(
        query_block_mask, queries.shape[0], n_blocks, "query_block_mask"
    )
    database_block_mask = _check_block_mask(
        database_block_mask, database.shape[0], n_blocks, "database_block_mask"
    )
    return _search(
        queries,
        database,
        n_neighbors,
        metric,
        block_width,
        query_block_mask,
        database_block_mask,
        chunk_size,
    )


def _average_precision(
    ranking: ArrayLike, positives: ArrayLike, junk: ArrayLike | None = None
) -> float:
    """Compute the trapezoid-rule average precision of one ranked list.

    As in the Oxford and Holidays evaluation code: junk items are removed from
    the ranking first, and AP is the trapezoid area under the precision-recall
    curve. Positives missing from the ranking add no recall. Returns NaN when
    there are no positives, so that the caller can exclude the query.
    """
    ranking = np.asarray(ranking)
    positives = np.unique(np.asarray(positives))
    if positives.size == 0:
        return float("nan")
    if junk is not None:
        ranking = ranking[~np.isin(ranking, np.asarray(junk))]

    # 0-based positions of the positives in the ranking without junk.
    ranks = np.flatnonzero(np.isin(ranking, positives))
    n_found = np.arange(1, ranks.size + 1)
    precision_at = n_found / (ranks + 1)
    # Precision at the position before each positive; 1 before the first item.
    precision_before = np.ones_like(precision_at)
    not_first = ranks > 0
    precision_before[not_first] = (n_found[not_first] - 1) / ranks[not_first]
    # Each positive adds 1 / n_positives recall.
    return float(np.sum(precision_before + precision_at) / (2 * positives.size))


def _import_faiss():
    """Return the faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class ImageRetriever(BaseEstimator):
    """Rank database images by similarity to query images.

    Queries and database items are pooled vectors (``metric="inner_product"``)
    or their packed sign codes from
    :class:`~skcrosslayer.binary.FeatureBinarizer` (``metric="hamming"``).
    :meth:`score` returns the mean average precision with database items of
    the query's label as positives, so the retriever can end a
    :class:`~sklearn.pipeline.Pipeline` tuned by
    :class:`~sklearn.model_selection.GridSearchCV`.

    Parameters
    ----------
    metric : {"inner_product", "hamming"}, default="inner_product"
        "inner_product" compares real-valued vectors. "hamming" compares
        packed uint8 codes and reports ±1 inner products
        ``n_bits - 2 * hamming``, so higher is better for both.
    n_neighbors : int, default=5
        Items returned per query by :meth:`kneighbors`.
    block_size : int or None, default=None
        Features per block (the local-feature dims d), or sign bits per block
        for packed codes, which must be packed with the same ``block_size``.
        None makes the whole vector one block. For packed codes None counts
        8 bits per byte, so the reported similarities include the zero padding
        bits when the code length is not a multiple of 8. Rankings are
        unchanged. Block masks need one column per block.
    mode : {"query", "symmetric"}, default="query"
        "query": only queries are masked and database items are complete, the
        adaptive channel selection of L. Liu, C. Shen, A. van den Hengel,
        "Cross-convolutional-layer Pooling for Image Recognition", TPAMI 2017.
        "symmetric": each database item keeps its own blocks, passed to
        :meth:`fit` as ``database_block_mask``, and a block counts only when
        both the query and the item keep it.
    chunk_size : int, default=4096
        Database items compared per step. The similarity buffer of
        :meth:`kneighbors` contains ``n_queries * (chunk_size + n_neighbors)``
        entries, or ``n_queries * n_database`` when all items are returned.
    use_faiss : "auto" or bool, default="auto"
        Run unmasked "hamming" searches on ``faiss.IndexBinaryFlat``. "auto"
        uses faiss when it can be imported. Masked searches always run on
        NumPy because the faiss index has no per-query byte masks.

    Attributes
    ----------
    database_ : ndarray of shape (n_database, n_features_in_)
        The database vectors or codes.
    labels_ : ndarray of shape (n_database,) or None
        Database labels passed to :meth:`fit` as ``y``.
    database_block_mask_ : ndarray of shape (n_database, n_blocks_) or None
        Blocks kept by each database item in symmetric mode.
    n_blocks_ : int
        Number of blocks per vector.
    use_faiss_ : bool
        Whether unmasked searches run on faiss.
    n_features_in_ : int
        Number of features, or bytes per code for "hamming".
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.

    Notes
    -----
    In symmetric mode the database is stored at full width, and the blocks
    outside ``database_block_mask_`` are ignored when comparing. With real
    vectors whose unkept blocks are zero the mask can be omitted, because zero
    blocks add nothing to an inner product. Packed codes have no zero, so
    symmetric "hamming" needs the mask.

    Examples
    --------
    >>> import numpy as np
    >>> database = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    >>> retriever = ImageRetriever(n_neighbors=2).fit(database, y=[0, 1, 0])
    >>> similarities, indices = retriever.kneighbors([[1.0, 0.1]])
    >>> indices
    array([[0, 2]])
    >>> retriever.score([[1.0, 0.1]], [0])
    1.0
    """

    _parameter_constraints: dict = {
        "metric": [StrOptions({"inner_product", "hamming"})],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
        "mode": [StrOptions({"query", "symmetric"})],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "use_faiss": [StrOptions({"auto"}), "boolean"],
    }

    def __init__(
        self,
        metric: str = "inner_product",
        n_neighbors: int = 5,
        *,
        block_size: int | None = None,
        mode: str = "query",
        chunk_size: int = 4096,
        use_faiss: str | bool = "auto",
    ):
        self.metric = metric
        self.n_neighbors = n_neighbors
        self.block_size = block_size
        self.mode = mode
        self.chunk_size = chunk_size
        self.use_faiss = use_faiss

    def _validate_vectors(self, X: ArrayLike, y=None, reset: bool = False):
        """Validate X (and y when given) for the metric."""
        dtype = [np.float64, np.float32] if self.metric == "inner_product" else None
        if y is None:
            X = validate_data(self, X, dtype=dtype, reset=reset)
        else:
            X, y = validate_data(self, X, y, dtype=dtype, reset=reset)
        if self.metric == "hamming" and X.dtype != np.uint8:
            raise ValueError(
                f"metric='hamming' expects packed uint8 codes; got dtype {X.dtype}. "
                "Binarise the vectors with FeatureBinarizer(output='packed') or "
                "use metric='inner_product'."
            )
        return X, y

    def _block_width(self) -> int:
        """Return the features (or sign bits) per block."""
        if self.block_size is not None:
            return self.block_size
        if self.metric == "hamming":
            return 8 * self.n_features_in_
        return self.n_features_in_

    def _resolve_faiss(self) -> bool:
        if self.use_faiss is False:
            return False
        if self.metric != "hamming":
            if self.use_faiss is True:
                raise ValueError(
                    "use_faiss=True needs metric='hamming', because only packed "
                    f"codes are searched with faiss; got metric={self.metric!r}. "
                    "Set use_faiss='auto' or False."
                )
            return False
        available = _import_faiss() is not None
        if self.use_faiss is True and not available:
            raise ImportError(
                "use_faiss=True but faiss cannot be imported; install faiss-cpu "
                "or set use_faiss='auto' to fall back to NumPy."
            )
        return available

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike | None = None,
        *,
        database_block_mask: ArrayLike | None = None,
    ) -> ImageRetriever:
        """Store the database.

        Parameters
        ----------
        X : array-like of shape (n_database, n_features)
            Database vectors, or packed uint8 codes for ``metric="hamming"``.
        y : array-like of shape (n_database,), default=None
            Database labels, needed by :meth:`score`.
        database_block_mask : array-like of shape (n_database, n_blocks), bool, \
default=None
            Blocks kept by each database item. Only for ``mode="symmetric"``,
            where ``metric="hamming"`` requires it.

        Returns
        -------
        self : ImageRetriever
        """
        X, y = self._validate_vectors(X, y, reset=True)
        self.use_faiss_ = self._resolve_faiss()
        if self.metric == "inner_product":
            self.n_blocks_ = _check_block_size(X.shape[1], self.block_size)
        else:
            self.n_blocks_ = _packed_block_count(X.shape[1], self._block_width())

        if database_block_mask is not None and self.mode == "query":
            raise ValueError(
                "database_block_mask was passed with mode='query', where database "
                "items are compared on every block; set mode='symmetric' to mask "
                "them."
            )
        if database_block_mask is None and self.mode == "symmetric":
            if self.metric == "hamming":
                raise ValueError(
                    "mode='symmetric' with metric='hamming' needs "
                    "database_block_mask in fit, because packed codes cannot mark "
                    "a block as dropped; pass the mask from select_top_blocks."
                )
        self.database_block_mask_ = _check_block_mask(
            database_block_mask, X.shape[0], self.n_blocks_, "database_block_mask"
        )
        self.database_ = X
        self.labels_ = y
        # Built at the first faiss search and reused by later ones.
        self._faiss_index = None
        logger.info(
            "ImageRetriever fitted on %d database items of %d blocks",
            X.shape[0],
            self.n_blocks_,
        )
        return self

    def __getstate__(self):
        # A faiss index cannot be pickled; it is rebuilt from database_. The
        # state is copied, because object.__getstate__ returns the live dict.
        state = dict(super().__getstate__())
        state.pop("_faiss_index", None)
        return state

    def _faiss_search(
        self, queries: np.ndarray, n_neighbors: int
    ) -> tuple[np.ndarray, np.ndarray]:
        index = getattr(self, "_faiss_index", None)
        if index is None:
            faiss = _import_faiss()
            index = faiss.IndexBinaryFlat(8 * self.n_features_in_)
            index.add(np.ascontiguousarray(self.database_))
            self._faiss_index = index
        distances, indices = index.search(np.ascontiguousarray(queries), n_neighbors)
        # Order equal distances by increasing database index, as the NumPy path.
        # NOTE: when several codes tie at the n_neighbors-th distance, which of
        # them are returned follows faiss's tie rule, not necessarily the lowest
        # indices as on the NumPy path.
        order = np.lexsort((indices, distances), axis=-1)
        distances = np.take_along_axis(distances, order, axis=1)
        indices = np.take_along_axis(indices, order, axis=1).astype(np.intp)
        n_bits = self.n_blocks_ * self._block_width()
        return (n_bits - 2 * distances).astype(np.int32), indices

    def kneighbors(
        self,
        X: ArrayLike,
        n_neighbors: int | None = None,
        return_distance: bool = True,
        *,
        query_block_mask: ArrayLike | None = None,
    ):
        """Find the most similar database items of each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)
            Query vectors, or packed codes for ``metric="hamming"``.
        n_neighbors : int or None, default=None
            Items per query, at most the database size. None uses the
            ``n_neighbors`` parameter.
        return_distance : bool, default=True
            Also return the similarities. They are similarities, higher is
            better, and not distances, despite the scikit-learn name.
        query_block_mask : array-like of shape (n_queries, n_blocks_), bool, \
default=None
            Blocks selected for each query (adaptive channel selection). None
            selects every block.

        Returns
        -------
        similarities : ndarray of shape (n_queries, n_neighbors)
            Best first, float32 for "inner_product" and int32 for "hamming".
            Only returned when ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors)
            Database indices, best first; ties go to the lower index.
        """
        check_is_fitted(self)
        X, _ = self._validate_vectors(X)
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        _check_n_neighbors(n_neighbors, self.database_.shape[0])
        query_block_mask = _check_block_mask(
            query_block_mask, X.shape[0], self.n_blocks_, "query_block_mask"
        )

        unmasked = query_block_mask is None and self.database_block_mask_ is None
        if self.use_faiss_ and unmasked:
            similarities, indices = self._faiss_search(X, n_neighbors)
        else:
            similarities, indices = _search(
                X,
                self.database_,
                n_neighbors,
                self.metric,
                self._block_width(),
                query_block_mask,
                self.database_block_mask_,
                self.chunk_size,
            )
        if return_distance:
            return similarities, indices
        return indices

    def score(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        query_block_mask: ArrayLike | None = None,
    ) -> float:
        """Return the mean average precision of retrieving the whole database.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)
            Query vectors or codes.
        y : array-like of shape (n_queries,)
            Query labels. The positives of a query are the database items with
            the same label.
        query_block_mask : array-like of shape (n_queries, n_blocks_), bool, \
default=None
            Blocks selected for each query.

        Returns
        -------
        float
            Mean over queries with at least one positive of the trapezoid-rule
            average precision of the Oxford and Holidays evaluation code.
            Queries without positives are excluded.
        """
        check_is_fitted(self)
        if self.labels_ is None:
            raise ValueError(
                "score needs database labels, but fit was called without y; "
                "call fit(X, y) with one label per database item."
            )
        X, y = self._validate_vectors(X, y)
        query_block_mask = _check_block_mask(
            query_block_mask, X.shape[0], self.n_blocks_, "query_block_mask"
        )

        n_database = self.database_.shape[0]
        batch_size = max(1, _MAX_RANKING_ENTRIES // n_database)
        average_precisions = []
        for start in range(0, X.shape[0], batch_size):
            stop = start + batch_size
            batch_mask = (
                None if query_block_mask is None else query_block_mask[start:stop]
            )
            indices = self.kneighbors(
                X[start:stop],
                n_database,
                return_distance=False,
                query_block_mask=batch_mask,
            )
            for ranking, label in zip(indices, y[start:stop], strict=True):
                positives = np.flatnonzero(self.labels_ == label)
                average_precisions.append(_average_precision(ranking, positives))

        average_precisions = np.asarray(average_precisions)
        has_positives = ~np.isnan(average_precisions)
        if not has_positives.any():
            raise ValueError(
                "no query label occurs among the database labels, so no query has a "
                "positive and the mean average precision is undefined."
            )
        return float(average_precisions[has_positives].mean())

"""Tests for block-masked similarities, streaming top-k search and ImageRetriever."""

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from skcrosslayer import search as search_module
from skcrosslayer.binary import FeatureBinarizer, hamming_distances, pack_signs
from skcrosslayer.search import (
    ImageRetriever,
    _average_precision,
    _import_faiss,
    _top_k_positions,
    float_similarities,
    packed_similarities,
    search,
    select_top_blocks,
)

FAISS_MISSING = _import_faiss() is None


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def dense_signs(X):
    """±1 signs with the packing convention: > 0 is +1, <= 0 is -1."""
    return np.where(np.asarray(X) > 0, 1, -1).astype(np.int64)


def random_mask(rng, n_rows, n_blocks, n_selected):
    """A mask keeping n_selected random blocks of each row."""
    return select_top_blocks(rng.random((n_rows, n_blocks)), n_selected)


def reference_similarities(queries, database, block_size, query_mask, database_mask):
    """Sum of block inner products, one query, item and block at a time."""
    n_blocks = queries.shape[1] // block_size
    similarities = np.zeros((len(queries), len(database)))
    for q in range(len(queries)):
        for x in range(len(database)):
            for k in range(n_blocks):
                if query_mask is not None and not query_mask[q, k]:
                    continue
                if database_mask is not None and not database_mask[x, k]:
                    continue
                block = slice(k * block_size, (k + 1) * block_size)
                similarities[q, x] += float(queries[q, block] @ database[x, block])
    return similarities


def reference_packed_similarities(
    queries, database, n_bits_per_block, query_mask, database_mask
):
    """±1 block inner products of packed bytes, one query, item and block at a time."""
    n_bytes_per_block = -(-n_bits_per_block // 8)
    n_blocks = queries.shape[1] // n_bytes_per_block
    similarities = np.zeros((len(queries), len(database)), dtype=np.int64)
    for q in range(len(queries)):
        for x in range(len(database)):
            for k in range(n_blocks):
                if query_mask is not None and not query_mask[q, k]:
                    continue
                if database_mask is not None and not database_mask[x, k]:
                    continue
                block = slice(k * n_bytes_per_block, (k + 1) * n_bytes_per_block)
                n_differing = sum(
                    bin(int(a) ^ int(b)).count("1")
                    for a, b in zip(queries[q, block], database[x, block], strict=True)
                )
                similarities[q, x] += n_bits_per_block - 2 * n_differing
    return similarities


def reference_ranking(similarities, n_neighbors):
    """Best first, equal similarities by increasing database index."""
    indices = np.empty((len(similarities), n_neighbors), dtype=np.intp)
    for q, row in enumerate(similarities):
        order = sorted(range(len(row)), key=lambda x: (-row[x], x))
        indices[q] = order[:n_neighbors]
    return indices


def oxford_average_precision(ranking, positives, junk=()):
    """The loop of the Oxford buildings compute_ap, written out item by item."""
    previous_recall, previous_precision = 0.0, 1.0
    average_precision, n_found, position = 0.0, 0, 0
    for item in ranking:
        if item in junk:
            continue
        if item in positives:
            n_found += 1
        recall = n_found / len(positives)
        precision = n_found / (position + 1)
        trapezoid_height = (previous_precision + precision) / 2
        average_precision += (recall - previous_recall) * trapezoid_height
        previous_recall, previous_precision = recall, precision
        position += 1
    return average_precision


# ------------------------------------------------------- float_similarities


def test_float_similarities_hand_worked():
    queries = [[1.0, 2.0, 3.0, 4.0]]
    database = [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, -1.0]]
    np.testing.assert_array_equal(float_similarities(queries, database), [[10, -1]])
    # Only block 1 (columns 2 and 3) of the query is selected.
    masked = float_similarities(queries, database, [[False, True]], block_size=2)
    assert masked.dtype == np.float32
    np.testing.assert_array_equal(masked, [[7, -1]])


@pytest.mark.parametrize("mode", ["unmasked", "query", "symmetric", "database"])
def test_float_similarities_match_reference(rng, mode):
    # Small integers keep float32 sums exact.
    queries = rng.integers(-3, 4, (4, 5 * 6)).astype(np.float64)
    database = rng.integers(-3, 4, (7, 5 * 6)).astype(np.float64)
    query_mask = random_mask(rng, 4, 5, 2) if mode in ("query", "symmetric") else None
    database_mask = (
        random_mask(rng, 7, 5, 3) if mode in ("symmetric", "database") else None
    )

    similarities = float_similarities(
        queries, database, query_mask, database_mask, block_size=6
    )
    expected = reference_similarities(queries, database, 6, query_mask, database_mask)
    np.testing.assert_array_equal(similarities, expected)


# ------------------------------------------------------ packed_similarities


def test_packed_similarities_hand_worked():
    # Two blocks of 2 bits. Block 0 agrees (+2), block 1 differs in both (-2).
    queries = np.array([[0b11000000, 0b10000000]], dtype=np.uint8)
    database = np.array([[0b11000000, 0b01000000]], dtype=np.uint8)
    np.testing.assert_array_equal(packed_similarities(queries, database, 2), [[0]])
    masked = packed_similarities(queries, database, 2, [[True, False]])
    assert masked.dtype == np.int32
    np.testing.assert_array_equal(masked, [[2]])


@pytest.mark.parametrize("block_size", [3, 8, 12, 64])
@pytest.mark.parametrize("mode", ["unmasked", "query", "symmetric", "database"])
def test_packed_similarities_equal_dense_signs(rng, block_size, mode):
    n_blocks = 6
    queries = rng.standard_normal((5, n_blocks * block_size))
    database = rng.standard_normal((9, n_blocks * block_size))
    query_mask = (
        random_mask(rng, 5, n_blocks, 2) if mode in ("query", "symmetric") else None
    )
    database_mask = (
        random_mask(rng, 9, n_blocks, 4) if mode in ("symmetric", "database") else None
    )
    packed_queries, _ = pack_signs(queries, block_size=block_size)
    packed_database, _ = pack_signs(database, block_size=block_size)

    similarities = packed_similarities(
        packed_queries, packed_database, block_size, query_mask, database_mask
    )
    expected = reference_similarities(
        dense_signs(queries),
        dense_signs(database),
        block_size,
        query_mask,
        database_mask,
    )
    np.testing.assert_array_equal(similarities, expected)


# Sign bits per block, so that the bytes per block are 1, 1, 2, 2, 3, 4, 5, 5, 8,
# 12, 12 and 16: every word width, and blocks with and without padding bits.
PACKED_BLOCK_BITS = [1, 8, 13, 16, 24, 32, 33, 40, 64, 90, 96, 128]


def random_packed_case(rng, n_bits_per_block, mode, n_blocks=6):
    """Packed codes of 5 queries and 11 items, with the masks of one mode."""
    n_features = n_blocks * n_bits_per_block
    # Few sign patterns, so that many similarities tie.
    patterns = rng.standard_normal((3, n_features))
    queries = np.vstack([patterns, rng.standard_normal((2, n_features))])
    database = np.vstack(
        [np.tile(patterns, (3, 1)), rng.standard_normal((2, n_features))]
    )
    packed_queries, _ = pack_signs(queries, block_size=n_bits_per_block)
    packed_database, _ = pack_signs(database, block_size=n_bits_per_block)

    query_mask = database_mask = None
    if mode in ("query", "symmetric"):
        query_mask = random_mask(rng, 5, n_blocks, 3)
        # One query selects nothing and one selects every block.
        query_mask[0] = False
        query_mask[1] = True
    if mode in ("symmetric", "database"):
        database_mask = random_mask(rng, 11, n_blocks, 4)
        database_mask[0] = False
        database_mask[1] = True
    return packed_queries, packed_database, query_mask, database_mask


@pytest.mark.parametrize("n_bits_per_block", PACKED_BLOCK_BITS)
@pytest.mark.parametrize("mode", ["query", "symmetric", "database"])
def test_masked_packed_matches_block_loop(rng, n_bits_per_block, mode):
    queries, database, query_mask, database_mask = random_packed_case(
        rng, n_bits_per_block, mode
    )
    similarities = packed_similarities(
        queries, database, n_bits_per_block, query_mask, database_mask
    )
    expected = reference_packed_similarities(
        queries, database, n_bits_per_block, query_mask, database_mask
    )
    assert similarities.dtype == np.int32
    np.testing.assert_array_equal(similarities, expected)


@pytest.mark.parametrize("n_bits_per_block", PACKED_BLOCK_BITS)
@pytest.mark.parametrize("mode", ["query", "symmetric", "database"])
def test_masked_packed_search_chunked(rng, n_bits_per_block, mode):
    queries, database, query_mask, database_mask = random_packed_case(
        rng, n_bits_per_block, mode
    )
    expected = reference_packed_similarities(
        queries, database, n_bits_per_block, query_mask, database_mask
    )
    expected_indices = reference_ranking(expected, 4)
    for chunk_size in [1, 3, 4, 11]:
        similarities, indices = search(
            queries,
            database,
            4,
            metric="hamming",
            block_size=n_bits_per_block,
            query_block_mask=query_mask,
            database_block_mask=database_mask,
            chunk_size=chunk_size,
        )
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_array_equal(
            similarities, np.take_along_axis(expected, expected_indices, axis=1)
        )


@pytest.mark.parametrize("n_bits_per_block", [16, 40, 128])
def test_masked_packed_byte_table_fallback(rng, n_bits_per_block, monkeypatch):
    # NumPy < 2.0 has no bitwise_count and counts single bytes with a table.
    monkeypatch.setattr(search_module, "_WORD_BYTES", (1,))
    monkeypatch.setattr(
        search_module, "_count_word_bits", search_module._count_byte_bits
    )
    queries, database, query_mask, database_mask = random_packed_case(
        rng, n_bits_per_block, "symmetric"
    )
    for masks in [(query_mask, None), (query_mask, database_mask)]:
        similarities = packed_similarities(queries, database, n_bits_per_block, *masks)
        expected = reference_packed_similarities(
            queries, database, n_bits_per_block, *masks
        )
        np.testing.assert_array_equal(similarities, expected)


def test_masked_packed_accepts_fortran_order(rng):
    queries, database, query_mask, database_mask = random_packed_case(
        rng, 64, "symmetric"
    )
    similarities = packed_similarities(
        np.asfortranarray(queries),
        np.asfortranarray(database),
        64,
        np.asfortranarray(query_mask),
        np.asfortranarray(database_mask),
    )
    expected = reference_packed_similarities(
        queries, database, 64, query_mask, database_mask
    )
    np.testing.assert_array_equal(similarities, expected)


def test_packed_similarities_empty_mask_zero(rng):
    packed, _ = pack_signs(rng.standard_normal((3, 32)), block_size=16)
    mask = np.zeros((3, 2), dtype=bool)
    np.testing.assert_array_equal(packed_similarities(packed, packed, 16, mask), 0)


def test_packed_similarities_accept_integer_mask(rng):
    packed, _ = pack_signs(rng.standard_normal((2, 16)), block_size=8)
    integer_mask = np.array([[1, 0], [0, 1]])
    np.testing.assert_array_equal(
        packed_similarities(packed, packed, 8, integer_mask),
        packed_similarities(packed, packed, 8, integer_mask.astype(bool)),
    )


def test_packed_similarities_reject_untiled_codes():
    codes = np.zeros((1, 5), np.uint8)
    with pytest.raises(ValueError, match="codes of 5 bytes cannot hold whole blocks"):
        packed_similarities(codes, codes, 12)


def test_packed_similarities_reject_mask_shape():
    codes = np.zeros((2, 4), np.uint8)
    with pytest.raises(ValueError, match=r"shape \(n_vectors, n_blocks\) = \(2, 2\)"):
        packed_similarities(codes, codes, 16, np.ones((2, 3), dtype=bool))


def test_packed_similarities_reject_non_binary_mask():
    codes = np.zeros((1, 4), np.uint8)
    with pytest.raises(ValueError, match="boolean or contain only 0 and 1"):
        packed_similarities(codes, codes, 16, database_block_mask=[[3, 1]])


def test_float_similarities_reject_width_mismatch():
    with pytest.raises(ValueError, match="queries have 4 features and database .* 3"):
        float_similarities(np.ones((1, 4)), np.ones((1, 3)))


# ---------------------------------------------------------- select_top_blocks


def test_select_top_blocks_keeps_lower_index_on_ties():
    mask = select_top_blocks([[0.1, 0.7, 0.7, 0.2], [0.5, 0.5, 0.5, 0.5]], 2)
    np.testing.assert_array_equal(
        mask, [[False, True, True, False], [True, True, False, False]]
    )


def test_select_top_blocks_rejects_too_many():
    with pytest.raises(ValueError, match="n_selected=5 is more than the 4 blocks"):
        select_top_blocks(np.ones((1, 4)), 5)


# -------------------------------------------------------------------- search


def test_search_hand_worked_ties():
    queries = [[1.0, 0.0]]
    database = [[0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [2.0, 5.0]]
    similarities, indices = search(queries, database, 3, chunk_size=1)
    np.testing.assert_array_equal(similarities, [[2, 2, 1]])
    np.testing.assert_array_equal(indices, [[1, 3, 2]])


@pytest.mark.parametrize("n_neighbors", [1, 4, 30])
def test_search_ties_go_to_lower_index(n_neighbors):
    # Three distinct codes repeated ten times: every similarity is tied.
    database = np.tile([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]], (10, 1))
    queries = np.array([[1.0, 1.0], [1.0, -1.0]])
    for chunk_size in [1, 4, 7, 30]:
        _, indices = search(queries, database, n_neighbors, chunk_size=chunk_size)
        expected = reference_ranking(queries @ database.T, n_neighbors)
        np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize("metric", ["inner_product", "hamming"])
@pytest.mark.parametrize("mode", ["unmasked", "query", "symmetric"])
def test_search_chunked_equals_unchunked(rng, metric, mode):
    n_blocks, block_size = 4, 8
    # Few sign patterns per block, so many similarities tie.
    queries = rng.integers(-1, 2, (6, n_blocks * block_size)).astype(np.float64)
    database = rng.integers(-1, 2, (40, n_blocks * block_size)).astype(np.float64)
    if metric == "hamming":
        queries, _ = pack_signs(queries, block_size=block_size)
        database, _ = pack_signs(database, block_size=block_size)
    query_mask = random_mask(rng, 6, n_blocks, 2) if mode != "unmasked" else None
    database_mask = random_mask(rng, 40, n_blocks, 3) if mode == "symmetric" else None
    options = dict(
        metric=metric,
        block_size=block_size,
        query_block_mask=query_mask,
        database_block_mask=database_mask,
    )

    unchunked = search(queries, database, 10, chunk_size=40, **options)
    for chunk_size in [1, 3, 7, 10, 39]:
        chunked = search(queries, database, 10, chunk_size=chunk_size, **options)
        np.testing.assert_array_equal(chunked[0], unchunked[0])
        np.testing.assert_array_equal(chunked[1], unchunked[1])


@pytest.mark.parametrize("n_neighbors", [5, 40])
def test_search_matches_reference_ranking(rng, n_neighbors):
    queries = rng.integers(-2, 3, (5, 12)).astype(np.float64)
    database = rng.integers(-2, 3, (40, 12)).astype(np.float64)
    query_mask = random_mask(rng, 5, 3, 1)
    similarities, indices = search(
        queries,
        database,
        n_neighbors,
        block_size=4,
        query_block_mask=query_mask,
        chunk_size=6,
    )
    expected = reference_similarities(queries, database, 4, query_mask, None)
    np.testing.assert_array_equal(indices, reference_ranking(expected, n_neighbors))
    np.testing.assert_array_equal(
        similarities, np.take_along_axis(expected, indices, axis=1)
    )


def test_search_hamming_returns_inner_products(rng):
    X = rng.standard_normal((8, 20))
    packed, n_bits = pack_signs(X)
    similarities, indices = search(
        packed[:2], packed, 8, metric="hamming", block_size=n_bits
    )
    dense = dense_signs(X[:2]) @ dense_signs(X).T
    np.testing.assert_array_equal(indices, reference_ranking(dense, 8))
    np.testing.assert_array_equal(
        similarities, np.take_along_axis(dense, indices, axis=1)
    )
    # A code matches itself on all 20 bits.
    np.testing.assert_array_equal(similarities[:, 0], [20, 20])


def stable_sort_top_k(similarities, n_neighbors):
    """Top-k columns by a stable sort of each whole row: the rule to reproduce."""
    return np.argsort(-similarities, axis=1, kind="stable")[:, :n_neighbors]


def test_top_k_positions_hand_worked_ties():
    similarities = np.array([[1, 3, 3, 2, 3, 3]])
    # Columns 1, 2, 4 and 5 tie at 3, and the lowest of them are kept at the cut.
    np.testing.assert_array_equal(_top_k_positions(similarities, 2), [[1, 2]])
    np.testing.assert_array_equal(_top_k_positions(similarities, 3), [[1, 2, 4]])
    np.testing.assert_array_equal(_top_k_positions(similarities, 5), [[1, 2, 4, 5, 3]])


@pytest.mark.parametrize("n_values", [1, 3, 40])
def test_top_k_positions_match_stable_sort(rng, n_values):
    # Hamming similarities of 32-bit blocks take few values, so ties are common.
    similarities = 32 - 2 * rng.integers(0, n_values, (20, 57)).astype(np.int32)
    for n_neighbors in [1, 2, 5, 20, 56, 57, 80]:
        positions = _top_k_positions(similarities, n_neighbors)
        np.testing.assert_array_equal(
            positions, stable_sort_top_k(similarities, n_neighbors)
        )


def test_top_k_positions_float_ties_and_infinities(rng):
    similarities = rng.choice([-np.inf, -0.5, 0.0, -0.0, 0.25, np.inf], (30, 41))
    similarities = similarities.astype(np.float32)
    for n_neighbors in [1, 4, 17, 40]:
        np.testing.assert_array_equal(
            _top_k_positions(similarities, n_neighbors),
            stable_sort_top_k(similarities, n_neighbors),
        )


def test_top_k_positions_nan_ranks_last(rng):
    similarities = rng.integers(0, 4, (6, 12)).astype(np.float64)
    similarities[:, ::3] = np.nan
    # Row 0 keeps one number, fewer than the places, so its cut falls on NaN.
    similarities[0, 2:] = np.nan
    for n_neighbors in [2, 8, 11]:
        np.testing.assert_array_equal(
            _top_k_positions(similarities, n_neighbors),
            stable_sort_top_k(similarities, n_neighbors),
        )


def test_search_rejects_too_many_neighbors():
    with pytest.raises(ValueError, match="n_neighbors=4 is more than the 3 database"):
        search(np.ones((1, 2)), np.ones((3, 2)), 4)


def test_search_rejects_unknown_metric():
    with pytest.raises(InvalidParameterError, match="'metric' parameter .* 'cosine'"):
        search(np.ones((1, 2)), np.ones((3, 2)), 1, metric="cosine")


def test_search_hamming_rejects_float_vectors():
    with pytest.raises(ValueError, match="queries must contain packed codes"):
        search(np.ones((1, 2)), np.ones((3, 2)), 1, metric="hamming")


# -------------------------------------------------------- average precision


def test_average_precision_worked_example():
    # Ranking [junk, positive, negative, positive] with 2 positives.
    ranking = [9, 0, 5, 1]
    assert _average_precision(ranking, [0, 1], junk=[9]) == pytest.approx(
        0.7917, abs=1e-4
    )
    # Junk counted as a negative.
    assert _average_precision(ranking, [0, 1]) == pytest.approx(1 / 3)


def test_average_precision_matches_oxford_loop(rng):
    for _ in range(50):
        ranking = rng.permutation(30)
        labels = rng.integers(0, 4, 30)
        positives = set(np.flatnonzero(labels == 0))
        junk = set(np.flatnonzero(labels == 1))
        if not positives:
            continue
        # Truncated rankings leave some positives unretrieved.
        for length in [30, 12]:
            expected = oxford_average_precision(ranking[:length], positives, junk)
            got = _average_precision(ranking[:length], list(positives), list(junk))
            assert got == pytest.approx(expected, abs=1e-12)


def test_average_precision_without_positives_is_nan():
    assert np.isnan(_average_precision([0, 1, 2], []))


# ------------------------------------------------------------- ImageRetriever


def test_image_retriever_hand_worked():
    database = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    retriever = ImageRetriever(n_neighbors=2).fit(database, y=[0, 1, 0])
    similarities, indices = retriever.kneighbors([[1.0, 0.1]])
    np.testing.assert_allclose(similarities, [[1.0, 0.77]], rtol=1e-6)
    np.testing.assert_array_equal(indices, [[0, 2]])
    np.testing.assert_array_equal(
        retriever.kneighbors([[1.0, 0.1]], 1, return_distance=False), [[0]]
    )
    # Positives 0 and 2 at ranks 0 and 1.
    assert retriever.score([[1.0, 0.1]], [0]) == 1.0


def test_image_retriever_score_hand_worked():
    database = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]])
    retriever = ImageRetriever().fit(database, y=[0, 1, 0, 2])
    # Ranking [0, 1, 3, 2]: positives 0 and 2 at ranks 0 and 3, so
    # AP = ((1 + 1) / 2 + (1 / 3 + 2 / 4) / 2) / 2 = 0.708333.
    # The second query's label 5 has no positives and is excluded.
    score = retriever.score([[1.0, 0.0], [1.0, 0.0]], [0, 5])
    assert score == pytest.approx(0.7083333, abs=1e-6)


def test_image_retriever_score_matches_brute_force(rng):
    database = rng.standard_normal((60, 16))
    labels = rng.integers(0, 5, 60)
    queries = rng.standard_normal((9, 16))
    query_labels = rng.integers(0, 6, 9)
    retriever = ImageRetriever(block_size=4).fit(database, labels)
    query_mask = random_mask(rng, 9, 4, 2)

    expected = []
    similarities = reference_similarities(queries, database, 4, query_mask, None)
    for q in range(9):
        positives = set(np.flatnonzero(labels == query_labels[q]))
        if positives:
            ranking = reference_ranking(similarities[q : q + 1], 60)[0]
            expected.append(oxford_average_precision(ranking, positives))
    score = retriever.score(queries, query_labels, query_block_mask=query_mask)
    assert score == pytest.approx(np.mean(expected), abs=1e-6)


def test_retriever_symmetric_packed_matches_dense(rng):
    n_blocks, block_size = 5, 12
    database = rng.standard_normal((30, n_blocks * block_size))
    queries = rng.standard_normal((4, n_blocks * block_size))
    database_mask = random_mask(rng, 30, n_blocks, 2)
    query_mask = random_mask(rng, 4, n_blocks, 3)

    binarizer = FeatureBinarizer(block_size=block_size).fit(database)
    packed = ImageRetriever("hamming", 30, block_size=block_size, mode="symmetric")
    packed.fit(binarizer.transform(database), database_block_mask=database_mask)
    packed_result = packed.kneighbors(
        binarizer.transform(queries), query_block_mask=query_mask
    )

    # Dense ±1 codes whose dropped blocks are zero need no database mask.
    kept_columns = np.repeat(database_mask, block_size, axis=1)
    dense = ImageRetriever(n_neighbors=30, block_size=block_size, mode="symmetric")
    dense.fit(dense_signs(database) * kept_columns)
    dense_result = dense.kneighbors(
        dense_signs(queries).astype(np.float64), query_block_mask=query_mask
    )
    np.testing.assert_array_equal(packed_result[0], dense_result[0])
    np.testing.assert_array_equal(packed_result[1], dense_result[1])


def test_image_retriever_in_grid_search(rng):
    # Two clusters on top of a large shared offset. Without centring, inner
    # products rank by the offset and mix the clusters.
    centres = 3.0 * rng.standard_normal((2, 16))
    labels = np.repeat([0, 1], 30)
    X = 50.0 + centres[labels] + 0.3 * rng.standard_normal((60, 16))
    order = rng.permutation(60)
    X, labels = X[order], labels[order]

    pipeline = Pipeline(
        [
            ("scale", "passthrough"),
            ("binarize", "passthrough"),
            ("retrieve", ImageRetriever()),
        ]
    )
    grid = GridSearchCV(
        pipeline,
        [
            {"scale": ["passthrough", StandardScaler()]},
            {
                "scale": [StandardScaler()],
                "binarize": [FeatureBinarizer()],
                "retrieve__metric": ["hamming"],
            },
        ],
        cv=KFold(3, shuffle=True, random_state=0),
    )
    grid.fit(X, labels)

    scores = grid.cv_results_["mean_test_score"]
    assert len(scores) == 3
    assert isinstance(grid.best_params_["scale"], StandardScaler)
    # Centred vectors, float or binary, separate the clusters perfectly.
    assert scores[1] == pytest.approx(1.0)
    assert scores[2] == pytest.approx(1.0)
    assert scores[0] < 0.9


@pytest.mark.skipif(FAISS_MISSING, reason="faiss is not installed")
def test_image_retriever_faiss_matches_numpy(rng):
    n_bits = 64
    base = rng.standard_normal(n_bits)
    # Item i differs from base in its first i signs: distinct distances.
    flips = np.arange(n_bits + 1)[:, None] > np.arange(n_bits)[None, :]
    database = np.where(flips, -base, base)[rng.permutation(n_bits + 1)]
    queries = np.vstack([base, -base, rng.standard_normal((5, n_bits))])
    packed_database, _ = pack_signs(database)
    packed_queries, _ = pack_signs(queries)

    with_faiss = ImageRetriever("hamming", 20, use_faiss=True).fit(packed_database)
    without = ImageRetriever("hamming", 20, use_faiss=False).fit(packed_database)
    assert with_faiss.use_faiss_
    faiss_similarities, faiss_indices = with_faiss.kneighbors(packed_queries)
    numpy_similarities, numpy_indices = without.kneighbors(packed_queries)
    np.testing.assert_array_equal(faiss_similarities, numpy_similarities)
    # The first two queries have no tied distances.
    np.testing.assert_array_equal(faiss_indices[:2], numpy_indices[:2])


class BruteForceBinaryIndex:
    """Stand-in for faiss.IndexBinaryFlat that returns ties in decreasing index."""

    def __init__(self, n_bits):
        self.n_bits = n_bits

    def add(self, codes):
        self.codes = codes

    def search(self, queries, n_neighbors):
        distances = hamming_distances(queries, self.codes)
        # Sort by distance, then by decreasing index.
        reversed_order = np.argsort(distances[:, ::-1], axis=1, kind="stable")
        indices = (self.codes.shape[0] - 1 - reversed_order)[:, :n_neighbors]
        return np.take_along_axis(distances, indices, axis=1), indices.astype(np.int64)


def test_retriever_faiss_path_orders_ties(rng, monkeypatch):
    fake_faiss = SimpleNamespace(IndexBinaryFlat=BruteForceBinaryIndex)
    monkeypatch.setattr(search_module, "_import_faiss", lambda: fake_faiss)
    # Four distinct codes repeated five times: every distance is tied.
    database, _ = pack_signs(np.tile(rng.standard_normal((4, 24)), (5, 1)))
    queries, _ = pack_signs(rng.standard_normal((3, 24)))

    with_faiss = ImageRetriever("hamming", 20, use_faiss="auto").fit(database)
    without = ImageRetriever("hamming", 20, use_faiss=False).fit(database)
    assert with_faiss.use_faiss_
    faiss_similarities, faiss_indices = with_faiss.kneighbors(queries)
    numpy_similarities, numpy_indices = without.kneighbors(queries)
    assert faiss_similarities.dtype == np.int32
    np.testing.assert_array_equal(faiss_similarities, numpy_similarities)
    np.testing.assert_array_equal(faiss_indices, numpy_indices)


def test_retriever_builds_faiss_index_once(rng, monkeypatch):
    built = []

    class CountingIndex(BruteForceBinaryIndex):
        def __init__(self, n_bits):
            super().__init__(n_bits)
            built.append(self)

    fake_faiss = SimpleNamespace(IndexBinaryFlat=CountingIndex)
    monkeypatch.setattr(search_module, "_import_faiss", lambda: fake_faiss)
    database, _ = pack_signs(rng.standard_normal((30, 24)))
    queries, _ = pack_signs(rng.standard_normal((4, 24)))
    retriever = ImageRetriever("hamming", 5, use_faiss=True).fit(database)

    first = retriever.kneighbors(queries)
    second = retriever.kneighbors(queries[::-1])
    # Pickling drops the index, and the copy builds its own.
    copied = pickle.loads(pickle.dumps(retriever))
    again = copied.kneighbors(queries)
    refitted = retriever.fit(database[::-1]).kneighbors(queries)

    assert len(built) == 3
    expected = ImageRetriever("hamming", 5, use_faiss=True).fit(database[::-1])
    np.testing.assert_array_equal(second[1], first[1][::-1])
    np.testing.assert_array_equal(again[1], first[1])
    for got, reference in zip(refitted, expected.kneighbors(queries)):
        np.testing.assert_array_equal(got, reference)


def test_retriever_rejects_faiss_when_missing(monkeypatch):
    monkeypatch.setattr(search_module, "_import_faiss", lambda: None)
    codes = np.zeros((3, 2), np.uint8)
    with pytest.raises(ImportError, match="use_faiss=True but faiss cannot be"):
        ImageRetriever("hamming", use_faiss=True).fit(codes)


def test_retriever_auto_without_faiss_uses_numpy(monkeypatch):
    monkeypatch.setattr(search_module, "_import_faiss", lambda: None)
    retriever = ImageRetriever("hamming", use_faiss="auto").fit(
        np.zeros((3, 2), np.uint8)
    )
    assert retriever.use_faiss_ is False


def test_image_retriever_auto_faiss_skips_inner_product():
    retriever = ImageRetriever(use_faiss="auto").fit(np.ones((3, 2)))
    assert retriever.use_faiss_ is False


def test_image_retriever_rejects_faiss_for_inner_product():
    with pytest.raises(ValueError, match="use_faiss=True needs metric='hamming'"):
        ImageRetriever(use_faiss=True).fit(np.ones((3, 2)))


def test_image_retriever_rejects_float_vectors_for_hamming():
    with pytest.raises(
        ValueError, match="expects packed uint8 codes; got dtype float64"
    ):
        ImageRetriever("hamming").fit(np.ones((3, 2)))


def test_retriever_query_mode_rejects_database_mask():
    with pytest.raises(
        ValueError, match="database_block_mask was passed with mode='query'"
    ):
        ImageRetriever().fit(np.ones((3, 2)), database_block_mask=np.ones((3, 1)))


def test_image_retriever_symmetric_hamming_needs_mask():
    codes = np.zeros((3, 2), np.uint8)
    with pytest.raises(ValueError, match="needs database_block_mask in fit"):
        ImageRetriever("hamming", mode="symmetric").fit(codes)


def test_image_retriever_rejects_query_mask_shape():
    retriever = ImageRetriever(block_size=2).fit(np.ones((3, 6)))
    with pytest.raises(
        ValueError, match=r"query_block_mask must have shape .* \(1, 3\)"
    ):
        retriever.kneighbors(np.ones((1, 6)), 1, query_block_mask=np.ones((1, 2)))


def test_image_retriever_rejects_too_many_neighbors():
    retriever = ImageRetriever().fit(np.ones((3, 2)))
    with pytest.raises(ValueError, match="n_neighbors=5 is more than the 3 database"):
        retriever.kneighbors(np.ones((1, 2)))


def test_image_retriever_score_needs_labels():
    retriever = ImageRetriever().fit(np.ones((3, 2)))
    with pytest.raises(ValueError, match="fit was called without y"):
        retriever.score(np.ones((1, 2)), [0])


def test_image_retriever_score_rejects_no_positives():
    retriever = ImageRetriever().fit(np.ones((3, 2)), [0, 1, 1])
    with pytest.raises(ValueError, match="no query label occurs among the database"):
        retriever.score(np.ones((2, 2)), [7, 8])


def test_image_retriever_rejects_untiled_block_size():
    with pytest.raises(ValueError, match="block_size=4 does not divide .* 6"):
        ImageRetriever(block_size=4).fit(np.ones((3, 6)))

"""Tests for adaptive channel selection: ChannelSelector and its retriever.

The pipeline tests run AlexNet with random weights (``weights=None``) at
64 px on real scikit-image photos and edited copies of them, because a trained
network adds nothing to checking that the selected blocks, and only they, are
compared.
"""

import joblib
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import _check_transformer
from threadpoolctl import threadpool_limits

from skcrosslayer import _base
from skcrosslayer.binary import FeatureBinarizer
from skcrosslayer.pooler import CrossLayerPooler
from skcrosslayer.search import ImageRetriever
from skcrosslayer.selection import (
    ChannelSelector,
    SelectedChannelRetriever,
    nonzero_block_mask,
    top_channel_mask,
)

# AlexNet conv5 has K = 256 guidance channels; PCA keeps d = 16 dims.
N_GUIDANCE = 256
BLOCK_SIZE = 16
PHOTO_NAMES = ("astronaut", "chelsea", "coffee")
N_VERSIONS = 4


@pytest.fixture(autouse=True)
def single_blas_thread():
    # Two OpenBLAS threads spin on a loaded 2-core machine, which made the
    # pooler's small PCA take seconds in place of milliseconds.
    with threadpool_limits(1, user_api="blas"):
        yield


def tiny_pooler(**params) -> CrossLayerPooler:
    return CrossLayerPooler(
        "alexnet",
        weights=None,
        image_size=64,
        n_workers=0,
        device="cpu",
        n_components=BLOCK_SIZE,
        channel_strengths=True,
        random_state=0,
        **params,
    )


@pytest.fixture(scope="module")
def photo_versions():
    """Three real photos in four versions each, with their photo labels.

    Versions: the photo, a crop of 80 %, its mirror image and a 10 degree
    rotation. Images are ordered version-major: image 3 * v + p is version v
    of photo p.
    """
    versions = []
    for name in PHOTO_NAMES:
        photo = Image.fromarray(getattr(skimage.data, name)())
        width, height = photo.size
        versions.append(
            [
                photo,
                photo.crop((0, 0, int(width * 0.8), int(height * 0.8))),
                ImageOps.mirror(photo),
                photo.rotate(10),
            ]
        )
    images = [np.asarray(versions[p][v]) for v in range(N_VERSIONS) for p in range(3)]
    labels = np.tile(np.arange(len(PHOTO_NAMES)), N_VERSIONS)
    return images, labels


def signs(X):
    """±1 signs with the packing convention: > 0 is +1, <= 0 is -1."""
    return np.where(np.asarray(X) > 0, 1, -1).astype(np.int64)


def reference_similarities(queries, database, block_size, n_channels, mode, binary):
    """Per-block similarities, one query, database item and block at a time.

    Inputs are pooled vectors with strengths. A query keeps its n_channels
    strongest channels; in symmetric mode a block counts only when the
    database item keeps it too.
    """
    n_guidance = queries.shape[1] // (block_size + 1)
    n_pooled = n_guidance * block_size

    def kept(vector):
        strengths = vector[n_pooled:]
        order = np.argsort(-strengths, kind="stable")
        return set(order[:n_channels].tolist())

    similarities = np.zeros((len(queries), len(database)))
    for q, query in enumerate(queries):
        for x, item in enumerate(database):
            channels = kept(query)
            if mode == "symmetric":
                channels &= kept(item)
            for k in sorted(channels):
                block = slice(k * block_size, (k + 1) * block_size)
                a, b = query[block], item[block]
                if binary:
                    a, b = signs(a), signs(b)
                similarities[q, x] += float(np.dot(a, b))
    return similarities


def similarity_matrix(retriever, queries, n_database):
    """All similarities of a fitted retriever, in database order."""
    values, indices = retriever.kneighbors(queries, n_database)
    matrix = np.empty(values.shape, dtype=np.float64)
    np.put_along_axis(matrix, indices, values, axis=1)
    return matrix


def random_pooled(rng, n_rows, n_guidance, block_size):
    """Random pooled vectors with strengths, no block of all values <= 0.

    A block of all values <= 0 packs to the same bits as a dropped block, which
    SelectedChannelRetriever leaves out; the first value of every block is
    made positive so that the per-block reference applies.
    """
    blocks = rng.standard_normal((n_rows, n_guidance, block_size))
    blocks[:, :, 0] = np.abs(blocks[:, :, 0]) + 0.1
    strengths = rng.random((n_rows, n_guidance))
    return np.hstack([blocks.reshape(n_rows, -1), strengths])


# -- pure functions -----------------------------------------------------------


def test_top_channel_mask_keeps_strongest():
    mask = top_channel_mask([[0.0, 2.5, 0.5, 2.5], [3.0, 1.0, 2.0, 0.0]], 2)

    assert mask.tolist() == [[False, True, False, True], [True, False, True, False]]


def test_top_channel_mask_ties_keep_lower_index():
    assert top_channel_mask([[1.0, 1.0, 1.0]], 2).tolist() == [[True, True, False]]


def test_top_channel_mask_too_many_channels():
    with pytest.raises(ValueError, match="n_channels=5 is more than the 3 guidance"):
        top_channel_mask([[1.0, 2.0, 3.0]], 5)


def test_nonzero_block_mask_float_and_packed():
    vectors = [[0.0, 0.0, 0.3, -1.0, 0.0, 2.0]]
    codes = np.array([[0, 0, 0, 7, 128, 0]], dtype=np.uint8)

    assert nonzero_block_mask(vectors, 2).tolist() == [[False, True, True]]
    # 9 bits per block take 2 bytes each.
    assert nonzero_block_mask(codes, 9, packed=True).tolist() == [[False, True, True]]


def test_nonzero_block_mask_width_mismatch():
    with pytest.raises(ValueError, match="not a whole number of blocks of 2 bytes"):
        nonzero_block_mask(np.zeros((1, 3), np.uint8), 16, packed=True)


def test_nonzero_block_mask_packed_needs_uint8():
    with pytest.raises(ValueError, match="must contain packed codes of dtype uint8"):
        nonzero_block_mask(np.zeros((1, 4)), 8, packed=True)


# -- ChannelSelector on hand-worked vectors -------------------------------------

# Two channels of d = 2 dims, then their strengths.
HAND_X = np.array(
    [
        [1.0, 2.0, 3.0, 4.0, 0.1, 0.9],
        [5.0, 6.0, 7.0, 8.0, 0.7, 0.2],
    ]
)


def test_selector_query_mode_database_complete():
    selector = ChannelSelector(1, block_size=2)

    database = selector.fit_transform(HAND_X)
    queries = selector.transform(HAND_X)

    assert database.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert queries.tolist() == [[0, 0, 3, 4], [5, 6, 0, 0]]
    assert selector.n_guidance_channels_ == 2
    assert selector.n_features_out_ == 4


def test_selector_symmetric_mode_masks_database():
    selector = ChannelSelector(1, mode="symmetric", block_size=2)

    assert selector.fit_transform(HAND_X).tolist() == [[0, 0, 3, 4], [5, 6, 0, 0]]
    assert selector.transform(HAND_X).tolist() == [[0, 0, 3, 4], [5, 6, 0, 0]]


def test_selector_none_keeps_all_channels():
    selector = ChannelSelector(None, block_size=2).fit(HAND_X)

    assert selector.n_channels_ == 2
    assert selector.transform(HAND_X).tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert selector.block_mask(HAND_X).all()


def test_selector_block_mask():
    selector = ChannelSelector(1, block_size=2).fit(HAND_X)

    assert selector.block_mask(HAND_X).tolist() == [[False, True], [True, False]]


def test_selector_keeps_float32():
    selector = ChannelSelector(1, block_size=2)

    assert selector.fit_transform(HAND_X.astype(np.float32)).dtype == np.float32
    assert selector.transform(HAND_X.astype(np.float32)).dtype == np.float32


def test_selector_widens_float16_to_float32():
    selector = ChannelSelector(1, block_size=2)

    assert selector.fit_transform(HAND_X.astype(np.float16)).dtype == np.float32


def test_selector_feature_names_drop_strengths():
    selector = ChannelSelector(1, block_size=2).fit(HAND_X)

    assert selector.get_feature_names_out().tolist() == ["x0", "x1", "x2", "x3"]


def test_selector_masked_query_equals_block_sum():
    # Query channel 1 only: 3 * 1 + 4 * (-1) = -1; all channels: 1 + 2 + 3 - 4 = 2.
    query = np.array([[1.0, 2.0, 3.0, 4.0, 0.1, 0.9]])
    database = np.array([[1.0, 1.0, 1.0, -1.0, 0.5, 0.5]])
    selector = ChannelSelector(1, block_size=2)
    stored = selector.fit_transform(database)

    assert (selector.transform(query) @ stored.T).item() == -1.0
    assert (ChannelSelector(None, block_size=2).fit_transform(query) @ stored.T) == 2.0


def test_selector_needs_block_size():
    with pytest.raises(ValueError, match="needs block_size, the dims d of one pooled"):
        ChannelSelector(1).fit(HAND_X)


def test_selector_width_not_multiple():
    with pytest.raises(
        ValueError, match="n_features=6 columns, which is not a multiple"
    ):
        ChannelSelector(1, block_size=3).fit(HAND_X)


def test_selector_too_many_channels():
    with pytest.raises(ValueError, match="n_channels=3 is more than the 2 guidance"):
        ChannelSelector(3, block_size=2).fit(HAND_X)


def test_selector_invalid_mode():
    with pytest.raises(InvalidParameterError, match="'mode' parameter"):
        ChannelSelector(1, mode="database", block_size=2).fit(HAND_X)


def test_selector_transform_width_changed():
    selector = ChannelSelector(1, block_size=2).fit(HAND_X)

    with pytest.raises(ValueError, match="X has 9 features, but ChannelSelector"):
        selector.transform(np.ones((1, 9)))


def test_query_mode_breaks_fit_transform_rule():
    # scikit-learn's transformer check, on data where selection drops a block.
    X = np.random.default_rng(0).random((30, 6))

    with pytest.raises(AssertionError, match="fit_transform and transform outcomes"):
        _check_transformer("ChannelSelector", ChannelSelector(1, block_size=2), X, None)
    _check_transformer(
        "ChannelSelector", ChannelSelector(1, mode="symmetric", block_size=2), X, None
    )


# -- search against the per-block reference --------------------------------------


@pytest.mark.parametrize("mode", ["query", "symmetric"])
@pytest.mark.parametrize("n_channels", [1, 3, 6])
def test_float_search_matches_reference(mode, n_channels):
    rng = np.random.default_rng(1)
    database = random_pooled(rng, 7, 6, 5)
    queries = random_pooled(rng, 4, 6, 5)
    pipeline = Pipeline(
        [
            ("selector", ChannelSelector(n_channels, mode=mode, block_size=5)),
            ("retriever", ImageRetriever(block_size=5)),
        ]
    ).fit(database)

    found = similarity_matrix(pipeline[-1], pipeline[:-1].transform(queries), 7)

    expected = reference_similarities(queries, database, 5, n_channels, mode, False)
    # ImageRetriever returns float32 similarities.
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["query", "symmetric"])
@pytest.mark.parametrize("n_channels", [1, 3, 6])
def test_binary_pipeline_matches_reference(mode, n_channels):
    # d = 5 leaves 3 padding bits per packed block.
    rng = np.random.default_rng(2)
    database = random_pooled(rng, 7, 6, 5)
    queries = random_pooled(rng, 4, 6, 5)
    pipeline = Pipeline(
        [
            ("selector", ChannelSelector(n_channels, mode=mode, block_size=5)),
            ("binarizer", FeatureBinarizer(block_size=5)),
            ("retriever", SelectedChannelRetriever("hamming", block_size=5, mode=mode)),
        ]
    ).fit(database)

    found = similarity_matrix(pipeline[-1], pipeline[:-1].transform(queries), 7)

    expected = reference_similarities(queries, database, 5, n_channels, mode, True)
    np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("mode", ["query", "symmetric"])
def test_explicit_masks_match_reference(mode):
    # Unconstrained signs: some kept blocks are all <= 0, which only the
    # explicit masks can tell from dropped blocks.
    rng = np.random.default_rng(3)
    database = rng.standard_normal((9, 6 * 4 + 6))
    queries = rng.standard_normal((5, 6 * 4 + 6))
    selector = ChannelSelector(2, mode=mode, block_size=4)
    binarizer = FeatureBinarizer(block_size=4)
    database_codes = binarizer.fit_transform(selector.fit_transform(database))
    query_codes = binarizer.transform(selector.transform(queries))
    database_mask = selector.block_mask(database) if mode == "symmetric" else None
    retriever = ImageRetriever("hamming", block_size=4, mode=mode).fit(
        database_codes, database_block_mask=database_mask
    )

    values, indices = retriever.kneighbors(
        query_codes, 9, query_block_mask=selector.block_mask(queries)
    )
    found = np.empty(values.shape)
    np.put_along_axis(found, indices, values, axis=1)

    expected = reference_similarities(queries, database, 4, 2, mode, True)
    np.testing.assert_array_equal(found, expected)


def test_retriever_hand_worked_binary_similarity():
    # Signs: query block 0 ++, block 1 ++; database block 0 ++, block 1 +-.
    # All blocks: 2 + 0 = 2; query keeping channel 1 only: 0.
    query = np.array([[1.0, 2.0, 3.0, 4.0, 0.1, 0.9]])
    database = np.array([[1.0, 1.0, 1.0, -1.0, 0.5, 0.5]])

    def similarity(n_channels):
        pipeline = Pipeline(
            [
                ("selector", ChannelSelector(n_channels, block_size=2)),
                ("binarizer", FeatureBinarizer(block_size=2)),
                ("retriever", SelectedChannelRetriever("hamming", 1, block_size=2)),
            ]
        ).fit(database)
        values, _ = pipeline[-1].kneighbors(pipeline[:-1].transform(query))
        return values.item()

    assert similarity(None) == 2
    assert similarity(1) == 0


def test_retriever_leaves_all_nonpositive_block_out():
    # A kept block whose values are all <= 0 packs like a dropped block.
    codes = FeatureBinarizer(block_size=2).fit_transform([[1.0, 1.0, -1.0, 0.0]])
    retriever = SelectedChannelRetriever("hamming", 1, block_size=2).fit(codes)

    values, _ = retriever.kneighbors(codes)

    assert values.item() == 2


def test_retriever_symmetric_derives_database_mask():
    codes = np.array([[0b11000000, 0], [0, 0b10000000]], dtype=np.uint8)

    retriever = SelectedChannelRetriever("hamming", block_size=2, mode="symmetric")
    retriever.fit(codes)

    assert retriever.database_block_mask_.tolist() == [[True, False], [False, True]]


def test_retriever_score_uses_nonzero_query_blocks():
    # Database: item 0 is +1 +1 | -1 -1, item 1 is -1 -1 | +1 +1 (label 1).
    # The query's kept block 0 (+1 +1) matches item 0: rank 1 for label 0.
    database = np.array([[0b11000000, 0], [0, 0b11000000]], dtype=np.uint8)
    retriever = SelectedChannelRetriever("hamming", block_size=2).fit(database, [0, 1])
    query = np.array([[0b11000000, 0]], dtype=np.uint8)

    assert retriever.score(query, [0]) == 1.0
    # Label 1's item ranks second: trapezoid AP (0 / 1 + 1 / 2) / 2.
    assert retriever.score(query, [1]) == 0.25


def test_retriever_needs_block_size():
    retriever = SelectedChannelRetriever("hamming").fit(np.ones((2, 2), np.uint8))

    with pytest.raises(ValueError, match="needs block_size, the dims d of one pooled"):
        retriever.kneighbors(np.ones((1, 2), np.uint8))


# -- the pipeline on real photos -----------------------------------------------


@pytest.mark.parametrize("mode", ["query", "symmetric"])
def test_real_binary_pipeline_matches_reference(photo_versions, mode):
    images, _ = photo_versions
    database_images, query_images = images[:9], images[9:]
    pipeline = Pipeline(
        [
            ("pooler", tiny_pooler()),
            ("selector", ChannelSelector(20, mode=mode, block_size=BLOCK_SIZE)),
            ("binarizer", FeatureBinarizer(block_size=BLOCK_SIZE)),
            (
                "retriever",
                SelectedChannelRetriever("hamming", block_size=BLOCK_SIZE, mode=mode),
            ),
        ]
    ).fit(database_images)

    found = similarity_matrix(pipeline[-1], pipeline[:-1].transform(query_images), 9)

    pooler = pipeline[0]
    database = pooler.transform(database_images)
    queries = pooler.transform(query_images)
    assert pooler.n_guidance_channels_ == N_GUIDANCE
    # The zero-block rule is exact when no kept block has all values <= 0.
    kept = ChannelSelector(20, block_size=BLOCK_SIZE).fit(database)
    for pooled in (database, queries):
        blocks = pooled[:, : N_GUIDANCE * BLOCK_SIZE].reshape(len(pooled), -1, 16)
        assert not np.all(blocks <= 0, axis=2)[kept.block_mask(pooled)].any()
    expected = reference_similarities(queries, database, BLOCK_SIZE, 20, mode, True)
    np.testing.assert_array_equal(found, expected)


def count_backbone_runs(monkeypatch) -> list[int]:
    """Record the number of images of every backbone run."""
    runs = []
    original = _base.iter_activations

    def counting(network, backbone, specs, items, *args, **kwargs):
        runs.append(len(items))
        return original(network, backbone, specs, items, *args, **kwargs)

    monkeypatch.setattr(_base, "iter_activations", counting)
    return runs


# Database: versions 0-2 or 1-3 of each photo (9 images); queries: the other
# version (3 images).
def version_splits():
    index = np.arange(3 * N_VERSIONS).reshape(N_VERSIONS, 3)
    return [
        (index[:3].ravel(), index[3].ravel()),
        (index[1:].ravel(), index[0].ravel()),
    ]


def grid_search(pipeline, images, labels):
    return GridSearchCV(
        pipeline,
        {"selector__n_channels": [5, 20, 80]},
        cv=version_splits(),
        refit=False,
    ).fit(images, labels)


def retrieval_pipeline(pooler, memory=None):
    return Pipeline(
        [
            ("pooler", pooler),
            ("selector", ChannelSelector(block_size=BLOCK_SIZE)),
            ("retriever", ImageRetriever(block_size=BLOCK_SIZE)),
        ],
        memory=memory,
    )


def test_grid_search_pools_training_fold_once(photo_versions, monkeypatch, tmp_path):
    images, labels = photo_versions
    runs = count_backbone_runs(monkeypatch)

    search = grid_search(
        retrieval_pipeline(tiny_pooler(), joblib.Memory(tmp_path, verbose=0)),
        images,
        labels,
    )

    # fit_transform runs the 9 database images twice (PCA sample, pooling),
    # once per fold whatever the number of candidates; Pipeline.score pools
    # the 3 queries of each fold for each of the 3 candidates.
    assert runs.count(9) == 2 * 2
    assert runs.count(3) == 3 * 2
    assert len(runs) == 10
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))

    if "memory" not in CrossLayerPooler().get_params():
        pytest.skip("CrossLayerPooler has no activation cache (memory parameter)")
    runs.clear()
    pooler = tiny_pooler(memory=tmp_path / "activations")
    cached = grid_search(
        retrieval_pipeline(pooler, joblib.Memory(tmp_path / "pipeline", verbose=0)),
        images,
        labels,
    )

    # With the pooler's activation cache the query passes read cached
    # activations too: the backbone sees each of the 12 images once.
    assert sum(runs) == len(images)
    np.testing.assert_allclose(
        cached.cv_results_["mean_test_score"],
        search.cv_results_["mean_test_score"],
        rtol=1e-6,
    )

"""Global pooling baselines (avg, SPoC, MAC, GeM, R-MAC) and PCAWhitening."""

import pickle

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skcrosslayer._extraction import capture_layers, normalize_images
from skcrosslayer.backbones import get_backbone_spec, load_network, resolve_layer
from skcrosslayer.baselines import (
    GlobalPooler,
    PCAWhitening,
    global_pool,
    rmac_pool,
    rmac_regions,
)
from skcrosslayer.exceptions import LayerError

ALEXNET = {"backbone": "alexnet", "weights": None, "image_size": 64, "n_workers": 0}


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------ slow references


def reference_global_pool(activations, method, p=3.0):
    """Loop over images and channels in float64 numpy."""
    B, C = activations.shape[:2]
    pooled = np.zeros((B, C))
    for b in range(B):
        for c in range(C):
            values = activations[b, c].ravel().astype(np.float64)
            if method == "avg":
                pooled[b, c] = values.mean()
            elif method == "sum":
                pooled[b, c] = values.sum()
            elif method == "max":
                pooled[b, c] = values.max()
            else:
                pooled[b, c] = np.mean(np.maximum(values, 1e-12) ** p) ** (1 / p)
    return pooled


def reference_rmac(activations, n_levels, full_map=True):
    """Max-pool every region separately, normalise, sum, normalise."""
    B, C, H, W = activations.shape
    regions = [tuple(r) for r in rmac_regions(H, W, n_levels)]
    if full_map:
        regions.insert(0, (0, 0, H, W))
    output = np.zeros((B, C))
    for b in range(B):
        total = np.zeros(C)
        for top, left, height, width in regions:
            window = activations[b, :, top : top + height, left : left + width]
            vector = window.reshape(C, -1).max(axis=1)
            norm = np.linalg.norm(vector)
            total += vector / norm if norm > 0 else vector
        output[b] = total / np.linalg.norm(total)
    return output


def alexnet_activations(images, layer="conv5"):
    """Run the randomly initialised AlexNet by hand on uint8 (B, H, W, 3) images."""
    spec = get_backbone_spec("alexnet")
    inputs = normalize_images(
        torch.from_numpy(images).permute(0, 3, 1, 2), spec, torch.device("cpu")
    )
    with torch.inference_mode():
        (activations,) = capture_layers(
            load_network("alexnet", None), [resolve_layer("alexnet", layer)], inputs
        )
    return activations


def l2_rows(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


# ---------------------------------------------------------------- global_pool


@pytest.mark.parametrize("method", ["avg", "sum", "max", "gem"])
def test_global_pool_matches_reference(rng, method):
    activations = rng.random((2, 3, 4, 5))
    pooled = global_pool(torch.from_numpy(activations), method)
    np.testing.assert_allclose(
        pooled.numpy(), reference_global_pool(activations, method), rtol=1e-12
    )


def test_global_pool_hand_worked_values():
    # One channel holding 1 and 2: mean 1.5, sum 3, max 2, GeM(p=2) sqrt(2.5).
    activations = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)
    assert global_pool(activations, "avg").item() == 1.5
    assert global_pool(activations, "sum").item() == 3.0
    assert global_pool(activations, "max").item() == 2.0
    assert global_pool(activations, "gem", p=2.0).item() == pytest.approx(1.5811388)


def test_gem_p1_equals_avg(rng):
    activations = torch.from_numpy(rng.random((2, 8, 5, 6)))
    np.testing.assert_allclose(
        global_pool(activations, "gem", p=1.0), global_pool(activations, "avg")
    )


def test_gem_grows_towards_max(rng):
    activations = torch.from_numpy(rng.random((2, 8, 4, 5)))
    maximum = global_pool(activations, "max").numpy()
    previous = global_pool(activations, "avg").numpy()
    for p in [2.0, 5.0, 20.0, 500.0]:
        gem = global_pool(activations, "gem", p=p).numpy()
        assert np.all(gem >= previous - 1e-12)
        assert np.all(gem <= maximum + 1e-12)
        previous = gem
    # GeM >= max * (1/20)^(1/p) for 20 units: within 0.6% at p = 500.
    np.testing.assert_allclose(previous, maximum, rtol=0.006)


def test_gem_large_values_no_overflow():
    # x^p of 1e30 overflows float32 for p = 10, but the ratio to the max does not.
    values = np.array([1e30, 5e29, 0.0, 2e29], dtype=np.float32)
    activations = torch.from_numpy(values.reshape(1, 1, 2, 2))
    gem = global_pool(activations, "gem", p=10.0).item()
    expected = reference_global_pool(values.reshape(1, 1, 2, 2), "gem", p=10.0)
    assert np.isfinite(gem)
    assert gem == pytest.approx(expected[0, 0], rel=1e-5)


def test_global_pool_rejects_bad_input():
    with pytest.raises(ValueError, match=r"4-D tensor.*got shape \(3, 4, 5\)"):
        global_pool(torch.ones(3, 4, 5), "avg")
    with pytest.raises(InvalidParameterError, match="'method' parameter of global"):
        global_pool(torch.ones(1, 1, 2, 2), "median")
    with pytest.raises(InvalidParameterError, match="'p' parameter of global_pool"):
        global_pool(torch.ones(1, 1, 2, 2), "gem", p=0.0)


# --------------------------------------------------------------- rmac_regions


def test_rmac_regions_square_7x7():
    # Level 1: side 2*7/2 = 7, the whole map. Level 2: side floor(14/3) = 4,
    # 2 x 2 regions starting at 0 and 7 - 4 = 3. Level 3: side floor(14/4) = 3,
    # 3 x 3 regions starting at 0, (7 - 3)/2 = 2 and 4.
    expected = [[0, 0, 7, 7]]
    expected += [[top, left, 4, 4] for top in (0, 3) for left in (0, 3)]
    expected += [[top, left, 3, 3] for top in (0, 2, 4) for left in (0, 2, 4)]
    regions = rmac_regions(7, 7, 3)
    assert regions.dtype == np.int64
    assert regions.tolist() == expected


def test_rmac_regions_landscape_10x14():
    # m = 10, M = 14: one extra column of regions, because two 10-wide squares
    # over 14 columns overlap by 6/10, the closest to 0.4 (three: 8/10).
    # Level 1: side 10, 1 x 2 regions, columns 0 and 4.
    # Level 2: side floor(20/3) = 6, rows 0, 4 and columns 0, 4, 8.
    # Level 3: side 5, rows 0, floor(5/2) = 2, 5 and columns 0, 3, 6, 9.
    expected = [[0, left, 10, 10] for left in (0, 4)]
    expected += [[top, left, 6, 6] for top in (0, 4) for left in (0, 4, 8)]
    expected += [[top, left, 5, 5] for top in (0, 2, 5) for left in (0, 3, 6, 9)]
    assert rmac_regions(10, 14, 3).tolist() == expected


def test_rmac_regions_portrait_is_transpose():
    landscape = {(t, left, h, w) for t, left, h, w in rmac_regions(10, 14, 3)}
    portrait = {(left, t, w, h) for t, left, h, w in rmac_regions(14, 10, 3)}
    assert portrait == landscape


def test_rmac_regions_overlap_tie_picks_fewest():
    # 3 x 11: four extra regions overlap by 1/3 and five by 7/15. Both miss
    # 0.4 by 1/15, and the tie goes to four: 5 squares, one every 2 columns.
    assert rmac_regions(3, 11, 1).tolist() == [
        [0, left, 3, 3] for left in (0, 2, 4, 6, 8)
    ]


def test_rmac_regions_cover_the_map():
    for height in range(1, 25):
        for width in range(1, 25):
            regions = rmac_regions(height, width, 4)
            tops, lefts, heights, widths = regions.T
            assert np.all(heights == widths)
            assert np.all(heights >= 1)
            assert np.all(tops >= 0)
            assert np.all(lefts >= 0)
            assert np.all(tops + heights <= height)
            assert np.all(lefts + widths <= width)
            # The first level spans the map along both axes.
            level_1 = heights == heights.max()
            assert (tops + heights)[level_1].max() == height
            assert (lefts + widths)[level_1].max() == width


def test_rmac_regions_skip_empty_levels():
    # On a 1 x 1 map only level 1 has a nonzero side, floor(2/2) = 1.
    assert rmac_regions(1, 1, 3).tolist() == [[0, 0, 1, 1]]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 5, 3), "'height' parameter of rmac_regions"),
        ((5, 0, 3), "'width' parameter of rmac_regions"),
        ((5, 5, 0), "'n_levels' parameter of rmac_regions"),
    ],
)
def test_rmac_regions_rejects_bad_sizes(args, match):
    with pytest.raises(InvalidParameterError, match=match):
        rmac_regions(*args)


# ------------------------------------------------------------------ rmac_pool


@pytest.mark.parametrize("shape", [(7, 7), (10, 14), (14, 10), (3, 11), (1, 5)])
@pytest.mark.parametrize("n_levels", [1, 3])
@pytest.mark.parametrize("full_map", [True, False])
def test_rmac_pool_matches_reference(rng, shape, n_levels, full_map):
    activations = rng.random((2, 6, *shape))
    pooled = rmac_pool(torch.from_numpy(activations), n_levels, full_map=full_map)
    expected = reference_rmac(activations, n_levels, full_map)
    np.testing.assert_allclose(pooled.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_rmac_pool_hand_worked_2x2():
    # Channel 0 is 3 at the top-left unit, channel 1 is 4 at the top-right.
    # Regions at L = 2: the full map, which MACs to (3, 4) -> (0.6, 0.8), and
    # four single units -> (1, 0), (0, 1), 0, 0.
    activations = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    activations[0, 0, 0, 0] = 3.0
    activations[0, 1, 0, 1] = 4.0
    # full_map adds the whole map again: 2 (0.6, 0.8) + (1, 1) = (2.2, 2.6).
    with_full = rmac_pool(activations, 2).numpy()[0]
    np.testing.assert_allclose(with_full, np.array([2.2, 2.6]) / np.sqrt(11.6))
    # Without it: (0.6, 0.8) + (1, 1) = (1.6, 1.8).
    without = rmac_pool(activations, 2, full_map=False).numpy()[0]
    np.testing.assert_allclose(without, np.array([1.6, 1.8]) / np.sqrt(5.8))


def test_rmac_pool_zero_map_stays_zero():
    pooled = rmac_pool(torch.zeros(2, 4, 5, 6))
    assert torch.equal(pooled, torch.zeros(2, 4))


def test_rmac_pool_rejects_bad_input():
    with pytest.raises(ValueError, match=r"rmac_pool expects a non-empty 4-D"):
        rmac_pool(torch.ones(4, 5))
    with pytest.raises(InvalidParameterError, match="'n_levels' parameter"):
        rmac_pool(torch.ones(1, 1, 4, 4), n_levels=0)


# --------------------------------------------------------------- GlobalPooler


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def conv5(images):
    return alexnet_activations(images)


@pytest.mark.parametrize("method", ["avg", "sum", "max", "gem"])
def test_pooler_matches_global_pool(images, conv5, method):
    pooler = GlobalPooler(method=method, p=2.5, **ALEXNET).fit(images)
    expected = l2_rows(global_pool(conv5, method, p=2.5).double().numpy())
    np.testing.assert_allclose(pooler.transform(images), expected, atol=1e-6)


def test_pooler_rmac_matches_reference(images, conv5):
    pooler = GlobalPooler(method="rmac", n_levels=2, **ALEXNET).fit(images)
    assert conv5.shape[2:] == (3, 3)
    expected = reference_rmac(conv5.double().numpy(), n_levels=2)
    np.testing.assert_allclose(pooler.transform(images), expected, atol=1e-6)


def test_pooler_without_normalize(images, conv5):
    pooler = GlobalPooler(method="sum", normalize=False, **ALEXNET).fit(images)
    expected = conv5.double().sum(dim=(2, 3)).numpy()
    np.testing.assert_allclose(pooler.transform(images), expected, rtol=1e-5)


def test_pooler_default_layer_and_names(images):
    pooler = GlobalPooler(**ALEXNET).fit(images)
    assert pooler.layer_ == "conv5"
    assert pooler.n_features_out_ == 256
    names = pooler.get_feature_names_out()
    assert names.dtype == object
    assert names.tolist() == [f"conv5_{c}" for c in range(256)]


def test_pooler_other_layer(images):
    pooler = GlobalPooler(layer="conv2", method="max", **ALEXNET).fit(images)
    expected = l2_rows(alexnet_activations(images, "conv2").amax(dim=(2, 3)).numpy())
    assert pooler.n_features_out_ == 192
    np.testing.assert_allclose(pooler.transform(images), expected, atol=1e-6)


def test_pooler_batches_match_one_at_a_time(images):
    batched = GlobalPooler(method="rmac", batch_size=3, **ALEXNET).fit(images)
    single = GlobalPooler(method="rmac", batch_size=1, **ALEXNET).fit(images)
    np.testing.assert_allclose(
        batched.transform(images), single.transform(images), atol=1e-6
    )


def test_pooler_rmac_with_aspect_kept(rng):
    # 64 x 96 and 96 x 64 images give 3 x 5 and 5 x 3 conv5 grids.
    wide = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    tall = rng.integers(0, 256, (96, 64, 3), dtype=np.uint8)
    params = {**ALEXNET, "image_size": None, "max_size": 96}
    pooler = GlobalPooler(method="rmac", **params).fit([wide, tall])
    output = pooler.transform([wide, tall])
    for row, image in zip(output, [wide, tall]):
        activations = alexnet_activations(image[None]).double().numpy()
        np.testing.assert_allclose(row, reference_rmac(activations, 3)[0], atol=1e-6)


def test_pooler_pickle_round_trip(images):
    pooler = GlobalPooler(method="gem", p=4.0, **ALEXNET).fit(images)
    restored = pickle.loads(pickle.dumps(pooler))
    assert restored.layer_ == "conv5"
    assert restored.get_params() == pooler.get_params()
    np.testing.assert_array_equal(restored.transform(images), pooler.transform(images))


def test_pipeline_whitens_other_images(images, rng):
    database = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    pipeline = make_pipeline(
        GlobalPooler(method="rmac", **ALEXNET), PCAWhitening(n_components=2)
    )
    pipeline.fit(images)
    output = pipeline.transform(database)
    assert output.shape == (2, 2)
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, rtol=1e-5)


def test_head_average_matches_timm():
    # Real EfficientNet-Lite0 weights: the average of conv_head is the vector
    # timm feeds to the classifier.
    photos = [skimage.data.astronaut(), skimage.data.chelsea()]
    pooler = GlobalPooler(layer="conv_head", normalize=False, n_workers=0)
    features = pooler.fit_transform(photos)

    spec = get_backbone_spec("efficientnet_lite0")
    resized = [
        np.asarray(Image.fromarray(p).resize((224, 224), Image.Resampling.BICUBIC))
        for p in photos
    ]
    batch = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)
    network = load_network("efficientnet_lite0")
    with torch.inference_mode():
        inputs = normalize_images(batch, spec, torch.device("cpu"))
        expected = network.forward_head(network.forward_features(inputs), True)
    assert features.shape == (2, 1280)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"method": "median"}, InvalidParameterError, "'method' parameter of Glob"),
        ({"p": 0.0}, InvalidParameterError, "'p' parameter of GlobalPooler"),
        ({"n_levels": 0}, InvalidParameterError, "'n_levels' parameter"),
        ({"layer": "conv9"}, LayerError, "layer 'conv9' not found in alexnet"),
        ({"max_size": 96}, ValueError, "image_size=64 and max_size=96 are both"),
    ],
)
def test_pooler_invalid_parameters(images, params, error, match):
    with pytest.raises(error, match=match):
        GlobalPooler(**{**ALEXNET, **params}).fit(images)


def test_pooler_rejects_missing_images():
    with pytest.raises(TypeError, match="X must be a sequence of images"):
        GlobalPooler(**ALEXNET).fit(None)


def test_pooler_transform_before_fit(images):
    with pytest.raises(NotFittedError, match="GlobalPooler instance is not fitted"):
        GlobalPooler(**ALEXNET).transform(images)


def test_pooler_gem_on_signed_layer_warns(images):
    pooler = GlobalPooler(
        "efficientnet_lite0", None, "blocks.6", method="gem", n_workers=0
    )
    with pytest.warns(UserWarning, match="'blocks.6' of efficientnet_lite0 has no"):
        pooler.fit(images)


# --------------------------------------------------------------- PCAWhitening


@pytest.fixture
def cross():
    """Four points on the axes: variances 8/3 along x and 2/3 along y."""
    return np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # Whitened (1, 1) is (1/sqrt(8/3), 1/sqrt(2/3)), parallel to (1, 2).
        ({}, [1 / np.sqrt(5), 2 / np.sqrt(5)]),
        # Scaling by variance^(-1/4) makes the y factor sqrt(2) times larger.
        ({"power": 0.5}, [1 / np.sqrt(3), np.sqrt(2 / 3)]),
        ({"whiten": False}, [1 / np.sqrt(2), 1 / np.sqrt(2)]),
        ({"whiten": False, "power": 0.5}, [1 / np.sqrt(2), 1 / np.sqrt(2)]),
        ({"normalize": False}, [np.sqrt(3 / 8), np.sqrt(3 / 2)]),
    ],
)
def test_whitening_hand_worked(cross, params, expected):
    whitening = PCAWhitening(**params).fit(cross)
    np.testing.assert_allclose(whitening.mean_, [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(whitening.explained_variance_, [8 / 3, 2 / 3])
    np.testing.assert_allclose(whitening.explained_variance_ratio_, [0.8, 0.2])
    np.testing.assert_allclose(whitening.components_, np.eye(2), atol=1e-15)
    np.testing.assert_allclose(whitening.transform([[1.0, 1.0]]), [expected])


def test_whitening_one_component(cross):
    whitening = PCAWhitening(n_components=1).fit(cross)
    np.testing.assert_allclose(
        whitening.transform([[1.0, 1.0], [-3.0, 5.0]]), [[1], [-1]]
    )
    assert whitening.get_feature_names_out().tolist() == ["pcawhitening0"]


def correlated(rng, n_samples, n_features):
    """Gaussian samples with per-axis scales 1..n_features, mixed by a rotation."""
    rotation, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
    scales = np.arange(1, n_features + 1)
    return (rng.standard_normal((n_samples, n_features)) * scales) @ rotation + 3.0


def test_whitening_matches_sklearn_pca(rng):
    train = correlated(rng, 200, 6)
    database = correlated(rng, 10, 6)
    whitening = PCAWhitening(n_components=4).fit(train)
    reference = PCA(n_components=4, whiten=True, svd_solver="full").fit(train)
    expected = l2_rows(reference.transform(database))
    output = whitening.transform(database)
    # Principal axes are defined up to sign: align each column first.
    signs = np.sign(np.sum(output * expected, axis=0))
    np.testing.assert_allclose(output * signs, expected, atol=1e-10)
    np.testing.assert_allclose(whitening.mean_, train.mean(axis=0))
    # Fitting on the database instead gives other vectors.
    other = PCAWhitening(n_components=4).fit(database).transform(database)
    assert not np.allclose(np.abs(other), np.abs(output), atol=1e-3)


def test_whitening_fewer_samples_than_features(rng):
    # 6 centred samples span 5 directions: the SVD branch keeps those 5.
    train = rng.standard_normal((6, 10))
    whitening = PCAWhitening(normalize=False).fit(train)
    assert whitening.n_components_ == 5
    whitened = whitening.transform(train)
    np.testing.assert_allclose(np.cov(whitened.T), np.eye(5), atol=1e-10)


@pytest.mark.parametrize(
    ("params", "variances"),
    [
        ({}, lambda v: np.ones_like(v)),
        ({"power": 0.5}, np.sqrt),
        ({"whiten": False}, lambda v: v),
    ],
)
def test_whitening_training_covariance(rng, params, variances):
    train = correlated(rng, 300, 5)
    whitening = PCAWhitening(normalize=False, **params).fit(train)
    expected = np.diag(variances(whitening.explained_variance_))
    np.testing.assert_allclose(
        np.cov(whitening.transform(train).T), expected, atol=1e-9
    )


def test_whitening_drops_zero_variance_directions(rng):
    # The third column is the sum of the first two: rank 2.
    base = rng.standard_normal((50, 2))
    train = np.column_stack([base, base.sum(axis=1)])
    whitening = PCAWhitening().fit(train)
    assert whitening.n_components_ == 2
    assert np.all(np.isfinite(whitening.scale_))


def test_whitening_mean_vector_maps_to_zero(rng):
    train = correlated(rng, 40, 4)
    output = PCAWhitening().fit(train).transform(train.mean(axis=0, keepdims=True))
    np.testing.assert_allclose(output, np.zeros((1, 4)), atol=1e-12)


def test_whitening_keeps_float32(rng):
    train = correlated(rng, 40, 4).astype(np.float32)
    output = PCAWhitening().fit(train).transform(train)
    assert output.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, rtol=1e-5)


def test_whitening_rejects_too_many_components(rng):
    with pytest.raises(ValueError, match="n_components=4 of PCAWhitening exceeds"):
        PCAWhitening(n_components=4).fit(rng.standard_normal((4, 6)))


def test_whitening_rejects_equal_vectors():
    with pytest.raises(ValueError, match="5 training vectors .* are all equal"):
        PCAWhitening().fit(np.ones((5, 3)))


def test_whitening_rejects_bad_parameters(cross):
    with pytest.raises(InvalidParameterError, match="'power' parameter"):
        PCAWhitening(power=2.0).fit(cross)
    with pytest.raises(InvalidParameterError, match="'n_components' parameter"):
        PCAWhitening(n_components=0).fit(cross)


def test_whitening_rejects_wrong_width(cross):
    whitening = PCAWhitening().fit(cross)
    with pytest.raises(ValueError, match="has 3 features, but PCAWhitening"):
        whitening.transform(np.ones((2, 3)))


def test_whitening_transform_before_fit(cross):
    with pytest.raises(NotFittedError, match="PCAWhitening instance is not fitted"):
        PCAWhitening().transform(cross)

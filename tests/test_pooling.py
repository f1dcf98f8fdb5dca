"""Pooling maths against slow numpy references, without a backbone."""

import numpy as np
import pytest
import torch

from skcrosslayer.pooling import (
    cross_layer_pool,
    guidance_weights,
    local_features,
    normalize_pooled,
)
from skcrosslayer.quantization import sign_quantize


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def reference_local_features(activations, D):
    """Loop over interior units and concatenate each D x D neighbourhood."""
    B, C, H, W = activations.shape
    r = D // 2
    out = []
    for b in range(B):
        rows = []
        for y in range(r, H - r):
            for x in range(r, W - r):
                patch = activations[b, :, y - r : y + r + 1, x - r : x + r + 1]
                rows.append(patch.reshape(-1))  # channel-major (c, dy, dx)
        out.append(rows)
    return np.asarray(out)


def reference_pool(features, weights, pooling):
    """P[b, k] = sum (or max) over units i of weights[b, i, k] * features[b, i]."""
    B, N, d = features.shape
    K = weights.shape[2]
    pooled = np.zeros((B, K, d))
    for b in range(B):
        for k in range(K):
            weighted = weights[b, :, k, None] * features[b]
            pooled[b, k] = weighted.sum(0) if pooling == "sum" else weighted.max(0)
    return pooled


def reference_normalize(pooled, block_l2, signed_sqrt, final_l2):
    vectors = []
    for blocks in pooled:
        blocks = blocks.copy()
        if block_l2:
            for k in range(len(blocks)):
                norm = np.linalg.norm(blocks[k])
                if norm > 0:
                    blocks[k] /= norm
        v = blocks.reshape(-1)
        if signed_sqrt:
            v = np.sign(v) * np.sqrt(np.abs(v))
        if final_l2 and np.linalg.norm(v) > 0:
            v = v / np.linalg.norm(v)
        vectors.append(v)
    return np.asarray(vectors)


@pytest.mark.parametrize("D", [1, 3, 5])
def test_local_features_match_loop(rng, D):
    activations = rng.standard_normal((2, 4, 7, 6))
    expected = reference_local_features(activations, D)
    actual = local_features(torch.from_numpy(activations), D).numpy()
    assert actual.shape == ((2, (7 - D + 1) * (6 - D + 1), D * D * 4))
    np.testing.assert_allclose(actual, expected)


@pytest.mark.parametrize("D", [1, 3])
def test_guidance_weights_drop_border_ring(rng, D):
    guidance = rng.random((2, 5, 7, 6))
    r = D // 2
    expected = np.stack(
        [
            [guidance[b, :, y, x] for y in range(r, 7 - r) for x in range(r, 6 - r)]
            for b in range(2)
        ]
    )
    actual = guidance_weights(torch.from_numpy(guidance), D).numpy()
    np.testing.assert_allclose(actual, expected)


def test_neighborhood_weight_is_centre_unit():
    # A guidance map that is 1 at one interior unit pools exactly the
    # neighbourhood centred there.
    activations = torch.arange(2 * 5 * 5, dtype=torch.float64).reshape(1, 2, 5, 5)
    guidance = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    guidance[0, 0, 2, 3] = 1.0
    pooled = cross_layer_pool(
        local_features(activations, 3), guidance_weights(guidance, 3)
    )
    expected = activations[0, :, 1:4, 2:5].reshape(-1)
    np.testing.assert_array_equal(pooled[0, 0].numpy(), expected.numpy())


@pytest.mark.parametrize("pooling", ["sum", "max"])
def test_cross_layer_pool_matches_loop(rng, pooling):
    features = rng.standard_normal((3, 10, 6))
    weights = rng.random((3, 10, 5))
    expected = reference_pool(features, weights, pooling)
    actual = cross_layer_pool(
        torch.from_numpy(features), torch.from_numpy(weights), pooling
    ).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_max_pool_chunks_channels(rng, monkeypatch):
    import skcrosslayer.pooling as pooling_module

    features = rng.standard_normal((2, 9, 4))
    weights = rng.random((2, 9, 11))
    monkeypatch.setattr(pooling_module, "_MAX_POOL_CHUNK_ELEMENTS", 2 * 9 * 4 * 3)
    actual = cross_layer_pool(
        torch.from_numpy(features), torch.from_numpy(weights), "max"
    )
    np.testing.assert_allclose(actual.numpy(), reference_pool(features, weights, "max"))


def test_cross_layer_pool_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="pooling must be 'sum' or 'max', got 'mean'"):
        cross_layer_pool(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), "mean")


@pytest.mark.parametrize("block_l2", [True, False])
@pytest.mark.parametrize("signed_sqrt", [True, False])
@pytest.mark.parametrize("final_l2", [True, False])
def test_normalize_pooled_matches_reference(rng, block_l2, signed_sqrt, final_l2):
    pooled = rng.standard_normal((3, 4, 5))
    pooled[1, 2] = 0.0  # an all-zero block
    pooled[2] = 0.0  # an all-zero image
    expected = reference_normalize(pooled, block_l2, signed_sqrt, final_l2)
    actual = normalize_pooled(
        torch.from_numpy(pooled), block_l2, signed_sqrt, final_l2
    ).numpy()
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, atol=1e-9)


def test_normalize_pooled_keeps_zero_blocks_zero():
    pooled = torch.zeros(1, 3, 4)
    pooled[0, 1] = torch.tensor([3.0, 0.0, -4.0, 0.0])
    vector = normalize_pooled(pooled)[0].reshape(3, 4)
    assert torch.all(vector[0] == 0)
    assert torch.all(vector[2] == 0)
    # block [3, 0, -4, 0] / 5 -> sqrt -> [0.7746, 0, -0.8944, 0] / norm
    expected = np.array([np.sqrt(0.6), 0.0, -np.sqrt(0.8), 0.0]) / np.sqrt(1.4)
    np.testing.assert_allclose(vector[1].numpy(), expected, rtol=1e-6)
    assert torch.isclose(torch.linalg.vector_norm(vector), torch.tensor(1.0))


def test_signs_survive_normalisation(rng):
    # Sign quantisation gives the same codes whatever normalisation ran first.
    pooled = torch.from_numpy(rng.standard_normal((4, 6, 5)))
    raw = sign_quantize(pooled.reshape(4, -1).numpy())
    for flags in [(True, True, True), (False, True, False), (True, False, True)]:
        np.testing.assert_array_equal(
            sign_quantize(normalize_pooled(pooled, *flags).numpy()), raw
        )


def test_sign_quantize_values():
    X = np.array([[0.3, -1e-9, 0.0, -2.0]])
    np.testing.assert_array_equal(sign_quantize(X), [[1, -1, 0, -1]])
    assert sign_quantize(X).dtype == np.int8

"""Tests for sign packing, Hamming distances and FeatureBinarizer."""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from skcrosslayer import binary
from skcrosslayer.binary import (
    FeatureBinarizer,
    hamming_distances,
    pack_signs,
    packed_inner_products,
    unpack_signs,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def dense_signs(X):
    """±1 signs with the packing convention: > 0 is +1, <= 0 is -1."""
    return np.where(np.asarray(X) > 0, 1, -1).astype(np.int64)


# ---------------------------------------------------------------- pack_signs


def test_pack_signs_hand_worked_byte():
    # Signs + - - + fill the four most significant bits: 0b1001_0000 = 144.
    packed, n_bits = pack_signs(np.array([[0.5, -1.0, 0.0, 2.0]]))
    assert n_bits == 4
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, [[144]])


def test_pack_signs_zero_is_bit_zero():
    packed, _ = pack_signs(np.zeros((1, 8)))
    np.testing.assert_array_equal(packed, [[0]])


def test_pack_signs_pads_row_with_zero_bits():
    packed, n_bits = pack_signs(np.ones((2, 9)))
    assert n_bits == 9
    np.testing.assert_array_equal(packed, [[255, 128], [255, 128]])


def test_pack_signs_blocks_start_on_byte_boundaries():
    # Block 0 is + - + (0b1010_0000 = 160), block 1 is - - + (0b0010_0000 = 32).
    X = np.array([[1.0, -1.0, 1.0, -1.0, -1.0, 1.0]])
    packed, n_bits = pack_signs(X, block_size=3)
    assert n_bits == 6
    np.testing.assert_array_equal(packed, [[160, 32]])


def test_pack_signs_block_width_formula(rng):
    X = rng.standard_normal((3, 4 * 12))
    packed, _ = pack_signs(X, block_size=12)
    # 4 blocks of ceil(12 / 8) = 2 bytes.
    assert packed.shape == (3, 8)


@pytest.mark.parametrize("block_size", [None, 1, 3, 8, 12, 64])
def test_unpack_signs_inverts_pack(rng, block_size):
    X = rng.standard_normal((5, 192))
    packed, n_bits = pack_signs(X, block_size=block_size)
    signs = unpack_signs(packed, n_bits, block_size=block_size)
    assert signs.dtype == np.int8
    np.testing.assert_array_equal(signs, dense_signs(X))


def test_unpack_signs_hand_worked():
    np.testing.assert_array_equal(unpack_signs([[144]], 4), [[1, -1, -1, 1]])


def test_pack_signs_rejects_nan():
    with pytest.raises(ValueError, match="X contains NaN, which has no sign"):
        pack_signs(np.array([[1.0, np.nan]]))


def test_pack_signs_rejects_1d_input():
    with pytest.raises(ValueError, match=r"2-D array .* got an array of shape \(3,\)"):
        pack_signs(np.ones(3))


def test_pack_signs_rejects_block_size_not_dividing():
    with pytest.raises(ValueError, match="block_size=4 does not divide .* 6"):
        pack_signs(np.ones((1, 6)), block_size=4)


def test_pack_signs_rejects_invalid_block_size():
    with pytest.raises(InvalidParameterError, match="'block_size' parameter"):
        pack_signs(np.ones((1, 6)), block_size=0)


def test_unpack_signs_rejects_wrong_width():
    packed, _ = pack_signs(np.ones((1, 16)))
    with pytest.raises(ValueError, match="packed has 2 bytes per row, but n_bits=24"):
        unpack_signs(packed, 24)


def test_unpack_signs_rejects_float_codes():
    with pytest.raises(ValueError, match="packed codes of dtype uint8; got .*float64"):
        unpack_signs(np.ones((1, 2)), 16)


# ------------------------------------------------- Hamming and inner products


def test_hamming_distances_hand_worked():
    distances = hamming_distances([[0b11110000]], [[0b11110000], [0b00001111]])
    assert distances.dtype == np.int32
    np.testing.assert_array_equal(distances, [[0, 8]])


@pytest.mark.parametrize("n_bits", [5, 64, 100, 256])
def test_hamming_distances_match_unpacked_count(rng, n_bits):
    A = rng.standard_normal((7, n_bits))
    B = rng.standard_normal((11, n_bits))
    distances = hamming_distances(pack_signs(A)[0], pack_signs(B)[0])

    expected = np.zeros((7, 11), dtype=np.int64)
    for i in range(7):
        for j in range(11):
            expected[i, j] = np.sum(dense_signs(A[i]) != dense_signs(B[j]))
    np.testing.assert_array_equal(distances, expected)


@pytest.mark.parametrize("block_size", [None, 3, 12, 64])
def test_packed_inner_products_equal_dense(rng, block_size):
    A = rng.standard_normal((6, 192))
    B = rng.standard_normal((9, 192))
    packed_a, n_bits = pack_signs(A, block_size=block_size)
    packed_b, _ = pack_signs(B, block_size=block_size)

    products = packed_inner_products(packed_a, packed_b, n_bits)
    assert products.dtype == np.int32
    np.testing.assert_array_equal(products, dense_signs(A) @ dense_signs(B).T)


def test_hamming_distances_small_steps_match(rng, monkeypatch):
    packed_a = rng.integers(0, 256, (13, 24), dtype=np.uint8)
    packed_b = rng.integers(0, 256, (17, 24), dtype=np.uint8)
    expected = hamming_distances(packed_a, packed_b)
    # One row of packed_a per XOR step.
    monkeypatch.setattr(binary, "_MAX_XOR_BYTES", 1)
    np.testing.assert_array_equal(hamming_distances(packed_a, packed_b), expected)


@pytest.mark.parametrize("n_bytes", [1, 3, 8, 24])
def test_bit_count_table_matches_bin(rng, n_bytes):
    codes = rng.integers(0, 256, (5, n_bytes), dtype=np.uint8)
    expected = [[sum(bin(byte).count("1") for byte in row)] for row in codes]
    counts = binary._count_set_bits_table(codes)
    np.testing.assert_array_equal(counts[:, None], expected)


@pytest.mark.skipif(
    not hasattr(np, "bitwise_count"), reason="np.bitwise_count needs NumPy >= 2.0"
)
@pytest.mark.parametrize("n_bytes", [1, 3, 8, 24])
def test_bit_count_numpy_matches_table(rng, n_bytes):
    codes = rng.integers(0, 256, (4, 6, n_bytes), dtype=np.uint8)
    np.testing.assert_array_equal(
        binary._count_set_bits_numpy(codes), binary._count_set_bits_table(codes)
    )


def test_hamming_distances_rejects_width_mismatch():
    with pytest.raises(ValueError, match="packed_a has 2 bytes per code and .* 3"):
        hamming_distances(np.zeros((1, 2), np.uint8), np.zeros((1, 3), np.uint8))


def test_hamming_distances_rejects_signed_codes():
    with pytest.raises(ValueError, match="packed_b must contain .* got dtype int8"):
        hamming_distances(np.zeros((1, 2), np.uint8), -np.ones((1, 2), np.int8))


def test_packed_inner_products_rejects_too_many_bits():
    codes = np.zeros((1, 2), np.uint8)
    with pytest.raises(ValueError, match="n_bits=17 is more than the 16 bits"):
        packed_inner_products(codes, codes, 17)


# ---------------------------------------------------------- FeatureBinarizer


def test_feature_binarizer_block_attributes():
    X = np.array([[1.0, -1.0, 1.0, -1.0, -1.0, 1.0]])
    binarizer = FeatureBinarizer(block_size=3).fit(X)
    assert binarizer.n_features_in_ == 6
    assert binarizer.n_bits_ == 6
    assert binarizer.n_blocks_ == 2
    assert binarizer.n_bits_per_block_ == 3
    assert binarizer.n_bytes_per_block_ == 1
    np.testing.assert_array_equal(binarizer.transform(X), [[160, 32]])


def test_feature_binarizer_unblocked_attributes(rng):
    binarizer = FeatureBinarizer().fit(rng.standard_normal((2, 20)))
    assert binarizer.n_blocks_ == 1
    assert binarizer.n_bits_per_block_ == 20
    assert binarizer.n_bytes_per_block_ == 3


def test_feature_binarizer_dense_equals_unpacked(rng):
    X = rng.standard_normal((4, 24))
    packed = FeatureBinarizer(block_size=6).fit_transform(X)
    dense = FeatureBinarizer(output="dense").fit_transform(X)
    assert dense.dtype == np.int8
    np.testing.assert_array_equal(dense, unpack_signs(packed, 24, block_size=6))


def test_feature_binarizer_feature_names():
    X = np.ones((1, 12))
    packed_names = FeatureBinarizer().fit(X).get_feature_names_out()
    assert list(packed_names) == ["featurebinarizer_byte0", "featurebinarizer_byte1"]

    block_names = FeatureBinarizer(block_size=6).fit(X).get_feature_names_out()
    assert list(block_names) == [
        "featurebinarizer_block0_byte0",
        "featurebinarizer_block1_byte0",
    ]

    dense_names = FeatureBinarizer(output="dense").fit(X).get_feature_names_out()
    assert list(dense_names) == [f"x{i}" for i in range(12)]


def test_feature_binarizer_rejects_block_size_not_dividing():
    with pytest.raises(ValueError, match="block_size=5 does not divide .* 12"):
        FeatureBinarizer(block_size=5).fit(np.ones((2, 12)))


def test_feature_binarizer_rejects_unknown_output():
    with pytest.raises(InvalidParameterError, match="'output' parameter .* 'bits'"):
        FeatureBinarizer(output="bits").fit(np.ones((2, 4)))


def test_feature_binarizer_rejects_feature_count_change():
    binarizer = FeatureBinarizer().fit(np.ones((2, 4)))
    with pytest.raises(ValueError, match="X has 5 features, but FeatureBinarizer"):
        binarizer.transform(np.ones((2, 5)))

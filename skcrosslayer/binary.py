"""Binary codes of pooled vectors: sign packing and Hamming distances.

A pooled vector is binarised by keeping the sign of each dimension, and eight
signs are packed into one byte with the bit layout of :func:`numpy.packbits`
(first dimension in the most significant bit). The inner product of two ±1
codes of ``n_bits`` dimensions is ``n_bits - 2 * hamming``, so ranking by
Hamming distance is ranking by ±1 inner product.

Block layout: a cross-layer pooled vector is K blocks of d dims (one block per
guidance channel, channel-major). With ``block_size=d`` every block is packed
on its own and padded with zero bits to ``ceil(d / 8)`` whole bytes, so block k
occupies bytes ``[k * ceil(d / 8), (k + 1) * ceil(d / 8))``. Selecting guidance
channels on packed codes is then selecting byte ranges. Padding bits are zero in
every code, so they never add to a Hamming distance.
"""

from __future__ import annotations

import logging
from numbers import Integral

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_is_fitted,
    validate_data,
)

__all__ = [
    "FeatureBinarizer",
    "hamming_distances",
    "pack_signs",
    "packed_inner_products",
    "unpack_signs",
]

logger = logging.getLogger(__name__)

# Upper bound, in bytes, on the XOR temporary of one step of hamming_distances.
_MAX_XOR_BYTES = 1 << 24

# Number of set bits of every byte value, for NumPy versions before 2.0.
_BYTE_BIT_COUNTS = np.array([bin(value).count("1") for value in range(256)], np.uint8)


def _count_set_bits_table(codes: np.ndarray) -> np.ndarray:
    """Count the set bits along the last axis of a uint8 array with a lookup table."""
    return _BYTE_BIT_COUNTS[codes].sum(axis=-1, dtype=np.int32)


def _count_set_bits_numpy(codes: np.ndarray) -> np.ndarray:
    """Count the set bits along the last axis of a uint8 array with bitwise_count."""
    if codes.shape[-1] % 8 == 0 and codes.flags.c_contiguous:
        # Eight bytes as one uint64 word: the same bits, an eighth of the elements.
        codes = codes.view(np.uint64)
    return np.bitwise_count(codes).sum(axis=-1, dtype=np.int32)


# np.bitwise_count exists from NumPy 2.0 on.
_count_set_bits = (
    _count_set_bits_numpy if hasattr(np, "bitwise_count") else _count_set_bits_table
)


def _check_2d(array: np.ndarray, name: str) -> None:
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_columns); got an "
            f"array of shape {array.shape}. Reshape a single vector with "
            "reshape(1, -1)."
        )


def _check_packed(packed: ArrayLike, name: str) -> np.ndarray:
    if not isinstance(packed, np.ndarray):
        packed = np.asarray(packed)
        # Nested lists of byte values arrive as int64.
        if packed.dtype.kind in "iu" and packed.size and packed.min() >= 0:
            if packed.max() <= 255:
                packed = packed.astype(np.uint8)
    _check_2d(packed, name)
    if packed.dtype != np.uint8:
        raise ValueError(
            f"{name} must contain packed codes of dtype uint8; got dtype "
            f"{packed.dtype}. Pack signs with pack_signs or "
            "FeatureBinarizer(output='packed')."
        )
    return packed


def _check_block_size(n_features: int, block_size: int | None) -> int:
    """Return the number of blocks, raising if the blocks do not tile the vector."""
    if block_size is None:
        return 1
    if n_features % block_size != 0:
        raise ValueError(
            f"block_size={block_size} does not divide the number of features "
            f"{n_features}; a pooled vector of K guidance channels and d local "
            "dims has K * d features, so pass block_size=d."
        )
    return n_features // block_size


@validate_params(
    {
        "X": ["array-like"],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def pack_signs(
    X: ArrayLike, *, block_size: int | None = None
) -> tuple[np.ndarray, int]:
    """Binarise vectors by sign and pack eight signs into each byte.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Real-valued vectors. A value > 0 becomes bit 1 (sign +1). A value <= 0
        becomes bit 0 (sign -1), so zeros, including all-zero blocks, count as
        -1. NaN is rejected.
    block_size : int or None, default=None
        Number of features in one block. Each block is packed on its own and
        padded with zero bits to a whole number of bytes. None packs each row
        as one block.

    Returns
    -------
    packed : ndarray of shape (n_samples, n_blocks * ceil(block_size / 8)), uint8
        Bit layout of :func:`numpy.packbits` within each block. Without blocks
        the width is ``ceil(n_features / 8)``.
    n_bits : int
        Number of sign bits per row, ``n_features``, without padding.

    Examples
    --------
    >>> packed, n_bits = pack_signs([[0.5, -1.0, 0.0, 2.0]])
    >>> packed, n_bits
    (array([[144]], dtype=uint8), 4)
    """
    X = np.asarray(X)
    _check_2d(X, "X")
    if np.isnan(X).any():
        raise ValueError("X contains NaN, which has no sign; remove or impute it.")
    n_samples, n_features = X.shape
    n_blocks = _check_block_size(n_features, block_size)
    bits = X > 0

    if block_size is None:
        return np.packbits(bits, axis=1), n_features

    # (n_samples, n_blocks, block_size) -> (n_samples, n_blocks, bytes per block)
    packed = np.packbits(bits.reshape(n_samples, n_blocks, block_size), axis=2)
    return packed.reshape(n_samples, -1), n_features


@validate_params(
    {
        "packed": ["array-like"],
        "n_bits": [Interval(Integral, 1, None, closed="left")],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def unpack_signs(
    packed: ArrayLike, n_bits: int, *, block_size: int | None = None
) -> np.ndarray:
    """Unpack codes from :func:`pack_signs` into ±1 signs.

    Parameters
    ----------
    packed : array-like of shape (n_samples, n_bytes), uint8
        Packed codes.
    n_bits : int
        Number of sign bits per row, without padding.
    block_size : int or None, default=None
        The ``block_size`` the codes were packed with.

    Returns
    -------
    ndarray of shape (n_samples, n_bits), int8
        +1 for bit 1 and -1 for bit 0.

    Examples
    --------
    >>> unpack_signs([[144]], 4)
    array([[ 1, -1, -1,  1]], dtype=int8)
    """
    packed = _check_packed(packed, "packed")
    n_blocks = _check_block_size(n_bits, block_size)
    bits_per_block = n_bits if block_size is None else block_size
    bytes_per_block = -(-bits_per_block // 8)
    if packed.shape[1] != n_blocks * bytes_per_block:
        raise ValueError(
            f"packed has {packed.shape[1]} bytes per row, but n_bits={n_bits} in "
            f"{n_blocks} block(s) of {bits_per_block} bits needs "
            f"{n_blocks * bytes_per_block}; pass the n_bits and block_size that "
            "pack_signs was called with."
        )

    # (n_samples, n_blocks, bytes per block) -> (n_samples, n_blocks, bits per block)
    blocks = packed.reshape(packed.shape[0], n_blocks, bytes_per_block)
    bits = np.unpackbits(blocks, axis=2, count=bits_per_block)
    signs = bits.reshape(packed.shape[0], n_bits).astype(np.int8)
    return 2 * signs - 1


def _hamming_distances(packed_a: np.ndarray, packed_b: np.ndarray) -> np.ndarray:
    n_a, n_bytes = packed_a.shape
    distances = np.empty((n_a, packed_b.shape[0]), dtype=np.int32)
    rows_per_step = max(1, _MAX_XOR_BYTES // max(1, packed_b.size))
    for start in range(0, n_a, rows_per_step):
        stop = min(start + rows_per_step, n_a)
        # (rows, n_b, n_bytes)
        differing = packed_a[start:stop, None, :] ^ packed_b[None, :, :]
        distances[start:stop] = _count_set_bits(differing)
    return distances


@validate_params(
    {"packed_a": ["array-like"], "packed_b": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def hamming_distances(packed_a: ArrayLike, packed_b: ArrayLike) -> np.ndarray:
    """Compute the Hamming distance between every pair of packed codes.

    The bytes are compared with XOR and the set bits counted, without unpacking.

    Parameters
    ----------
    packed_a : array-like of shape (n_a, n_bytes), uint8
    packed_b : array-like of shape (n_b, n_bytes), uint8

    Returns
    -------
    ndarray of shape (n_a, n_b), int32

    Examples
    --------
    >>> hamming_distances([[0b11110000]], [[0b11110000], [0b00001111]])
    array([[0, 8]], dtype=int32)
    """
    packed_a = _check_packed(packed_a, "packed_a")
    packed_b = _check_packed(packed_b, "packed_b")
    if packed_a.shape[1] != packed_b.shape[1]:
        raise ValueError(
            f"packed_a has {packed_a.shape[1]} bytes per code and packed_b has "
            f"{packed_b.shape[1]}; both must be packed from vectors of the same "
            "length and block_size."
        )
    return _hamming_distances(packed_a, packed_b)


@validate_params(
    {
        "packed_a": ["array-like"],
        "packed_b": ["array-like"],
        "n_bits": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def packed_inner_products(
    packed_a: ArrayLike, packed_b: ArrayLike, n_bits: int
) -> np.ndarray:
    """Compute the inner products of ±1 codes from their packed bits.

    Parameters
    ----------
    packed_a : array-like of shape (n_a, n_bytes), uint8
    packed_b : array-like of shape (n_b, n_bytes), uint8
    n_bits : int
        Number of sign bits per code, without padding.

    Returns
    -------
    ndarray of shape (n_a, n_b), int32
        ``n_bits - 2 * hamming_distances(packed_a, packed_b)``.

    Examples
    --------
    >>> packed_inner_products([[0b10110000]], [[0b10010000]], 4)
    array([[2]], dtype=int32)
    """
    distances = hamming_distances(packed_a, packed_b)
    n_bytes = np.asarray(packed_a).shape[1]
    if n_bits > 8 * n_bytes:
        raise ValueError(
            f"n_bits={n_bits} is more than the {8 * n_bytes} bits of codes with "
            f"{n_bytes} bytes; pass the n_bits returned by pack_signs."
        )
    return n_bits - 2 * distances


class FeatureBinarizer(TransformerMixin, BaseEstimator):
    """Binarise pooled vectors by sign, as packed bits or as ±1 values.

    A value > 0 becomes +1 (bit 1) and a value <= 0 becomes -1 (bit 0).

    Parameters
    ----------
    output : {"packed", "dense"}, default="packed"
        "packed" returns eight signs per uint8 byte (see :func:`pack_signs`),
        for :class:`~skcrosslayer.search.ImageRetriever` with
        ``metric="hamming"``. "dense" returns int8 ±1 values, one per feature.
    block_size : int or None, default=None
        Number of features in one block (the local-feature dims d of a
        cross-layer pooled vector). With "packed" output each block is padded
        to whole bytes so that a guidance channel maps to a byte range. None
        treats each vector as one block.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.
    n_bits_ : int
        Number of sign bits per vector, equal to ``n_features_in_``.
    n_blocks_ : int
        Number of blocks, ``n_features_in_ // block_size`` (1 without blocks).
    n_bits_per_block_ : int
        Sign bits in one block, without padding: ``block_size``, or
        ``n_features_in_`` without blocks.
    n_bytes_per_block_ : int
        Bytes of one block in the packed output, ``ceil(n_bits_per_block_ / 8)``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.5, -1.0, 0.0, 2.0]])
    >>> FeatureBinarizer().fit_transform(X)
    array([[144]], dtype=uint8)
    >>> FeatureBinarizer(output="dense").fit_transform(X)
    array([[ 1, -1, -1,  1]], dtype=int8)
    >>> FeatureBinarizer(block_size=2).fit_transform(X)
    array([[128,  64]], dtype=uint8)
    """

    _parameter_constraints: dict = {
        "output": [StrOptions({"packed", "dense"})],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, output: str = "packed", block_size: int | None = None):
        self.output = output
        self.block_size = block_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: None = None) -> FeatureBinarizer:
        """Record the number of features and the block layout.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        self : FeatureBinarizer
        """
        X = validate_data(self, X)
        self.n_bits_ = self.n_features_in_
        self.n_blocks_ = _check_block_size(self.n_features_in_, self.block_size)
        self.n_bits_per_block_ = self.n_features_in_ // self.n_blocks_
        self.n_bytes_per_block_ = -(-self.n_bits_per_block_ // 8)
        logger.debug(
            "FeatureBinarizer fitted: %d bits in %d block(s) of %d bytes",
            self.n_bits_,
            self.n_blocks_,
            self.n_bytes_per_block_,
        )
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Binarise X by sign.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of shape (n_samples, n_blocks_ * n_bytes_per_block_), uint8
            With ``output="packed"``; int8 ±1 of shape
            (n_samples, n_features_in_) with ``output="dense"``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        if self.output == "dense":
            return np.where(X > 0, 1, -1).astype(np.int8)
        packed, _ = pack_signs(X, block_size=self.block_size)
        return packed

    def get_feature_names_out(self, input_features: ArrayLike | None = None):
        """Return the names of the output columns.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input feature names, checked against ``feature_names_in_``.

        Returns
        -------
        ndarray of str
            The input names for "dense" output. For "packed" output one name
            per byte: ``featurebinarizer_byte{i}`` without blocks, or
            ``featurebinarizer_block{k}_byte{j}`` for byte j of block k.
        """
        check_is_fitted(self)
        input_features = _check_feature_names_in(self, input_features)
        if self.output == "dense":
            return input_features
        prefix = type(self).__name__.lower()
        if self.block_size is None:
            names = [f"{prefix}_byte{i}" for i in range(self.n_bytes_per_block_)]
        else:
            names = [
                f"{prefix}_block{k}_byte{j}"
                for k in range(self.n_blocks_)
                for j in range(self.n_bytes_per_block_)
            ]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # The output is integer codes whatever the input float dtype.
        tags.transformer_tags.preserves_dtype = []
        return tags

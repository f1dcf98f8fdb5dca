"""Adaptive channel selection: keep the guidance channels that fire most in an image.

A cross-layer pooled vector is K blocks of d dims, one block per guidance channel
(channel-major: block k is columns ``[k * d, (k + 1) * d)``). With
``CrossLayerPooler(channel_strengths=True)`` it is followed by K more columns:
the mean activation of each guidance channel in the image. L. Liu, C. Shen and
A. van den Hengel ("Cross-convolutional-layer Pooling for Image Recognition",
TPAMI 2017) keep, for each query, the k channels with the largest mean
activation and score a database image by the block inner products over those
channels only: ``sum_{k in S(q)} q_k . x_k``. Because that sum equals the inner
product of the masked query (other blocks zero) with the complete database
vector, selection is a transform of the queries alone, and any inner-product
search ranks by it.

Packed sign codes have no zero: a zeroed block packs to all-zero bits, which
read as -1 signs, so they need the mask to leave dropped blocks out. Either
pass ``ChannelSelector.block_mask`` to ``ImageRetriever`` as
``query_block_mask`` (and ``database_block_mask`` in symmetric mode), or end
the pipeline with :class:`SelectedChannelRetriever`, which reads the masks
from the zero blocks.
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
    check_array,
    check_is_fitted,
    validate_data,
)

from .binary import _check_packed
from .search import ImageRetriever, select_top_blocks

__all__ = [
    "ChannelSelector",
    "SelectedChannelRetriever",
    "nonzero_block_mask",
    "top_channel_mask",
]

logger = logging.getLogger(__name__)


@validate_params(
    {
        "strengths": ["array-like"],
        "n_channels": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def top_channel_mask(strengths: ArrayLike, n_channels: int) -> np.ndarray:
    """Mark the ``n_channels`` guidance channels with the largest strength per row.

    Parameters
    ----------
    strengths : array-like of shape (n_images, n_guidance_channels)
        Mean activation of each guidance channel in each image, the last K
        columns of ``CrossLayerPooler(channel_strengths=True)``.
    n_channels : int
        Channels kept per image, at most ``n_guidance_channels``. Among equal
        strengths the lower channel index is kept.

    Returns
    -------
    ndarray of shape (n_images, n_guidance_channels), bool
        True for the kept channels, ``n_channels`` per row.

    Examples
    --------
    >>> top_channel_mask([[0.0, 2.5, 0.5, 2.5]], 2)
    array([[False,  True, False,  True]])
    """
    strengths = check_array(strengths, input_name="strengths")
    n_guidance = strengths.shape[1]
    if n_channels > n_guidance:
        raise ValueError(
            f"n_channels={n_channels} is more than the {n_guidance} guidance "
            f"channels of strengths; pass n_channels <= {n_guidance}."
        )
    return select_top_blocks(strengths, n_channels)


@validate_params(
    {
        "X": ["array-like"],
        "block_size": [Interval(Integral, 1, None, closed="left")],
        "packed": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def nonzero_block_mask(X: ArrayLike, block_size: int, *, packed: bool = False):
    """Mark the blocks of each row that contain a nonzero value.

    :class:`ChannelSelector` sets the blocks of dropped channels to zero, and
    :class:`~skcrosslayer.binary.FeatureBinarizer` packs a zero block to
    all-zero bytes, so this mask recovers the kept channels from either.

    Parameters
    ----------
    X : array-like of shape (n_rows, n_columns)
        Real-valued vectors, or packed uint8 codes with ``packed=True``.
    block_size : int
        Features per block, or for packed codes sign bits per block: each
        block then occupies ``ceil(block_size / 8)`` bytes, as
        ``FeatureBinarizer(block_size=block_size)`` packs it.
    packed : bool, default=False
        Whether ``X`` contains packed codes.

    Returns
    -------
    ndarray of shape (n_rows, n_blocks), bool

    Examples
    --------
    >>> nonzero_block_mask([[0.0, 0.0, 0.3, -1.0]], 2)
    array([[False,  True]])
    >>> nonzero_block_mask([[0, 0, 0, 7]], 16, packed=True)
    array([[False,  True]])
    """
    if packed:
        X = _check_packed(X, "X")
        width = -(-block_size // 8)
        unit = "bytes"
    else:
        X = check_array(X, dtype=[np.float32, np.float64], input_name="X")
        width = block_size
        unit = "features"
    if X.shape[1] % width != 0:
        raise ValueError(
            f"X has {X.shape[1]} {unit} per row, which is not a whole number of "
            f"blocks of {width} {unit} (block_size={block_size}); pass the "
            "block_size the vectors were pooled or packed with."
        )
    # (n_rows, n_blocks, width)
    blocks = X.reshape(X.shape[0], -1, width)
    return np.any(blocks != 0, axis=2)


def _zero_dropped_blocks(vectors: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return a copy of ``vectors`` (n, K * d) with the blocks outside ``mask`` zero."""
    n_rows, n_blocks = mask.shape
    # (n, K * d) -> (n, K, d), then back.
    blocks = vectors.reshape(n_rows, n_blocks, -1) * mask[:, :, None]
    return blocks.reshape(n_rows, -1)


class ChannelSelector(TransformerMixin, BaseEstimator):
    """Keep the blocks of the guidance channels that fire most in each image.

    Input is the output of ``CrossLayerPooler(channel_strengths=True)``: K
    blocks of d dims followed by K strength columns, the mean activation of
    each guidance channel. For each row the ``n_channels`` channels with the
    largest strength are kept and the other blocks are set to zero. The
    strength columns are dropped, so the output has K * d columns and fits
    ``FeatureBinarizer(block_size=d)`` and ``ImageRetriever(block_size=d)``.
    This is the adaptive channel selection of L. Liu, C. Shen and A. van den
    Hengel, "Cross-convolutional-layer Pooling for Image Recognition", TPAMI
    2017.

    Parameters
    ----------
    n_channels : int or None, default=50
        Guidance channels kept per image, at most K. None keeps all of them,
        so the selector only drops the strength columns.
    mode : {"query", "symmetric"}, default="query"
        "query" (the TPAMI 2017 setup): queries are masked and database
        vectors are complete. :meth:`fit_transform`, which a
        :class:`~sklearn.pipeline.Pipeline` calls on the database in ``fit``,
        returns complete vectors, and :meth:`transform`, which it calls on
        the queries in ``predict``, ``score`` and ``transform``, returns
        masked vectors. The similarity of a masked query q to a complete
        vector x is ``sum_{k in S(q)} q_k . x_k``. "symmetric": every vector
        is masked by its own channels, in :meth:`fit_transform` too, so a
        block counts only when both images keep it, and a database image
        needs only its k blocks (and their channel indices) in storage.
    block_size : int or None, default=None
        Dims d of one pooled block, the pooler's ``n_components_``. The
        number of guidance channels K is derived from it at fit time:
        ``K = n_features_in_ / (d + 1)``. It is required, because
        ``n_features_in_ = K * (d + 1)`` alone does not determine K and d, so
        None raises in :meth:`fit` with this instruction.

    Attributes
    ----------
    n_features_in_ : int
        Number of input columns, K * (d + 1).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.
    n_guidance_channels_ : int
        Number K of guidance channels (blocks).
    n_channels_ : int
        Channels kept per image: ``n_channels``, or K when it is None.
    n_features_out_ : int
        Number of output columns, K * d.

    See Also
    --------
    SelectedChannelRetriever : ImageRetriever that reads the kept blocks of
        packed codes from their zero blocks.
    top_channel_mask : The per-image choice of channels.

    Notes
    -----
    In "query" mode ``fit_transform(X)`` differs from ``fit(X).transform(X)``
    on purpose, unlike the scikit-learn transformer convention: the database
    passes through ``fit_transform`` and stays complete, while queries pass
    through ``transform`` and are masked. To mask a database by hand in this
    mode (or to build queries from fitted data), call :meth:`transform`.

    Dropped blocks are zero, which adds nothing to a float inner product. A
    packed sign code cannot represent zero: ``FeatureBinarizer`` packs a zero block
    to all-zero bits, which read as -1 signs and would count. With packed
    codes, either end the pipeline with :class:`SelectedChannelRetriever`, or
    pass ``block_mask(pooled_queries)`` to ``ImageRetriever.kneighbors`` as
    ``query_block_mask`` (and ``block_mask(pooled_database)`` to its ``fit``
    as ``database_block_mask`` in symmetric mode).

    Tuning ``n_channels`` without rerunning the backbone: cache the pooler
    step of the pipeline with ``memory``. Candidates that share a training
    fold then reuse the fitted pooler and its pooled vectors (the two
    backbone passes of ``fit_transform``), so the training images are pooled
    once per fold. ``Pipeline.score`` still pools each fold's query images
    once per candidate, because scikit-learn caches ``fit_transform`` only.
    With the pooler's own activation cache (``CrossLayerPooler(memory=...)``)
    those passes read cached activations, and the backbone runs once per
    image over the whole search::

        import joblib
        from sklearn.model_selection import GridSearchCV
        from sklearn.pipeline import Pipeline

        pipeline = Pipeline(
            [
                (
                    "pooler",
                    CrossLayerPooler(
                        channel_strengths=True, n_components=d, memory=cache_folder
                    ),
                ),
                ("selector", ChannelSelector(block_size=d)),
                ("binarizer", FeatureBinarizer(block_size=d)),
                ("retriever", SelectedChannelRetriever("hamming", block_size=d)),
            ],
            memory=joblib.Memory(pipeline_cache_folder, verbose=0),
        )
        search = GridSearchCV(
            pipeline, {"selector__n_channels": [10, 30, 50, 100]}, cv=splits
        ).fit(images, groups)

    where each split of ``splits`` has database images as its training part
    and query images as its test part. To pool every image exactly once, pool
    all images first and search a pipeline without the pooler on the pooled
    vectors.

    Examples
    --------
    Two channels of two dims each, then their two strengths:

    >>> import numpy as np
    >>> X = np.array([[1.0, 2.0, 3.0, 4.0, 0.1, 0.9],
    ...               [5.0, 6.0, 7.0, 8.0, 0.7, 0.2]])
    >>> selector = ChannelSelector(n_channels=1, block_size=2)
    >>> selector.fit_transform(X)
    array([[1., 2., 3., 4.],
           [5., 6., 7., 8.]])
    >>> selector.transform(X)
    array([[0., 0., 3., 4.],
           [5., 6., 0., 0.]])
    >>> ChannelSelector(1, mode="symmetric", block_size=2).fit_transform(X)
    array([[0., 0., 3., 4.],
           [5., 6., 0., 0.]])
    """

    _parameter_constraints: dict = {
        "n_channels": [Interval(Integral, 1, None, closed="left"), None],
        "mode": [StrOptions({"query", "symmetric"})],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        n_channels: int | None = 50,
        *,
        mode: str = "query",
        block_size: int | None = None,
    ):
        self.n_channels = n_channels
        self.mode = mode
        self.block_size = block_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: None = None) -> ChannelSelector:
        """Derive the number of guidance channels from the width of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_images, K * (d + 1))
            Output of ``CrossLayerPooler(channel_strengths=True)``.
        y : None
            Ignored.

        Returns
        -------
        self : ChannelSelector
        """
        if self.block_size is None:
            raise ValueError(
                "ChannelSelector needs block_size, the dims d of one pooled block, "
                "to split the input into K blocks and K strength columns; got "
                "block_size=None. Pass block_size=pooler.n_components_."
            )
        # float32 first, so that float16 pooled vectors widen to float32 only.
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        n_features = X.shape[1]
        columns_per_channel = self.block_size + 1
        if n_features % columns_per_channel != 0:
            raise ValueError(
                f"X has n_features={n_features} columns, which is not a multiple "
                f"of block_size + 1 = {columns_per_channel}. ChannelSelector "
                "expects the output of CrossLayerPooler(channel_strengths=True): "
                "K blocks of d dims and K strength columns, K * (d + 1) in all. "
                "Set channel_strengths=True on the pooler and "
                "block_size=pooler.n_components_."
            )
        n_guidance = n_features // columns_per_channel
        if self.n_channels is not None and self.n_channels > n_guidance:
            raise ValueError(
                f"n_channels={self.n_channels} is more than the {n_guidance} "
                f"guidance channels of X ({n_features} columns with "
                f"block_size={self.block_size}); pass n_channels <= {n_guidance} "
                "or None to keep them all."
            )

        self.n_guidance_channels_ = n_guidance
        self.n_channels_ = n_guidance if self.n_channels is None else self.n_channels
        self.n_features_out_ = n_guidance * self.block_size
        logger.debug(
            "ChannelSelector fitted: keeps %d of %d channels of %d dims, %s mode",
            self.n_channels_,
            n_guidance,
            self.block_size,
            self.mode,
        )
        return self

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the pooled blocks (n, K * d) and the strengths (n, K) of X."""
        return X[:, : self.n_features_out_], X[:, self.n_features_out_ :]

    def block_mask(self, X: ArrayLike) -> np.ndarray:
        """Return the guidance channels kept for each row of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_images, n_features_in_)
            Output of ``CrossLayerPooler(channel_strengths=True)``.

        Returns
        -------
        ndarray of shape (n_images, n_guidance_channels_), bool
            True for the ``n_channels_`` channels of largest strength, for
            ``query_block_mask`` and ``database_block_mask`` of
            :class:`~skcrosslayer.search.ImageRetriever`.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        return self._block_mask(X)

    def _block_mask(self, X: np.ndarray) -> np.ndarray:
        _, strengths = self._split(X)
        if self.n_channels_ == self.n_guidance_channels_:
            return np.ones(strengths.shape, dtype=bool)
        return top_channel_mask(strengths, self.n_channels_)

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Zero the blocks of the channels each row does not keep.

        Parameters
        ----------
        X : array-like of shape (n_images, n_features_in_)
            Output of ``CrossLayerPooler(channel_strengths=True)``.

        Returns
        -------
        ndarray of shape (n_images, n_features_out_)
            The pooled blocks, with the blocks of dropped channels zero and
            the strength columns removed; same float dtype as ``X``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        blocks, _ = self._split(X)
        if self.n_channels_ == self.n_guidance_channels_:
            return blocks.copy()
        return _zero_dropped_blocks(blocks, self._block_mask(X))

    def fit_transform(self, X: ArrayLike, y: None = None) -> np.ndarray:
        """Fit, then return database vectors: complete in "query" mode.

        Parameters
        ----------
        X : array-like of shape (n_images, K * (d + 1))
            Output of ``CrossLayerPooler(channel_strengths=True)``.
        y : None
            Ignored.

        Returns
        -------
        ndarray of shape (n_images, n_features_out_)
            In "query" mode every block, with only the strength columns
            removed. In "symmetric" mode the same as ``transform(X)``.
        """
        self.fit(X)
        if self.mode == "symmetric":
            return self.transform(X)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        blocks, _ = self._split(X)
        return blocks.copy()

    def get_feature_names_out(self, input_features: ArrayLike | None = None):
        """Return the input names of the pooled columns, without the strengths.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input feature names, checked against ``feature_names_in_``.

        Returns
        -------
        ndarray of str of shape (n_features_out_,)
        """
        check_is_fitted(self)
        input_features = _check_feature_names_in(self, input_features)
        return np.asarray(input_features[: self.n_features_out_], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class SelectedChannelRetriever(ImageRetriever):
    """ImageRetriever that leaves the zero blocks of ChannelSelector out.

    :class:`ChannelSelector` zeroes the blocks of the channels it drops.
    Float inner products ignore zero blocks by themselves, but packed sign
    codes cannot: ``FeatureBinarizer`` packs a zero block to all-zero bits,
    which would count as -1 signs. This retriever derives the block masks
    from the codes, with :func:`nonzero_block_mask`, so that the pipeline
    ``[CrossLayerPooler, ChannelSelector, FeatureBinarizer,
    SelectedChannelRetriever]`` ranks by the selected blocks only:

    - ``kneighbors`` and ``score`` with ``metric="hamming"`` use the nonzero
      blocks of each query as ``query_block_mask``, unless one is passed.
    - ``fit`` in ``mode="symmetric"`` uses the nonzero blocks of each
      database item as ``database_block_mask``, unless one is passed.

    Parameters
    ----------
    metric, n_neighbors, block_size, mode, chunk_size, use_faiss
        As in :class:`~skcrosslayer.search.ImageRetriever`. ``block_size``
        must be the pooled block dims d, for codes packed with
        ``FeatureBinarizer(block_size=d)``.

    Notes
    -----
    A block whose d values are all <= 0 also packs to all-zero bits, so it is
    left out like a dropped one. For pooled blocks that means a guidance
    channel that never fired (its block is exactly zero, and leaving it out
    matches the float similarity), or, for a signed block after PCA, an event
    of probability about ``2 ** -d`` per block. In "query" mode database codes
    are never masked.

    Examples
    --------
    >>> import numpy as np
    >>> database = np.array([[0b11000000, 0b11000000]], dtype=np.uint8)
    >>> query = np.array([[0b11000000, 0b00000000]], dtype=np.uint8)
    >>> SelectedChannelRetriever("hamming", 1, block_size=2).fit(
    ...     database
    ... ).kneighbors(query)
    (array([[2]], dtype=int32), array([[0]]))
    """

    def _packed(self) -> bool:
        return self.metric == "hamming"

    def _nonzero_blocks(self, X: ArrayLike) -> np.ndarray:
        if self.block_size is None:
            raise ValueError(
                "SelectedChannelRetriever needs block_size, the dims d of one "
                "pooled block, to find the zero blocks; got block_size=None. Pass "
                "the block_size of ChannelSelector and FeatureBinarizer."
            )
        return nonzero_block_mask(X, self.block_size, packed=self._packed())

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike | None = None,
        *,
        database_block_mask: ArrayLike | None = None,
    ) -> SelectedChannelRetriever:
        """Store the database; in symmetric mode, with its nonzero blocks.

        Parameters
        ----------
        X : array-like of shape (n_database, n_features)
            Database vectors, or packed uint8 codes for ``metric="hamming"``.
        y : array-like of shape (n_database,), default=None
            Database labels, needed by :meth:`score`.
        database_block_mask : array-like of shape (n_database, n_blocks), bool, \
default=None
            Blocks kept by each database item, for ``mode="symmetric"``. None
            derives it from the nonzero blocks of ``X`` in that mode.

        Returns
        -------
        self : SelectedChannelRetriever
        """
        if self.mode == "symmetric" and database_block_mask is None:
            database_block_mask = self._nonzero_blocks(X)
        return super().fit(X, y, database_block_mask=database_block_mask)

    def kneighbors(
        self,
        X: ArrayLike,
        n_neighbors: int | None = None,
        return_distance: bool = True,
        *,
        query_block_mask: ArrayLike | None = None,
    ):
        """Find the most similar database items, over the nonzero query blocks.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)
            Query vectors, or packed codes for ``metric="hamming"``.
        n_neighbors : int or None, default=None
            Items per query. None uses the ``n_neighbors`` parameter.
        return_distance : bool, default=True
            Also return the similarities (higher is better).
        query_block_mask : array-like of shape (n_queries, n_blocks_), bool, \
default=None
            Blocks selected for each query. None selects the nonzero blocks
            of packed codes, and every block of float vectors, whose zero
            blocks add nothing.

        Returns
        -------
        similarities : ndarray of shape (n_queries, n_neighbors)
            Only returned when ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors)
        """
        check_is_fitted(self)
        if query_block_mask is None and self._packed():
            query_block_mask = self._nonzero_blocks(X)
        return super().kneighbors(
            X, n_neighbors, return_distance, query_block_mask=query_block_mask
        )

    def score(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        query_block_mask: ArrayLike | None = None,
    ) -> float:
        """Return the mean average precision, over the nonzero query blocks.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)
            Query vectors or codes.
        y : array-like of shape (n_queries,)
            Query labels; the positives of a query are the database items
            with its label.
        query_block_mask : array-like of shape (n_queries, n_blocks_), bool, \
default=None
            Blocks selected for each query. None derives them as in
            :meth:`kneighbors`.

        Returns
        -------
        float
            Mean trapezoid-rule average precision over the queries with a
            positive, as :meth:`ImageRetriever.score` computes it.
        """
        check_is_fitted(self)
        if query_block_mask is None and self._packed():
            query_block_mask = self._nonzero_blocks(X)
        return super().score(X, y, query_block_mask=query_block_mask)

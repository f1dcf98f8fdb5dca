"""Global pooling of one layer and PCA whitening: the retrieval baselines.

Cross-layer pooling is compared to single-layer descriptors that pool each
channel over space: average pooling, sum pooling (SPoC, A. Babenko and
V. Lempitsky, "Aggregating Deep Convolutional Features for Image Retrieval",
ICCV 2015), max pooling (MAC), the generalised mean (GeM, F. Radenovic,
G. Tolias and O. Chum, "Fine-tuning CNN Image Retrieval with No Human
Annotation", TPAMI 2018) and regional max pooling (R-MAC, G. Tolias, R. Sicre
and H. Jegou, "Particular Object Retrieval with Integral Max-pooling of CNN
Activations", ICLR 2016). In retrieval these descriptors are followed by PCA
whitening learned on a separate image set and by l2-normalisation, which
:class:`PCAWhitening` provides.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterator
from fractions import Fraction
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted, validate_data

from ._base import _BACKBONE_CONSTRAINTS, BackboneTransformer
from .backbones import list_layers
from .images import check_images
from .pooling import EPS

__all__ = [
    "GlobalPooler",
    "PCAWhitening",
    "global_pool",
    "rmac_pool",
    "rmac_regions",
]

logger = logging.getLogger(__name__)

# R-MAC: the target overlap of neighbouring regions, and the numbers of
# regions the longer side of a non-square map may get at the first level.
_RMAC_OVERLAP = Fraction(2, 5)
_RMAC_LONG_SIDE_COUNTS = range(2, 8)


# ---------------------------------------------------------------------------
# Pooling as pure tensor functions
# ---------------------------------------------------------------------------


def _check_activations(activations: torch.Tensor, function: str) -> None:
    if activations.ndim != 4 or activations.numel() == 0:
        raise ValueError(
            f"{function} expects a non-empty 4-D tensor (batch, channels, height, "
            f"width), got shape {tuple(activations.shape)}; pass layer outputs "
            "of shape (B, C, H, W), adding missing axes with unsqueeze"
        )


@validate_params(
    {
        "activations": [torch.Tensor],
        "method": [StrOptions({"avg", "sum", "max", "gem"})],
        "p": [Interval(Real, 0, None, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def global_pool(activations: torch.Tensor, method: str, p: float = 3.0) -> torch.Tensor:
    """Pool every channel over all spatial units.

    Parameters
    ----------
    activations : Tensor of shape (B, C, H, W)
        Layer activations.
    method : {"avg", "sum", "max", "gem"}
        ``"avg"`` is the mean over units, ``"sum"`` the sum (SPoC without its
        centre prior), ``"max"`` the maximum (MAC), and ``"gem"`` the
        generalised mean (mean_i x_i^p)^(1/p).
    p : float, default=3.0
        Exponent of GeM, > 0. ``p=1`` is the mean and GeM tends to the
        maximum as ``p`` grows.

    Returns
    -------
    Tensor of shape (B, C)
        Not normalised.

    Notes
    -----
    GeM is defined on nonnegative activations: values below 1e-12 (negative
    ones included) are raised to 1e-12 first. It is computed as
    m * (mean_i (x_i / m)^p)^(1/p) with m the channel maximum, which equals
    the plain formula but cannot overflow for large ``p``.
    """
    _check_activations(activations, "global_pool")

    # (B, C, H, W) -> (B, C, H * W)
    flat = activations.flatten(2)
    if method == "avg":
        return flat.mean(dim=2)
    if method == "sum":
        return flat.sum(dim=2)
    if method == "max":
        return flat.amax(dim=2)

    flat = flat.clamp(min=EPS)
    # (B, C, 1). Every ratio to it is in (0, 1], so x^p cannot overflow.
    peak = flat.amax(dim=2, keepdim=True)
    ratio_mean = (flat / peak).pow(p).mean(dim=2)
    return peak.squeeze(2) * ratio_mean.pow(1.0 / p)


def _region_starts(length: int, side: int, n_regions: int) -> list[int]:
    """Spread ``n_regions`` windows of ``side`` evenly over ``length`` units."""
    if n_regions == 1:
        return [0]
    # floor(i * (length - side) / (n_regions - 1)) in integer arithmetic, so
    # the last window always ends on the border.
    return [i * (length - side) // (n_regions - 1) for i in range(n_regions)]


def _rmac_extra_regions(height: int, width: int) -> int:
    """Return how many more regions the longer side gets than the shorter."""
    short, long = min(height, width), max(height, width)
    if short == long:
        return 0
    # With k squares of side `short` spread over the longer side, neighbours
    # overlap by 1 - (long - short) / ((k - 1) * short) of their side. Exact
    # fractions make ties (3 x 11: 1/3 and 7/15 both miss 2/5 by 1/15) go to
    # the fewest regions, where floating point would pick either side.
    overlap_errors = [
        abs(1 - Fraction(long - short, (count - 1) * short) - _RMAC_OVERLAP)
        for count in _RMAC_LONG_SIDE_COUNTS
    ]
    return overlap_errors.index(min(overlap_errors)) + 1


def _rmac_levels(
    height: int, width: int, n_levels: int
) -> Iterator[tuple[int, list[int], list[int]]]:
    """Yield ``(side, tops, lefts)`` for every non-empty R-MAC level."""
    extra = _rmac_extra_regions(height, width)
    extra_rows = extra if height > width else 0
    extra_columns = extra if width > height else 0
    short = min(height, width)
    for level in range(1, n_levels + 1):
        side = 2 * short // (level + 1)
        if side == 0:
            continue
        tops = _region_starts(height, side, level + extra_rows)
        lefts = _region_starts(width, side, level + extra_columns)
        yield side, tops, lefts


@validate_params(
    {
        "height": [Interval(Integral, 1, None, closed="left")],
        "width": [Interval(Integral, 1, None, closed="left")],
        "n_levels": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def rmac_regions(height: int, width: int, n_levels: int = 3) -> np.ndarray:
    """List the square regions R-MAC max-pools on a ``height x width`` map.

    Parameters
    ----------
    height, width : int
        Grid of the feature map, in units.
    n_levels : int, default=3
        Number L of scales.

    Returns
    -------
    ndarray of shape (n_regions, 4), int64
        One row ``(top, left, height, width)`` a region, in units of the map.
        Rows are ordered by level, then top, then left. The whole map is not
        added here; :func:`rmac_pool` adds it.

    Notes
    -----
    This is the region sampling of Tolias, Sicre and Jegou (ICLR 2016) as
    implemented in cnnimageretrieval-pytorch (Radenovic et al.). Let
    m = min(height, width) and M = max(height, width).

    - Level l = 1..L uses squares of side floor(2m / (l + 1)); a level whose
      side is 0 is skipped.
    - The shorter side gets l regions at level l and the longer side l + e.
      On a square map e = 0. Otherwise, e + 1 squares of side m spread over
      the longer side overlap their neighbours by 1 - (M - m) / (e m). The
      value of e in 1..6 that brings this overlap closest to 0.4 is used, and
      on a tie the smaller e wins.
    - On a side of n units, region i of k starts at floor(i (n - s) / (k - 1))
      for side s (at 0 when k = 1), so the first region touches one border and
      the last the other.

    Starts and overlaps are computed exactly here. That implementation works
    in floating point, so its regions differ on rare sizes. Where two values
    of e are equally close to 0.4 (3 x 11 maps, for example) it can pick
    either, and a start such as floor(7 * (61 / 7)) can round down to 60.

    Regions are not de-duplicated: on maps of a few units, rounding can list
    one region twice at a level, and it then counts twice in the sum.

    Examples
    --------
    >>> from skcrosslayer.baselines import rmac_regions
    >>> rmac_regions(3, 3, n_levels=2).tolist()
    [[0, 0, 3, 3], [0, 0, 2, 2], [0, 1, 2, 2], [1, 0, 2, 2], [1, 1, 2, 2]]
    """
    rows = [
        (top, left, side, side)
        for side, tops, lefts in _rmac_levels(height, width, n_levels)
        for top in tops
        for left in lefts
    ]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _l2_normalize(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    return vectors / (torch.linalg.vector_norm(vectors, dim=dim, keepdim=True) + EPS)


@validate_params(
    {
        "activations": [torch.Tensor],
        "n_levels": [Interval(Integral, 1, None, closed="left")],
        "full_map": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def rmac_pool(
    activations: torch.Tensor, n_levels: int = 3, *, full_map: bool = True
) -> torch.Tensor:
    """Pool activations into R-MAC vectors (regional maximum activations).

    Each region of :func:`rmac_regions` gives the per-channel maximum of the
    activations inside it (a MAC vector). The regional vectors are
    l2-normalised, summed and the sum is l2-normalised.

    Parameters
    ----------
    activations : Tensor of shape (B, C, H, W)
        Layer activations.
    n_levels : int, default=3
        Number L of region scales.
    full_map : bool, default=True
        Add the MAC vector of the whole map as one more region, as the
        implementation of Radenovic, Tolias and Chum (cnnimageretrieval-pytorch)
        does. On a square map the first level already is the whole map, which
        then counts twice.

    Returns
    -------
    Tensor of shape (B, C)
        Unit l2 norm, or all zero where every activation is zero.

    Notes
    -----
    Tolias, Sicre and Jegou PCA-whiten each regional vector before the sum.
    Here whitening is left to a later step on the summed vector (see
    :class:`PCAWhitening`), as in the implementation of Radenovic et al.

    The maximum over a region is taken in two steps, over its rows and then
    over its columns, so a level of r x c regions costs r + c reductions
    instead of r * c.
    """
    _check_activations(activations, "rmac_pool")
    height, width = activations.shape[2:]

    regional = []
    if full_map:
        # (B, C, 1)
        regional.append(activations.amax(dim=(2, 3)).unsqueeze(2))
    for side, tops, lefts in _rmac_levels(height, width, n_levels):
        # (B, C, n_tops, W): maximum over the rows of every region row range
        row_max = torch.stack(
            [activations[:, :, top : top + side, :].amax(dim=2) for top in tops],
            dim=2,
        )
        # (B, C, n_tops, n_lefts) -> (B, C, n_tops * n_lefts), top-major
        region_max = torch.stack(
            [row_max[..., left : left + side].amax(dim=3) for left in lefts], dim=3
        )
        regional.append(region_max.flatten(2))

    # (B, C, n_regions)
    regional = _l2_normalize(torch.cat(regional, dim=2), dim=1)
    return _l2_normalize(regional.sum(dim=2), dim=1)


# ---------------------------------------------------------------------------
# GlobalPooler
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _layer_channels(backbone: str) -> dict[str, int]:
    """Return the channel count of every layer, which weights do not change."""
    return {layer.name: layer.n_channels for layer in list_layers(backbone)}


class GlobalPooler(BackboneTransformer):
    """Pool every channel of one backbone layer over space.

    These are the single-layer baselines of cross-layer pooling, on the same
    backbones, layers and image handling as :class:`CrossLayerPooler`. The
    methods are global average pooling (``"avg"``), sum pooling (``"sum"``,
    SPoC), max pooling (``"max"``, MAC), the generalised mean (``"gem"``,
    GeM) and regional max pooling (``"rmac"``, R-MAC). The average of the
    EfficientNet head ``conv_head`` is the network's own penultimate feature.
    For retrieval, follow the pooler with :class:`PCAWhitening` fitted on a
    separate image set.

    Parameters
    ----------
    backbone, weights, image_size, max_size, size_multiple
        As in :class:`CrossLayerPooler`.
    batch_size, device, n_workers, decode_on_device, verbose
        As in :class:`CrossLayerPooler`.
    layer : str or None, default=None
        Layer to pool, as listed by :func:`skcrosslayer.list_layers`. ``None``
        is the guidance layer of the backbone's published pair (``conv_head``
        for EfficientNet-Lite, ``conv5`` for AlexNet).
    method : {"avg", "sum", "max", "gem", "rmac"}, default="avg"
        Pooling, see :func:`global_pool` and :func:`rmac_pool`.
    p : float, default=3.0
        Exponent of GeM, > 0; used by ``method="gem"`` only.
    n_levels : int, default=3
        Number of R-MAC region scales; used by ``method="rmac"`` only.
    normalize : bool, default=True
        l2-normalise each output vector. R-MAC vectors are normalised by
        their definition whatever this is set to.
    memory : str, path, joblib.Memory or None, default=None
        Folder of an on-disk cache of layer activations, keyed by image
        content, backbone, weights, layers and resizing. With it, refitting
        with other pooling parameters (as a grid search does) runs the
        backbone only on images not seen before. Entries are not evicted.
    on_error : {"raise", "warn", "skip"}, default="raise"
        As in :class:`CrossLayerPooler`: images that cannot be loaded raise,
        or give all-zero rows reported by :meth:`transform_with_mask`.

    Attributes
    ----------
    layer_ : str
        The resolved layer name.
    n_features_out_ : int
        Output dims: the number of channels of ``layer_``.

    Notes
    -----
    Sum and average pooling differ by the factor H * W, so with
    ``normalize=True`` they give the same vectors. The Gaussian centre prior
    of SPoC (Babenko and Lempitsky, ICCV 2015) is not applied.

    Examples
    --------
    >>> import numpy as np
    >>> from skcrosslayer import GlobalPooler
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), np.uint8)
    >>> pooler = GlobalPooler("alexnet", weights=None, method="rmac",
    ...                       image_size=64, n_workers=0)
    >>> pooler.fit_transform(images).shape
    (4, 256)
    """

    _parameter_constraints: dict = {
        **_BACKBONE_CONSTRAINTS,
        "layer": [str, None],
        "method": [StrOptions({"avg", "sum", "max", "gem", "rmac"})],
        "p": [Interval(Real, 0, None, closed="neither")],
        "n_levels": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean"],
    }

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights="DEFAULT",
        layer: str | None = None,
        *,
        method: str = "avg",
        p: float = 3.0,
        n_levels: int = 3,
        normalize: bool = True,
        image_size: int | None = None,
        max_size: int | None = None,
        size_multiple: int | None = None,
        batch_size: int = 32,
        device: str = "auto",
        n_workers: int = 2,
        decode_on_device: bool = False,
        on_error: str = "raise",
        memory=None,
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.method = method
        self.p = p
        self.n_levels = n_levels
        self.normalize = normalize
        self.image_size = image_size
        self.max_size = max_size
        self.size_multiple = size_multiple
        self.batch_size = batch_size
        self.device = device
        self.n_workers = n_workers
        self.decode_on_device = decode_on_device
        self.on_error = on_error
        self.memory = memory
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the images and resolve the layer, since pooling learns nothing.

        Parameters
        ----------
        X : sequence of images
            File paths, PIL images or HxWx3 uint8 arrays, or a 4-D uint8 array.
            Only checked, not read by the network.
        y : ignored

        Returns
        -------
        self : GlobalPooler
        """
        check_images(X)
        self._resize_policy()
        name = self.layer or self._backbone_spec().default_pair[1]
        spec = self._resolve_layer(name)
        if self.method == "gem" and not spec.nonnegative:
            warnings.warn(
                f"layer {spec.name!r} of {self.backbone} has no ReLU, so its "
                "activations can be negative, but GeM raises every activation "
                "below 1e-12 to 1e-12 first; use a layer with nonnegative "
                "outputs or another method",
                UserWarning,
                stacklevel=2,
            )

        self.layer_ = spec.name
        self.n_features_out_ = _layer_channels(self.backbone)[spec.name]
        logger.info(
            "GlobalPooler: %s pooling of %s %s, %d dims",
            self.method,
            self.backbone,
            self.layer_,
            self.n_features_out_,
        )
        return self

    def _pool(self, activations: torch.Tensor) -> torch.Tensor:
        if self.method == "rmac":
            return rmac_pool(activations, self.n_levels)
        vectors = global_pool(activations, self.method, self.p)
        if self.normalize:
            vectors = _l2_normalize(vectors, dim=1)
        return vectors

    def transform_with_mask(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Return the pooled vectors of ``X`` and a mask of the loaded images."""
        check_is_fitted(self)
        spec = self._resolve_layer(self.layer_)
        n_images, batches = self._iter_layer_outputs(X, [spec], description="pool")
        output = np.zeros((n_images, self.n_features_out_), dtype=np.float32)
        for indices, (activations,) in batches:
            with torch.inference_mode():
                vectors = self._pool(activations)
            output[indices] = vectors.cpu().numpy()
        batches.report(self.on_error, type(self).__name__)
        return output, batches.valid_mask()

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Return names ``{layer}_{channel}``, e.g. ``conv5_0``."""
        check_is_fitted(self)
        return np.asarray(
            [f"{self.layer_}_{c}" for c in range(self.n_features_out_)], dtype=object
        )


# ---------------------------------------------------------------------------
# PCAWhitening
# ---------------------------------------------------------------------------


def _principal_axes(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the mean, the variances and the principal axes of the rows of X.

    Variances are sorted in decreasing order, and ``axes[k]`` is the unit axis
    of variance ``variances[k]`` with its largest-magnitude entry positive.
    """
    n_samples, n_features = X.shape
    mean = X.mean(axis=0)
    centered = X - mean
    if n_samples >= n_features:
        # (d, d) covariance: cheaper than an SVD of the (n, d) data for n >= d.
        covariance = centered.T @ centered / (n_samples - 1)
        variances, eigenvectors = np.linalg.eigh(covariance)
        variances = np.clip(variances[::-1], 0.0, None)
        axes = eigenvectors[:, ::-1].T
    else:
        _, singular_values, axes = np.linalg.svd(centered, full_matrices=False)
        variances = singular_values**2 / (n_samples - 1)

    # The sign of an eigenvector is arbitrary, so fix it for refits to agree.
    largest = np.argmax(np.abs(axes), axis=1)
    signs = np.sign(axes[np.arange(len(axes)), largest])
    return mean, variances, axes * signs[:, None]


class PCAWhitening(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Project descriptors on principal axes, whiten them and l2-normalise.

    Learn the mean and the principal axes of descriptors on one set, not the
    database that is later searched. Then map any descriptor x to
    D^(-power/2) U^T (x - mean) and l2-normalise it, where U contains the
    leading axes and D their variances. This is the post-processing
    applied to SPoC, MAC and R-MAC vectors in retrieval (Babenko and
    Lempitsky, ICCV 2015; Radenovic, Tolias and Chum, TPAMI 2018).

    Parameters
    ----------
    n_components : int or None, default=None
        Number of principal axes to keep. ``None`` keeps every axis of
        nonzero variance, i.e. the numerical rank of the centred training
        data: at most ``min(n_samples - 1, n_features)``.
    whiten : bool, default=True
        Scale each component by its variance to the power ``-power / 2``.
        ``False`` only centres, rotates and truncates (plain PCA).
    power : float, default=1.0
        Whitening strength in [0, 1], used when ``whiten=True``. 1 gives
        every component unit variance, 0 is plain PCA, and values in between
        shrink the whitening so that low-variance components are amplified
        less.
    normalize : bool, default=True
        l2-normalise every output vector.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features_in_,)
        Mean of the training vectors.
    components_ : ndarray of shape (n_components_, n_features_in_)
        Principal axes, by decreasing variance, each with its
        largest-magnitude entry positive.
    explained_variance_ : ndarray of shape (n_components_,)
        Variance of the training vectors along each axis (denominator
        n_samples - 1).
    explained_variance_ratio_ : ndarray of shape (n_components_,)
        Fraction of the total variance along each axis.
    scale_ : ndarray of shape (n_components_,)
        Factor applied to each component: ``explained_variance_ **
        (-power / 2)``, or ones when ``whiten=False``.
    n_components_ : int
        Number of components kept.
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names of ``X``, when it had string column names.

    Notes
    -----
    Axes whose variance is at most max_variance * max(n_samples, n_features)
    * 2.2e-16 (float64 machine epsilon) count as zero-variance: whitening
    them would divide by rounding noise, so they are never kept. The fit
    works in float64 and ``transform`` returns the dtype of its input
    (float32 or float64).

    Examples
    --------
    >>> import numpy as np
    >>> from skcrosslayer.baselines import PCAWhitening
    >>> train = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> whitening = PCAWhitening().fit(train)
    >>> whitening.explained_variance_.round(4).tolist()
    [2.6667, 0.6667]
    >>> whitening.transform([[1.0, 1.0]]).round(4).tolist()
    [[0.4472, 0.8944]]
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "whiten": ["boolean"],
        "power": [Interval(Real, 0, 1, closed="both")],
        "normalize": ["boolean"],
    }

    def __init__(
        self,
        n_components: int | None = None,
        *,
        whiten: bool = True,
        power: float = 1.0,
        normalize: bool = True,
    ):
        self.n_components = n_components
        self.whiten = whiten
        self.power = power
        self.normalize = normalize

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the mean and the principal axes of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training descriptors, at least 2.
        y : ignored

        Returns
        -------
        self : PCAWhitening
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        n_samples, n_features = X.shape
        mean, variances, axes = _principal_axes(X.astype(np.float64))

        tolerance = variances[0] * max(n_samples, n_features) * np.finfo(float).eps
        rank = int(np.sum(variances > tolerance))
        if rank == 0:
            raise ValueError(
                f"the {n_samples} training vectors of PCAWhitening are all equal, "
                "so there is no direction to project on; fit on vectors that "
                "differ"
            )
        n_components = rank if self.n_components is None else self.n_components
        if n_components > rank:
            raise ValueError(
                f"n_components={self.n_components} of PCAWhitening exceeds the "
                f"{rank} directions of nonzero variance in the {n_samples} "
                f"training vectors of {n_features} features; set n_components "
                f"to at most {rank}, or None, or fit on more vectors"
            )

        self.mean_ = mean
        self.components_ = axes[:n_components]
        self.explained_variance_ = variances[:n_components]
        self.explained_variance_ratio_ = self.explained_variance_ / variances.sum()
        if self.whiten:
            self.scale_ = self.explained_variance_ ** (-self.power / 2)
        else:
            self.scale_ = np.ones(n_components)
        self.n_components_ = n_components
        self._n_features_out = n_components
        logger.info(
            "Fitted PCAWhitening on %d vectors: %d -> %d dims",
            n_samples,
            n_features,
            n_components,
        )
        return self

    def transform(self, X) -> np.ndarray:
        """Centre, project, whiten and l2-normalise ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of shape (n_samples, n_components_)
            Same dtype as ``X`` (float32 or float64; others become float64).
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        dtype = X.dtype
        # (d, k): projection and whitening in one matrix
        projection = (self.components_.T * self.scale_).astype(dtype, copy=False)
        output = (X - self.mean_.astype(dtype, copy=False)) @ projection
        if self.normalize:
            norms = np.linalg.norm(output, axis=1, keepdims=True)
            output = output / (norms + EPS)
        return output

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

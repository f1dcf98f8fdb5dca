"""Parameters and plumbing shared by the transformers that run a backbone."""

from __future__ import annotations

import logging
import os
import warnings
from collections import defaultdict
from numbers import Integral

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from . import __version__
from ._cache import ActivationCache, image_key
from ._extraction import iter_activations, resolve_device
from .backbones import (
    BACKBONES,
    LayerSpec,
    _weights_key,
    get_backbone_spec,
    list_layers,
    load_network,
    resolve_layer,
)
from .exceptions import (
    GuidanceSignWarning,
    ImageLoadWarning,
    LayerError,
    VersionMismatchWarning,
)
from .images import MIN_SIDE, ResizePolicy, check_images

logger = logging.getLogger(__name__)

_BACKBONE_CONSTRAINTS = {
    "backbone": [StrOptions(set(BACKBONES))],
    "weights": [str, os.PathLike, None],
    "image_size": [Interval(Integral, 16, None, closed="left"), None],
    "max_size": [Interval(Integral, 16, None, closed="left"), None],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "device": [str],
    "n_workers": [Interval(Integral, 0, None, closed="left")],
    "verbose": ["verbose"],
    "on_error": [StrOptions({"raise", "warn", "skip"})],
    "memory": [str, os.PathLike, joblib.Memory, None],
    "precision": [StrOptions({"float32", "bfloat16", "float16"})],
    "size_multiple": [Interval(Integral, 1, None, closed="left"), None],
    "decode_on_device": ["boolean"],
}


class BackboneRun:
    """Iterable of ``(indices, layer_outputs)`` batches of one pass over images.

    ``failures`` fills with ``(index, message)`` for images that could not be
    loaded (only with ``on_error`` other than ``"raise"``) while iterating.
    """

    def __init__(self, n_images: int, batches, failures: list):
        self.n_images = n_images
        self.batches = batches
        self.failures = failures

    def __iter__(self):
        return iter(self.batches)

    def valid_mask(self) -> np.ndarray:
        """Return a boolean mask of the images that were loaded, in input order."""
        mask = np.ones(self.n_images, dtype=bool)
        mask[[index for index, _ in self.failures]] = False
        return mask

    def report(self, on_error: str, owner: str) -> None:
        """Warn (``on_error="warn"``) or log the images that failed to load."""
        if not self.failures:
            return
        message = (
            f"{owner}: {len(self.failures)} of {self.n_images} images could not "
            f"be loaded and give all-zero rows, for example: {self.failures[0][1]}"
        )
        logger.info("%s", message)
        for index, error in self.failures:
            logger.debug("image %d failed: %s", index, error)
        if on_error == "warn":
            warnings.warn(message, ImageLoadWarning, stacklevel=4)


class BackboneTransformer(TransformerMixin, BaseEstimator):
    """Base class: a transformer of images that reads layers of a backbone.

    Subclasses declare ``_parameter_constraints`` including
    ``_BACKBONE_CONSTRAINTS`` and call :meth:`_iter_layer_outputs`. The network
    is never stored on the estimator: it is rebuilt from ``backbone`` and
    ``weights`` (and cached per process), so pickles stay small and hold no
    device tensors.
    """

    def _backbone_spec(self):
        return get_backbone_spec(self.backbone)

    def _resize_policy(self) -> ResizePolicy:
        spec = self._backbone_spec()
        if self.image_size is not None and self.max_size is not None:
            raise ValueError(
                f"image_size={self.image_size} and max_size={self.max_size} are "
                "both set; set image_size=None to keep the aspect ratio with the "
                "longer side capped at max_size, or max_size=None to warp images "
                "to image_size x image_size"
            )
        size_multiple = getattr(self, "size_multiple", None)
        if size_multiple is not None and self.max_size is None:
            raise ValueError(
                f"size_multiple={size_multiple} only applies when the aspect "
                "ratio is kept; set max_size (with image_size=None), or "
                "size_multiple=None"
            )
        if size_multiple is not None and size_multiple > self.max_size:
            raise ValueError(
                f"size_multiple={size_multiple} is larger than "
                f"max_size={self.max_size}, so no rounded side fits under "
                "max_size; use a small multiple such as 32"
            )
        image_size = self.image_size
        if image_size is None and self.max_size is None:
            image_size = spec.image_size
        return ResizePolicy(
            image_size,
            self.max_size,
            spec.interpolation,
            size_multiple,
        )

    def _resolve_layer(self, name: str) -> LayerSpec:
        if not isinstance(name, str):
            raise LayerError(
                f"layer names must be strings, got {name!r}; run "
                f"`skcrosslayer layers {self.backbone}` to list them"
            )
        return resolve_layer(self.backbone, name)

    def _check_guidance_sign(self, spec: LayerSpec) -> None:
        if spec.nonnegative:
            return
        candidates = [
            layer.name for layer in list_layers(self.backbone) if layer.nonnegative
        ]
        warnings.warn(
            f"guidance layer {spec.name!r} of {self.backbone} has no ReLU, so its "
            "activations can be negative and weight local features with both "
            f"signs; layers with nonnegative outputs: {', '.join(candidates)}",
            GuidanceSignWarning,
            stacklevel=3,
        )

    def _iter_layer_outputs(self, X, specs, description="images"):
        """Return ``(n_images, run)``: a :class:`BackboneRun` over ``X``.

        With a ``memory`` parameter set, activations are read from and written
        to the cache, and the backbone only runs on images not cached yet.
        """
        items = check_images(X)
        failures = []
        memory = getattr(self, "memory", None)
        if memory is None:
            batches = self._run_backbone(items, specs, description, failures)
        else:
            batches = self._run_cached(items, specs, description, failures, memory)
        return len(items), BackboneRun(len(items), batches, failures)

    def _run_backbone(self, items, specs, description, failures):
        return iter_activations(
            load_network(self.backbone, self.weights),
            self._backbone_spec(),
            specs,
            items,
            self._resize_policy(),
            batch_size=self.batch_size,
            n_workers=self.n_workers,
            device=resolve_device(self.device),
            verbose=self.verbose,
            description=description,
            on_error=getattr(self, "on_error", "raise"),
            failures=failures,
            precision=getattr(self, "precision", "float32"),
            decode_on_device=getattr(self, "decode_on_device", False),
        )

    def _run_cached(self, items, specs, description, failures, memory):
        policy = self._resize_policy()
        cache = ActivationCache(
            memory,
            {
                "backbone": self.backbone,
                "weights": list(map(str, _weights_key(self.weights))),
                "layers": [spec.name for spec in specs],
                "resize": [
                    policy.image_size,
                    policy.max_size,
                    policy.interpolation,
                    policy.size_multiple,
                ],
                "min_side": MIN_SIDE,
                "decode_on_device": getattr(self, "decode_on_device", False),
                "precision": getattr(self, "precision", "float32"),
            },
        )
        keys = [image_key(item) for item in items]
        cached = {}
        for i, key in enumerate(keys):
            arrays = cache.load(key, len(specs))
            if arrays is not None:
                cached[i] = arrays
        missing = np.asarray([i for i in range(len(items)) if i not in cached])
        logger.info(
            "Activation cache %s: %d of %d images cached",
            cache.folder,
            len(cached),
            len(items),
        )

        if len(missing):
            sub_failures = []
            computed = self._run_backbone(
                [items[i] for i in missing], specs, description, sub_failures
            )
            for sub_indices, outputs in computed:
                indices = missing[sub_indices]
                for row, index in enumerate(indices):
                    cache.store(keys[index], [o[row].cpu().numpy() for o in outputs])
                yield indices, outputs
            failures.extend((missing[i], message) for i, message in sub_failures)

        # Cached activations are batched by shape, as images are by size.
        device = resolve_device(self.device)
        by_shape = defaultdict(list)
        for index, arrays in cached.items():
            by_shape[tuple(a.shape for a in arrays)].append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                outputs = [
                    torch.from_numpy(np.stack([cached[i][layer] for i in batch])).to(
                        device
                    )
                    for layer in range(len(specs))
                ]
                yield np.asarray(batch), outputs

    def transform(self, X) -> np.ndarray:
        """Return the feature vectors of ``X``.

        Parameters
        ----------
        X : sequence of images
            File paths, PIL images or HxWx3 uint8 arrays, or a 4-D uint8 array.

        Returns
        -------
        ndarray of shape (n_images, n_features_out_)
            Rows in input order; all-zero rows for images that could not be
            loaded (``on_error`` other than ``"raise"``).
        """
        return self.transform_with_mask(X)[0]

    def __getstate__(self):
        state = super().__getstate__()
        state["_skcrosslayer_version"] = __version__
        return state

    def __setstate__(self, state):
        version = state.pop("_skcrosslayer_version", None)
        if version is not None and version != __version__:
            warnings.warn(
                f"{type(self).__name__} was saved with skcrosslayer {version} and "
                f"is loaded with {__version__}; results may differ. Refit it with "
                "this version to be safe.",
                VersionMismatchWarning,
                stacklevel=2,
            )
        super().__setstate__(state)

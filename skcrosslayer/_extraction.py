"""Running a backbone up to the layers a transformer needs.

Forward hooks capture the requested layer outputs; once the last of them has
been produced the forward pass is stopped, so no work is spent on later
layers (the fully-connected classifier in particular).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .backbones import BackboneSpec, LayerSpec
from .images import ResizePolicy, iter_image_batches

logger = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised from a hook once every requested layer has been captured."""


def resolve_device(device: str) -> torch.device:
    """Map ``"auto"`` to CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def capture_layers(
    network: nn.Module, specs: Sequence[LayerSpec], images: torch.Tensor
) -> list[torch.Tensor]:
    """Run ``network`` on ``images`` and return the outputs of ``specs``.

    Each output is a new tensor (the hook applies the layer's activation out of
    place), so in-place operations that follow in the network cannot change it.
    """
    captured: dict[str, torch.Tensor] = {}

    def make_hook(spec: LayerSpec):
        def hook(module, inputs, output):
            if spec.activation == "relu":
                captured[spec.name] = torch.relu(output)
            else:
                captured[spec.name] = output.clone()
            if len(captured) == len(specs):
                raise _StopForward

        return hook

    handles = [
        network.get_submodule(spec.module).register_forward_hook(make_hook(spec))
        for spec in specs
    ]
    try:
        network(images)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [s.name for s in specs if s.name not in captured]
    if missing:
        raise RuntimeError(f"layers {missing} were not reached in the forward pass")
    return [captured[spec.name] for spec in specs]


_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _autocast(device: torch.device, precision: str):
    """Return an autocast context for ``precision``, or a no-op for float32."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


def normalize_images(
    images: torch.Tensor, backbone: BackboneSpec, device: torch.device
) -> torch.Tensor:
    """Turn a uint8 batch ``(B, 3, H, W)`` into the network's float input."""
    images = images.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(backbone.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, device=device).view(1, 3, 1, 1)
    return ((images - mean) / std).contiguous(memory_format=torch.channels_last)


def iter_activations(
    network: nn.Module,
    backbone: BackboneSpec,
    specs: Sequence[LayerSpec],
    items: Sequence,
    policy: ResizePolicy,
    *,
    batch_size: int,
    n_workers: int,
    device: torch.device,
    verbose: int = 0,
    description: str = "images",
    on_error: str = "raise",
    failures: list | None = None,
    precision: str = "float32",
    decode_on_device: bool = False,
) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
    """Yield ``(indices, layer_outputs)`` for batches of ``items``.

    The network is moved to ``device`` and put in eval mode; the caller's mode
    is not restored because networks are shared, inference-only copies.
    Images that cannot be loaded are handled as in :func:`iter_image_batches`;
    ``decode_on_device`` decodes JPEG files on ``device`` as described there.
    """
    batches = iter_image_batches(
        items,
        policy,
        batch_size=batch_size,
        n_workers=n_workers,
        pin_memory=device.type == "cuda",
        on_error=on_error,
        failures=failures,
        decode_device=device if decode_on_device else None,
    )
    # Taking the first batch starts the decoding workers, so that they fork
    # before this call initialises CUDA by moving the network.
    first = next(batches, None)
    network.eval()
    network.to(device)
    if first is None:
        return
    with tqdm(
        total=len(items), desc=description, unit="img", disable=verbose <= 0
    ) as progress:
        for indices, images in itertools.chain([first], batches):
            with torch.inference_mode(), _autocast(device, precision):
                inputs = normalize_images(images, backbone, device)
                outputs = capture_layers(network, specs, inputs)
            if precision != "float32":
                # Pooling and normalisation always run in float32.
                outputs = [output.float() for output in outputs]
            yield indices, outputs
            progress.update(len(indices))

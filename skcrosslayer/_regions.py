"""Region grid geometry and the backbone parts that compute region features.

The augmented convolutional layer treats a grid of image regions as spatial
units. :func:`region_grid` and :class:`_Geometry` place the regions, and
:class:`_RegionNetwork` turns them into local features and fully-connected
guidance with the layers of a pretrained backbone.

Geometry (defaults): the image is warped to 512 x 512 px, regions of 128 x 128
px start every 32 px, which gives a 13 x 13 grid of 169 regions. Each region is
warped to ``region_input_size`` px before the network. The fully-convolutional
path runs the network's convolutional trunk once on the image enlarged by
``region_input_size / region_size`` and reads every region from a window of
the shared feature map. It reads the same regions at the same scale as the
per-region path when region starts fall on whole cells of the trunk's 32 px
output grid, which the default ``region_input_size`` guarantees. The two paths
then differ only in what the convolutions read beyond a region's border.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .exceptions import BackboneError

__all__ = ["region_grid"]

# Every backbone in BACKBONES downsamples its input by 32 in its last
# convolutional stage, so one cell of the trunk's output covers 32 input px.
_OUTPUT_STRIDE = 32

# Backbones whose first fully-connected layer (fc6) gives the local features.
_FC_BACKBONES = {"alexnet", "vgg16", "vgg19"}


# ---------------------------------------------------------------------------
# Region geometry
# ---------------------------------------------------------------------------


def region_grid(image_size: int, region_size: int, region_stride: int) -> np.ndarray:
    """Return the top-left corners of the square regions of a square image.

    Parameters
    ----------
    image_size : int
        Side of the (warped) image in pixels.
    region_size : int
        Side of a region in pixels, at most ``image_size``.
    region_stride : int
        Distance in pixels between the starts of neighbouring regions.

    Returns
    -------
    ndarray of shape (n_rows * n_rows, 2)
        ``(top, left)`` in pixels, row-major, with
        ``n_rows = (image_size - region_size) // region_stride + 1``. When
        ``image_size - region_size`` is not a multiple of ``region_stride``,
        the last ``(image_size - region_size) % region_stride`` pixel rows and
        columns are in no region.

    Examples
    --------
    >>> region_grid(128, 64, 32)[:4].tolist()
    [[0, 0], [0, 32], [0, 64], [32, 0]]
    """
    if region_size > image_size:
        raise ValueError(
            f"region_size={region_size} is larger than image_size={image_size}; "
            "use a region_size of at most image_size"
        )
    starts = np.arange(0, image_size - region_size + 1, region_stride)
    tops, lefts = np.meshgrid(starts, starts, indexing="ij")
    return np.stack([tops.ravel(), lefts.ravel()], axis=1)


@dataclass(frozen=True)
class _Geometry:
    """Region grid and the input sizes of the network, in pixels."""

    image_size: int
    region_size: int
    region_stride: int
    region_input_size: int

    @property
    def n_rows(self) -> int:
        return (self.image_size - self.region_size) // self.region_stride + 1

    @property
    def n_regions(self) -> int:
        return self.n_rows**2

    @property
    def enlarged_size(self) -> int:
        """Side of the enlarged image of the dense path, rounded down."""
        return self.image_size * self.region_input_size // self.region_size

    def cell_stride(self) -> int | None:
        """Region stride in trunk cells on the enlarged image, None if fractional."""
        pixels = self.region_stride * self.region_input_size
        cell = self.region_size * _OUTPUT_STRIDE
        if pixels % cell or (self.image_size * self.region_input_size) % (
            self.region_size
        ):
            return None
        return pixels // cell


def _input_size_unit(image_size: int, region_size: int, region_stride: int) -> int:
    """Return the step of the region input sizes that the dense path supports.

    A region input size r qualifies when ``region_stride * r / region_size`` is
    a multiple of the trunk's output stride (region starts fall on whole cells)
    and ``image_size * r / region_size`` is a whole number of pixels.
    """
    cell = region_size * _OUTPUT_STRIDE
    starts_on_cells = cell // math.gcd(region_stride, cell)
    whole_pixels = region_size // math.gcd(image_size, region_size)
    return math.lcm(starts_on_cells, whole_pixels)


def _default_input_size(
    native: int, image_size: int, region_size: int, region_stride: int
) -> int:
    """Return the supported region input size nearest to the native input size."""
    unit = _input_size_unit(image_size, region_size, region_stride)
    return unit * max(1, math.floor(native / unit + 0.5))


# ---------------------------------------------------------------------------
# Backbone parts: trunk, region features, fully-connected guidance
# ---------------------------------------------------------------------------


def _resize(images: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Warp a float batch ``(B, 3, H, W)`` to ``(B, 3, size, size)``."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode=mode, align_corners=False, antialias=True
    )


class _RegionNetwork:
    """The parts of a backbone that compute regional features.

    AlexNet and VGG: the convolutional trunk is ``features``, a region's
    feature map goes through the network's adaptive average pooling and fc6
    with its ReLU, and the fully-connected guidance is fc7 with its ReLU.
    ResNet-50 and EfficientNet-Lite have no hidden fully-connected layer: a
    region's feature is the average of its last feature map (``layer4`` after
    its ReLU, ``conv_head`` after its ReLU6), and the fully-connected guidance
    is the ReLU of the ImageNet classifier's logits.
    """

    def __init__(self, backbone: str, network: nn.Module):
        self.backbone = backbone
        self.network = network
        self.has_fc6 = backbone in _FC_BACKBONES
        if self.has_fc6:
            linears = [m for m in network.classifier if isinstance(m, nn.Linear)]
            self.fc6, self.fc7 = linears[0], linears[1]
            self.pooled_side = network.avgpool.output_size[0]
            self.local_layer = "fc6"
            self.fc_guidance_layer = "fc7"
        elif hasattr(network, "forward_features"):
            self.classifier = network.classifier
            self.local_layer = "conv_head (region average)"
            self.fc_guidance_layer = "classifier (ReLU of the logits)"
        elif hasattr(network, "layer4"):
            self.classifier = network.fc
            self.local_layer = "layer4 (region average)"
            self.fc_guidance_layer = "fc (ReLU of the logits)"
        else:
            raise BackboneError(
                f"backbone {backbone!r} has no known trunk and head for regional "
                "features; use alexnet, vgg16, vgg19, resnet50 or efficientnet_lite*"
            )

    @property
    def n_local_features(self) -> int:
        if self.has_fc6:
            return self.fc6.out_features
        return self.classifier.in_features

    @property
    def n_fc_guidance_channels(self) -> int:
        if self.has_fc6:
            return self.fc7.out_features
        return self.classifier.out_features

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        """Return the last convolutional feature map ``(B, C, H, W)``."""
        network = self.network
        if self.has_fc6:
            return network.features(images)
        if hasattr(network, "forward_features"):
            return network.forward_features(images)
        x = network.maxpool(network.relu(network.bn1(network.conv1(images))))
        return network.layer4(network.layer3(network.layer2(network.layer1(x))))

    def window_side(self, region_input_size: int, device: torch.device) -> int:
        """Return the side, in cells, of the trunk's map of one region."""
        probe = torch.zeros(1, 3, region_input_size, region_input_size, device=device)
        try:
            side = self.trunk(probe).shape[-1]
        except RuntimeError as exc:
            raise ValueError(
                f"region_input_size={region_input_size} is too small for "
                f"{self.backbone}: {exc}; use a larger region_input_size"
            ) from exc
        return side

    def region_features(self, maps: torch.Tensor) -> torch.Tensor:
        """Turn the maps ``(R, C, w, w)`` of R separate regions into ``(R, D)``."""
        if not self.has_fc6:
            return maps.mean(dim=(2, 3))
        pooled = torch.flatten(self.network.avgpool(maps), 1)
        return torch.relu(self.fc6(pooled))

    def dense_region_features(
        self, maps: torch.Tensor, window: int, cell_stride: int, n_rows: int
    ) -> torch.Tensor:
        """Read the features of an ``n_rows`` x ``n_rows`` grid of windows.

        Window ``(i, j)`` covers cells ``[i * s, i * s + window)`` of the map
        ``(B, C, M, M)`` in both directions, with ``s = cell_stride``.

        Returns
        -------
        Tensor of shape (B, n_rows * n_rows, D)
            Regions in row-major order.
        """
        needed = (n_rows - 1) * cell_stride + window
        if maps.shape[-1] < needed:
            raise RuntimeError(
                f"the trunk map of the enlarged image has {maps.shape[-1]} cells "
                f"per side, fewer than the {needed} that {n_rows} regions need"
            )
        if not self.has_fc6:
            # (B, C, n', n'), the mean of each window
            features = F.avg_pool2d(maps, window, stride=cell_stride)
        elif window - self.pooled_side in (0, 1):
            features = self._fc6_as_convolution(maps, window, cell_stride)
        else:
            features = self._fc6_on_windows(maps, window, cell_stride, n_rows)
        # (B, D, n', n') -> (B, n_rows * n_rows, D)
        features = features[:, :, :n_rows, :n_rows]
        return features.flatten(2).transpose(1, 2)

    def _fc6_as_convolution(self, maps, window, cell_stride) -> torch.Tensor:
        side = self.pooled_side
        # Adaptive average pooling from side + 1 cells to side cells averages
        # each pair of neighbouring cells, so over the whole map it is a 2x2
        # mean with stride 1. From side cells it is the identity.
        if window == side + 1:
            maps = F.avg_pool2d(maps, 2, stride=1)
        # fc6 reads the pooled map flattened channel-major, so its weight
        # (D, C * side * side) is a conv kernel (D, C, side, side).
        kernel = self.fc6.weight.view(self.fc6.out_features, -1, side, side)
        return torch.relu(F.conv2d(maps, kernel, self.fc6.bias, stride=cell_stride))

    def _fc6_on_windows(self, maps, window, cell_stride, n_rows) -> torch.Tensor:
        # (B, C, n', n', window, window): every window of the map
        windows = maps.unfold(2, window, cell_stride).unfold(3, window, cell_stride)
        windows = windows[:, :, :n_rows, :n_rows]
        B, C = windows.shape[:2]
        # (B * n_rows * n_rows, C, window, window)
        windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, C, window, window)
        features = self.region_features(windows)
        # (B, n_rows * n_rows, D) -> (B, D, n_rows, n_rows)
        return features.view(B, n_rows, n_rows, -1).permute(0, 3, 1, 2)

    def fc_guidance(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the next fully-connected layer and a ReLU to ``(..., D)``."""
        layer = self.fc7 if self.has_fc6 else self.classifier
        return torch.relu(layer(features))

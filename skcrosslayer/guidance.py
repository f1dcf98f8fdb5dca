"""The trained guidance layer of the augmented convolutional layer.

The guidance layer is a set of 1x1 filters with a ReLU over the grid of
PCA-reduced region features. :func:`train_guidance_layer` trains it on image
labels through global max pooling over the regions and a linear classifier,
and :func:`guidance_maps` applies the trained filters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["GuidanceLayer", "guidance_maps", "train_guidance_layer"]

logger = logging.getLogger(__name__)


@dataclass
class GuidanceLayer:
    """Weights of a trained guidance layer and its training record.

    Attributes
    ----------
    weight : ndarray of shape (n_filters, n_components), float32
        The 1x1 filters over the region grid.
    bias : ndarray of shape (n_filters,), float32
    classifier_weight : ndarray of shape (n_outputs, n_filters), float32
        The linear classifier on the globally max-pooled maps, which is used
        only for training.
    classifier_bias : ndarray of shape (n_outputs,), float32
    loss_curve : list of float
        Mean training loss of each epoch.
    training_accuracy : float
        Accuracy of the classifier on the training images after the last
        epoch: the fraction of images whose top class is right for single-label
        targets, the fraction of (image, label) pairs right at probability 0.5
        for multi-label targets.
    """

    weight: np.ndarray
    bias: np.ndarray
    classifier_weight: np.ndarray
    classifier_bias: np.ndarray
    loss_curve: list
    training_accuracy: float


def guidance_maps(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Apply 1x1 filters and a ReLU to region features: ``(B, N, d) -> (B, N, K)``."""
    return torch.relu(features @ weight.T + bias)


def _uniform(shape, bound: float, generator: torch.Generator) -> nn.Parameter:
    return nn.Parameter((torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound)


class _GuidanceNetwork(nn.Module):
    """1x1 filters with ReLU, global max pooling over regions, linear classifier.

    Weights start uniform in +-1/sqrt(fan_in), as torch's ``nn.Linear`` does,
    drawn from ``generator``. Inputs are divided by ``scale`` first.
    """

    def __init__(self, n_components, n_filters, n_outputs, scale, generator):
        super().__init__()
        self.scale = scale
        self.weight = _uniform((n_filters, n_components), n_components**-0.5, generator)
        self.bias = _uniform((n_filters,), n_components**-0.5, generator)
        self.classifier_weight = _uniform(
            (n_outputs, n_filters), n_filters**-0.5, generator
        )
        self.classifier_bias = _uniform((n_outputs,), n_filters**-0.5, generator)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # (B, N, d) -> (B, N, K) -> (B, K) -> (B, n_outputs)
        maps = guidance_maps(features / self.scale, self.weight, self.bias)
        return maps.amax(dim=1) @ self.classifier_weight.T + self.classifier_bias


def _loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool):
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.cross_entropy(logits, targets)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor, multilabel: bool) -> float:
    if multilabel:
        return float(((logits > 0).float() == labels).float().mean())
    return float((logits.argmax(dim=1) == labels).float().mean())


def train_guidance_layer(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    n_filters: int = 100,
    multilabel: bool = False,
    learning_rate: float = 0.01,
    n_epochs: int = 50,
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    feature_scale: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    verbose: int = 0,
) -> GuidanceLayer:
    """Train 1x1 guidance filters on region features with image labels.

    The network is: 1x1 filters with ReLU on the region grid, global max
    pooling over the regions, a linear classifier. The loss is softmax
    cross-entropy for single-label targets and a sigmoid cross-entropy per
    class for multi-label targets, minimised by mini-batch SGD.

    Parameters
    ----------
    features : ndarray of shape (n_images, n_regions, n_components), float32
        Region features (PCA-reduced local features). They stay on the CPU and
        each mini-batch is copied to ``device``.
    targets : ndarray
        Integer class indices ``(n_images,)`` in ``[0, n_outputs)``, or a 0/1
        indicator array ``(n_images, n_outputs)`` with ``multilabel=True``.
    n_filters : int
        Number K of guidance filters.
    multilabel : bool
        Whether ``targets`` is an indicator array.
    learning_rate, momentum, weight_decay : float
        Settings of :class:`torch.optim.SGD`.
    n_epochs : int
        Passes over the images, each in a new random order.
    feature_scale : float
        The features are divided by it before the 1x1 filters during training,
        and the returned ``weight`` is divided by it too, so that it applies to
        unscaled features. A scale that brings the features to unit variance
        makes ``learning_rate`` independent of the backbone's activation scale.
    batch_size : int
        Images per SGD step.
    seed : int
        Seeds the initial weights and the image orders through a
        :class:`torch.Generator`, so two runs on the CPU with the same seed
        give the same weights.
    device : torch.device or str
    verbose : int
        Show a progress bar over epochs when positive.

    Returns
    -------
    GuidanceLayer
        Weights as float32 numpy arrays.
    """
    n_images, _, n_components = features.shape
    generator = torch.Generator().manual_seed(int(seed))
    device = torch.device(device)
    inputs = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    if multilabel:
        labels = torch.as_tensor(targets, dtype=torch.float32)
        n_outputs = labels.shape[1]
    else:
        labels = torch.as_tensor(targets, dtype=torch.long)
        n_outputs = int(labels.max()) + 1
    network = _GuidanceNetwork(
        n_components, n_filters, n_outputs, float(feature_scale), generator
    ).to(device)
    optimizer = torch.optim.SGD(
        network.parameters(),
        lr=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
    )

    loss_curve = []
    with tqdm(
        range(n_epochs), desc="guidance training", unit="epoch", disable=verbose <= 0
    ) as epochs:
        for epoch in epochs:
            order = torch.randperm(n_images, generator=generator)
            total = 0.0
            for start in range(0, n_images, batch_size):
                picked = order[start : start + batch_size]
                logits = network(inputs[picked].to(device))
                loss = _loss(logits, labels[picked].to(device), multilabel)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(picked)
            loss_curve.append(total / n_images)
            epochs.set_postfix(loss=f"{loss_curve[-1]:.4f}")
            logger.debug("guidance epoch %d: loss %.6f", epoch + 1, loss_curve[-1])

    with torch.no_grad():
        logits = torch.cat(
            [
                network(inputs[start : start + batch_size].to(device)).cpu()
                for start in range(0, n_images, batch_size)
            ]
        )
    arrays = [p.detach().cpu().numpy().astype(np.float32) for p in network.parameters()]
    arrays[0] = arrays[0] / np.float32(network.scale)
    return GuidanceLayer(
        *arrays,
        loss_curve=loss_curve,
        training_accuracy=_accuracy(logits, labels, multilabel),
    )

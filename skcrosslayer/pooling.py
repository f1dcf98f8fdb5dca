"""Cross-convolutional-layer pooling as pure tensor functions.

Notation: a batch of B images, a local layer with C channels and a guidance
layer with K channels on the same H x W grid. The local feature at a spatial
unit is the C-dim activation of the local layer (``neighborhood=1``) or the
D x D neighbourhood of units around it concatenated (D^2 * C dims), and each
guidance channel k weights the local features by its activation at the unit:
P_k = sum_i x_i * a_ik. The representation concatenates P_1 .. P_K, so block k
of the output holds the d local-feature dims pooled by guidance channel k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "cross_layer_pool",
    "guidance_weights",
    "local_features",
    "normalize_pooled",
]

# Added to every norm so that all-zero blocks and vectors stay zero.
EPS = 1e-12

# Upper bound on the elements of the intermediate tensor of max pooling.
_MAX_POOL_CHUNK_ELEMENTS = 1 << 24


def local_features(activations: torch.Tensor, neighborhood: int = 1) -> torch.Tensor:
    """Return the local features of every interior unit.

    Parameters
    ----------
    activations : Tensor of shape (B, C, H, W)
        Local-layer activations.
    neighborhood : int
        Odd side D of the neighbourhood. Units closer than D // 2 to the border
        have no full neighbourhood and are dropped.

    Returns
    -------
    Tensor of shape (B, (H - D + 1) * (W - D + 1), D * D * C)
        Units in row-major order. Each feature lists the neighbourhood
        channel-major: index ``c * D * D + dy * D + dx``.
    """
    if neighborhood == 1:
        # (B, C, H, W) -> (B, H * W, C)
        return activations.flatten(2).transpose(1, 2)
    # (B, C * D * D, n_units) with channel-major rows
    patches = F.unfold(activations, kernel_size=neighborhood)
    return patches.transpose(1, 2)


def guidance_weights(guidance: torch.Tensor, neighborhood: int = 1) -> torch.Tensor:
    """Return the guidance activations at the units of :func:`local_features`.

    Parameters
    ----------
    guidance : Tensor of shape (B, K, H, W)
    neighborhood : int
        The border ring of width D // 2 is cropped to match the local features.

    Returns
    -------
    Tensor of shape (B, (H - D + 1) * (W - D + 1), K)
    """
    r = neighborhood // 2
    if r:
        guidance = guidance[:, :, r:-r, r:-r]
    # (B, K, H', W') -> (B, H' * W', K)
    return guidance.flatten(2).transpose(1, 2)


def cross_layer_pool(
    features: torch.Tensor, weights: torch.Tensor, pooling: str = "sum"
) -> torch.Tensor:
    """Pool local features once per guidance channel.

    Parameters
    ----------
    features : Tensor of shape (B, N, d)
        Local features of N units.
    weights : Tensor of shape (B, N, K)
        Guidance activations of the same units.
    pooling : {"sum", "max"}
        ``"sum"`` gives P_k = sum_i a_ik x_i as one batched matrix product;
        ``"max"`` takes the element-wise maximum of a_ik x_i over units.

    Returns
    -------
    Tensor of shape (B, K, d)
    """
    if pooling == "sum":
        # (B, K, N) @ (B, N, d) -> (B, K, d)
        return torch.bmm(weights.transpose(1, 2), features)
    if pooling != "max":
        raise ValueError(f"pooling must be 'sum' or 'max', got {pooling!r}")

    # The weighted features of all channels at once would take B*N*K*d
    # elements, so channels are processed in chunks.
    B, N, d = features.shape
    K = weights.shape[2]
    chunk = max(1, _MAX_POOL_CHUNK_ELEMENTS // max(1, B * N * d))
    pooled = []
    for start in range(0, K, chunk):
        w = weights[:, :, start : start + chunk]
        # (B, N, k, 1) * (B, N, 1, d) -> (B, N, k, d) -> max over units
        pooled.append((w.unsqueeze(3) * features.unsqueeze(2)).amax(dim=1))
    return torch.cat(pooled, dim=1)


def normalize_pooled(
    pooled: torch.Tensor,
    block_l2: bool = True,
    signed_sqrt: bool = True,
    final_l2: bool = True,
) -> torch.Tensor:
    """Normalise pooled blocks and flatten them to vectors.

    The steps run in this order, each optional: l2-normalise every block P_k
    separately, apply the signed square root sign(v) * sqrt(|v|) to every
    element, l2-normalise the whole vector. Every norm is guarded so that
    all-zero blocks stay zero.

    Parameters
    ----------
    pooled : Tensor of shape (B, K, d)

    Returns
    -------
    Tensor of shape (B, K * d)
        Channel-major: block k is columns ``k * d`` to ``(k + 1) * d``.
    """
    if block_l2:
        pooled = pooled / (torch.linalg.vector_norm(pooled, dim=2, keepdim=True) + EPS)
    # (B, K, d) -> (B, K * d)
    vectors = pooled.reshape(pooled.shape[0], -1)
    if signed_sqrt:
        vectors = torch.sign(vectors) * torch.sqrt(torch.abs(vectors))
    if final_l2:
        vectors = vectors / (
            torch.linalg.vector_norm(vectors, dim=1, keepdim=True) + EPS
        )
    return vectors

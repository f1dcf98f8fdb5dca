"""On-disk cache of layer activations, keyed by image content and model.

With a cache, a grid search over pooling parameters (neighbourhood, PCA size,
normalisation, channel selection) runs the backbone once per image: every
later fit or transform reads the activations back. An entry is keyed by the
image's content (file bytes, or array/PIL pixels) and by everything that
changes the activations: backbone, weights (a file by its size and
modification time), the captured layers and the resize policy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import joblib
import numpy as np
from PIL import Image

from ._io import atomic_write

__all__ = ["ActivationCache"]

logger = logging.getLogger(__name__)

# Bumped when the stored layout or the activations' definition changes.
_FORMAT = 1


def _location(memory) -> Path:
    if isinstance(memory, joblib.Memory):
        if memory.location is None:
            raise ValueError(
                "memory is a joblib.Memory without a location; pass "
                "joblib.Memory('/some/folder') or a folder path"
            )
        return Path(memory.location)
    return Path(os.fspath(memory))


def image_key(item) -> str | None:
    """Return a content hash of one image, or None when it cannot be read."""
    digest = hashlib.sha256()
    if isinstance(item, np.ndarray):
        digest.update(f"array{item.shape}{item.dtype}".encode())
        digest.update(np.ascontiguousarray(item).tobytes())
    elif isinstance(item, Image.Image):
        digest.update(f"pil{item.mode}{item.size}".encode())
        digest.update(item.tobytes())
    else:
        try:
            with open(os.fspath(item), "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return None
    return digest.hexdigest()


class ActivationCache:
    """Activations of named layers, one ``.npz`` file per image and model."""

    def __init__(self, memory, model_key: dict):
        description = json.dumps({**model_key, "format": _FORMAT}, sort_keys=True)
        model_hash = hashlib.sha256(description.encode()).hexdigest()[:20]
        self.folder = _location(memory) / "skcrosslayer-activations" / model_hash
        self.folder.mkdir(parents=True, exist_ok=True)
        description_file = self.folder / "model.json"
        if not description_file.exists():
            atomic_write(description_file, lambda f: f.write(description), mode="w")

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def load(self, key: str | None, n_layers: int) -> list[np.ndarray] | None:
        """Return the stored activations of ``key``, or None if absent."""
        if key is None:
            return None
        path = self._path(key)
        if not path.exists():
            return None
        try:
            with np.load(path) as stored:
                return [stored[f"layer{i}"] for i in range(n_layers)]
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("Ignoring unreadable cache entry %s: %s", path, exc)
            return None

    def store(self, key: str | None, arrays: list[np.ndarray]) -> None:
        """Write the activations of one image atomically."""
        if key is None:
            return
        payload = {f"layer{i}": array for i, array in enumerate(arrays)}
        atomic_write(self._path(key), lambda f: np.savez(f, **payload))

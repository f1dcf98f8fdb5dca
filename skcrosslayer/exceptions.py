"""Exception and warning classes raised by skcrosslayer.

Each class also inherits the built-in or scikit-learn class that callers
already catch, so ``except ValueError`` keeps working.
"""

from sklearn.exceptions import NotFittedError

__all__ = [
    "BackboneError",
    "GuidanceSignWarning",
    "ImageLoadError",
    "ImageLoadWarning",
    "LayerError",
    "NotFittedError",
    "VersionMismatchWarning",
    "WeightsError",
]


class BackboneError(ValueError):
    """Unknown backbone name, or a backbone whose optional package is missing."""


class LayerError(ValueError):
    """Unknown layer name, or a local/guidance pair that cannot be pooled."""


class WeightsError(ValueError):
    """Weights that cannot be found or do not match the architecture."""


class ImageLoadError(ValueError):
    """An image that cannot be read, decoded or converted to RGB."""


class GuidanceSignWarning(UserWarning):
    """A guidance layer whose activations can be negative."""


class ImageLoadWarning(UserWarning):
    """Images skipped because they could not be loaded (``on_error="warn"``)."""


class VersionMismatchWarning(UserWarning):
    """An estimator unpickled under another skcrosslayer version."""

"""Image loading, conversion to RGB, resizing and batching.

Inputs are file paths, PIL images or numpy arrays, mixed freely. Decoding and
resizing run in DataLoader worker processes so that they overlap with the
network's forward pass. A batch only contains images of one size, because
zero-padding smaller images would change the activations near the border.

Optionally, JPEG files are only read in the workers and decoded and resized on
the device of the network instead (nvJPEG on CUDA), which relieves the CPU when
it cannot decode as fast as the GPU computes.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
import torchvision.io
from PIL import Image, ImageOps

from .exceptions import ImageLoadError

__all__ = ["ResizePolicy", "check_images", "iter_image_batches", "load_rgb"]

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

# EXIF orientations 5 to 8 rotate by 90 degrees, which swaps width and height.
_EXIF_ORIENTATION_TAG = 274
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


def _describe(item) -> str:
    if isinstance(item, str | os.PathLike):
        return repr(os.fspath(item))
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape} and dtype {item.dtype}"
    return type(item).__name__


def check_images(X) -> list:
    """Return ``X`` as a list of images, or raise a clear error.

    ``X`` is a sequence whose items are file paths, PIL images or arrays, or a
    4-D array ``(n_images, height, width, channels)``.
    """
    if isinstance(X, str | os.PathLike | Image.Image):
        raise TypeError(
            f"X must be a sequence of images, got a single {_describe(X)}; "
            "wrap it in a list"
        )
    if scipy.sparse.issparse(X):
        raise TypeError(
            "X is a sparse matrix, but sparse input is not supported: pass a "
            "sequence of images (file paths, PIL images or HxWx3 uint8 arrays)"
        )
    if isinstance(X, np.ndarray):
        if X.ndim == 4 and len(X):
            return list(X)
        if X.ndim == 4:
            raise ValueError(f"X is empty (shape {X.shape}); pass at least one image")
        raise ValueError(
            f"X is an array of shape {X.shape}; pass a sequence of images "
            "(file paths, PIL images or HxWx3 uint8 arrays), or a 4-D array "
            "(n_images, height, width, 3)"
        )
    try:
        items = list(X)
    except TypeError:
        raise TypeError(
            f"X must be a sequence of images, got {type(X).__name__}"
        ) from None
    if not items:
        raise ValueError("X is empty; pass at least one image")
    for i, item in enumerate(items):
        if not isinstance(item, str | os.PathLike | Image.Image | np.ndarray):
            raise TypeError(
                f"X[{i}] has type {type(item).__name__}; each image must be a file "
                "path, a PIL image or an HxWx3 uint8 array"
            )
    return items


def _check_array_shape(array: np.ndarray, index: int) -> None:
    channels_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not channels_ok:
        raise ImageLoadError(
            f"X[{index}] is an array of shape {array.shape}; expected HxW "
            "(grayscale), HxWx3 (RGB) or HxWx4 (RGBA)"
        )


def _array_to_pil(array: np.ndarray, index: int) -> Image.Image:
    _check_array_shape(array, index)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise ImageLoadError(
                f"X[{index}] is a float array with values outside [0, 1]; "
                "pass uint8 values in [0, 255] or floats in [0, 1]"
            )
        array = np.round(array * 255).astype(np.uint8)
    else:
        raise ImageLoadError(
            f"X[{index}] has dtype {array.dtype}; expected uint8 in [0, 255] "
            "or float in [0, 1]"
        )
    return Image.fromarray(np.ascontiguousarray(array))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max() > 255):
            values = values / 257.0
        elif mode == "F" and values.max() <= 1.0:
            values = values * 255.0
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    # A transparency key (a palette index, gray level or RGB colour) marks
    # transparent pixels, which are composited on white like an alpha channel.
    if mode in ("P", "L", "RGB", "1") and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_rgb(item, index: int = 0) -> Image.Image:
    """Load one image as an RGB PIL image with EXIF orientation applied."""
    if isinstance(item, np.ndarray):
        return _to_rgb(_array_to_pil(item, index))
    if isinstance(item, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(item))
    path = os.fspath(item)
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image.load()
            return _to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot load image {path!r}: {exc}") from exc


def image_dimensions(item, index: int = 0) -> tuple[int, int]:
    """Return ``(width, height)`` after EXIF orientation, without decoding."""
    if isinstance(item, np.ndarray):
        _check_array_shape(item, index)
        return item.shape[1], item.shape[0]
    if isinstance(item, Image.Image):
        image = item
        width, height = image.size
    else:
        path = os.fspath(item)
        try:
            with Image.open(path) as image:
                width, height = image.size
                orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageLoadError(f"cannot load image {path!r}: {exc}") from exc
        if orientation in _TRANSPOSING_ORIENTATIONS:
            return height, width
        return width, height
    orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


# With the aspect ratio kept, images whose shorter side would be below this
# many pixels are upscaled to it: smaller inputs leave AlexNet or VGG with an
# empty grid before conv5.
MIN_SIDE = 64

# With the aspect ratio kept, images longer than this many times their width
# (or wider than this many times their height) are rejected: upscaled to
# MIN_SIDE they would be thousands of pixels long and exhaust memory.
MAX_ASPECT_RATIO = 32


@dataclass(frozen=True)
class ResizePolicy:
    """How images are resized before the network.

    With ``image_size`` set, every image is warped to a square of that side
    (the classification setting). With ``max_size`` set instead, the aspect
    ratio is kept and images whose longer side exceeds ``max_size`` are
    downscaled (the retrieval setting); images whose shorter side would be
    below :data:`MIN_SIDE` pixels are upscaled until it reaches ``MIN_SIDE``,
    even if the longer side then exceeds ``max_size``. Images with an aspect
    ratio beyond :data:`MAX_ASPECT_RATIO` to 1 are rejected there (see
    :meth:`check_aspect`).

    With ``size_multiple`` set as well (at most ``max_size``), each side of the
    aspect-kept size is then rounded to a multiple of it, so that images of
    similar shapes share a size and fill whole batches: to the nearest
    multiple, but never above ``max_size`` nor below :data:`MIN_SIDE` unless
    the side already was. Each side changes by less than ``size_multiple``
    pixels (by at most half of it when the nearest multiple is taken).
    """

    image_size: int | None
    max_size: int | None
    interpolation: str = "bilinear"
    size_multiple: int | None = None

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """Return the ``(width, height)`` an image of this size is resized to."""
        if self.image_size is not None:
            return self.image_size, self.image_size
        scale = min(1.0, self.max_size / max(width, height))
        scale = max(scale, MIN_SIDE / min(width, height))
        size = max(1, round(width * scale)), max(1, round(height * scale))
        if self.size_multiple is None:
            return size
        return tuple(self._round_side(side) for side in size)

    def _round_side(self, side: int) -> int:
        """Round ``side`` to a multiple of ``size_multiple`` within the limits.

        The nearest multiple (halves up) is taken, or the one below it when the
        nearest exceeds ``max_size`` (and the side itself), or the one above
        when the nearest falls below ``MIN_SIDE`` (and the side itself).
        """
        step = self.size_multiple
        rounded = int(side / step + 0.5) * step
        if rounded > max(side, self.max_size):
            rounded -= step
        if rounded < min(side, MIN_SIDE):
            rounded += step
        return max(rounded, step)

    def check_aspect(self, width: int, height: int, item) -> None:
        """Raise :class:`ImageLoadError` if ``item`` is too elongated to keep.

        Only with the aspect ratio kept; warped squares take any shape.
        """
        if self.fixed or max(width, height) <= MAX_ASPECT_RATIO * min(width, height):
            return
        raise ImageLoadError(
            f"image {_describe(item)} is {width}x{height} px, an aspect ratio "
            f"beyond {MAX_ASPECT_RATIO}:1 that would be resized to "
            f"{'x'.join(map(str, self.target_size(width, height)))} px; crop it, "
            "or set image_size to warp every image to a square"
        )

    def upscales(self, width: int, height: int) -> bool:
        """Return whether an image of this size is upscaled to reach ``MIN_SIDE``."""
        return self.image_size is None and min(width, height) < MIN_SIDE

    @property
    def fixed(self) -> bool:
        """Whether every image gets the same size."""
        return self.image_size is not None


def _resized_tensor(item, index: int, policy: ResizePolicy) -> torch.Tensor:
    """Load ``item`` with PIL and return it resized, as uint8 ``(3, H, W)``."""
    image = load_rgb(item, index)
    size = policy.target_size(*image.size)
    if size != image.size:
        image = image.resize(size, _RESAMPLE[policy.interpolation])
    array = np.asarray(image, dtype=np.uint8)
    # (height, width, 3) -> (3, height, width)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


# The first bytes of every JPEG file: a start-of-image marker, then a marker.
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def _read_jpeg(item) -> tuple[torch.Tensor, int] | None:
    """Return the bytes and EXIF orientation of a JPEG file, or None otherwise.

    Only the header is parsed here; the pixels are decoded later, on the device.
    Anything that is not a readable JPEG file returns None and goes through PIL,
    which also produces the error message for broken files.
    """
    if not isinstance(item, str | os.PathLike):
        return None
    try:
        with open(item, "rb") as handle:
            # Other formats are left unread here, because PIL reads them anyway.
            if handle.read(len(_JPEG_SIGNATURE)) != _JPEG_SIGNATURE:
                return None
            handle.seek(0)
            data = handle.read()
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in ("RGB", "L"):
                return None
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(
        self, items: Sequence, policy: ResizePolicy, on_error: str, encoded: bool
    ):
        self.items = items
        self.policy = policy
        self.on_error = on_error
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        """Return ``(index, pixels, jpeg, error)``, one of the last three set."""
        if self.encoded:
            jpeg = _read_jpeg(self.items[index])
            if jpeg is not None:
                return index, None, jpeg, None
        try:
            return (
                index,
                _resized_tensor(self.items[index], index, self.policy),
                None,
                None,
            )
        except ImageLoadError as exc:
            if self.on_error == "raise":
                raise
            return index, None, None, str(exc)


def _collate(samples):
    """Stack the decoded images of a batch and set the others apart.

    Returns ``(indices, images, jpegs, failures)``: the positions and uint8
    pixels of the images decoded in the worker, ``(index, (bytes,
    orientation))`` for JPEG files left to decode, and ``(index, message)`` for
    images that failed.
    """
    decoded = [(i, pixels) for i, pixels, _, _ in samples if pixels is not None]
    jpegs = [(i, jpeg) for i, _, jpeg, _ in samples if jpeg is not None]
    failures = [(i, error) for i, _, _, error in samples if error is not None]
    indices = torch.tensor([i for i, _ in decoded], dtype=torch.long)
    images = torch.stack([pixels for _, pixels in decoded]) if decoded else None
    return indices, images, jpegs, failures


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1 to 8) to an image tensor ``(C, H, W)``.

    The result is what :func:`PIL.ImageOps.exif_transpose` gives for the same
    tag: an upright image.
    """
    if orientation == 2:  # mirrored left to right
        return image.flip(2)
    if orientation == 3:  # rotated by 180 degrees
        return image.flip(1, 2)
    if orientation == 4:  # mirrored top to bottom
        return image.flip(1)
    if orientation == 5:  # mirrored along the main diagonal
        return image.transpose(1, 2)
    if orientation == 6:  # stored turned 90 degrees counter-clockwise
        return torch.rot90(image, -1, dims=(1, 2))
    if orientation == 7:  # mirrored along the anti-diagonal
        return image.transpose(1, 2).flip(1, 2)
    if orientation == 8:  # stored turned 90 degrees clockwise
        return torch.rot90(image, 1, dims=(1, 2))
    return image


def _decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list:
    """Decode JPEG byte tensors to RGB on ``device``, with None for failures.

    On CUDA the whole list is decoded in one nvJPEG call. When that fails, the
    files are decoded one at a time, so that one broken file only loses itself.
    """
    # NOTE: torchvision 0.29 deprecates decode_jpeg in favour of TorchCodec,
    # so a later torchvision may remove this decoder.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return torchvision.io.decode_jpeg(
                data, mode=torchvision.io.ImageReadMode.RGB, device=device
            )
        except (RuntimeError, ValueError):
            pass
        decoded = []
        for encoded in data:
            try:
                decoded.append(
                    torchvision.io.decode_jpeg(
                        encoded, mode=torchvision.io.ImageReadMode.RGB, device=device
                    )
                )
            except (RuntimeError, ValueError):
                decoded.append(None)
        return decoded


def resize_tensor(
    image: torch.Tensor, size: tuple[int, int], interpolation: str
) -> torch.Tensor:
    """Resize a uint8 image ``(3, H, W)`` to ``size = (width, height)``.

    Antialiased as PIL's resampling is. Measured against PIL: within one grey
    level for bilinear, a few levels for bicubic, whose kernels differ.
    """
    width, height = size
    if image.shape[1:] == (height, width):
        return image
    # (3, H, W) -> (1, 3, H, W) for interpolate, then back.
    resized = F.interpolate(
        image[None].float(),
        size=(height, width),
        mode=interpolation,
        antialias=True,
        align_corners=False,
    )[0]
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def _device_decoded(items, policy, jpegs, device, on_error, failures):
    """Decode and resize the JPEG files of a batch on ``device``.

    Returns ``(indices, images)``; files the device decoder rejects are loaded
    with PIL instead, and those that fail there too are handled by ``on_error``.
    """
    decoded = _decode_jpegs([data for _, (data, _) in jpegs], device)
    indices, images = [], []
    for (index, (_, orientation)), image in zip(jpegs, decoded):
        if image is None:
            try:
                image = _resized_tensor(items[index], index, policy).to(device)
            except ImageLoadError as exc:
                if on_error == "raise":
                    raise
                failures.append((index, str(exc)))
                continue
        else:
            image = orient(image, orientation)
            size = policy.target_size(image.shape[2], image.shape[1])
            image = resize_tensor(image, size, policy.interpolation)
        indices.append(index)
        images.append(image)
    return indices, images


def _size_buckets(items, policy, batch_size, on_error, failures):
    """Group image indices into batches whose images share one target size."""
    if policy.fixed:
        indices = list(range(len(items)))
        return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    buckets = defaultdict(list)
    upscaled = []
    for i, item in enumerate(items):
        try:
            width, height = image_dimensions(item, i)
            policy.check_aspect(width, height, item)
        except ImageLoadError as exc:
            if on_error == "raise":
                raise
            failures.append((i, str(exc)))
            continue
        if policy.upscales(width, height):
            upscaled.append(f"{_describe(item)} ({width}x{height})")
        buckets[policy.target_size(width, height)].append(i)
    if upscaled:
        warnings.warn(
            f"{len(upscaled)} images have a side below {MIN_SIDE} px and are "
            f"upscaled to {MIN_SIDE} px on the shorter side, for example "
            f"{upscaled[0]}",
            UserWarning,
            stacklevel=4,
        )
    batches = []
    for indices in buckets.values():
        batches.extend(
            indices[i : i + batch_size] for i in range(0, len(indices), batch_size)
        )
    return batches


def _worker_context():
    """Return the multiprocessing context that starts the decoding workers.

    Inside a joblib worker (as in ``GridSearchCV(n_jobs=2)``) the default
    context is joblib's own, which cannot start DataLoader workers, so the
    platform's usual method is named explicitly.
    """
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def iter_image_batches(
    items: Sequence,
    policy: ResizePolicy,
    batch_size: int,
    n_workers: int = 0,
    pin_memory: bool = False,
    on_error: str = "raise",
    failures: list | None = None,
    decode_device: torch.device | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(indices, images)`` batches, decoded and resized in workers.

    ``images`` is a uint8 tensor ``(batch, 3, height, width)`` and ``indices``
    are the positions of its images in ``items``. Batches follow input order
    for a fixed size; with aspect kept they are grouped by size.

    With ``decode_device`` set, JPEG files are read in the workers but decoded
    and resized on that device, and the batches are on that device.

    With ``on_error="raise"`` an image that cannot be loaded raises
    :class:`ImageLoadError` naming it. Otherwise it is left out of the batches
    and ``(index, message)`` is appended to ``failures``.
    """
    if failures is None:
        failures = []
    batches = _size_buckets(items, policy, batch_size, on_error, failures)
    n_workers = min(n_workers, len(batches) - 1) if len(batches) > 1 else 0
    loader = torch.utils.data.DataLoader(
        _ImageDataset(items, policy, on_error, encoded=decode_device is not None),
        batch_sampler=batches,
        num_workers=n_workers,
        pin_memory=pin_memory,
        collate_fn=_collate,
        multiprocessing_context=_worker_context() if n_workers else None,
    )
    for indices, images, jpegs, batch_failures in loader:
        failures.extend(batch_failures)
        if jpegs:
            # JPEG files decoded on the device first, then the images that
            # the workers decoded, each with its index.
            batch_indices, batch_images = _device_decoded(
                items, policy, jpegs, decode_device, on_error, failures
            )
            if images is not None:
                batch_images.extend(images.to(decode_device, non_blocking=True))
                batch_indices.extend(indices.tolist())
            if not batch_images:
                continue
            indices = torch.tensor(batch_indices, dtype=torch.long)
            images = torch.stack(batch_images)
        if images is not None:
            yield indices.numpy(), images

"""Shared fixtures: real photos bundled with scikit-image and scikit-learn.

The photos ship inside the installed packages, so no fixture downloads
anything. Session-scoped fixtures write their files once under pytest's
temporary folder, so tests must treat those files as read-only.
"""

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps
from sklearn.datasets import load_sample_images

# scikit-image photos: four RGB photos and one grayscale photo ("camera").
SKIMAGE_PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "camera")

# scikit-learn's load_sample_images() returns these two RGB photos in this order.
SKLEARN_PHOTO_NAMES = ("china", "flower")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: runs for more than 20 seconds; deselect with -m 'not slow'"
    )


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, np.ndarray]:
    """Seven real photos as uint8 arrays: HxWx3 RGB, except HxW for "camera"."""
    photos = {name: getattr(skimage.data, name)() for name in SKIMAGE_PHOTO_NAMES}
    bunch = load_sample_images()
    photos.update(zip(SKLEARN_PHOTO_NAMES, bunch.images))
    return photos


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory, sample_photos) -> Path:
    """Folder of the sample photos as files: scikit-image's JPEG, scikit-learn's PNG."""
    folder = tmp_path_factory.mktemp("photos")
    for name, array in sample_photos.items():
        if name in SKIMAGE_PHOTO_NAMES:
            Image.fromarray(array).save(folder / f"{name}.jpg", quality=90)
        else:
            Image.fromarray(array).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="session")
def photo_paths(photo_folder) -> list[Path]:
    """Paths of the seven files in ``photo_folder``, sorted by name."""
    return sorted(photo_folder.iterdir())


def edited_copies(photo: Image.Image, n_copies: int) -> list[Image.Image]:
    """Return ``n_copies`` crops and mirror images of ``photo``, the first unedited."""
    width, height = photo.size
    boxes = [
        (0.0, 0.0, 1.0, 1.0),
        (0.0, 0.0, 0.8, 0.8),
        (0.2, 0.2, 1.0, 1.0),
        (0.15, 0.1, 0.85, 0.9),
    ]
    copies = []
    for i in range(n_copies):
        left, top, right, bottom = boxes[i % len(boxes)]
        box = (
            round(left * width),
            round(top * height),
            round(right * width),
            round(bottom * height),
        )
        copy = photo.crop(box)
        if i >= len(boxes):
            copy = ImageOps.mirror(copy)
        copies.append(copy)
    return copies


@pytest.fixture(scope="session")
def class_folders(tmp_path_factory, sample_photos) -> Path:
    """Folder with subfolders "cat" (chelsea) and "cup" (coffee) of 6 JPEG edits each."""
    root = tmp_path_factory.mktemp("classes")
    for label, name in (("cat", "chelsea"), ("cup", "coffee")):
        folder = root / label
        folder.mkdir()
        photo = Image.fromarray(sample_photos[name])
        for i, copy in enumerate(edited_copies(photo, 6)):
            copy.save(folder / f"{name}_{i}.jpg", quality=90)
    return root

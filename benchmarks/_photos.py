"""Real photos written to disk for the speed and memory benchmarks."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from skcrosslayer.demo import copy_detection_images


def write_photo_files(folder: Path, n_images: int, quality: int = 90) -> list[Path]:
    """Write ``n_images`` JPEG files cycling through the demo's 96 real photos.

    Repeated photos are mirrored or brightened so that no two files are equal.
    """
    folder.mkdir(parents=True, exist_ok=True)
    images, _, _ = copy_detection_images()
    paths = []
    for i in range(n_images):
        image = images[i % len(images)].convert("RGB")
        cycle = i // len(images)
        if cycle % 2:
            image = ImageOps.mirror(image)
        if cycle >= 2:
            image = ImageEnhance.Brightness(image).enhance(1.0 + 0.01 * cycle)
        path = folder / f"{i:06d}.jpg"
        if not path.exists():
            image.save(path, quality=quality)
        paths.append(path)
    return paths


def open_resized(path: Path, size: tuple[int, int], resample) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB").resize(size, resample)

"""JPEG decoding on the network's device, and size rounding for full batches.

The device path decodes with torchvision and resizes with torch. These tests
run it on the CPU and compare it with the PIL path pixel by pixel.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from skcrosslayer import CrossLayerPooler, GlobalPooler
from skcrosslayer.exceptions import ImageLoadError
from skcrosslayer.images import ResizePolicy, iter_image_batches, orient, resize_tensor

CPU = torch.device("cpu")
# Large enough that no test image is resized: pixels must then match exactly.
NO_RESIZE = ResizePolicy(image_size=None, max_size=4000)


def by_index(items, policy, **options) -> dict[int, np.ndarray]:
    """Run ``iter_image_batches`` and return each image as (H, W, 3) by index."""
    images = {}
    for indices, batch in iter_image_batches(items, policy, batch_size=4, **options):
        assert batch.dtype == torch.uint8
        for index, image in zip(indices, batch):
            images[int(index)] = image.permute(1, 2, 0).cpu().numpy()
    return images


def both_paths(items, policy, **options):
    """Return the images from PIL decoding and from decoding on the CPU device."""
    pil = by_index(items, policy, **options)
    device = by_index(items, policy, decode_device=CPU, **options)
    assert sorted(pil) == sorted(device)
    return pil, device


def jpeg_with_orientation(photo: Image.Image, orientation: int, path: Path) -> Path:
    exif = Image.Exif()
    exif[274] = orientation
    photo.save(path, quality=90, exif=exif)
    return path


@pytest.fixture(scope="module")
def photo(sample_photos) -> Image.Image:
    # Not square, so that transposing orientations change the shape.
    return Image.fromarray(sample_photos["chelsea"]).resize((120, 80))


def test_orient_matches_pil(photo, tmp_path):
    for orientation in range(1, 9):
        path = jpeg_with_orientation(
            photo, orientation, tmp_path / f"{orientation}.jpg"
        )
        with Image.open(path) as stored:
            expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
            # (H, W, 3) -> (3, H, W), the layout of the device path.
            raw = torch.from_numpy(np.asarray(stored.convert("RGB")).copy())
        got = orient(raw.permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(
            got, expected, err_msg=f"orientation {orientation}"
        )


def test_exif_rotated_jpegs_exact(photo, tmp_path):
    paths = [
        jpeg_with_orientation(photo, orientation, tmp_path / f"{orientation}.jpg")
        for orientation in range(1, 9)
    ]
    pil, device = both_paths(paths, NO_RESIZE)
    for index in pil:
        np.testing.assert_array_equal(device[index], pil[index])
    # Orientations 5 to 8 turn the 120 x 80 photo upright as 80 x 120.
    assert [pil[i].shape[:2] for i in range(8)] == [(80, 120)] * 4 + [(120, 80)] * 4


def test_jpeg_flavours_exact(photo, tmp_path):
    progressive = tmp_path / "progressive.jpg"
    photo.save(progressive, quality=85, progressive=True)
    gray = tmp_path / "gray.jpg"
    photo.convert("L").save(gray, quality=85)
    cmyk = tmp_path / "cmyk.jpg"
    photo.convert("CMYK").save(cmyk, quality=85)
    subsampled = tmp_path / "subsampled.jpg"
    photo.save(subsampled, quality=60, subsampling=2)
    pil, device = both_paths([progressive, gray, cmyk, subsampled], NO_RESIZE)
    for index in range(4):
        np.testing.assert_array_equal(device[index], pil[index])
    # The grayscale file comes back as three equal channels.
    assert np.array_equal(device[1][..., 0], device[1][..., 2])


@pytest.mark.parametrize(
    "size", [(224, 224), (45, 30), (300, 200)], ids=["warp", "down", "up"]
)
def test_resize_within_rounding_of_pil(photo, size):
    image = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)
    got = resize_tensor(image, size, "bilinear").permute(1, 2, 0).numpy()
    expected = np.asarray(photo.resize(size, Image.Resampling.BILINEAR))
    assert got.shape == expected.shape
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert difference.max() <= 1
    assert difference.mean() < 0.3


def test_mixed_inputs_keep_their_indices(photo, tmp_path):
    jpeg = tmp_path / "photo.jpg"
    photo.save(jpeg, quality=95)
    png = tmp_path / "photo.png"
    photo.save(png)
    items = [jpeg, np.asarray(photo), png, photo, jpeg]
    policy = ResizePolicy(image_size=64, max_size=None)
    for workers in (0, 2):
        pil, device = both_paths(items, policy, n_workers=workers)
        assert sorted(device) == [0, 1, 2, 3, 4]
        for index in pil:
            difference = np.abs(device[index].astype(int) - pil[index].astype(int))
            assert difference.max() <= 1, index
        # Inputs that are not JPEG files take the PIL path on both sides.
        for index in (1, 2, 3):
            np.testing.assert_array_equal(device[index], pil[index])


def test_broken_jpeg_names_path(photo, tmp_path):
    good = tmp_path / "good.jpg"
    photo.save(good, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:400])
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        by_index([good, truncated], NO_RESIZE, decode_device=CPU)

    failures = []
    images = by_index(
        [truncated, good, truncated],
        NO_RESIZE,
        decode_device=CPU,
        on_error="skip",
        failures=failures,
    )
    assert sorted(images) == [1]
    assert sorted(index for index, _ in failures) == [0, 2]
    assert all("truncated.jpg" in message for _, message in failures)


def test_pooler_close_to_pil_path(photo_paths):
    jpegs = [path for path in photo_paths if path.suffix == ".jpg"]
    pooler = CrossLayerPooler(n_workers=0, n_components=32, random_state=0)
    pooler.fit(jpegs)
    expected = pooler.transform(jpegs)
    got = pooler.set_params(decode_on_device=True).transform(jpegs)
    cosines = np.sum(got * expected, axis=1)  # rows are unit-norm
    # Resampling differs by at most one grey level; signed square roots of
    # weakly guided blocks magnify that, so the match is close, not exact.
    assert cosines.min() > 0.9, cosines
    assert np.median(cosines) > 0.95, cosines


def test_pooler_exact_without_resizing(sample_photos, tmp_path):
    paths = []
    for name in ("astronaut", "coffee", "chelsea"):
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(sample_photos[name]).resize((128, 96)).save(path, quality=90)
        paths.append(path)
    pooler = GlobalPooler(max_size=500, n_workers=0).fit(paths)
    expected = pooler.transform(paths)
    got = pooler.set_params(decode_on_device=True).transform(paths)
    np.testing.assert_allclose(got, expected, atol=1e-6)


# -- size_multiple ------------------------------------------------------------


# (image_size, max_size, size_multiple, input size, rounded size)
ROUNDING_CASES = [
    # 400 x 300 -> 200 x 150 -> 6.25 and 4.69 multiples of 32.
    (None, 200, 32, (400, 300), (192, 160)),
    (None, 200, 32, (300, 400), (160, 192)),
    # A half rounds up, and every side keeps at least one multiple.
    (None, 500, 10, (75, 65), (80, 70)),
    # 120 x 40 is upscaled to 192 x 64 first.
    (None, 500, 100, (120, 40), (200, 100)),
    # The nearest multiple above max_size gives way to the one below ...
    (None, 500, 32, (512, 512), (480, 480)),
    # ... unless the side is already above max_size after upscaling to 64 px.
    (None, 100, 32, (300, 30), (640, 64)),
    # The multiple below 64 px gives way to the one above. 640 x 64 keeps its
    # size, and 645 would exceed both 640 and max_size, so the long side takes
    # the multiple below.
    (None, 500, 43, (640, 64), (602, 86)),
    # A warped square is not rounded.
    (224, None, 32, (640, 427), (224, 224)),
]


@pytest.mark.parametrize(
    "image_size, max_size, multiple, size, expected", ROUNDING_CASES
)
def test_size_multiple_rounds_each_side(image_size, max_size, multiple, size, expected):
    policy = ResizePolicy(image_size, max_size, size_multiple=multiple)

    assert policy.target_size(*size) == expected


def test_size_multiple_fills_batches(tmp_path, photo):
    # Longer side 224: 149, 150 and 151 px short sides without rounding.
    paths = []
    for i, height in enumerate((427, 430, 432, 427, 430, 432)):
        path = tmp_path / f"{i}.png"
        photo.resize((640, height)).save(path)
        paths.append(path)

    def batch_shapes(size_multiple):
        policy = ResizePolicy(None, 224, size_multiple=size_multiple)
        return [
            tuple(batch.shape[2:])
            for _, batch in iter_image_batches(paths, policy, batch_size=8)
        ]

    assert sorted(batch_shapes(None)) == [(149, 224), (150, 224), (151, 224)]
    assert batch_shapes(32) == [(160, 224)]


def test_size_multiple_needs_max_size(photo_paths):
    with pytest.raises(ValueError, match="size_multiple=32 only applies"):
        CrossLayerPooler(size_multiple=32, n_workers=0).fit(photo_paths[:2])
    with pytest.raises(ValueError, match="size_multiple=1000 is larger than max"):
        CrossLayerPooler(max_size=128, size_multiple=1000, n_workers=0).fit(
            photo_paths[:2]
        )

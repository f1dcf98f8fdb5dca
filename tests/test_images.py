"""Tests for image loading, RGB conversion, resizing and batching.

Every file is written by the test itself with Pillow, so each case compares
the loaded pixels with the exact values it stored.
"""

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from skcrosslayer.exceptions import ImageLoadError
from skcrosslayer.images import (
    MIN_SIDE,
    ResizePolicy,
    check_images,
    image_dimensions,
    iter_image_batches,
    load_rgb,
)

WHITE = (255, 255, 255)


def save(image: Image.Image, path: Path, **options) -> Path:
    """Save ``image`` to ``path`` with Pillow's save ``options`` and return the path."""
    image.save(path, **options)
    return path


def pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    """Return the pixels of a one-row RGB image, left to right."""
    assert image.mode == "RGB"
    return [tuple(int(v) for v in p) for p in np.asarray(image)[0]]


def one_row(mode: str, values: list) -> Image.Image:
    """Return a one-row image of ``mode`` holding ``values`` left to right."""
    image = Image.new(mode, (len(values), 1))
    image.putdata(values)
    return image


def small_photo(sample_photos, name="chelsea", size=(96, 64)) -> Image.Image:
    """Return a real photo downscaled to ``size``, so that codecs run fast."""
    return Image.fromarray(sample_photos[name]).resize(size)


# -- load_rgb: PIL modes ------------------------------------------------------


def test_load_rgb_mode_1(tmp_path):
    image = Image.new("1", (3, 1))
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / "bilevel.png")

    assert Image.open(path).mode == "1"
    assert pixels(load_rgb(path)) == [(0, 0, 0), WHITE, (0, 0, 0)]


def test_load_rgb_mode_l(tmp_path):
    path = save(one_row("L", [0, 100, 255]), tmp_path / "gray.png")

    assert Image.open(path).mode == "L"
    assert pixels(load_rgb(path)) == [(0, 0, 0), (100, 100, 100), WHITE]


def test_load_rgb_mode_la_on_white(tmp_path):
    path = save(one_row("LA", [(100, 255), (100, 0)]), tmp_path / "gray_alpha.png")

    assert Image.open(path).mode == "LA"
    assert pixels(load_rgb(path)) == [(100, 100, 100), WHITE]


def palette_image() -> Image.Image:
    """Return a P image: indices 0, 1, 2 map to (10,20,30), (200,100,50), black."""
    image = Image.new("P", (3, 1))
    image.putpalette([10, 20, 30, 200, 100, 50, 0, 0, 0])
    image.putdata([0, 1, 2])
    return image


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_load_rgb_mode_p(tmp_path, suffix):
    path = save(palette_image(), tmp_path / f"palette{suffix}")

    assert Image.open(path).mode == "P"
    assert pixels(load_rgb(path)) == [(10, 20, 30), (200, 100, 50), (0, 0, 0)]


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_load_rgb_mode_p_transparency(tmp_path, suffix):
    # Palette index 2 (black) is the transparent colour.
    path = save(palette_image(), tmp_path / f"palette{suffix}", transparency=2)

    assert Image.open(path).info["transparency"] == 2
    assert pixels(load_rgb(path)) == [(10, 20, 30), (200, 100, 50), WHITE]


def test_load_rgb_mode_rgb(tmp_path):
    path = save(one_row("RGB", [(1, 2, 3), (250, 0, 128)]), tmp_path / "rgb.png")

    assert pixels(load_rgb(path)) == [(1, 2, 3), (250, 0, 128)]


def test_load_rgb_mode_rgba_on_white(tmp_path):
    values = [(10, 20, 30, 255), (10, 20, 30, 0), (200, 0, 0, 128)]
    path = save(one_row("RGBA", values), tmp_path / "rgba.png")

    loaded = pixels(load_rgb(path))

    assert loaded[0] == (10, 20, 30)
    assert loaded[1] == WHITE
    # Half transparent: 200 * 128/255 + 255 * 127/255 = 227.4 and
    # 0 * 128/255 + 255 * 127/255 = 127.0.
    assert loaded[2] == (227, 127, 127)


@pytest.mark.parametrize(
    ("mode", "values", "key", "expected"),
    [
        ("L", [0, 100], 0, [WHITE, (100, 100, 100)]),
        ("RGB", [(10, 20, 30), (1, 2, 3)], (10, 20, 30), [WHITE, (1, 2, 3)]),
    ],
)
def test_load_rgb_transparency_key_on_white(tmp_path, mode, values, key, expected):
    path = save(one_row(mode, values), tmp_path / "keyed.png", transparency=key)

    assert Image.open(path).info["transparency"] == key
    assert pixels(load_rgb(path)) == expected


def test_load_rgb_mode_cmyk(tmp_path):
    values = [(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)]
    path = save(one_row("CMYK", values), tmp_path / "cmyk.tif")

    assert Image.open(path).mode == "CMYK"
    # No ink is white, full cyan is (0, 255, 255), full black ink is black.
    assert pixels(load_rgb(path)) == [WHITE, (0, 255, 255), (0, 0, 0)]


def test_load_rgb_mode_cmyk_jpeg(tmp_path):
    image = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    path = save(image, tmp_path / "cmyk.jpg", quality=95)

    loaded = np.asarray(load_rgb(path)).astype(int)

    assert Image.open(path).mode == "CMYK"
    np.testing.assert_allclose(loaded.mean(axis=(0, 1)), (0, 255, 255), atol=2)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_load_rgb_16_bit(tmp_path, suffix):
    # 8-bit value = round(v / 257): 25700 / 257 = 100 and 1000 / 257 = 3.89.
    values = np.array([[0, 1000, 25700, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / f"gray16{suffix}")

    assert Image.open(path).mode == "I;16"
    assert [p[0] for p in pixels(load_rgb(path))] == [0, 4, 100, 255]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # Values up to 255 are taken as 8-bit values.
        ([0, 100, 200], [0, 100, 200]),
        # Larger values are taken as 16-bit values and clipped to 255.
        ([0, 25700, 70000], [0, 100, 255]),
    ],
)
def test_load_rgb_mode_i(tmp_path, values, expected):
    array = np.array([values], dtype=np.int32)
    path = save(Image.fromarray(array), tmp_path / "int32.tif")

    assert Image.open(path).mode == "I"
    assert [p[0] for p in pixels(load_rgb(path))] == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # Values up to 1 are scaled by 255: 0.5 * 255 = 127.5 rounds to 128.
        ([0.0, 0.2, 0.5, 1.0], [0, 51, 128, 255]),
        # Larger values are taken as 8-bit values.
        ([0.0, 100.0, 250.0, 300.0], [0, 100, 250, 255]),
    ],
)
def test_load_rgb_mode_f(tmp_path, values, expected):
    array = np.array([values], dtype=np.float32)
    path = save(Image.fromarray(array), tmp_path / "float32.tif")

    assert Image.open(path).mode == "F"
    assert [p[0] for p in pixels(load_rgb(path))] == expected


# -- load_rgb: file formats ----------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "options", "max_mean_error"),
    [
        (".png", {}, 0),
        (".tif", {}, 0),
        (".bmp", {}, 0),
        (".webp", {"lossless": True}, 0),
        (".jpg", {"quality": 95}, 4),
        (".webp", {"quality": 90}, 6),
        # GIF stores at most 256 colours.
        (".gif", {}, 12),
    ],
)
def test_load_rgb_formats(tmp_path, sample_photos, suffix, options, max_mean_error):
    photo = small_photo(sample_photos)
    path = save(photo, tmp_path / f"photo{suffix}", **options)

    loaded = load_rgb(path)
    error = np.abs(np.asarray(loaded, dtype=int) - np.asarray(photo, dtype=int))

    assert loaded.mode == "RGB"
    assert loaded.size == (96, 64)
    assert error.mean() <= max_mean_error


def test_load_rgb_accepts_str_and_path(tmp_path, sample_photos):
    path = save(small_photo(sample_photos), tmp_path / "photo.png")

    from_str = np.asarray(load_rgb(str(path)))
    from_path = np.asarray(load_rgb(path))

    np.testing.assert_array_equal(from_str, from_path)


def test_load_rgb_pil_input_unchanged(sample_photos):
    photo = small_photo(sample_photos).convert("RGBA")

    loaded = load_rgb(photo)

    assert loaded.mode == "RGB"
    assert photo.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(photo.convert("RGB")))


def test_load_rgb_missing_file(tmp_path):
    path = tmp_path / "missing.jpg"

    with pytest.raises(ImageLoadError, match=r"cannot load image '.*missing\.jpg'"):
        load_rgb(path)


def test_load_rgb_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these bytes are not a JPEG file")

    with pytest.raises(ImageLoadError, match=r"cannot load image '.*notes\.jpg'"):
        load_rgb(path)


# -- EXIF orientation ------------------------------------------------------------


def write_rotated_jpeg(path: Path) -> Path:
    """Write a blue 40x20 JPEG with a red top-left corner and EXIF orientation 6.

    Orientation 6 means the stored pixels are shown rotated 90 degrees
    clockwise, so a viewer shows a 20x40 image with the red corner top right.
    """
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[274] = 6
    return save(image, path, exif=exif, quality=95)


def test_exif_orientation_transposes(tmp_path):
    path = write_rotated_jpeg(tmp_path / "rotated.jpg")

    loaded = np.asarray(load_rgb(path)).astype(int)

    assert Image.open(path).size == (40, 20)
    # (height, width, 3): width and height are swapped.
    assert loaded.shape == (40, 20, 3)
    # The stored top-left corner (x < 8, y < 8) is shown at x >= 12, y < 8.
    top_right = loaded[1:7, 13:19].reshape(-1, 3)
    top_left = loaded[1:7, 1:7].reshape(-1, 3)
    assert (top_right[:, 0] > 200).all()
    assert (top_right[:, 2] < 60).all()
    assert (top_left[:, 0] < 60).all()
    assert (top_left[:, 2] > 200).all()


def test_exif_orientation_of_pil_input(tmp_path):
    path = write_rotated_jpeg(tmp_path / "rotated.jpg")

    with Image.open(path) as image:
        loaded = load_rgb(image)

    assert loaded.size == (20, 40)


def test_image_dimensions_match_decoded(tmp_path, sample_photos):
    items = [
        write_rotated_jpeg(tmp_path / "rotated.jpg"),
        save(small_photo(sample_photos), tmp_path / "plain.jpg"),
        Image.open(tmp_path / "rotated.jpg"),
        small_photo(sample_photos),
        np.zeros((7, 5, 3), dtype=np.uint8),
        np.zeros((7, 5), dtype=np.uint8),
    ]
    expected = [(20, 40), (96, 64), (20, 40), (96, 64), (5, 7), (5, 7)]

    for item, size in zip(items, expected):
        assert image_dimensions(item) == size
        assert load_rgb(item).size == size


def test_image_dimensions_missing_file(tmp_path):
    path = tmp_path / "missing.png"

    with pytest.raises(ImageLoadError, match=r"cannot load image '.*missing\.png'"):
        image_dimensions(path)


# -- load_rgb: numpy arrays ------------------------------------------------------


def test_array_uint8_rgb(sample_photos):
    array = sample_photos["astronaut"][:40, :30]

    loaded = load_rgb(array)

    assert loaded.size == (30, 40)
    np.testing.assert_array_equal(np.asarray(loaded), array)


def test_array_grayscale_repeats_channel(sample_photos):
    array = sample_photos["camera"][:40, :30]

    loaded = np.asarray(load_rgb(array))

    assert loaded.shape == (40, 30, 3)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[:, :, channel], array)


def test_array_single_channel_as_grayscale(sample_photos):
    array = sample_photos["camera"][:40, :30]

    loaded = np.asarray(load_rgb(array[:, :, np.newaxis]))

    np.testing.assert_array_equal(loaded, np.asarray(load_rgb(array)))


def test_array_rgba_on_white():
    array = np.array(
        [[[10, 20, 30, 255], [10, 20, 30, 0], [200, 0, 0, 128]]], dtype=np.uint8
    )

    assert pixels(load_rgb(array)) == [(10, 20, 30), WHITE, (227, 127, 127)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_array_float_unit_range(dtype):
    # round(v * 255): 0.2 -> 51, 0.5 -> 127.5 -> 128 (to even), 1 -> 255.
    array = np.array([[0.0, 0.2, 0.5, 1.0]], dtype=dtype)

    assert [p[0] for p in pixels(load_rgb(array))] == [0, 51, 128, 255]


def test_array_not_contiguous(sample_photos):
    array = sample_photos["astronaut"][:40:2, ::-3]

    np.testing.assert_array_equal(np.asarray(load_rgb(array)), array)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.full((4, 5, 3), 1.5),
            r"X\[3\] is a float array with values outside \[0, 1\]",
        ),
        (
            np.full((4, 5, 3), -0.1),
            r"X\[3\] is a float array with values outside \[0, 1\]",
        ),
        (
            np.full((4, 5, 3), np.nan),
            r"X\[3\] is a float array with values outside \[0, 1\]",
        ),
        (np.zeros((4, 5, 3), np.int32), r"X\[3\] has dtype int32; expected uint8"),
        (np.zeros((4, 5, 3), bool), r"X\[3\] has dtype bool; expected uint8"),
        (np.zeros((4, 5, 2), np.uint8), r"X\[3\] is an array of shape \(4, 5, 2\)"),
        (np.zeros(5, np.uint8), r"X\[3\] is an array of shape \(5,\)"),
        (
            np.zeros((2, 4, 5, 3), np.uint8),
            r"X\[3\] is an array of shape \(2, 4, 5, 3\)",
        ),
    ],
    ids=["above-1", "below-0", "nan", "int32", "bool", "2-channels", "1-d", "4-d"],
)
def test_array_rejected(array, message):
    with pytest.raises(ImageLoadError, match=message):
        load_rgb(array, index=3)


# -- check_images ------------------------------------------------------------------


def test_check_images_mixed_list(tmp_path, sample_photos):
    path = save(small_photo(sample_photos), tmp_path / "photo.png")
    photo = small_photo(sample_photos)
    array = sample_photos["astronaut"]
    items = [str(path), path, photo, array]

    checked = check_images(items)

    assert len(checked) == 4
    for got, item in zip(checked, items):
        assert got is item


def test_check_images_tuple_and_generator(tmp_path):
    paths = (tmp_path / "a.jpg", tmp_path / "b.jpg")

    assert check_images(paths) == list(paths)
    assert check_images(p for p in paths) == list(paths)


def test_check_images_4d_array():
    images = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)

    checked = check_images(images)

    assert len(checked) == 2
    np.testing.assert_array_equal(checked[0], images[0])
    np.testing.assert_array_equal(checked[1], images[1])


@pytest.mark.parametrize("single", ["photo.jpg", Path("photo.jpg")])
def test_check_images_rejects_single_path(single):
    with pytest.raises(
        TypeError, match=r"got a single 'photo\.jpg'; wrap it in a list"
    ):
        check_images(single)


def test_check_images_rejects_single_pil_image():
    with pytest.raises(TypeError, match="got a single Image; wrap it in a list"):
        check_images(Image.new("RGB", (4, 4)))


@pytest.mark.parametrize("empty", [[], (), np.zeros((0, 8, 8, 3), np.uint8)])
def test_check_images_rejects_empty(empty):
    with pytest.raises(ValueError, match="X is empty.*pass at least one image"):
        check_images(empty)


@pytest.mark.parametrize(
    "array",
    [np.zeros((3, 4)), np.zeros((8, 8, 3), np.uint8)],
    ids=["2-d-table", "single-image"],
)
def test_check_images_rejects_non_4d_array(array):
    shape = str(array.shape).replace("(", r"\(").replace(")", r"\)")

    with pytest.raises(ValueError, match=f"X is an array of shape {shape}; pass a"):
        check_images(array)


def test_check_images_rejects_int_item(tmp_path):
    with pytest.raises(
        TypeError, match=r"X\[1\] has type int; each image must be a file"
    ):
        check_images([tmp_path / "a.jpg", 7])


def test_check_images_rejects_non_sequence():
    with pytest.raises(TypeError, match="X must be a sequence of images, got int"):
        check_images(7)


# -- ResizePolicy --------------------------------------------------------------------


def test_resize_policy_square():
    policy = ResizePolicy(image_size=64, max_size=None)

    assert policy.fixed
    assert policy.target_size(300, 200) == (64, 64)
    assert policy.target_size(20, 30) == (64, 64)


def test_resize_policy_max_size_downscales_only():
    policy = ResizePolicy(image_size=None, max_size=100)

    assert not policy.fixed
    assert policy.target_size(90, 70) == (90, 70)
    assert policy.target_size(100, 80) == (100, 80)
    assert policy.target_size(64, 64) == (64, 64)


def test_resize_policy_keeps_aspect():
    policy = ResizePolicy(image_size=None, max_size=200)

    assert policy.target_size(400, 300) == (200, 150)
    assert policy.target_size(300, 400) == (150, 200)
    # 427 * 224 / 640 = 149.45.
    assert ResizePolicy(None, 224).target_size(640, 427) == (224, 149)


def test_resize_policy_upscales_short_side():
    policy = ResizePolicy(image_size=None, max_size=100)

    assert MIN_SIDE == 64
    # 50 * 64 / 30 = 106.67: the shorter side reaches 64 and the longer side
    # then exceeds max_size.
    assert policy.target_size(50, 30) == (107, 64)
    assert policy.target_size(30, 50) == (64, 107)
    # 400 * 100 / 500 = 80 would already be above 64.
    assert policy.target_size(500, 400) == (100, 80)
    # 300 * 100 / 600 = 50 is below 64, so the scale is 64 / 300 instead.
    assert policy.target_size(600, 300) == (128, 64)
    assert policy.upscales(50, 30)
    assert not policy.upscales(600, 300)
    assert not ResizePolicy(64, None).upscales(50, 30)


def test_resize_policy_never_zero():
    policy = ResizePolicy(image_size=None, max_size=16)

    # The scale 16 / 1000 alone would round the shorter side to 0.
    assert policy.target_size(1000, 1) == (64000, 64)
    assert policy.target_size(1, 5000) == (64, 320000)


@given(
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
    max_size=st.integers(16, 2000),
)
def test_resize_policy_matches_exact_scale(width, height, max_size):
    """The sides are the exact rational scale, rounded to the nearest pixel."""
    target = ResizePolicy(None, max_size).target_size(width, height)

    downscale = min(Fraction(1), Fraction(max_size, max(width, height)))
    scale = max(downscale, Fraction(MIN_SIDE, min(width, height)))
    for side, original in zip(target, (width, height)):
        # Float rounding may move an exact half either way.
        assert abs(side - original * scale) <= Fraction(1, 2) + Fraction(1, 10**9)
    if scale == downscale:
        assert max(target) == min(max(width, height), max_size)
    else:
        assert min(target) == MIN_SIDE


# -- iter_image_batches ------------------------------------------------------------


@pytest.fixture
def mixed_items(photo_paths, sample_photos):
    """Seven photo files, a landscape array and a portrait array.

    With ``max_size=128`` they fall in three sizes. The two 512x512 photos
    (indices 0, 1) become 128x128. The five 3:2 photos (2 to 6) and the
    150x100 array (7) become 128x85. The 100x150 array (8) becomes 85x128.
    """
    return [
        *photo_paths,
        sample_photos["chelsea"][:100, :150],
        sample_photos["coffee"][:150, :100],
    ]


def collect(batches) -> tuple[list[np.ndarray], dict[int, torch.Tensor]]:
    """Return the index arrays of the batches and each index's image."""
    index_arrays, images = [], {}
    for indices, batch in batches:
        assert batch.dtype == torch.uint8
        assert batch.shape[0] == len(indices)
        index_arrays.append(indices)
        for index, image in zip(indices.tolist(), batch):
            assert index not in images
            images[index] = image
    return index_arrays, images


def reference_image(item, policy: ResizePolicy) -> np.ndarray:
    """Slow reference: load one image, resize it with PIL, as (3, H, W) uint8."""
    image = load_rgb(item)
    size = policy.target_size(*image.size)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1)


def test_batches_cover_every_index_once(mixed_items):
    policy = ResizePolicy(image_size=None, max_size=128)

    index_arrays, images = collect(iter_image_batches(mixed_items, policy, 2))

    assert sorted(np.concatenate(index_arrays).tolist()) == list(range(9))
    assert sorted(images) == list(range(9))


def test_batches_hold_one_size(mixed_items):
    policy = ResizePolicy(image_size=None, max_size=128)

    batches = list(iter_image_batches(mixed_items, policy, 4))

    # Buckets in order of first appearance, each cut into batches of 4.
    assert [indices.tolist() for indices, _ in batches] == [
        [0, 1],
        [2, 3, 4, 5],
        [6, 7],
        [8],
    ]
    # (height, width) of each batch.
    assert [tuple(images.shape[2:]) for _, images in batches] == [
        (128, 128),
        (85, 128),
        (85, 128),
        (128, 85),
    ]


def test_batches_match_reference(mixed_items):
    policy = ResizePolicy(image_size=None, max_size=128)

    _, images = collect(iter_image_batches(mixed_items, policy, 3))

    for index, item in enumerate(mixed_items):
        expected = reference_image(item, policy)
        np.testing.assert_array_equal(images[index].numpy(), expected)


def test_batches_fixed_size_in_input_order(mixed_items):
    policy = ResizePolicy(image_size=32, max_size=None)

    batches = list(iter_image_batches(mixed_items, policy, 4))

    assert [indices.tolist() for indices, _ in batches] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8],
    ]
    for _, images in batches:
        assert images.shape[1:] == (3, 32, 32)
    np.testing.assert_array_equal(
        batches[2][1][0].numpy(), reference_image(mixed_items[8], policy)
    )


@pytest.mark.parametrize("max_size", [None, 128])
def test_batches_same_with_workers(mixed_items, max_size):
    policy = ResizePolicy(image_size=None if max_size else 32, max_size=max_size)

    in_process = collect(iter_image_batches(mixed_items, policy, 3, n_workers=0))
    in_workers = collect(iter_image_batches(mixed_items, policy, 3, n_workers=2))

    assert [a.tolist() for a in in_process[0]] == [a.tolist() for a in in_workers[0]]
    for index, image in in_process[1].items():
        torch.testing.assert_close(in_workers[1][index], image, rtol=0, atol=0)


@pytest.mark.parametrize("n_workers", [0, 2])
@pytest.mark.parametrize("max_size", [None, 128])
def test_batches_missing_file(tmp_path, photo_paths, n_workers, max_size):
    policy = ResizePolicy(image_size=None if max_size else 32, max_size=max_size)
    missing = tmp_path / "gone.jpg"
    items = [*photo_paths[:3], missing, *photo_paths[3:]]

    with pytest.raises(ImageLoadError, match=r"cannot (load|read) image '.*gone\.jpg'"):
        list(iter_image_batches(items, policy, 2, n_workers=n_workers))


@pytest.mark.parametrize("max_size", [None, 128])
def test_batches_skip_unloadable(tmp_path, photo_paths, max_size):
    policy = ResizePolicy(image_size=None if max_size else 32, max_size=max_size)
    missing = tmp_path / "gone.jpg"
    items = [*photo_paths[:3], missing, *photo_paths[3:]]
    failures = []

    batches = iter_image_batches(items, policy, 2, on_error="skip", failures=failures)
    index_arrays, _ = collect(batches)

    assert sorted(np.concatenate(index_arrays).tolist()) == [0, 1, 2, 4, 5, 6, 7]
    assert len(failures) == 1
    assert failures[0][0] == 3
    assert f"'{missing}'" in failures[0][1]


def test_batches_warn_small_images(sample_photos):
    policy = ResizePolicy(image_size=None, max_size=128)
    items = [sample_photos["coffee"][:80, :100], sample_photos["coffee"][:30, :50]]

    with pytest.warns(UserWarning, match="1 images have a side below 64 px"):
        batches = list(iter_image_batches(items, policy, 2))

    # 100x80 is kept. 50x30 is scaled by 64 / 30 to 107x64.
    assert [tuple(images.shape[2:]) for _, images in batches] == [(80, 100), (64, 107)]


def test_batches_bucketing_rejects_1d_array():
    policy = ResizePolicy(image_size=None, max_size=128)
    items = [np.zeros((8, 8, 3), np.uint8), np.zeros(5, np.uint8)]

    with pytest.raises(ImageLoadError, match=r"X\[1\] is an array of shape \(5,\)"):
        list(iter_image_batches(items, policy, 2))


def test_batches_bucketing_decompression_bomb(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (64, 64)), tmp_path / "large.png")
    # Pillow raises DecompressionBombError above twice this many pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    policy = ResizePolicy(image_size=None, max_size=128)

    with pytest.raises(ImageLoadError, match=r"'.*large\.png'.*decompression bomb"):
        list(iter_image_batches([path], policy, 1))


def test_load_rgb_decompression_bomb(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (64, 64)), tmp_path / "large.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)

    with pytest.raises(ImageLoadError, match=r"'.*large\.png'.*decompression bomb"):
        load_rgb(path)

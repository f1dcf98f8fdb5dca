"""Odd images, numerical edge cases and persistence: never NaN, never silent."""

import copy
import io
import pickle
import warnings

import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from skcrosslayer import CrossLayerPooler, FeatureBinarizer, GlobalPooler, SignQuantizer
from skcrosslayer.backbones import load_network
from skcrosslayer.exceptions import (
    ImageLoadError,
    ImageLoadWarning,
    VersionMismatchWarning,
)

TINY = dict(backbone="alexnet", weights=None, image_size=64, n_workers=0)


@pytest.fixture(scope="module")
def tiny_pooler():
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    return CrossLayerPooler(**TINY, n_components=16, random_state=0).fit(photos)


@pytest.fixture(scope="module")
def lite_pooler():
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    photos += [np.ascontiguousarray(p[::-1]) for p in photos]
    return CrossLayerPooler(n_workers=0, n_components=64, random_state=0).fit(photos)


def broken_files(folder):
    """Files that are not readable images, each of a different kind."""
    png = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(png, format="PNG")
    files = {
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 3],
        "empty.jpg": b"",
        "text.jpg": b"this is not an image\n",
    }
    paths = {}
    for name, payload in files.items():
        path = folder / name
        path.write_bytes(payload)
        paths[name] = path
    paths["missing.png"] = folder / "missing.png"
    paths["folder.png"] = folder / "folder.png"
    paths["folder.png"].mkdir()
    return paths


@pytest.mark.parametrize(
    "name", ["truncated.png", "empty.jpg", "text.jpg", "missing.png", "folder.png"]
)
def test_unreadable_image_raises_with_path(tiny_pooler, tmp_path, name):
    path = broken_files(tmp_path)[name]
    with pytest.raises(ImageLoadError, match=f"cannot load image '.*{name}'"):
        tiny_pooler.transform([skimage.data.rocket(), str(path)])


@pytest.mark.parametrize("max_size", [None, 96])
def test_skip_returns_mask_in_input_order(tiny_pooler, tmp_path, max_size):
    paths = broken_files(tmp_path)
    good = [skimage.data.rocket(), skimage.data.camera()]
    X = [good[0], *map(str, paths.values()), good[1]]
    pooler = copy.deepcopy(tiny_pooler).set_params(on_error="skip")
    if max_size:
        pooler.set_params(image_size=None, max_size=max_size)
    features, valid = pooler.transform_with_mask(X)
    assert valid.tolist() == [True, False, False, False, False, False, True]
    assert np.all(features[~valid] == 0)
    assert np.all(np.isfinite(features))
    np.testing.assert_allclose(features[[0, 6]], pooler.transform(good), atol=5e-5)


def test_warn_names_the_failed_image(tiny_pooler, tmp_path):
    paths = broken_files(tmp_path)
    pooler = copy.deepcopy(tiny_pooler).set_params(on_error="warn")
    with pytest.warns(
        ImageLoadWarning, match="1 of 2 images could not be loaded.*text"
    ):
        pooler.transform([skimage.data.rocket(), str(paths["text.jpg"])])


def test_fit_fails_when_no_image_loads(tmp_path):
    paths = broken_files(tmp_path)
    pooler = CrossLayerPooler(**TINY, on_error="skip")
    with pytest.raises(ValueError, match="none of the 2 training images could be"):
        pooler.fit([str(paths["empty.jpg"]), str(paths["text.jpg"])])


def test_tiny_and_thin_images_are_upscaled(tiny_pooler):
    pooler = copy.deepcopy(tiny_pooler).set_params(image_size=None, max_size=128)
    # 3 x 90 is 30:1, within the 32:1 limit, and becomes 64 x 1920.
    images = [np.full((5, 7, 3), 90, np.uint8), np.zeros((3, 90, 3), np.uint8)]
    with pytest.warns(UserWarning, match="2 images have a side below 64 px"):
        features = pooler.transform(images)
    assert np.all(np.isfinite(features))


def test_too_elongated_image_is_rejected(tiny_pooler, tmp_path):
    pooler = copy.deepcopy(tiny_pooler).set_params(image_size=None, max_size=128)
    line = tmp_path / "line.png"
    Image.fromarray(np.zeros((1, 300, 3), np.uint8)).save(line)
    photo = skimage.data.coffee()
    with pytest.raises(
        ImageLoadError, match=r"line.png' is 300x1 px, an aspect ratio beyond 32:1"
    ):
        pooler.transform([photo, line])

    features, valid = pooler.set_params(on_error="skip").transform_with_mask(
        [line, photo]
    )
    assert valid.tolist() == [False, True]
    assert np.all(features[0] == 0)
    # Warped to a square, the same image is accepted.
    square = pooler.set_params(image_size=64, max_size=None).transform([line])
    assert np.all(np.isfinite(square))


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((224, 224, 3), np.uint8),
        np.full((224, 224, 3), 255, np.uint8),
        np.full((31, 17, 3), 128, np.uint8),
    ],
    ids=["black", "white", "tiny-constant"],
)
def test_flat_images_stay_finite_through_every_step(lite_pooler, image):
    features = lite_pooler.transform([image, skimage.data.coffee()])
    assert np.all(np.isfinite(features))
    signs = SignQuantizer().fit_transform(features)
    codes = FeatureBinarizer(block_size=64).fit_transform(features)
    assert set(np.unique(signs)) <= {-1, 0, 1}
    assert codes.dtype == np.uint8


def test_all_zero_guidance_gives_zero_blocks():
    # AlexNet with every conv bias at -1 and a black input: all activations are
    # zero, so every block is zero and the vector stays zero, not NaN.
    pooler = CrossLayerPooler(**TINY, pca=False).fit([np.zeros((64, 64, 3), np.uint8)])
    network = load_network("alexnet", weights=None)
    saved = {n: p.clone() for n, p in network.named_parameters() if "bias" in n}
    try:
        for name, parameter in network.named_parameters():
            if "features" in name and "bias" in name:
                parameter.data.fill_(-1.0)
        features = pooler.transform([np.zeros((64, 64, 3), np.uint8)])
    finally:
        for name, parameter in network.named_parameters():
            if name in saved:
                parameter.data.copy_(saved[name])
    assert np.all(features == 0)


def test_network_mode_does_not_matter(lite_pooler):
    photos = [skimage.data.rocket()]
    expected = lite_pooler.transform(photos)
    network = load_network("efficientnet_lite0")
    network.train()
    try:
        np.testing.assert_array_equal(lite_pooler.transform(photos), expected)
    finally:
        network.eval()


def test_cpu_results_repeat_exactly(lite_pooler):
    photos = [skimage.data.rocket(), skimage.data.chelsea()]
    np.testing.assert_array_equal(
        lite_pooler.transform(photos), lite_pooler.transform(photos)
    )


def test_deepcopy_and_pickle_give_same_features(tiny_pooler):
    photos = [skimage.data.rocket()]
    expected = tiny_pooler.transform(photos)
    for other in (copy.deepcopy(tiny_pooler), pickle.loads(pickle.dumps(tiny_pooler))):
        np.testing.assert_array_equal(other.transform(photos), expected)


def test_other_version_warns_on_load(tiny_pooler):
    state = tiny_pooler.__getstate__()
    state["_skcrosslayer_version"] = "0.0.1"
    restored = CrossLayerPooler.__new__(CrossLayerPooler)
    with pytest.warns(VersionMismatchWarning, match="saved with skcrosslayer 0.0.1"):
        restored.__setstate__(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VersionMismatchWarning)
        pickle.loads(pickle.dumps(tiny_pooler))


@pytest.mark.parametrize("n_workers", [0, 2], ids=["in_process", "decoding_workers"])
def test_grid_search_with_two_processes(n_workers):
    # With decoding workers, each joblib process starts its own DataLoader
    # workers, which needs a start method other than joblib's own.
    images, labels = [], []
    for label, photo in enumerate([skimage.data.chelsea(), skimage.data.rocket()]):
        for i in range(6):
            images.append(np.ascontiguousarray(photo[i * 10 :, i * 5 :]))
            labels.append(label)
    pipeline = Pipeline(
        [
            (
                "pooler",
                CrossLayerPooler(
                    **{**TINY, "n_workers": n_workers}, n_components=8, batch_size=4
                ),
            ),
            ("svm", LinearSVC()),
        ]
    )
    search = GridSearchCV(pipeline, {"svm__C": [0.1, 1.0]}, cv=2, n_jobs=2)
    search.fit(images, np.asarray(labels))
    assert search.best_score_ >= 0.5
    assert search.predict(images[:2]).shape == (2,)


def test_global_pooler_skips_too(tmp_path):
    paths = broken_files(tmp_path)
    pooler = GlobalPooler(**TINY, on_error="skip").fit([skimage.data.rocket()])
    features, valid = pooler.transform_with_mask(
        [str(paths["empty.jpg"]), skimage.data.rocket()]
    )
    assert valid.tolist() == [False, True]
    assert np.all(features[0] == 0)


# -- property-based: any mode, size and format ---------------------------------

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]
FORMATS = ["PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP"]


def random_image(mode, width, height, seed):
    rng = np.random.default_rng(seed)
    if mode in ("I;16",):
        return Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(0, 65535, (height, width)).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random((height, width), dtype=np.float32))
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return rgb.convert(mode)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    mode=st.sampled_from(MODES),
    file_format=st.sampled_from(FORMATS),
    width=st.integers(1, 160),
    height=st.integers(1, 160),
    seed=st.integers(0, 2**16),
)
def test_any_saved_image_gives_finite_row_or_clear_error(
    tiny_pooler, tmp_path, mode, file_format, width, height, seed
):
    image = random_image(mode, width, height, seed)
    path = tmp_path / f"{seed}-{mode.replace(';', '')}.{file_format.lower()}"
    try:
        image.save(path, format=file_format)
    except (OSError, ValueError, KeyError):
        return  # Pillow cannot write this mode in this format
    pooler = copy.deepcopy(tiny_pooler).set_params(image_size=None, max_size=96)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            features = pooler.transform([str(path)])
    except ImageLoadError as exc:
        assert str(path) in str(exc)
        return
    assert features.shape == (1, pooler.n_features_out_)
    assert np.all(np.isfinite(features))

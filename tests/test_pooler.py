"""CrossLayerPooler end to end: the real EfficientNet-Lite0 on real photos."""

import copy
import pickle
import warnings
from unittest import mock

import joblib
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image, ImageOps
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import InvalidParameterError

import skcrosslayer._base
from skcrosslayer import CrossLayerPooler, SignQuantizer
from skcrosslayer.backbones import load_network
from skcrosslayer.exceptions import GuidanceSignWarning, LayerError


def photos():
    """Six real photos from scikit-image, as uint8 RGB arrays of mixed sizes."""
    names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry"]
    images = [getattr(skimage.data, name)() for name in names]
    images.append(np.stack([skimage.data.camera()] * 3, axis=2))
    return images


def training_photos():
    """The photos and their mirror images: 12 x 49 units, enough for a full PCA."""
    return photos() + [np.ascontiguousarray(p[:, ::-1]) for p in photos()]


@pytest.fixture(scope="module")
def fitted():
    """The default pooler (real EfficientNet-Lite0 weights) fitted on the photos."""
    return CrossLayerPooler(n_workers=0, random_state=0).fit(training_photos())


@pytest.fixture(scope="module")
def features(fitted):
    return fitted.transform(photos())


def reference_features(pooler, images):
    """Slow reference: timm's modules called by hand, pooling in numpy loops."""
    network = load_network("efficientnet_lite0")
    rows = []
    for image in images:
        resized = Image.fromarray(image).resize((224, 224), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)
        x = ((x - 0.5) / 0.5).permute(2, 0, 1)[None]
        with torch.inference_mode():
            x = network.bn1(network.conv_stem(x))
            local = network.blocks(x)
            guidance = network.bn2(network.conv_head(local))
        local = local[0].double().numpy().reshape(320, -1).T  # (49, 320)
        guidance = guidance[0].double().numpy().reshape(1280, -1).T  # (49, 1280)
        projected = (local - pooler.pca_.mean_) @ pooler.pca_.components_.T
        blocks = np.zeros((1280, projected.shape[1]))
        for k in range(1280):
            for i in range(len(projected)):
                blocks[k] += guidance[i, k] * projected[i]
            norm = np.linalg.norm(blocks[k])
            blocks[k] = blocks[k] / norm if norm > 0 else blocks[k]
        vector = blocks.reshape(-1)
        vector = np.sign(vector) * np.sqrt(np.abs(vector))
        rows.append(vector / np.linalg.norm(vector))
    return np.asarray(rows)


def test_default_output_shape_and_norm(fitted, features):
    assert fitted.layers_ == ("blocks.6", "conv_head")
    assert fitted.n_guidance_channels_ == 1280
    assert fitted.n_components_ == 320
    assert features.shape == (6, 1280 * 320)
    assert features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)


def test_transform_matches_slow_reference(fitted, features):
    expected = reference_features(fitted, photos()[:2])
    np.testing.assert_allclose(features[:2], expected, atol=2e-5)


def test_pca_only_decorrelates(fitted):
    # n_components=None keeps every dim: the components form a rotation.
    components = fitted.pca_.components_
    np.testing.assert_allclose(components @ components.T, np.eye(320), atol=1e-6)


def test_pca_makes_features_signed(features):
    # Post-ReLU features alone would pool to almost all-positive vectors.
    # Guidance channels that never fire give all-zero blocks.
    nonzero = features[features != 0]
    assert 0.3 < np.mean(nonzero > 0) < 0.7


def test_edited_copy_is_nearest(fitted, features):
    # A flipped, slightly cropped copy of each photo retrieves that photo.
    copies = [
        np.asarray(ImageOps.mirror(Image.fromarray(p)).crop((10, 10, 400, 400)))
        for p in photos()
    ]
    similarities = fitted.transform(copies) @ features.T
    np.testing.assert_array_equal(similarities.argmax(axis=1), np.arange(6))


# Convolutions round differently for other batch sizes (float32, about 1e-7
# relative), and the signed square root magnifies that near zero, where
# d sqrt(v) = dv / (2 sqrt(v)). Unit-norm vectors of 409,600 dims.
BATCH_ATOL = 5e-5


def test_batches_match_one_at_a_time(fitted, features):
    one_by_one = np.concatenate([fitted.transform([p]) for p in photos()])
    np.testing.assert_allclose(one_by_one, features, atol=BATCH_ATOL)
    batched = clone(fitted).set_params(batch_size=4, n_workers=2)
    batched.fit(training_photos())
    np.testing.assert_allclose(batched.transform(photos()), features, atol=BATCH_ATOL)


def test_inputs_paths_pil_and_arrays_agree(fitted, features, tmp_path):
    images = photos()
    path = tmp_path / "astronaut.png"
    Image.fromarray(images[0]).save(path)
    mixed = [str(path), Image.fromarray(images[1]), images[2]]
    np.testing.assert_allclose(fitted.transform(mixed), features[:3], atol=BATCH_ATOL)


def test_aspect_kept_batches_by_size(fitted):
    pooler = clone(fitted).set_params(max_size=128, batch_size=3, n_components=64)
    pooler.fit(training_photos())
    batched = pooler.transform(photos())
    one_by_one = np.concatenate([pooler.transform([p]) for p in photos()])
    np.testing.assert_allclose(batched, one_by_one, atol=BATCH_ATOL)


def test_fit_is_deterministic(fitted):
    again = clone(fitted).fit(training_photos())
    np.testing.assert_array_equal(again.pca_.components_, fitted.pca_.components_)


def test_neighborhood_three_and_max_pooling():
    pooler = CrossLayerPooler(
        neighborhood=3, n_components=64, pooling="max", n_workers=0, random_state=0
    ).fit(photos())
    # 7x7 grid, interior 5x5 units, local features of 3 * 3 * 320 dims
    assert pooler.n_local_features_ == 2880
    assert pooler.n_fit_samples_ == 6 * 25
    output = pooler.transform(photos()[:2])
    assert output.shape == (2, 1280 * 64)
    assert np.all(np.isfinite(output))


def test_without_pca_keeps_raw_local_features():
    pooler = CrossLayerPooler(pca=False, n_workers=0).fit(photos()[:1])
    assert pooler.pca_ is None
    output = pooler.transform(photos()[:2])
    assert output.shape == (2, 1280 * 320)


def test_feature_names(fitted):
    names = fitted.get_feature_names_out()
    assert len(names) == fitted.n_features_out_
    assert names[0] == "g0_c0"
    assert names[321] == "g1_c1"


def test_joblib_round_trip(fitted, features, tmp_path):
    path = tmp_path / "pooler.joblib"
    joblib.dump(fitted, path)
    # The network is rebuilt from the parameters, never stored.
    assert path.stat().st_size < 2_000_000
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.transform(photos()[:2]), features[:2])


def test_pickle_holds_no_tensors(fitted):
    payload = pickle.dumps(fitted)
    assert b"torch" not in payload


def test_clone_is_unfitted(fitted):
    fresh = clone(fitted)
    assert fresh.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):
        fresh.transform(photos()[:1])


def grid_search_images():
    """Two real photos, each under 8 edits: a small two-class problem."""
    images, labels = [], []
    for label, photo in enumerate([skimage.data.chelsea(), skimage.data.rocket()]):
        base = Image.fromarray(photo)
        for i in range(8):
            edited = base.rotate(5 * i).crop(
                (i * 8, i * 4, base.width - i * 6, base.height)
            )
            images.append(np.asarray(edited if i % 2 else ImageOps.mirror(edited)))
            labels.append(label)
    return images, np.asarray(labels)


def test_pipeline_in_grid_search():
    images, labels = grid_search_images()
    pipeline = Pipeline(
        [
            (
                "pooler",
                CrossLayerPooler(
                    image_size=96, n_components=32, n_workers=0, random_state=0
                ),
            ),
            ("signs", SignQuantizer()),
            ("svm", LinearSVC(random_state=0)),
        ]
    )
    search = GridSearchCV(
        pipeline, {"svm__C": [0.1, 1.0], "pooler__signed_sqrt": [True, False]}, cv=2
    )
    search.fit(images, labels)
    assert search.best_score_ == 1.0
    assert search.predict(images[:3]).tolist() == labels[:3].tolist()


def test_pipeline_memory_skips_second_fit(tmp_path):
    images, labels = grid_search_images()

    def build():
        return Pipeline(
            [
                (
                    "pooler",
                    CrossLayerPooler(
                        image_size=96, n_components=32, n_workers=0, random_state=0
                    ),
                ),
                ("svm", LinearSVC(random_state=0)),
            ],
            memory=joblib.Memory(tmp_path, verbose=0),
        )

    first = build().fit(images, labels)
    with mock.patch.object(
        skcrosslayer._base,
        "iter_activations",
        wraps=skcrosslayer._base.iter_activations,
    ) as spy:
        second = build().fit(images, labels)
    assert spy.call_count == 0
    np.testing.assert_array_equal(
        second.decision_function(images[:2]), first.decision_function(images[:2])
    )


def test_unknown_layer_lists_valid_layers():
    pooler = CrossLayerPooler("alexnet", weights=None, layers=("conv4", "conv6"))
    with pytest.raises(
        LayerError,
        match=r"layer 'conv6' not found in alexnet; valid "
        r"layers: conv1, conv2, conv3, conv4, conv5",
    ):
        pooler.fit(photos()[:1])


def test_layers_on_different_grids():
    pooler = CrossLayerPooler(
        "alexnet", weights=None, layers=("conv2", "conv5"), n_workers=0
    )
    with pytest.raises(
        LayerError,
        match=r"'conv2' \(27x27\).*'conv5' \(13x13\).*"
        r"different grids",
    ):
        pooler.fit(photos()[:1])


def test_linear_guidance_layer_warns():
    pooler = CrossLayerPooler(
        layers=("blocks.5", "blocks.6.0.conv_pwl"), n_workers=0, n_components=8
    )
    with pytest.warns(GuidanceSignWarning, match="'blocks.6.0.conv_pwl'.*conv_head"):
        pooler.fit(photos()[:1])


def test_nonnegative_guidance_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", GuidanceSignWarning)
        CrossLayerPooler(
            layers=("blocks.5", "blocks.6.0.conv_pw"), n_workers=0, n_components=8
        ).fit(photos()[:1])


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"neighborhood": 2}, ValueError, "neighborhood must be odd.*got 2"),
        ({"image_size": 224, "max_size": 512}, ValueError, "set image_size=None"),
        ({"layers": ("conv4",)}, LayerError, "must be a .local, guidance. pair"),
        ({"n_components": 5000}, ValueError, "n_components=5000 exceeds"),
        ({"backbone": "vgg11"}, InvalidParameterError, "'backbone' parameter"),
        ({"pooling": "mean"}, InvalidParameterError, "'pooling' parameter"),
    ],
)
def test_invalid_parameters(params, error, match):
    params = {"backbone": "alexnet", "weights": None, "n_workers": 0, **params}
    with pytest.raises(error, match=match):
        CrossLayerPooler(**params).fit(photos()[:1])


@pytest.mark.parametrize(
    ("X", "match"),
    [
        ([], "X is empty"),
        (np.zeros((5, 3)), r"X is an array of shape \(5, 3\)"),
        ("photo.jpg", "got a single 'photo.jpg'; wrap it in a list"),
    ],
)
def test_invalid_inputs(X, match):
    with pytest.raises((ValueError, TypeError), match=match):
        CrossLayerPooler(n_workers=0).fit(X)


def test_channel_strengths_are_mean_guidance(fitted, features):
    pooler = clone(fitted).set_params(channel_strengths=True).fit(training_photos())
    output = pooler.transform(photos()[:2])
    assert output.shape == (2, 1280 * 320 + 1280)
    np.testing.assert_allclose(output[:, : 1280 * 320], features[:2], atol=BATCH_ATOL)
    network = load_network("efficientnet_lite0")
    image = Image.fromarray(photos()[0]).resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    x = ((x - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.inference_mode():
        local = network.blocks(network.bn1(network.conv_stem(x)))
        guidance = network.bn2(network.conv_head(local))
    np.testing.assert_allclose(
        output[0, 1280 * 320 :],
        guidance[0].mean(dim=(1, 2)).numpy(),
        rtol=1e-4,
        atol=1e-5,
    )
    assert pooler.get_feature_names_out()[-1] == "strength_g1279"


def test_float16_output(fitted, features):
    half = clone(fitted).set_params(dtype="float16").fit(training_photos())
    output = half.transform(photos()[:2])
    assert output.dtype == np.float16
    np.testing.assert_allclose(output, features[:2], atol=1e-3)


def test_transform_to_npy_streams_to_disk(fitted, features, tmp_path):
    path = tmp_path / "features.npy"
    on_disk = fitted.transform_to_npy(iter(photos()), path)
    assert isinstance(on_disk, np.memmap)
    np.testing.assert_array_equal(np.load(path), on_disk)
    np.testing.assert_allclose(on_disk, features, atol=BATCH_ATOL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npy"]


def test_generator_input_is_read_once(fitted, features):
    output = fitted.transform(p for p in photos())
    np.testing.assert_allclose(output, features, atol=BATCH_ATOL)


def test_bfloat16_forward_stays_close(fitted, features):
    # The same fitted PCA: a refit on bfloat16 activations may flip the signs
    # or order of components, which is unrelated to the forward pass.
    reduced = copy.deepcopy(fitted).set_params(precision="bfloat16")
    output = reduced.transform(photos())
    assert output.dtype == np.float32
    cosine = np.sum(output * features, axis=1)  # both unit norm
    # Measured 0.94 to 0.97 on these photos (CPU): bfloat16 keeps 8 bits of
    # mantissa, and the signed square root amplifies small pooled values.
    assert np.all(cosine > 0.9)

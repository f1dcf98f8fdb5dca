"""RegionalCrossLayerPooler: region geometry, dense vs per-region, training, API.

Most tests run AlexNet with random weights on small grids (128 px images,
64 px regions at stride 32, a 3 x 3 grid), where a trained network adds
nothing. One test runs the real EfficientNet-Lite0 on real photos.
"""

import joblib
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import InvalidParameterError

from skcrosslayer._regions import _RegionNetwork
from skcrosslayer.backbones import load_network
from skcrosslayer.regional import (
    RegionalCrossLayerPooler,
    region_grid,
    train_guidance_layer,
)

SMALL = dict(
    image_size=128,
    region_size=64,
    region_stride=32,
    region_input_size=128,
    n_components=16,
    n_filters=8,
    n_epochs=10,
    training_batch_size=4,
    n_workers=0,
)


def edited_photos(photo: np.ndarray, n_copies: int) -> list[np.ndarray]:
    """Return ``n_copies`` crops of ``photo``, every second one mirrored."""
    image = Image.fromarray(photo)
    width, height = image.size
    boxes = [(0, 0, 1, 1), (0, 0, 0.8, 0.8), (0.2, 0.2, 1, 1), (0.15, 0.1, 0.85, 0.9)]
    copies = []
    for i in range(n_copies):
        left, top, right, bottom = boxes[i % len(boxes)]
        box = (
            round(left * width),
            round(top * height),
            round(right * width),
            round(bottom * height),
        )
        copy = image.crop(box)
        if i % 2:
            copy = ImageOps.mirror(copy)
        copies.append(np.asarray(copy))
    return copies


@pytest.fixture(scope="module")
def two_classes():
    """Six edits of a cat photo (class 0) and six of a coffee cup (class 1)."""
    images = edited_photos(skimage.data.chelsea(), 6)
    images += edited_photos(skimage.data.coffee(), 6)
    return images, np.array([0] * 6 + [1] * 6)


@pytest.fixture(scope="module")
def raw_features(two_classes):
    """AlexNet (random weights) fc6 features of the 3 x 3 regions of each image."""
    pooler = RegionalCrossLayerPooler("alexnet", None, **SMALL)
    return pooler.extract_regional_features(two_classes[0])


def small_pooler(**params) -> RegionalCrossLayerPooler:
    return RegionalCrossLayerPooler("alexnet", None, **{**SMALL, **params})


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def reference_vectors(pooler, raw: np.ndarray) -> np.ndarray:
    """Slow reference of transform: numpy loops over images and channels."""
    network = load_network(pooler.backbone, pooler.weights)
    fc7 = network.classifier[4]
    rows = []
    for features in raw.astype(np.float64):
        projected = (features - pooler.pca_.mean_) @ pooler.pca_.components_.T
        if pooler.guidance == "trained":
            maps = projected @ pooler.guidance_weight_.T + pooler.guidance_bias_
        else:
            maps = features @ fc7.weight.double().numpy().T + fc7.bias.double().numpy()
        maps = np.maximum(maps, 0.0)
        blocks = []
        for k in range(maps.shape[1]):
            block = (maps[:, k : k + 1] * projected).sum(axis=0)
            norm = np.linalg.norm(block)
            blocks.append(block / norm if norm > 0 else block)
        vector = np.concatenate(blocks)
        vector = np.sign(vector) * np.sqrt(np.abs(vector))
        rows.append(vector / np.linalg.norm(vector))
    return np.asarray(rows)


# -- geometry --------------------------------------------------------------------


def test_region_grid_by_hand():
    corners = region_grid(128, 64, 32)
    expected = [[t, left] for t in (0, 32, 64) for left in (0, 32, 64)]
    assert corners.tolist() == expected


def test_region_grid_default_is_13_by_13():
    corners = region_grid(512, 128, 32)
    assert corners.shape == (169, 2)
    assert corners[12].tolist() == [0, 384]
    assert corners[13].tolist() == [32, 0]
    assert corners[-1].tolist() == [384, 384]


def test_region_grid_drops_uncovered_border():
    # (130 - 64) // 32 + 1 = 3 starts per side; pixels 128 and 129 are in no region.
    assert region_grid(130, 64, 32)[:, 1].max() == 64


def test_region_grid_rejects_large_region():
    with pytest.raises(
        ValueError, match="region_size=200 is larger than image_size=128"
    ):
        region_grid(128, 200, 32)


def test_default_geometry_warps_regions_to_256():
    geometry = RegionalCrossLayerPooler()._geometry()
    # 224 px would put region starts 32 * 224 / 128 = 56 px = 1.75 cells apart;
    # 256 px puts them 64 px = 2 cells apart on a 1024 px enlarged image.
    assert geometry.region_input_size == 256
    assert geometry.enlarged_size == 1024
    assert geometry.cell_stride() == 2
    assert geometry.n_rows == 13


def test_default_geometry_of_small_grid():
    # Supported sizes are multiples of 64 * 32 / 32 = 64; the nearest to 224 is 256.
    geometry = small_pooler(region_input_size=None)._geometry()
    assert geometry.region_input_size == 256
    assert geometry.cell_stride() == 4


def test_dense_rejects_unaligned_input_size():
    with pytest.raises(ValueError, match="needs a multiple of 128, such as 128 or 256"):
        RegionalCrossLayerPooler(region_input_size=224)._geometry()
    per_region = RegionalCrossLayerPooler(region_input_size=224, dense=False)
    assert per_region._geometry().region_input_size == 224


# -- dense path against the per-region reference -----------------------------------


@pytest.mark.parametrize("window", [5, 6, 7])
def test_fc6_head_on_shared_map_matches_windows(window):
    # window 6 is fc6's own 6 x 6 input, 7 pools pairs of cells (a 2 x 2 mean),
    # 5 goes through the network's adaptive pooling window by window.
    region_network = _RegionNetwork("alexnet", load_network("alexnet", None))
    maps = torch.rand(
        2, 256, window + 4, window + 4, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        dense = region_network.dense_region_features(maps, window, 2, 3)
        windows = [
            maps[:, :, 2 * i : 2 * i + window, 2 * j : 2 * j + window]
            for i in range(3)
            for j in range(3)
        ]
        reference = torch.stack([region_network.region_features(w) for w in windows], 1)
    assert dense.shape == (2, 9, 4096)
    # Outputs are about 0.3; the conv sums 9216 products in another order.
    torch.testing.assert_close(dense, reference, rtol=1e-4, atol=1e-5)


def test_average_head_on_shared_map_matches_windows():
    region_network = _RegionNetwork(
        "efficientnet_lite0", load_network("efficientnet_lite0", None)
    )
    maps = torch.rand(1, 1280, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        dense = region_network.dense_region_features(maps, 8, 2, 3)
    # Region (1, 2) averages cells 2..9 down and 4..11 across.
    expected = maps[0, :, 2:10, 4:12].mean(dim=(1, 2))
    torch.testing.assert_close(dense[0, 5], expected)


def padding_free_trunk(self, images):
    """A trunk with output stride 32 and no padding: 32 x 32 means, 1x1 conv."""
    n_channels = 256 if self.has_fc6 else 1280
    weight = torch.linspace(-1, 1, n_channels * 3).view(n_channels, 3, 1, 1)
    return torch.relu(F.conv2d(F.avg_pool2d(images, 32), weight))


@pytest.mark.parametrize("backbone", ["alexnet", "efficientnet_lite0"])
@pytest.mark.parametrize("region_stride", [32, 64])
def test_dense_equals_per_region_without_padding(
    monkeypatch, two_classes, backbone, region_stride
):
    # Without padding and resampling (regions warped to their own size) the two
    # paths see the same pixels, so only float rounding separates them.
    monkeypatch.setattr(_RegionNetwork, "trunk", padding_free_trunk)
    params = dict(
        image_size=64 + 2 * region_stride,
        region_size=64,
        region_stride=region_stride,
        region_input_size=64,
        n_workers=0,
    )
    images = two_classes[0][:2]
    dense = RegionalCrossLayerPooler(backbone, None, **params)
    per_region = RegionalCrossLayerPooler(backbone, None, dense=False, **params)
    expected = per_region.extract_regional_features(images)
    np.testing.assert_allclose(
        dense.extract_regional_features(images), expected, rtol=1e-4, atol=1e-6
    )


def test_dense_close_to_per_region_alexnet(two_classes):
    # Every fc6 unit of AlexNet at 256 px depends on pixels near the crop
    # border. There the per-region path reads the convolutions' zero padding
    # and the bilinear warp's clamped edge, and the dense path reads the
    # neighbouring image. Measured on these photos: cosine 0.992 at worst.
    images = two_classes[0][:2] + two_classes[0][6:8]
    params = dict(SMALL, region_input_size=256)
    dense = RegionalCrossLayerPooler("alexnet", None, **params)
    per_region = RegionalCrossLayerPooler("alexnet", None, dense=False, **params)
    a = dense.extract_regional_features(images)
    b = per_region.extract_regional_features(images)
    assert cosine(a, b).min() > 0.98
    # Each dense region is closest to its own per-region reference.
    for image_a, image_b in zip(a, b):
        similarity = cosine(image_a[:, None, :], image_b[None, :, :])
        assert (similarity.argmax(axis=1) == np.arange(9)).all()


def test_efficientnet_lite0_real_photos():
    # The real network reads far beyond a region's border, so dense and
    # per-region features differ more than with random AlexNet (measured on
    # this photo: cosine 0.77 at worst, 0.85 median), but each dense region
    # still matches its own reference best.
    params = dict(
        image_size=256, region_size=128, region_stride=64, n_workers=0, random_state=0
    )
    photos = [skimage.data.chelsea(), skimage.data.coffee()]
    dense = RegionalCrossLayerPooler(**params)
    assert dense._geometry().region_input_size == 256
    a = dense.extract_regional_features(photos[:1])
    b = RegionalCrossLayerPooler(dense=False, **params).extract_regional_features(
        photos[:1]
    )
    assert a.shape == (1, 9, 1280)
    assert np.median(cosine(a, b)) > 0.8
    assert cosine(a, b).min() > 0.7
    for image_a, image_b in zip(a, b):
        similarity = cosine(image_a[:, None, :], image_b[None, :, :])
        assert (similarity.argmax(axis=1) == np.arange(9)).all()

    images = edited_photos(photos[0], 4) + edited_photos(photos[1], 4)
    pooler = RegionalCrossLayerPooler(
        n_components=16, n_filters=8, n_epochs=10, training_batch_size=4, **params
    )
    vectors = pooler.fit_transform(images, ["cat"] * 4 + ["cup"] * 4)
    assert pooler.layers_ == (
        "conv_head (region average)",
        "trained 1x1 conv (8 filters)",
    )
    assert pooler.training_accuracy_ == 1.0
    assert vectors.shape == (8, 8 * 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


# -- guidance training ----------------------------------------------------------------


def test_training_is_deterministic(raw_features, two_classes):
    y = two_classes[1]
    first = small_pooler(precomputed=True, random_state=0).fit(raw_features, y)
    second = small_pooler(precomputed=True, random_state=0).fit(raw_features, y)
    other = small_pooler(precomputed=True, random_state=1).fit(raw_features, y)
    for name in ["guidance_weight_", "guidance_bias_", "classifier_weight_"]:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.loss_curve_ == second.loss_curve_
    assert not np.array_equal(first.guidance_weight_, other.guidance_weight_)


def test_training_learns_two_classes(raw_features, two_classes):
    pooler = small_pooler(precomputed=True, random_state=0)
    pooler.fit(raw_features, np.where(two_classes[1] == 0, "cat", "cup"))
    assert pooler.loss_curve_[-1] < 0.5 * pooler.loss_curve_[0]
    assert pooler.training_accuracy_ == 1.0
    assert pooler.classes_.tolist() == ["cat", "cup"]
    assert pooler.guidance_weight_.shape == (8, 16)
    assert pooler.classifier_weight_.shape == (2, 8)


def test_feature_scale_only_rescales_weight():
    features = np.random.default_rng(0).normal(size=(6, 4, 3)).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1, 2])
    plain = train_guidance_layer(features, targets, n_filters=5, n_epochs=3, seed=0)
    scaled = train_guidance_layer(
        features * 10, targets, n_filters=5, n_epochs=3, seed=0, feature_scale=10.0
    )
    np.testing.assert_allclose(scaled.weight * 10, plain.weight, rtol=1e-5)
    np.testing.assert_allclose(scaled.loss_curve, plain.loss_curve, rtol=1e-5)


def test_multilabel_targets(raw_features, two_classes):
    # Label 0: cat, label 1: cup, label 2: the unedited and mirrored copies.
    y = np.zeros((12, 3), dtype=int)
    y[two_classes[1] == 0, 0] = 1
    y[two_classes[1] == 1, 1] = 1
    y[np.arange(12) % 2 == 1, 2] = 1
    pooler = small_pooler(precomputed=True, random_state=0, n_epochs=20)
    vectors = pooler.fit_transform(raw_features, y)
    assert pooler.classes_.tolist() == [0, 1, 2]
    assert pooler.classifier_weight_.shape == (3, 8)
    assert pooler.loss_curve_[-1] < pooler.loss_curve_[0]
    assert 0.0 <= pooler.training_accuracy_ <= 1.0
    assert vectors.shape == (12, 8 * 16)


# -- transform ------------------------------------------------------------------------


@pytest.mark.parametrize("guidance", ["trained", "fc"])
def test_transform_matches_numpy_reference(raw_features, two_classes, guidance):
    pooler = small_pooler(precomputed=True, random_state=0, guidance=guidance)
    pooler.fit(raw_features, two_classes[1])
    vectors = pooler.transform(raw_features[:3])
    np.testing.assert_allclose(
        vectors, reference_vectors(pooler, raw_features[:3]), rtol=1e-4, atol=1e-6
    )


def test_fc_guidance_attributes(raw_features):
    pooler = small_pooler(precomputed=True, guidance="fc").fit(raw_features)
    assert pooler.layers_ == ("fc6", "fc7")
    assert pooler.n_guidance_channels_ == 4096
    assert pooler.n_features_out_ == 4096 * 16
    assert pooler.guidance_weight_ is None
    assert pooler.get_feature_names_out()[16] == "g1_c0"


@pytest.mark.parametrize("guidance", ["trained", "fc"])
def test_fit_transform_equals_fit_then_transform(raw_features, two_classes, guidance):
    y = two_classes[1]
    pooler = small_pooler(precomputed=True, random_state=0, guidance=guidance)
    once = pooler.fit_transform(raw_features, y)
    np.testing.assert_allclose(once, pooler.transform(raw_features), atol=1e-6)


def test_images_and_precomputed_agree(raw_features, two_classes):
    images, y = two_classes
    from_images = small_pooler(random_state=0).fit(images, y)
    precomputed = small_pooler(random_state=0, precomputed=True).fit(raw_features, y)
    np.testing.assert_array_equal(
        from_images.guidance_weight_, precomputed.guidance_weight_
    )
    np.testing.assert_allclose(
        from_images.transform(images[:3]),
        precomputed.transform(raw_features[:3]),
        atol=1e-6,
    )


def test_unreadable_image_gives_zero_row(tmp_path, two_classes, raw_features):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    images, y = two_classes
    pooler = small_pooler(random_state=0, on_error="skip")
    vectors = pooler.fit_transform([*images, broken], [*y, 1])
    assert not vectors[-1].any()
    clean = small_pooler(random_state=0, precomputed=True).fit(raw_features, y)
    np.testing.assert_array_equal(pooler.guidance_weight_, clean.guidance_weight_)
    _, valid = pooler.transform_with_mask([images[0], broken])
    assert valid.tolist() == [True, False]


def test_pca_sample_size(raw_features, two_classes):
    pooler = small_pooler(precomputed=True, n_fit_samples=50, random_state=0)
    pooler.fit(raw_features, two_classes[1])
    assert pooler.n_fit_samples_ == 50
    assert pooler.pca_.n_samples_ == 50


# -- scikit-learn integration ---------------------------------------------------------


def test_pipeline_grid_search_on_images(two_classes):
    images, y = two_classes
    pipeline = Pipeline(
        [("regional", small_pooler(random_state=0)), ("svm", LinearSVC())]
    )
    search = GridSearchCV(pipeline, {"svm__C": [0.1, 10.0]}, cv=2)
    search.fit(images, y)
    assert search.predict(images[:2]).shape == (2,)


def test_grid_search_over_training_on_precomputed(raw_features, two_classes):
    pipeline = Pipeline(
        [
            ("regional", small_pooler(precomputed=True, random_state=0)),
            ("svm", LinearSVC()),
        ]
    )
    grid = {"regional__n_filters": [4, 8]}
    search = GridSearchCV(pipeline, grid, cv=2).fit(raw_features, two_classes[1])
    assert set(search.best_params_) == set(grid)
    assert search.score(raw_features, two_classes[1]) == 1.0


def test_joblib_round_trip(tmp_path, raw_features, two_classes):
    pooler = small_pooler(precomputed=True, random_state=0)
    pooler.fit(raw_features, two_classes[1])
    path = tmp_path / "regional.joblib"
    joblib.dump(pooler, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(
        loaded.transform(raw_features), pooler.transform(raw_features)
    )
    for name in ["guidance_weight_", "guidance_bias_", "classifier_weight_"]:
        value = getattr(loaded, name)
        assert type(value) is np.ndarray
        assert value.dtype == np.float32


def test_target_required_tag():
    assert RegionalCrossLayerPooler().__sklearn_tags__().target_tags.required
    assert (
        not RegionalCrossLayerPooler(guidance="fc")
        .__sklearn_tags__()
        .target_tags.required
    )


# -- errors ---------------------------------------------------------------------------


def test_trained_guidance_needs_y(raw_features):
    with pytest.raises(
        ValueError, match="requires y to be passed, but the target y is None"
    ):
        small_pooler(precomputed=True).fit(raw_features)


def test_y_length_must_match(raw_features):
    with pytest.raises(ValueError, match="y has 3 labels but X has 12 images"):
        small_pooler(precomputed=True).fit(raw_features, [0, 1, 0])


def test_continuous_y_rejected(raw_features):
    with pytest.raises(ValueError, match="target type 'continuous'"):
        small_pooler(precomputed=True).fit(raw_features, np.linspace(0, 1, 12))


def test_single_class_rejected(raw_features):
    with pytest.raises(ValueError, match="single class 'cat'"):
        small_pooler(precomputed=True).fit(raw_features, ["cat"] * 12)


def test_too_many_components(raw_features, two_classes):
    with pytest.raises(
        ValueError, match=r"n_components=200 exceeds .* \(at most 108\)"
    ):
        small_pooler(precomputed=True, n_components=200).fit(
            raw_features, two_classes[1]
        )


def test_default_components_capped_with_warning(raw_features, two_classes):
    pooler = small_pooler(precomputed=True, n_components=None, n_epochs=1)
    with pytest.warns(UserWarning, match="only 108 region features were sampled"):
        pooler.fit(raw_features, two_classes[1])
    assert pooler.n_components_ == 108


def test_precomputed_shape_checked(raw_features, two_classes):
    with pytest.raises(
        ValueError, match=r"shape \(n_images, 9, 4096\) .* \(12, 4, 4096\)"
    ):
        small_pooler(precomputed=True).fit(raw_features[:, :4], two_classes[1])


def test_invalid_guidance_name():
    with pytest.raises(InvalidParameterError, match="'guidance' parameter"):
        small_pooler(guidance="fc7").fit(np.zeros((2, 64, 64, 3), np.uint8), [0, 1])


def test_region_input_too_small(two_classes):
    pooler = small_pooler(region_input_size=32, dense=False)
    with pytest.raises(
        ValueError, match="region_input_size=32 is too small for alexnet"
    ):
        pooler.extract_regional_features(two_classes[0][:1])


def test_region_larger_than_image():
    with pytest.raises(
        ValueError, match="region_size=256 is larger than image_size=128"
    ):
        small_pooler(region_size=256)._geometry()


def test_transform_before_fit(raw_features):
    with pytest.raises(NotFittedError):
        small_pooler(precomputed=True).transform(raw_features)

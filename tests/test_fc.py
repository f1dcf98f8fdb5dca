"""Tests of FullyConnectedPooler against hand-run torchvision classifier modules.

The network is AlexNet with seeded random weights (weights=None); the images
are real photos from scikit-image and scikit-learn at 64 px.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from skcrosslayer.backbones import BACKBONES, load_network
from skcrosslayer.exceptions import BackboneError
from skcrosslayer.fc import (
    FC_BACKBONES,
    FullyConnectedPooler,
    crop_views,
    fc_layer_spec,
    view_resize_size,
)

SIZE = 64
# round(64 * 256 / 224): the side images are warped to before 64 px crops.
RESIZED = 73


def make_pooler(**params) -> FullyConnectedPooler:
    defaults = dict(
        backbone="alexnet",
        weights=None,
        image_size=SIZE,
        n_workers=0,
        device="cpu",
        normalize=False,
    )
    return FullyConnectedPooler(**{**defaults, **params})


def load_resized(path, side: int) -> np.ndarray:
    """Decode an image file to RGB and warp it to side x side as the pipeline does."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    return np.asarray(rgb.resize((side, side), Image.Resampling.BILINEAR))


def reference_fc(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Run AlexNet's modules one by one on uint8 arrays; return fc6 and fc7."""
    network = load_network("alexnet", weights=None)
    spec = BACKBONES["alexnet"]
    images = np.stack(arrays).astype(np.float32) / 255.0
    images = (images - np.float32(spec.mean)) / np.float32(spec.std)
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    classifier = network.classifier
    with torch.inference_mode():
        pooled = torch.flatten(network.avgpool(network.features(inputs)), 1)
        # classifier: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear
        fc6 = torch.relu(classifier[1](pooled))
        fc7 = torch.relu(classifier[4](fc6))
    return fc6.numpy(), fc7.numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale)


# ---------------------------------------------------------------- the layer table


@pytest.mark.parametrize("backbone", FC_BACKBONES)
def test_fc_modules_are_linear_then_relu(backbone: str) -> None:
    # Built on the meta device: only the module structure is read.
    with torch.device("meta"):
        network = torchvision.models.get_model(backbone, weights=None)
    for layer in ("fc6", "fc7"):
        spec = fc_layer_spec(backbone, layer)
        index = int(spec.module.split(".")[1])
        linear = network.classifier[index]
        assert isinstance(linear, nn.Linear)
        assert linear.out_features == 4096
        assert isinstance(network.classifier[index + 1], nn.ReLU)
        assert spec.activation == "relu"
    first = fc_layer_spec(backbone, "fc6").module
    second = fc_layer_spec(backbone, "fc7").module
    linears = [i for i, m in enumerate(network.classifier) if isinstance(m, nn.Linear)]
    assert [first, second] == [f"classifier.{i}" for i in linears[:2]]


def test_view_resize_size_values() -> None:
    assert view_resize_size("whole", 224) == 224
    assert view_resize_size("center", 224) == 256
    assert view_resize_size("ten_crop", 224) == 256
    assert view_resize_size("ten_crop", SIZE) == RESIZED


# ----------------------------------------------------------------------- crop_views


def test_crop_views_ten_crop_hand_values() -> None:
    images = torch.arange(16.0).reshape(1, 1, 4, 4)

    views = crop_views(images, "ten_crop", 2)

    assert views.shape == (1, 10, 1, 2, 2)
    expected = [
        [[0, 1], [4, 5]],  # top-left
        [[2, 3], [6, 7]],  # top-right
        [[8, 9], [12, 13]],  # bottom-left
        [[10, 11], [14, 15]],  # bottom-right
        [[5, 6], [9, 10]],  # centre, starting at (4 - 2) // 2 = 1
        [[1, 0], [5, 4]],  # the same five, mirrored left to right
        [[3, 2], [7, 6]],
        [[9, 8], [13, 12]],
        [[11, 10], [15, 14]],
        [[6, 5], [10, 9]],
    ]
    assert views[0, :, 0].tolist() == expected


def test_crop_views_match_indexing_loop() -> None:
    images = torch.randn(3, 2, 9, 9, generator=torch.Generator().manual_seed(0))
    crop = 5

    views = crop_views(images, "ten_crop", crop)

    array = images.numpy()
    offsets = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
    for b in range(3):
        for v in range(10):
            top, left = offsets[v % 5]
            window = array[b, :, top : top + crop, left : left + crop]
            if v >= 5:
                window = window[:, :, ::-1]
            np.testing.assert_array_equal(views[b, v].numpy(), window)


def test_crop_views_center_and_whole() -> None:
    images = torch.arange(2 * 25.0).reshape(2, 1, 5, 5)

    center = crop_views(images, "center", 3)
    whole = crop_views(images, "whole", 5)

    assert center.shape == (2, 1, 1, 3, 3)
    assert center[0, 0, 0].tolist() == [[6, 7, 8], [11, 12, 13], [16, 17, 18]]
    assert whole.shape == (2, 1, 1, 5, 5)
    assert torch.equal(whole[:, 0], images)


def test_crop_views_rejects_unknown_views() -> None:
    with pytest.raises(ValueError, match=r"views='five_crop' is not supported; use"):
        crop_views(torch.zeros(1, 3, 8, 8), "five_crop", 4)


def test_crop_views_rejects_small_images() -> None:
    with pytest.raises(ValueError, match=r"S >= crop_size=8, got shape \(1, 3, 6, 6\)"):
        crop_views(torch.zeros(1, 3, 6, 6), "ten_crop", 8)


# ------------------------------------------------------------- against a reference


@pytest.mark.parametrize("layer", ["fc6", "fc7"])
def test_whole_image_matches_hand_run_classifier(photo_paths, layer: str) -> None:
    arrays = [load_resized(path, SIZE) for path in photo_paths]
    fc6, fc7 = reference_fc(arrays)
    expected = fc6 if layer == "fc6" else fc7

    output = make_pooler(layer=layer).fit_transform(photo_paths)

    assert output.shape == (len(photo_paths), 4096)
    assert output.dtype == np.float32
    assert (output >= 0).all()
    assert_close(output, expected)


def test_normalize_gives_unit_rows(photo_paths) -> None:
    raw = make_pooler(layer="fc7").fit_transform(photo_paths)

    unit = make_pooler(layer="fc7", normalize=True).fit_transform(photo_paths)

    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(unit, raw / norms, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_ten_crop_matches_per_crop_loop(photo_paths) -> None:
    paths = photo_paths[:3]
    whole = make_pooler(layer="fc6", views="whole")
    expected = []
    for path in paths:
        resized = load_resized(path, RESIZED)
        far, centre = RESIZED - SIZE, (RESIZED - SIZE) // 2
        crops = [
            resized[top : top + SIZE, left : left + SIZE]
            for top, left in [(0, 0), (0, far), (far, 0), (far, far), (centre, centre)]
        ]
        crops += [np.ascontiguousarray(crop[:, ::-1]) for crop in crops]
        expected.append(whole.fit_transform(crops).mean(axis=0))

    output = make_pooler(layer="fc6", views="ten_crop").fit_transform(paths)

    assert_close(output, np.stack(expected))


def test_center_view_is_centre_crop(photo_paths) -> None:
    centre = (RESIZED - SIZE) // 2
    crops = [
        load_resized(path, RESIZED)[centre : centre + SIZE, centre : centre + SIZE]
        for path in photo_paths
    ]
    expected = make_pooler(layer="fc7").fit_transform(crops)

    output = make_pooler(layer="fc7", views="center").fit_transform(photo_paths)

    assert_close(output, expected)


def test_batches_match_one_image_at_a_time(photo_paths) -> None:
    paths = photo_paths[:3]
    batched = make_pooler(views="ten_crop", batch_size=3).fit_transform(paths)

    single = make_pooler(views="ten_crop", batch_size=1).fit_transform(paths)

    assert_close(batched, single)


def test_network_stops_at_requested_layer(photo_paths) -> None:
    network = load_network("alexnet", weights=None)
    calls = {"fc7": 0, "fc8": 0}
    handles = [
        network.classifier[4].register_forward_hook(
            lambda *_: calls.__setitem__("fc7", calls["fc7"] + 1)
        ),
        network.classifier[6].register_forward_hook(
            lambda *_: calls.__setitem__("fc8", calls["fc8"] + 1)
        ),
    ]
    try:
        make_pooler(layer="fc6").fit_transform(photo_paths[:2])
        after_fc6 = dict(calls)
        make_pooler(layer="fc7").fit_transform(photo_paths[:2])
    finally:
        for handle in handles:
            handle.remove()

    assert after_fc6 == {"fc7": 0, "fc8": 0}
    assert calls == {"fc7": 1, "fc8": 0}


# -------------------------------------------------------------- estimator contract


def test_fitted_attributes_and_feature_names(photo_paths) -> None:
    pooler = make_pooler(layer="fc7", views="ten_crop").fit(photo_paths)

    assert pooler.layer_ == "fc7"
    assert pooler.n_views_ == 10
    assert pooler.crop_size_ == SIZE
    assert pooler.n_features_out_ == 4096
    names = pooler.get_feature_names_out()
    assert names[0] == "fc7_0"
    assert names[-1] == "fc7_4095"
    assert len(names) == 4096


def test_default_crop_size_is_224(photo_paths) -> None:
    pooler = make_pooler(image_size=None).fit(photo_paths)

    assert pooler.crop_size_ == 224


def test_clone_keeps_parameters() -> None:
    pooler = make_pooler(layer="fc7", views="center")

    assert clone(pooler).get_params() == pooler.get_params()


def test_pickle_round_trip(photo_paths) -> None:
    pooler = make_pooler(views="ten_crop").fit(photo_paths)
    expected = pooler.transform(photo_paths)

    data = pickle.dumps(pooler)
    restored = pickle.loads(data)

    # The network is rebuilt from the parameters, never pickled.
    assert len(data) < 10_000
    np.testing.assert_array_equal(restored.transform(photo_paths), expected)


def test_unloadable_image_gives_zero_row(photo_paths, tmp_path) -> None:
    missing = tmp_path / "absent.jpg"
    images = [photo_paths[0], missing, photo_paths[1]]
    pooler = make_pooler(on_error="skip").fit(images)

    output, mask = pooler.transform_with_mask(images)

    assert mask.tolist() == [True, False, True]
    assert not output[1].any()
    assert_close(output[[0, 2]], pooler.transform(photo_paths[:2]))


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize("backbone", ["resnet50", "efficientnet_lite0"])
def test_backbone_without_fc_layers_raises(photo_paths, backbone: str) -> None:
    pooler = make_pooler(backbone=backbone)

    with pytest.raises(
        BackboneError,
        match=rf"backbone '{backbone}' has no fc6 and fc7 layers; .*supports "
        r"alexnet, vgg16, vgg19\. .*GlobalPooler\(method='avg'\)",
    ):
        pooler.fit(photo_paths)


def test_fc_layer_spec_rejects_other_layer() -> None:
    with pytest.raises(ValueError, match=r"layer 'fc8' .* valid layers: fc6, fc7"):
        fc_layer_spec("alexnet", "fc8")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"layer": "fc8"}, r"'layer' parameter of FullyConnectedPooler must be"),
        ({"views": "five_crop"}, r"'views' parameter of FullyConnectedPooler must be"),
        ({"backbone": "vgg11"}, r"'backbone' parameter of FullyConnectedPooler must"),
        ({"image_size": 8}, r"'image_size' parameter of FullyConnectedPooler must"),
    ],
)
def test_invalid_parameters_raise(photo_paths, params: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        make_pooler(**params).fit(photo_paths)


def test_max_size_is_not_a_parameter() -> None:
    with pytest.raises(TypeError, match="max_size"):
        FullyConnectedPooler("alexnet", max_size=512)


def test_transform_before_fit_raises(photo_paths) -> None:
    with pytest.raises(NotFittedError, match="FullyConnectedPooler"):
        make_pooler().transform(photo_paths)

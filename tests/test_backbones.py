"""Backbones: layer names, presets, weights and activation capture."""

import numpy as np
import pytest
import skimage.data
import torch
import torchvision
from PIL import Image

from skcrosslayer import CrossLayerPooler, list_layers
from skcrosslayer._extraction import capture_layers
from skcrosslayer.backbones import BACKBONES, load_network, resolve_layer
from skcrosslayer.exceptions import BackboneError, WeightsError

# ImageNet class 967 is "espresso".
ESPRESSO = 967


def lite_input(image, size=224):
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)
    return ((x - 0.5) / 0.5).permute(2, 0, 1)[None]


def test_bundled_lite0_weights_classify_coffee():
    network = load_network("efficientnet_lite0")
    with torch.inference_mode():
        probabilities = network(lite_input(skimage.data.coffee())).softmax(1)[0]
    assert probabilities.argmax().item() == ESPRESSO
    assert probabilities[ESPRESSO] > 0.8


def test_alexnet_layer_names():
    layers = list_layers("alexnet")
    assert [layer.name for layer in layers] == [
        "conv1",
        "conv2",
        "conv3",
        "conv4",
        "conv5",
    ]
    assert [layer.n_channels for layer in layers] == [64, 192, 384, 256, 256]
    assert [(layer.height, layer.width) for layer in layers][2:] == [(13, 13)] * 3


def test_vgg16_layer_names():
    names = [layer.name for layer in list_layers("vgg16")]
    assert names[:3] == ["conv1_1", "conv1_2", "conv2_1"]
    assert names[-3:] == ["conv5_1", "conv5_2", "conv5_3"]
    assert len(names) == 13


def test_grid_follows_image_size():
    conv5 = {layer.name: layer for layer in list_layers("alexnet", 448)}["conv5"]
    assert (conv5.height, conv5.width) == (27, 27)


@pytest.mark.parametrize(
    ("backbone", "pair", "channels", "grid"),
    [
        ("alexnet", ("conv4", "conv5"), (256, 256), 13),
        ("vgg16", ("conv5_2", "conv5_3"), (512, 512), 14),
        ("vgg19", ("conv5_3", "conv5_4"), (512, 512), 14),
        ("resnet50", ("layer4.2.conv1", "layer4.2.conv2"), (512, 512), 7),
        ("efficientnet_lite0", ("blocks.6", "conv_head"), (320, 1280), 7),
    ],
)
def test_presets_pair_layers_on_one_grid(backbone, pair, channels, grid):
    assert BACKBONES[backbone].default_pair == pair
    layers = {layer.name: layer for layer in list_layers(backbone)}
    local, guidance = layers[pair[0]], layers[pair[1]]
    assert (local.n_channels, guidance.n_channels) == channels
    assert local.height == guidance.height == grid
    assert guidance.nonnegative


def test_lite_layers_mark_linear_outputs():
    layers = {layer.name: layer for layer in list_layers("efficientnet_lite0")}
    assert not layers["blocks.6"].nonnegative
    assert layers["blocks.6.0.conv_dw"].n_channels == 1152
    assert layers["blocks.6.0.conv_dw"].nonnegative
    assert layers["conv_head"].n_channels == 1280


def test_capture_is_safe_before_inplace_relu():
    # AlexNet's ReLUs run in place on the conv outputs the hooks capture.
    network = load_network("alexnet", weights=None)
    x = torch.randn(2, 3, 96, 96)
    conv4 = resolve_layer("alexnet", "conv4")
    conv5 = resolve_layer("alexnet", "conv5")
    with torch.inference_mode():
        captured = capture_layers(network, [conv4, conv5], x)
        expected4 = network.features[:10](x)  # conv4 and its ReLU
        expected5 = network.features[:12](x)
    torch.testing.assert_close(captured[0], expected4)
    torch.testing.assert_close(captured[1], expected5)
    assert captured[0].min() >= 0


def test_resnet_block_layers_apply_relu():
    network = load_network("resnet50", weights=None)
    block = network.layer4[2]
    spec = resolve_layer("resnet50", "layer4.2.conv2")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        (captured,) = capture_layers(network, [spec], x)
        stem = network.maxpool(network.relu(network.bn1(network.conv1(x))))
        h = network.layer4[:2](network.layer3(network.layer2(network.layer1(stem))))
        h = block.relu(block.bn1(block.conv1(h)))
        expected = block.relu(block.bn2(block.conv2(h)))
    torch.testing.assert_close(captured, expected)


def test_forward_stops_at_guidance_layer():
    network = load_network("alexnet", weights=None)
    calls = []
    handle = network.classifier.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.inference_mode():
            capture_layers(
                network, [resolve_layer("alexnet", "conv3")], torch.randn(1, 3, 64, 64)
            )
    finally:
        handle.remove()
    assert calls == []


def test_random_weights_are_reproducible():
    first = load_network("alexnet", weights=None).features[0].weight
    from skcrosslayer.backbones import _cached_network

    _cached_network.cache_clear()
    second = load_network("alexnet", weights=None).features[0].weight
    torch.testing.assert_close(first, second)


def test_weights_from_local_file(tmp_path):
    torch.manual_seed(1)
    trained = torchvision.models.alexnet()
    path = tmp_path / "alexnet.pth"
    torch.save(trained.state_dict(), path)
    network = load_network("alexnet", weights=str(path))
    torch.testing.assert_close(network.features[0].weight, trained.features[0].weight)


def test_mismatching_weights_name_keys(tmp_path):
    path = tmp_path / "squeezenet.pth"
    torch.save(torchvision.models.squeezenet1_0().state_dict(), path)
    with pytest.raises(
        WeightsError,
        match=r"squeezenet.pth do not match the architecture: 12 missing keys "
        r"\(features.3.weight.*48 unexpected keys.*4 shape mismatches \(features.0."
        r"weight: file \(96, 3, 7, 7\), model \(64, 3, 11, 11\)",
    ):
        load_network("alexnet", weights=path)


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="weights file '.*nowhere.pth' not found"):
        load_network("alexnet", weights=tmp_path / "nowhere.pth")


def test_lite_weights_by_timm_names_or_position(tmp_path):
    bundled = load_network("efficientnet_lite0")
    path = tmp_path / "lite0_timm_names.pth"
    torch.save(bundled.state_dict(), path)
    reloaded = load_network("efficientnet_lite0", weights=path)
    for (key, value), other in zip(
        bundled.state_dict().items(), reloaded.state_dict().values()
    ):
        torch.testing.assert_close(value, other, msg=key)


def test_lite_weights_with_wrong_shape(tmp_path):
    state = dict(load_network("efficientnet_lite0").state_dict())
    renamed = {f"_t{i}": v for i, v in enumerate(state.values())}
    first = next(iter(renamed))
    renamed[first] = torch.zeros(3, 3)
    path = tmp_path / "broken.pth"
    torch.save(renamed, path)
    with pytest.raises(
        WeightsError,
        match=r"tensor '_t0' has shape \(3, 3\) but "
        r"'conv_stem.weight'",
    ):
        load_network("efficientnet_lite0", weights=path)


def test_unknown_backbone():
    with pytest.raises(
        BackboneError, match="unknown backbone 'vgg11'; valid backbones: alexnet"
    ):
        list_layers("vgg11")


def test_default_weights_download_path_is_used(monkeypatch):
    # The online path requests torchvision's published DEFAULT weights. Here the
    # download is replaced by a local state dict.
    state = torchvision.models.alexnet().state_dict()
    weights_enum = torchvision.models.get_model_weights("alexnet").DEFAULT
    calls = []

    def fake_get_state_dict(self, *args, **kwargs):
        calls.append(self)
        return state

    monkeypatch.setattr(type(weights_enum), "get_state_dict", fake_get_state_dict)
    from skcrosslayer.backbones import _cached_network

    _cached_network.cache_clear()
    network = load_network("alexnet", weights="DEFAULT")
    _cached_network.cache_clear()
    assert calls == [weights_enum]
    torch.testing.assert_close(network.features[0].weight, state["features.0.weight"])


def test_pooler_on_paper_backbone_random_weights():
    image = skimage.data.astronaut()
    pooler = CrossLayerPooler("vgg16", weights=None, n_workers=0, n_components=16)
    output = pooler.fit([image] * 2).transform([image])
    assert pooler.layers_ == ("conv5_2", "conv5_3")
    assert output.shape == (1, 512 * 16)

"""Activation cache: the backbone runs once per image across refits."""

from unittest import mock

import joblib
import numpy as np
import pytest
import skimage.data
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

import skcrosslayer._base
from skcrosslayer import CrossLayerPooler, GlobalPooler, SignQuantizer


def photos():
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    return [getattr(skimage.data, name)() for name in names]


def training_set():
    images, labels = [], []
    for label, photo in enumerate([skimage.data.chelsea(), skimage.data.rocket()]):
        for i in range(6):
            images.append(
                np.ascontiguousarray(photo[i * 12 :, i * 7 :][:, :: 1 - 2 * (i % 2)])
            )
            labels.append(label)
    return images, np.asarray(labels)


class ImageCounter:
    """Count the images the backbone runs on, through the extraction entry point."""

    def __init__(self):
        self.n_images = 0
        self.original = skcrosslayer._base.iter_activations

    def __call__(self, network, backbone, specs, items, *args, **kwargs):
        self.n_images += len(items)
        return self.original(network, backbone, specs, items, *args, **kwargs)


@pytest.fixture
def counter():
    counter = ImageCounter()
    with mock.patch.object(skcrosslayer._base, "iter_activations", counter):
        yield counter


def tiny(**params):
    return CrossLayerPooler(
        "alexnet", weights=None, image_size=96, n_workers=0, n_components=8, **params
    )


def test_cached_features_equal_uncached(tmp_path):
    expected = CrossLayerPooler(n_workers=0, n_components=32, random_state=0)
    expected = expected.fit(photos()).transform(photos())
    pooler = CrossLayerPooler(
        n_workers=0, n_components=32, random_state=0, memory=tmp_path
    )
    first = pooler.fit(photos()).transform(photos())
    second = pooler.fit(photos()).transform(photos())
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


def test_refit_with_other_pooling_hits_cache(tmp_path, counter):
    pooler = tiny(memory=tmp_path).fit(photos())
    assert counter.n_images == 4
    for params in [
        {"neighborhood": 3},
        {"n_components": 4},
        {"signed_sqrt": False},
        {"pooling": "max"},
    ]:
        pooler.set_params(**params).fit(photos()).transform(photos())
    assert counter.n_images == 4


@pytest.mark.parametrize(
    "change",
    [
        {"backbone": "vgg16", "n_components": 8},
        {"image_size": 128},
        {"image_size": None, "max_size": 80},
        {"layers": ("conv3", "conv5")},
    ],
)
def test_model_or_resizing_change_misses(tmp_path, counter, change):
    tiny(memory=tmp_path).fit(photos())
    tiny(memory=tmp_path).set_params(**change).fit(photos())
    assert counter.n_images == 8


def test_weights_file_change_misses(tmp_path, counter):
    import torch
    import torchvision

    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    tiny(memory=tmp_path / "cache").set_params(weights=str(path)).fit(photos())
    torch.save(torchvision.models.alexnet().state_dict(), path)
    tiny(memory=tmp_path / "cache").set_params(weights=str(path)).fit(photos())
    assert counter.n_images == 8


def test_new_images_only_are_computed(tmp_path, counter):
    pooler = tiny(memory=joblib.Memory(tmp_path, verbose=0)).fit(photos()[:2])
    pooler.transform(photos())
    assert counter.n_images == 4


def test_grid_search_runs_backbone_once_per_image(tmp_path, counter):
    images, labels = training_set()
    pipeline = Pipeline(
        [
            ("pooler", tiny(memory=tmp_path)),
            ("signs", SignQuantizer()),
            ("svm", LinearSVC()),
        ]
    )
    grid = {
        "pooler__neighborhood": [1, 3],
        "pooler__n_components": [4, 8],
        "pooler__block_l2": [True, False],
    }
    GridSearchCV(pipeline, grid, cv=2).fit(images, labels)
    assert counter.n_images == len(images)


def test_unreadable_entry_is_recomputed(tmp_path, counter):
    pooler = tiny(memory=tmp_path).fit(photos()[:1])
    for entry in tmp_path.rglob("*.npz"):
        entry.write_bytes(b"broken")
    pooler.fit(photos()[:1])
    assert counter.n_images == 2


def test_global_pooler_uses_cache(tmp_path, counter):
    params = dict(backbone="alexnet", weights=None, image_size=64, n_workers=0)
    first = GlobalPooler(**params, memory=tmp_path).fit(photos()).transform(photos())
    again = GlobalPooler(**params, method="max", memory=tmp_path).fit(photos())
    again.transform(photos())
    assert counter.n_images == 4
    np.testing.assert_array_equal(
        first, GlobalPooler(**params).fit(photos()).transform(photos())
    )


def test_memory_without_location():
    with pytest.raises(ValueError, match="joblib.Memory without a location"):
        tiny(memory=joblib.Memory(None)).fit(photos()[:1])

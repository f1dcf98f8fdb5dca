"""Interrupted extraction resumes without recomputing finished chunks."""

import numpy as np
import pytest
import skimage.data
from PIL import Image

from skcrosslayer import CrossLayerPooler
from skcrosslayer._resumable import extract_resumable


@pytest.fixture
def image_paths(tmp_path):
    photo = Image.fromarray(skimage.data.astronaut())
    paths = []
    for i in range(7):
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        photo.rotate(10 * i).resize((80, 80)).save(path)
        paths.append(path)
    return paths


def fit_pooler(paths):
    pooler = CrossLayerPooler(
        "alexnet", weights=None, image_size=64, n_workers=0, n_components=8
    )
    return pooler.fit(paths)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes(image_paths, tmp_path):
    output = tmp_path / "features.npy"
    calls = []

    def failing_transform(model, paths):
        calls.append(len(paths))
        if len(calls) == 3:
            raise Interrupt
        return model.transform(paths)

    with pytest.raises(Interrupt):
        extract_resumable(
            fit_pooler, image_paths, output, chunk_size=2, transform=failing_transform
        )
    assert not output.exists()
    assert sorted(p.name for p in (tmp_path / "features.npy.partial").iterdir()) == [
        "chunk-000000.npy",
        "chunk-000001.npy",
        "inputs.sha256",
        "model.joblib",
    ]

    fits = []

    def counting_fit(paths):
        fits.append(1)
        return fit_pooler(paths)

    calls.clear()
    model, features, n_resumed = extract_resumable(
        counting_fit, image_paths, output, chunk_size=2, transform=failing_transform
    )
    assert fits == []  # the saved model is reused
    assert calls == [2, 1]  # chunks 2 and 3 only
    assert n_resumed == 4
    assert not (tmp_path / "features.npy.partial").exists()
    np.testing.assert_array_equal(np.load(output), features)
    # Chunks of 2 and batches of 7 round differently (float32).
    np.testing.assert_allclose(features, model.transform(image_paths), atol=5e-5)


def test_other_inputs_do_not_resume(image_paths, tmp_path):
    output = tmp_path / "features.npy"

    def interrupt(model, paths):
        raise Interrupt

    with pytest.raises(Interrupt):
        extract_resumable(fit_pooler, image_paths, output, transform=interrupt)
    with pytest.raises(ValueError, match="was started on other input images; remove"):
        extract_resumable(fit_pooler, image_paths[:3], output)


def test_existing_output_needs_overwrite(image_paths, tmp_path):
    output = tmp_path / "features.npy"
    output.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        extract_resumable(fit_pooler, image_paths, output)
    assert output.read_bytes() == b"keep me"
    extract_resumable(fit_pooler, image_paths, output, overwrite=True)
    assert np.load(output).shape == (7, 256 * 8)


def test_failed_fit_leaves_no_work_folder(image_paths, tmp_path):
    def failing_fit(paths):
        raise ValueError("layer 'conv9' not found")

    with pytest.raises(ValueError, match="conv9"):
        extract_resumable(failing_fit, image_paths, tmp_path / "features.npy")
    assert list(tmp_path.glob("*.partial")) == []

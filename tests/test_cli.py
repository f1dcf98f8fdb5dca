"""Tests for the command line, run in-process through ``skcrosslayer.cli.main``.

The extract tests use AlexNet with random weights (``--weights none``) at
128 px, because a trained network adds nothing there. The classify and demo
tests use the real EfficientNet-Lite0 weights of the offline package.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import skcrosslayer
from skcrosslayer.cli import main

# At 128 px AlexNet's conv4 and conv5 are on a 7x7 grid, so 7 photos give
# 7 * 49 = 343 local features, enough for a full 256-dim PCA: the output has
# 256 guidance channels x 256 components = 65536 dims. The runs use the CPU so
# that repeated runs can be compared bit for bit.
ALEXNET_OPTIONS = [
    "--backbone",
    "alexnet",
    "--weights",
    "none",
    "--image-size",
    "128",
    "--workers",
    "0",
    "--device",
    "cpu",
]


def run(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line in-process and return the exit status, stdout, stderr."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def parse_layers(output: str) -> dict[str, tuple[int, str, str]]:
    """Map each layer of a ``layers`` table to (channels, grid, output sign)."""
    lines = output.splitlines()
    assert lines[0].split() == ["layer", "channels", "grid", "output"]
    table = {}
    for line in lines[1:]:
        name, channels, grid, sign = line.split(maxsplit=3)
        table[name] = (int(channels), grid, sign)
    return table


# -- version and layers ---------------------------------------------------------------


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == skcrosslayer.__version__


def test_version_console_script():
    script = shutil.which("skcrosslayer", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the skcrosslayer console script is not installed next to python")

    result = subprocess.run(
        [script, "--version"], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == skcrosslayer.__version__


def test_python_module_layers_alexnet():
    result = subprocess.run(
        [sys.executable, "-m", "skcrosslayer", "layers", "alexnet"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert parse_layers(result.stdout)["conv5"] == (256, "13x13", "nonnegative")


def test_no_command_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])

    assert exit_info.value.code == 2
    assert "the following arguments are required: command" in capsys.readouterr().err


def test_layers_alexnet(capsys):
    status, output, _ = run(capsys, "layers", "alexnet")

    # At 224 px: conv1 (224 + 4 - 11) // 4 + 1 = 55, max pool to 27, conv2 27,
    # max pool to 13, conv3 to conv5 13.
    assert status == 0
    assert parse_layers(output) == {
        "conv1": (64, "55x55", "nonnegative"),
        "conv2": (192, "27x27", "nonnegative"),
        "conv3": (384, "13x13", "nonnegative"),
        "conv4": (256, "13x13", "nonnegative"),
        "conv5": (256, "13x13", "nonnegative"),
    }


def test_layers_alexnet_image_size(capsys):
    status, output, _ = run(capsys, "layers", "alexnet", "--image-size", "64")

    # At 64 px: conv1 (64 + 4 - 11) // 4 + 1 = 15, max pool to 7, max pool to 3.
    table = parse_layers(output)
    assert status == 0
    assert table["conv1"][1] == "15x15"
    assert table["conv2"][1] == "7x7"
    assert table["conv5"][1] == "3x3"


def test_layers_efficientnet_lite0(capsys):
    status, output, _ = run(capsys, "layers", "efficientnet_lite0")

    table = parse_layers(output)
    assert status == 0
    assert table["conv_head"] == (1280, "7x7", "nonnegative")
    assert table["blocks.6"] == (320, "7x7", "linear, can be negative")
    assert table["conv_stem"] == (32, "112x112", "nonnegative")
    assert list(table)[-1] == "conv_head"


def test_layers_unknown_backbone(capsys):
    status, output, error = run(capsys, "layers", "alexnet2")

    assert status == 2
    assert output == ""
    assert "unknown backbone 'alexnet2'; valid backbones: alexnet," in error


# -- extract ----------------------------------------------------------------------


def test_extract_writes_features_and_paths(capsys, tmp_path, photo_folder, photo_paths):
    output = tmp_path / "out.npy"

    status, printed, _ = run(
        capsys, "extract", photo_folder, "-o", output, *ALEXNET_OPTIONS
    )

    features = np.load(output)
    assert status == 0
    assert features.shape == (7, 65536)
    assert features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    sidecar = tmp_path / "out.paths.txt"
    assert sidecar.read_text().splitlines() == [str(p) for p in photo_paths]
    # The temporary files of the atomic writes are gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy", "out.paths.txt"]
    assert f"wrote 7 x 65536 features to {output}" in printed


def test_extract_files_follow_umask(capsys, tmp_path, photo_paths):
    output = tmp_path / "out.npy"
    previous = os.umask(0o027)
    try:
        status, _, _ = run(
            capsys,
            "extract",
            *photo_paths[:2],
            "-o",
            output,
            "--save-model",
            tmp_path / "pooler.joblib",
            "--n-components",
            "8",
            *ALEXNET_OPTIONS,
        )
    finally:
        os.umask(previous)

    # Group-readable as with open(), not owner-only as tempfile makes them.
    assert status == 0
    for name in ("out.npy", "out.paths.txt", "pooler.joblib"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(0o640), name


def test_extract_adds_npy_suffix(capsys, tmp_path, photo_paths):
    inputs = photo_paths[:3]

    status, _, _ = run(
        capsys,
        "extract",
        *inputs,
        "-o",
        tmp_path / "features",
        "--n-components",
        "8",
        *ALEXNET_OPTIONS,
    )

    # Files named one by one keep the order given: 3 images x (256 x 8) dims.
    assert status == 0
    assert np.load(tmp_path / "features.npy").shape == (3, 2048)
    sidecar = (tmp_path / "features.paths.txt").read_text().splitlines()
    assert sidecar == [str(p) for p in inputs]


def test_extract_device_decoding_and_rounding(capsys, tmp_path, photo_paths):
    options = ["--backbone", "alexnet", "--weights", "none", "--workers", "0"]
    options += ["--n-components", "8", "--max-size", "160"]
    plain, rounded = tmp_path / "plain.npy", tmp_path / "rounded.npy"

    run(capsys, "extract", *photo_paths, "-o", plain, *options)
    status, _, _ = run(
        capsys,
        "extract",
        *photo_paths,
        "-o",
        rounded,
        *options,
        "--size-multiple",
        "32",
        "--decode-on-device",
    )

    # Rounded sizes and another decoder move the vectors a little, not much.
    assert status == 0
    expected, got = np.load(plain), np.load(rounded)
    assert got.shape == expected.shape == (7, 2048)
    assert not np.array_equal(got, expected)
    assert np.median(np.sum(got * expected, axis=1)) > 0.8


def test_extract_existing_output(capsys, tmp_path, photo_folder):
    output = tmp_path / "out.npy"
    output.write_bytes(b"previous result")

    status, _, error = run(
        capsys, "extract", photo_folder, "-o", output, *ALEXNET_OPTIONS
    )

    assert status == 2
    assert f"output '{output}' already exists; pass --overwrite" in error
    assert output.read_bytes() == b"previous result"
    assert not (tmp_path / "out.paths.txt").exists()

    status, _, _ = run(
        capsys, "extract", photo_folder, "-o", output, "--overwrite", *ALEXNET_OPTIONS
    )

    assert status == 0
    assert np.load(output).shape == (7, 65536)


def test_extract_saved_model_gives_same_features(
    capsys, tmp_path, photo_folder, photo_paths
):
    model = tmp_path / "pooler.joblib"
    first, second, single = (tmp_path / f"{n}.npy" for n in ("a", "b", "one"))

    fit_status, _, _ = run(
        capsys,
        "extract",
        photo_folder,
        "-o",
        first,
        "--save-model",
        model,
        *ALEXNET_OPTIONS,
    )
    reuse_status, _, _ = run(
        capsys,
        "extract",
        photo_folder,
        "-o",
        second,
        "--model",
        model,
        "--workers",
        "0",
    )
    # One image on its own is the slow reference for the batched rows.
    single_status, _, _ = run(
        capsys,
        "extract",
        photo_paths[2],
        "-o",
        single,
        "--model",
        model,
        "--workers",
        "0",
    )

    assert (fit_status, reuse_status, single_status) == (0, 0, 0)
    features = np.load(first)
    np.testing.assert_array_equal(np.load(second), features)
    np.testing.assert_allclose(np.load(single)[0], features[2], atol=1e-5)

    # Options that define the features conflict with the saved pooler.
    status, _, error = run(
        capsys,
        "extract",
        photo_folder,
        "-o",
        tmp_path / "c.npy",
        "--model",
        model,
        "--image-size",
        "64",
        "--size-multiple",
        "32",
    )
    assert status == 2
    assert "--image-size, --size-multiple would change the features" in error
    assert not (tmp_path / "c.npy").exists()


def test_extract_unknown_layer(capsys, tmp_path, photo_folder):
    output = tmp_path / "out.npy"

    status, _, error = run(
        capsys,
        "extract",
        photo_folder,
        "-o",
        output,
        "--layers",
        "conv9",
        "conv5",
        *ALEXNET_OPTIONS,
    )

    assert status == 2
    assert (
        "layer 'conv9' not found in alexnet; valid layers: "
        "conv1, conv2, conv3, conv4, conv5" in error
    )
    assert list(tmp_path.iterdir()) == []


def test_extract_missing_input(capsys, tmp_path, photo_paths):
    missing = tmp_path / "missing.jpg"
    output = tmp_path / "out.npy"

    status, _, error = run(
        capsys, "extract", photo_paths[0], missing, "-o", output, *ALEXNET_OPTIONS
    )

    assert status == 2
    assert f"input '{missing}' not found" in error
    assert not output.exists()


def test_extract_folder_without_images(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")

    status, _, error = run(capsys, "extract", empty, "-o", tmp_path / "out.npy")

    assert status == 2
    assert "no images (.bmp, .gif, .jpeg, .jpg" in error
    assert f"found under '{empty}'" in error


# -- classify ---------------------------------------------------------------------


def classify_json(capsys, *args) -> dict:
    """Run ``classify --json`` in one process and return the parsed JSON output."""
    status, output, error = run(capsys, "classify", *args, "--workers", "0", "--json")
    assert status == 0, error
    return json.loads(output)


def test_classify_default_split(capsys, class_folders):
    result = classify_json(capsys, class_folders)

    assert set(result) >= {"accuracy", "report", "C", "n_train", "n_test", "layers"}
    # 12 images, test_size=0.25: 3 test and 9 training images.
    assert (result["n_train"], result["n_test"]) == (9, 3)
    assert result["layers"] == ["blocks.6", "conv_head"]
    assert result["C"] in (0.01, 0.1, 1.0, 10.0)
    assert result["accuracy"] == 1.0
    assert set(result["report"]) >= {"cat", "cup", "accuracy"}


def test_classify_split_file(capsys, tmp_path, class_folders):
    lines = []
    for folder in ("cat", "cup"):
        for i, path in enumerate(sorted((class_folders / folder).iterdir())):
            part = "test" if i >= 4 else "train"
            lines.append(f"{folder}/{path.name} {part}")
    split_file = tmp_path / "split.txt"
    split_file.write_text("\n".join(lines) + "\n\n")

    result = classify_json(capsys, class_folders, "--split-file", split_file)

    # Per class: copies 0 to 3 train, 4 and 5 test.
    assert (result["n_train"], result["n_test"]) == (8, 4)
    assert result["accuracy"] == 1.0
    assert result["report"]["cat"]["support"] == 2
    assert result["report"]["cup"]["support"] == 2


def test_classify_split_file_bad_line(capsys, tmp_path, class_folders):
    split_file = tmp_path / "split.txt"
    split_file.write_text("cat/chelsea_0.jpg train\n\ncat/chelsea_1.jpg validation\n")

    status, _, error = run(
        capsys, "classify", class_folders, "--split-file", split_file
    )

    assert status == 2
    assert f"{split_file}:3: expected '<path relative to DATA_DIR> train'" in error
    assert "got 'cat/chelsea_1.jpg validation'" in error


def test_classify_split_file_missing_image(capsys, tmp_path, class_folders):
    names = [
        f"{folder}/{path.name}"
        for folder in ("cat", "cup")
        for path in sorted((class_folders / folder).iterdir())
    ]
    split_file = tmp_path / "split.txt"
    # Every image but cup/coffee_5.jpg.
    split_file.write_text("".join(f"{name} train\n" for name in names[:-1]))

    status, _, error = run(
        capsys, "classify", class_folders, "--split-file", split_file
    )

    assert status == 2
    assert f"1 images are not listed in {split_file}" in error
    assert f"'{class_folders / 'cup' / 'coffee_5.jpg'}'" in error


def test_classify_needs_two_classes(capsys, tmp_path, photo_paths):
    root = tmp_path / "data"
    (root / "only").mkdir(parents=True)
    shutil.copy(photo_paths[0], root / "only")

    status, _, error = run(capsys, "classify", root)

    assert status == 2
    assert f"'{root}' must hold one folder per class (at least 2), found 1" in error


# -- demo ----------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_json(capsys):
    status, output, error = run(capsys, "demo", "--json", "--workers", "0")

    result = json.loads(output)
    assert status == 0, error
    assert set(result) >= {"classification", "retrieval"}
    accuracies = result["classification"]["results"]
    precisions = result["retrieval"]["results"]
    assert list(accuracies) == list(precisions)
    for method in accuracies:
        assert 0.0 <= accuracies[method]["accuracy"] <= 1.0
        assert 0.0 <= precisions[method]["mAP"] <= 1.0
    assert accuracies["cross-layer blocks.6 x conv_head"]["accuracy"] > 0.9


def test_extract_resumes_after_interrupt(photo_folder, tmp_path, monkeypatch, capsys):
    from skcrosslayer import CrossLayerPooler

    output = tmp_path / "features.npy"
    arguments = [
        "extract", str(photo_folder), "-o", str(output), "--backbone", "alexnet",
        "--weights", "none", "--image-size", "128", "--workers", "0",
        "--device", "cpu", "--chunk-size", "3",
    ]  # fmt: skip
    original = CrossLayerPooler.transform
    calls = []
    interrupt_at_call = 2

    def interrupted(self, X):
        calls.append(len(X))
        if len(calls) == interrupt_at_call:
            raise KeyboardInterrupt
        return original(self, X)

    monkeypatch.setattr(CrossLayerPooler, "transform", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(arguments)
    assert not output.exists()

    calls.clear()
    interrupt_at_call = None
    assert main(arguments) == 0
    assert calls == [3, 1]  # the first chunk of 3 images was kept
    assert (
        "resumed an interrupted run: 3 images were already done"
        in capsys.readouterr().out
    )
    assert np.load(output).shape == (7, 65536)

"""Tests of feature extraction on a local Dask cluster.

One cluster of two worker processes on the loopback interface serves the whole
module. The pooler is a randomly initialised AlexNet on 64 px images, because
a trained network adds nothing to these checks. Features computed on the
workers are compared with ``allclose(atol=5e-5)`` to one local
``pooler.transform``: chunks form other batches than the local call, and
float32 convolutions sum in another order for another batch shape.
"""

import copy
import pickle

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from skcrosslayer import CrossLayerPooler, backbones
from skcrosslayer.distributed import ChunkExtractionError, _check_workers_see, extract
from skcrosslayer.exceptions import ImageLoadWarning

distributed = pytest.importorskip(
    "distributed",
    reason='dask.distributed is not installed; pip install "dask[distributed]"',
)

# The scheduler's HTTP server listens on 127.0.0.1:8787 even without a
# dashboard, and moves to a free port with this warning when a cluster of
# another pytest-xdist process already uses 8787.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Port 8787 is already in use:UserWarning"
)

# Tolerance between worker and local features, see the module docstring.
ATOL = 5e-5


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.fixture(scope="module")
def pooler(photo_paths):
    return CrossLayerPooler(
        "alexnet",
        weights=None,
        image_size=64,
        n_components=8,
        n_workers=0,
        random_state=0,
    ).fit(photo_paths)


@pytest.fixture(scope="module")
def local_features(pooler, photo_paths):
    return pooler.transform(photo_paths)


def test_extract_matches_local_transform(client, pooler, photo_paths, local_features):
    # 7 images in chunks of 3, 3 and 1.
    features = extract(pooler, photo_paths, client, chunk_size=3)

    assert features.dtype == np.float32
    assert features.shape == (7, 256 * 8)
    np.testing.assert_allclose(features, local_features, rtol=0, atol=ATOL)


def test_extract_keeps_input_order(client, pooler, photo_paths, local_features):
    order = [6, 0, 3, 3, 5, 1, 2, 4, 0, 6, 1]
    paths = [photo_paths[i] for i in order]

    # 11 paths in chunks of 4, 4 and 3.
    features = extract(pooler, paths, client, chunk_size=4)

    assert features.shape == (11, local_features.shape[1])
    np.testing.assert_allclose(features, local_features[order], rtol=0, atol=ATOL)


def test_extract_accepts_relative_paths(
    client, pooler, photo_paths, local_features, monkeypatch
):
    monkeypatch.chdir(photo_paths[0].parent)
    names = [path.name for path in photo_paths]

    features = extract(pooler, names, client, chunk_size=4)

    np.testing.assert_allclose(features, local_features, rtol=0, atol=ATOL)


def test_extract_accepts_dask_bag(client, pooler, photo_paths, local_features):
    import dask.bag

    bag = dask.bag.from_sequence([str(path) for path in photo_paths], npartitions=3)

    features = extract(pooler, bag, client, chunk_size=2)

    np.testing.assert_allclose(features, local_features, rtol=0, atol=ATOL)


def test_extract_accepts_dataframe_column(client, pooler, photo_paths, local_features):
    pandas = pytest.importorskip("pandas", reason="dask.dataframe needs pandas")
    dask_dataframe = pytest.importorskip(
        "dask.dataframe", reason="dask.dataframe needs pandas and pyarrow"
    )
    table = pandas.DataFrame(
        {"path": [str(path) for path in photo_paths], "label": range(7)}
    )
    frame = dask_dataframe.from_pandas(table, npartitions=2)

    features = extract(pooler, frame["path"], client, chunk_size=3)

    np.testing.assert_allclose(features, local_features, rtol=0, atol=ATOL)
    with pytest.raises(TypeError, match="pass one column of paths"):
        extract(pooler, frame, client)


def test_extract_to_npy_file(client, pooler, photo_paths, local_features, tmp_path):
    output = tmp_path / "features.npy"

    features = extract(pooler, photo_paths, client, chunk_size=3, output=output)

    assert isinstance(features, np.memmap)
    assert not features.flags.writeable
    np.testing.assert_allclose(np.load(output), local_features, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(features, np.load(output))
    # The temporary file was renamed to the output, so nothing else is left.
    assert [path.name for path in tmp_path.iterdir()] == ["features.npy"]


def test_extract_existing_output(client, pooler, photo_paths, tmp_path):
    output = tmp_path / "features.npy"
    np.save(output, np.zeros((1, 1), dtype=np.float32))

    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        extract(pooler, photo_paths, client, output=output)
    assert np.load(output).shape == (1, 1)

    extract(pooler, photo_paths, client, output=output, overwrite=True)
    assert np.load(output).shape == (7, 256 * 8)


def test_extract_output_path_checks(client, pooler, photo_paths, tmp_path):
    with pytest.raises(ValueError, match=r"must be a \.npy file, got .*features\.h5"):
        extract(pooler, photo_paths, client, output=tmp_path / "features.h5")
    with pytest.raises(FileNotFoundError, match="missing.* does not exist"):
        extract(pooler, photo_paths, client, output=tmp_path / "missing" / "f.npy")


def test_network_loaded_once_per_worker(client, pooler, photo_paths):
    # One chunk per image, so each worker runs several chunks.
    extract(pooler, photo_paths, client, chunk_size=1)
    extract(pooler, photo_paths, client, chunk_size=2)

    cache = client.run(lambda: backbones._cached_network.cache_info())

    assert len(cache) == 2
    for info in cache.values():
        assert info.misses == 1
        assert info.currsize == 1
    # Every chunk reuses the cached network.
    assert sum(info.hits for info in cache.values()) >= 7 + 4


def test_extract_ships_pooler_without_loader_processes(client, pooler, photo_paths):
    # Two batches per chunk, so a pooler with n_workers=1 starts a DataLoader
    # worker process.
    with_loader = copy.deepcopy(pooler).set_params(n_workers=1, batch_size=2)

    # A daemonic Dask worker cannot start that process.
    future = client.submit(with_loader.transform, photo_paths[:4], pure=False)
    with pytest.raises(AssertionError, match="daemonic processes"):
        future.result()

    features = extract(with_loader, photo_paths[:4], client, chunk_size=4)
    assert features.shape == (4, 256 * 8)
    assert with_loader.n_workers == 1


def test_chunk_error_names_chunk_and_path(client, pooler, photo_paths, tmp_path):
    paths = list(photo_paths[:5]) + [tmp_path / "missing.jpg"] + [photo_paths[5]]
    output = tmp_path / "features.npy"

    # Paths 3 to 5 form chunk 1.
    with pytest.raises(ChunkExtractionError, match=r"chunk 1 \(rows 3 to 5, ") as info:
        extract(pooler, paths, client, chunk_size=3, output=output)

    assert "missing.jpg" in str(info.value)
    assert "ImageLoadError" in str(info.value)
    assert info.value.chunk == 1
    assert info.value.start == 3
    assert info.value.stop == 6
    assert info.value.worker.startswith("tcp://127.0.0.1:")
    # Neither the output nor its temporary file is left behind.
    assert list(tmp_path.iterdir()) == []


def test_skipped_images_give_zero_rows(
    client, pooler, photo_paths, local_features, tmp_path
):
    skipping = copy.deepcopy(pooler).set_params(on_error="skip")
    paths = [photo_paths[0], tmp_path / "missing.jpg", photo_paths[1]]

    features, valid = extract(skipping, paths, client, chunk_size=2, return_mask=True)

    np.testing.assert_array_equal(valid, [True, False, True])
    np.testing.assert_array_equal(features[1], 0)
    np.testing.assert_allclose(features[[0, 2]], local_features[:2], atol=ATOL)


def test_warn_mode_warns_on_client(client, pooler, photo_paths, tmp_path):
    warning = copy.deepcopy(pooler).set_params(on_error="warn")
    paths = [photo_paths[0], tmp_path / "missing.jpg"]

    with pytest.warns(
        ImageLoadWarning, match=r"1 of 2 images .*missing\.jpg"
    ) as record:
        extract(warning, paths, client, chunk_size=1)

    # The warning points at the caller's line.
    assert record[0].filename == __file__


def test_workers_must_see_output_file(client):
    with pytest.raises(FileNotFoundError, match=r"workers tcp://.* cannot see"):
        _check_workers_see(client, "/nonexistent/features.npy.tmp")


@pytest.mark.parametrize(
    ("paths", "error", "match"),
    [
        ("image.jpg", TypeError, "single path 'image.jpg'; wrap it in a list"),
        ([], ValueError, "paths is empty"),
        (["a.jpg", np.zeros((4, 4, 3))], TypeError, r"paths\[1\] has type ndarray"),
        (5, TypeError, "got int"),
    ],
)
def test_extract_rejects_bad_paths(client, pooler, paths, error, match):
    with pytest.raises(error, match=match):
        extract(pooler, paths, client)


def test_extract_rejects_bad_arguments(client, pooler, photo_paths):
    with pytest.raises(TypeError, match="client must be a distributed.Client, got str"):
        extract(pooler, photo_paths, "tcp://127.0.0.1:8786")
    with pytest.raises(NotFittedError):
        extract(CrossLayerPooler("alexnet", weights=None), photo_paths, client)
    with pytest.raises(InvalidParameterError, match="chunk_size"):
        extract(pooler, photo_paths, client, chunk_size=0)
    with pytest.raises(InvalidParameterError, match="pooler"):
        extract(object(), photo_paths, client)


def test_chunk_error_pickles():
    error = ChunkExtractionError("chunk 2 failed", 2, 128, 192, "tcp://10.0.0.1:1")

    copied = pickle.loads(pickle.dumps(error))

    assert str(copied) == "chunk 2 failed"
    assert copied.chunk == 2
    assert copied.start == 128
    assert copied.stop == 192
    assert copied.worker == "tcp://10.0.0.1:1"

"""Tests for ``skcrosslayer retrieve`` and ``skcrosslayer evaluate-retrieval``.

The commands run in-process through ``skcrosslayer.cli.main`` on small trees
that the fixtures write in each benchmark's official layout, from real
scikit-image photos and edited copies of them. They use AlexNet with random
weights at 64 px (16 PCA dims, 256 guidance channels), because a trained
network adds nothing to checking the protocols, the rankings and the cache.
"""

import json
import os
import pickle
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps
from threadpoolctl import threadpool_limits

from skcrosslayer import _base, retrieval_cli
from skcrosslayer.binary import FeatureBinarizer
from skcrosslayer.cli import main
from skcrosslayer.pooler import CrossLayerPooler
from skcrosslayer.retrieval_cli import SearchSettings, rank_database
from skcrosslayer.search import ImageRetriever
from skcrosslayer.selection import ChannelSelector

N_COMPONENTS = 16
N_GUIDANCE = 256

TINY_OPTIONS = [
    "--backbone",
    "alexnet",
    "--weights",
    "none",
    "--image-size",
    "64",
    "--n-components",
    str(N_COMPONENTS),
    "--workers",
    "0",
    "--device",
    "cpu",
]

PHOTO_NAMES = ("astronaut", "chelsea", "coffee")

# Every combination of search options, with the SearchSettings they give.
SEARCH_SETTINGS = {
    "float": ([], SearchSettings()),
    "float, 10 channels": (["--n-channels", "10"], SearchSettings(10)),
    "float, symmetric": (
        ["--n-channels", "10", "--selection-mode", "symmetric"],
        SearchSettings(10, "symmetric"),
    ),
    "binary": (["--binary"], SearchSettings(binary=True)),
    "binary, 10 channels": (
        ["--binary", "--n-channels", "10"],
        SearchSettings(10, binary=True),
    ),
    "binary, symmetric": (
        ["--binary", "--n-channels", "10", "--selection-mode", "symmetric"],
        SearchSettings(10, "symmetric", binary=True),
    ),
}


@pytest.fixture(autouse=True)
def single_blas_thread():
    # Two OpenBLAS threads spin on a loaded 2-core machine, which made the
    # pooler's small PCA take seconds in place of milliseconds.
    with threadpool_limits(1, user_api="blas"):
        yield


def photo_versions(name: str) -> list[Image.Image]:
    """Return a real photo, shrunk to 160 px, and three edited copies."""
    photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    photo.thumbnail((160, 160))
    width, height = photo.size
    return [
        photo,
        photo.crop((0, 0, int(width * 0.8), int(height * 0.8))),
        ImageOps.mirror(photo),
        photo.rotate(10),
    ]


def write_groups_tree(root: Path) -> Path:
    """Write root/<photo>/<version>.jpg: 3 groups of 4 images."""
    for name in PHOTO_NAMES:
        (root / name).mkdir(parents=True)
        for version, image in enumerate(photo_versions(name)):
            image.save(root / name / f"{version}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def groups_tree(tmp_path_factory) -> Path:
    return write_groups_tree(tmp_path_factory.mktemp("groups"))


@pytest.fixture(scope="module")
def holidays_tree(tmp_path_factory) -> Path:
    """INRIA Holidays names: 100000.jpg is the query of group 1000."""
    root = tmp_path_factory.mktemp("holidays")
    for group, name in enumerate(PHOTO_NAMES):
        for version, image in enumerate(photo_versions(name)[:3]):
            image.save(root / f"{100000 + 100 * group + version}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def ukbench_tree(tmp_path_factory) -> Path:
    """UKBench names: full/ukbench00000.jpg to ukbench00011.jpg, groups of 4."""
    root = tmp_path_factory.mktemp("ukbench")
    (root / "full").mkdir()
    for group, name in enumerate(PHOTO_NAMES):
        for version, image in enumerate(photo_versions(name)):
            image.save(root / "full" / f"ukbench{4 * group + version:05d}.jpg")
    return root


def write_oxford_images(folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    names = []
    for name in PHOTO_NAMES:
        for version, image in enumerate(photo_versions(name)):
            names.append(f"{name}_{version:06d}")
            image.save(folder / f"{names[-1]}.jpg", quality=90)
    return names


@pytest.fixture(scope="module")
def oxford_tree(tmp_path_factory) -> Path:
    """Oxford5k layout: jpg/ and gt_files/ with one query per photo.

    Each query is version 0 of a photo with a box on its top-left part;
    versions 1 and 2 are good, version 3 is junk.
    """
    root = tmp_path_factory.mktemp("oxford")
    write_oxford_images(root / "jpg")
    gt = root / "gt_files"
    gt.mkdir()
    for number, name in enumerate(PHOTO_NAMES, start=1):
        stem = f"{name}_{number}"
        (gt / f"{stem}_query.txt").write_text(f"oxc1_{name}_000000 0 0 100 90\n")
        (gt / f"{stem}_good.txt").write_text(f"{name}_000001\n{name}_000002\n")
        (gt / f"{stem}_ok.txt").write_text("")
        (gt / f"{stem}_junk.txt").write_text(f"{name}_000003\n")
    return root


@pytest.fixture(scope="module")
def roxford_tree(tmp_path_factory) -> Path:
    """Revisited Oxford layout: gnd_roxford5k.pkl and jpg/.

    The database is versions 1 to 3 of each photo; the queries are version 0,
    outside the database. Version 1 is easy, version 2 hard, version 3 junk.
    """
    root = tmp_path_factory.mktemp("roxford")
    names = write_oxford_images(root / "jpg")
    database = [n for n in names if not n.endswith("000000")]
    queries = [n for n in names if n.endswith("000000")]
    gnd = [
        {
            "bbx": [0.0, 0.0, 100.0, 90.0],
            "easy": [3 * q],
            "hard": [3 * q + 1],
            "junk": [3 * q + 2],
        }
        for q in range(len(queries))
    ]
    content = {"imlist": database, "qimlist": queries, "gnd": gnd}
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(content))
    return root


@pytest.fixture(scope="module")
def reversed_roxford_tree(tmp_path_factory) -> Path:
    """Revisited Oxford layout listing all 12 images in reverse path order.

    The queries are version 0 of each photo and are database images, so a full
    query reuses a database row. Version 1 is easy, version 2 hard and
    version 3 junk.
    """
    root = tmp_path_factory.mktemp("roxford-reversed")
    database = write_oxford_images(root / "jpg")[::-1]
    position = {name: index for index, name in enumerate(database)}
    queries = [f"{name}_{0:06d}" for name in PHOTO_NAMES]
    gnd = [
        {
            "bbx": [0.0, 0.0, 100.0, 90.0],
            "easy": [position[f"{name}_{1:06d}"]],
            "hard": [position[f"{name}_{2:06d}"]],
            "junk": [position[f"{name}_{3:06d}"]],
        }
        for name in PHOTO_NAMES
    ]
    content = {"imlist": database, "qimlist": queries, "gnd": gnd}
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(content))
    return root


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """Feature cache shared by the tests of one module, one folder per tree."""
    return tmp_path_factory.mktemp("shared-cache")


def run(capsys, *args) -> tuple[int, str, str]:
    """Run the command line in-process and return the exit status, stdout, stderr."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def evaluate(capsys, root, protocol, cache, *options) -> dict:
    status, out, err = run(
        capsys,
        "evaluate-retrieval",
        root,
        "--protocol",
        protocol,
        "--cache",
        cache,
        "--json",
        *TINY_OPTIONS,
        *options,
    )
    assert status == 0, err
    return json.loads(out)


def count_backbone_runs(monkeypatch) -> list[int]:
    """Record the number of images of every backbone run."""
    runs = []
    original = _base.iter_activations

    def counting(network, backbone, specs, items, *args, **kwargs):
        runs.append(len(items))
        return original(network, backbone, specs, items, *args, **kwargs)

    monkeypatch.setattr(_base, "iter_activations", counting)
    return runs


def cached_features(cache: Path, prefix: str) -> tuple[np.ndarray, list[str]]:
    """Return the one cached feature file with this prefix and its row paths."""
    (metadata_file,) = cache.glob(f"{prefix}-*.json")
    metadata = json.loads(metadata_file.read_text())
    return np.load(metadata_file.with_suffix(".npy")), metadata["paths"]


def reference_average_precision(ranking, positives, junk) -> float:
    """Trapezoid AP of the Oxford evaluation code, one rank at a time."""
    ranking = [i for i in ranking if i not in junk]
    found, precision_before, total = 0, 1.0, 0.0
    for rank, item in enumerate(ranking, start=1):
        if item in positives:
            found += 1
            precision_after = found / rank
            total += (precision_before + precision_after) / 2
        precision_before = found / rank
    return total / len(positives)


def reference_ranking(similarities: np.ndarray) -> list[int]:
    """Database indices by decreasing similarity, ties by increasing index."""
    return sorted(range(len(similarities)), key=lambda i: (-similarities[i], i))


def reference_rank(database, queries, block_size, settings, n_neighbors):
    """Rank in-memory vectors with the estimators, all rows at once."""
    selector = ChannelSelector(
        settings.n_channels, mode=settings.mode, block_size=block_size
    )
    # Complete database vectors in query mode, masked ones in symmetric mode.
    database_vectors = selector.fit_transform(database)
    query_vectors = selector.transform(queries)
    if not settings.binary:
        retriever = ImageRetriever(block_size=block_size).fit(database_vectors)
        return retriever.kneighbors(query_vectors, n_neighbors)

    binarizer = FeatureBinarizer(block_size=block_size).fit(database_vectors)
    query_mask = database_mask = None
    if settings.n_channels is not None:
        query_mask = selector.block_mask(queries)
        if settings.mode == "symmetric":
            database_mask = selector.block_mask(database)
    retriever = ImageRetriever(
        "hamming",
        block_size=block_size,
        mode="query" if database_mask is None else "symmetric",
    )
    retriever.fit(
        binarizer.transform(database_vectors), database_block_mask=database_mask
    )
    return retriever.kneighbors(
        binarizer.transform(query_vectors), n_neighbors, query_block_mask=query_mask
    )


def record_rankings(monkeypatch) -> list[np.ndarray]:
    """Record the rankings that evaluate-retrieval scores."""
    rankings = []
    original = retrieval_cli._score

    def recording(protocol, dataset, ranking):
        rankings.append(ranking)
        return original(protocol, dataset, ranking)

    monkeypatch.setattr(retrieval_cli, "_score", recording)
    return rankings


def record_searched_arrays(monkeypatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """Record the database and query arrays passed to rank_database."""
    arrays = []
    original = retrieval_cli.rank_database

    def recording(database, queries, *args, **kwargs):
        arrays.append((database, queries))
        return original(database, queries, *args, **kwargs)

    monkeypatch.setattr(retrieval_cli, "rank_database", recording)
    return arrays


def write_pooled_memmap(path: Path, n_rows, n_guidance, block_size, seed=0):
    """Write random pooled vectors with strengths as a .npy file, 100 rows a step.

    The values are rounded to a quarter so that many similarities tie.
    """
    width = n_guidance * (block_size + 1)
    output = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n_rows, width)
    )
    rng = np.random.default_rng(seed)
    for start in range(0, n_rows, 100):
        stop = min(start + 100, n_rows)
        output[start:stop] = np.round(4 * rng.standard_normal((stop - start, width)))
        output[start:stop] /= 4
    output.flush()
    del output
    return np.load(path, mmap_mode="r")


# -- evaluate-retrieval --------------------------------------------------------------


def test_evaluate_groups_matches_reference(capsys, groups_tree, tmp_path):
    record = evaluate(capsys, groups_tree, "groups", tmp_path)

    features, paths = cached_features(tmp_path, "database")
    pooled = features[:, : N_GUIDANCE * N_COMPONENTS].astype(np.float64)
    groups = [Path(p).parent.name for p in paths]
    average_precisions = []
    for query in range(len(paths)):
        ranking = reference_ranking(pooled @ pooled[query])
        positives = {i for i, g in enumerate(groups) if g == groups[query]} - {query}
        average_precisions.append(
            reference_average_precision(ranking, positives, {query})
        )
    assert record["scores"]["mAP"] == pytest.approx(np.mean(average_precisions))
    assert features.shape == (12, N_GUIDANCE * (N_COMPONENTS + 1))


def test_evaluate_records_protocol(capsys, groups_tree, tmp_path):
    record = evaluate(capsys, groups_tree, "groups", tmp_path, "--n-channels", "10")

    protocol = record["protocol"]
    assert protocol["dataset"] == "image_groups"
    assert protocol["n_database"] == 12
    assert protocol["n_queries"] == 12
    assert protocol["n_queries_in_database"] == 12
    assert protocol["query_images"] == "full images"
    assert protocol["query_in_own_ranking"].startswith("junk")
    assert protocol["backbone"] == "alexnet"
    assert protocol["weights"] is None
    assert protocol["layers"] == ["conv4", "conv5"]
    assert protocol["image_size"] == 64
    assert protocol["max_size"] is None
    assert protocol["resize_filter"] == "bilinear"
    assert protocol["n_components"] == N_COMPONENTS
    assert protocol["n_guidance_channels"] == N_GUIDANCE
    assert protocol["n_channels"] == 10
    assert protocol["selection_mode"] == "query"
    assert protocol["binary"] is False
    # Query mode stores every block: 256 channels x 16 dims x 4 bytes.
    assert protocol["bytes_per_database_image"] == 16384


def test_evaluate_second_run_reads_cache(capsys, groups_tree, tmp_path, monkeypatch):
    runs = count_backbone_runs(monkeypatch)
    first = evaluate(capsys, groups_tree, "groups", tmp_path)
    n_first_runs = len(runs)

    second = evaluate(
        capsys, groups_tree, "groups", tmp_path, "--binary", "--n-channels", "10"
    )

    assert n_first_runs == 2  # PCA sample and pooling of the 12 images
    assert len(runs) == n_first_runs
    assert first["protocol"]["features"]["database"] == "computed"
    assert second["protocol"]["features"]["database"] == "cache"
    assert second["protocol"]["features"]["queries"] == "database rows"
    # Query mode stores all 256 channels, 16 sign bits (2 bytes) each.
    assert second["protocol"]["bytes_per_database_image"] == 512
    assert not list(tmp_path.glob("*.tmp"))


def test_evaluate_changed_image_misses_cache(capsys, tmp_path, monkeypatch):
    root = write_groups_tree(tmp_path / "groups")
    runs = count_backbone_runs(monkeypatch)
    evaluate(capsys, root, "groups", tmp_path / "cache")

    image = root / "chelsea" / "2.jpg"
    os.utime(image, ns=(0, 0))
    record = evaluate(capsys, root, "groups", tmp_path / "cache")

    assert record["protocol"]["features"]["database"] == "computed"
    assert len(runs) == 4
    assert len(list((tmp_path / "cache").glob("database-*.json"))) == 2


def test_evaluate_incomplete_entry_recomputed(capsys, groups_tree, tmp_path):
    evaluate(capsys, groups_tree, "groups", tmp_path)
    (metadata_file,) = tmp_path.glob("database-*.json")
    metadata_file.unlink()

    record = evaluate(capsys, groups_tree, "groups", tmp_path)

    assert record["protocol"]["features"]["database"] == "computed"


def test_evaluate_default_cache_under_root(capsys, tmp_path):
    root = write_groups_tree(tmp_path / "groups")
    status, _, err = run(
        capsys, "evaluate-retrieval", root, "--protocol", "groups", *TINY_OPTIONS
    )

    assert status == 0, err
    assert len(list((root / ".skcrosslayer-cache").glob("database-*.npy"))) == 1


def test_default_cache_dir_read_only_root(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))

    folder = retrieval_cli.default_cache_dir(tmp_path / "dataset")

    assert folder == tmp_path / "user-cache" / "skcrosslayer" / "features"


def test_evaluate_no_cache_writes_nothing(capsys, tmp_path):
    root = write_groups_tree(tmp_path / "groups")
    status, out, err = run(
        capsys,
        "evaluate-retrieval",
        root,
        "--protocol",
        "groups",
        "--no-cache",
        "--json",
        *TINY_OPTIONS,
    )

    assert status == 0, err
    assert json.loads(out)["protocol"]["features"]["cache_dir"] is None
    assert not (root / ".skcrosslayer-cache").exists()


def test_evaluate_holidays_text(capsys, holidays_tree, tmp_path):
    status, out, err = run(
        capsys,
        "evaluate-retrieval",
        holidays_tree,
        "--protocol",
        "holidays",
        "--cache",
        tmp_path,
        *TINY_OPTIONS,
    )

    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "holidays: 9 database images, 3 queries"
    assert lines[1].startswith("mAP: ")
    assert 0.0 <= float(lines[1].removeprefix("mAP: ")) <= 1.0
    assert "query_images: full images" in lines
    assert "n_queries_in_database: 3" in lines
    assert (
        "query_in_own_ranking: junk: removed from its own ranking before scoring"
        in (lines)
    )
    assert "features: database computed, queries database rows" in lines


def test_evaluate_ukbench_matches_reference(capsys, ukbench_tree, tmp_path):
    record = evaluate(capsys, ukbench_tree, "ukbench", tmp_path, "--binary")

    features, paths = cached_features(tmp_path, "database")
    signs = np.where(features[:, : N_GUIDANCE * N_COMPONENTS] > 0, 1, -1)
    groups = [int(Path(p).stem.removeprefix("ukbench")) // 4 for p in paths]
    found = []
    for query in range(len(paths)):
        top = reference_ranking(signs @ signs[query])[:4]
        found.append(sum(groups[i] == groups[query] for i in top))
    assert record["scores"]["ukbench_score"] == pytest.approx(np.mean(found))
    # The query is in its own ranking, with the largest similarity.
    assert record["scores"]["ukbench_score"] >= 1.0
    assert record["protocol"]["query_in_own_ranking"].startswith("kept")


def test_evaluate_oxford_box_crops_queries(capsys, oxford_tree, tmp_path):
    first = evaluate(capsys, oxford_tree, "oxford", tmp_path, "--query-images", "box")
    second = evaluate(
        capsys, oxford_tree, "oxford", tmp_path, "--query-images", "box", "--binary"
    )
    full = evaluate(capsys, oxford_tree, "oxford", tmp_path)

    assert first["protocol"]["query_images"] == "cropped to the query box"
    assert first["protocol"]["features"]["queries"] == "computed"
    assert second["protocol"]["features"]["queries"] == "cache"
    assert full["protocol"]["features"]["queries"] == "database rows"
    assert first["protocol"]["n_queries"] == 3
    assert first["protocol"]["n_queries_in_database"] == 3
    assert 0.0 <= first["scores"]["mAP"] <= 1.0
    queries, _ = cached_features(tmp_path, "queries")
    assert queries.shape == (3, N_GUIDANCE * (N_COMPONENTS + 1))


def test_evaluate_roxford_settings(capsys, roxford_tree, tmp_path):
    record = evaluate(capsys, roxford_tree, "roxford", tmp_path)

    scores = record["scores"]
    assert set(scores) == {"easy", "medium", "hard"}
    for setting in scores.values():
        assert set(setting) == {"mAP", "mP@1", "mP@5", "mP@10", "n_excluded_queries"}
        assert 0.0 <= setting["mAP"] <= 1.0
    assert record["protocol"]["n_queries_in_database"] == 0
    assert record["protocol"]["features"]["queries"] == "computed"


def test_evaluate_roxford_text(capsys, roxford_tree, tmp_path):
    status, out, err = run(
        capsys,
        "evaluate-retrieval",
        roxford_tree,
        "--protocol",
        "roxford",
        "--cache",
        tmp_path,
        *TINY_OPTIONS,
    )

    assert status == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["easy", "medium", "hard"]
    assert "mP@10" in lines[1]


def test_evaluate_box_needs_boxes(capsys, groups_tree, tmp_path):
    status, _, err = run(
        capsys,
        "evaluate-retrieval",
        groups_tree,
        "--protocol",
        "groups",
        "--query-images",
        "box",
        "--cache",
        tmp_path,
        *TINY_OPTIONS,
    )

    assert status == 2
    assert "--query-images box needs query boxes" in err


def test_evaluate_missing_root(capsys, tmp_path):
    status, _, err = run(
        capsys,
        "evaluate-retrieval",
        tmp_path / "absent",
        "--protocol",
        "holidays",
        *TINY_OPTIONS,
    )

    assert status == 2
    assert "root folder not found" in err


def test_evaluate_too_many_channels(capsys, groups_tree, tmp_path):
    status, _, err = run(
        capsys,
        "evaluate-retrieval",
        groups_tree,
        "--protocol",
        "groups",
        "--n-channels",
        "300",
        "--cache",
        tmp_path,
        *TINY_OPTIONS,
    )

    assert status == 2
    assert "n_channels=300 is more than the 256 guidance channels" in err


def test_evaluate_cache_and_no_cache(capsys, groups_tree, tmp_path):
    status, _, err = run(
        capsys,
        "evaluate-retrieval",
        groups_tree,
        "--protocol",
        "groups",
        "--cache",
        tmp_path,
        "--no-cache",
    )

    assert status == 2
    assert "--cache and --no-cache contradict each other" in err


def test_evaluate_unknown_protocol(capsys, groups_tree):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate-retrieval", str(groups_tree), "--protocol", "sculptures"])

    assert exit_info.value.code == 2
    assert "invalid choice: 'sculptures'" in capsys.readouterr().err


@pytest.mark.parametrize("setting", SEARCH_SETTINGS)
@pytest.mark.parametrize(
    ("tree", "protocol", "options"),
    [
        ("groups_tree", "groups", []),
        ("reversed_roxford_tree", "roxford", []),
        ("reversed_roxford_tree", "roxford", ["--query-images", "box"]),
        ("ukbench_tree", "ukbench", []),
    ],
    ids=["groups", "roxford reversed", "roxford reversed box", "ukbench"],
)
def test_evaluate_matches_in_memory_ranking(
    capsys, request, shared_cache, monkeypatch, tree, protocol, options, setting
):
    root = request.getfixturevalue(tree)
    cache = shared_cache / f"{tree}-{'-'.join(options)}"
    search_options, settings = SEARCH_SETTINGS[setting]
    rankings = record_rankings(monkeypatch)
    searched = record_searched_arrays(monkeypatch)
    record = evaluate(capsys, root, protocol, cache, *options, *search_options)

    # The reference ranks the cached vectors in memory, in dataset order.
    dataset = retrieval_cli._load_dataset(protocol, root)
    features, paths = cached_features(cache, "database")
    row_of = {path: row for row, path in enumerate(paths)}
    database = features[[row_of[path] for path in dataset.database_paths]]
    if record["protocol"]["features"]["queries"] == "database rows":
        queries = database[dataset.query_indices]
    else:
        queries, _ = cached_features(cache, "queries")
    n_neighbors = 4 if protocol == "ukbench" else dataset.n_database
    _, expected = reference_rank(database, queries, N_COMPONENTS, settings, n_neighbors)

    (ranking,) = rankings
    np.testing.assert_array_equal(ranking, expected)
    assert record["scores"] == retrieval_cli._score(protocol, dataset, expected)
    ((searched_database, _),) = searched
    assert isinstance(searched_database, np.memmap)


def test_evaluate_reads_database_memory_mapped(
    capsys, groups_tree, tmp_path, monkeypatch
):
    searched = record_searched_arrays(monkeypatch)
    first = evaluate(capsys, groups_tree, "groups", tmp_path)
    second = evaluate(capsys, groups_tree, "groups", tmp_path)

    assert first["protocol"]["features"]["database"] == "computed"
    assert second["protocol"]["features"]["database"] == "cache"
    (database_file,) = tmp_path.glob("database-*.npy")
    for database, queries in searched:
        # The queries are database images, read from the same memory map.
        assert isinstance(database, np.memmap)
        assert Path(database.filename) == database_file
        assert queries is database
    assert first["scores"] == second["scores"]


def test_evaluate_no_cache_removes_temporary_file(capsys, tmp_path, monkeypatch):
    root = write_groups_tree(tmp_path / "groups")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    written = []
    original = CrossLayerPooler.transform_to_npy

    def recording(self, X, path):
        written.append(Path(path))
        return original(self, X, path)

    monkeypatch.setattr(CrossLayerPooler, "transform_to_npy", recording)
    searched = record_searched_arrays(monkeypatch)
    status, out, err = run(
        capsys,
        "evaluate-retrieval",
        root,
        "--protocol",
        "groups",
        "--no-cache",
        "--json",
        *TINY_OPTIONS,
    )

    assert status == 0, err
    assert json.loads(out)["protocol"]["features"]["database"] == "computed"
    (path,) = written
    assert path.parent.parent == scratch
    ((database, _),) = searched
    assert isinstance(database, np.memmap)
    assert list(scratch.iterdir()) == []


# -- retrieve ------------------------------------------------------------------------


def parse_rankings(output: str) -> dict[str, list[tuple[int, float, str]]]:
    """Map each query path of ``retrieve`` output to its (rank, similarity, path)."""
    rankings = {}
    for block in output.strip().split("\n\n"):
        header, *rows = block.splitlines()
        assert header.startswith("query ")
        entries = []
        for row in rows:
            rank, similarity, path = row.split(maxsplit=2)
            entries.append((int(rank), float(similarity), path))
        rankings[header.removeprefix("query ")] = entries
    return rankings


def test_retrieve_finds_identical_image_first(capsys, groups_tree):
    queries = [groups_tree / name / "0.jpg" for name in PHOTO_NAMES]
    status, out, err = run(
        capsys,
        "retrieve",
        "--database",
        groups_tree,
        "--queries",
        *queries,
        "-k",
        "3",
        *TINY_OPTIONS,
    )

    assert status == 0, err
    rankings = parse_rankings(out)
    assert list(rankings) == [str(q) for q in queries]
    for query, entries in rankings.items():
        assert [rank for rank, _, _ in entries] == [1, 2, 3]
        # Pooled vectors have unit norm, so an image matches itself with 1.
        assert entries[0][1] == pytest.approx(1.0, abs=1e-4)
        assert entries[0][2] == query
        similarities = [similarity for _, similarity, _ in entries]
        assert similarities == sorted(similarities, reverse=True)


@pytest.mark.parametrize(
    ("options", "self_similarity"),
    [
        # Every sign agrees: 256 channels x 16 bits.
        ([], 4096),
        # Only the 10 kept blocks count: 10 x 16 bits.
        (["--n-channels", "10"], 160),
        (["--n-channels", "10", "--selection-mode", "symmetric"], 160),
    ],
)
def test_retrieve_binary_self_similarity(capsys, groups_tree, options, self_similarity):
    query = groups_tree / "coffee" / "2.jpg"
    status, out, err = run(
        capsys,
        "retrieve",
        "--database",
        groups_tree,
        "--queries",
        query,
        "--binary",
        "-k",
        "2",
        *options,
        *TINY_OPTIONS,
    )

    assert status == 0, err
    (entries,) = parse_rankings(out).values()
    assert entries[0] == (1, self_similarity, str(query))
    assert entries[1][1] <= self_similarity


def test_retrieve_json_lists_whole_small_database(capsys, groups_tree):
    query = groups_tree / "chelsea" / "1.jpg"
    status, out, err = run(
        capsys,
        "retrieve",
        "--database",
        groups_tree / "chelsea",
        "--queries",
        query,
        "-k",
        "10",
        "--json",
        *TINY_OPTIONS,
    )

    assert status == 0, err
    (entry,) = json.loads(out)
    assert entry["query"] == str(query)
    assert [result["rank"] for result in entry["results"]] == [1, 2, 3, 4]
    assert entry["results"][0]["database"] == str(query)


def test_retrieve_missing_queries(capsys, groups_tree, tmp_path):
    status, _, err = run(
        capsys,
        "retrieve",
        "--database",
        groups_tree,
        "--queries",
        tmp_path / "absent",
        *TINY_OPTIONS,
    )

    assert status == 2
    assert "not found" in err


def test_retrieve_needs_database(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["retrieve", "--queries", "q.jpg"])

    assert exit_info.value.code == 2
    assert "--database" in capsys.readouterr().err


# -- rank_database -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_pooled(tmp_path_factory) -> np.ndarray:
    """60 memory-mapped pooled vectors of 16 channels x 6 dims, with many ties."""
    path = tmp_path_factory.mktemp("small") / "pooled.npy"
    return write_pooled_memmap(path, 60, n_guidance=16, block_size=6)


@pytest.fixture(scope="module")
def large_pooled(tmp_path_factory) -> np.ndarray:
    """2,000 memory-mapped pooled vectors of 200 channels x 99 dims: 160 MB."""
    path = tmp_path_factory.mktemp("large") / "pooled.npy"
    return write_pooled_memmap(path, 2000, n_guidance=200, block_size=99)


@pytest.mark.parametrize("setting", SEARCH_SETTINGS)
@pytest.mark.parametrize("n_neighbors", [7, 50])
def test_rank_database_chunks_match_reference(
    small_pooled, monkeypatch, setting, n_neighbors
):
    # Chunks of 5 database rows, batches of 3 float queries by bytes or 2 by
    # ranking entries, and single binary queries, with rows read in another
    # order than the file's: ties must still go to the lower index.
    row_bytes = small_pooled.shape[1] * 4
    monkeypatch.setattr(retrieval_cli, "_MAX_CHUNK_BYTES", 5 * row_bytes)
    monkeypatch.setattr(retrieval_cli, "_MAX_QUERY_BATCH_BYTES", 3 * row_bytes)
    monkeypatch.setattr(retrieval_cli, "_MAX_RANKING_ENTRIES", 10)
    _, settings = SEARCH_SETTINGS[setting]
    database_rows = np.random.default_rng(1).permutation(60)[:50]
    query_rows = np.array([3, 59, 0, 17, 17, 42, 8])

    similarities, indices = rank_database(
        small_pooled,
        small_pooled,
        6,
        settings,
        n_neighbors,
        database_rows=database_rows,
        query_rows=query_rows,
    )

    database = np.asarray(small_pooled)[database_rows]
    queries = np.asarray(small_pooled)[query_rows]
    expected_similarities, expected_indices = reference_rank(
        database, queries, 6, settings, n_neighbors
    )
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(similarities, expected_similarities)
    assert similarities.dtype == expected_similarities.dtype


@pytest.mark.parametrize("setting", SEARCH_SETTINGS)
def test_rank_database_rows_in_order(small_pooled, setting):
    _, settings = SEARCH_SETTINGS[setting]
    queries = np.asarray(small_pooled[10:14])

    similarities, indices = rank_database(small_pooled, queries, 6, settings, 60)

    expected_similarities, expected_indices = reference_rank(
        np.asarray(small_pooled), queries, 6, settings, 60
    )
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(similarities, expected_similarities)


@pytest.mark.parametrize("setting", SEARCH_SETTINGS)
def test_rank_database_memory_bounded_by_chunks(large_pooled, monkeypatch, setting):
    # With 4 MiB chunks and query batches, ranking the 160 MB database must
    # allocate a small fraction of it, even with its rows read out of order.
    monkeypatch.setattr(retrieval_cli, "_MAX_CHUNK_BYTES", 1 << 22)
    monkeypatch.setattr(retrieval_cli, "_MAX_QUERY_BATCH_BYTES", 1 << 22)
    _, settings = SEARCH_SETTINGS[setting]
    database_rows = np.arange(2000)[::-1].copy()
    query_rows = np.arange(0, 2000, 50)

    tracemalloc.start()
    try:
        _, indices = rank_database(
            large_pooled,
            large_pooled,
            99,
            settings,
            2000,
            database_rows=database_rows,
            query_rows=query_rows,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert large_pooled.nbytes == 2000 * 20000 * 4
    assert peak < large_pooled.nbytes / 8
    # File row q is database item 1999 - q in the reversed order. A query
    # matches itself best when no channel selection drops its blocks.
    if settings.n_channels is None:
        np.testing.assert_array_equal(indices[:, 0], 1999 - query_rows)


def test_rank_database_too_many_neighbors(small_pooled):
    with pytest.raises(ValueError, match="n_neighbors=61 is more than the 60"):
        rank_database(small_pooled, small_pooled[:2], 6, SearchSettings(), 61)

"""Feature extraction on a Dask cluster.

:func:`extract` runs a fitted pooler over image files on the workers of a
``dask.distributed`` cluster:

1. The pooler is copied with ``n_workers=0`` and ``verbose=0`` and sent to
   every worker once with ``Client.scatter(..., broadcast=True)``. Tasks refer
   to that copy, so it is not pickled again per chunk.
2. Each worker builds the backbone once, in a warm-up task that runs before
   any chunk. The network is never part of the pickled pooler, and
   :func:`skcrosslayer.backbones.load_network` caches it per process, so the
   chunks that follow on the same worker reuse that copy.
3. The paths are split into chunks of ``chunk_size``, one task per chunk. The
   rows of each chunk either come back to the client, which fills one array
   in input order, or are written by the worker into one ``.npy`` file at the
   chunk's row offset.

The on-disk output is created on the client as a temporary file next to the
final path, with the ``.npy`` header of the full array. Each worker writes its
chunk's rows, a byte range that no other chunk writes, with an ordinary
positional write. A memory map is avoided because a network file system can
write a dirty page back whole, over the rows of a neighbouring chunk that
share the page. The client renames the temporary file
to the final path only after every chunk has finished, so the output appears
atomically and only complete. On an error or an interrupt the temporary file
is removed.

Dask is an optional dependency: ``pip install "dask[distributed]"``.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import HasMethods, Interval, validate_params
from sklearn.utils.validation import check_is_fitted

from ._base import BackboneTransformer
from ._io import temporary_file
from .backbones import load_network
from .exceptions import ImageLoadWarning

__all__ = ["ChunkExtractionError", "extract"]

logger = logging.getLogger(__name__)

# Paths shown when a warning lists the images that could not be loaded.
_N_PATHS_SHOWN = 5


class ChunkExtractionError(RuntimeError):
    """A chunk of images whose features could not be computed on a worker.

    The message names the chunk, its rows and first and last paths, the
    worker, and the type and message of the original error.

    Attributes
    ----------
    chunk : int
        Index of the chunk, from 0.
    start, stop : int
        Rows of the chunk in the output, ``start`` to ``stop - 1``.
    worker : str
        Address of the worker the chunk ran on.
    """

    def __init__(self, message: str, chunk: int, start: int, stop: int, worker: str):
        super().__init__(message)
        self.chunk = chunk
        self.start = start
        self.stop = stop
        self.worker = worker

    def __reduce__(self):
        # Dask pickles worker exceptions; keep the attributes across.
        return (
            type(self),
            (self.args[0], self.chunk, self.start, self.stop, self.worker),
        )


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "skcrosslayer.distributed.extract needs dask.distributed, which is not "
            'installed; install it with `pip install "dask[distributed]"`'
        ) from None
    return distributed


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _collect_paths(paths, client) -> list[str]:
    """Return ``paths`` as a list of absolute path strings.

    A Dask bag or a Dask dataframe column is computed on the cluster and its
    values are brought to the client: only the path strings travel, and they
    are split into chunks again there.
    """
    import dask

    if isinstance(paths, str | os.PathLike):
        raise TypeError(
            f"paths must be a sequence of image paths, got the single path "
            f"{os.fspath(paths)!r}; wrap it in a list"
        )
    if dask.is_dask_collection(paths):
        paths = client.compute(paths).result()
        if getattr(paths, "ndim", 1) != 1:
            raise TypeError(
                "paths is a Dask collection of "
                f"{getattr(paths, 'ndim', '?')} dimensions, such as a whole "
                "dataframe; pass one column of paths, e.g. frame['path']"
            )
    try:
        items = list(paths)
    except TypeError:
        raise TypeError(
            f"paths must be a sequence of image paths, got {type(paths).__name__}"
        ) from None
    if not items:
        raise ValueError("paths is empty; pass at least one image path")

    for i, item in enumerate(items):
        if not isinstance(item, str | os.PathLike):
            raise TypeError(
                f"paths[{i}] has type {type(item).__name__}; extract sends file "
                "paths to the workers, so pass paths of images that every worker "
                "can read, or call pooler.transform for images in memory"
            )
    # Workers do not share the client's working directory.
    return [os.path.abspath(os.fspath(item)) for item in items]


def _backbone_transformers(estimator) -> list[BackboneTransformer]:
    """Return ``estimator`` and its nested estimators that run a backbone."""
    candidates = [estimator]
    if hasattr(estimator, "get_params"):
        candidates += list(estimator.get_params(deep=True).values())
    found = []
    for candidate in candidates:
        if isinstance(candidate, BackboneTransformer) and not any(
            candidate is seen for seen in found
        ):
            found.append(candidate)
    return found


def _worker_copy(pooler):
    """Return a copy of the fitted ``pooler`` set up to run inside Dask workers.

    Dask worker processes are daemonic by default (the
    ``distributed.worker.daemon`` setting), and a daemonic process cannot
    start child processes, so a DataLoader with worker processes would fail.
    The copy loads images in the worker itself (``n_workers=0``) and shows no
    progress bar. The caller's pooler is left unchanged.
    """
    shipped = copy.deepcopy(pooler)
    for transformer in _backbone_transformers(shipped):
        transformer.set_params(n_workers=0, verbose=0)
    return shipped


def _n_output_features(pooler) -> int:
    if hasattr(pooler, "n_features_out_"):
        return int(pooler.n_features_out_)
    try:
        return len(pooler.get_feature_names_out())
    except (AttributeError, ValueError) as exc:
        raise TypeError(
            f"cannot tell the output width of {type(pooler).__name__}: it has no "
            "n_features_out_ attribute and get_feature_names_out() failed "
            f"({exc}); pass a fitted CrossLayerPooler or GlobalPooler, or a "
            "pipeline whose steps all support get_feature_names_out"
        ) from exc


def _check_output(output, overwrite: bool) -> Path:
    output = Path(output)
    if output.suffix != ".npy":
        raise ValueError(
            f"output must be a .npy file, got {str(output)!r}; the features are "
            "written as one NumPy array, so end the name with .npy"
        )
    if output.exists() and not overwrite:
        raise FileExistsError(
            f"output {str(output)!r} already exists; pass overwrite=True to "
            "replace it or choose another path"
        )
    if not output.parent.is_dir():
        raise FileNotFoundError(
            f"folder {str(output.parent)!r} of output {str(output)!r} does not "
            "exist; create it first"
        )
    return output


# ---------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------


def _worker_address() -> str:
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:
        return "the client process"


def _load_networks(pooler) -> int:
    """Build the networks of ``pooler`` in this process and return their count."""
    transformers = _backbone_transformers(pooler)
    for transformer in transformers:
        load_network(transformer.backbone, transformer.weights)
    return len(transformers)


def _chunk_failure(
    exc: Exception, number: int, start: int, paths: Sequence[str]
) -> ChunkExtractionError:
    stop = start + len(paths)
    worker = _worker_address()
    message = (
        f"chunk {number} (rows {start} to {stop - 1}, {paths[0]!r} to "
        f"{paths[-1]!r}) failed on worker {worker}: {type(exc).__name__}: {exc}"
    )
    return ChunkExtractionError(message, number, start, stop, worker)


def _transform_chunk(
    pooler, paths: Sequence[str], number: int, start: int, n_features: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the float32 features and the loaded-image mask of one chunk."""
    try:
        if hasattr(pooler, "transform_with_mask"):
            features, valid = pooler.transform_with_mask(paths)
        else:
            features = pooler.transform(paths)
            valid = np.ones(len(paths), dtype=bool)
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.shape != (len(paths), n_features):
            raise ValueError(
                f"the pooler returned features of shape {features.shape} for "
                f"{len(paths)} images, expected ({len(paths)}, {n_features})"
            )
    except Exception as exc:
        raise _chunk_failure(exc, number, start, paths) from exc
    return features, np.asarray(valid, dtype=bool)


def _write_chunk(
    pooler,
    paths: Sequence[str],
    number: int,
    start: int,
    n_features: int,
    file: str,
    data_offset: int,
) -> np.ndarray:
    """Write the rows of one chunk into ``file`` and return its loaded-image mask."""
    features, valid = _transform_chunk(pooler, paths, number, start, n_features)
    # NOTE: only run with workers on the client's machine, so on a local file
    # system; concurrent writes over NFS are untested.
    try:
        # r+b fails on a missing file instead of creating a wrong one.
        with open(file, "r+b") as handle:
            handle.seek(data_offset + start * features.shape[1] * 4)
            handle.write(features.tobytes())
    except OSError as exc:
        raise _chunk_failure(exc, number, start, paths) from exc
    return valid


# ---------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------


def _create_output_file(output: Path, n_rows: int, n_features: int) -> tuple[str, int]:
    """Create the full-size temporary ``.npy`` next to ``output``.

    Returns the temporary path and the byte offset of its first row.
    """
    handle, temporary = temporary_file(output)
    os.close(handle)
    array = np.lib.format.open_memmap(
        temporary, mode="w+", dtype=np.float32, shape=(n_rows, n_features)
    )
    data_offset = array.offset
    del array
    return temporary, data_offset


def _check_workers_see(client, file: str) -> None:
    seen = client.run(os.path.isfile, file)
    blind = sorted(address for address, found in seen.items() if not found)
    if blind:
        raise FileNotFoundError(
            f"workers {', '.join(blind)} cannot see {file!r}, created on the "
            "client next to output; output must be on a file system that every "
            "worker mounts under the same path, or pass output=None to gather "
            "the features on the client"
        )


def _finish_output(temporary: str, output: Path) -> None:
    """fsync the filled temporary file and rename it to ``output``."""
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, output)
    directory = os.open(output.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _warm_up_workers(client, pooler_future) -> None:
    """Build the network on every worker before any chunk runs.

    Each chunk would build it on first use as well, but two threads of one
    worker that start together would then build it twice. A warm-up task
    whose worker has left the cluster runs on another worker instead of
    waiting for it.
    """
    distributed = _import_distributed()
    futures = [
        client.submit(
            _load_networks,
            pooler_future,
            workers=[address],
            allow_other_workers=True,
            pure=False,
            key=f"skcrosslayer-load-network-{uuid.uuid4().hex}",
        )
        for address in client.nthreads()
    ]
    distributed.wait(futures)
    for future in futures:
        future.result()


def _run_chunks(futures: dict, n_rows: int, n_features: int, output):
    """Collect the chunks as they finish into (features or None, loaded mask)."""
    distributed = _import_distributed()
    features = None
    if output is None:
        features = np.empty((n_rows, n_features), dtype=np.float32)
    valid = np.ones(n_rows, dtype=bool)

    for future, result in distributed.as_completed(futures, with_results=True):
        start, stop = futures.pop(future)
        if output is None:
            features[start:stop], valid[start:stop] = result
        else:
            valid[start:stop] = result
        logger.debug("Chunk of rows %d to %d done", start, stop - 1)
    return features, valid


def _warn_failures(pooler, paths: Sequence[str], valid: np.ndarray) -> None:
    failed = np.flatnonzero(~valid)
    if failed.size == 0:
        return
    shown = ", ".join(repr(paths[i]) for i in failed[:_N_PATHS_SHOWN])
    message = (
        f"{failed.size} of {len(paths)} images could not be loaded and give "
        f"all-zero rows: {shown}" + (" ..." if failed.size > _N_PATHS_SHOWN else "")
    )
    logger.info("%s", message)
    if getattr(pooler, "on_error", "raise") == "warn":
        # Levels: this function, extract, its validate_params wrapper, the caller.
        warnings.warn(message, ImageLoadWarning, stacklevel=4)


@validate_params(
    {
        "pooler": [HasMethods(["transform"])],
        "paths": "no_validation",
        "client": "no_validation",
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "output": [str, os.PathLike, None],
        "overwrite": ["boolean"],
        "return_mask": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def extract(
    pooler,
    paths,
    client,
    *,
    chunk_size: int = 64,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    return_mask: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Compute the features of image files on a Dask cluster.

    Parameters
    ----------
    pooler : fitted transformer
        A fitted :class:`~skcrosslayer.CrossLayerPooler`,
        :class:`~skcrosslayer.GlobalPooler`, or a fitted pipeline of them
        whose output width is known (``n_features_out_`` or
        ``get_feature_names_out``). It is not modified.
    paths : sequence of str or path-like, Dask bag, or Dask dataframe column
        Image files that every worker can read under the same path. Relative
        paths are made absolute against the client's working directory. A
        Dask collection is computed and its path strings are brought to the
        client.
    client : distributed.Client
        Client of the cluster, for example ``Client("tcp://scheduler:8786")``
        or ``Client(LocalCluster(...))``.
    chunk_size : int, default=64
        Images per task. A worker keeps the ``chunk_size * n_features * 4``
        bytes of a chunk's result in memory until the client collects them or
        they are written to ``output``.
    output : str, path-like or None, default=None
        ``.npy`` file to write the features to, on a file system that every
        worker mounts under the same path. None gathers them on the client.
    overwrite : bool, default=False
        Replace an existing ``output``; otherwise an existing one raises
        ``FileExistsError``.
    return_mask : bool, default=False
        Also return the mask of the images that were loaded, as
        ``transform_with_mask`` does.

    Returns
    -------
    features : ndarray of shape (n_images, n_features), float32
        Rows in input order. With ``output`` it is the written file, opened
        read-only with ``np.load(output, mmap_mode="r")``. Images that could
        not be loaded (pooler ``on_error`` other than ``"raise"``) give
        all-zero rows.
    valid : ndarray of shape (n_images,), bool
        Only with ``return_mask=True``: False for the all-zero rows.

    Raises
    ------
    ChunkExtractionError
        A chunk failed on a worker, for example on an image that cannot be
        loaded with ``on_error="raise"``. The message names the chunk, its
        rows and paths, and the original error. The other chunks are
        cancelled and no output file is left behind.

    Notes
    -----
    The features equal those of ``pooler.transform(paths)`` up to float32
    rounding: chunks form other batches than one local call, and batch
    composition and thread count change the order in which the convolutions
    sum. For the AlexNet pooler of the tests the largest difference was about
    1e-6, and the tests allow 5e-5.

    The shipped copy of the pooler has ``n_workers=0``, because Dask worker
    processes are daemonic by default and cannot start DataLoader worker
    processes. The Dask workers themselves load images in parallel. On a
    cluster with GPUs, ``device="auto"`` picks CUDA on each worker.

    Examples
    --------
    Given a fitted ``pooler`` and a list of image ``paths``:

    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1)  # doctest: +SKIP
    >>> client = Client(cluster)  # doctest: +SKIP
    >>> features = extract(pooler, paths, client)  # doctest: +SKIP
    """
    distributed = _import_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(
            f"client must be a distributed.Client, got {type(client).__name__}; "
            'connect with Client("tcp://scheduler:8786") or Client(LocalCluster())'
        )
    check_is_fitted(pooler)
    n_features = _n_output_features(pooler)
    paths = _collect_paths(paths, client)
    if output is not None:
        output = _check_output(output, overwrite)
    n_rows = len(paths)
    started = time.perf_counter()
    logger.info(
        "Extracting %d images in chunks of %d on %d workers",
        n_rows,
        chunk_size,
        len(client.nthreads()),
    )

    pooler_future = client.scatter(_worker_copy(pooler), broadcast=True, hash=False)
    temporary, data_offset = None, 0
    futures: dict = {}
    try:
        _warm_up_workers(client, pooler_future)
        if output is not None:
            temporary, data_offset = _create_output_file(output, n_rows, n_features)
            _check_workers_see(client, temporary)
        token = uuid.uuid4().hex
        for number, start in enumerate(range(0, n_rows, chunk_size)):
            chunk = paths[start : start + chunk_size]
            arguments = (pooler_future, chunk, number, start, n_features)
            if output is None:
                function = _transform_chunk
            else:
                function = _write_chunk
                arguments += (temporary, data_offset)
            future = client.submit(
                function, *arguments, key=f"skcrosslayer-chunk-{number}-{token}"
            )
            futures[future] = (start, start + len(chunk))
        features, valid = _run_chunks(futures, n_rows, n_features, output)
        if output is not None:
            _finish_output(temporary, output)
            temporary = None
            features = np.load(output, mmap_mode="r")
    finally:
        if futures:
            client.cancel(list(futures))
        pooler_future.release()
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)

    _warn_failures(pooler, paths, valid)
    logger.info(
        "Extracted %d x %d features in %.1f s%s",
        n_rows,
        n_features,
        time.perf_counter() - started,
        "" if output is None else f" into {output}",
    )
    if return_mask:
        return features, valid
    return features

"""Feature extraction that survives interruption.

Features are computed in chunks of images. Each finished chunk is written
atomically to a work folder next to the output (``OUTPUT.partial/``) together
with the fitted transformer and the list of inputs, so a rerun of the same
command loads what is finished and only computes the rest. The output file
appears, atomically, only once every chunk is done; the work folder is then
removed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import joblib
import numpy as np

from ._io import atomic_write, check_writable

__all__ = ["extract_resumable"]

logger = logging.getLogger(__name__)


def _inputs_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _work_folder(output: Path, paths: Sequence[Path]) -> Path:
    folder = output.with_name(output.name + ".partial")
    digest_file = folder / "inputs.sha256"
    digest = _inputs_digest(paths)
    if folder.exists():
        recorded = digest_file.read_text().strip() if digest_file.exists() else None
        if recorded != digest:
            raise ValueError(
                f"the unfinished run in {str(folder)!r} was started on other "
                "input images; remove that folder to start over, or rerun with "
                "the same inputs to resume it"
            )
        logger.info("Resuming the unfinished run in %s", folder)
    else:
        folder.mkdir(parents=True)
        atomic_write(digest_file, lambda f: f.write(digest + "\n"), mode="w")
    return folder


def extract_resumable(
    fit: Callable[[Sequence[Path]], object],
    paths: Sequence[Path],
    output: Path,
    *,
    overwrite: bool = False,
    chunk_size: int = 1000,
    transform: Callable[[object, Sequence[Path]], np.ndarray] | None = None,
) -> tuple[object, np.ndarray, int]:
    """Compute features of ``paths`` into ``output`` (.npy), resuming if possible.

    Parameters
    ----------
    fit : callable
        ``fit(paths)`` returns a fitted transformer; it is called once, and its
        result is saved so that a resumed run uses the same transformer.
    paths : sequence of Path
        Input images, in output row order.
    output : Path
        Final ``.npy`` file.
    overwrite : bool
        Replace an existing ``output``; otherwise an existing one raises.
    chunk_size : int
        Images per saved chunk.
    transform : callable, optional
        ``transform(model, paths)``; defaults to ``model.transform(paths)``.

    Returns
    -------
    model, features, n_resumed
        The fitted transformer, the feature array, and the number of images
        whose features were loaded from a previous run instead of computed.
    """
    output = Path(output)
    check_writable(output, overwrite)
    folder = _work_folder(output, paths)
    if transform is None:
        transform = _default_transform

    model_file = folder / "model.joblib"
    if model_file.exists():
        model = joblib.load(model_file)
    else:
        try:
            model = fit(paths)
        except BaseException:
            # Nothing was computed yet, so the work folder contains nothing to resume.
            shutil.rmtree(folder)
            raise
        atomic_write(model_file, lambda f: joblib.dump(model, f))

    chunks, n_resumed = [], 0
    for number, start in enumerate(range(0, len(paths), chunk_size)):
        chunk_file = folder / f"chunk-{number:06d}.npy"
        if chunk_file.exists():
            features = np.load(chunk_file)
            n_resumed += len(features)
        else:
            features = np.asarray(transform(model, paths[start : start + chunk_size]))
            atomic_write(chunk_file, lambda f, a=features: np.save(f, a))
        chunks.append(features)

    features = np.concatenate(chunks)
    atomic_write(output, lambda f: np.save(f, features))
    shutil.rmtree(folder)
    return model, features, n_resumed


def _default_transform(model, paths):
    return model.transform(paths)

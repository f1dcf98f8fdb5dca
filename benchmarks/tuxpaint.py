"""Labelled photographs from the Debian package ``tuxpaint-stamps-default``.

Tux Paint's stamps are sorted into category folders (``animals/mammals``,
``food/fruit``, ...). Many are photographs cut out on a transparent
background, others are drawings. :func:`select_photos` keeps the photographs
and labels each one with its category folder, which turns the package into a
small object classification set that installs offline from Debian.

The package is GPL-2: its files are read from a system install or from a
local extraction under a git-ignored cache folder, never copied into the
repository.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "PACKAGE",
    "StampDataError",
    "StampPhotos",
    "StampsLocation",
    "class_of",
    "composite_on_white",
    "count_opaque_colors",
    "find_stamps",
    "select_photos",
]

logger = logging.getLogger(__name__)

PACKAGE = "tuxpaint-stamps-default"

# Install location of the stamps of the Debian package.
SYSTEM_STAMPS = Path("/usr/share/tuxpaint/stamps")

# Path of the stamps folder inside the package's file tree.
_STAMPS_IN_PACKAGE = Path("usr/share/tuxpaint/stamps")

# Written last into a finished extraction, so that an interrupted one is redone.
_COMPLETE_MARKER = ".extraction-complete"


class StampDataError(RuntimeError):
    """The stamps could not be found, downloaded or extracted."""


@dataclass(frozen=True)
class StampsLocation:
    """A folder of Tux Paint stamps and the package version it comes from.

    Attributes
    ----------
    root : Path
        The ``stamps`` folder, whose subfolders are the categories.
    version : str
        Debian version of ``tuxpaint-stamps-default``, such as ``"2022.06.04-1"``.
    source : str
        How the folder was obtained: ``"system install"``, or the ``.deb`` file
        it was extracted from.
    """

    root: Path
    version: str
    source: str


@dataclass(frozen=True)
class StampPhotos:
    """Photographs selected from the stamps, composited on white, with labels.

    Attributes
    ----------
    images : list of ndarray
        RGB uint8 arrays of shape ``(height, width, 3)``, at their stored size.
    paths : list of str
        Path of each image relative to the stamps folder.
    y : ndarray of shape (n_images,)
        Integer label of each image, indexing ``class_names``.
    class_names : list of str
        Category folder of each label, sorted by name.
    n_excluded : dict of str to int
        Number of PNG files dropped by each rule, in the order the rules apply.
    """

    images: list[np.ndarray]
    paths: list[str]
    y: np.ndarray
    class_names: list[str]
    n_excluded: dict[str, int]

    def class_counts(self) -> dict[str, int]:
        """Return the number of images of each class, largest class first."""
        counts = Counter(self.class_names[label] for label in self.y)
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# -- locating or extracting the package ----------------------------------------


def _run(command: Sequence[str], cwd: Path | None = None) -> str:
    """Run ``command`` and return its stdout, raising StampDataError on failure."""
    if shutil.which(command[0]) is None:
        raise StampDataError(
            f"{command[0]} not found; it is needed to obtain {PACKAGE}. Run this on a "
            f"Debian or Ubuntu system, or install {PACKAGE} and rerun."
        )
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StampDataError(
            f"command {' '.join(command)!r} failed with exit status "
            f"{result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout


def _installed_version() -> str:
    """Return the version of the installed package, or "unknown" without dpkg."""
    try:
        return _run(["dpkg-query", "-W", "-f=${Version}", PACKAGE]).strip()
    except StampDataError:
        return "unknown"


def _download_deb(cache_dir: Path) -> Path:
    """Return a cached ``.deb`` of the package, downloading it with apt-get if none."""
    cached = sorted(cache_dir.glob(f"{PACKAGE}_*.deb"))
    if cached:
        return cached[-1]
    logger.info("Downloading %s with apt-get into %s", PACKAGE, cache_dir)
    _run(["apt-get", "download", PACKAGE], cwd=cache_dir)
    cached = sorted(cache_dir.glob(f"{PACKAGE}_*.deb"))
    if not cached:
        raise StampDataError(
            f"apt-get download {PACKAGE} succeeded but left no {PACKAGE}_*.deb in "
            f"{cache_dir}; download the .deb by hand and pass it with --deb"
        )
    return cached[-1]


def _cached_extraction(cache_dir: Path) -> StampsLocation | None:
    """Return the newest finished extraction in ``cache_dir``, or None."""
    markers = sorted(cache_dir.glob(f"{PACKAGE}_*/{_COMPLETE_MARKER}"))
    if not markers:
        return None
    target = markers[-1].parent
    return StampsLocation(
        root=target / _STAMPS_IN_PACKAGE,
        version=target.name.removeprefix(f"{PACKAGE}_"),
        source=markers[-1].read_text().strip(),
    )


def _extract_deb(deb: Path, cache_dir: Path) -> StampsLocation:
    """Extract ``deb`` once under ``cache_dir`` and return its stamps folder."""
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    target = cache_dir / f"{PACKAGE}_{version}"
    if not (target / _COMPLETE_MARKER).is_file():
        logger.info("Extracting %s into %s", deb, target)
        shutil.rmtree(target, ignore_errors=True)
        # Extract next to the target and rename, so the target is never partial.
        staging = Path(tempfile.mkdtemp(prefix="extracting-", dir=cache_dir))
        try:
            _run(["dpkg-deb", "-x", str(deb), str(staging)])
            (staging / _COMPLETE_MARKER).write_text(f"{deb.resolve()}\n")
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    root = target / _STAMPS_IN_PACKAGE
    if not root.is_dir():
        raise StampDataError(
            f"{_STAMPS_IN_PACKAGE} not found in {deb}; pass a .deb of {PACKAGE}"
        )
    return StampsLocation(root=root, version=version, source=str(deb))


def find_stamps(
    cache_dir: str | os.PathLike, deb: str | os.PathLike | None = None
) -> StampsLocation:
    """Locate the Tux Paint stamps, downloading and extracting them if needed.

    Sources are tried in this order:

    1. the ``.deb`` file ``deb``, when given;
    2. the system install under ``/usr/share/tuxpaint/stamps``;
    3. an extraction already in ``cache_dir``;
    4. a ``tuxpaint-stamps-default_*.deb`` already in ``cache_dir``;
    5. a ``.deb`` downloaded into ``cache_dir`` with ``apt-get download``, which
       needs a Debian or Ubuntu system with access to its package mirrors.

    A ``.deb`` is extracted into ``cache_dir`` with ``dpkg-deb -x`` once, and
    later calls reuse the extraction.

    Parameters
    ----------
    cache_dir : path
        Folder for downloaded and extracted files; created if missing.
    deb : path or None, default=None
        A local ``tuxpaint-stamps-default_*.deb`` to use.

    Returns
    -------
    StampsLocation

    Raises
    ------
    StampDataError
        If ``deb`` does not exist, or a needed tool (``apt-get``,
        ``dpkg-deb``) is missing or fails.
    """
    cache_dir = Path(cache_dir)
    if deb is not None:
        deb = Path(deb)
        if not deb.is_file():
            raise StampDataError(
                f"deb file not found: '{deb}'; pass the path of a downloaded "
                f"{PACKAGE}_*.deb, or omit --deb to use a system install or apt-get"
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        return _extract_deb(deb.resolve(), cache_dir)
    if SYSTEM_STAMPS.is_dir():
        return StampsLocation(
            root=SYSTEM_STAMPS, version=_installed_version(), source="system install"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = _cached_extraction(cache_dir)
    if cached is not None:
        return cached
    return _extract_deb(_download_deb(cache_dir), cache_dir)


# -- selecting the photographs --------------------------------------------------


def count_opaque_colors(rgba: np.ndarray) -> int:
    """Return the number of distinct RGB values among pixels with alpha 255.

    Parameters
    ----------
    rgba : ndarray of shape (height, width, 4), uint8

    Returns
    -------
    int
    """
    opaque = rgba[rgba[:, :, 3] == 255][:, :3].astype(np.uint32)
    # One integer per colour: 0xRRGGBB.
    packed = (opaque[:, 0] << 16) | (opaque[:, 1] << 8) | opaque[:, 2]
    return int(np.unique(packed).size)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Blend an RGBA image over a white background.

    Parameters
    ----------
    rgba : ndarray of shape (height, width, 4), uint8

    Returns
    -------
    ndarray of shape (height, width, 3), uint8
        ``alpha * rgb + (1 - alpha) * 255`` with alpha in [0, 1], rounded.
    """
    alpha = rgba[:, :, 3:].astype(np.float32) / 255.0
    blended = rgba[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.rint(blended).astype(np.uint8)


def class_of(relative_path: str | os.PathLike) -> str | None:
    """Return the category folder of a stamp: its first two folder levels.

    ``animals/mammals/cats/lion.png`` and ``animals/mammals/zebra.png`` are both
    ``animals/mammals``; ``household/broom.png`` is ``household``. A file
    directly in the stamps folder has no category and gives None.
    """
    folders = Path(relative_path).parts[:-1]
    if not folders:
        return None
    return "/".join(folders[:2])


def _drop_reason(path: Path, relative: Path) -> str | None:
    """Return the rule that drops a PNG before it is decoded, or None."""
    if "cartoon" in relative.parts[:-1]:
        return "in a cartoon folder"
    if path.with_suffix(".svg").exists():
        return "has a sibling .svg (a drawing)"
    if path.stem.endswith("_mirror"):
        # Tux Paint's mirrored variant of another stamp: a near duplicate.
        return "mirrored variant (_mirror)"
    if class_of(relative) is None:
        return "outside any category folder"
    return None


def select_photos(
    root: str | os.PathLike, min_colors: int = 800, min_class_size: int = 6
) -> StampPhotos:
    """Select the photographs among the stamps under ``root`` and label them.

    A PNG is selected when all of these hold:

    - it is outside ``cartoon`` folders;
    - no ``.svg`` of the same name is beside it, because such PNGs are
      renderings of vector drawings;
    - it is not a ``_mirror`` variant;
    - it has at least ``min_colors`` distinct colours among its opaque pixels,
      which drawings rarely have;
    - its pixels differ from those of every PNG selected before it.

    Selected images are composited on white and labelled with
    :func:`class_of`. Classes with fewer than ``min_class_size`` images are
    dropped.

    Parameters
    ----------
    root : path
        The ``stamps`` folder.
    min_colors : int, default=800
        Minimum number of distinct RGB values among pixels with alpha 255.
    min_class_size : int, default=6
        Minimum number of images of a class.

    Returns
    -------
    StampPhotos
        Images in path order.
    """
    root = Path(root)
    n_excluded: Counter[str] = Counter()
    selected: list[tuple[str, str, np.ndarray]] = []
    seen_pixels: set[str] = set()
    for path in sorted(root.rglob("*.png")):
        relative = path.relative_to(root)
        reason = _drop_reason(path, relative)
        if reason is not None:
            n_excluded[reason] += 1
            continue

        with Image.open(path) as image:
            rgba = np.asarray(image.convert("RGBA"))
        if count_opaque_colors(rgba) < min_colors:
            n_excluded[f"fewer than {min_colors} opaque colours"] += 1
            continue
        digest = hashlib.sha256(rgba.tobytes() + str(rgba.shape).encode()).hexdigest()
        if digest in seen_pixels:
            n_excluded["same pixels as an earlier stamp"] += 1
            continue
        seen_pixels.add(digest)
        selected.append((relative.as_posix(), class_of(relative), rgba))

    sizes = Counter(label for _, label, _ in selected)
    class_names = sorted(name for name, size in sizes.items() if size >= min_class_size)
    n_small = sum(size for size in sizes.values() if size < min_class_size)
    n_excluded[f"in a class of fewer than {min_class_size}"] = n_small
    index = {name: i for i, name in enumerate(class_names)}
    selected = [item for item in selected if item[1] in index]
    return StampPhotos(
        images=[composite_on_white(rgba) for _, _, rgba in selected],
        paths=[relative for relative, _, _ in selected],
        y=np.asarray([index[label] for _, label, _ in selected], dtype=np.int64),
        class_names=class_names,
        n_excluded=dict(n_excluded),
    )

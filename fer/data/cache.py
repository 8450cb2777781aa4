"""Decode cache: parsed FaceSets stored as uncompressed .npz files, keyed by what was read and how.

Entries are named by a digest of the source's resolved path, every source file's size and mtime, the
layout, on_bad_row and FORMAT_VERSION, so a changed source simply stops matching its old entry. Deleting
the cache folder at any time is safe; it only costs a re-parse.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer.data.faceset import FaceSet
from fer.data.labels import IMAGE_SIZE
from fer.files import atomic_path

FORMAT_VERSION = 1  # bump whenever the readers decode differently, so stale entries stop matching


def cache_root(cache_dir: str | os.PathLike[str] | bool | None = None) -> Path | None:
    """Folder holding the entries: `cache_dir`, else $FER_CACHE_DIR, else ~/.cache/fer; None if False."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        cache_dir = os.environ.get("FER_CACHE_DIR") or Path.home() / ".cache" / "fer"
    return Path(cache_dir).expanduser()


def entry_key(root: str, files: Sequence[Path], layout: str, on_bad_row: str) -> str:
    """Digest of everything a read depends on: where (a folder or an address), which files (name, size,
    mtime) and how."""
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, root, layout, on_bad_row]).encode())
    for file in files:
        stat = file.stat()
        digest.update(f"\0{file}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def load(directory: Path, key: str) -> FaceSet | None:
    """The FaceSet stored under `key`, or None; a damaged entry is deleted with a warning."""
    path = directory / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as entry:
            faces = FaceSet(
                images=entry["images"],
                labels=entry["labels"],
                split=entry["split"],
                ids=entry["ids"],
                layout=str(entry["layout"]),
                source=str(entry["source"]),
                masks=entry["masks"] if "masks" in entry.files else None,
                skipped=int(entry["skipped"]),
                warnings=[str(w) for w in entry["warnings"]],
            )
        _check(faces)
    except FileNotFoundError:
        return None
    except Exception as e:  # whatever went wrong, the entry cannot be trusted: drop it and re-read the source
        warnings.warn(f"discarding unreadable cache entry {path} ({type(e).__name__}: {e})", stacklevel=2)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return faces


def save(directory: Path, key: str, faces: FaceSet) -> None:
    """Store `faces` under `key` atomically; failing to write only warns, as the read itself succeeded."""
    arrays = {
        "images": faces.images,
        "labels": faces.labels,
        "split": faces.split,
        "ids": faces.ids,
        "layout": np.array(faces.layout),
        "source": np.array(faces.source),
        "skipped": np.array(faces.skipped),
        "warnings": np.array(faces.warnings, dtype=str),
    }
    if faces.masks is not None:
        arrays["masks"] = faces.masks
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Readers never see half an entry; concurrent writers (sweep jobs) each use their own temp file.
        # np.savez is given the open file: given a path, it would append .npz to the temp name.
        with atomic_path(directory / f"{key}.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        warnings.warn(f"could not write a cache entry in {directory} ({e}); reads will parse", stacklevel=2)


def _check(faces: FaceSet) -> None:
    """Raise ValueError unless the arrays have the types and shapes a reader returns."""
    n = len(faces)
    if faces.images.dtype != np.uint8 or faces.images.shape != (n, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images are {faces.images.dtype} {faces.images.shape}")
    if faces.labels.dtype != np.int64 or faces.labels.ndim != 1:
        raise ValueError(f"labels are {faces.labels.dtype} {faces.labels.shape}")
    for name in ("split", "ids"):
        if getattr(faces, name).dtype.kind != "U":
            raise ValueError(f"{name} are {getattr(faces, name).dtype}")

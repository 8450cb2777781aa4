"""FER2013 readers: the original CSV, the course CSV pair, the image-folder release and synthetic data.

The course layout also reads the Kaggle competition's own train.csv (emotion,pixels) and test.csv (pixels):
the same pair under fer2013.csv's column names.

Row ids, stable whatever rows are skipped:
  fer2013_csv   `row-K`: the row on line K+1 of the file (the header is line 1), so `row-1` is the first row
  course        `train-K` likewise for train.csv; test.csv rows keep their `id` column, or are `test-K`
                in Kaggle's test.csv, which has none
  image_folder  the image's path relative to the root, e.g. `train/happy/Training_10.jpg`
"""

from __future__ import annotations

import codecs
import gzip
import os
import re
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from PIL import Image

from fer.data import cache, synthetic
from fer.data.errors import DataError, DataWarning
from fer.data.faceset import FaceSet
from fer.data.labels import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES

LAYOUTS = ("fer2013_csv", "course", "image_folder", "synthetic")
ON_BAD_ROW = ("error", "skip")
PIXELS = IMAGE_SIZE * IMAGE_SIZE
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
COURSE_FILES = ("train.csv", "test.csv")
FER2013_FILES = ("fer2013.csv", "fer2013.csv.gz", "icml_face_data.csv")  # icml_face_data: Kaggle's copy
FER2013_USAGES = ("Training", "PublicTest", "PrivateTest")  # the splits the datamodule's defaults name

_SHOWN_PROBLEMS = 5  # bad rows quoted in the note of a read that skipped them
_CHUNK_ROWS = 1024  # rows per bulk parse: bounds its int64 buffer to ~19 MB
_LABELS = {str(k).encode(): k for k in range(NUM_CLASSES)}
_CLASS_FOLDERS = {name.lower(): k for k, name in enumerate(CLASS_NAMES)}
_INTEGER = re.compile(rb"-?[0-9]+")
_HOW_TO_GET = (
    "FER2013 is not bundled: download fer2013.csv from the Kaggle competition 'Challenges in "
    "Representation Learning: Facial Expression Recognition Challenge', or the image-folder release of the "
    "same data (train/ and test/ folders of class subfolders), and pass its path. "
    "synthetic://6000?seed=0 runs with no download."
)


def read_dataset(
    path: str | os.PathLike[str],
    layout: str = "auto",
    on_bad_row: str = "error",
    cache_dir: str | os.PathLike[str] | bool | None = None,
) -> FaceSet:
    """Read FER2013-style faces from a file, a folder or a `synthetic://N?seed=S` address.

    layout: "auto" or one of LAYOUTS. on_bad_row: "error" raises DataError at the first bad row or image,
    "skip" drops them and warns. cache_dir: the decode cache folder (see `fer.data.cache.cache_root`), or
    False for no cache.
    """
    return read_with_status(path, layout, on_bad_row, cache_dir)[0]


def read_with_status(
    path: str | os.PathLike[str],
    layout: str = "auto",
    on_bad_row: str = "error",
    cache_dir: str | os.PathLike[str] | bool | None = None,
) -> tuple[FaceSet, str]:
    """`read_dataset`, also saying how the cache served it: "hit", "miss" or "off"."""
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"on_bad_row must be one of {', '.join(ON_BAD_ROW)}, got {on_bad_row!r}")
    if layout != "auto" and layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected auto or one of {', '.join(LAYOUTS)}")
    text = os.fspath(path)
    if text.startswith("synthetic://") or layout == "synthetic":
        if layout not in ("auto", "synthetic") or not text.startswith("synthetic://"):
            raise DataError(f"{text}: the synthetic layout reads addresses like synthetic://6000?seed=0")
        # Drawing a synthetic set takes seconds: it is cached like a file, keyed by its address and by
        # the generator's source file, so a changed generator draws afresh.
        key_parts = (text, [Path(synthetic.__file__)], "synthetic", on_bad_row)

        def read() -> FaceSet:
            return _read_synthetic(text)
    else:
        source = _locate(Path(text).expanduser().resolve(), layout)
        key_parts = (str(source.root), source.files, source.layout, on_bad_row)

        def read() -> FaceSet:
            return _READERS[source.layout](source, on_bad_row)

    directory = cache.cache_root(cache_dir)
    status = "off"
    faces = None
    if directory is not None:
        key = cache.entry_key(*key_parts)
        faces = cache.load(directory, key)
        status = "miss" if faces is None else "hit"
    if faces is None:
        faces = read()
        if directory is not None:
            cache.save(directory, key, faces)
    # Checked after the cache, not in the reader, so entries cached before this check get the note too.
    faces.warnings = faces.warnings + _unknown_usage_notes(faces)
    for note in faces.warnings:  # also on a cache hit, so a read says the same whether cached or not
        skip_note = faces.skipped and note.startswith("skipped ")
        warnings.warn(RowsSkipped(note, faces.skipped) if skip_note else DataWarning(note), stacklevel=3)
    return faces, status


def _unknown_usage_notes(faces: FaceSet) -> list[str]:
    """The note of a fer2013.csv read with Usage values other than FER2013's, which no default stage reads.

    A note rather than a bad row: data.splits may name any split, so a file can hold splits of its own.
    """
    if faces.layout != "fer2013_csv":
        return []
    unknown = ~np.isin(faces.split, FER2013_USAGES)
    if not unknown.any():
        return []
    names, counts = np.unique(faces.split[unknown], return_counts=True)
    found = ", ".join(
        f"{name!r} ({count})" for name, count in zip(names.tolist(), counts.tolist(), strict=True)
    )
    first_line = int(faces.ids[unknown][0].removeprefix("row-")) + 1  # row-K is on line K+1
    return [
        f"{int(unknown.sum())} rows of {faces.source} have a Usage other than {', '.join(FER2013_USAGES)}: "
        f"{found} (first on line {first_line}); only a stage whose data.splits names that split reads them, "
        "so correct the Usage in the file if it is a typo"
    ]


class RowsSkipped(DataWarning):
    """The note of a read under on_bad_row=skip; `count` is how many rows (or images) it dropped."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


@dataclass
class _Source:
    layout: str
    root: Path  # the file or folder read, as named in FaceSet.source
    files: list[Path]  # every file read: their sizes and mtimes key the cache


def _locate(path: Path, layout: str) -> _Source:
    """Which layout `path` holds (checking a forced one fits) and which files make it up."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder.\n{_HOW_TO_GET}")
    if path.is_dir():
        if layout in ("auto", "course") and any((path / name).is_file() for name in COURSE_FILES):
            return _course(path)
        if layout in ("auto", "image_folder") and any((path / name).is_dir() for name in ("train", "test")):
            return _image_folder(path)
        for name in FER2013_FILES:
            if layout in ("auto", "fer2013_csv") and (path / name).is_file():
                return _Source("fer2013_csv", path / name, [path / name])
        raise DataError(
            f"{path}: unknown layout{'' if layout == 'auto' else f' (not {layout})'}: expected fer2013.csv, "
            "icml_face_data.csv, train.csv/test.csv (the course's or Kaggle's), or train/ and test/ folders "
            f"of class subfolders.\n{_HOW_TO_GET}"
        )
    if layout == "image_folder":
        raise DataError(f"{path}: the image_folder layout reads a folder with train/ and test/, not a file")
    if layout == "auto":
        header = _first_line(path)
        columns = _column_names(header)
        # Kaggle's train.csv/test.csv have fer2013.csv's columns less Usage: known by their file names.
        kaggle_pair = "pixels" in columns and "usage" not in columns and path.name in COURSE_FILES
        if "feature" in columns or kaggle_pair:
            layout = "course"
        elif "pixels" in columns:
            layout = "fer2013_csv"
        else:
            raise DataError(
                f"{path}: line 1: unknown layout: header is {header.strip()!r}; expected "
                "emotion,pixels,Usage (fer2013.csv), label,feature / id,feature (course train/test.csv) "
                "or emotion,pixels / pixels (Kaggle train/test.csv)"
            )
    if layout == "course":
        return _course(path.parent)
    return _Source("fer2013_csv", path, [path])


def _course(folder: Path) -> _Source:
    files = [folder / name for name in COURSE_FILES if (folder / name).is_file()]
    if not files:
        raise DataError(f"{folder}: the course layout needs train.csv and test.csv here, found neither")
    return _Source("course", folder, files)


def _image_folder(root: Path) -> _Source:
    files = []
    for split_folder in ("train", "test"):
        if not (root / split_folder).is_dir():
            continue
        for folder in sorted(p for p in (root / split_folder).iterdir() if p.is_dir()):
            if folder.name.startswith("."):
                continue
            if folder.name.lower() not in _CLASS_FOLDERS:
                raise DataError(
                    f"{folder}: unknown class folder {folder.name!r}; expected one of "
                    f"{', '.join(_CLASS_FOLDERS)} (any case)"
                )
            names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += [folder / name for name in names if not name.startswith(".")]
    if not files:
        raise DataError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images in train/<class>/ or test/<class>/")
    return _Source("image_folder", root, files)


@dataclass
class _Rows:
    """Decoded rows of one source, bad ones included, with what is wrong with each bad one."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    ids: np.ndarray
    problems: dict[int, str] = field(default_factory=dict)  # row index -> "where: what", first problem only


def _read_fer2013_csv(source: _Source, on_bad_row: str) -> FaceSet:
    columns, lines, problems = _read_csv(source.root, ("emotion", "pixels", "usage"))
    rows = _Rows(
        images=_parse_pixels(columns["pixels"], problems),
        labels=_parse_labels(columns["emotion"], problems),
        split=_parse_text(columns["usage"], problems, "Usage"),
        ids=np.array([f"row-{line - 1}" for line in lines], dtype=str),
        problems=problems.found,
    )
    return _assemble(source, rows, on_bad_row, [])


@dataclass(frozen=True)
class _PairColumns:
    """The columns of a train.csv or test.csv that hold the pixels, the label and the id (None: no such)."""

    pixels: str
    label: str | None = None
    id: str | None = None


_PAIR_COLUMNS = {
    ("course", "train.csv"): _PairColumns("feature", label="label"),
    ("course", "test.csv"): _PairColumns("feature", id="id"),
    ("kaggle", "train.csv"): _PairColumns("pixels", label="emotion"),
    ("kaggle", "test.csv"): _PairColumns("pixels"),
}


def _pair_columns(path: Path) -> _PairColumns:
    """The course's column names, or Kaggle's where the header has fer2013.csv's `pixels`."""
    variant = "kaggle" if "pixels" in _column_names(_first_line(path)) else "course"
    return _PAIR_COLUMNS[variant, path.name]


def _read_course(source: _Source, on_bad_row: str) -> FaceSet:
    parts = []
    for path in source.files:
        train = path.name == "train.csv"
        names = _pair_columns(path)
        wanted = tuple(name for name in (names.label, names.pixels, names.id) if name)
        columns, lines, problems = _read_csv(path, wanted)
        n = len(lines)
        if names.id:
            ids = _parse_text(columns[names.id], problems, "id")
            _check_unique_ids(path, ids, lines)
        else:
            ids = np.array([f"{'train' if train else 'test'}-{line - 1}" for line in lines], dtype=str)
        images = _parse_pixels(columns[names.pixels], problems)
        labels = _parse_labels(columns[names.label], problems) if names.label else np.full(n, -1, np.int64)
        parts.append(
            _Rows(
                images=images,
                labels=labels,
                split=np.full(n, "Training" if train else "test"),
                ids=ids,
                problems=problems.found,
            )
        )
    offsets = np.cumsum([0] + [len(p.images) for p in parts[:-1]])
    rows = _Rows(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        split=np.concatenate([p.split for p in parts]),
        ids=np.concatenate([p.ids for p in parts]),
        problems={
            int(offset) + i: what
            for p, offset in zip(parts, offsets, strict=True)
            for i, what in p.problems.items()
        },
    )
    return _assemble(source, rows, on_bad_row, [])


def _check_unique_ids(path: Path, ids: np.ndarray, lines: list[int]) -> None:
    """A submission has one row per id, so ids repeated in test.csv are an error (whatever on_bad_row)."""
    where: dict[str, list[int]] = {}
    for text, line in zip(ids.tolist(), lines, strict=True):
        if text:
            where.setdefault(text, []).append(line)
    repeated = [(text, found) for text, found in where.items() if len(found) > 1]
    if repeated:
        shown = "; ".join(
            f"id {text!r} on lines {', '.join(map(str, found))}" for text, found in repeated[:5]
        )
        more = f" (and {len(repeated) - 5} more ids)" if len(repeated) > 5 else ""
        raise DataError(
            f"{path}: duplicate ids, which would give a submission with duplicate rows: {shown}{more}"
        )


def _read_image_folder(source: _Source, on_bad_row: str) -> FaceSet:
    images = np.zeros((len(source.files), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    problems = {}
    converted = []
    for i, path in enumerate(source.files):
        try:
            with Image.open(path) as image:
                if image.size != (IMAGE_SIZE, IMAGE_SIZE) or image.mode != "L":
                    converted.append(path)
                    # A plain resize, not a crop: other sources' faces are square crops too.
                    image = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
                images[i] = np.asarray(image)
        except (OSError, Image.DecompressionBombError) as e:
            problems[i] = f"{path}: unreadable image ({e})"
    relative = [path.relative_to(source.root) for path in source.files]
    rows = _Rows(
        images=images,
        labels=np.array([_CLASS_FOLDERS[r.parts[1].lower()] for r in relative], np.int64),
        split=np.array([_image_split(r.name, r.parts[0]) for r in relative], dtype=str),
        ids=np.array([r.as_posix() for r in relative], dtype=str),
        problems=problems,
    )
    notes = []
    if converted:
        notes.append(f"converted {len(converted)} images to 48x48 grayscale (first: {converted[0]})")
    return _assemble(source, rows, on_bad_row, notes, what="images")


def _image_split(name: str, split_folder: str) -> str:
    for prefix in ("PublicTest", "PrivateTest"):
        if name.startswith(prefix + "_"):
            return prefix
    return "Training" if split_folder == "train" else "test"


def _assemble(source: _Source, rows: _Rows, on_bad_row: str, notes: list[str], what: str = "rows") -> FaceSet:
    """The FaceSet of the good rows, or DataError at the first bad one, as on_bad_row says."""
    skipped = len(rows.problems)
    if skipped:
        first = rows.problems[min(rows.problems)]
        if on_bad_row == "error":
            raise DataError(first)
        if skipped == len(rows.images):
            raise DataError(f"all {skipped} {what} of {source.root} are bad (first: {first})")
        shown = [rows.problems[i] for i in sorted(rows.problems)[:_SHOWN_PROBLEMS]]
        more = "; ..." if skipped > len(shown) else ""
        notes.append(f"skipped {skipped} bad {what} of {source.root} (first: {'; '.join(shown)}{more})")
        keep = np.ones(len(rows.images), bool)
        keep[list(rows.problems)] = False
        rows = _Rows(rows.images[keep], rows.labels[keep], rows.split[keep], rows.ids[keep])
    return FaceSet(
        images=rows.images,
        labels=rows.labels,
        split=rows.split,
        ids=rows.ids,
        layout=source.layout,
        source=str(source.root),
        skipped=skipped,
        warnings=notes,
    )


@dataclass
class _Problems:
    """Collects the first thing wrong with each bad row as "where: what"."""

    where: Callable[[int], str]
    found: dict[int, str] = field(default_factory=dict)

    def add(self, row: int, what: str) -> None:
        self.found.setdefault(row, f"{self.where(row)}: {what}")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _first_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with gzip.open(path) if gzipped else path.open("rb") as f:
            line = f.readline(4096).decode("utf-8-sig", errors="replace")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if not line.strip():
        raise DataError(f"{path}: line 1: empty file (or empty header line)")
    return line


def _column_names(header: str) -> list[str]:
    """A CSV header's column names, lower-case, without quotes or the spaces icml_face_data.csv has."""
    return [c.strip().strip('"').lower() for c in header.split(",")]


def _read_csv(path: Path, wanted: tuple[str, ...]) -> tuple[dict[str, list[bytes]], list[int], _Problems]:
    """The `wanted` columns (lower-case names) of every non-blank data row (blank: empty or only whitespace),
    each row's line number, and the rows with the wrong number of fields (their columns read as empty).

    Hand-split rather than csv/pandas: no field holds a comma, and bytes.split is several times faster.
    """
    data = _read_bytes(path)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if not data or data.isspace():
        raise DataError(f"{path}: line 1: empty file")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    quoted = b'"' in data  # quoted fields, as some spreadsheets write them
    lines = data.split(b"\n")
    del data  # halves the peak memory on the full file
    header = lines[0].decode(errors="replace")
    names = _column_names(header)
    missing = [w for w in wanted if w not in names]
    if missing:
        raise DataError(
            f"{path}: line 1: missing column {', '.join(missing)} (found columns: {', '.join(names)})"
        )
    numbers = [k for k in range(2, len(lines) + 1) if lines[k - 1] and not lines[k - 1].isspace()]
    if not numbers:
        raise DataError(f"{path}: no data rows after the header on line 1")
    rows = [lines[k - 1].split(b",") for k in numbers]
    del lines
    problems = _Problems(lambda i: f"{path}: line {numbers[i]}")
    for i, row in enumerate(rows):
        if len(row) != len(names):
            problems.add(i, f"expected {len(names)} comma-separated fields, got {len(row)}")
            rows[i] = [b""] * len(names)
    if quoted:
        rows = [[f.strip(b'"') for f in row] for row in rows]
    return {w: [row[names.index(w)] for row in rows] for w in wanted}, numbers, problems


def _parse_pixels(fields: list[bytes], problems: _Problems) -> np.ndarray:
    """(N, 48, 48) uint8 faces from space-separated pixel fields; bad rows stay zero and are reported."""
    images = np.zeros((len(fields), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    flat = images.reshape(len(fields), PIXELS)
    plain = np.array([_is_plain(f) for f in fields], dtype=bool)
    careful = list(np.flatnonzero(~plain))
    plain_rows = np.flatnonzero(plain)
    for start in range(0, len(plain_rows), _CHUNK_ROWS):
        chunk = plain_rows[start : start + _CHUNK_ROWS]
        # int64 so that no long digit run can wrap around into 0-255 (numpy saturates instead).
        values = np.fromstring(b" ".join(fields[i] for i in chunk), dtype=np.int64, sep=" ")
        values = values.reshape(len(chunk), PIXELS)
        in_range = (values <= 255).all(axis=1)
        flat[chunk[in_range]] = values[in_range]
        careful += list(chunk[~in_range])
    for i in careful:
        row = _parse_pixel_row(fields[i])
        if isinstance(row, str):
            problems.add(int(i), row)
        else:
            flat[i] = row
    return images


def _is_plain(field: bytes) -> bool:
    """Whether the field is 2304 digit runs joined by single spaces, which the bulk parse reads exactly."""
    return (
        field.count(b" ") == PIXELS - 1
        and not field.translate(None, b"0123456789 ")
        and b"  " not in field
        and not field.startswith(b" ")
        and not field.endswith(b" ")
    )


def _parse_pixel_row(field: bytes) -> np.ndarray | str:
    """One row's pixels, whatever whitespace separates them, or what is wrong with them."""
    tokens = field.split()
    if len(tokens) != PIXELS:
        return f"expected {PIXELS} pixels, got {len(tokens)}"
    joined = b" ".join(tokens)
    if not joined.translate(None, b"0123456789 "):
        values = np.fromstring(joined, dtype=np.int64, sep=" ")
        if values.max() <= 255:
            return values.astype(np.uint8)
    # The parse failed, so some token is not a plain integer 0-255: name the first one.
    k, token = next((k, t) for k, t in enumerate(tokens, start=1) if not t.isdigit() or int(t) > 255)
    text = token.decode(errors="replace")
    if _INTEGER.fullmatch(token):
        return f"pixel {text!r} outside 0-255 (pixel {k} of {PIXELS})"
    return f"non-integer pixel {text!r} (pixel {k} of {PIXELS})"


def _parse_labels(fields: list[bytes], problems: _Problems) -> np.ndarray:
    labels = np.empty(len(fields), np.int64)
    for i, token in enumerate(fields):
        label = _LABELS.get(token.strip())
        if label is None:
            problems.add(i, f"label {token.decode(errors='replace')!r} outside 0-{NUM_CLASSES - 1}")
            label = -1
        labels[i] = label
    return labels


def _parse_text(fields: list[bytes], problems: _Problems, column: str) -> np.ndarray:
    texts = [token.decode(errors="replace").strip() for token in fields]
    for i, text in enumerate(texts):
        if not text:
            problems.add(i, f"empty {column}")
    return np.array(texts, dtype=str)


def _read_synthetic(address: str) -> FaceSet:
    """Dispatch `synthetic://N?seed=S&balanced=1` to fer.data.synthetic.generate."""
    parts = urlsplit(address)
    if not parts.netloc.isdecimal() or int(parts.netloc) < 1 or parts.path not in ("", "/") or parts.fragment:
        raise DataError(f"{address}: expected synthetic://N?seed=S with N a positive integer of faces")
    options = {"seed": 0, "balanced": False}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "seed" and value.isdecimal():
            options["seed"] = int(value)
        elif key == "balanced" and value in ("0", "1"):
            options["balanced"] = value == "1"
        elif key in options:
            raise DataError(f"{address}: bad {key} {value!r}; seed takes an integer >= 0, balanced 0 or 1")
        else:
            raise DataError(f"{address}: unknown option {key!r}; expected {', '.join(options)}")
    return synthetic.generate(int(parts.netloc), seed=options["seed"], balanced=options["balanced"])


_READERS: dict[str, Callable[[_Source, str], FaceSet]] = {
    "fer2013_csv": _read_fer2013_csv,
    "course": _read_course,
    "image_folder": _read_image_folder,
}

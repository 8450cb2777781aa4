"""`python -m fer.data PATH`: read a data source and print what it holds."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from fer.data.errors import DataError, DataWarning
from fer.data.faceset import FaceSet
from fer.data.labels import CLASS_NAMES
from fer.data.readers import LAYOUTS, ON_BAD_ROW, read_with_status

_SPLIT_ORDER = {"Training": 0, "PublicTest": 1, "PrivateTest": 2, "test": 3}  # others follow, by name


def summary(faces: FaceSet, seconds: float, cache_status: str) -> str:
    """Layout, source, rows and class counts per split, and how the read went."""
    lines = [
        f"source  {faces.source}",
        f"layout  {faces.layout}",
        f"rows    {len(faces)}" + (f" ({faces.skipped} bad rows skipped)" if faces.skipped else ""),
        f"load    {seconds:.2f} s (cache {cache_status})",
        "",
    ]
    header = ("split", "rows", *CLASS_NAMES, "unlabelled")
    table = [header]
    counts = faces.split_counts()
    for split in sorted(counts, key=lambda s: (_SPLIT_ORDER.get(s, len(_SPLIT_ORDER)), s)):
        part = faces.subset(faces.split == split)
        unlabelled = int((part.labels < 0).sum())
        table.append((split, str(counts[split]), *(str(c) for c in part.class_counts()), str(unlabelled)))
    widths = [max(len(row[k]) for row in table) for k in range(len(header))]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fer.data", description="Summarise a FER2013-style source."
    )
    parser.add_argument("path", help="fer2013.csv[.gz], a course or image folder, or synthetic://N?seed=S")
    parser.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS))
    parser.add_argument("--on-bad-row", default="error", choices=ON_BAD_ROW)
    parser.add_argument("--cache-dir", help="decode cache folder (default $FER_CACHE_DIR, else ~/.cache/fer)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the decode cache")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    # Data notes (rows skipped, images converted) are part of the answer, so they print as plain lines
    # rather than as Python warnings quoting this file's source.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        try:
            faces, cache_status = read_with_status(
                args.path, args.layout, args.on_bad_row, False if args.no_cache else args.cache_dir
            )
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    for w in caught:
        if isinstance(w.message, DataWarning):
            print(f"note: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    print(summary(faces, time.perf_counter() - start, cache_status))
    return 0


if __name__ == "__main__":
    sys.exit(main())

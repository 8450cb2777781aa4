"""Time reading a FER2013 file: cold parse, cache miss and cache hit, against just reading its bytes.

    python bench/bench_read.py [PATH] [--repeats N]

PATH defaults to the shared real file when present, else a generated 32,298-row fer2013.csv in a
temporary folder. The reference is the time to read (and gunzip, for .gz) the file's bytes, which any
parser pays; ratios against it are comparable across machines, raw seconds are not.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
from pathlib import Path

import numpy as np
from timing import best_of

from fer.data.readers import read_with_status

REAL_DATA = Path(__file__).resolve().parents[2] / "shared/data/fer2013/fer2013-dev.csv.gz"


def generate_csv(path: Path, rows: int = 32298, seed: int = 0) -> Path:
    """A fer2013.csv of random faces: 64 distinct pixel fields, repeated (formatting is not what is timed)."""
    rng = np.random.default_rng(seed)
    fields = [" ".join(map(str, face)) for face in rng.integers(0, 256, (64, 48 * 48))]
    usages = np.where(rng.random(rows) < 0.89, "Training", "PublicTest")
    with path.open("w") as f:
        f.write("emotion,pixels,Usage\n")
        for k, (label, usage) in enumerate(zip(rng.integers(0, 7, rows), usages, strict=True)):
            f.write(f"{label},{fields[k % len(fields)]},{usage}\n")
    return path


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or (REAL_DATA if REAL_DATA.exists() else generate_csv(Path(tmp) / "fer2013.csv"))
        size = path.stat().st_size
        raw = best_of(args.repeats, lambda: read_bytes(path))
        cold = best_of(args.repeats, lambda: read_with_status(path, cache_dir=False))
        fill_dirs = iter(Path(tmp) / f"cache{k}" for k in range(args.repeats))
        miss = best_of(args.repeats, lambda: read_with_status(path, cache_dir=next(fill_dirs)))
        faces, status = read_with_status(path, cache_dir=Path(tmp) / "cache0")
        assert status == "hit", status
        warm = best_of(args.repeats, lambda: read_with_status(path, cache_dir=Path(tmp) / "cache0"))
    print(f"file        {path} ({size / 1e6:.1f} MB, {len(faces)} rows), best of {args.repeats}")
    print(
        f"raw read    {raw:7.3f} s   (read{' + gunzip' if path.suffix == '.gz' else ''} the bytes: reference)"
    )
    print(f"cold parse  {cold:7.3f} s   parse / raw read = {cold / raw:.2f}")
    print(f"cache miss  {miss:7.3f} s   (parse + write entry) miss / cold = {miss / cold:.2f}")
    print(f"cache hit   {warm:7.3f} s   cold / warm = {cold / warm:.1f}, warm / raw read = {warm / raw:.3f}")


if __name__ == "__main__":
    main()

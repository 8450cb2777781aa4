"""Pack a FER2013 CSV small enough to travel to a GPU machine, and unpack it there.

The device tool sends at most 64 MiB of working tree; fer2013-dev.csv.gz is 84 MB. Row-wise pixel
differences compressed with xz keep every pixel exact in ~55 MB (gzip'd CSV text cannot get there).
  python bench/pack_data.py pack FER2013.csv.gz .data/fer2013-dev.xz      # here
  python bench/pack_data.py unpack .data/fer2013-dev.xz /tmp/fer2013.csv  # there: the original CSV layout
"""

from __future__ import annotations

import argparse
import io
import lzma
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer.data.labels import IMAGE_SIZE  # noqa: E402 (after the path insert)
from fer.data.readers import read_dataset  # noqa: E402


def pack(source: str, target: str) -> None:
    faces = read_dataset(source, cache_dir=False)
    deltas = np.diff(faces.images.astype(np.int16), axis=2, prepend=0).astype(np.uint8)  # mod 256
    buffer = io.BytesIO()
    np.savez(buffer, labels=faces.labels.astype(np.uint8), split=faces.split)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(target, "wb", preset=6) as f:
        f.write(len(buffer.getvalue()).to_bytes(8, "little"))
        f.write(buffer.getvalue())
        f.write(deltas.tobytes())
    print(f"{target}: {len(faces.labels)} faces, {Path(target).stat().st_size / 1e6:.1f} MB")


def unpack(source: str, target: str) -> None:
    with lzma.open(source, "rb") as f:
        head = f.read(int.from_bytes(f.read(8), "little"))
        deltas = np.frombuffer(f.read(), dtype=np.uint8)
    meta = np.load(io.BytesIO(head))
    labels, split = meta["labels"], meta["split"]
    images = np.cumsum(
        deltas.reshape(len(labels), IMAGE_SIZE, IMAGE_SIZE), axis=2, dtype=np.uint8
    )  # wraps mod 256
    tokens = [str(v) for v in range(256)]
    with open(target, "w") as out:
        out.write("emotion,pixels,Usage\n")
        for label, usage, image in zip(labels, split, images.reshape(len(labels), -1), strict=True):
            out.write(f"{label},{' '.join([tokens[v] for v in image.tolist()])},{usage}\n")
    print(f"{target}: {len(labels)} faces")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.source, args.target)

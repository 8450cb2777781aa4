"""Time fer.data.synthetic.generate against two references measured in the same run.

References, for the same number of 48x48 images in the same chunks:
  oval:   one soft-edged ellipse per image drawn with float64 numpy on the chunk's pixel grid and
          quantized to uint8, i.e. one shape layer of the generator's own kind. The ratio reads as
          "a face costs as much as this many ovals".
  random: filling the uint8 array with rng.integers, a memory-bound floor.

    python bench/bench_synthetic.py --n 10000
"""

import argparse

import numpy as np
from timing import best_of

from fer.data.labels import IMAGE_SIZE
from fer.data.synthetic import _CHUNK, generate


def ovals(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(seed))
    grid = np.arange(IMAGE_SIZE, dtype=np.float64)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i in range(0, n, _CHUNK):
        c = min(_CHUNK, n - i)
        cx, cy, a, b = (rng.uniform(lo, hi, (c, 1, 1)) for lo, hi in ((20, 28), (20, 28), (14, 18), (17, 21)))
        du, dv = (grid[None, None, :] - cx) / a, (grid[None, :, None] - cy) / b
        alpha = np.clip(0.5 - (np.sqrt(du * du + dv * dv) - 1.0) * (0.5 * (a + b)), 0.0, 1.0)
        out[i : i + c] = np.clip(40.0 + alpha * 160.0 + 0.5, 0.0, 255.5).astype(np.uint8)
    return out


def random_fill(n: int, seed: int = 0) -> np.ndarray:
    return np.random.Generator(np.random.PCG64(seed)).integers(
        0, 256, (n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    generate(256)  # warm-up: imports, allocator
    t_gen = best_of(args.repeats, lambda: generate(args.n))
    t_oval = best_of(args.repeats, lambda: ovals(args.n))
    t_rand = best_of(args.repeats, lambda: random_fill(args.n))
    print(f"generate({args.n}): {t_gen:.2f} s, {args.n / t_gen:,.0f} images/s (best of {args.repeats})")
    print(f"oval reference:   {t_oval:.3f} s, generate / oval   = {t_gen / t_oval:.1f}")
    print(f"random reference: {t_rand:.4f} s, generate / random = {t_gen / t_rand:.0f}")


if __name__ == "__main__":
    main()

"""One training step of the speedrun's net with malloc as glibc sets it up and with runtime.reuse_memory
(fer/runtime.py's reuse_freed_memory): milliseconds and page faults per step, and their ratio in the same run.

malloc's settings hold for a whole process, so each measurement is a fresh process, the two alternating:
    python bench/bench_reuse_memory.py                 # 2 rounds of 10 steps each way
    python bench/bench_reuse_memory.py --rounds 4 --net vgg8 --optim adamw
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys

from bench_step_profile import phase_seconds
from bench_throughput import batches, built, chosen_device, synthetic_datamodule

from fer.runtime import bf16_if_native, reuse_freed_memory


def measure(net: str, optim: str, batch_size: int, steps: int, warmup: int) -> dict[str, float]:
    """Mean milliseconds and minor page faults of one training step, in this process as it is set up."""
    device = chosen_device("cpu")
    precision = bf16_if_native("bf16-mixed", "32-true", "cpu")
    module = built(net, True, optim)
    optimizer = module.configure_optimizers()["optimizer"]
    loader = batches(synthetic_datamodule(batch_size, warmup + steps), device)
    phase_seconds(module, optimizer, loader, precision, device, warmup)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = sum(phase_seconds(module, optimizer, loader, precision, device, steps).values())
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"ms": seconds * 1e3, "faults": faults / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="experiment=speedrun", help="a conf/model option or experiment=NAME")
    parser.add_argument("--optim", default="muon")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes each way, alternating")
    parser.add_argument("--child", choices=["glibc", "reuse"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "reuse" and not reuse_freed_memory():
            sys.exit("this C library has no glibc mallopt: nothing to measure")
        print(json.dumps(measure(args.net, args.optim, args.batch_size, args.steps, args.warmup)))
        return

    forwarded = [f"--net={args.net}", f"--optim={args.optim}", f"--batch-size={args.batch_size}"]
    forwarded += [f"--steps={args.steps}", f"--warmup={args.warmup}"]
    runs: dict[str, list[dict[str, float]]] = {"glibc": [], "reuse": []}
    for _ in range(args.rounds):
        for way, results in runs.items():
            cmd = [sys.executable, __file__, f"--child={way}", *forwarded]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{way:>5}: {results[-1]['ms']:.0f} ms, {results[-1]['faults']:.0f} page faults per step")
    ms = {way: statistics.median(r["ms"] for r in results) for way, results in runs.items()}
    faults = {way: statistics.median(r["faults"] for r in results) for way, results in runs.items()}
    print(
        f"{args.net}, batch {args.batch_size}, optim={args.optim}: median step {ms['reuse']:.0f} ms with "
        f"runtime.reuse_memory against {ms['glibc']:.0f} ms ({ms['glibc'] / ms['reuse']:.2f}x the speed), "
        f"{faults['reuse']:.0f} page faults per step against {faults['glibc']:.0f}"
    )


if __name__ == "__main__":
    main()

"""Where one training step of a net spends its time: the forward pass, the backward pass and the optimizer
step by wall clock, then the forward and backward passes' operators grouped by kind (convolution, BatchNorm,
activation, pooling, linear, the rest) by their self time in torch.profiler (on a GPU, their kernels' time).
The batches, memory layout and autocast are those of bench_throughput.py's plain loop.
    python bench/bench_step_profile.py                        # experiment=speedrun's net with optim=muon
    python bench/bench_step_profile.py --net vgg8 --optim adamw --precision 32-true --top 15
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Iterator

import torch
from bench_throughput import batches, built, chosen_device, sync, synthetic_datamodule
from torch.profiler import ProfilerActivity, profile

from fer.module import FERModule
from fer.runtime import EVALUATION_PRECISIONS, autocast, bf16_if_native

# An operator's kind: the first whose words its name holds ("aten::native_batch_norm_backward": BatchNorm).
# Everything else, elementwise adds of gradients and biases, the loss, copies, the autograd engine, is "other".
KINDS = {
    "convolution": ("convolution",),
    "BatchNorm": ("batch_norm",),
    # threshold_backward is ReLU's backward
    "activation": ("gelu", "relu", "silu", "elu", "tanh", "sigmoid", "threshold"),
    "pooling": ("pool",),
    "linear": ("addmm", "aten::mm", "linear"),
}
PHASES = ("forward", "backward", "optimizer")


def operator_kind(name: str) -> str:
    return next((kind for kind, words in KINDS.items() if any(w in name for w in words)), "other")


def self_time_column(device: torch.device) -> str:
    """The profiler's self-time column for `device`: its kernels' time on a GPU, else the CPU's."""
    return "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"


def phase_seconds(
    module: FERModule,
    optimizer: torch.optim.Optimizer,
    loader: Iterator[list[torch.Tensor]],
    precision: str,
    device: torch.device,
    steps: int,
) -> dict[str, float]:
    """Mean wall-clock seconds a training step spends in each of PHASES (the batch's augmentation excluded)."""
    totals = dict.fromkeys(PHASES, 0.0)
    for _ in range(steps):
        images, labels = next(loader)
        marks = [time.perf_counter()]
        with autocast(precision, device):
            loss = module.loss(module(images), labels)
        sync(device)
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync(device)
        marks.append(time.perf_counter())
        optimizer.step()
        sync(device)
        marks.append(time.perf_counter())
        for phase, start, end in zip(PHASES, marks, marks[1:]):
            totals[phase] += end - start
    return {phase: total / steps for phase, total in totals.items()}


def kind_shares(
    module: FERModule,
    loader: Iterator[list[torch.Tensor]],
    precision: str,
    device: torch.device,
    steps: int,
) -> tuple[dict[str, float], profile]:
    """Each operator kind's share of the forward and backward passes' self time over `steps` batches, largest
    first, and the profile itself. No optimizer step: its operators (matrix products, elementwise updates) would
    count as the layers' kinds."""
    data = [next(loader) for _ in range(steps)]  # augmented before profiling starts
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for images, labels in data:
            with autocast(precision, device):
                loss = module.loss(module(images), labels)
            module.zero_grad(set_to_none=True)
            loss.backward()
        sync(device)
    times: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        times[operator_kind(event.key)] += getattr(event, self_time_column(device))
    total = sum(times.values())
    return {kind: t / total for kind, t in sorted(times.items(), key=lambda item: -item[1])}, prof


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="experiment=speedrun", help="a conf/model option or experiment=NAME")
    parser.add_argument("--optim", default="muon", help="a conf/optim option (experiment=speedrun's: muon)")
    parser.add_argument("--batch-size", type=int, default=128)  # experiment=speedrun's
    parser.add_argument("--steps", type=int, default=5, help="timed and profiled training steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--precision",
        choices=["auto", *EVALUATION_PRECISIONS],
        default="auto",
        help="auto: bf16-mixed where the device computes it natively, else 32-true (as the recipes choose)",
    )
    parser.add_argument("--contiguous", action="store_true", help="NCHW instead of channels_last")
    parser.add_argument("--top", type=int, default=0, help="also print torch.profiler's table of the top N")
    args = parser.parse_args()
    device = chosen_device(args.device)
    precision = args.precision
    if precision == "auto":
        precision = bf16_if_native("bf16-mixed", "32-true", device.type)
    datamodule = synthetic_datamodule(args.batch_size, args.warmup + 2 * args.steps)
    module = built(args.net, not args.contiguous, args.optim).to(device)
    optimizer = module.configure_optimizers()["optimizer"]
    loader = batches(datamodule, device)
    phase_seconds(module, optimizer, loader, precision, device, args.warmup)
    phases = phase_seconds(module, optimizer, loader, precision, device, args.steps)
    shares, prof = kind_shares(module, loader, precision, device, args.steps)

    layout = "contiguous" if args.contiguous else "channels_last"
    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    print(
        f"{args.net}: batch {args.batch_size} on {device}{threads}, {precision}, {layout}, optim={args.optim}"
    )
    step = sum(phases.values())
    parts = ", ".join(f"{p} {s * 1000:.0f} ms ({s / step:.0%})" for p, s in phases.items())
    print(f"one step {step * 1000:.0f} ms ({args.batch_size / step:.0f} img/s): {parts}")
    print("forward + backward, self time by operator kind:")
    for kind, share in shares.items():
        print(f"  {kind:<12} {share:>6.1%}")
    if args.top:
        print(prof.key_averages().table(sort_by=self_time_column(device), row_limit=args.top))


if __name__ == "__main__":
    main()

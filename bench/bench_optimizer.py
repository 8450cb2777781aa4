"""Milliseconds per optimizer step on a model's parameters: AdamW against Muon (optim=muon, the speedrun's),
its Newton-Schulz iteration in bfloat16 and in float32, all measured in the same run.

The step's cost does not depend on the data: the gradients are random. Where the CPU lacks AVX512-BF16,
bfloat16 is emulated; mask the instructions to see it on one that has them:
    python bench/bench_optimizer.py --models vgg8 cnn4
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/bench_optimizer.py
"""

from __future__ import annotations

import argparse

import torch
from timing import best_of

from fer.config import compose_option
from fer.module import FERModule
from fer.runtime import native_bfloat16


def step_ms(model: str, optim: dict, repeats: int) -> float:
    """Fastest of `repeats` steps of `optim` on `model`'s parameters, after one untimed step (state creation)."""
    torch.manual_seed(0)
    module = FERModule(model=compose_option("model", model), optim=optim)
    for p in module.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = module.configure_optimizers()["optimizer"]
    optimizer.step()
    return best_of(repeats, optimizer.step) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["vgg8"])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    muon = compose_option("optim", "muon")
    settings = {
        "adamw": compose_option("optim", "adamw"),
        "muon bfloat16": {**muon, "ns_dtype": "bfloat16"},
        "muon float32": {**muon, "ns_dtype": "float32"},
    }
    print(
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bfloat16: {native_bfloat16(torch.device('cpu'))} (what optim.ns_dtype=auto reads from the CPU's "
        "flags; ONEDNN_MAX_CPU_ISA does not change it)"
    )
    print(f"{'model':<10}" + "".join(f"{name:>15}" for name in settings) + "  (ms per step)")
    for model in args.models:
        row = [step_ms(model, optim, args.repeats) for optim in settings.values()]
        print(f"{model:<10}" + "".join(f"{ms:>15.1f}" for ms in row), flush=True)


if __name__ == "__main__":
    main()

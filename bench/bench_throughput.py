"""Training and inference images per second of every model (conf/model/*.yaml), and, for the nets of
`--compare` (default cnn4 and `experiment=speedrun`'s wide GELU vgg8), fer's Lightning training loop against a
plain PyTorch loop in fp32 and bf16 autocast (where the device computes bf16 natively: `--bf16`), contiguous and
channels_last, the plain loop under `torch.compile`, and the cost of each other optimizer of `--optims` (Muon:
the speedrun's), all measured in the same run. The last two use channels_last and the precision a recipe picks on
the device: bf16 where it is native, else fp32. A net is a conf/model option or `experiment=NAME`, which stands for
the model that recipe composes (its overrides included); the loops train it with AdamW, `--optims` with the others.

Both loops train on the same batches of synthetic faces (FERDataModule's loader and its batch
augmentation, flip plus pad-2 shift); fer's loop is a real `Trainer.fit` over `--batches` batches,
timed from its first to its last training batch after `--warmup` batches.
    python bench/bench_throughput.py                  # every model, then cnn4 and the speedrun's net in detail
    python bench/bench_throughput.py --models cnn4 vggnet --compare cnn4 vggnet --batch-size 256
    python bench/bench_throughput.py --models --compare vgg8 experiment=speedrun   # vgg8 against the recipe's
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from timing import best_of

from fer.config import compose_node, compose_option
from fer.data.datamodule import FERDataModule
from fer.models import MODEL_NAMES
from fer.module import FERModule
from fer.runtime import apply_runtime, autocast, native_bfloat16

AUG = {"hflip": 0.5, "pad_crop": 2}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def batches(datamodule: FERDataModule, device: torch.device) -> Iterator[list[torch.Tensor]]:
    """Training batches forever, as the loop sees them: on the device, as floats, augmented."""
    while True:
        for images, labels in datamodule.train_dataloader():
            images = datamodule.augment(images.to(device).float())
            yield [images, labels.to(device)]


@dataclass
class Plan:
    """What every training measurement shares: the batches, the device, warm-up and timed batch counts."""

    datamodule: FERDataModule
    device: torch.device
    n: int
    warmup: int


def synthetic_datamodule(batch_size: int, batches: int) -> FERDataModule:
    """Synthetic faces set up for training: `batches` batches of `batch_size` after the validation split,
    augmented as AUG."""
    datamodule = FERDataModule(
        f"synthetic://{(batches + 1) * batch_size * 5 // 4}?seed=0",
        batch_size=batch_size,
        cache_dir=False,
        aug=AUG,
    )
    datamodule.setup("fit")
    return datamodule


def chosen_device(name: str) -> torch.device:
    """`--device`: auto (a CUDA GPU where there is one, else the CPU), cpu or cuda."""
    return torch.device(
        "cuda" if name == "auto" and torch.cuda.is_available() else name.replace("auto", "cpu")
    )


def built(name: str, channels_last: bool, optim: str) -> FERModule:
    """Net `name` (a conf/model option, or `experiment=NAME` for that recipe's model) with conf/optim/`optim`."""
    torch.manual_seed(0)
    model = compose_node("model", [name if "=" in name else f"model={name}"])
    module = FERModule(model=model, optim=compose_option("optim", optim))
    return apply_runtime(module, channels_last=channels_last)


def plain_loop(
    name: str, plan: Plan, bf16: bool, channels_last: bool, compile: bool = False, optim: str = "adamw"
) -> float:
    """Images per second of a hand-written training loop: forward, the module's cross-entropy loss, backward,
    optimizer step (conf/optim/`optim`); with `compile`, of the `torch.compile`d module (compiled during the
    warm-up batches)."""
    datamodule, device, n, warmup = plan.datamodule, plan.device, plan.n, plan.warmup
    module = built(name, channels_last, optim).to(device)
    optimizer = module.configure_optimizers()["optimizer"]
    forward = torch.compile(module) if compile else module
    loader = batches(datamodule, device)
    start = 0.0
    for i in range(warmup + n):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        images, labels = next(loader)
        with autocast("bf16-mixed" if bf16 else "32-true", device):
            loss = module.loss(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return n * datamodule.batch_size / (time.perf_counter() - start)


class BatchClock(pl.Callback):
    """Wall time from the start of training batch `warmup` to the end of the last one."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.warmup:
            sync(trainer.strategy.root_device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        sync(trainer.strategy.root_device)
        self.end = time.perf_counter()


def fer_loop(name: str, plan: Plan, bf16: bool, channels_last: bool, optim: str = "adamw") -> float:
    """Images per second of fer's FERModule under a Lightning Trainer (no validation, logging or checkpoints)."""
    module, clock, device = built(name, channels_last, optim), BatchClock(plan.warmup), plan.device
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        precision="bf16-mixed" if bf16 else "32-true",
        max_epochs=-1,
        max_steps=plan.warmup + plan.n,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, datamodule=copy.copy(plan.datamodule))
    return plan.n * plan.datamodule.batch_size / (clock.end - clock.start)


def inference(
    name: str, device: torch.device, bf16: bool, channels_last: bool, batch_size: int, n: int
) -> float:
    module = built(name, channels_last, "adamw").to(device).eval()
    images = torch.rand(batch_size, 1, 48, 48, device=device) * 255

    def forward() -> None:
        with torch.no_grad(), autocast("bf16-mixed" if bf16 else "32-true", device):
            module(images)
        sync(device)

    forward()
    return batch_size / best_of(n, forward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=sorted(MODEL_NAMES))
    parser.add_argument(
        "--compare",
        nargs="*",
        default=["cnn4", "experiment=speedrun"],
        help="nets measured fer vs plain loop: conf/model options, or experiment=NAME for that recipe's model",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=4, help="timed training batches per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="whether the '+cl' columns and the --compare part measure bf16 autocast; auto (the default): only "
        "where the device computes it natively (an AVX512-BF16 or AMX CPU, a GPU that supports it), else fp32 + "
        "channels_last in its place, because emulated bf16 is ~10x slower than fp32 (vgg8 on 2 AVX2 cores: 9 img/s "
        "against 94) and would take most of the bench's time",
    )
    parser.add_argument(
        "--optims",
        nargs="*",
        default=["muon"],
        help="conf/optim options measured against adamw (the other measurements') with channels_last, in bf16 "
        "where the device computes it natively, else in fp32",
    )
    args = parser.parse_args()
    device = chosen_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    datamodule = synthetic_datamodule(args.batch_size, args.warmup + args.batches)
    plan = Plan(datamodule, device, args.batches, args.warmup)
    n = args.batches
    native = native_bfloat16(device)
    # whether the "+cl" columns and the --compare rows are in bf16
    low = native if args.bf16 == "auto" else args.bf16 == "on"
    column = f"{'bf16' if low else 'fp32'}+cl"
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, {n} timed batches")
    if args.bf16 == "auto" and not low:
        print(
            "bf16 is emulated on this device: fp32 + channels_last in its place (--bf16 on times the emulation)"
        )
    print(
        f"{'model':<11} {'train fp32':>11} {'train ' + column:>14} {'infer fp32':>11} {'infer ' + column:>14}  (img/s)"
    )
    for name in args.models:
        row = [
            plain_loop(name, plan, False, False),
            plain_loop(name, plan, low, True),
            inference(name, device, False, False, args.batch_size * 2, n),
            inference(name, device, low, True, args.batch_size * 2, n),
        ]
        print(f"{name:<11} {row[0]:>11.0f} {row[1]:>14.0f} {row[2]:>11.0f} {row[3]:>14.0f}", flush=True)
    for name in args.compare:
        print(f"\n{name}: training img/s, fer (Lightning Trainer.fit) and the plain loop, same batches")
        print(f"{'setting':<22} {'plain':>8} {'fer':>8} {'fer/plain':>10}")
        results = {}
        for bf16 in (False, True) if low else (False,):
            for channels_last in (False, True):
                setting = f"{'bf16' if bf16 else 'fp32'} {'channels_last' if channels_last else 'contiguous'}"
                plain = plain_loop(name, plan, bf16, channels_last)
                fer = fer_loop(name, plan, bf16, channels_last)
                results[bf16, channels_last] = plain, fer
                print(f"{setting:<22} {plain:>8.0f} {fer:>8.0f} {fer / plain:>10.2f}", flush=True)
        for label, loop in (("plain", 0), ("fer", 1)):
            base = results[False, False][loop]
            gains = f"channels_last/contiguous {results[False, True][loop] / base:.2f}"
            if low:
                gains = (
                    f"bf16/fp32 {results[True, False][loop] / base:.2f}  {gains}  "
                    f"both/neither {results[True, True][loop] / base:.2f}"
                )
            print(f"{label:<6} {gains}")
        # The other optimizers and torch.compile are measured in the precision a recipe would train in here
        # (fer.bf16_if_native): emulated bf16 would time the emulation, not them.
        bf16 = low and native
        fast, eager = f"{'bf16' if bf16 else 'fp32'} channels_last", results[bf16, True]
        for optim in args.optims:
            plain, fer = (
                plain_loop(name, plan, bf16, True, optim=optim),
                fer_loop(name, plan, bf16, True, optim),
            )
            print(
                f"{fast}, optim={optim}: plain {plain:.0f}, fer {fer:.0f} img/s; "
                f"against adamw {plain / eager[0]:.2f} / {fer / eager[1]:.2f}"
            )
        if args.no_compile:
            continue
        compiled = plain_loop(name, plan, bf16, True, compile=True)
        print(f"plain {fast}, torch.compile: {compiled:.0f} img/s, compiled/eager {compiled / eager[0]:.2f}")


if __name__ == "__main__":
    main()

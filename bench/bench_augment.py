"""Data-pipeline cost per batch against one cnn4 training step, on the CPU.

Measures, for batches of 128 synthetic faces: collation (DataLoader indexing + stacking uint8
tensors), the transfer hook (uint8 -> float), and `strong` augmentation; the reference is one
cnn4 forward/backward/Adam step on the same batch, measured in the same run. Target: the data
pipeline under 10% of the training step.
"""

from __future__ import annotations

import argparse

import torch
from timing import best_of

from fer.data.datamodule import FERDataModule
from fer.models.cnn4 import CNN4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)

    strong = {"hflip": 0.5, "rotation": 30, "pad_crop": 4, "brightness": 0.1, "contrast": 0.1}
    dm = FERDataModule("synthetic://4000?seed=0", batch_size=args.batch_size, cache_dir=False, aug=strong)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = iter(loader)

    def collate() -> object:
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    images, labels = collate()
    floats = images.float()
    model = CNN4()
    optimizer = torch.optim.Adam(model.parameters())

    def train_step() -> None:
        loss = torch.nn.functional.cross_entropy(model(floats / 255), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    n = args.batches
    t_collate = best_of(n, collate)
    t_float = best_of(n, lambda: images.float())
    t_aug = best_of(n, lambda: dm.augment(floats))
    t_step = best_of(max(3, n // 4), train_step)
    t_data = t_collate + t_float + t_aug
    print(f"batch of {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"  collate (loader)      {t_collate * 1e3:8.2f} ms")
    print(f"  uint8 -> float        {t_float * 1e3:8.2f} ms")
    print(f"  strong augmentation   {t_aug * 1e3:8.2f} ms")
    print(f"  cnn4 training step    {t_step * 1e3:8.2f} ms  (reference)")
    print(f"data pipeline / training step = {t_data / t_step:.3f} (target < 0.10)")


if __name__ == "__main__":
    main()

"""`Normalization`: the first layer of every fer model, from pixel values (0..255) to the network's scale."""

from __future__ import annotations

import torch
from torch import nn

NORMALIZATIONS = ("none", "unit", "standardize", "per_image")


class Normalization(nn.Module):
    """Maps pixel-valued images to the network's input scale; part of the model so checkpoints carry it.

    `none` keeps 0..255, `unit` divides by 255, `standardize` uses the train split's pixel mean/std,
    `per_image` standardizes each image by its own statistics. `mean` and `std` are buffers: they are in
    the state dict and move with the model to its device.
    """

    def __init__(self, mode: str = "unit", mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        if mode not in NORMALIZATIONS:
            raise ValueError(f"normalization {mode!r} is not one of {NORMALIZATIONS}")
        if mode == "standardize" and not std > 0:
            raise ValueError(f"standardize needs a positive pixel std, got {std}")
        self.mode = mode
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "standardize":
            return (x - self.mean) / self.std
        if self.mode == "per_image":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
        return x

    def extra_repr(self) -> str:
        return f"mode={self.mode}, mean={self.mean.item():.3f}, std={self.std.item():.3f}"

"""`Normalization`: the first layer of every fer model, from pixel values (0..255) to the network's scale."""

from __future__ import annotations

import math

import torch
from torch import nn

NORMALIZATIONS = ("none", "unit", "standardize", "per_image", "equalize")


class Normalization(nn.Module):
    """Maps pixel-valued images to the network's input scale; part of the model so checkpoints carry it.

    `none` keeps 0..255, `unit` divides by 255, `standardize` uses the train split's pixel mean/std,
    `per_image` standardizes each image by its own statistics, `equalize` equalizes each image's histogram
    (`equalize_histogram`). `mean` and `std` are buffers: they are in the state dict and move with the model
    to its device.
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
        if self.mode == "equalize":
            return equalize_histogram(x)
        return x

    def extra_repr(self) -> str:
        return f"mode={self.mode}, mean={self.mean.item():.3f}, std={self.std.item():.3f}"


def equalize_histogram(x: torch.Tensor) -> torch.Tensor:
    """Each image's pixels (0..255, rounded to 256 levels) mapped to their mid-rank in that image, scaled to
    mean 0 and std 1 (less where many pixels share a level; 0 for a flat image): the histogram made flat,
    whatever the face's lighting and contrast.

    Written here, not taken from torchvision's `equalize`, because saliency and gradient ascent need a
    gradient through it: the mapping is a step function of the pixel, so its gradient is taken as the
    slope of the image's cumulative histogram there (the level's share of the pixels), not as zero.
    """
    flat = x.flatten(1).float()
    levels = flat.detach().round().clamp(0, 255).long()
    counts = torch.zeros(len(flat), 256, device=x.device).scatter_add_(1, levels, torch.ones_like(flat))
    # The mid-rank of each level: pixels below it plus half of its own, so a flat image maps to 0.5.
    ranks = (counts.cumsum(1) - counts / 2) / flat.shape[1]
    slope = counts.gather(1, levels) / flat.shape[1]
    uniform = ranks.gather(1, levels) + slope * (flat - flat.detach())
    return ((uniform - 0.5) * math.sqrt(12)).view_as(x)  # a uniform variable's mean 0.5 and std 1/sqrt(12)

"""Activation maximization: synthesize the input that most excites a filter, or a class (its logit).

Captum has no feature visualization, so this is hand-written, following Olah et al. 2017 ("Feature
Visualization", Distill): bounded pixel or decorrelated Fourier parameterization, random jitter,
scale and rotation each step, optional total-variation and L2 penalties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fer.data.labels import IMAGE_SIZE
from fer.data.transforms import random_affine
from fer.interpret.attribution import eval_mode, gradients_on, model_device
from fer.interpret.features import channel_activations, channel_means, layer_outputs
from fer.interpret.layers import layer_output


def _fourier_scale(size: int, device: torch.device) -> Tensor:
    """1/f amplitude per rfft2 frequency, normalised so the image has the variance of the raw parameters."""
    fy = torch.fft.fftfreq(size, device=device)[:, None]
    fx = torch.fft.rfftfreq(size, device=device)[None, :]
    scale = 1.0 / torch.sqrt(fy**2 + fx**2).clamp(min=1.0 / size)
    return scale / scale.pow(2).mean().sqrt()


def _logits(params: Tensor, param: str, size: int) -> Tensor:
    """Unconstrained image (C,1,size,size) from the optimised parameters."""
    if param == "pixel":
        return params
    spectrum = torch.view_as_complex(params) * _fourier_scale(size, params.device)
    return torch.fft.irfft2(spectrum, s=(size, size), norm="ortho")


def _init_params(n: int, param: str, size: int, generator: torch.Generator) -> Tensor:
    if param == "pixel":
        return torch.randn(n, 1, size, size, generator=generator)
    if param == "fft":
        # ortho irfft2 of unit complex noise has pixel variance ~1, like the pixel parameterization
        return torch.randn(n, 1, size, size // 2 + 1, 2, generator=generator) / math.sqrt(2)
    raise ValueError(f"unknown parameterization {param!r}; choose 'pixel' or 'fft'")


def _total_variation(u: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels, per image."""
    dy = (u[..., 1:, :] - u[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (u[..., :, 1:] - u[..., :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def maximize_activation(
    model: nn.Module,
    layer: nn.Module,
    channels: Sequence[int],
    steps: int = 256,
    lr: float = 0.05,
    param: str = "pixel",
    jitter: int = 2,
    scale: float = 0.05,
    rotate: float = 5.0,
    tv: float = 0.0,
    l2: float = 0.0,
    seed: int = 0,
    pixel_range: tuple[float, float] = (0.0, 255.0),
    climb_lr: float = 0.06,
) -> tuple[Tensor, Tensor]:
    """Images (C,H,W) in pixel units maximising the mean activation of each channel, and that activation (C,).

    All channels are optimised at once, one batch element each. The image is `pixel_range` squashed
    through a sigmoid, so it is always in range. Each step sees the image randomly shifted by up to
    `jitter` pixels, zoomed by up to `scale` and rotated by up to `rotate` degrees (transformation
    robustness) for the first three quarters of the steps; `param="fft"` optimises a decorrelated
    (1/f-scaled Fourier) image, `"pixel"` the pixels. The last quarter climbs on the pixels themselves,
    untransformed and kept in range by clamping, with Adam at `climb_lr` (a fraction of the range per
    step). `tv` and `l2` weigh penalties on the image scaled to [0,1] against the activation. The
    activation reported is measured on the final image. `layer` may be `model` itself: its outputs
    (class logits) are then the channels (`maximize_class`).
    """
    lo, hi = pixel_range
    device, size = model_device(model), IMAGE_SIZE
    generator = torch.Generator().manual_seed(seed)

    def objective(x: Tensor) -> Tensor:
        return channel_means(layer_output(model, layer, x))[torch.arange(len(channels)), list(channels)]

    # Transformation robustness and the Fourier basis shape the image; a final climb on the pixels then
    # makes it reach what real images reach. A first conv layer is linear in the pixels: its optimum
    # is a saturated pattern that the sigmoid of a 1/f-weighted spectrum approaches too slowly (2 of 16
    # filters of a real-face cnn4 reached the best face without this climb, 16 of 16 with it).
    robust_steps = steps - steps // 4
    with eval_mode(model), gradients_on():
        params = _init_params(len(channels), param, size, generator).to(device).requires_grad_()
        optimizer = torch.optim.Adam([params], lr=lr)
        for _ in range(robust_steps):
            unit = torch.sigmoid(_logits(params, param, size))
            moved = random_affine(unit, rotate, jitter, scale, padding_mode="reflection", generator=generator)
            _ascend(optimizer, objective(lo + (hi - lo) * moved), _penalty(unit, tv, l2))
        unit = torch.sigmoid(_logits(params, param, size)).detach().requires_grad_()
        optimizer = torch.optim.Adam([unit], lr=climb_lr)
        for _ in range(steps - robust_steps):
            _ascend(optimizer, objective(lo + (hi - lo) * unit), _penalty(unit, tv, l2))
            with torch.no_grad():
                unit.clamp_(0.0, 1.0)
        with torch.no_grad():
            images = lo + (hi - lo) * unit
            reached = objective(images)
    return images[:, 0].cpu(), reached.cpu()


def _penalty(unit: Tensor, tv: float, l2: float) -> Tensor:
    return tv * _total_variation(unit) + l2 * (unit - 0.5).pow(2).flatten(1).mean(1)


def _ascend(optimizer: torch.optim.Optimizer, activation: Tensor, penalty: Tensor) -> None:
    optimizer.zero_grad()
    (penalty - activation).sum().backward()
    optimizer.step()


def maximize_class(model: nn.Module, classes: Sequence[int], **kw: Any) -> tuple[Tensor, Tensor]:
    """Class visualization (Simonyan et al. 2013): images (K,H,W) maximising each class's logit, and the
    logit reached (K,); `kw` are `maximize_activation`'s options, the same regularisers."""
    return maximize_activation(model, model, classes, **kw)


def dataset_max_activation(
    model: nn.Module, layer: nn.Module, images: Tensor, channels: Sequence[int], batch_size: int = 256
) -> Tensor:
    """The highest mean activation any of `images` gives each channel: (C,)."""
    return channel_activations(model, layer, images, batch_size)[:, list(channels)].max(0).values


def dead_filters(model: nn.Module, layer: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Indices of the channels of `layer` that are positive at no position of any of `images`."""
    peaks = torch.stack(
        [
            out.transpose(0, 1).flatten(1).max(1).values
            for out in layer_outputs(model, layer, images, batch_size)
        ]
    )
    return torch.nonzero(peaks.max(0).values <= 0).flatten()

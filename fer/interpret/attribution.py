"""Per-pixel attribution maps for a pixel-space classifier, via Captum."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from captum.attr import (
    GuidedBackprop,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    LayerGradientXActivation,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn

from fer.interpret.layers import eval_mode, last_conv

METHODS: tuple[str, ...] = (
    "saliency",
    "smoothgrad",
    "integrated_gradients",
    "guided_backprop",
    "gradcam",
    "hirescam",
    "occlusion",
)


@contextmanager
def gradients_on() -> Iterator[None]:
    """Enable autograd even inside `torch.inference_mode()` / `torch.no_grad()`.

    Lightning runs validation/test under inference mode, where Captum's gradients silently vanish.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def as_input(images: Tensor, device: torch.device) -> Tensor:
    """Float (B,1,H,W) copy on `device`; cloning also turns inference tensors into normal ones."""
    x = images.to(device=device, dtype=torch.float32).clone()
    return x if x.dim() == 4 else x.unsqueeze(1)


def gray_baseline(x: Tensor) -> Tensor:
    """Each image's own mean intensity as a flat image: structure removed, brightness kept."""
    return x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x).contiguous()


GUIDED_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)


def guidable(model: nn.Module) -> bool:
    """Whether `model` has a ReLU or LeakyReLU for Guided Backprop to guide (SELU, GELU and SiLU nets have none)."""
    return any(isinstance(m, GUIDED_ACTIVATIONS) for m in model.modules())


class _GuidedBackprop(GuidedBackprop):
    """Guided Backprop that also guides LeakyReLU.

    Captum hooks only nn.ReLU, so on a LeakyReLU net (CNN4) it would silently return the plain gradient.
    """

    def _register_hooks(self, module: nn.Module) -> None:
        if isinstance(module, GUIDED_ACTIVATIONS):
            self.backward_hooks.append(module.register_full_backward_hook(self._backward_hook))


def _gradcam(model: nn.Module, x: Tensor, targets: Tensor, layer: nn.Module) -> Tensor:
    cam = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(cam, x.shape[-2:], interpolate_mode="bilinear")


def _hirescam(model: nn.Module, x: Tensor, targets: Tensor, layer: nn.Module) -> Tensor:
    # Captum has no HiResCAM (Draelos & Carin 2020): Grad-CAM without spatially averaging the
    # gradients, i.e. gradient * activation summed over channels, which keeps the map faithful
    # to what the layer's positions actually contributed.
    grad_x_act = LayerGradientXActivation(model, layer).attribute(x, target=targets)
    cam = grad_x_act.sum(dim=1, keepdim=True).relu()
    return LayerAttribution.interpolate(cam, x.shape[-2:], interpolate_mode="bilinear")


def smoothgrad(
    model: nn.Module, x: Tensor, targets: Tensor, noise_fraction: float, nt_samples: int, noise_seed: int
) -> Tensor:
    """Mean absolute gradient over `nt_samples` noisy copies of each image (Smilkov et al. 2017).

    Each image's noise is `noise_fraction` of its own pixel range and every image gets the same seeded
    standard-normal draws, so a face's map depends neither on its batch-mates nor on torch's global RNG.
    (Captum's NoiseTunnel takes one sigma for the batch and draws from the global RNG.)
    """
    flat = x.detach().flatten(1)
    sigma = (noise_fraction * (flat.max(1).values - flat.min(1).values)).view(-1, 1, 1, 1)
    generator = torch.Generator().manual_seed(noise_seed)
    noise = torch.randn(nt_samples, 1, *x.shape[1:], generator=generator).to(x.device)
    saliency, total = Saliency(model), torch.zeros_like(x)
    for draw in noise:  # one batch at a time: memory of one batch whatever nt_samples
        total += saliency.attribute(x.detach() + sigma * draw, target=targets, abs=True)
    return total / nt_samples


def _guided_backprop(model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    if not guidable(model):
        raise ValueError("guided_backprop needs nn.ReLU / nn.LeakyReLU modules to guide")
    with warnings.catch_warnings():
        # Captum announces its temporary hooks on every call
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        return _GuidedBackprop(model).attribute(x, target=targets)


def _pixel_attribution(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    method: str,
    layer: nn.Module | None,
    noise_fraction: float = 0.15,
    nt_samples: int = 16,
    ig_steps: int = 32,
    window: int = 8,
    stride: int = 4,
    noise_seed: int = 0,
) -> Tensor:
    if method == "saliency":
        return Saliency(model).attribute(x, target=targets, abs=True)
    if method == "smoothgrad":
        return smoothgrad(model, x, targets, noise_fraction, nt_samples, noise_seed)
    if method == "integrated_gradients":
        return IntegratedGradients(model).attribute(
            x, baselines=gray_baseline(x), target=targets, n_steps=ig_steps, internal_batch_size=256
        )
    if method == "guided_backprop":
        return _guided_backprop(model, x, targets)
    if method in ("gradcam", "hirescam"):
        cam = _gradcam if method == "gradcam" else _hirescam
        return cam(model, x, targets, layer if layer is not None else last_conv(model))
    if method == "occlusion":
        return Occlusion(model).attribute(
            x,
            sliding_window_shapes=(1, window, window),
            strides=(1, stride, stride),
            baselines=gray_baseline(x),
            target=targets,
            perturbations_per_eval=32,
        )
    raise ValueError(f"unknown attribution method {method!r}; choose from {METHODS}")


def attribute(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    method: str,
    layer: nn.Module | None = None,
    **kw: Any,
) -> Tensor:
    """Attribution maps (B,H,W) float32 on CPU for pixel-unit images (B,1,H,W) and target classes (B,).

    Signs: saliency/smoothgrad are absolute gradients, gradcam/hirescam are ReLU'd, the others are
    signed (positive = evidence for the target). Integrated gradients and occlusion use each image's
    mean gray as baseline (a black image is far off the data). `layer` is the gradcam/hirescam layer
    (default: the last nn.Conv2d). Options in `kw`: noise_fraction, nt_samples and noise_seed (SmoothGrad),
    ig_steps, window, stride.
    """
    device = model_device(model)
    with eval_mode(model), gradients_on():
        x = as_input(images, device).requires_grad_()
        t = torch.as_tensor(targets, device=device).long().clone()
        maps = _pixel_attribution(model, x, t, method, layer, **kw)
    return maps.detach().sum(dim=1).float().cpu()

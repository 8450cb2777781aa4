"""What a layer responds to: its feature maps for one image, and the real images that excite each filter most."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from captum.attr import LayerActivation
from torch import Tensor, nn

from fer.interpret.attribution import as_input, eval_mode, model_device


def channel_means(activations: Tensor) -> Tensor:
    """Mean over spatial positions: (B,C,h,w) -> (B,C); (B,C) passes through."""
    return activations.flatten(2).mean(2) if activations.dim() > 2 else activations


def layer_outputs(
    model: nn.Module, layer: nn.Module, images: Tensor, batch_size: int = 256
) -> Iterator[Tensor]:
    """Output of `layer` (in eval mode, no gradients) for successive batches of pixel-unit images."""
    device = model_device(model)
    activation = LayerActivation(model, layer)
    with eval_mode(model), torch.no_grad():
        for lo in range(0, len(images), batch_size):
            yield activation.attribute(as_input(images[lo : lo + batch_size], device)).cpu()


def feature_maps(model: nn.Module, layer: nn.Module, image: Tensor) -> Tensor:
    """Feature maps (C,h,w) of `layer` for one image (H,W) or (1,H,W)."""
    (out,) = layer_outputs(model, layer, image.reshape(1, 1, *image.shape[-2:]))
    return out[0]


def channel_activations(model: nn.Module, layer: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Mean activation of every channel of `layer` for every image: (N, C)."""
    return torch.cat([channel_means(out) for out in layer_outputs(model, layer, images, batch_size)])


def top_exemplars(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    channels: Sequence[int],
    k: int = 9,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Indices (C,k) of the k images with the highest mean activation of each channel, and those scores (C,k)."""
    acts = channel_activations(model, layer, images, batch_size)[:, list(channels)]
    scores, indices = acts.topk(min(k, len(acts)), dim=0)
    return indices.T.contiguous(), scores.T.contiguous()

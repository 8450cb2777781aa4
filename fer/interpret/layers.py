"""Finding a model's layers, reading one layer's output, running a model in eval mode: the one home of
these helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from fer.data.labels import IMAGE_SIZE


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own previous mode on exit."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.train(training)


class _Reached(Exception):
    """Carries the hooked layer's output out of the forward pass, skipping the layers after it; `call`
    tells nested `layer_output` calls (a `TruncatedModel` inside another) which one it belongs to."""

    def __init__(self, output: Tensor, call: object) -> None:
        super().__init__()
        self.output, self.call = output, call


def layer_output(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    """Output of `layer` for input `x`, with autograd, running `model` only as far as `layer`.

    Hooks registered on `layer` before the call (Captum's) still see its output first. Captum's
    LayerActivation runs without autograd and through the whole network.
    """

    call = object()

    def stop(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        raise _Reached(output, call)

    handle = layer.register_forward_hook(stop)
    try:
        model(x)
    except _Reached as reached:
        if reached.call is not call:
            raise
        return reached.output
    finally:
        handle.remove()
    raise RuntimeError("the forward pass never reached the layer")


class TruncatedModel(nn.Module):
    """`model` run only as far as `layer`, returning that layer's output (`layer_output` as a module).

    Exemplar search, dead filters and feature maps read one layer; stopping there makes them about 8
    times cheaper for cnn4's first conv layer.
    """

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, x: Tensor) -> Tensor:
        return layer_output(self.model, self.layer, x)


def conv_layers(model: nn.Module) -> list[str]:
    """Module names of every nn.Conv2d, in forward order for sequential models (e.g. net.features.0)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The model's last nn.Conv2d; a model without one is an error."""
    names = conv_layers(model)
    if not names:
        raise ValueError("model has no nn.Conv2d; pass `layer=` explicitly")
    return model.get_submodule(names[-1])


def layer_by_name(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`; an unknown name is an error listing the conv layers."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        convs = ", ".join(conv_layers(model)) or "none (no nn.Conv2d)"
        raise ValueError(f"unknown layer {name!r}; conv layers of this model: {convs}") from None


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The name of submodule `layer` in `model`; a module that is not one is an error."""
    name = next((n for n, m in model.named_modules() if m is layer), None)
    if name is None:
        raise ValueError("layer is not a submodule of model")
    return name


def cam_layer(model: nn.Module, min_side: int = 12) -> str | None:
    """The default Grad-CAM / HiResCAM layer: the deepest conv layer whose output is at least `min_side`
    pixels a side for a 48x48 face (the last conv layer if none is); None without conv layers.

    On cnn4's flattening head a CAM of the last conv (6x6) points at chance on the synthetic faces,
    one of the 12x12 layer above chance (tests/test_interpret.py; the analysis reports the verdict).
    """
    names = conv_layers(model)
    if not names:
        return None
    sides = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, output, name=name: sides.__setitem__(name, min(output.shape[-2:]))
        )
        for name in names
    ]
    device = next(model.parameters()).device
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    large = [name for name in names if sides.get(name, 0) >= min_side]
    return large[-1] if large else names[-1]

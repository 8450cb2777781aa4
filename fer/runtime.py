"""Speed knobs of a run (`runtime:` in conf/train.yaml): memory format and torch.compile.

They change how fast a module computes, not what it computes (beyond float rounding), so they are
applied to a built module and kept out of its hyperparameters: a checkpoint loads the same with or
without them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _channels_last_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    images, *rest = args
    return (images.contiguous(memory_format=torch.channels_last), *rest)


def apply_runtime(
    module: nn.Module, channels_last: bool = False, compile: bool = False, compile_mode: str | None = None
) -> nn.Module:
    """Put `module`'s 4-D weights and its input batches in channels_last, and/or compile its `net`.

    Compiling `net` in place (`nn.Module.compile`) keeps the state-dict keys, so checkpoints stay
    loadable by an uncompiled module.
    """
    if channels_last:
        module.to(memory_format=torch.channels_last)
        module.register_forward_pre_hook(_channels_last_input)
    if compile:
        target = module.net if hasattr(module, "net") else module
        target.compile(mode=compile_mode)
    return module

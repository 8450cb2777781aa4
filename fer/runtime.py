"""Speed knobs of a run (`runtime:` in conf/train.yaml): memory format and torch.compile.

They change how fast a module computes, not what it computes (beyond float rounding), so they are
applied to a built module and kept out of its hyperparameters: a checkpoint loads the same with or
without them.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

log = logging.getLogger(__name__)


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN's bf16 kernels need."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_slow_bf16(trainer: pl.Trainer) -> None:
    """Log a warning when a run autocasts to bf16 on a CPU without native bf16.

    oneDNN then emulates bf16. Measured with bench/bench_throughput.py on vgg8 (batch 128, 2 cores,
    the same CPU capped by ONEDNN_MAX_CPU_ISA), bf16 training ran at 0.6x fp32's speed under
    AVX512_CORE and 0.12x under AVX2, where natively it runs at 2.2x.
    """
    on_cpu = trainer.strategy.root_device.type == "cpu"
    if on_cpu and str(trainer.precision).startswith("bf16") and not cpu_has_native_bf16():
        log.warning(
            "trainer.precision=%s on a CPU without AVX512-BF16 or AMX: bf16 is emulated there and "
            "trains several times slower than fp32; set trainer.precision=32-true",
            trainer.precision,
        )

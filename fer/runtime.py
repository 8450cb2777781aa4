"""Speed knobs of a run (`runtime:` in conf/train.yaml): memory format, torch.compile and how malloc reuses
freed memory; whether the hardware computes bf16 natively, which decides if bf16 pays; and the precision
analyze.py evaluates in.

They change how fast a module computes, not what it computes (beyond float rounding), so they are
applied to a built module and kept out of its hyperparameters: a checkpoint loads the same with or
without them.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn

log = logging.getLogger(__name__)


def _channels_last_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    images, *rest = args
    return (images.contiguous(memory_format=torch.channels_last), *rest)


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on a 64-bit system.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def reuse_freed_memory() -> bool:
    """Have malloc keep the memory that a training step frees for the next step's tensors; False where this C
    library has no glibc mallopt.

    By default glibc maps each allocation above its (adaptive) threshold afresh and hands the top of its heap back
    to the kernel once more than twice that is free, so each step's activations fault their pages in again, zeroed
    by the kernel. Serving allocations up to 32 MiB (glibc's cap) from the heap and trimming it only above 2 GiB
    took one step of the speedrun's net from 790 to 696 ms and from ~59k page faults to none
    (bench/bench_reuse_memory.py, 2 cores of an AMD EPYC). Whole 20-minute speedruns there cut their page faults
    ~100x and their system time from 62-105 s to 8 s, but fit no more steps, so runtime.reuse_memory is off by
    default. jemalloc or tcmalloc would do the same, but only when preloaded before the process starts.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def apply_runtime(
    module: nn.Module,
    channels_last: bool = False,
    compile: bool = False,
    compile_mode: str | None = None,
    reuse_memory: bool = False,
) -> nn.Module:
    """Put `module`'s 4-D weights and its input batches in channels_last, and/or compile its `net`, and/or have
    this process's malloc reuse freed memory (`reuse_freed_memory`).

    Compiling `net` in place (`nn.Module.compile`) keeps the state-dict keys, so checkpoints stay
    loadable by an uncompiled module.
    """
    if reuse_memory and not reuse_freed_memory():
        log.warning(
            "runtime.reuse_memory=true, but this C library has no glibc mallopt: malloc left as it is"
        )
    if channels_last:
        module.to(memory_format=torch.channels_last)
        module.register_forward_pre_hook(_channels_last_input)
    if compile:
        target = module.net if hasattr(module, "net") else module
        target.compile(mode=compile_mode)
    return module


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware: a CUDA GPU that supports it, or an x86 CPU with
    AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    # torch.cpu's checks are private, but torch has no public one for this: torch.backends.mkldnn's bf16
    # support also holds on plain AVX-512, where vgg8 trained at 0.6x fp32's speed in bf16 and its Muon step
    # took 96 ms in bfloat16 against 46 in float32.
    return device.type == "cpu" and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )


def bf16_if_native(if_native: str, otherwise: str, accelerator: str = "auto") -> str:
    """`if_native` where the run's device (a CUDA GPU unless `accelerator` is "cpu" or none is present)
    computes bfloat16 natively, else `otherwise`: the recipes' `${fer.bf16_if_native:bf16-mixed,32-true}`."""
    on_gpu = accelerator != "cpu" and torch.cuda.is_available()
    return if_native if native_bfloat16(torch.device("cuda" if on_gpu else "cpu")) else otherwise


def warn_slow_bf16(trainer: pl.Trainer) -> None:
    """Log a warning when a run autocasts to bf16 on a CPU without native bf16.

    oneDNN then emulates bf16. Measured with bench/bench_throughput.py on vgg8 (batch 128, 2 cores): bf16
    training ran at 0.6x fp32's speed on an AVX512 CPU with its BF16 instructions masked (ONEDNN_MAX_CPU_ISA),
    and at 0.12x on one masked to AVX2, where natively it runs at 2.2x.
    """
    device = trainer.strategy.root_device
    if device.type == "cpu" and str(trainer.precision).startswith("bf16") and not native_bfloat16(device):
        log.warning(
            "trainer.precision=%s on a CPU without AVX512-BF16 or AMX: bf16 is emulated there and "
            "trains several times slower than fp32; set trainer.precision=32-true",
            trainer.precision,
        )


# What analyze.py's precision= may be: fp32, or an autocast of the forward pass as Lightning's trainer.precision
# of the same name does it.
EVALUATION_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def evaluation_precision(
    given: str | None, run_config: Mapping[str, Any] | None, device: torch.device
) -> str:
    """The precision to evaluate a checkpoint in on `device`: `given` (analyze.py's precision=), else its run's
    trainer.precision where `device` computes it natively (bf16: `native_bfloat16`; fp16: a CUDA GPU), else
    32-true. Following the run repeats its test stage's arithmetic; fp32 is for a device that would emulate it.
    """
    if given is not None:
        return given
    trained = str(((run_config or {}).get("trainer") or {}).get("precision"))
    native = {"bf16-mixed": native_bfloat16(device), "16-mixed": device.type == "cuda"}
    return trained if native.get(trained, False) else "32-true"


def warn_if_emulated(given: str | None, device: torch.device) -> None:
    """Warn where analyze.py's precision= asks for bf16 on a CPU that would emulate it; called once a command."""
    if given == "bf16-mixed" and device.type == "cpu" and not native_bfloat16(device):
        log.warning(
            "precision=bf16-mixed on a CPU without AVX512-BF16 or AMX: bf16 is emulated there, slower "
            "than fp32; pass precision=32-true"
        )


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The forward pass's context for an `EVALUATION_PRECISIONS` value: Lightning's autocast for a mixed one."""
    return (
        nullcontext() if precision == "32-true" else MixedPrecision(precision, device.type).forward_context()
    )

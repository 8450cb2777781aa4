"""`optim=muon`: Muon on a net's conv filters and AdamW on the rest, as one torch optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim.adamw import adamw

from fer.rules import Choice, Flag, Number
from fer.runtime import native_bfloat16

# The quintic Newton-Schulz coefficients of Muon (and of torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
# What MuonAdamW's own options may be: the startup check (fer/schema.py) names a wrong optim.KEY before any data
# is read, and the constructor refuses one given in Python.
MUON_RULES = {
    "ns_dtype": Choice(("auto", *NS_DTYPES)),
    "filter_norm": Flag(),
    "muon_lr_scale": Number(0, open_low=True),
}


def orthogonalize(matrix: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """About the nearest semi-orthogonal matrix to a 2-D `matrix` (U V^T of its SVD), by Muon's Newton-Schulz
    iteration: its singular values end between about 0.7 and 1.2 (all that Muon needs), directions unchanged."""
    a, b, c = NS_COEFFICIENTS
    wide = matrix.shape[0] <= matrix.shape[1]
    x = matrix if wide else matrix.T  # iterate on the smaller Gram matrix
    x = x / (x.norm() + eps)  # singular values into [0, 1], where the iteration converges
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


class MuonAdamW(torch.optim.Optimizer):
    """Muon (momentum, Nesterov by default, then the update orthogonalised) on every 4-D parameter, a conv's filters,
    and AdamW on every other one: BatchNorm, biases, the fully connected head.

    Written here because torch.optim.Muon takes 2-D parameters only: a conv's filters are orthogonalised as
    the matrix (out_channels, in_channels * kh * kw), as in Keller Jordan's airbench. Each update is scaled by
    0.2 * sqrt(max(rows, columns)), torch.optim.Muon's "match_rms_adamw" (Moonlight's), so that it has
    AdamW's size and both kinds of parameters share one learning rate, weight decay and schedule.
    `ns_dtype` is the orthogonalisation's dtype: "bfloat16", "float32", or "auto", bfloat16 where the device
    computes it natively (`native_bfloat16`), else float32. `filter_norm` rescales each filter tensor to norm
    sqrt(out_channels), its init's, before each update (airbench's Muon): behind BatchNorm the net computes the
    same function, and the schedule alone sets each step's size relative to the weights. `muon_lr_scale`
    multiplies the filters' learning rate (their decay's too) over the one the schedule gives the rest.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_dtype: str = "auto",
        filter_norm: bool = False,
        muon_lr_scale: float = 1.0,
    ) -> None:
        params = list(params)
        if any(isinstance(p, dict) for p in params):
            raise ValueError("MuonAdamW splits the parameters itself: pass tensors, not parameter groups")
        options = {"ns_dtype": ns_dtype, "filter_norm": filter_norm, "muon_lr_scale": muon_lr_scale}
        for key, value in options.items():
            fits, read = MUON_RULES[key].check(value)
            # A number given as a string is read as the number only from a config, where validate() logs it.
            if not fits or read is not value:
                raise ValueError(f"optim.{key}: expected {MUON_RULES[key].describe()}, got {value!r}")
        groups = [
            {"params": [p for p in params if p.ndim == 4], "muon": True},
            {"params": [p for p in params if p.ndim != 4], "muon": False},
        ]
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_dtype=ns_dtype,
            filter_norm=filter_norm,
            muon_lr_scale=float(muon_lr_scale),
        )
        super().__init__([g for g in groups if g["params"]], defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("ns_dtype", "auto")  # a checkpoint from before ns_dtype was an option
            group.setdefault("filter_norm", False)  # likewise filter_norm
            group.setdefault("muon_lr_scale", 1.0)  # and muon_lr_scale

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                self._muon_step(group, params)
            else:
                self._adamw_step(group, params)
        return loss

    def _muon_step(self, group: dict, params: list[Tensor]) -> None:
        # Applied here, not to the group's lr, so that every schedule scales both groups alike.
        lr, mu = group["lr"] * group["muon_lr_scale"], group["momentum"]
        # bfloat16 where native, as Muon's reference implementation: the iteration tolerates its rounding.
        # vgg8's optimizer step on 2 cores of an AVX512-BF16 CPU: 26 ms in bfloat16, 44 in float32; with the
        # BF16 instructions masked (ONEDNN_MAX_CPU_ISA=AVX2) 1400 ms against 49 (bench/bench_optimizer.py).
        name = group["ns_dtype"]
        if name == "auto" and params:
            name = "bfloat16" if native_bfloat16(params[0].device) else "float32"
        for p in params:
            buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
            buf.mul_(mu).add_(p.grad)
            update = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
            matrix = update.reshape(len(p), -1).to(NS_DTYPES[name])
            ortho = orthogonalize(matrix, group["ns_steps"])
            if group["filter_norm"]:
                p.mul_(math.sqrt(len(p)) / p.norm())
            p.mul_(1 - lr * group["weight_decay"])  # decoupled, as AdamW's
            scale = 0.2 * math.sqrt(max(matrix.shape))
            p.add_(ortho.reshape(p.shape).to(p.dtype), alpha=-lr * scale)

    def _adamw_step(self, group: dict, params: list[Tensor]) -> None:
        for p in params:
            if not self.state[p]:
                self.state[p].update(
                    step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p)
                )
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adamw(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )

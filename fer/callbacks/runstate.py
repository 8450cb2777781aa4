"""`RunState`: the random state a resumed run needs, a checkpoint from the first step, and the stop on a
non-finite loss or weights."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


class NonFiniteError(RuntimeError):
    """Training produced a NaN or infinite loss or weights."""


def rng_states() -> dict[str, Any]:
    """Python, numpy, torch (CPU and CUDA) global random states as plain lists and tensors, so that a
    checkpoint holding them still loads with torch.load(weights_only=True)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["torch.cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])


class RunState(pl.Callback):
    """Makes `ckpt_path=last` continue a seeded run exactly as if it had never stopped.

    Everything the next epoch draws comes from the global random streams saved here: the train loader's
    shuffling (its sampler seeds itself from torch's stream when the epoch's first batch is fetched),
    the augmentation (torch's CPU stream, or CUDA's on a GPU) and dropout. A checkpoint written at an
    epoch's end holds those streams as they stand then; loading it sets them back before Lightning builds
    the next epoch's loader iterator (the sanity check in between runs with isolated random state).
    Weights, optimizer, scheduler, loops and the History rows are in Lightning's own checkpoint content.

    With `last_ckpt`, the state at the start of training is saved there too, so a run killed during its
    first epoch resumes as well. Training stops at the first non-finite loss (before its backward pass,
    so the weights stay finite), and no checkpoint is ever written with non-finite weights.
    """

    def __init__(self, last_ckpt: str | Path | None = None) -> None:
        self.last_ckpt = None if last_ckpt is None else Path(last_ckpt)
        self.last_saved: str | None = None  # which state the latest checkpoint holds, for error messages
        # The random state before the first epoch's loader iterator drew from it (Lightning creates that
        # iterator before on_train_start), held for the checkpoint saved at the start.
        self._at_fit_start: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._at_fit_start = rng_states()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.last_ckpt is not None and trainer.ckpt_path is None:
            # The full state (optimizer, loops, callbacks), so the run resumes from it.
            trainer.save_checkpoint(self.last_ckpt, weights_only=False)
        self._at_fit_start = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._at_fit_start or rng_states(), "saved_at": self._where()}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning's ModelCheckpoint.load_state_dict leaves out `current_score`: without it, a resumed
        # run's last.ckpt would differ from an uninterrupted run's in that one field (and its sha256).
        for callback in trainer.checkpoint_callbacks:
            saved = checkpoint.get("callbacks", {}).get(callback.state_key, {})
            callback.current_score = saved.get("current_score", callback.current_score)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict["rng"])
        self.last_saved = state_dict["saved_at"]

    def _where(self) -> str:
        trainer = self._trainer
        return f"end of epoch {trainer.current_epoch}" if trainer.global_step else "start of training"

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        where = self._where()
        bad = [name for name, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteError(
                f"non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) at the "
                f"{where} (step {trainer.global_step}): not saved. The last finite checkpoint is "
                f"{self.last_checkpoint() or 'none: nothing was saved before'}"
            )
        self.last_saved = where

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        if not torch.isfinite(loss).all():
            raise NonFiniteError(
                f"non-finite training loss {loss.item()} at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step} (batch {trainer.fit_loop.epoch_loop.batch_idx} of the epoch): "
                f"training stopped. The last finite checkpoint is "
                f"{self.last_checkpoint() or 'none: nothing was saved before'}. Lower optim.lr, or check the data"
            )

    def last_checkpoint(self) -> str | None:
        """`path (the state it holds)` of the latest last.ckpt, or None before one is saved."""
        if self.last_ckpt is None or self.last_saved is None:
            return None
        return f"{self.last_ckpt} ({self.last_saved})"

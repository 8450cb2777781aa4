"""`Snapshots`: keeps the weights of the epochs just before the best one, for a snapshot ensemble at test time
(the best epoch's class probabilities averaged with theirs: neighbouring epochs err on different faces)."""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from fer import rundir
from fer.files import atomic_path

log = logging.getLogger(__name__)


class Snapshots(pl.Callback):
    """After each validation, remembers the network's weights (in memory, the last `epochs` epochs'). When
    `monitor` reaches a new best (strictly higher, as ModelCheckpoint's best.ckpt), writes the `epochs` epochs
    before it to `dirpath`/best-prevK.ckpt (K = 1 is the epoch before), each a checkpoint of the module
    that `FERModule.load_from_checkpoint` and `analyze.py ensemble=` load. A run resumed from last.ckpt
    remembers only the epoch it resumes after: a best epoch soon after that has fewer snapshots, and says
    so."""

    def __init__(self, dirpath: str | Path, epochs: int = 2, monitor: str = "val/acc") -> None:
        if epochs < 1:
            raise ValueError(f"callbacks.snapshots.epochs must be at least 1, got {epochs}")
        self.dirpath, self.epochs, self.monitor = Path(dirpath), int(epochs), monitor
        self.recent: deque[tuple[int, dict[str, Tensor]]] = deque(maxlen=self.epochs)
        self.best = -math.inf
        self.kept: list[int] = []  # the epochs written for the current best, latest first

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        best = trainer.checkpoint_callback
        if best is not None and (best.monitor, best.mode) != (self.monitor, "max"):
            raise ValueError(
                f"callbacks.snapshots.monitor={self.monitor!r} (highest best) must choose the epoch that the "
                f"checkpoint callback does (monitor={best.monitor!r}, mode={best.mode!r}): the test averages "
                "the snapshots with that epoch"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0 and not self.recent:  # resumed: these weights are the last epoch's
            self.recent.append((trainer.current_epoch - 1, _net_weights(pl_module)))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch, current = trainer.current_epoch, float(trainer.callback_metrics[self.monitor])
        if current > self.best:  # NaN is never a best
            self.best = current
            self.kept = self._write(trainer, pl_module, epoch)
        self.recent.append((epoch, _net_weights(pl_module)))

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, best_epoch: int) -> list[int]:
        """Write best-prevK.ckpt for the epochs before `best_epoch` still in memory; remove the files of
        those that are not (an earlier best's snapshots must not pass for this one's)."""
        remembered = dict(self.recent)
        kept = [best_epoch - back for back in range(1, self.epochs + 1) if best_epoch - back in remembered]
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            for back in range(1, self.epochs + 1):
                weights = remembered.get(best_epoch - back)
                if weights is None:
                    self.path(back).unlink(missing_ok=True)
                    continue
                checkpoint = {
                    "state_dict": weights,
                    "hyper_parameters": dict(pl_module.hparams),
                    "run_config": getattr(pl_module, "run_config", None),
                    "epoch": best_epoch - back,
                    "pytorch-lightning_version": pl.__version__,
                }
                with atomic_path(self.path(back)) as tmp:
                    torch.save(checkpoint, tmp)
        if len(kept) < self.epochs:
            log.warning(
                "snapshots: the best epoch so far, %d, has %d of its %d snapshot epochs (epochs before a "
                "resume, or before the first, are not remembered)",
                best_epoch,
                len(kept),
                self.epochs,
            )
        return kept

    def path(self, back: int) -> Path:
        """The checkpoint of the epoch `back` epochs before the best one."""
        return self.dirpath / f"{rundir.SNAPSHOT}{back}.ckpt"

    def checkpoints(self) -> list[Path]:
        """The snapshot files of the best epoch, latest first."""
        return [self.path(back) for back in range(1, len(self.kept) + 1)]

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "kept": list(self.kept)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.kept = state_dict["best"], list(state_dict["kept"])


def _net_weights(pl_module: pl.LightningModule) -> dict[str, Tensor]:
    """A copy of the network's weights on the CPU, under the module's names (net.*): what a snapshot holds.
    The normalizer's statistics rebuild from the hyperparameters (FERModule.on_load_checkpoint)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in pl_module.net.state_dict(prefix="net.").items()}

"""Interpretability while training: saliency, activation-maximization and class-visualization figures
every few epochs, and the test confusion matrix as an interactive W&B chart. Thin shells over
`fer.interpret` and the report's functions (`fer.analysis`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from fer.analysis.filters import class_images, filter_exemplars, plot_class_images
from fer.analysis.saliency import UNGUIDABLE, unguided, usable_methods
from fer.figure_logging import log_images
from fer.interpret.activation_max import maximize_activation
from fer.interpret.attribution import METHODS, attribute
from fer.interpret.figures import face_label, pick_per_class, plot_filters, plot_saliency
from fer.interpret.layers import TruncatedModel, cam_layer, conv_layers, layer_by_name
from fer.predict import predict_proba

log = logging.getLogger(__name__)


def _frozen_copy(module: pl.LightningModule) -> pl.LightningModule:
    """A gradient-free eval-mode copy rebuilt from the module's hyperparameters and weights, as a checkpoint
    would be (a deepcopy would also copy the trainer's metric states, some of them non-leaf tensors)."""
    clone = type(module)(**module.hparams)
    clone.load_state_dict(module.state_dict())
    return clone.to(module.device).eval().requires_grad_(False)


class InterpretFigures(pl.Callback):
    """Saliency grid, activation maximization and class visualization of the model in training, every
    `every_n_epochs` epochs and when fitting ends.

    Saved as `<output_dir>/saliency_epochNNN.png`, `filters_epochNNN.png` and `classes_epochNNN.png` and
    logged to the W&B and TensorBoard loggers. `steps`, `lr`, `param`, `jitter`, `scale` and `rotate`
    are `maximize_activation`'s options, for filters and classes alike. Runs on rank zero only, on a gradient-free copy of the model, so training's
    gradients, train/eval modes and DDP hooks are untouched. The faces are the first of each class of the
    `stage` split; `pool` faces of it give each filter's best real activation and the dead filters.
    """

    def __init__(
        self,
        output_dir: str | Path,
        every_n_epochs: int = 5,
        stage: str = "val",
        methods: Sequence[str] = ("saliency", "integrated_gradients", "gradcam"),
        per_class: int = 1,
        attribution: Mapping[str, Any] | None = None,
        layer: str | None = None,
        filters: int = 8,
        steps: int = 32,
        lr: float = 0.1,
        param: str = "fft",
        jitter: int = 2,
        scale: float = 0.05,
        rotate: float = 5.0,
        pool: int = 256,
    ) -> None:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"InterpretFigures: unknown methods {unknown}; choose from {', '.join(METHODS)}")
        if every_n_epochs < 1:
            raise ValueError(f"InterpretFigures: every_n_epochs must be >= 1, got {every_n_epochs}")
        self.output_dir, self.every_n_epochs, self.stage = Path(output_dir), every_n_epochs, stage
        self.methods, self.per_class, self.attribution = list(methods), per_class, dict(attribution or {})
        self.layer, self.filters, self.pool = layer, filters, pool
        self.am = {
            "steps": steps,
            "lr": lr,
            "param": param,
            "jitter": jitter,
            "scale": scale,
            "rotate": rotate,
        }
        self.last_drawn: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        faces = getattr(trainer.datamodule, "faces", {}).get(self.stage)
        if faces is None:
            raise ValueError(
                f"InterpretFigures: the datamodule has no {self.stage!r} faces (stage=train|val|test of a "
                "FERDataModule whose split is configured)"
            )
        pool = torch.from_numpy(faces.images[: self.pool]).unsqueeze(1)
        labels = torch.from_numpy(faces.labels[: self.pool])
        index = pick_per_class(labels, self.per_class)
        self.images, self.labels, self.pool_images = pool[index], labels[index], pool
        self.layer = self.layer or next(iter(conv_layers(pl_module)), None)
        if self.layer is not None:
            layer_by_name(pl_module, self.layer)  # an unknown name fails now, not after an epoch
        self.cam_layer = cam_layer(pl_module)
        if unguided(self.methods, pl_module):
            log.warning("InterpretFigures: %s", UNGUIDABLE)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.draw(trainer, pl_module, trainer.current_epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # current_epoch counts completed epochs once fitting is over.
        last = trainer.current_epoch - 1
        if last >= 0 and last != self.last_drawn:
            self.draw(trainer, pl_module, last)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> dict[str, Path]:
        """Draw, save and log the figures of `epoch` (rank zero); returns {name: path}."""
        self.last_drawn = epoch
        if not trainer.is_global_zero:
            return {}
        start = time.perf_counter()
        device = pl_module.device
        # Rebuilding the model draws initial weights from torch's RNG: restore it afterwards, so a seeded
        # run trains the same with or without this callback.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model = _frozen_copy(pl_module)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            figures = {"saliency": self._saliency(model, epoch)}
            if self.layer is not None:
                figures["filters"] = self._filters(model, epoch)
            figures["classes"] = self._classes(model, epoch)
        log_images(trainer.loggers, figures, step=trainer.global_step)
        log.info(
            "interpretability figures of epoch %d in %.1f s: %s",
            epoch,
            time.perf_counter() - start,
            self.output_dir,
        )
        return figures

    def _saliency(self, model: pl.LightningModule, epoch: int) -> Path:
        methods = usable_methods(self.methods, self.cam_layer, model)
        layer = layer_by_name(model, self.cam_layer) if self.cam_layer else None
        maps = {m: attribute(model, self.images, self.labels, m, layer, **self.attribution) for m in methods}
        probs = predict_proba(model, self.images)
        preds = probs.argmax(dim=1)
        labels = [
            face_label(model.class_names, int(t), int(p), probs[i, p].item())
            for i, (t, p) in enumerate(zip(self.labels, preds))
        ]
        path = self.output_dir / f"saliency_epoch{epoch:03d}.png"
        return plot_saliency(self.images, maps, labels, path, title=f"Attribution maps, epoch {epoch}")

    def _filters(self, model: pl.LightningModule, epoch: int) -> Path:
        layer = layer_by_name(model, self.layer)
        truncated = TruncatedModel(model, layer)
        found = filter_exemplars(truncated, layer, self.pool_images, self.images[0], self.filters, k=1)
        images, reached = maximize_activation(truncated, layer, found.channels, **self.am)
        path = self.output_dir / f"filters_epoch{epoch:03d}.png"
        title = f"{self.layer}, epoch {epoch}: activation maximization (reached vs best real image)"
        return plot_filters(
            images, found.channels, reached, found.top[:, 0], set(found.dead), path, title=title
        )

    def _classes(self, model: pl.LightningModule, epoch: int) -> Path:
        path = self.output_dir / f"classes_epoch{epoch:03d}.png"
        title = (
            f"Class visualization, epoch {epoch}: the input maximising each logit, beside the best real face"
        )
        return plot_class_images(
            class_images(model, self.pool_images, self.am), model.class_names, path, title
        )


def confusion_pairs(counts: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) label arrays that a confusion-count matrix summarises, one entry per image."""
    counts = np.asarray(counts, dtype=np.int64)
    true, pred = np.indices(counts.shape)
    return np.repeat(true.ravel(), counts.ravel()), np.repeat(pred.ravel(), counts.ravel())


class TestConfusion(pl.Callback):
    """The test confusion matrix as an interactive W&B chart (`wandb.plot.confusion_matrix`).

    The PNG (confusion.png) is written and logged as an image to W&B and TensorBoard by fer.train after
    testing; this adds the chart W&B can slice. Rank zero only; reads the counts FERModule synced across
    ranks at the end of the test epoch.
    """

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = getattr(pl_module, "test_confusion_counts", None)
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not trainer.is_global_zero or counts is None or not loggers:
            return
        import wandb  # only with a W&B logger, which has imported it already

        true, pred = confusion_pairs(counts)
        chart = wandb.plot.confusion_matrix(
            y_true=true.tolist(),
            preds=pred.tolist(),
            class_names=list(pl_module.class_names),
            title="Test confusion",
        )
        for logger in loggers:
            logger.experiment.log({"test/confusion_matrix": chart})

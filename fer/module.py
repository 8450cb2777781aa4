"""`FERModule`: one LightningModule around any model of `fer.models`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.func import functional_call
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score
from torchvision.transforms.v2.functional import center_crop

from fer.data.labels import CLASS_NAMES
from fer.models import build_model
from fer.models.joint_ensemble import members_log_probs
from fer.models.normalization import Normalization
from fer.schedules import budget_schedule, sized_by_trainer
from fer.schema import ConfigError
from fer.tta import mean_log_probs, view_log_probs


def classification_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            # Balanced accuracy is the mean per-class recall.
            "balanced_acc": MulticlassAccuracy(num_classes, average="macro"),
        }
    )


def check_input_size(net: nn.Module, size: int, target: str, key: str = "aug.crop", advice: str = "") -> None:
    """Raise a ConfigError naming the config `key` when `net` cannot classify `size` x `size` faces; `advice`
    replaces the closing sentence, which suits the training options (aug.crop, aug.progressive_start)."""
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 1, size, size))
    except RuntimeError as error:
        advice = advice or (
            f"Train it with {key}=0, a larger {key}, or a model with a global pool (vgg8, vggnet, vgg16, vgg19, "
            "resnet18)."
        )
        raise ConfigError(
            f"{key}={size}: the model {target} cannot take {size}x{size} faces ({str(error).splitlines()[0]}): "
            f"a flatten head is sized for 48x48 (cnn4, dnn, alexnet_bn, vgg_keras), and a pooled net's poolings "
            f"shrink too small a face to nothing. {advice}"
        ) from None
    finally:
        net.train(was_training)


def check_tta_sizes(module: FERModule, tta: Mapping[str, Any], who: str = "") -> None:
    """Raise a ConfigError naming tta.scales (and `who`, the model's origin) when `module` cannot classify a
    face resized to one of them."""
    for size in tta.get("scales") or ():
        try:
            check_input_size(
                module,
                int(size),
                module.hparams.model.get("_target_", ""),
                key="tta.scales",
                advice="Evaluate it with tta.scales=[] or with sizes it takes.",
            )
        except ConfigError as error:
            raise ConfigError(f"{who}: {error}" if who else str(error)) from None


class FERModule(pl.LightningModule):
    """Classifier over pixel-valued (0..255) images: normalization, network, loss, metrics, optimizer.

    Every argument is plain config (dicts of numbers and strings), saved as hyperparameters, so
    `FERModule.load_from_checkpoint(path)` rebuilds the network with no extra arguments.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        optim: Mapping[str, Any],
        sched: Mapping[str, Any] | None = None,
        normalization: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
        class_names: Sequence[str] = CLASS_NAMES,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        num_classes = len(self.class_names)
        self.normalizer = Normalization(**(normalization or {}))
        self.net = build_model(model)
        # The window the net was trained on (aug.crop): bigger faces are centre-cropped to it, so val,
        # test, TTA, analysis and ensembles all see what training saw. TTA's shifted views then become
        # windows off the centre (shift (48 - size) / 2 gives the corner crops of ten-crop testing).
        self.input_size = input_size
        if input_size:
            check_input_size(self.net, input_size, model.get("_target_", ""))
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_metrics = classification_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = classification_metrics(num_classes).clone(prefix="test/")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints: a resumed run keeps its best so far
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion_counts: torch.Tensor | None = None
        # Test-time augmentation of the test stage (a conf/tta/ node), set by the caller:
        # how the network is evaluated, not a hyperparameter of it. With more than one view, the test
        # stage also scores the unchanged faces alone (test/acc_no_tta), which gives the gain of TTA.
        self.tta: dict[str, Any] | None = None
        self.test_acc_no_tta = MulticlassAccuracy(num_classes, average="micro")
        # The snapshot ensemble of the test stage (callbacks.snapshots), set by the caller: the network's weights
        # at the epochs before the tested one, whose class probabilities (with the same TTA) are averaged with
        # its own. With any, the test stage also scores the tested epoch alone (test/acc_selected_epoch).
        self.snapshots: list[dict[str, Tensor]] = []
        self.test_acc_selected = MulticlassAccuracy(num_classes, average="micro")
        # The whole run's config (plain dict), stored beside the weights so that a checkpoint alone
        # says which data and setup produced it; not a hyperparameter of the network.
        self.run_config: dict[str, Any] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_size and images.shape[-1] > self.input_size:
            images = center_crop(images, [self.input_size, self.input_size])
        return self.net(self.normalizer(images))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The criterion on `logits`; on a JointEnsemble's training logits, (members, B, classes), the mean of
        each member's own loss. The mean, not the sum, so the logged loss reads as one net's: Muon's steps do not
        depend on the gradient's scale, AdamW's hardly."""
        if logits.ndim == 3:
            return torch.stack([self.criterion(member, labels) for member in logits]).mean()
        return self.criterion(logits, labels)

    def _step(self, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        if logits.ndim == 3:  # the members' mean prediction, as in eval mode
            logits = members_log_probs(logits)
        # MixUp/CutMix batches carry (B, classes) soft labels: accuracy counts the dominant class.
        hard = labels.argmax(dim=1) if labels.ndim == 2 else labels
        return loss, logits.argmax(dim=1), hard

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, preds, labels = self._step(batch)
        self.train_loss(loss)
        self.train_acc(preds, labels)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        loss, preds, labels = self._step(batch)
        self.val_loss(loss)
        self.val_metrics.update(preds, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics.compute()
        self.val_metrics.reset()
        # Values from compute() are already synchronised across processes; sync_dist only averages
        # identical numbers, and tells Lightning so.
        self.log_dict(metrics, prog_bar=True, sync_dist=True)
        if self.trainer.sanity_checking:  # the sanity check must not count towards the best accuracy
            return
        self.val_acc_best(metrics["val/acc"])
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        views = view_log_probs(self, images, self.tta)
        # Each snapshot runs this module's forward with its own weights: every member sees the same TTA views.
        members = [
            view_log_probs(partial(functional_call, self, weights), images, self.tta)
            for weights in self.snapshots
        ]
        log_probs = mean_log_probs(torch.cat([views, *members]))
        # The criterion's log-softmax leaves log-probabilities unchanged: this is the usual loss of the
        # averaged prediction (and, with one view, of the logits).
        loss, preds = self.criterion(log_probs, labels), log_probs.argmax(dim=1)
        if len(views) > 1:
            self.test_acc_no_tta(views[0].argmax(dim=1), labels)
            self.log("test/acc_no_tta", self.test_acc_no_tta, on_step=False, on_epoch=True)
        if members:
            self.test_acc_selected(mean_log_probs(views).argmax(dim=1), labels)
            self.log("test/acc_selected_epoch", self.test_acc_selected, on_step=False, on_epoch=True)
        self.test_loss(loss)
        self.test_metrics.update(preds, labels)
        self.test_confusion.update(preds, labels)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()
        # On this module's device, and in its memory format (channels_last conv filters stay so).
        own = self.state_dict()
        self.snapshots = [
            {k: torch.empty_like(own[k]).copy_(v) for k, v in w.items()} for w in self.snapshots
        ]

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()
        # compute() is a collective under DDP: every rank calls it here, and the synced counts are
        # kept for the rank-zero code that draws them.
        self.test_confusion_counts = self.test_confusion.compute().cpu()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Under DDP every rank must step the same rates from a budget in seconds (fer.schedules.BudgetedLR):
        # rank 0's clock is taken here, after this batch's backward and before Lightning steps the
        # scheduler, so the rate of this step counts this batch and the last step's rate is 0.
        scheduler = budget_schedule(self.trainer)
        if scheduler is not None and scheduler.seconds and self.trainer.world_size > 1:
            scheduler.sync(lambda elapsed: self.trainer.strategy.broadcast(elapsed, src=0))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A budgeted schedule ends the fit when it is spent; Lightning then validates and checkpoints the
        # last weights before stopping.
        scheduler = budget_schedule(self.trainer)
        if scheduler is not None and scheduler.finished:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.run_config = checkpoint.get("run_config")
        # Checkpoints from before the best accuracy was saved load with the best unknown.
        checkpoint["state_dict"].setdefault("val_acc_best.max_value", torch.tensor(float("-inf")))
        # Checkpoints from before the statistics were buffers hold them in the hyperparameters only,
        # which built this normalizer.
        for name, buffer in self.normalizer.named_buffers(prefix="normalizer"):
            checkpoint["state_dict"].setdefault(name, buffer.clone())

    def configure_optimizers(self) -> dict[str, Any]:
        # _convert_="all": plain lists (e.g. Adamax's betas) in the optimizer state, or checkpoints
        # would hold OmegaConf objects that torch.load(weights_only=True) rejects.
        optimizer = instantiate(self.hparams.optim, params=self.parameters(), _convert_="all")
        sched = self.hparams.sched or {}
        if not sched.get("scheduler"):
            return {"optimizer": optimizer}
        kwargs = {}
        if sized_by_trainer(sched["scheduler"]):
            total = self.trainer.estimated_stepping_batches  # inf with max_epochs=-1 and max_steps=-1
            kwargs["total_steps"] = int(total) if math.isfinite(total) else None
        scheduler = instantiate(sched["scheduler"], optimizer=optimizer, _convert_="all", **kwargs)
        config = {"scheduler": scheduler, "interval": sched.get("interval", "epoch")}
        if sched.get("monitor"):
            config["monitor"] = sched["monitor"]
        return {"optimizer": optimizer, "lr_scheduler": config}

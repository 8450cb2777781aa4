"""Startup check of the config's data, aug, model, optimizer, loss and trainer-budget values, before any data
is read.

Every wrong value is named by its full key with what is allowed, all of them at once. A number given
as a string (`"aug.rotation='30'"` on the command line) is converted to the number and logged, never
stored as a string; a string that is not a number is an error.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fer.data.datamodule import DEFAULT_SPLITS, conflicting_settings
from fer.data.labels import IMAGE_SIZE
from fer.data.readers import LAYOUTS, ON_BAD_ROW
from fer.data.transforms import PADDING_MODES
from fer.models.normalization import NORMALIZATIONS
from fer.optimizers import MUON_RULES
from fer.rules import Batches, Choice, Duration, Flag, ListOf, Number, Text, check_values
from fer.schedules import sized_by_trainer

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """Config values or command-line options that are wrong: of the wrong type, out of range, or in a
    combination that does not work."""


_ABSENT = object()

# What a conf/tta/ node's values may be (fer/tta.py checks a checkpoint's too). A shift of the whole side
# moves the face out of every corner view. A rescaled view from 16 pixels (what four 2x2 poolings leave a
# pixel of) to twice the face; whether the model takes a size is checked against the model itself.
TTA_RULES = {
    "flip": Flag(),
    "shift": Number(0, IMAGE_SIZE - 1, integer=True),
    "scales": ListOf(Number(16, 2 * IMAGE_SIZE, integer=True)),
    "padding": Choice(PADDING_MODES, nullable=True),  # null: as the run's aug.padding
}

RULES: dict[str, Any] = {
    "seed": Number(0, 2**32 - 1, integer=True, nullable=True),
    "ckpt_path": Text(nullable=True),
    "overwrite": Flag(),
    "data.path": Text(),
    "data.layout": Choice(("auto", *LAYOUTS)),
    "data.val_fraction": Number(0, 1, nullable=True, open_low=True, open_high=True),
    "data.normalization": Choice(NORMALIZATIONS),
    "data.batch_size": Number(1, integer=True),
    "data.num_workers": Number(0, integer=True),
    "data.cache_dir": Text(nullable=True),
    "data.on_bad_row": Choice(ON_BAD_ROW),
    "data.split_seed": Number(0, integer=True),
    "aug.hflip": Number(0, 1),
    "aug.alternate_flip": Flag(),
    "aug.rotation": Number(0, 180),
    "aug.pad_crop": Number(0, 24, integer=True),  # half the 48-pixel face
    "aug.padding": Choice(PADDING_MODES),
    "aug.brightness": Number(0, 1),
    "aug.contrast": Number(0, 1),
    "aug.zoom": Number(0, 1, open_high=True),
    "aug.erase": Number(0, 1),
    "aug.crop": Number(0, 48, integer=True),  # 0: the whole face
    "aug.progressive_start": Number(0, 48, integer=True),  # 0: off
    "aug.progressive_until": Number(0, 1),
    "aug.stop_at": Number(0, 1, open_low=True),
    "aug.mixup": Number(0),  # a Beta alpha; 0: off
    "aug.cutmix": Number(0),
    "model.dropout": Number(0, 1, open_high=True),
    "model.members": Number(1, integer=True),  # 1: one net; K: a JointEnsemble of K
    "optim.lr": Number(0, open_low=True),
    "optim.weight_decay": Number(0),
    "optim.momentum": Number(0, 1, open_high=True),
    **{f"optim.{key}": rule for key, rule in MUON_RULES.items()},
    "sched.scheduler.seconds": Number(0, nullable=True, open_low=True),
    "loss.label_smoothing": Number(0, 1, open_high=True),
    "loss.class_weights": Flag(),
    "trainer.max_epochs": Number(-1, integer=True, nullable=True),  # -1: no epoch limit
    "trainer.min_epochs": Number(0, integer=True, nullable=True),
    "trainer.max_steps": Number(-1, integer=True),
    "trainer.max_time": Duration(),
    "trainer.limit_train_batches": Batches(),
    "trainer.limit_val_batches": Batches(),
    "trainer.limit_test_batches": Batches(),
    "trainer.check_val_every_n_epoch": Number(1, integer=True, nullable=True),
    "trainer.log_every_n_steps": Number(1, integer=True),
    "trainer.accumulate_grad_batches": Number(1, integer=True),
    "trainer.gradient_clip_val": Number(0, nullable=True),
    **{f"tta.{key}": rule for key, rule in TTA_RULES.items()},
    "runtime.channels_last": Flag(),
    "runtime.compile": Flag(),
    "runtime.reuse_memory": Flag(),
}


def validate(cfg: DictConfig) -> None:
    """Check every key of RULES present in `cfg`; convert numeric strings in place; raise ConfigError
    listing every wrong value."""
    given = {key: OmegaConf.select(cfg, key, default=_ABSENT) for key in RULES}
    converted, problems = check_values(RULES, {k: v for k, v in given.items() if v is not _ABSENT})
    for key, value in converted.items():
        if value is not given[key] and isinstance(given[key], str):
            log.info("%s: read the string %r as the number %r", key, given[key], value)
            OmegaConf.update(cfg, key, value)
    problems += _unsized_schedule(cfg) + _missing_stages(cfg) + _trains_nothing(cfg) + _conflicts(cfg)
    if problems:
        raise ConfigError("invalid config value(s):\n  " + "\n  ".join(problems))


def _unsized_schedule(cfg: DictConfig) -> list[str]:
    """A schedule sized by the trainer's steps (sched.scheduler.total_steps: null) in a fit of no known
    length, which Lightning would only find out after the data is read."""
    unbounded = (
        OmegaConf.select(cfg, "trainer.max_epochs") == -1
        and OmegaConf.select(cfg, "trainer.max_steps", default=-1) == -1
    )
    scheduler = OmegaConf.select(cfg, "sched.scheduler")
    if not (unbounded and sized_by_trainer(scheduler)):
        return []
    if scheduler.get("seconds"):
        return []  # a budget in seconds alone (sched=budget) sizes it
    return [
        "sched.scheduler.total_steps: null takes the schedule's length from trainer.max_epochs or "
        "trainer.max_steps, but both are -1 (no limit): set one of them, or use sched=budget with "
        "sched.scheduler.seconds"
    ]


def _missing_stages(cfg: DictConfig) -> list[str]:
    """Training needs a train split and a validation set (which selects best.ckpt)."""
    splits = OmegaConf.select(cfg, "data.splits", default=None)
    if splits is None:
        return []
    problems = []
    if not splits.get("train"):
        problems.append("data.splits.train: training needs a split to train on, got null")
    if not splits.get("val") and OmegaConf.select(cfg, "data.val_fraction", default=None) is None:
        problems.append(
            "data.splits.val: null with data.val_fraction null leaves nothing to validate on (validation "
            "selects best.ckpt): name a split, or set data.val_fraction=0.1 to hold out a tenth of train"
        )
    return problems


def _conflicts(cfg: DictConfig) -> list[str]:
    """Data and aug settings that contradict each other (fer.data.datamodule.conflicting_settings)."""
    if OmegaConf.select(cfg, "data", default=None) is None:
        return []
    data = OmegaConf.to_container(cfg.data, resolve=True)
    aug = OmegaConf.select(cfg, "aug", default=None)
    return conflicting_settings(
        data.get("splits") or DEFAULT_SPLITS,
        data.get("val_fraction"),
        bool(data.get("on_device")),
        data.get("num_workers") or 0,
        {} if aug is None else OmegaConf.to_container(aug, resolve=True),
    )


def _trains_nothing(cfg: DictConfig) -> list[str]:
    """A budget of zero epochs, steps or train batches: the run would end "successfully" untrained."""
    return [
        f"{key}: 0 trains nothing (the test would score the untrained net)"
        for key in ("trainer.max_epochs", "trainer.max_steps", "trainer.limit_train_batches")
        if OmegaConf.select(cfg, key, default=None) == 0
    ]

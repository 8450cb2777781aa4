"""One training run: data, model, trainer from the composed config; fit, test, write the run's files."""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from fer.callbacks.history import History
from fer.config import print_config
from fer.data.datamodule import FERDataModule
from fer.files import write_text
from fer.images import log_images
from fer.models import count_parameters
from fer.module import FERModule
from fer.plots import plot_confusion
from fer.runtime import apply_runtime
from fer.tta import num_views

log = logging.getLogger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`last` means the newest last*.ckpt of this run dir; any other value must be an existing file."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        found = sorted((run_dir / "checkpoints").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(
                f"ckpt_path=last: no last*.ckpt in {run_dir / 'checkpoints'}; resume a run by pointing "
                "hydra.run.dir at its folder, or pass ckpt_path=/path/to/file.ckpt"
            )
        return str(found[-1])
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return ckpt_path


def build_module(cfg: DictConfig, datamodule: FERDataModule) -> FERModule:
    """The module from plain config plus what the data decides (train-split statistics, class weights)."""
    normalization = {"mode": cfg.data.normalization, **datamodule.pixel_stats}
    return FERModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        sched=OmegaConf.to_container(cfg.sched, resolve=True),
        normalization=normalization,
        label_smoothing=cfg.loss.label_smoothing,
        class_weights=datamodule.class_weights if cfg.loss.class_weights else None,
        class_names=datamodule.class_names,
    )


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if not (node and "_target_" in node):
            continue
        kwargs = {}
        id_file = run_dir / "wandb_id.txt"
        if node._target_.endswith("WandbLogger") and id_file.exists():
            # A resumed run continues the same W&B run instead of starting a new one.
            kwargs = {"id": id_file.read_text().strip(), "resume": "allow"}
        loggers.append(instantiate(node, **kwargs))
    return loggers


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    callbacks = [
        instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node and "_target_" in node
    ]
    return [*callbacks, History(run_dir)]


@rank_zero_only
def save_run_files(run_dir: Path, module: FERModule, trainer: pl.Trainer, metrics: dict[str, Any]) -> None:
    write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    figures = {}
    if metrics["test"]:
        figures["confusion"] = plot_confusion(
            metrics["test_confusion"],
            module.class_names,
            run_dir / "confusion.png",
            title=f"Test confusion ({metrics['test_split']})",
        )
    if (run_dir / "history.png").exists():
        figures["history"] = run_dir / "history.png"
    log_images(trainer.loggers, figures)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            (run_dir / "wandb_id.txt").write_text(logger.version)
            # Close the W&B run: the next run in this process (a basic-launcher sweep) starts its own.
            logger.experiment.finish()


def run(cfg: DictConfig) -> float | None:
    """Fit, test the best checkpoint, write the run dir; return `cfg.optimized_metric` for sweepers."""
    run_dir = Path(cfg.paths.output_dir)
    try:
        return _run(cfg, run_dir)
    except BaseException:
        if rank_zero_only.rank == 0 and run_dir.is_dir():
            (run_dir / "error.txt").write_text(traceback.format_exc())
        raise


def _run(cfg: DictConfig, run_dir: Path) -> float | None:
    start = time.time()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    print_config(cfg, run_dir / "config.yaml")

    datamodule: FERDataModule = instantiate(cfg.data, aug=OmegaConf.to_container(cfg.aug, resolve=True))
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    apply_runtime(module, **cfg.runtime)
    module.tta = OmegaConf.to_container(cfg.tta, resolve=True)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg, run_dir), logger=build_loggers(cfg, run_dir) or False
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    fit_time = time.time() - start
    value = trainer.callback_metrics.get(cfg.optimized_metric)
    history = next(cb for cb in trainer.callbacks if isinstance(cb, History)).rows
    best = max(history, key=lambda r: r.get("val/acc", float("-inf")), default={})

    test: dict[str, float] = {}
    checkpoint = trainer.checkpoint_callback
    if datamodule.splits.get("test"):
        weights = "best" if checkpoint is not None and checkpoint.best_model_path else None
        (test,) = trainer.test(module, datamodule=datamodule, ckpt_path=weights)
    metrics = {
        "best": {k: v for k, v in best.items() if k == "epoch" or k.startswith("val/")},
        "test": {k: float(v) for k, v in test.items()},
        "test_split": datamodule.splits.get("test"),
        "tta": {**module.tta, "views": num_views(module.tta)},
        "test_confusion": None
        if module.test_confusion_counts is None
        else module.test_confusion_counts.tolist(),
        "epochs": len(history),
        "fit_time_s": round(fit_time, 2),
        "time_per_epoch_s": round(fit_time / max(len(history), 1), 3),
        "run_time_s": round(time.time() - start, 2),
        "params": count_parameters(module.net),
        "best_ckpt": checkpoint.best_model_path if checkpoint is not None else None,
    }
    save_run_files(run_dir, module, trainer, metrics)
    log.info("run dir: %s", run_dir)
    for name in ("metrics.json", "history.png", "confusion.png", "checkpoints/best.ckpt"):
        if (run_dir / name).exists():
            log.info("  %s", run_dir / name)
    if test:
        log.info("test accuracy (%s): %.4f", datamodule.splits["test"], test["test/acc"])
    return None if value is None else float(value)

"""One training run: data, model, trainer from the composed config; fit, test, write the run's files."""

from __future__ import annotations

import logging
import pickle
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from fer import rundir
from fer.callbacks.history import History
from fer.callbacks.runstate import RunState
from fer.callbacks.snapshots import Snapshots
from fer.config import print_config
from fer.data.datamodule import FERDataModule
from fer.data.errors import DataWarning
from fer.data.readers import RowsSkipped
from fer.figure_logging import log_images
from fer.files import write_json, write_text
from fer.models import count_parameters
from fer.models.whitening import fit_whitening
from fer.module import FERModule, check_input_size, check_tta_sizes
from fer.plots import plot_confusion
from fer.runtime import apply_runtime, warn_slow_bf16
from fer.schema import validate
from fer.tta import num_views, run_padding

log = logging.getLogger(__name__)


class Interrupted(RuntimeError):
    """Training was stopped by SIGTERM (a scheduler's pre-emption or time limit)."""


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`last` means the newest last*.ckpt of this run dir; any other value must be an existing file.

    Unset under SLURM, it is the newest hpc_ckpt_N.ckpt that Lightning's auto-requeue saved in the run
    dir, if any: the requeued job resumes it as Lightning itself would.
    """
    if ckpt_path is None:
        hpc = sorted(run_dir.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        return str(hpc[-1]) if hpc and SLURMEnvironment.detect() else None
    if ckpt_path == "last":
        found = sorted((run_dir / rundir.CHECKPOINTS).glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(
                f"ckpt_path=last: no last*.ckpt in {run_dir / rundir.CHECKPOINTS}; resume a run by pointing "
                "hydra.run.dir at its folder, or pass ckpt_path=/path/to/file.ckpt"
            )
        return str(found[-1])
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return ckpt_path


def hydra_record(cfg: DictConfig) -> dict[str, str]:
    """What Hydra writes into a job's .hydra/ (see rundir.HYDRA_RECORD); {} outside a Hydra job."""
    if not HydraConfig.initialized():
        return {}
    hydra = HydraConfig.get()
    return {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra}),
        "overrides.yaml": OmegaConf.to_yaml(hydra.overrides.task),
    }


def prepare_run_dir(cfg: DictConfig, run_dir: Path, ckpt_path: str | None) -> None:
    """Claim the run dir (see `rundir.claim`); a resume must use the config its checkpoint was trained with."""
    resuming = ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(run_dir.resolve())
    if rank_zero_only.rank == 0:
        aside = rundir.claim(run_dir, resuming, bool(cfg.get("overwrite")))
        if aside is not None:
            log.warning("overwrite=true: moved the previous run's files in %s to %s", run_dir, aside)
    if ckpt_path is None:
        return
    try:
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get("run_config")
    # torch's errors for a damaged or foreign file
    except (RuntimeError, OSError, pickle.UnpicklingError) as e:
        raise rundir.RunDirError(
            f"ckpt_path={cfg.ckpt_path}: {ckpt_path} is not a readable checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}): a damaged (truncated) file or not a checkpoint; pass another "
            "checkpoint, or start afresh in another folder"
        ) from e
    if saved is None:
        log.warning(
            "%s holds no run config (saved by an older fer): cannot check it matches this one", ckpt_path
        )
        return
    differences = rundir.config_differences(saved, OmegaConf.to_container(cfg, resolve=True))
    if differences:
        raise rundir.RunDirError(
            f"ckpt_path={cfg.ckpt_path}: this config differs from the one {ckpt_path} was trained with, so "
            "the resumed run would not be the same run:\n  "
            + "\n  ".join(differences)
            + "\nOnly these may change on resume: "
            + ", ".join(rundir.RESUME_FREE_KEYS)
        )


WHITENING_FACES = 2000


def build_module(cfg: DictConfig, datamodule: FERDataModule) -> FERModule:
    """The module from plain config plus what the data decides (train-split statistics, class weights,
    the filters of a patch-whitening first layer)."""
    module = FERModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        sched=OmegaConf.to_container(cfg.sched, resolve=True),
        normalization=datamodule.normalization_args,
        label_smoothing=cfg.loss.label_smoothing,
        class_weights=datamodule.class_weights if cfg.loss.class_weights else None,
        class_names=datamodule.class_names,
        input_size=cfg.aug.get("crop") or None,
    )
    if cfg.aug.get("progressive_start"):
        target = cfg.model.get("_target_", "")
        check_input_size(module.net, cfg.aug.progressive_start, target, key="aug.progressive_start")
    # 2000 faces give ~4M patches, plenty for a 9x9 covariance; a resumed run then loads the same filters.
    faces = torch.from_numpy(datamodule.faces["train"].images[:WHITENING_FACES]).unsqueeze(1)  # a view
    fit_whitening(module.net, faces, module.normalizer)
    return module


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
    last = run_dir / rundir.LAST_CKPT
    writes_last = any(
        isinstance(cb, ModelCheckpoint)
        and cb.dirpath is not None
        and (Path(cb.dirpath) / f"{cb.filename}.ckpt").resolve() == last.resolve()
        for cb in callbacks
    )
    return [*callbacks, History(run_dir), RunState(last if writes_last else None)]


def read_data(datamodule: FERDataModule) -> dict[str, Any]:
    """Read and split the data; return its notes (rows skipped, images converted) for metrics.json.

    The notes also go to the log (train.log), not only to stderr as warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        datamodule.prepare_data()
        datamodule.setup("fit")
    notes: dict[str, int] = {}  # note -> rows it skipped, each note once
    for w in caught:
        if isinstance(w.message, DataWarning):
            notes[str(w.message)] = w.message.count if isinstance(w.message, RowsSkipped) else 0
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for note in notes:
        log.warning("data: %s", note)
    return {"skipped_rows": sum(notes.values()), "notes": list(notes)}


@rank_zero_only
def save_run_files(run_dir: Path, module: FERModule, trainer: pl.Trainer, metrics: dict[str, Any]) -> None:
    write_json(run_dir / rundir.METRICS, metrics)
    figures = {}
    if metrics["test"]:
        figures["confusion"] = plot_confusion(
            metrics["test_confusion"],
            module.class_names,
            run_dir / rundir.CONFUSION_PNG,
            title=f"Test confusion ({metrics['test_split']})",
        )
    if (run_dir / rundir.HISTORY_PNG).exists():
        figures["history"] = run_dir / rundir.HISTORY_PNG
    log_images(trainer.loggers, figures)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            write_text(run_dir / "wandb_id.txt", logger.version)
            # Close the W&B run: the next run in this process (a basic-launcher sweep) starts its own.
            logger.experiment.finish()
    # This run (perhaps a resume) succeeded: an earlier attempt's error no longer describes the folder.
    (run_dir / rundir.ERROR).unlink(missing_ok=True)


def run(cfg: DictConfig) -> float | None:
    """Fit, test the best checkpoint, write the run dir; return `cfg.optimized_metric` for sweepers.

    Before any data is read: the config values are checked, and the run dir is claimed (a folder
    holding another run is refused unless resuming it, or moved aside with overwrite=true).
    """
    run_dir = Path(cfg.paths.output_dir)
    record = hydra_record(cfg)  # before validate converts any value
    # error.txt and Hydra's record go only where they cannot be mistaken for another run's.
    owned = not rundir.previous_run_files(run_dir)
    try:
        validate(cfg)
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
        prepare_run_dir(cfg, run_dir, ckpt_path)
        owned = True
        if rank_zero_only.rank == 0:
            rundir.clear_failed_start(run_dir)
            rundir.write_hydra_record(run_dir, record)
        return _run(cfg, run_dir, ckpt_path)
    except BaseException:
        if owned and rank_zero_only.rank == 0 and run_dir.is_dir():
            rundir.write_hydra_record(run_dir, record)  # a sweep's summary lists the failed job by it
            write_text(run_dir / rundir.ERROR, traceback.format_exc())
        raise


def _run(cfg: DictConfig, run_dir: Path, ckpt_path: str | None) -> float | None:
    # Durations on the monotonic clock, as the budget's: the wall clock can step mid-run (NTP).
    start = time.monotonic()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    print_config(cfg, run_dir / rundir.CONFIG)
    # Built first: a callback's clock (callbacks.run_deadline) starts with the run, data loading included.
    callbacks = build_callbacks(cfg, run_dir)

    datamodule: FERDataModule = instantiate(cfg.data, aug=OmegaConf.to_container(cfg.aug, resolve=True))
    data_notes = read_data(datamodule)
    module = build_module(cfg, datamodule)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    apply_runtime(module, **cfg.runtime)
    module.tta = run_padding(OmegaConf.to_container(cfg.tta, resolve=True), cfg.aug)
    check_tta_sizes(module, module.tta)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg, run_dir) or False
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    warn_slow_bf16(trainer)

    fit_start = time.monotonic()
    try:
        # fer's checkpoints hold plain data only: loading them never needs to run pickled code.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        state = next(cb for cb in trainer.callbacks if isinstance(cb, RunState))
        raise Interrupted(
            f"stopped by SIGTERM at epoch {trainer.current_epoch}, step {trainer.global_step}. "
            + (
                f"Resume with ckpt_path=last (same hydra.run.dir): {state.last_checkpoint()}"
                if state.last_checkpoint()
                else "No checkpoint was saved (callbacks without checkpoints)"
            )
        ) from None
    fit_time = time.monotonic() - fit_start
    value = trainer.callback_metrics.get(cfg.optimized_metric)
    history_callback = next(cb for cb in trainer.callbacks if isinstance(cb, History))
    history = history_callback.rows
    best = max(history, key=lambda r: r.get("val/acc", float("-inf")), default={})

    test: dict[str, float] = {}
    checkpoint = trainer.checkpoint_callback
    tested = None  # the snapshots the test averaged: they go with the best epoch only
    if datamodule.splits.get("test"):
        weights = "best" if checkpoint is not None and checkpoint.best_model_path else None
        if weights:
            tested = next((cb for cb in trainer.callbacks if isinstance(cb, Snapshots)), None)
        if tested is not None:
            module.snapshots = [torch.load(p, weights_only=True)["state_dict"] for p in tested.checkpoints()]
        (test,) = trainer.test(module, datamodule=datamodule, ckpt_path=weights, weights_only=True)
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
        "time_per_epoch_s": round(fit_time / max(history_callback.epochs_this_fit, 1), 3),
        "run_time_s": round(time.monotonic() - start, 2),
        "params": count_parameters(module.net),
        "best_ckpt": checkpoint.best_model_path if checkpoint is not None else None,
        # The epochs whose weights the test averaged with the best one's (callbacks.snapshots), and their files.
        "snapshots": None
        if tested is None
        else {"epochs": tested.kept, "checkpoints": [str(p) for p in tested.checkpoints()]},
        "checkpoints": rundir.checkpoint_hashes(run_dir),  # sha256, checked by analyze.py run=
        "data": data_notes,
    }
    save_run_files(run_dir, module, trainer, metrics)
    log.info("run dir: %s", run_dir)
    for name in (rundir.METRICS, rundir.HISTORY_PNG, rundir.CONFUSION_PNG, rundir.BEST_CKPT):
        if (run_dir / name).exists():
            log.info("  %s", run_dir / name)
    if test:
        log.info("test accuracy (%s): %.4f", datamodule.splits["test"], test["test/acc"])
    return None if value is None else float(value)

"""The run folder: which files a training run writes where, and the checks that keep one run per folder.

config.yaml              the resolved config of the run
checkpoints/best.ckpt    weights of the best val/acc epoch (tested, analysed by `analyze.py run=`)
checkpoints/best-prevK.ckpt  weights of the epoch K before the best (callbacks.snapshots: a snapshot ensemble)
checkpoints/last.ckpt    the whole state after the latest epoch (and at the start): `ckpt_path=last`
history.csv, history.png per-epoch metrics
metrics.json             final scores, data notes, checkpoint sha256s; wall-clock fields in TIMING_KEYS
error.txt                the traceback of a failed run (removed when a resume succeeds)
.hydra/                  Hydra's record of the job: its config, Hydra's config, its command-line overrides
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fer.files import write_text
from fer.schedules import sized_by_trainer

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
BEST = "best"  # ModelCheckpoint filenames (conf/callbacks/model_checkpoint.yaml), without .ckpt
LAST = "last"
BEST_CKPT = f"{CHECKPOINTS}/{BEST}.ckpt"
LAST_CKPT = f"{CHECKPOINTS}/{LAST}.ckpt"
# callbacks.snapshots' files, f"{SNAPSHOT}{K}.ckpt": the weights of the epoch K before the best.
SNAPSHOT = f"{BEST}-prev"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
CONFUSION_PNG = "confusion.png"
METRICS = "metrics.json"
ERROR = "error.txt"
# Hydra's record of the job (config.yaml, hydra.yaml, overrides.yaml), which the run writes itself once the
# folder is its own (`write_hydra_record`): Hydra would write it before train.py could refuse a folder that
# holds another run, over that run's record (conf/train.yaml: hydra.output_subdir: null).
HYDRA_RECORD = ".hydra"
# Hydra's log of the current job, opened (appending) before train.py starts: never the mark of an earlier run.
JOB_LOG = "train.log"
# What only a start that reached training writes (last.ckpt is saved as training begins).
TRAINED_MARKS = (CHECKPOINTS, METRICS, HISTORY_CSV)
# metrics.json fields that measure wall-clock time: they differ between otherwise identical runs.
TIMING_KEYS = ("fit_time_s", "time_per_epoch_s", "run_time_s")
# Keys a resume may change: how long to train, where to resume from, and what only shows or stores
# the run (progress bar, loggers, cache, loader processes) without changing its numbers.
RESUME_FREE_KEYS = (
    "ckpt_path",
    "overwrite",
    "trainer.max_epochs",
    "trainer.min_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "paths.",
    "logger.",
    "tags",
    "callbacks.rich_progress_bar",
    "callbacks.model_summary",
    "data.cache_dir",
    "data.num_workers",
)
# Budget keys a step-laid schedule (sched.scheduler.total_steps: null, one-cycle's or BudgetedLR's) was
# sized by when the fit started: its resumed state keeps that size, so they may no longer change.
SCHEDULE_SIZE_KEYS = ("trainer.max_epochs", "trainer.max_steps")


class RunDirError(RuntimeError):
    """A run folder or checkpoint that cannot serve as asked: the folder holds another run, a resume does not
    match its checkpoint, or a file is damaged, foreign or changed since training recorded it."""


def _left_files(run_dir: Path) -> list[str]:
    """Names in `run_dir` that an earlier attempt left: anything but Hydra's log of this job."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name != JOB_LOG)


def _failed_start(names: list[str]) -> bool:
    """An error.txt and nothing that training writes: a start that failed before its first checkpoint (a
    bad config value, data path or optimizer setting), which may have left config.yaml and a logger's
    first files but nothing to resume or keep."""
    return ERROR in names and not set(names) & set(TRAINED_MARKS)


def previous_run_files(run_dir: Path) -> list[str]:
    """Names in `run_dir` left by an earlier run; [] for a free folder: absent, empty, or holding only a
    failed start's files."""
    names = _left_files(run_dir)
    return [] if _failed_start(names) else names


def clear_failed_start(run_dir: Path) -> None:
    """Remove what a start that failed before training left (see `previous_run_files`), so that its logger
    folders do not mix with this run's."""
    left = _left_files(run_dir)
    if not _failed_start(left):
        return
    for name in left:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def claim(run_dir: Path, resuming: bool, overwrite: bool) -> Path | None:
    """Make `run_dir` this run's: refuse a folder holding another run unless resuming it, or, with
    `overwrite`, move the other run's files to a sibling folder (returned) so that two runs never mix."""
    left = previous_run_files(run_dir)
    if not left or resuming:
        return None
    if not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(left)}). To continue that run pass ckpt_path=last; "
            f"to start a new one choose another folder with hydra.run.dir=..., or pass overwrite=true to "
            f"move the old files aside"
        )
    aside = run_dir.with_name(f"{run_dir.name}.replaced-{datetime.now():%Y%m%d-%H%M%S-%f}")
    aside.mkdir()
    for name in left:
        shutil.move(run_dir / name, aside / name)
    log_file = run_dir / JOB_LOG
    if log_file.is_file():
        # Hydra appends this job's log to the old one: keep the old part with its run, start afresh here.
        shutil.copy2(log_file, aside / log_file.name)
        with log_file.open("r+") as f:
            f.truncate(0)
    return aside


def write_hydra_record(run_dir: Path, record: Mapping[str, str]) -> None:
    """Write Hydra's record of this job ({file name: text}, see HYDRA_RECORD; {}: none) into `run_dir`/.hydra/."""
    if not record:
        return
    (run_dir / HYDRA_RECORD).mkdir(parents=True, exist_ok=True)
    for name, text in record.items():
        write_text(run_dir / HYDRA_RECORD / name, text)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': leaf} for nested mappings (lists are leaves)."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    if not node and prefix:
        return {prefix: {}}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
    return out


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`key: saved -> current` for every key a resume may not change (see RESUME_FREE_KEYS and
    SCHEDULE_SIZE_KEYS)."""
    before, after = flatten(saved), flatten(current)
    sized = sized_by_trainer((saved.get("sched") or {}).get("scheduler"))
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, "<absent>"), after.get(key, "<absent>")
        if old == new:
            continue
        if sized and key in SCHEDULE_SIZE_KEYS:
            lines.append(
                f"{key}: {old!r} -> {new!r} (the schedule, {before.get('sched.scheduler._target_')}, was laid "
                "out over the fit's steps when it started, and resumes with that length)"
            )
        elif not any(
            key == free or (free.endswith(".") and key.startswith(free)) for free in RESUME_FREE_KEYS
        ):
            lines.append(f"{key}: {old!r} -> {new!r}")
    return lines


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_hashes(run_dir: Path) -> dict[str, str]:
    """{'checkpoints/best.ckpt': sha256, ...} for the run's best, snapshot and last checkpoints that exist."""
    snapshots = sorted(f"{CHECKPOINTS}/{p.name}" for p in (run_dir / CHECKPOINTS).glob(f"{SNAPSHOT}*.ckpt"))
    names = (BEST_CKPT, *snapshots, LAST_CKPT)
    return {name: sha256(run_dir / name) for name in names if (run_dir / name).is_file()}


def verify_checkpoint(run_dir: Path, ckpt: Path, name: str) -> None:
    """Raise if `ckpt` differs from the sha256 the run's metrics.json recorded for it; `name` says in the
    error which option or ensemble member gave it."""
    metrics_file = run_dir / METRICS
    if not metrics_file.is_file():
        return
    recorded = json.loads(metrics_file.read_text()).get("checkpoints", {})
    ckpt, run_dir = ckpt.resolve(), run_dir.resolve()
    key = ckpt.relative_to(run_dir).as_posix() if ckpt.is_relative_to(run_dir) else None
    if key not in recorded:
        return
    actual = sha256(ckpt)
    if actual != recorded[key]:
        raise RunDirError(
            f"{name}: {ckpt}: sha256 {actual} differs from the {recorded[key]} that {metrics_file} recorded when "
            "training ended: the file was changed or damaged since (or a resumed run is still training); "
            "retrain, or restore it from a backup"
        )

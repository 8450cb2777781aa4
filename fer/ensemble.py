"""`python analyze.py ensemble=[RUN_OR_CKPT,...]`: average the class probabilities of several checkpoints.

Members may differ in architecture and normalization (each checkpoint carries its own); each is
evaluated with the command line's `tta=`, else with the TTA its run was tested with, and in the command
line's `precision=`, else in its run's where the device computes that natively (fer.runtime). A sweep
folder gives a member per job, leaving out (with a note) the jobs that failed. The faces are the first
member's data (its test stage, or `split=`), or those of `predict=`. Writes ensemble.json (every number),
scores.csv (a row per member and one for the ensemble), predictions.csv (and submission.csv for the
course layout's unlabelled test rows).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from fer import rundir
from fer.analysis.select import (
    checkpoint_path,
    chosen_faces,
    data_config,
    load_model,
    predicts_a_path,
    prepare_output,
    stale_files,
)
from fer.files import write_csv, write_json
from fer.module import check_tta_sizes
from fer.predict import predict_proba, scores, write_prediction_files
from fer.runtime import evaluation_precision, warn_if_emulated
from fer.schema import ConfigError
from fer.summarize import error_line, job_dirs
from fer.tta import chosen_tta, tta_label

log = logging.getLogger(__name__)

SCORES = ("accuracy", "macro_f1", "balanced_accuracy")
# scores.csv's columns before the scores: which member a row is, and how it was evaluated.
MEMBER_COLUMNS = ("member", "checkpoint", "model", "normalization", "tta", "precision")
# The data keys that decide which faces a run trained on (its source, and how its val split is carved).
SPLIT_KEYS = ("path", "splits", "val_fraction", "split_seed")


def member_name(i: int, entry: str | Path) -> str:
    """How errors and notes name an ensemble member."""
    return f"ensemble member {i} ({entry})"


def member_checkpoints(entries: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The checkpoint of each entry: a checkpoint file, a run dir (its checkpoints/best.ckpt), or a sweep
    folder (every job's checkpoints/best.ckpt, in job order, skipping the jobs that failed); and a note
    per job skipped."""
    found: list[Path] = []
    notes: list[str] = []
    for entry in entries:
        path = Path(entry)
        if path.is_file():
            found.append(checkpoint_path(str(path), None, member_name(len(found), path)))
        elif path.is_dir() and not (path / rundir.CHECKPOINTS).is_dir() and job_dirs(path):
            found += _sweep_checkpoints(path, len(found), notes)
        elif path.is_dir():
            found.append(checkpoint_path(None, str(path), member_name(len(found), path)))
        else:
            raise FileNotFoundError(
                f"{member_name(len(found), entry)}: no checkpoint file, run folder or sweep folder"
            )
    _refuse_duplicates(found, entries)
    return found, notes


def _sweep_checkpoints(sweep: Path, first: int, notes: list[str]) -> list[Path]:
    """The checkpoints of the jobs of `sweep` (members `first`, `first` + 1, ...) but for the jobs that
    failed (an error.txt and no best.ckpt), each left out with a note in `notes` and the log."""
    found, failed = [], []
    for job in job_dirs(sweep):
        if (job / rundir.ERROR).is_file() and not (job / rundir.BEST_CKPT).is_file():
            failed.append(f"job {job.name}: {error_line(job)}")
        else:
            found.append(checkpoint_path(None, str(job), member_name(first + len(found), job)))
    if not found:
        raise FileNotFoundError(
            f"ensemble: no job of the sweep folder {sweep} is usable, every one failed "
            f"({'; '.join(failed)}); see each job's error.txt"
        )
    for line in failed:
        notes.append(f"The sweep {sweep} left out its failed {line}")
        log.warning("%s", notes[-1])
    return found


def _refuse_duplicates(found: list[Path], entries: Sequence[str]) -> None:
    """Raise if two members are one checkpoint file (two spellings of a path, or a link to it)."""
    first: dict[Path, int] = {}
    for i, ckpt in enumerate(found):
        j = first.setdefault(ckpt.resolve(), i)
        if j != i:
            raise ConfigError(
                f"ensemble: {member_name(j, found[j])} and {member_name(i, ckpt)} are one checkpoint, "
                f"{ckpt.resolve()}, named twice (in ensemble={list(entries)}): name it once"
            )


def _other_split_note(name: str, trained: Mapping[str, Any], faces: Mapping[str, Any]) -> str | None:
    """A note when member `name`, trained with data config `trained`, may have trained on some of the faces
    scored, those of the first member's data config `faces` (another source, or splits carved otherwise)."""
    differing = [f"data.{k}={trained.get(k)!r}" for k in SPLIT_KEYS if trained.get(k) != faces.get(k)]
    if not differing:
        return None
    return (
        f"{name[0].upper()}{name[1:]} was trained with {', '.join(differing)}; the faces are those of "
        f"{', '.join(f'data.{k}={faces.get(k)!r}' for k in SPLIT_KEYS)}: some may be faces it trained on."
    )


def _predicted_path_note(name: str, trained: Mapping[str, Any], predict: str, labelled: bool) -> str | None:
    """A note when member `name` may have trained on some of the faces that predict=`predict` (a data path)
    gives: only when it trained on that very data, and only its labelled rows can be training faces."""
    if not (labelled and _same_data(trained.get("path"), predict)):
        return None
    return (
        f"{name[0].upper()}{name[1:]} was trained on data.path={trained.get('path')!r}, the data that "
        f"predict={predict} reads: some of the labelled faces predicted may be faces it trained on."
    )


def _same_data(a: str | None, b: str) -> bool:
    """Whether data paths or addresses `a` and `b` name the same data."""
    if a is None or "://" in a or "://" in b:
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def ensemble(cfg: DictConfig) -> Path:
    """Evaluate (or predict with) the mean of the members' probabilities; return the output folder."""
    if cfg.get("ckpt") or cfg.get("run"):
        raise ConfigError("ensemble= names its members itself: pass no ckpt= or run=")
    entries = cfg.ensemble
    entries = [str(e) for e in (entries if isinstance(entries, (list, ListConfig)) else [entries])]
    if not any(entries):
        raise ConfigError(
            f"ensemble={cfg.ensemble!r} names no member: list checkpoint files, run folders or sweep "
            "folders, e.g. ensemble=[outputs/run_a,outputs/run_b]"
        )
    ckpts, notes = member_checkpoints(entries)
    predicting = bool(cfg.get("predict"))
    given_tta = OmegaConf.to_container(cfg.tta, resolve=True) if cfg.get("tta") else None

    # Every member loads before any is evaluated: one that cannot fails in seconds, not after the others'
    # minutes of TTA.
    who = [member_name(i, ckpt) for i, ckpt in enumerate(ckpts)]
    models = [load_model(ckpt, cfg.device, name) for ckpt, name in zip(ckpts, who)]
    ttas = [chosen_tta(given_tta, model.run_config) for model in models]
    warn_if_emulated(cfg.get("precision"), models[0].device)  # the members share cfg.device
    precisions = [evaluation_precision(cfg.get("precision"), m.run_config, m.device) for m in models]
    for name, model, tta in zip(who, models, ttas):
        check_tta_sizes(model, tta, name)
    names = models[0].class_names
    for name, model in zip(who[1:], models[1:]):
        if model.class_names != names:
            raise ConfigError(f"{name} has classes {model.class_names}, {who[0]} has {names}")
    data = data_config(models[0].run_config, cfg.data, who[0])
    faces, selection = chosen_faces(data, cfg, who[0])
    labels = torch.from_numpy(faces.labels)
    labelled = bool((labels >= 0).any())
    default = Path(cfg.paths.log_dir) / "ensemble" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out = Path(cfg.out) if cfg.get("out") else default
    stale = stale_files(out)

    members, member_probs = [], []
    predicted_path = str(cfg.predict) if predicting and predicts_a_path(str(cfg.predict)) else None
    faces_config = OmegaConf.to_container(data, resolve=True)
    for i, (ckpt, model, name, tta, precision) in enumerate(zip(ckpts, models, who, ttas, precisions)):
        trained = (model.run_config or {}).get("data") or {}
        if predicted_path is None:
            note = _other_split_note(name, trained, faces_config)
        else:
            note = _predicted_path_note(name, trained, predicted_path, labelled)
        notes += [note] if note else []
        probs = predict_proba(model, faces.images, cfg.analysis.batch_size, tta, precision)
        member_probs.append(probs)
        members.append(
            {
                "member": str(i),
                "checkpoint": str(ckpt),
                "model": model.hparams.model["_target_"].rsplit(".", 1)[-1],
                "normalization": model.normalizer.mode,
                "tta": tta,
                "precision": precision,
                **(scores(probs, labels) if labelled else {}),
            }
        )
    probs = torch.stack(member_probs).mean(dim=0)
    result = dict.fromkeys(MEMBER_COLUMNS, "") | {"member": "ensemble"}
    result |= scores(probs, labels) if labelled else {}

    prepare_output(out, stale)
    files = write_prediction_files(out, faces, probs, names)
    rows = [{**m, "tta": tta_label(m["tta"])} for m in members]
    write_csv(out / "scores.csv", [*rows, result], [*MEMBER_COLUMNS, *(SCORES if labelled else ())])
    report: dict[str, Any] = {
        "mode": "predict" if predicting else "analyze",
        "written": datetime.now().isoformat(timespec="seconds"),
        "data": {
            "source": faces.source,
            "what": selection,
            "rows": len(faces),
            "labelled": int((labels >= 0).sum()),
        },
        "tta": given_tta,
        "members": members,
        "ensemble": {k: result[k] for k in SCORES if k in result},
        "notes": notes if labelled else [*notes, "No labels: no scores are computed."],
        "files": {**files, "scores": "scores.csv"},
    }
    if labelled:
        best = max(members, key=lambda m: m["accuracy"])
        report["best_member"] = {"member": best["member"], "accuracy": best["accuracy"]}
        report["gain_over_best_member"] = result["accuracy"] - best["accuracy"]
    write_json(out / "ensemble.json", report)
    log.info("ensemble of %d (%s): %s", len(ckpts), selection, out)
    if labelled:
        log.info("accuracy %.4f (best member %.4f)", result["accuracy"], report["best_member"]["accuracy"])
    return out

"""`python analyze.py ensemble=[RUN_OR_CKPT,...]`: average the class probabilities of several checkpoints.

Members may differ in architecture and normalization (each checkpoint carries its own); each is
evaluated with the command line's `tta=`, else with the TTA its run was tested with. The faces are the
first member's data (its test stage, or `split=`, or `predict=`). Writes ensemble.json (every number),
scores.csv (a row per member and one for the ensemble), predictions.csv (and submission.csv for the
course layout's unlabelled test rows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from fer.analysis.select import checkpoint_path, data_config, evaluation_faces, load_model, prediction_faces
from fer.files import write_csv, write_json
from fer.predict import predict_proba, scores, write_prediction_files
from fer.summarize import job_dirs
from fer.tta import chosen_tta, tta_label

log = logging.getLogger(__name__)

SCORES = ("accuracy", "macro_f1", "balanced_accuracy")
# The data keys that decide which faces a run trained on (its source, and how its val split is carved).
SPLIT_KEYS = ("path", "splits", "val_fraction", "split_seed")


def member_name(i: int, entry: str | Path) -> str:
    """How errors and notes name an ensemble member."""
    return f"ensemble member {i} ({entry})"


def member_checkpoints(entries: Sequence[str]) -> list[Path]:
    """The checkpoint of each entry: a checkpoint file, a run dir (its checkpoints/best.ckpt), or a sweep
    folder (every job's checkpoints/best.ckpt, in job order)."""
    found: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_file():
            found.append(checkpoint_path(str(path), None, member_name(len(found), path)))
        elif path.is_dir() and not (path / "checkpoints").is_dir() and job_dirs(path):
            for job in job_dirs(path):
                found.append(checkpoint_path(None, str(job), member_name(len(found), job)))
        elif path.is_dir():
            found.append(checkpoint_path(None, str(path), member_name(len(found), path)))
        else:
            raise FileNotFoundError(
                f"{member_name(len(found), entry)}: no checkpoint file, run folder or sweep folder"
            )
    if len(set(found)) != len(found):
        raise ValueError(f"ensemble: a checkpoint is named twice: {[str(p) for p in found]}")
    return found


def ensemble(cfg: DictConfig) -> Path:
    """Evaluate (or predict with) the mean of the members' probabilities; return the output folder."""
    if cfg.get("ckpt") or cfg.get("run"):
        raise ValueError("ensemble= names its members itself: pass no ckpt= or run=")
    entries = cfg.ensemble
    entries = list(entries) if isinstance(entries, (list, ListConfig)) else [entries]
    ckpts = member_checkpoints([str(e) for e in entries])
    predicting = bool(cfg.get("predict"))
    given_tta = OmegaConf.to_container(cfg.tta, resolve=True) if cfg.get("tta") else None

    # Every member loads before any is evaluated: one that cannot fails in seconds, not after the others'
    # minutes of TTA.
    who = [member_name(i, ckpt) for i, ckpt in enumerate(ckpts)]
    models = [load_model(ckpt, cfg.device, name) for ckpt, name in zip(ckpts, who)]
    names = models[0].class_names
    for name, model in zip(who[1:], models[1:]):
        if model.class_names != names:
            raise ValueError(f"{name} has classes {model.class_names}, {who[0]} has {names}")
    data = data_config(models[0].run_config, cfg.data, who[0])
    if predicting:
        faces, selection = prediction_faces(data, str(cfg.predict), cfg.get("split"), cfg.paths.cache_dir)
    else:
        faces, selection = evaluation_faces(data, cfg.get("split"))
    labels = torch.from_numpy(faces.labels)
    labelled = bool((labels >= 0).any())

    members, member_probs, notes = [], [], []
    faces_config = OmegaConf.to_container(data, resolve=True)
    for i, (ckpt, model, name) in enumerate(zip(ckpts, models, who)):
        trained = (model.run_config or {}).get("data") or {}
        differing = [
            f"data.{k}={trained.get(k)!r}" for k in SPLIT_KEYS if trained.get(k) != faces_config.get(k)
        ]
        if differing:
            notes.append(
                f"{name[0].upper()}{name[1:]} was trained with {', '.join(differing)}; the faces are those of "
                f"{', '.join(f'data.{k}={faces_config.get(k)!r}' for k in SPLIT_KEYS)}: some may be faces it "
                "trained on."
            )
        tta = chosen_tta(given_tta, model.run_config)
        probs = predict_proba(model, faces.images, cfg.analysis.batch_size, tta)
        member_probs.append(probs)
        members.append(
            {
                "member": str(i),
                "checkpoint": str(ckpt),
                "model": model.hparams.model["_target_"].rsplit(".", 1)[-1],
                "normalization": model.normalizer.mode,
                "tta": tta,
                **(scores(probs, labels) if labelled else {}),
            }
        )
    probs = torch.stack(member_probs).mean(dim=0)
    result = {"member": "ensemble", "checkpoint": "", "model": "", "normalization": "", "tta": ""}
    result |= scores(probs, labels) if labelled else {}

    default = Path(cfg.paths.log_dir) / "ensemble" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out = Path(cfg.out) if cfg.get("out") else default
    out.mkdir(parents=True, exist_ok=True)
    files = write_prediction_files(out, faces, probs, names)
    columns = ["member", "checkpoint", "model", "normalization", "tta", *(SCORES if labelled else ())]
    rows = [{**m, "tta": tta_label(m["tta"])} for m in members]
    write_csv(out / "scores.csv", [*rows, result], columns)
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

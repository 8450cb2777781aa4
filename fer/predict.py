"""Class probabilities of a model for a set of faces, the scores where labels exist, and the CSVs to hand in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from fer.data.faceset import FaceSet
from fer.files import write_csv
from fer.interpret.attribution import as_input, eval_mode, model_device
from fer.runtime import autocast
from fer.tta import tta_log_probs


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images: np.ndarray | Tensor,
    batch_size: int = 256,
    tta: Mapping[str, Any] | None = None,
    precision: str = "32-true",
) -> Tensor:
    """Float32 softmax probabilities (N, classes) on the CPU for pixel-valued faces (N, 48, 48), averaged over
    the test-time augmentation views of `tta` (a conf/tta/ node; None: one view), the forward passes in
    `precision` (fer.runtime.EVALUATION_PRECISIONS)."""
    images = torch.as_tensor(images)
    device = model_device(model)
    with eval_mode(model), autocast(precision, device):
        parts = [
            tta_log_probs(model, as_input(images[lo : lo + batch_size], device), tta).exp().cpu()
            for lo in range(0, len(images), batch_size)
        ]
    return torch.cat(parts)


def scores(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy, macro-F1 and balanced accuracy over the labelled rows (label >= 0), as in training's test/ metrics."""
    known = labels >= 0
    preds, targets, n = probs[known].argmax(dim=1), labels[known], probs.shape[1]
    return {
        "accuracy": multiclass_accuracy(preds, targets, n, average="micro").item(),
        "macro_f1": multiclass_f1_score(preds, targets, n, average="macro").item(),
        "balanced_accuracy": multiclass_accuracy(preds, targets, n, average="macro").item(),
    }


def write_predictions(path: str | Path, faces: FaceSet, probs: Tensor, class_names: Sequence[str]) -> Path:
    """One row per face: id, split, true label (blank if unknown), predicted label and name, a probability per class."""
    prob_columns = [f"prob_{name}" for name in class_names]
    preds = probs.argmax(dim=1).tolist()
    rows = [
        {
            "id": faces.ids[i],
            "split": faces.split[i],
            "true_label": "" if faces.labels[i] < 0 else int(faces.labels[i]),
            "pred_label": preds[i],
            "pred_name": class_names[preds[i]],
            **{col: f"{p:.6f}" for col, p in zip(prob_columns, probs[i].tolist())},
        }
        for i in range(len(faces))
    ]
    return write_csv(path, rows, ["id", "split", "true_label", "pred_label", "pred_name", *prob_columns])


def submission_rows(faces: FaceSet) -> np.ndarray:
    """Rows of the course layout's unlabelled test.csv (the faces a Kaggle-style submission answers for)."""
    if faces.layout != "course":
        return np.zeros(len(faces), dtype=bool)
    return (faces.split == "test") & (faces.labels < 0)


def write_submission(path: str | Path, ids: Sequence[str], preds: Sequence[int]) -> Path:
    """Kaggle-style `id,label`."""
    return write_csv(path, [{"id": i, "label": int(p)} for i, p in zip(ids, preds)], ["id", "label"])


def write_prediction_files(
    out: Path, faces: FaceSet, probs: Tensor, class_names: Sequence[str]
) -> dict[str, str]:
    """predictions.csv, plus submission.csv when `faces` hold the course layout's unlabelled test rows;
    returns the file names written, by key (an earlier analysis's submission.csv is removed with its
    other files: fer.analysis.select.prepare_output)."""
    write_predictions(out / "predictions.csv", faces, probs, class_names)
    files = {"predictions": "predictions.csv"}
    rows = submission_rows(faces)
    if rows.any():
        write_submission(
            out / "submission.csv", faces.ids[rows], probs[torch.from_numpy(rows)].argmax(dim=1).tolist()
        )
        files["submission"] = "submission.csv"
    return files

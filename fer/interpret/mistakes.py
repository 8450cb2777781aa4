"""A classifier's mistakes: per-class scores, confusions, confident mistakes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


def per_class_report(
    preds: Tensor, targets: Tensor, class_names: Sequence[str]
) -> list[dict[str, float | int | str]]:
    """One row per class: class, precision, recall, f1, support (classes never predicted score 0)."""
    n = len(class_names)
    scores = {
        name: fn(preds, targets, num_classes=n, average=None).tolist()
        for name, fn in (
            ("precision", multiclass_precision),
            ("recall", multiclass_recall),
            ("f1", multiclass_f1_score),
        )
    }
    support = torch.bincount(targets, minlength=n).tolist()
    return [
        {"class": name, **{metric: values[i] for metric, values in scores.items()}, "support": support[i]}
        for i, name in enumerate(class_names)
    ]


def confusion(preds: Tensor, targets: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Confusion counts (true rows, predicted columns) and the same divided by each row's total (0 for empty rows)."""
    counts = multiclass_confusion_matrix(preds, targets, num_classes=num_classes)
    return counts, counts / counts.sum(1, keepdim=True).clamp(min=1)


def most_confused_pairs(counts: Tensor, class_names: Sequence[str], k: int = 5) -> list[str]:
    """The k largest off-diagonal confusions by share of the true class, e.g. "Fear -> Sad: 14% of Fear (70/500)".

    Ranked by share rather than count so that small classes (Disgust) are not drowned out; ties by count.
    """
    totals = counts.sum(1)
    pairs = [
        (counts[t, p].item() / totals[t].item(), counts[t, p].item(), t, p)
        for t in range(len(class_names))
        for p in range(len(class_names))
        if t != p and counts[t, p] > 0
    ]
    pairs.sort(key=lambda pair: (pair[0], pair[1]), reverse=True)
    return [
        f"{class_names[t]} -> {class_names[p]}: {share:.0%} of {class_names[t]} ({n}/{totals[t].item()})"
        for share, n, t, p in pairs[:k]
    ]


def most_confident_mistakes(probs: Tensor, targets: Tensor, k: int) -> Tensor:
    """Indices of the (at most) k wrong predictions with the highest predicted probability, most confident first."""
    confidence, preds = probs.max(dim=1)
    wrong = torch.nonzero(preds != targets).flatten()
    order = confidence[wrong].argsort(descending=True, stable=True)
    return wrong[order[:k]]

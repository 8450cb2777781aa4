"""The report's scores section: accuracy and macro-F1, per-class scores, the confusion matrix, the most
confused pairs and the most confident mistakes of the labelled rows."""

from __future__ import annotations

import torch
from torch import Tensor

from fer.analysis.record import Analysis
from fer.files import write_csv
from fer.interpret.figures import face_label, plot_faces
from fer.interpret.mistakes import confusion, most_confident_mistakes, most_confused_pairs, per_class_report
from fer.plots import plot_confusion
from fer.predict import scores


def add_scores(analysis: Analysis, probs: Tensor) -> None:
    """Score the faces' labelled rows from their class probabilities `probs` (N,K); per_class.csv,
    confusion.png and mistakes.png are queued with the other files."""
    faces, names, settings = analysis.faces, analysis.model.class_names, analysis.settings
    labels = torch.from_numpy(faces.labels)
    known = labels >= 0
    if not known.any():
        analysis.note("No labels: accuracy, confusion matrix and mistakes are not computed.")
        return
    probs, labels, index = probs[known], labels[known], torch.nonzero(known).flatten()
    preds = probs.argmax(dim=1)
    results = analysis.results
    results["metrics"] = scores(probs, labels)
    results["per_class"] = per_class_report(preds, labels, names)
    analysis.file(
        "per_class",
        "per_class.csv",
        lambda path: write_csv(path, results["per_class"], ["class", "precision", "recall", "f1", "support"]),
    )
    counts, _ = confusion(preds, labels, len(names))
    results["confusion"] = counts.tolist()
    results["most_confused"] = most_confused_pairs(counts, names, settings.confused_pairs)
    mistakes = most_confident_mistakes(probs, labels, settings.mistakes)
    results["mistakes"] = [
        {
            "id": str(faces.ids[index[i]]),
            "true": names[int(labels[i])],
            "pred": names[int(preds[i])],
            "prob": probs[i, preds[i]].item(),
        }
        for i in mistakes.tolist()
    ]
    rows = f"{results['data']['what']} of {results['data']['source']}"
    analysis.file(
        "confusion",
        "confusion.png",
        lambda path: plot_confusion(counts.numpy(), names, path, title=f"Confusion on {rows}"),
    )
    shown = torch.from_numpy(faces.images[index[mistakes].numpy()])
    titles = [
        face_label(names, int(labels[i]), int(preds[i]), probs[i, preds[i]].item()) for i in mistakes.tolist()
    ]
    analysis.file(
        "mistakes",
        "mistakes.png",
        lambda path: plot_faces(shown, titles, path, title=f"Most confident mistakes ({len(titles)})"),
    )

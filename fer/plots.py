"""Figures a run writes: training curves and the confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs write files; no display on clusters or CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from fer.files import atomic_path


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write atomically (`fer.files.atomic_path`), so no half-written PNG is ever left."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def plot_history(history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train against validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [row["epoch"] for row in history]
    for ax, metric in zip(axes, ("loss", "acc")):
        for stage, style in (("train", "-o"), ("val", "-s")):
            values = [row.get(f"{stage}/{metric}", np.nan) for row in history]
            ax.plot(epochs, values, style, markersize=3, label=stage)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy" if metric == "acc" else "cross-entropy loss")
        ax.set_title(f"{'Accuracy' if metric == 'acc' else 'Loss'}: train vs validation")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_confusion(counts: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Counts and row-normalised rates side by side, true class on rows."""
    counts = np.asarray(counts)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 5.4), gridspec_kw={"wspace": 0.35})
    panels = (
        (axes[0], counts, "counts", "d", max(counts.max(), 1)),
        (axes[1], rates, "share of true class", ".2f", 1),
    )
    for ax, matrix, name, fmt, vmax in panels:
        # Rates share one 0..1 scale so figures of different runs compare at a glance.
        im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        threshold = vmax / 2
        for i, j in np.ndindex(matrix.shape):
            ax.text(
                j,
                i,
                format(matrix[i, j], fmt),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if matrix[i, j] > threshold else "black",
            )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)

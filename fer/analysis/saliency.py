"""The report's saliency section: attribution maps of class-balanced faces, their measures with
intervals, and each method's verdict."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fer.analysis.record import Analysis
from fer.interpret.attribution import attribute, guidable
from fer.interpret.evaluation import evaluate_methods
from fer.interpret.figures import face_label, pick_per_class, plot_saliency
from fer.interpret.layers import layer_by_name

CAM_METHODS = ("gradcam", "hirescam")


def unguided(methods: Sequence[str], model: torch.nn.Module) -> bool:
    """Whether `methods` asks for Guided Backprop of a model with no ReLU to guide."""
    return "guided_backprop" in methods and not guidable(model)


def usable_methods(methods: Sequence[str], cam_layer: str | None, model: torch.nn.Module) -> list[str]:
    """`methods` without the CAM ones when there is no layer to take a CAM of, and without Guided Backprop
    when the model has no ReLU to guide."""
    left_out = (CAM_METHODS if cam_layer is None else ()) + (
        ("guided_backprop",) if unguided(methods, model) else ()
    )
    return [m for m in methods if m not in left_out]


UNGUIDABLE = (
    "The model has no ReLU or LeakyReLU (a SELU, GELU or SiLU net has none), the only units Guided "
    "Backprop guides: it is left out."
)


def add_saliency(analysis: Analysis, probs: Tensor, targets: Tensor, cam_layer: str | None) -> None:
    """Attribution maps for the class `targets` gives each face, their measures and verdicts.

    The grid's rows are the first `per_class` faces of each class; the measures run on the first
    `metric_per_class` of each class (all of a class that has fewer), the grid's rows among them.
    """
    model, faces, settings, seed = analysis.model, analysis.faces, analysis.settings, analysis.seed
    names = model.class_names
    methods = usable_methods(settings.methods, cam_layer, model)
    if unguided(settings.methods, model):
        analysis.note(UNGUIDABLE)
    layer = layer_by_name(model, cam_layer) if cam_layer else None
    rows = len(pick_per_class(targets, settings.per_class))
    index = pick_per_class(targets, max(settings.per_class, settings.metric_per_class))
    images = torch.from_numpy(faces.images[index.numpy()]).unsqueeze(1)
    chosen = targets[index]
    attribution = dict(settings.attribution) | {"noise_seed": seed}
    maps = {m: attribute(model, images, chosen, m, layer, **attribution) for m in methods}
    saliency = analysis.results["saliency"] = {
        "methods": methods,
        "rows": [str(faces.ids[i]) for i in index[:rows].tolist()],
        "cam_layer": cam_layer,
    }
    unreliable = {}
    if settings.metric_per_class:
        masks = None if faces.masks is None else torch.from_numpy(faces.masks[index.numpy()])
        if masks is None:
            analysis.note(
                "The data has no ground-truth masks (only synthetic faces do): pointing game and mass "
                "inside are left out; the verdicts rest on deletion and randomisation."
            )
        measures = evaluate_methods(
            model,
            images,
            chosen,
            masks,
            methods,
            layer,
            steps=settings.deletion_steps,
            seed=seed,
            attribution=attribution,
            maps=maps,
            thresholds=settings.verdict,
        )
        saliency |= {
            "metric_images": len(index),
            "metric_classes": {names[c]: int((chosen == c).sum()) for c in chosen.unique().tolist()},
            "metrics": measures,
        }
        unreliable = {m: row["verdict"]["failed"] for m, row in measures.items() if row["verdict"]["failed"]}
    preds = probs[index[:rows]].argmax(dim=1)
    labels = [
        face_label(names, int(faces.labels[i]), int(p), probs[i, p].item())
        for i, p in zip(index[:rows].tolist(), preds.tolist())
    ]
    grid = {m: maps[m][:rows] for m in methods}
    explained = "true" if (faces.labels[index[:rows].numpy()] >= 0).all() else "predicted"
    analysis.file(
        "saliency",
        "saliency.png",
        lambda path: plot_saliency(
            images[:rows],
            grid,
            labels,
            path,
            title=f"Attribution maps for the {explained} class",
            unreliable=unreliable,
        ),
    )

"""The report's filter sections: per layer, activation maximization (AM), the best real faces of each
filter, dead filters and feature maps; the layers side by side; and class visualization. The plain
functions here serve the training callback (fer.callbacks.interpret) too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fer.analysis.record import Analysis
from fer.interpret.activation_max import dead_filters, maximize_activation, maximize_class
from fer.interpret.features import feature_maps, top_exemplars
from fer.interpret.figures import plot_classes, plot_exemplars, plot_feature_maps, plot_filters, plot_layers
from fer.interpret.layers import TruncatedModel, layer_by_name
from fer.predict import predict_proba


@dataclass
class FilterExemplars:
    """What real faces show of a layer's first filters."""

    maps: Tensor  # the layer's output for one face: (C,h,w), or (C,) for a layer without spatial maps
    channels: list[int]  # the filters studied
    index: Tensor  # (C,k) pool indices of each filter's most activating faces, best first
    top: Tensor  # (C,k) their activations
    dead: list[int]  # filters that no face of the pool activates


def filter_exemplars(
    truncated: nn.Module, layer: nn.Module, pool: Tensor, face: Tensor, filters: int, k: int
) -> FilterExemplars:
    """The first `filters` filters of `layer`, each one's `k` best faces of `pool`, the pool's dead
    filters and the feature maps of `face`; `truncated` runs the model only as far as `layer`."""
    maps = feature_maps(truncated, layer, face)
    channels = list(range(min(filters, len(maps))))
    index, top = top_exemplars(truncated, layer, pool, channels, k=k)
    return FilterExemplars(maps, channels, index, top, dead_filters(truncated, layer, pool).tolist())


@dataclass
class ClassImages:
    """Class visualization: per class, the input maximising its logit beside the real face that does."""

    images: Tensor  # (K,H,W) the synthetic inputs
    logits: Tensor  # (K,) the logits they reach
    best_index: Tensor  # (K,) pool index of the face with the highest logit of each class
    best_faces: Tensor  # (K,H,W) those faces
    best_logits: Tensor  # (K,) their logits


def class_images(model: nn.Module, pool: Tensor, am: Mapping[str, Any], seed: int = 0) -> ClassImages:
    """Class visualization of `model`'s classes, with `maximize_activation`'s options `am`."""
    classes = list(range(len(model.class_names)))
    images, logits = maximize_class(model, classes, seed=seed, **am)
    index, best = top_exemplars(model, model, pool, classes, k=1)
    return ClassImages(images, logits, index[:, 0], pool[index[:, 0], 0], best[:, 0])


def plot_class_images(found: ClassImages, names: Sequence[str], path: Path, title: str) -> Path:
    return plot_classes(found.images, found.logits, found.best_faces, found.best_logits, names, path, title)


def add_layers(analysis: Analysis, layers: Sequence[str], pool: Tensor) -> None:
    """Each layer's filters (`_add_layer`), then the layers side by side: AM beside the best real faces
    of the first `side_by_side` filters."""
    shown = {}
    for name in layers:
        found, synthetic, reached = _add_layer(analysis, name, pool)
        n = analysis.settings.side_by_side
        index = found.index[:n, :3]
        shown[name] = (synthetic[:n], reached[:n], pool[index].squeeze(2), found.top[:n, :3])
    if shown and analysis.settings.side_by_side:
        analysis.file(
            "layers",
            "layers.png",
            lambda path: plot_layers(
                shown, path, title="Activation maximization (AM) beside the best real faces, layer by layer"
            ),
        )


def _add_layer(analysis: Analysis, name: str, pool: Tensor) -> tuple[FilterExemplars, Tensor, Tensor]:
    """AM, best real faces, dead filters and feature maps of layer `name`; returns the exemplars, the AM
    images (C,H,W) and the activations they reach (C,)."""
    model, faces, settings, timer = analysis.model, analysis.faces, analysis.settings, analysis.timer
    layer = layer_by_name(model, name)
    truncated = TruncatedModel(model, layer)
    face = min(settings.feature_map_image, len(pool) - 1)
    with timer("exemplars"):
        found = filter_exemplars(truncated, layer, pool, pool[face], settings.filters, settings.exemplars)
    with timer("activation_max"):
        synthetic, reached = maximize_activation(
            truncated, layer, found.channels, seed=analysis.seed, **settings.am
        )
    files = {"filters": f"filters_{name}.png", "exemplars": f"exemplars_{name}.png"}
    analysis.results.setdefault("filters", {})[name] = {
        "num_channels": len(found.maps),
        "pool": len(pool),
        "channels": found.channels,
        "reached": reached.tolist(),
        "dataset_max": found.top[:, 0].tolist(),
        # the share of the analysed filters whose AM image beats every real face of the pool
        "reached_fraction": (reached >= found.top[:, 0]).float().mean().item(),
        "dead": found.dead,
        "exemplars": {
            str(c): [str(faces.ids[i]) for i in row] for c, row in zip(found.channels, found.index.tolist())
        },
        "files": files,
    }
    analysis.file(
        f"filters_{name}",
        files["filters"],
        lambda path: plot_filters(
            synthetic,
            found.channels,
            reached,
            found.top[:, 0],
            set(found.dead),
            path,
            title=f"{name}: activation maximization (activation reached vs best real image)",
        ),
    )
    analysis.file(
        f"exemplars_{name}",
        files["exemplars"],
        lambda path: plot_exemplars(
            pool[found.index].squeeze(2),
            found.channels,
            found.top,
            path,
            title=f"{name}: top real images per filter",
        ),
    )
    if found.maps.dim() == 3:
        files["feature_maps"] = f"feature_maps_{name}.png"
        shown = min(settings.feature_maps, len(found.maps))
        analysis.file(
            f"feature_maps_{name}",
            files["feature_maps"],
            lambda path: plot_feature_maps(
                pool[face],
                found.maps[: settings.feature_maps],
                path,
                title=f"{name}: feature maps of one face (first {shown} channels)",
                image_title=str(faces.ids[face]),
            ),
        )
    else:
        analysis.note(f"{name} outputs no spatial maps: its feature maps are not drawn.")
    return found, synthetic, reached


def add_classes(analysis: Analysis, pool: Tensor) -> None:
    """Class visualization, with each image's logit and probability beside the best real face's logit."""
    model, names = analysis.model, analysis.model.class_names
    found = class_images(model, pool, analysis.settings.am, seed=analysis.seed)
    probability = predict_proba(model, found.images)[torch.arange(len(names)), list(range(len(names)))]
    analysis.results["classes"] = {
        name: {
            "logit": found.logits[c].item(),
            "probability": probability[c].item(),
            "best_real_logit": found.best_logits[c].item(),
            "best_real_id": str(analysis.faces.ids[int(found.best_index[c])]),
        }
        for c, name in enumerate(names)
    }
    analysis.file(
        "classes",
        "classes.png",
        lambda path: plot_class_images(
            found,
            names,
            path,
            "Class visualization: the input that maximises each class's logit, beside the best real face",
        ),
    )

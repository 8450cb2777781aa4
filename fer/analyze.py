"""`python analyze.py`: evaluate a checkpoint on a split, explain it, or predict a data set with it.

Everything goes into one folder: confusion.png, per_class.csv, mistakes.png, saliency.png,
filters_<layer>.png, exemplars_<layer>.png, feature_maps_<layer>.png, analysis.json (every number) and
report.html (the page that shows them); in predict mode predictions.csv (and submission.csv).
"""

from __future__ import annotations

import importlib
import logging
import pickle
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from fer import rundir
from fer.data import read_dataset
from fer.data.datamodule import STAGES
from fer.data.faceset import FaceSet
from fer.files import write_csv, write_json
from fer.interpret.activation_max import dead_filters, maximize_activation, maximize_class
from fer.interpret.attribution import METHODS, attribute
from fer.interpret.evaluation import evaluate_methods
from fer.interpret.features import feature_maps, top_exemplars
from fer.interpret.figures import (
    face_label,
    pick_per_class,
    plot_classes,
    plot_exemplars,
    plot_faces,
    plot_feature_maps,
    plot_filters,
    plot_layers,
    plot_saliency,
)
from fer.interpret.layers import TruncatedModel, conv_layers, layer_by_name
from fer.interpret.layers import cam_layer as default_cam_layer
from fer.interpret.mistakes import confusion, most_confident_mistakes, most_confused_pairs, per_class_report
from fer.module import FERModule
from fer.plots import plot_confusion
from fer.predict import predict_proba, scores, write_prediction_files
from fer.report import write_report
from fer.runtime import apply_runtime
from fer.tta import chosen_tta

log = logging.getLogger(__name__)

CAM_METHODS = ("gradcam", "hirescam")


class Timer:
    """Wall and CPU seconds per named part (CPU time counts every thread: it shows contention)."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            spent = self.parts.setdefault(part, {"wall_s": 0.0, "cpu_s": 0.0})
            spent["wall_s"] += time.perf_counter() - wall
            spent["cpu_s"] += time.process_time() - cpu


def checkpoint_path(ckpt: str | None, run: str | None) -> Path:
    """The checkpoint that `ckpt=` names, or `run=`'s checkpoints/best.ckpt; errors say what is missing where."""
    if ckpt and run:
        raise ValueError(f"pass ckpt=PATH or run=RUN_DIR, not both (got ckpt={ckpt} run={run})")
    if run:
        folder = Path(run) / "checkpoints"
        if not Path(run).is_dir():
            raise FileNotFoundError(f"run={run}: no such run folder")
        if not (folder / "best.ckpt").is_file():
            found = sorted(p.name for p in folder.glob("*.ckpt"))
            hint = (
                f"it has {', '.join(found)}: pass ckpt={folder / found[0]}"
                if found
                else "the run saved no checkpoints (callbacks=none saves none, and a run that failed early neither)"
            )
            raise FileNotFoundError(f"run={run}: no {folder / 'best.ckpt'}; {hint}")
        rundir.verify_checkpoint(Path(run), folder / "best.ckpt")  # against metrics.json's sha256
        return folder / "best.ckpt"
    if ckpt:
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"ckpt={ckpt}: no such checkpoint file")
        return Path(ckpt)
    raise ValueError(
        "nothing to analyse: pass ckpt=PATH.ckpt, run=RUN_DIR (uses RUN_DIR/checkpoints/best.ckpt) "
        "or sweep=multirun/DATE/TIME"
    )


def run_dir_of(ckpt: Path) -> Path:
    """The run folder a checkpoint belongs to: the parent of checkpoints/, else the checkpoint's folder."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def load_model(ckpt: Path, device: str) -> FERModule:
    """The checkpoint's module (weights only: a checkpoint cannot run code when loaded), in eval mode and
    channels_last (cnn4 on 2 CPU cores: forward 1.5x, forward+backward 1.3x faster; same maths)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = FERModule.load_from_checkpoint(ckpt, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, EOFError) as e:
        raise ValueError(f"ckpt={ckpt}: not a checkpoint of fer's FERModule ({type(e).__name__}: {e})") from e
    return apply_runtime(model, channels_last=True).eval()


def _given(node: Any) -> Any:
    """The config without its null leaves (the keys left at `the checkpoint's value`)."""
    if isinstance(node, dict):
        kept = {k: _given(v) for k, v in node.items() if v is not None}
        return {k: v for k, v in kept.items() if v != {}}
    return node


def data_config(run_config: Mapping[str, Any] | None, overrides: DictConfig, ckpt: Path) -> DictConfig:
    """The checkpoint's data config with the command line's `data.*` changes on top."""
    changes = _given(OmegaConf.to_container(overrides, resolve=True))
    base = (run_config or {}).get("data")
    if base is None:
        if "path" not in changes:
            raise ValueError(f"ckpt={ckpt} holds no run_config (saved by an older fer): pass data.path=...")
        base = {"_target_": "fer.data.datamodule.FERDataModule"}
    return OmegaConf.merge(base, changes)


def stage_or_split(data: DictConfig, name: str, option: str = "split") -> tuple[FaceSet, str]:
    """Rows of a stage of the data config (train, val, test, predict) or of a split name of its source;
    `option` is the setting that named them, for the error message."""
    if name in STAGES:
        datamodule = instantiate(data)
        datamodule.setup()
        if name not in datamodule.faces:
            raise ValueError(
                f"{option}={name}: the run's data config has no {name} stage (data.splits.{name} is null); "
                f"stages it has: {', '.join(datamodule.faces)}; or name a split of {data.path}"
            )
        split = datamodule.splits.get(name) or f"{datamodule.val_fraction:.0%} held out of the train split"
        return datamodule.faces[name], f"the {name} stage ({split})"
    faces = read_dataset(data.path, layout=data.layout, on_bad_row=data.on_bad_row, cache_dir=data.cache_dir)
    return _rows_of_split(faces, name, option), f"the {name} split"


def _rows_of_split(faces: FaceSet, name: str, option: str) -> FaceSet:
    rows = faces.split == name
    if not rows.any():
        present = ", ".join(f"{k} ({v} rows)" for k, v in faces.split_counts().items())
        what = "a stage (train|val|test|predict)" if option == "split" else "a stage, a data path"
        raise ValueError(
            f"{option}={name!r} is not {what} nor a split of {faces.source}; its splits: {present}"
        )
    return faces.subset(rows)


def evaluation_faces(data: DictConfig, split: str | None) -> tuple[FaceSet, str]:
    """What an analysis evaluates: `split`, or the test stage of the data config (val when it has none)."""
    if split is None:
        split = "test" if data.get("splits", {}).get("test") else "val"
    return stage_or_split(data, split)


def prediction_faces(
    data: DictConfig, predict: str, split: str | None, cache_dir: str | None
) -> tuple[FaceSet, str]:
    """What predict mode predicts: a stage or split of the run's data, or the rows of any data path."""
    if predict in STAGES or not (predict.startswith("synthetic://") or Path(predict).exists()):
        if split is not None:
            raise ValueError(
                f"predict={predict} already names the rows; split= only picks rows of a data path"
            )
        return stage_or_split(data, predict, "predict")
    faces = read_dataset(predict, cache_dir=cache_dir)
    if split is not None:
        return _rows_of_split(faces, split, "split"), f"the {split} split"
    unlabelled = faces.labels < 0
    if unlabelled.any():
        return faces.subset(unlabelled), "the unlabelled rows"
    return faces, "every row"


def output_dir(out: str | None, ckpt: Path, predicting: bool) -> Path:
    folder = Path(out) if out else run_dir_of(ckpt) / ("predictions" if predicting else "analysis")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_methods(methods: Sequence[str]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"analysis.methods: unknown {unknown}; choose from {', '.join(METHODS)}")


def run(cfg: DictConfig) -> Any:
    """Analyse (or predict with, ensemble, or summarise) as `cfg` says; return the output folder (or the summary)."""
    if cfg.get("sweep"):
        if cfg.get("ckpt") or cfg.get("run") or cfg.get("predict"):
            raise ValueError("sweep= summarises a sweep folder and takes no ckpt=, run= or predict=")
        return importlib.import_module("fer.summarize").summarize(Path(cfg.sweep))
    if cfg.get("ensemble"):
        return importlib.import_module("fer.ensemble").ensemble(cfg)
    options = cfg.analysis
    check_methods(options.methods)
    torch.manual_seed(cfg.seed)  # whatever still draws from torch's global RNG
    ckpt = checkpoint_path(cfg.get("ckpt"), cfg.get("run"))
    predicting = bool(cfg.get("predict"))
    timer = Timer()
    with timer("load"):
        model = load_model(ckpt, cfg.device)
        tta = chosen_tta(cfg.get("tta"), model.run_config)
        data = data_config(model.run_config, cfg.data, ckpt)
        if predicting:
            faces, what = prediction_faces(data, str(cfg.predict), cfg.get("split"), cfg.paths.cache_dir)
        else:
            faces, what = evaluation_faces(data, cfg.get("split"))
    interpret = options.interpret if options.interpret is not None else not predicting
    notes: list[str] = []
    if interpret:  # layer names are checked before any long computation
        layers, cam_layer = _layers(model, options, notes)
    out = output_dir(cfg.get("out"), ckpt, predicting)
    names = model.class_names
    analysis: dict[str, Any] = {
        "mode": "predict" if predicting else "analyze",
        "checkpoint": str(ckpt),
        "written": datetime.now().isoformat(timespec="seconds"),
        "data": {
            "source": faces.source,
            "layout": faces.layout,
            "what": what,
            "rows": len(faces),
            "labelled": int((faces.labels >= 0).sum()),
        },
        "options": OmegaConf.to_container(options, resolve=True),
        "tta": tta,
        "notes": notes,
        "files": {},
    }
    draws: list[Callable[[], Path]] = []  # figures are drawn last, after every number is computed

    with timer("evaluate"):
        probs = predict_proba(model, faces.images, options.batch_size, tta)
        labels = torch.from_numpy(faces.labels)
        _errors(analysis, draws, out, faces, probs, labels, names, options)
        if predicting:
            analysis["files"] |= write_prediction_files(out, faces, probs, names)

    if interpret:
        # Explain the true class where known, else the prediction.
        targets = torch.where(labels >= 0, labels, probs.argmax(dim=1))
        with timer("saliency"):
            _saliency(analysis, draws, out, model, faces, probs, targets, names, cam_layer, options, cfg.seed)
        pool = torch.from_numpy(faces.images[: options.pool]).unsqueeze(1)
        _features(analysis, draws, out, timer, model, layers, pool, faces, options, cfg.seed)
        with timer("class_visualization"):
            _classes(analysis, draws, out, model, pool, faces, names, options, cfg.seed)

    with timer("figures"):
        for draw in draws:
            draw()
    with timer("report"):
        write_report(out, analysis, model.run_config, run_dir_of(ckpt))
        analysis["files"]["report"] = "report.html"
    analysis["timings_s"] = timer.parts
    write_json(out / "analysis.json", analysis)
    log.info("analysis of %s (%s): %s", ckpt, what, out)
    if "metrics" in analysis:
        log.info(
            "accuracy %.4f, macro-F1 %.4f", analysis["metrics"]["accuracy"], analysis["metrics"]["macro_f1"]
        )
    log.info("report: %s", out / "report.html")
    return out


def _errors(
    analysis: dict[str, Any],
    draws: list[Callable[[], Path]],
    out: Path,
    faces: FaceSet,
    probs: Tensor,
    labels: Tensor,
    names: Sequence[str],
    options: DictConfig,
) -> None:
    """Scores, per-class report, confusions and confident mistakes of the labelled rows."""
    known = labels >= 0
    if not known.any():
        analysis["notes"].append("No labels: accuracy, confusion matrix and mistakes are not computed.")
        return
    probs, labels, index = probs[known], labels[known], torch.nonzero(known).flatten()
    preds = probs.argmax(dim=1)
    analysis["metrics"] = scores(probs, labels)
    analysis["per_class"] = per_class_report(preds, labels, names)
    write_csv(out / "per_class.csv", analysis["per_class"], ["class", "precision", "recall", "f1", "support"])
    counts, _ = confusion(preds, labels, len(names))
    analysis["confusion"] = counts.tolist()
    analysis["most_confused"] = most_confused_pairs(counts, names, options.confused_pairs)
    mistakes = most_confident_mistakes(probs, labels, options.mistakes)
    analysis["mistakes"] = [
        {
            "id": str(faces.ids[index[i]]),
            "true": names[int(labels[i])],
            "pred": names[int(preds[i])],
            "prob": probs[i, preds[i]].item(),
        }
        for i in mistakes.tolist()
    ]
    analysis["files"] |= {
        "per_class": "per_class.csv",
        "confusion": "confusion.png",
        "mistakes": "mistakes.png",
    }
    title = f"{analysis['data']['what']} of {analysis['data']['source']}"
    draws.append(
        lambda: plot_confusion(counts.numpy(), names, out / "confusion.png", title=f"Confusion on {title}")
    )
    faces_shown = torch.from_numpy(faces.images[index[mistakes].numpy()])
    titles = [
        face_label(names, int(labels[i]), int(preds[i]), probs[i, preds[i]].item()) for i in mistakes.tolist()
    ]
    draws.append(
        lambda: plot_faces(
            faces_shown, titles, out / "mistakes.png", title=f"Most confident mistakes ({len(titles)})"
        )
    )


def _layers(model: nn.Module, options: DictConfig, notes: list[str]) -> tuple[list[str], str | None]:
    """The layers to study (`options.layers` or the first and the last conv layer) and the Grad-CAM layer
    (`options.cam_layer` or `fer.interpret.layers.cam_layer`'s choice), names checked."""
    convs = conv_layers(model)
    layers = (
        list(options.layers) if options.layers is not None else list(dict.fromkeys(convs[:1] + convs[-1:]))
    )
    cam = options.cam_layer or default_cam_layer(model)
    for name in [*layers, *([cam] if cam else [])]:
        layer_by_name(model, name)
    if not convs:
        notes.append(
            "The model has no convolutional layers: filters, exemplars, feature maps, Grad-CAM and "
            "HiResCAM are left out (name layers with analysis.layers=[...] or analysis.cam_layer=... to "
            "study others)."
        )
    return layers, cam


def _saliency(
    analysis: dict[str, Any],
    draws: list[Callable[[], Path]],
    out: Path,
    model: nn.Module,
    faces: FaceSet,
    probs: Tensor,
    targets: Tensor,
    names: Sequence[str],
    cam_layer: str | None,
    options: DictConfig,
    seed: int,
) -> None:
    """Attribution maps of class-balanced faces, their measures with intervals and each method's verdict.

    The grid's rows are the first `per_class` faces of each class; the measures run on the first
    `metric_per_class` of each class (all of a class that has fewer), the grid's rows among them.
    """
    methods = [m for m in options.methods if m not in CAM_METHODS or cam_layer is not None]
    layer = layer_by_name(model, cam_layer) if cam_layer else None
    rows = len(pick_per_class(targets, options.per_class))
    index = pick_per_class(targets, max(options.per_class, options.metric_per_class))
    images = torch.from_numpy(faces.images[index.numpy()]).unsqueeze(1)
    chosen = targets[index]
    attribution = dict(options.attribution) | {"noise_seed": seed}
    maps = {m: attribute(model, images, chosen, m, layer, **attribution) for m in methods}
    analysis["saliency"] = {
        "methods": methods,
        "rows": [str(faces.ids[i]) for i in index[:rows].tolist()],
        "cam_layer": cam_layer,
    }
    unreliable = {}
    if options.metric_per_class:
        masks = None if faces.masks is None else torch.from_numpy(faces.masks[index.numpy()])
        if masks is None:
            analysis["notes"].append(
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
            steps=options.deletion_steps,
            seed=seed,
            attribution=attribution,
            maps=maps,
            thresholds=options.verdict,
        )
        analysis["saliency"] |= {
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
    analysis["files"]["saliency"] = "saliency.png"
    draws.append(
        lambda: plot_saliency(
            images[:rows],
            grid,
            labels,
            out / "saliency.png",
            title=f"Attribution maps for the {explained} class",
            unreliable=unreliable,
        )
    )


def _features(
    analysis: dict[str, Any],
    draws: list[Callable[[], Path]],
    out: Path,
    timer: Timer,
    model: nn.Module,
    layers: Sequence[str],
    pool: Tensor,
    faces: FaceSet,
    options: DictConfig,
    seed: int,
) -> None:
    """Each layer's filters (`_filters`), then the layers side by side: activation maximization beside
    the best real faces of the first `side_by_side` filters."""
    shown = {}
    for name in layers:
        synthetic, reached, index, top = _filters(
            analysis, draws, out, timer, model, name, pool, faces, options, seed
        )
        n = options.side_by_side
        shown[name] = (synthetic[:n], reached[:n], pool[index[:n, :3]].squeeze(2), top[:n, :3])
    if shown and options.side_by_side:
        analysis["files"]["layers"] = "layers.png"
        draws.append(
            lambda: plot_layers(
                shown,
                out / "layers.png",
                title="Activation maximization (AM) beside the best real faces, layer by layer",
            )
        )


def _filters(
    analysis: dict[str, Any],
    draws: list[Callable[[], Path]],
    out: Path,
    timer: Timer,
    model: nn.Module,
    name: str,
    pool: Tensor,
    faces: FaceSet,
    options: DictConfig,
    seed: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Activation maximization, top real images, dead filters and feature maps of one layer; returns the
    AM images (C,H,W), their activations (C,), the exemplars' pool indices (C,k) and activations (C,k)."""
    layer = layer_by_name(model, name)
    upto = TruncatedModel(model, layer)
    image = pool[min(options.feature_map_image, len(pool) - 1)]
    with timer("exemplars"):
        maps = feature_maps(upto, layer, image)
        channels = list(range(min(options.filters, len(maps))))
        index, top = top_exemplars(upto, layer, pool, channels, k=options.exemplars)
        dead = dead_filters(upto, layer, pool).tolist()
    with timer("activation_max"):
        synthetic, reached = maximize_activation(upto, layer, channels, seed=seed, **options.am)
    files = {"filters": f"filters_{name}.png", "exemplars": f"exemplars_{name}.png"}
    analysis.setdefault("filters", {})[name] = {
        "num_channels": len(maps),
        "pool": len(pool),
        "channels": channels,
        "reached": reached.tolist(),
        "dataset_max": top[:, 0].tolist(),
        # the share of the analysed filters whose AM image beats every real face of the pool
        "reached_fraction": (reached >= top[:, 0]).float().mean().item(),
        "dead": dead,
        "exemplars": {str(c): [str(faces.ids[i]) for i in row] for c, row in zip(channels, index.tolist())},
        "files": files,
    }
    draws.append(
        lambda: plot_filters(
            synthetic,
            channels,
            reached,
            top[:, 0],
            set(dead),
            out / files["filters"],
            title=f"{name}: activation maximization (activation reached vs best real image)",
        )
    )
    draws.append(
        lambda: plot_exemplars(
            pool[index].squeeze(2),
            channels,
            top,
            out / files["exemplars"],
            title=f"{name}: top real images per filter",
        )
    )
    if maps.dim() == 3:
        files["feature_maps"] = f"feature_maps_{name}.png"
        draws.append(
            lambda: plot_feature_maps(
                image,
                maps[: options.feature_maps],
                out / files["feature_maps"],
                title=f"{name}: feature maps of one face (first {min(options.feature_maps, len(maps))} channels)",
                image_title=str(faces.ids[min(options.feature_map_image, len(pool) - 1)]),
            )
        )
    else:
        analysis["notes"].append(f"{name} outputs no spatial maps: its feature maps are not drawn.")
    for key, file in files.items():
        analysis["files"][f"{key}_{name}"] = file
    return synthetic, reached, index, top


def _classes(
    analysis: dict[str, Any],
    draws: list[Callable[[], Path]],
    out: Path,
    model: nn.Module,
    pool: Tensor,
    faces: FaceSet,
    names: Sequence[str],
    options: DictConfig,
    seed: int,
) -> None:
    """Class visualization: the image maximising each class's logit, beside the pool's face with the
    highest logit of that class."""
    classes = list(range(len(names)))
    synthetic, reached = maximize_class(model, classes, seed=seed, **options.am)
    index, best = top_exemplars(model, model, pool, classes, k=1)
    probability = predict_proba(model, synthetic)[torch.arange(len(classes)), classes]
    analysis["classes"] = {
        name: {
            "logit": reached[c].item(),
            "probability": probability[c].item(),
            "best_real_logit": best[c, 0].item(),
            "best_real_id": str(faces.ids[int(index[c, 0])]),
        }
        for c, name in enumerate(names)
    }
    analysis["files"]["classes"] = "classes.png"
    draws.append(
        lambda: plot_classes(
            synthetic,
            reached,
            pool[index[:, 0], 0],
            best[:, 0],
            names,
            out / "classes.png",
            title="Class visualization: the input that maximises each class's logit, beside the best real face",
        )
    )

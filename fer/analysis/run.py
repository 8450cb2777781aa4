"""`python analyze.py`'s one entry: analyse a checkpoint, predict with it, or hand over to an ensemble or
a sweep summary.

An analysis writes into one folder: per_class.csv, confusion.png, mistakes.png, saliency.png,
filters_<layer>.png, exemplars_<layer>.png, feature_maps_<layer>.png, layers.png, classes.png,
analysis.json (every number) and report.html (the page that shows them); in predict mode also
predictions.csv (and submission.csv).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fer import summarize
from fer.analysis.filters import add_classes, add_layers
from fer.analysis.record import Analysis, Timer
from fer.analysis.saliency import add_saliency
from fer.analysis.scores import add_scores
from fer.analysis.select import (
    checkpoint_path,
    data_config,
    evaluation_faces,
    load_model,
    output_dir,
    prediction_faces,
    run_dir_of,
)
from fer.ensemble import ensemble
from fer.files import write_json
from fer.interpret.attribution import METHODS
from fer.interpret.layers import cam_layer as default_cam_layer
from fer.interpret.layers import conv_layers, layer_by_name
from fer.predict import predict_proba, write_prediction_files
from fer.report import write_report
from fer.tta import chosen_tta

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Any:
    """Analyse (or predict with, ensemble, or summarise) as `cfg` says; return the output folder (or the summary)."""
    if cfg.get("sweep"):
        if cfg.get("ckpt") or cfg.get("run") or cfg.get("predict"):
            raise ValueError("sweep= summarises a sweep folder and takes no ckpt=, run= or predict=")
        return summarize.summarize(Path(cfg.sweep))
    if cfg.get("ensemble"):
        return ensemble(cfg)
    settings = cfg.analysis
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"analysis.methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    torch.manual_seed(cfg.seed)  # whatever still draws from torch's global RNG
    ckpt = checkpoint_path(cfg.get("ckpt"), cfg.get("run"))
    predicting = bool(cfg.get("predict"))
    timer = Timer()
    with timer("load"):
        model = load_model(ckpt, cfg.device)
        tta = chosen_tta(cfg.get("tta"), model.run_config)
        data = data_config(model.run_config, cfg.data, f"ckpt={ckpt}")
        if predicting:
            faces, selection = prediction_faces(data, str(cfg.predict), cfg.get("split"), cfg.paths.cache_dir)
        else:
            faces, selection = evaluation_faces(data, cfg.get("split"))
    interpret = settings.interpret if settings.interpret is not None else not predicting
    notes: list[str] = []
    if interpret:  # layer names are checked before any long computation
        layers, cam_layer = _layers(model, settings, notes)
    out = output_dir(cfg.get("out"), ckpt, predicting)
    results: dict[str, Any] = {
        "mode": "predict" if predicting else "analyze",
        "checkpoint": str(ckpt),
        "written": datetime.now().isoformat(timespec="seconds"),
        "data": {
            "source": faces.source,
            "layout": faces.layout,
            "what": selection,
            "rows": len(faces),
            "labelled": int((faces.labels >= 0).sum()),
        },
        "options": OmegaConf.to_container(settings, resolve=True),
        "tta": tta,
        "notes": notes,
        "files": {},
    }
    analysis = Analysis(model, faces, settings, out, cfg.seed, results, timer)

    with timer("evaluate"):
        probs = predict_proba(model, faces.images, settings.batch_size, tta)
        add_scores(analysis, probs)
        if predicting:
            results["files"] |= write_prediction_files(out, faces, probs, model.class_names)

    if interpret:
        # Explain the true class where known, else the prediction.
        labels = torch.from_numpy(faces.labels)
        targets = torch.where(labels >= 0, labels, probs.argmax(dim=1))
        with timer("saliency"):
            add_saliency(analysis, probs, targets, cam_layer)
        pool = torch.from_numpy(faces.images[: settings.pool]).unsqueeze(1)
        add_layers(analysis, layers, pool)
        with timer("class_visualization"):
            add_classes(analysis, pool)

    with timer("figures"):
        analysis.draw_figures()
    with timer("report"):
        write_report(out, results, model.run_config, run_dir_of(ckpt))
        results["files"]["report"] = "report.html"
    results["timings_s"] = timer.parts
    write_json(out / "analysis.json", results)
    log.info("analysis of %s (%s): %s", ckpt, selection, out)
    if "metrics" in results:
        log.info(
            "accuracy %.4f, macro-F1 %.4f", results["metrics"]["accuracy"], results["metrics"]["macro_f1"]
        )
    log.info("report: %s", out / "report.html")
    return out


def _layers(model: torch.nn.Module, settings: DictConfig, notes: list[str]) -> tuple[list[str], str | None]:
    """The layers to study (`settings.layers` or the first and the last conv layer) and the Grad-CAM layer
    (`settings.cam_layer` or `fer.interpret.layers.cam_layer`'s choice), names checked."""
    convs = conv_layers(model)
    layers = (
        list(settings.layers) if settings.layers is not None else list(dict.fromkeys(convs[:1] + convs[-1:]))
    )
    cam = settings.cam_layer or default_cam_layer(model)
    for name in [*layers, *([cam] if cam else [])]:
        layer_by_name(model, name)
    if not convs:
        notes.append(
            "The model has no convolutional layers: filters, exemplars, feature maps, Grad-CAM and "
            "HiResCAM are left out (name layers with analysis.layers=[...] or analysis.cam_layer=... to "
            "study others)."
        )
    return layers, cam

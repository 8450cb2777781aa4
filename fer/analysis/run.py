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
    chosen_faces,
    data_config,
    load_model,
    output_dir,
    prepare_output,
    run_dir_of,
    stale_files,
)
from fer.data.labels import IMAGE_SIZE
from fer.ensemble import ensemble
from fer.files import write_json
from fer.interpret.attribution import METHODS
from fer.interpret.layers import cam_layer as default_cam_layer
from fer.interpret.layers import conv_layers, layer_by_name
from fer.module import check_tta_sizes
from fer.predict import predict_proba, write_prediction_files
from fer.report import write_report
from fer.rules import Choice, Number, check_values
from fer.runtime import EVALUATION_PRECISIONS, evaluation_precision, warn_if_emulated
from fer.schema import ConfigError
from fer.tta import chosen_tta

log = logging.getLogger(__name__)

# What the `analysis` group's values may be (conf/analysis/default.yaml says what each does); out of
# range, most fail deep inside Captum or torch, or after minutes of work.
SETTINGS = {
    "attribution.nt_samples": Number(1, integer=True),
    "attribution.ig_steps": Number(1, integer=True),
    "attribution.window": Number(1, IMAGE_SIZE, integer=True),
    "attribution.stride": Number(1, IMAGE_SIZE, integer=True),
    "per_class": Number(1, integer=True),
    "metric_per_class": Number(0, integer=True),
    "deletion_steps": Number(1, integer=True),
    "verdict.pointing_margin": Number(-1, 1),
    "verdict.deletion_margin": Number(-1, 1),
    "verdict.randomization_max": Number(-1, 1),
    "filters": Number(1, integer=True),
    "am.steps": Number(1, integer=True),
    "am.lr": Number(0, open_low=True),
    "am.param": Choice(("fft", "pixel")),
    "am.jitter": Number(0, IMAGE_SIZE - 1, integer=True),
    "am.scale": Number(0, 1, open_high=True),
    "am.rotate": Number(0, 180),
    "am.climb_lr": Number(0),
    "exemplars": Number(1, integer=True),
    "pool": Number(1, integer=True),
    "side_by_side": Number(0, integer=True),
    "feature_map_image": Number(0, integer=True),
    "feature_maps": Number(1, integer=True),
    "mistakes": Number(0, integer=True),
    "confused_pairs": Number(0, integer=True),
    "batch_size": Number(1, integer=True),
}
PRECISION = Choice(EVALUATION_PRECISIONS, nullable=True)
# The options of the other modes, which sweep= would ignore.
NOT_FOR_SWEEP = ("ckpt", "run", "ensemble", "predict", "split", "out", "tta", "precision")


def run(cfg: DictConfig) -> Any:
    """Analyse (or predict with, ensemble, or summarise) as `cfg` says; return the output folder (or the
    sweep folder)."""
    if cfg.get("sweep"):
        return _summarize(cfg)
    check_settings(cfg.analysis, cfg.get("precision"))
    if cfg.get("ensemble") is not None:
        return ensemble(cfg)
    settings = cfg.analysis
    torch.manual_seed(cfg.seed)  # whatever still draws from torch's global RNG
    ckpt = checkpoint_path(cfg.get("ckpt"), cfg.get("run"))
    predicting = bool(cfg.get("predict"))
    timer = Timer()
    with timer("load"):
        model = load_model(ckpt, cfg.device)
        tta = chosen_tta(cfg.get("tta"), model.run_config)
        check_tta_sizes(model, tta, f"ckpt={ckpt}")
        warn_if_emulated(cfg.get("precision"), model.device)
        precision = evaluation_precision(cfg.get("precision"), model.run_config, model.device)
        data = data_config(model.run_config, cfg.data, f"ckpt={ckpt}")
        faces, selection = chosen_faces(data, cfg, f"ckpt={ckpt}")
    interpret = settings.interpret if settings.interpret is not None else not predicting
    notes: list[str] = []
    if interpret:  # layer names are checked before any long computation
        layers, cam_layer = _layers(model, settings, notes)
    out = output_dir(cfg.get("out"), ckpt, predicting)
    stale = stale_files(out)
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
        "precision": precision,
        "notes": notes,
        "files": {},
    }
    analysis = Analysis(model, faces, settings, out, cfg.seed, results, timer)

    with timer("evaluate"):
        probs = predict_proba(model, faces.images, settings.batch_size, tta, precision)
        add_scores(analysis, probs)
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

    # Every number is computed: only now does the folder change.
    with timer("write"):
        prepare_output(out, stale)
        if predicting:
            results["files"] |= write_prediction_files(out, faces, probs, model.class_names)
        analysis.write_files()
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


def check_settings(settings: DictConfig, precision: str | None = None) -> None:
    """Raise naming every `analysis.*` value that SETTINGS or the method list do not allow, and a `precision`
    that PRECISION does not, before anything is loaded or written."""
    given = {key: OmegaConf.select(settings, key) for key in SETTINGS}
    converted, problems = check_values(SETTINGS, given, "analysis.")
    problems += check_values({"precision": PRECISION}, {"precision": precision})[1]
    for key, value in converted.items():
        if value is not given[key]:  # a number given as a string (analysis.filters='8')
            OmegaConf.update(settings, key, value)
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown:
        problems.append(f"analysis.methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if problems:
        raise ConfigError("invalid analysis setting(s):\n  " + "\n  ".join(problems))


def _summarize(cfg: DictConfig) -> Path:
    """sweep= mode: summarise the sweep folder and print its table and files (fer.summarize.report)."""
    given = [f"{key}=" for key in NOT_FOR_SWEEP if cfg.get(key) is not None]
    if given:
        raise ConfigError(
            f"sweep= summarises a sweep folder and takes no {', '.join(given)}: to average its jobs' models "
            f"pass ensemble=[{cfg.sweep}] instead (its summary files go into the sweep folder itself)"
        )
    summarize.report(cfg.sweep)
    return Path(cfg.sweep)


def _layers(model: torch.nn.Module, settings: DictConfig, notes: list[str]) -> tuple[list[str], str | None]:
    """The layers to study (`settings.layers` or the first and the last conv layer) and the Grad-CAM layer
    (`settings.cam_layer` or `fer.interpret.layers.cam_layer`'s choice), names checked."""
    convs = conv_layers(model)
    layers = (
        list(settings.layers) if settings.layers is not None else list(dict.fromkeys(convs[:1] + convs[-1:]))
    )
    cam = settings.cam_layer or default_cam_layer(model)
    named = [("analysis.layers", n) for n in layers] + ([("analysis.cam_layer", cam)] if cam else [])
    for key, name in named:
        try:
            layer_by_name(model, name)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
    if not convs:
        notes.append(
            "The model has no convolutional layers: filters, exemplars, feature maps, Grad-CAM and "
            "HiResCAM are left out (name layers with analysis.layers=[...] or analysis.cam_layer=... to "
            "study others)."
        )
    return layers, cam

"""The files an analysis writes (atomically) and `report.html`: one self-contained page of its results.

The page is built from `analysis.json`'s content and the PNGs beside it (inlined as base64), so it can be
mailed, uploaded or pasted from without its folder.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fer.files import write_json, write_text  # noqa: F401  (write_json: re-exported for analyze)

# One sentence per measure, reused in captions and table headers.
EXPLAIN = {
    "accuracy": "share of images whose predicted class is the true one",
    "macro_f1": "F1 (harmonic mean of precision and recall) averaged over classes, so a rare class such as "
    "Disgust weighs as much as a common one",
    "balanced_accuracy": "recall averaged over classes",
    "pointing_game": "share of images whose attribution peak falls inside the regions that carry the "
    "expression (ground-truth masks of the synthetic faces)",
    "mass_inside": "share of the positive attribution that lies inside those regions",
    "chance": "the share of the image the regions cover: what a random map scores on both measures above",
    "deletion_auc": "area under the target-class probability as the most-attributed pixels are grayed "
    "first (0..1); lower means the map found what the model relies on",
    "random_deletion_auc": "the same area for a random pixel order: the baseline to beat",
    "randomization_spearman": "rank correlation between the maps of the trained model and of a randomly "
    "re-initialised copy; near 1 means the method shows the image, not what the model learned "
    "(Adebayo et al. 2018)",
}

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-top: 0.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.92em; color: #444; margin-top: 0.3em; }
.meta { color: #555; font-size: 0.92em; } .note { background: #fff6d9; padding: 0.4em 0.8em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def _e(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any) -> str:
    """A table cell: numbers right-aligned (floats to 4 decimals), text left."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{_e(value)}</td>"
    return f'<td class="num">{f"{value:.4f}" if isinstance(value, float) else value}</td>'


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML table of dict rows."""
    columns = list(columns or (rows[0] if rows else []))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c, "")) for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure(path: str | Path, caption: str, alt: str) -> str:
    """An inlined PNG with its caption."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _items(lines: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>"


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{''.join(parts)}</section>"


def _p(text: str, cls: str = "") -> str:
    return f"<p{f' class={cls!r}' if cls else ''}>{_e(text)}</p>"


def _metrics_section(analysis: Mapping[str, Any], out_dir: Path) -> str:
    data, metrics = analysis["data"], analysis.get("metrics")
    parts = [
        _p(
            f"{data['rows']} images: {data['what']} of {data['source']}"
            + (f", {data['labelled']} of them labelled." if data["labelled"] < data["rows"] else ".")
        )
    ]
    if metrics:
        rows = [{"measure": k, "value": metrics[k], "meaning": EXPLAIN[k]} for k in metrics if k in EXPLAIN]
        parts.append(table(rows, ["measure", "value", "meaning"]))
    if analysis.get("per_class"):
        parts.append(
            _p(
                "Per class (precision: share of the class's predictions that are right; recall: share "
                "of the class's images found; support: images of the class):"
            )
        )
        parts.append(table(analysis["per_class"], ["class", "precision", "recall", "f1", "support"]))
    if analysis.get("most_confused"):
        parts.append(
            _p("Most confused pairs, by share of the true class:") + _items(analysis["most_confused"])
        )
    files = analysis["files"]
    if "confusion" in files:
        parts.append(
            figure(
                out_dir / files["confusion"],
                "Confusion matrix: true class on rows, predicted class on columns; counts on the left, "
                "each row divided by its total on the right (the diagonal is each class's recall).",
                "confusion matrix",
            )
        )
    if "mistakes" in files:
        parts.append(
            figure(
                out_dir / files["mistakes"],
                "The most confident mistakes: wrong predictions with the highest predicted probability, "
                "most confident first. Mislabelled or ambiguous faces tend to show up here.",
                "most confident mistakes",
            )
        )
    return _section("Performance", *parts)


def _saliency_section(saliency: Mapping[str, Any], out_dir: Path, path: str) -> str:
    parts = [
        figure(
            out_dir / path,
            "Attribution maps: one row per face (one of each class), one column per method, the map drawn "
            "over the face; red marks evidence for the true class, blue (signed methods) evidence against "
            "it. Each column shares one colour scale across its rows (the bar below it), so rows of a "
            "column compare; columns do not compare with each other.",
            "saliency grid",
        )
    ]
    measures = saliency.get("metrics")
    if measures:
        columns = [
            c
            for c in (
                "pointing_game",
                "mass_inside",
                "chance",
                "deletion_auc",
                "random_deletion_auc",
                "randomization_spearman",
            )
            if any(c in row for row in measures.values())
        ]
        rows = [{"method": m, **values} for m, values in measures.items()]
        parts.append(
            _p(f"Measured on {saliency['metric_images']} faces (class-balanced, the grid's first).")
            + table(rows, ["method", *columns])
            + _items(f"{c}: {EXPLAIN[c]}." for c in columns)
        )
    return _section("What the model looks at", *parts)


def _filters_section(layers: Mapping[str, Any], out_dir: Path) -> str:
    parts = []
    for layer, info in layers.items():
        files = info["files"]
        dead = info["dead"]
        parts.append(f"<h3>{_e(layer)}</h3>")
        parts.append(
            _p(
                f"{info['num_channels']} filters, {len(dead)} dead (never positive on any of the "
                f"{info['pool']} images searched){': ' + ', '.join(map(str, dead)) if dead else ''}."
            )
        )
        if "filters" in files:
            parts.append(
                figure(
                    out_dir / files["filters"],
                    f"Activation maximization of the first {len(info['channels'])} filters of {layer}: the "
                    "image, optimised from noise, that most raises each filter's mean activation. Titles: "
                    "the activation it reaches vs the highest any real image gives; DEAD in red: never "
                    "positive on the data.",
                    f"filters of {layer}",
                )
            )
        if "exemplars" in files:
            parts.append(
                figure(
                    out_dir / files["exemplars"],
                    f"Top real images per filter of {layer}: the faces of the data with the highest mean "
                    "activation, strongest first.",
                    f"exemplars of {layer}",
                )
            )
        if "feature_maps" in files:
            parts.append(
                figure(
                    out_dir / files["feature_maps"],
                    f"Feature maps of {layer} for one face: each filter's output over the image (bright = "
                    "high), each on its own colour scale.",
                    f"feature maps of {layer}",
                )
            )
    return _section("What the filters respond to", *parts)


def _training_section(run_dir: Path) -> str:
    """The run's own metrics.json and history.png, where present."""
    parts = []
    metrics_file, history = run_dir / "metrics.json", run_dir / "history.png"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        rows = [
            *({"measure": f"best {k}", "value": v} for k, v in metrics.get("best", {}).items()),
            *(
                {"measure": f"{k} ({metrics.get('test_split')})", "value": v}
                for k, v in metrics.get("test", {}).items()
            ),
            *(
                {"measure": k, "value": metrics[k]}
                for k in ("epochs", "fit_time_s", "params")
                if k in metrics
            ),
        ]
        parts.append(
            _p(
                f"From {metrics_file}: the validation scores of the best epoch and the test scores of its weights."
            )
        )
        parts.append(table(rows, ["measure", "value"]))
        data = metrics.get("data") or {}
        if data.get("notes"):  # e.g. rows skipped under data.on_bad_row=skip, with the first bad lines
            parts.append(f'<div class="note">Training data: {_items(data["notes"])}</div>')
    if history.is_file():
        parts.append(
            figure(
                history,
                "Loss and accuracy per epoch on the train and validation splits; a widening gap between them "
                "is overfitting.",
                "training curves",
            )
        )
    return _section("Training", *parts) if parts else ""


def write_report(
    out_dir: str | Path,
    analysis: Mapping[str, Any],
    run_config: Mapping[str, Any] | None = None,
    run_dir: str | Path | None = None,
) -> Path:
    """`out_dir/report.html` from the analysis results, the PNGs named in `analysis["files"]`, and the
    training run's metrics.json and history.png when `run_dir` holds them."""
    out_dir = Path(out_dir)
    model = (run_config or {}).get("model", {}).get("_target_", "model").rsplit(".", 1)[-1]
    title = f"{'Predictions' if analysis['mode'] == 'predict' else 'Analysis'} of {model}"
    parts = [
        f"<h1>{_e(title)}</h1>",
        _p(f"checkpoint: {analysis['checkpoint']} | written {analysis['written']}", "meta"),
    ]
    if analysis.get("notes"):
        parts.append(f'<div class="note">{_items(analysis["notes"])}</div>')
    parts.append(_metrics_section(analysis, out_dir))
    if run_dir is not None:
        parts.append(_training_section(Path(run_dir)))
    if "saliency" in analysis["files"]:
        parts.append(_saliency_section(analysis["saliency"], out_dir, analysis["files"]["saliency"]))
    if analysis.get("filters"):
        parts.append(_filters_section(analysis["filters"], out_dir))
    if "predictions" in analysis["files"]:
        listed = ", ".join(
            analysis["files"][k] for k in ("predictions", "submission") if k in analysis["files"]
        )
        parts.append(_section("Predictions", _p(f"Written beside this page: {listed}.")))
    if run_config:
        parts.append(
            _section(
                "Configuration of the run",
                f"<pre>{_e(OmegaConf.to_yaml(dict(run_config)))}</pre>",
            )
        )
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    return write_text(out_dir / "report.html", page)

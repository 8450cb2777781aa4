"""The files an analysis writes (atomically) and `report.html`: one self-contained page of its results.

The page is rendered by a Jinja2 template (autoescaped: data set names, ids and notes are shown as text)
from `analysis.json`'s content and the PNGs beside it (inlined as base64), so it can be mailed, uploaded
or pasted from without its folder.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment
from omegaconf import OmegaConf

from fer.files import finite, write_text

log = logging.getLogger(__name__)

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
    "(Adebayo et al. 2018); faces where either map is constant have no ranking and are excluded",
}
MEASURES = tuple(k for k in EXPLAIN if k not in ("accuracy", "macro_f1", "balanced_accuracy"))

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-top: 0.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.92em; color: #444; margin-top: 0.3em; }
.meta { color: #555; font-size: 0.92em; } .note { background: #fff6d9; padding: 0.4em 0.8em; }
.bad { color: #b00; font-weight: 600; } .good { color: #070; } .ci { color: #666; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


TEMPLATE = """\
{%- macro num(value) -%}
{%- if value is none %}-{% elif value is float %}{{ "%.4f"|format(value) }}{% else %}{{ value }}{% endif -%}
{%- endmacro -%}
{%- macro table(rows, columns) -%}
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{%- for row in rows %}<tr>{% for c in columns %}{% set v = row.get(c, "") %}
{%- if v is number and v is not boolean %}<td class="num">{{ num(v) }}</td>{% else %}<td>{{ v }}</td>{% endif %}
{%- endfor %}</tr>{% endfor %}</table>
{%- endmacro -%}
{%- macro figure(src, caption, alt) -%}
<figure><img src="{{ src }}" alt="{{ alt }}"><figcaption>{{ caption }}</figcaption></figure>
{%- endmacro -%}
{%- macro summary(s) -%}
{{ "%.3f"|format(s.mean) if s.mean is not none else "undefined" }}
{%- if s.ci95[0] is not none %} <span class="ci">[{{ "%.3f"|format(s.ci95[0]) }}, {{ "%.3f"|format(s.ci95[1]) }}]</span>{% endif %} \
<span class="ci">{{ s.excluded }} of {{ s.n + s.excluded }} excluded</span>
{%- endmacro -%}
<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>{{ style }}</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">checkpoint: {{ a.checkpoint }} | written {{ a.written }}</p>
{% if a.notes %}<div class="note"><ul>{% for n in a.notes %}<li>{{ n }}</li>{% endfor %}</ul></div>{% endif %}
<section><h2>Performance</h2>
<p>{{ a.data.rows }} images: {{ a.data.what }} of {{ a.data.source }}
{%- if a.data.labelled < a.data.rows %}, {{ a.data.labelled }} of them labelled.{% else %}.{% endif %}</p>
{% if metric_rows %}{{ table(metric_rows, ["measure", "value", "meaning"]) }}{% endif %}
{% if a.per_class %}<p>Per class (precision: share of the class's predictions that are right; recall: share of the
class's images found; support: images of the class):</p>
{{ table(a.per_class, ["class", "precision", "recall", "f1", "support"]) }}{% endif %}
{% if a.most_confused %}<p>Most confused pairs, by share of the true class:</p>
<ul>{% for line in a.most_confused %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% if "confusion" in img %}{{ figure(img.confusion, "Confusion matrix: true class on rows, predicted class on columns; counts on the left, each row divided by its total on the right (the diagonal is each class's recall).", "confusion matrix") }}{% endif %}
{% if "mistakes" in img %}{{ figure(img.mistakes, "The most confident mistakes: wrong predictions with the highest predicted probability, most confident first. Mislabelled or ambiguous faces tend to show up here.", "most confident mistakes") }}{% endif %}
</section>
{% if training %}<section><h2>Training</h2>
{% if training.problem %}<div class="note">{{ training.problem }}</div>{% endif %}
{% if training.rows %}<p>From {{ training.file }}: the validation scores of the best epoch and the test scores of its weights.</p>
{{ table(training.rows, ["measure", "value"]) }}{% endif %}
{% if training.notes %}<div class="note">Training data:<ul>{% for note in training.notes %}<li>{{ note }}</li>{% endfor %}</ul></div>{% endif %}
{% if training.history %}{{ figure(training.history, "Loss and accuracy per epoch on the train and validation splits; a widening gap between them is overfitting.", "training curves") }}{% endif %}
</section>{% endif %}
{% if "saliency" in img %}<section><h2>What the model looks at</h2>
{{ figure(img.saliency, "Attribution maps: one row per face (one of each class), one column per method, the map drawn over the face; red marks evidence for the true class, blue (signed methods) evidence against it. Each column shares one colour scale across its rows (the bar below it), so rows of a column compare; columns do not compare with each other. Columns framed in red belong to methods that failed a check below: unreliable for this model.", "saliency grid") }}
{% set s = a.saliency %}{% if s.metrics %}
<p>Measured on {{ s.metric_images }} faces (class-balanced{% if s.metric_classes %}: {% for c, k in s.metric_classes.items() %}{{ k }} {{ c }}{{ ", " if not loop.last }}{% endfor %}{% endif %}; the grid's among them).
Each score is the mean over the faces with its bootstrap 95% interval in brackets, and how many faces were
excluded because the measure is undefined there (a constant map has no ranking).</p>
<table><tr><th>method</th><th>verdict</th>{% for c in measure_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{%- for method, row in s.metrics.items() %}<tr><td>{{ method }}</td>
{%- if row.verdict.reliable %}<td class="good">{{ row.verdict.reason }}</td>{% else %}<td class="bad">{{ row.verdict.reason }}</td>{% endif %}
{%- for c in measure_columns %}<td class="num">{% if c in row %}{{ summary(row[c]) }}{% endif %}</td>{% endfor %}</tr>
{%- endfor %}</table>
<p>Checks behind the verdicts, on the bootstrap 95% interval of each quantity:</p>
<ul>{% for name, rule in rules.items() %}<li>{{ name }}: {{ rule }}</li>{% endfor %}</ul>
<ul>{% for c in measure_columns %}<li>{{ c }}: {{ explain[c] }}.</li>{% endfor %}</ul>
{% endif %}</section>{% endif %}
{% if a.filters %}<section><h2>What the filters respond to</h2>
{% if "layers" in img %}{{ figure(img.layers, "Early and deep layers side by side: each filter's activation-maximization image (AM, optimised from noise with jitter, scale and rotation robustness on a decorrelated Fourier image) beside the real faces that excite it most. AM titles: the mean activation reached (red: below the best real face's).", "layers side by side") }}{% endif %}
{% for layer, info in a.filters.items() %}<h3>{{ layer }}</h3>
<p>{{ info.num_channels }} filters, {{ info.dead|length }} dead (never positive on any of the {{ info.pool }} images searched){% if info.dead %}: {{ info.dead|join(", ") }}{% endif %}.
Activation maximization reached at least the best real image's activation for {{ info.reached_count }} of the {{ info.channels|length }} filters analysed ({{ "%.0f"|format(100 * info.reached_fraction) }}%).</p>
{% if info.img.filters %}{{ figure(info.img.filters, "Activation maximization of the first " ~ info.channels|length ~ " filters of " ~ layer ~ ": the image, optimised from noise, that most raises each filter's mean activation. Titles: the activation it reaches vs the highest any real image gives; DEAD in red: never positive on the data.", "filters of " ~ layer) }}{% endif %}
{% if info.img.exemplars %}{{ figure(info.img.exemplars, "Top real images per filter of " ~ layer ~ ": the faces of the data with the highest mean activation, strongest first.", "exemplars of " ~ layer) }}{% endif %}
{% if info.img.feature_maps %}{{ figure(info.img.feature_maps, "Feature maps of " ~ layer ~ " for one face: each filter's output over the image (bright = high), each on its own colour scale.", "feature maps of " ~ layer) }}{% endif %}
{% endfor %}</section>{% endif %}
{% if a.classes %}<section><h2>What the model thinks each expression looks like</h2>
{% if "classes" in img %}{{ figure(img.classes, "Class visualization (Simonyan et al. 2013): for each class, the input optimised from noise to maximise its logit, with the same regularisers as the filters' images, beside the real face with the highest logit of that class.", "class visualizations") }}{% endif %}
{{ table(class_rows, ["class", "logit", "probability", "best_real_logit", "best_real_id"]) }}
</section>{% endif %}
{% if "predictions" in a.files %}<section><h2>Predictions</h2><p>Written beside this page: {{ predictions }}.</p></section>{% endif %}
{% if config %}<section><h2>Configuration of the run</h2><pre>{{ config }}</pre></section>{% endif %}
</body></html>
"""
_ENVIRONMENT = Environment(autoescape=True, keep_trailing_newline=True)


def _data_uri(path: Path) -> str:
    """A PNG inlined as a data: URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _training(run_dir: Path) -> dict[str, Any] | None:
    """The run's own metrics.json (as table rows) and history.png, where present."""
    metrics_file, history = run_dir / "metrics.json", run_dir / "history.png"
    found: dict[str, Any] = {}
    metrics = _read_metrics(metrics_file) if metrics_file.is_file() else None
    if isinstance(metrics, str):
        log.warning("%s", metrics)
        found["problem"] = metrics
    elif metrics is not None:
        found["file"] = str(metrics_file)
        found["rows"] = [
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
        # e.g. rows skipped under data.on_bad_row=skip, with the first bad lines
        found["notes"] = (metrics.get("data") or {}).get("notes") or []
    if history.is_file():
        found["history"] = _data_uri(history)
    return found or None


def _read_metrics(path: Path) -> dict[str, Any] | str:
    """The run's metrics.json, or why it cannot be shown (a damaged file leaves the report without it)."""
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"{path} is not valid JSON ({e}): the training scores are left out of this report"
    if not isinstance(metrics, dict):
        return f"{path} holds a {type(metrics).__name__}, not a JSON object: the training scores are left out"
    return metrics


def write_report(
    out_dir: str | Path,
    analysis: Mapping[str, Any],
    run_config: Mapping[str, Any] | None = None,
    run_dir: str | Path | None = None,
) -> Path:
    """`out_dir/report.html` from the analysis results, the PNGs named in `analysis["files"]`, and the
    training run's metrics.json and history.png when `run_dir` holds them."""
    out_dir = Path(out_dir)
    analysis = finite(analysis)
    model = (run_config or {}).get("model", {}).get("_target_", "model").rsplit(".", 1)[-1]
    files = analysis["files"]
    img = {key: _data_uri(out_dir / name) for key, name in files.items() if name.endswith(".png")}
    metrics = analysis.get("metrics") or {}
    filters = {
        layer: info
        | {
            "img": {key: img.get(f"{key}_{layer}") for key in info["files"]},
            "reached_count": sum(r >= best for r, best in zip(info["reached"], info["dataset_max"])),
        }
        for layer, info in (analysis.get("filters") or {}).items()
    }
    measures = (analysis.get("saliency") or {}).get("metrics") or {}
    rules = {
        name: f"{check['measure']}: {check['rule']}"
        for row in measures.values()
        for name, check in row["verdict"]["checks"].items()
    }
    page = _ENVIRONMENT.from_string(TEMPLATE).render(
        a=analysis | {"filters": filters},
        title=f"{'Predictions' if analysis['mode'] == 'predict' else 'Analysis'} of {model}",
        style=STYLE,
        img=img,
        explain=EXPLAIN,
        metric_rows=[
            {"measure": k, "value": metrics[k], "meaning": EXPLAIN[k]} for k in metrics if k in EXPLAIN
        ],
        training=_training(Path(run_dir)) if run_dir is not None else None,
        measure_columns=[c for c in MEASURES if any(c in row for row in measures.values())],
        rules=rules,
        class_rows=[{"class": name, **row} for name, row in (analysis.get("classes") or {}).items()],
        predictions=", ".join(files[k] for k in ("predictions", "submission") if k in files),
        config=OmegaConf.to_yaml(dict(run_config)) if run_config else "",
    )
    return write_text(out_dir / "report.html", page)

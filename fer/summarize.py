"""Summarise a Hydra sweep: `python -m fer.summarize multirun/DATE/TIME`.

Writes into the sweep dir `summary.csv` (one row per job), `summary.md` (the swept settings grouped
over seeds, mean ± std) and `summary.png` (grouped bars with error bars). A job that left no
`metrics.json` is listed as failed, never dropped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from fer.files import write_text
from fer.plots import save_figure
from fer.rundir import HYDRA_RECORD

SEED = "seed"
# Summary column -> (section of metrics.json or None for top level, key).
METRICS: dict[str, tuple[str | None, str]] = {
    "best_epoch": ("best", "epoch"),
    "val_acc": ("best", "val/acc"),
    "val_f1": ("best", "val/f1"),
    "test_acc": ("test", "test/acc"),
    "test_f1": ("test", "test/f1"),
    "params": (None, "params"),
    "time_per_epoch_s": (None, "time_per_epoch_s"),
}
# Markdown and plot columns: summary column -> heading. train_acc comes from history.csv.
SHOWN = {
    "val_acc": "val acc",
    "val_f1": "val F1",
    "test_acc": "test acc",
    "test_f1": "test F1",
    "train_acc": "train acc",
    "params": "params",
    "time_per_epoch_s": "s/epoch",
}
PLOTTED = ("val_acc", "test_acc", "time_per_epoch_s")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder of a sweep (a folder with Hydra's `.hydra/`), in job order."""
    dirs = [p for p in sweep_dir.iterdir() if (p / HYDRA_RECORD).is_dir()]
    return sorted(dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def read_overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line and sweep overrides, `key=value` -> {key: value}."""
    lines = yaml.safe_load((job_dir / HYDRA_RECORD / "overrides.yaml").read_text()) or []
    pairs = (line.split("=", 1) if "=" in line else (line, "") for line in lines)
    return {key.lstrip("+"): value for key, value in pairs}


def error_line(job_dir: Path) -> str:
    """The exception of the job's `error.txt` traceback on one line, or why there is nothing to read."""
    path = job_dir / "error.txt"
    if not path.exists():
        return "no metrics.json and no error.txt (killed, or still running)"
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    # The exception follows the frames of the last traceback, which are indented.
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback")), default=-1)
    message = next((i for i in range(start + 1, len(lines)) if not lines[i][0].isspace()), len(lines))
    return " ".join(line.strip() for line in lines[message:]) or "empty error.txt"


def train_acc_at(job_dir: Path, epoch: Any) -> float:
    """Train accuracy at the best epoch, from history.csv (the train/val gap shows overfitting)."""
    path = job_dir / "history.csv"
    if epoch is None or not path.exists():
        return math.nan
    with path.open() as f:
        row = next((r for r in csv.DictReader(f) if float(r["epoch"]) == float(epoch)), {})
    return float(row.get("train/acc") or math.nan)


def read_job(job_dir: Path) -> dict[str, Any]:
    """Status, metrics (NaN where absent) and, for a failed job, its error."""
    path = job_dir / "metrics.json"
    if not path.exists():
        return {
            "status": "failed",
            **dict.fromkeys([*METRICS, "train_acc"], math.nan),
            "error": error_line(job_dir),
        }
    metrics = json.loads(path.read_text())
    values = {c: ((metrics.get(s) or {}) if s else metrics).get(k, math.nan) for c, (s, k) in METRICS.items()}
    return {"status": "ok", **values, "train_acc": train_acc_at(job_dir, values["best_epoch"]), "error": ""}


def swept_keys(overrides: Sequence[dict[str, str]]) -> list[str]:
    """Override keys whose value differs across jobs (or that only some jobs have), in first-seen order."""
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    return [k for k in keys if len({o.get(k) for o in overrides}) > 1]


def short(value: str) -> str:
    """A readable label for an override value: long floats (Optuna's samples) to 3 significant digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if len(value) <= 6 else f"{number:.3g}"


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the finite values."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std, len(finite)


def group(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Rows grouped by the values of `keys` (first-seen order): per column (mean, std, n) over ok jobs."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for values, members in groups.items():
        ok = [r for r in members if r["status"] == "ok"]
        stats = {c: mean_std([r[c] for r in ok]) for c in SHOWN}
        out.append({"values": values, "n": len(ok), "failed": len(members) - len(ok), **stats})
    return out


def fmt(column: str, stat: tuple[float, float, int]) -> str:
    mean, std, n = stat
    if n == 0:
        return "–"
    if column == "params":
        return f"{mean / 1e6:.2f}M"
    digits = 2 if column == "time_per_epoch_s" else 3
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def markdown(sweep_dir: Path, rows: Sequence[dict[str, Any]], keys: Sequence[str], groups: list[dict]) -> str:
    """The grouped table, the failed jobs with their errors, and Optuna's result if there is one."""
    shown = [k for k in keys if k != SEED]
    failed = [r for r in rows if r["status"] == "failed"]
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(rows)} jobs: {len(rows) - len(failed)} ok, {len(failed)} failed. "
        + ("Mean ± sample std over seeds; n = ok jobs per row. " if SEED in keys else "")
        + "val = the best validation epoch, train acc at that epoch.",
        "",
        "| " + " | ".join(["#", *shown, "n", *SHOWN.values(), "failed"]) + " |",
        "|" + "---|" * (len(shown) + len(SHOWN) + 3),
    ]
    for i, g in enumerate(groups, 1):
        cells = [
            str(i),
            *map(short, g["values"]),
            str(g["n"]),
            *(fmt(c, g[c]) for c in SHOWN),
            str(g["failed"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "## Failed jobs", ""]
        for r in failed:
            settings = " ".join(f"{k}={r[k]}" for k in keys)
            error_file = sweep_dir / r["job"] / "error.txt"
            see = f" (see {error_file})" if error_file.exists() else ""
            lines.append(f"- job {r['job']} ({settings}): {r['error']}{see}")
    results = sweep_dir / "optimization_results.yaml"
    if results.exists():
        lines += ["", f"## Optuna ({results})", "", "```yaml", results.read_text().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def plot(groups: list[dict], keys: Sequence[str], path: Path) -> Path:
    """One panel per plotted metric: bars per group, the last swept key as colour on a complete grid."""
    levels = [list(dict.fromkeys(g["values"][i] for g in groups)) for i in range(len(keys))]
    # Colour by the last key only when every combination is there (a grid, not Optuna's samples).
    hue = len(keys) >= 2 and math.prod(map(len, levels)) == len(groups) and len(levels[-1]) <= 6
    xkeys = keys[:-1] if hue else keys
    xs = list(dict.fromkeys(g["values"][: len(xkeys)] for g in groups))
    hues = levels[-1] if hue else [None]
    if len(xkeys) <= 3:
        labels = ["\n".join(short(v) for v in x) or "all" for x in xs]
        xlabel = " / ".join(xkeys)
    else:  # too many settings for a tick label: number the groups as summary.md does
        labels, xlabel = [str(i) for i in range(1, len(xs) + 1)], "# (row of summary.md)"
    width = 0.8 / len(hues)
    by_values = {g["values"]: g for g in groups}
    size = min(24, max(10, 0.45 * len(xs) * len(hues) * len(PLOTTED)))
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(size, 4.2))
    for ax, column in zip(axes, PLOTTED):
        for j, h in enumerate(hues):
            cells = [by_values.get(x + ((h,) if hue else ())) for x in xs]
            means = [c[column][0] if c else np.nan for c in cells]
            stds = [c[column][1] if c and c[column][2] > 1 else np.nan for c in cells]  # no bar for n = 1
            offsets = np.arange(len(xs)) + (j - (len(hues) - 1) / 2) * width
            ax.bar(offsets, means, width, yerr=stds, capsize=3, label=None if h is None else short(h))
        ax.set_xticks(
            range(len(xs)),
            labels,
            rotation=0 if len(xs) <= 6 else 45,
            ha="center" if len(xs) <= 6 else "right",
        )
        ax.set_xlabel(xlabel)
        ax.set_title(SHOWN[column])
        ax.grid(axis="y", alpha=0.3)
        if hue and column == PLOTTED[0]:
            ax.legend(title=keys[-1], fontsize=8)
    fig.suptitle("bars: mean over seeds, whiskers: sample std" if any(g["n"] > 1 for g in groups) else "")
    return save_figure(fig, path)


def summarize(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Read every job of the sweep, write summary.csv/.md/.png into it, return one row per job."""
    sweep_dir = Path(sweep_dir)
    dirs = job_dirs(sweep_dir) if sweep_dir.is_dir() else []
    if not dirs:
        raise FileNotFoundError(f"{sweep_dir}: no job folders (folders with a .hydra/ inside)")
    overrides = [read_overrides(d) for d in dirs]
    keys = swept_keys(overrides)
    rows = [
        {"job": d.name, **{k: o.get(k, "") for k in keys}, **read_job(d)} for d, o in zip(dirs, overrides)
    ]

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(sweep_dir / "summary.csv", out.getvalue())
    shown_keys = [k for k in keys if k != SEED]
    groups = group(rows, shown_keys)
    write_text(sweep_dir / "summary.md", markdown(sweep_dir, rows, keys, groups))
    plot(groups, shown_keys, sweep_dir / "summary.png")
    return rows


def report(sweep_dir: str | Path) -> None:
    """Summarise and print the table and where the files are."""
    sweep_dir = Path(sweep_dir)
    summarize(sweep_dir)
    print((sweep_dir / "summary.md").read_text())
    names = ["summary.csv", "summary.md", "summary.png", "optimization_results.yaml"]
    print("\n".join(f"  {sweep_dir / n}" for n in names if (sweep_dir / n).exists()))


class SummarizeSweep(Callback):
    """Hydra callback: refresh the summary after every job of a multirun (failed ones too), print it at the end."""

    @rank_zero_only
    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            summarize(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        report(config.hydra.sweep.dir)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m fer.summarize SWEEP_DIR  (e.g. multirun/2024-01-31/12-00-00)")
    report(argv[0])


if __name__ == "__main__":
    main()

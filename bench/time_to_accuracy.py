"""Validation accuracy against wall-clock seconds of a training recipe, as time_to_accuracy.csv and .png.

Trains the recipe given as train.py overrides in this process, with a callback that stamps every
validation with the seconds since the run started (data loading included), into --out:
    python bench/time_to_accuracy.py --out outputs/tta_cnn4 model=cnn4 trainer.max_epochs=3
With --run RUN_DIR instead, reads an existing run: its history.csv has no clock, so each epoch is
placed at (epoch + 1) x metrics.json's time_per_epoch_s and the CSV says `estimated`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import open_dict

from fer.config import compose_run
from fer.plots import plt, save_figure
from fer.train import run

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = ["epoch", "time_s", "val_acc", "clock"]
# A small synthetic recipe for `make bench`.
DEFAULT = [
    "data.path='synthetic://1500?seed=0'",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=3",
    "callbacks.rich_progress_bar=null",
    "aug=basic",
]


class ValidationClock(pl.Callback):
    """Writes the CSV header to `path` when the fit starts, then appends (epoch, seconds since `start`,
    val/acc) after every validation of the fit."""

    def __init__(self, path: str, start: float) -> None:
        self.path, self.start = Path(path), start

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not before the run: train.py refuses a folder that already holds files.
        self.path.write_text(",".join(COLUMNS) + "\n")

    # Not on_validation_epoch_end: Lightning calls callbacks' before the module's, which logs val/acc.
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val/acc" not in trainer.callback_metrics:
            return
        row = [trainer.current_epoch, round(time.monotonic() - self.start, 3)]
        row += [float(trainer.callback_metrics["val/acc"]), "measured"]
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(row)


def train_and_clock(overrides: list[str], out: Path) -> list[dict[str, str]]:
    table = out / "time_to_accuracy.csv"
    start = time.monotonic()
    cfg = compose_run("train", overrides, out)
    with open_dict(cfg):
        if cfg.callbacks is None:  # callbacks=none
            cfg.callbacks = {}
        cfg.callbacks.validation_clock = {
            "_target_": "__main__.ValidationClock",
            "path": str(table),
            "start": start,
        }
    run(cfg)
    return read(table)


def from_run(run_dir: Path) -> list[dict[str, str]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with (run_dir / "history.csv").open() as f:
        history = [r for r in csv.DictReader(f) if r.get("val/acc")]
    per_epoch = metrics["time_per_epoch_s"]
    return [
        {
            "epoch": r["epoch"],
            "time_s": f"{(int(r['epoch']) + 1) * per_epoch:.3f}",
            "val_acc": r["val/acc"],
            "clock": "estimated",
        }
        for r in history
    ]


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def plot(rows: list[dict[str, str]], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([float(r["time_s"]) for r in rows], [float(r["val_acc"]) for r in rows], "-o", markersize=3)
    ax.set_xlabel(f"wall-clock seconds ({rows[0]['clock'] if rows else 'measured'})")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="read this run dir instead of training")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / f"bench/results/time_to_accuracy/{time.strftime('%Y-%m-%d_%H-%M-%S')}",
        help="a new folder (default: one per run under bench/results/time_to_accuracy/)",
    )
    parser.add_argument("overrides", nargs="*", help=f"train.py overrides (default: {' '.join(DEFAULT)})")
    args = parser.parse_args()
    if args.run:
        rows, title, out = from_run(args.run), str(args.run), args.run
        with (out / "time_to_accuracy.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        overrides = args.overrides or DEFAULT
        rows, title, out = train_and_clock(overrides, args.out), " ".join(overrides), args.out
    if not rows:
        sys.exit(f"no validation accuracy recorded in {out}")
    plot(rows, title, out / "time_to_accuracy.png")
    for r in rows:
        print(
            f"epoch {r['epoch']:>3}  {float(r['time_s']):8.1f} s  val/acc {float(r['val_acc']):.4f}  ({r['clock']})"
        )
    print(f"wrote {out / 'time_to_accuracy.csv'} and {out / 'time_to_accuracy.png'}")


if __name__ == "__main__":
    main()

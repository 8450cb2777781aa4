"""Per-epoch training history: `history.csv` and `history.png` in the run dir."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from fer import rundir
from fer.files import write_text
from fer.plots import plot_history


class History(pl.Callback):
    """Records every epoch-level train/ and val/ metric and the learning rate once per epoch.

    The rows live in the checkpoint (plain floats), so a resumed run continues its history.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, float]] = []
        self.epochs_this_fit = 0  # not in the checkpoint: a resumed run's rows include earlier fits'

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs_this_fit = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation of this epoch has already run, so its metrics are in callback_metrics too.
        if trainer.sanity_checking:
            return
        row: dict[str, float] = {"epoch": trainer.current_epoch}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith(("train/", "val/")):
                row[key] = float(value)
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        self.epochs_this_fit += 1
        if trainer.is_global_zero:
            self.write()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            plot_history(self.rows, self.run_dir / rundir.HISTORY_PNG)

    def write(self) -> Path:
        text = io.StringIO()
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        return write_text(self.run_dir / rundir.HISTORY_CSV, text.getvalue())

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

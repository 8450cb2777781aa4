"""`BudgetProgress`: one log line per epoch with the time spent and what is left of the run's budget."""

from __future__ import annotations

import logging
import math
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer

from fer.schedules import budget_schedule

log = logging.getLogger(__name__)


class BudgetProgress(pl.Callback):
    """After each training epoch, logs the elapsed time, the mean epoch time, and the time left of
    `trainer.max_time` (when set), of a budgeted schedule (`sched=budget`: its share spent, and its
    seconds when it has them), and the epochs still to come at the pace of those since the last line.

    The forecast takes the latest pace, not the mean: with progressive resizing (`aug.progressive_start`)
    epochs slow down as the faces grow, and the mean pace of the small early ones overstates what is left.
    While the faces still grow, the latest pace overstates it too, by less."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.first_epoch = 0  # a resumed run starts later
        self.last = (0.0, 0, 0.0)  # at the last line: seconds elapsed, epochs done, schedule share spent

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.monotonic()
        self.first_epoch = trainer.current_epoch
        schedule = budget_schedule(trainer)  # a resumed schedule has spent some of its budget already
        self.last = (0.0, 0, schedule.progress if schedule is not None else 0.0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.start is None:
            return
        elapsed = time.monotonic() - self.start
        done = trainer.current_epoch + 1 - self.first_epoch
        last_elapsed, last_done, last_spent = self.last
        recent = max(done - last_done, 1)  # the epochs since the last line
        pace = max(elapsed - last_elapsed, 1e-9) / recent  # seconds per epoch lately
        epochs_left = max(trainer.max_epochs - trainer.current_epoch - 1, 0) if trainer.max_epochs else None
        schedule = budget_schedule(trainer)
        schedule_note = ""
        spent = 0.0
        seconds_left = None  # of the schedule's clock, when it has one
        if schedule is not None:
            # The schedule, not max_epochs, ends the fit: what is left is its unspent share.
            spent = schedule.progress
            schedule_note = f", {100 * spent:.0f}% of the schedule's budget spent"
            if schedule.seconds:
                seconds_left = max(schedule.seconds - schedule.elapsed, 0)
                schedule_note += f" ({seconds_left:.0f} s of {schedule.seconds:.0f} s left)"
            share = (spent - last_spent) / recent  # of the budget, per epoch lately
            epochs_left = math.ceil((1 - spent) / share - 1e-9) if share > 0 else epochs_left
        self.last = (elapsed, done, spent)
        message = f"epoch {trainer.current_epoch}: {elapsed:.0f} s elapsed, {elapsed / done:.1f} s/epoch"
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        remaining = timer.time_remaining("train") if timer is not None else None
        if remaining is not None:
            remaining = max(remaining, 0.0)  # the last epoch may end just past the budget
            message += f", {remaining:.0f} s left of the max_time budget"
            # A timed schedule ends within its seconds left; an epoch count at a changing pace only guesses
            # (the speedrun's max_time, 30 s past its schedule, was said to cut an epoch it never cut).
            needed = epochs_left * pace if epochs_left is not None else None
            if seconds_left is not None:
                needed = seconds_left if needed is None else min(needed, seconds_left)
            if needed is not None and remaining < needed:
                message += f" (it stops ~{math.ceil((needed - remaining) / pace)} epochs early)"
        message += schedule_note
        if epochs_left is not None:
            message += f", {epochs_left} epochs to go (~{epochs_left * pace:.0f} s)"
        log.info(message)

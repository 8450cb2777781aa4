"""Budget callbacks: `BudgetProgress` logs the time spent and left each epoch; `RunDeadline` ends a timed
schedule early enough for the whole run, its test included, to fit a deadline."""

from __future__ import annotations

import logging
import math
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer

from fer.callbacks.snapshots import Snapshots
from fer.schedules import budget_schedule
from fer.tta import num_views

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


class RunDeadline(pl.Callback):
    """Shortens a budget in seconds (`sched=budget` with `seconds`) so that the whole run, the last
    validation and the test included, ends within `seconds` of the callback's construction, at the start
    of the run, after Python has imported torch.

    The schedule's seconds count only the fit. What follows it (one more validation, then the test with
    its TTA views, for each snapshot of callbacks.snapshots too) takes what the CPU's pace makes it: ~30 s
    with bf16 on this machine's 2 cores, 65-80 s in fp32. After each validation it is estimated from that
    validation's own time, scaled by the faces, views and snapshots the test will score, plus `margin`
    seconds (loading the best checkpoint, writing the run's files); if the deadline leaves the schedule less
    than it has, the schedule ends sooner. Its learning rate then steps down a little: the same linear decay,
    over a shorter budget. On a machine fast enough the schedule is left alone.
    """

    def __init__(self, seconds: float, margin: float = 15.0) -> None:
        if seconds <= 0:
            raise ValueError(f"callbacks.run_deadline.seconds must be positive, got {seconds}")
        if margin < 0:
            raise ValueError(f"callbacks.run_deadline.margin must be at least 0, got {margin}")
        self.seconds, self.margin = float(seconds), float(margin)
        self.start = time.monotonic()
        self._val_start: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedule = budget_schedule(trainer)
        if schedule is None or not schedule.seconds:
            raise ValueError(
                "callbacks.run_deadline shortens a schedule in seconds, and this run has none: use "
                "sched=budget with sched.scheduler.seconds set, or drop callbacks.run_deadline"
            )
        if "val" not in trainer.datamodule.faces:
            raise ValueError(
                "callbacks.run_deadline measures the pace on the validation split, and this run has none: "
                "set data.splits.val or data.val_fraction, or drop callbacks.run_deadline"
            )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.monotonic()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._val_start is None:
            return
        now = time.monotonic()
        faces = trainer.datamodule.faces
        test_faces = len(faces["test"]) * num_views(getattr(pl_module, "tta", None)) if "test" in faces else 0
        # A snapshot ensemble (callbacks.snapshots) scores every face with each snapshot as well.
        test_faces *= 1 + sum(cb.epochs for cb in trainer.callbacks if isinstance(cb, Snapshots))
        # This validation's pace, per face, for the last one and the test: both score inputs of one size in eval mode.
        reserve = (now - self._val_start) * (1 + test_faces / len(faces["val"])) + self.margin
        left = self.seconds - (now - self.start) - reserve  # for fitting, from now
        left = float(trainer.strategy.broadcast(left, src=0))  # every rank must step the same rates
        schedule = budget_schedule(trainer)
        before = schedule.seconds
        schedule.end_within(left)
        if schedule.seconds < before - 1:
            log.info(
                "run deadline (%.0f s): the schedule's budget shrinks from %.0f s to %.0f s, leaving ~%.0f s "
                "for the last validation and the test",
                self.seconds,
                before,
                schedule.seconds,
                reserve,
            )

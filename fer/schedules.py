"""`BudgetedLR`: warm-up then linear decay to zero over a budget of steps or of wall-clock seconds."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class BudgetedLR(LRScheduler):
    """Linear warm-up from `start` x lr to lr over the first `warmup` of the budget, then linear decay to
    zero at its end. Progress is the larger of steps / `total_steps` and fitting seconds / `seconds` (either
    may be None: no budget of that kind).

    Linear decay to zero is the schedule that does best at a fixed budget (Li et al. 2020, "Budgeted
    training"). Torch has no scheduler that measures its budget in seconds: with `seconds` set the
    schedule completes on a fast or a slow machine alike (only the number of steps differs), and
    `finished` tells the training loop to stop. The seconds are those between scheduler steps, so
    validation and checkpointing count; they are saved with the scheduler, and the time a run spent
    stopped before a resume does not count. Under DDP `sync` keeps the clock instead of `step`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None,
        seconds: float | None = None,
        warmup: float = 0.2,
        start: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None and seconds is None:
            raise ValueError("BudgetedLR needs a budget: total_steps, seconds or both")
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"BudgetedLR total_steps must be at least 1, got {total_steps}")
        if seconds is not None and seconds <= 0:
            raise ValueError(f"BudgetedLR seconds must be positive or null, got {seconds}")
        if not 0 <= warmup < 1:
            raise ValueError(f"BudgetedLR warmup must be a fraction in [0, 1), got {warmup}")
        self.total_steps, self.seconds = None if total_steps is None else int(total_steps), seconds
        self.warmup, self.start = float(warmup), float(start)
        self.elapsed = 0.0
        self._tick: float | None = None
        self._synced = False
        super().__init__(optimizer, last_epoch)
        self._tick = None  # the clock starts at the first training step, not at construction

    @property
    def progress(self) -> float:
        """The fraction of the budget spent, in [0, 1]."""
        spent = max(self.last_epoch, 0) / self.total_steps if self.total_steps else 0.0
        if self.seconds:
            spent = max(spent, self.elapsed / self.seconds)
        return min(spent, 1.0)

    @property
    def finished(self) -> bool:
        return self.progress >= 1.0

    def _advance_clock(self) -> float:
        """Add the time since the last reading to `elapsed`; return the reading."""
        now = time.perf_counter()
        if self._tick is not None:
            self.elapsed += now - self._tick
        return now

    def end_within(self, seconds: float) -> None:
        """Shorten the budget in seconds so that it is spent at most `seconds` from now; never lengthen it.
        A deadline past already (`seconds` <= 0) spends it now: the fit stops at its next step."""
        if not self.seconds:
            raise ValueError("BudgetedLR.end_within needs a budget in seconds")
        now = self.elapsed + (time.perf_counter() - self._tick if self._tick is not None else 0.0)
        # Kept positive: a budget of 0 seconds would read as no budget in seconds at all.
        self.seconds = max(min(self.seconds, now + max(seconds, 0.0)), 1e-6)

    def step(self, epoch: int | None = None) -> None:  # noqa: ARG002 (the base signature)
        if not self._synced:
            self._tick = self._advance_clock()
        super().step()

    def sync(self, broadcast: Callable[[float], float]) -> None:
        """Advance the clock and take rank 0's reading: under DDP every rank must step the same learning
        rates and stop together. Call it before each `step`; from the first call on, `step` leaves the
        clock alone, so that a rank's own time never moves its rates between two readings."""
        self._synced = True
        self._tick = self._advance_clock()
        self.elapsed = float(broadcast(self.elapsed))

    def get_lr(self) -> list[float]:
        p = self.progress
        if p < self.warmup:
            factor = self.start + (1 - self.start) * p / self.warmup
        else:
            factor = (1 - p) / (1 - self.warmup)
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # A wall-clock reading means nothing in another process, which may also run without DDP.
        state.pop("_tick", None)
        state.pop("_synced", None)
        return state


def sized_by_trainer(scheduler: Mapping[str, Any] | None) -> bool:
    """Whether a scheduler config (`sched.scheduler`) takes its length from the trainer's steps when the fit
    starts (`total_steps: null`, as one-cycle's and BudgetedLR's do)."""
    return bool(scheduler) and "total_steps" in scheduler and scheduler["total_steps"] is None


def budget_schedule(trainer: pl.Trainer) -> BudgetedLR | None:
    """The trainer's `BudgetedLR`, if it steps one."""
    return next(
        (c.scheduler for c in trainer.lr_scheduler_configs if isinstance(c.scheduler, BudgetedLR)), None
    )


def fit_progress(trainer: pl.Trainer) -> float:
    """The fraction of the fit spent, in [0, 1]: a `BudgetedLR`'s progress (steps or seconds), else the
    optimizer steps taken over those the trainer expects (max_epochs or max_steps)."""
    schedule = budget_schedule(trainer)
    if schedule is not None:
        return schedule.progress
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise ValueError(
            "the fit has no known length to measure progress by: set trainer.max_epochs or "
            "trainer.max_steps, or use sched=budget"
        )
    return min(trainer.global_step / max(total, 1), 1.0)

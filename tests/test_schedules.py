"""BudgetedLR: warm-up then linear decay over a budget of steps or seconds; training windows (aug.crop)."""

import logging
import time
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import Timer

from fer.callbacks.budget import BudgetProgress, RunDeadline
from fer.callbacks.snapshots import Snapshots
from fer.data.transforms import random_crop
from fer.module import FERModule
from fer.schedules import BudgetedLR, fit_progress
from fer.schema import ConfigError
from fer.tta import tta_views


def _scheduler(**kwargs) -> BudgetedLR:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return BudgetedLR(optimizer, **kwargs)


def test_step_budget_warms_up_then_decays_to_zero() -> None:
    scheduler = _scheduler(total_steps=10, warmup=0.2, start=0.1)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(10):
        scheduler.optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[:4] == pytest.approx([0.1, 0.55, 1.0, 0.875])
    assert lrs[-1] == 0.0 and scheduler.finished


def test_seconds_budget_ends_the_schedule_first_and_survives_a_state_round_trip() -> None:
    scheduler = _scheduler(total_steps=1000, seconds=10.0, warmup=0.0)
    scheduler.sync(lambda _: 7.5)  # rank 0's clock says three quarters of the budget are spent
    scheduler.step()
    assert scheduler.progress == pytest.approx(0.75, abs=1e-3)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.25, abs=1e-3)
    state = scheduler.state_dict()
    assert "_tick" not in state
    resumed = _scheduler(total_steps=1000, seconds=10.0, warmup=0.0)
    resumed.load_state_dict(state)
    assert resumed.elapsed == pytest.approx(scheduler.elapsed) and not resumed.finished
    resumed.sync(lambda _: 10.0)
    assert resumed.finished


def test_ddp_sync_counts_every_batch_and_steps_on_rank_zeros_reading_only() -> None:
    # fer's order each batch: the training step, on_before_optimizer_step (sync), the scheduler's step.
    alone = _scheduler(total_steps=1000, seconds=100.0)
    synced = _scheduler(total_steps=1000, seconds=100.0)
    for _ in range(3):
        time.sleep(0.05)  # a batch's forward, backward and optimizer step
        alone.step()
        synced.sync(lambda elapsed: elapsed)  # one rank: rank 0's reading is its own
        synced.step()
    # The batches after the first both count, with DDP as without.
    assert alone.elapsed >= 0.1 and synced.elapsed >= 0.1
    reading = synced.elapsed
    time.sleep(0.05)
    synced.step()
    assert synced.elapsed == reading  # the rates of a step come from the broadcast reading alone
    assert "_synced" not in synced.state_dict()


def test_end_within_shortens_a_seconds_budget_and_never_lengthens_it(monkeypatch) -> None:
    clock = SimpleNamespace(perf_counter=lambda: 50.0)
    monkeypatch.setattr("fer.schedules.time", clock)
    scheduler = _scheduler(total_steps=None, seconds=100.0)
    scheduler.elapsed, scheduler._tick = 30.0, 45.0  # 30 s counted at the last step, 5 s ago
    scheduler.end_within(40.0)  # 35 s spent now, 40 more allowed
    assert scheduler.seconds == pytest.approx(75.0)
    scheduler.end_within(60.0)
    assert scheduler.seconds == pytest.approx(75.0)
    scheduler.end_within(-3.0)  # a deadline already past: the budget is spent now
    assert scheduler.seconds == pytest.approx(35.0)
    clock.perf_counter = lambda: 51.0
    scheduler.optimizer.step()
    scheduler.step()
    assert scheduler.finished and scheduler.get_last_lr()[0] == 0.0
    with pytest.raises(ValueError, match="needs a budget in seconds"):
        _scheduler(total_steps=10).end_within(5.0)


def _validate(
    callback: RunDeadline,
    scheduler: BudgetedLR,
    clock: SimpleNamespace,
    start: float,
    end: float,
    snapshots: int = 0,
):
    """Run `callback`'s validation hooks at clock readings `start` and `end` on a stand-in trainer: 100 val
    faces, 50 test faces, a module tested with ten-crop TTA and `snapshots` snapshots (callbacks.snapshots)."""
    trainer = SimpleNamespace(
        callbacks=[callback, *([Snapshots("unused", epochs=snapshots)] if snapshots else [])],
        sanity_checking=False,
        lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)],
        datamodule=SimpleNamespace(faces={"val": [0] * 100, "test": [0] * 50}),
        strategy=SimpleNamespace(broadcast=lambda value, src: value),
    )
    module = SimpleNamespace(tta={"name": "crops", "flip": True, "shift": 2})
    clock.monotonic = clock.perf_counter = lambda: start
    callback.on_validation_epoch_start(trainer, module)
    clock.monotonic = clock.perf_counter = lambda: end
    callback.on_validation_epoch_end(trainer, module)


def test_run_deadline_ends_the_schedule_in_time_for_the_last_validation_and_the_test(monkeypatch, caplog):
    clock = SimpleNamespace(monotonic=lambda: 0.0, perf_counter=lambda: 0.0)
    monkeypatch.setattr("fer.schedules.time", clock)
    monkeypatch.setattr("fer.callbacks.budget.time", clock)
    callback = RunDeadline(seconds=100.0, margin=5.0)  # the run starts at 0
    scheduler = _scheduler(total_steps=None, seconds=1000.0)
    scheduler.elapsed, scheduler._tick = 30.0, 40.0  # the fit started at 10 s; its last step was at 40 s
    with caplog.at_level(logging.INFO, logger="fer.callbacks.budget"):
        _validate(callback, scheduler, clock, start=40.0, end=42.0)
    # 2 s for 100 faces: the last validation takes 2 s more and the test's 50 faces x 10 views 10 s, plus
    # the 5 s margin; 58 s to the deadline leave the fit 41 s from now, when its clock reads 32 s.
    assert scheduler.seconds == pytest.approx(73.0)
    assert "shrinks from 1000 s to 73 s, leaving ~17 s for the last validation and the test" in caplog.text
    # A faster validation later asks for no more time than the schedule has left: it is left alone.
    scheduler.elapsed, scheduler._tick = 40.0, 50.0
    _validate(callback, scheduler, clock, start=50.0, end=50.5)
    assert scheduler.seconds == pytest.approx(73.0)
    # A deadline far off leaves a schedule alone from the start.
    roomy = _scheduler(total_steps=None, seconds=1000.0)
    roomy.elapsed, roomy._tick = 30.0, 40.0
    _validate(RunDeadline(seconds=5000.0), roomy, clock, start=40.0, end=42.0)
    assert roomy.seconds == 1000.0
    # Two snapshots score the test's faces twice more: 30 s for the test, so the fit gets 20 s less.
    with_snapshots = _scheduler(total_steps=None, seconds=1000.0)
    with_snapshots.elapsed, with_snapshots._tick = 30.0, 40.0
    clock.monotonic = lambda: 0.0
    callback = RunDeadline(seconds=100.0, margin=5.0)
    _validate(callback, with_snapshots, clock, start=40.0, end=42.0, snapshots=2)
    assert with_snapshots.seconds == pytest.approx(53.0)


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        _scheduler(total_steps=0)
    with pytest.raises(ValueError, match="seconds"):
        _scheduler(total_steps=5, seconds=-1.0)


def test_fit_progress_without_a_budget_schedule_needs_a_known_length() -> None:
    trainer = SimpleNamespace(lr_scheduler_configs=[], global_step=30, estimated_stepping_batches=120)
    assert fit_progress(trainer) == 0.25
    trainer.estimated_stepping_batches = float("inf")
    with pytest.raises(ValueError, match="trainer.max_epochs"):
        fit_progress(trainer)


def test_random_crop_takes_a_window_of_each_image() -> None:
    images = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    crops = random_crop(images, 4, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (2, 1, 4, 4)
    for image, crop in zip(images, crops, strict=True):
        windows = [image[:, r : r + 4, c : c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(crop, w) for w in windows)
    with pytest.raises(ValueError, match="crop size"):
        random_crop(images, 7)


def test_a_cropped_model_sees_the_centre_window_and_ten_crop_views_are_its_corners() -> None:
    torch.manual_seed(0)
    model = {"_target_": "fer.models.vgg.VGG", "layers": [4, "M", 8], "head": [], "pool": "avg"}
    module = FERModule(model=model, optim={}, input_size=40).eval()
    faces = torch.rand(3, 1, 48, 48) * 255
    assert torch.allclose(module(faces), module(faces[..., 4:44, 4:44]))
    views = tta_views(faces, shift=4)
    corners = [faces[..., y : y + 40, x : x + 40] for y in (0, 8) for x in (0, 8)]
    for view, corner in zip(views[1:], corners, strict=True):
        assert torch.allclose(module(view), module(corner))


def test_a_crop_the_model_cannot_take_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"aug.crop=40: the model fer.models.cnn4.CNN4 cannot take 40x40"):
        FERModule(model={"_target_": "fer.models.cnn4.CNN4"}, optim={}, input_size=40)


def _progress_line(
    caplog, seconds_left: float, epoch: int, max_epochs: int, elapsed: float, schedulers: list, callback=None
) -> BudgetProgress:
    """Run BudgetProgress's epoch-end hook on a stand-in trainer whose max_time Timer has `seconds_left`,
    `elapsed` seconds after the fit started; its log line lands in `caplog`."""
    timer = Timer(duration="00:01:00:00")
    timer.time_remaining = lambda stage: seconds_left  # noqa: ARG005 (the seconds left, as Lightning's Timer says)
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        current_epoch=epoch,
        max_epochs=max_epochs,
        callbacks=[timer],
        lr_scheduler_configs=[SimpleNamespace(scheduler=s) for s in schedulers],
    )
    if callback is None:
        callback = BudgetProgress()
        callback.start = time.monotonic() - elapsed
    with caplog.at_level(logging.INFO, logger="fer.callbacks.budget"):
        callback.on_train_epoch_end(trainer, None)
    return callback


def test_progress_line_reports_the_schedules_budget(caplog) -> None:
    scheduler = _scheduler(total_steps=1000, seconds=100.0)
    scheduler.sync(lambda _: 25.0)  # a quarter of the seconds spent
    # two epochs took 20 s; max_time (1000 s left) is no constraint here
    _progress_line(caplog, 1000.0, epoch=1, max_epochs=1000, elapsed=20.0, schedulers=[scheduler])
    # 2 epochs spent 25% of the budget: 6 more at 10 s each, not the 998 that max_epochs allows, and
    # max_time, which holds 100 more, cuts none of them
    assert (
        "1000 s left of the max_time budget, 25% of the schedule's budget spent (75 s of 100 s left), "
        "6 epochs to go (~60 s)"
    ) in caplog.text


def test_progress_line_says_how_many_epochs_max_time_cuts(caplog) -> None:
    # the first epoch took 68 s
    callback = _progress_line(caplog, 1012.0, epoch=0, max_epochs=16, elapsed=68.0, schedulers=[])
    # 15 epochs to go need ~1020 s; 1012 s hold 14 of them: the budget cuts one epoch, not 14
    assert "1012 s left of the max_time budget (it stops ~1 epochs early), 15 epochs to go" in caplog.text
    # the last epoch ended 3 s past the budget: nothing is cut
    _progress_line(caplog, -3.0, epoch=15, max_epochs=16, elapsed=0.0, schedulers=[], callback=callback)
    assert "0 s left of the max_time budget, 0 epochs to go" in caplog.text


def test_progress_line_forecasts_at_the_latest_pace(caplog) -> None:
    # progressive resizing: a 10 s epoch spent 10% of the budget, then a 20 s one spent 20% more
    scheduler = _scheduler(total_steps=1000, seconds=100.0)
    scheduler.sync(lambda _: 10.0)
    callback = _progress_line(caplog, 1000.0, epoch=0, max_epochs=1000, elapsed=10.0, schedulers=[scheduler])
    assert "9 epochs to go (~90 s)" in caplog.text
    callback.start -= 20.0  # the second epoch took 20 s
    scheduler.sync(lambda _: 30.0)
    _progress_line(
        caplog, 1000.0, epoch=1, max_epochs=1000, elapsed=0.0, schedulers=[scheduler], callback=callback
    )
    # the mean pace (15 s for 15%) would promise 5 more epochs; at the latest (20 s for 20%) 4 come, in 80 s
    assert "15.0 s/epoch" in caplog.text
    assert "4 epochs to go (~80 s)" in caplog.text


def test_max_time_cuts_a_timed_schedule_only_when_its_seconds_outlast_it(caplog) -> None:
    scheduler = _scheduler(total_steps=1000, seconds=100.0)
    scheduler.sync(lambda _: 25.0)  # 75 s of the schedule left
    # two epochs took 26 s: 6 more at 13 s would take 78 s, but the schedule ends in 75, inside max_time's 77
    _progress_line(caplog, 77.0, epoch=1, max_epochs=1000, elapsed=26.0, schedulers=[scheduler])
    assert "77 s left of the max_time budget, 25% of the schedule's budget spent" in caplog.text
    # 60 s of max_time leave 15 of the schedule's seconds unspent: ~2 epochs at 13 s
    _progress_line(caplog, 60.0, epoch=1, max_epochs=1000, elapsed=26.0, schedulers=[scheduler])
    assert "60 s left of the max_time budget (it stops ~2 epochs early)" in caplog.text


def test_progress_line_after_a_resume_counts_only_this_fits_share(caplog) -> None:
    scheduler = _scheduler(total_steps=1000, seconds=100.0)
    scheduler.sync(lambda _: 50.0)  # the run stopped half-way through its budget
    callback = BudgetProgress()
    callback.on_train_start(
        SimpleNamespace(current_epoch=5, lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)]), None
    )
    callback.start -= 10.0
    scheduler.sync(lambda _: 60.0)  # the first epoch after the resume took 10 s and spent 10%
    _progress_line(
        caplog, 1000.0, epoch=5, max_epochs=1000, elapsed=0.0, schedulers=[scheduler], callback=callback
    )
    assert "4 epochs to go (~40 s)" in caplog.text

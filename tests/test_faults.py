"""Faults a run must survive or refuse clearly, one test (or a few) per case:

| case                                   | test                                                        |
|----------------------------------------|-------------------------------------------------------------|
| kill -9 after an epoch / mid-epoch     | test_killed_run_resumes_exactly (SIGKILL cases)             |
| kill -9 in the first epoch             | test_killed_run_resumes_exactly (slow)                      |
| SIGTERM (pre-emption)                  | test_killed_run_resumes_exactly (slow SIGTERM case)         |
| SLURM auto-requeue resume              | test_slurm_requeue_resumes_lightnings_hpc_checkpoint        |
| last.ckpt whatever the metric did      | test_last_checkpoint_follows_every_epoch                    |
| second run into a used run dir         | test_used_run_dir_is_refused_then_moved_aside_on_request    |
| rerun after a start that failed        | test_a_start_that_failed_before_training_leaves_its_folder_free |
| resume with a different config         | test_resume_with_other_config_lists_the_keys                |
| stale error.txt after a resume         | test_successful_resume_removes_stale_error                  |
| NaN / inf loss                         | test_non_finite_loss_stops_and_names_where                  |
| NaN in metrics.json                    | test_metrics_json_is_strict                                 |
| bad config values                      | test_bad_config_value_is_named_before_data_is_read, ...     |
| skipped rows reported                  | test_skipped_rows_reach_log_and_metrics, test_report_...   |
| duplicate ids in test.csv              | test_duplicate_test_ids_name_their_lines                    |
| corrupted checkpoint                   | test_changed_checkpoint_is_refused_by_analyze, ..._on_resume |
| concurrent atomic writes               | test_concurrent_writers_never_collide                       |
"""

from __future__ import annotations

import csv
import html
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from omegaconf import OmegaConf

from fer import rundir
from fer.analysis.select import checkpoint_path
from fer.callbacks.runstate import NonFiniteError
from fer.data import DataError, read_dataset
from fer.data.datamodule import FERDataModule
from fer.files import write_json, write_text
from fer.report import write_report
from fer.schema import ConfigError, validate
from fer.train import read_data, resolve_ckpt_path, run
from tests.conftest import CONF, ROOT, compose_config, damaged_copy, quick_run

# A seeded run small enough to repeat several times: 300 faces, batches of 16, 3 train batches an epoch,
# with augmentation (flips, shifts) and shuffling, so every random stream matters.
TINY = [
    *quick_run(300),
    "callbacks.model_summary=null",
    "debug=fast",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.max_epochs=2",
    "aug=basic",
    "seed=0",
]


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / rundir.HISTORY_CSV).open() as f:
        return list(csv.DictReader(f))


def results(run_dir: Path) -> tuple[list[dict[str, str]], dict]:
    """history.csv and metrics.json without the wall-clock fields (rundir.TIMING_KEYS)."""
    metrics = json.loads((run_dir / rundir.METRICS).read_text())
    return history(run_dir), {k: v for k, v in metrics.items() if k not in rundir.TIMING_KEYS}


class Kill(pl.Callback):
    """Sends `sig` to its own process when batch `batch` of epoch `epoch` is about to train."""

    def __init__(self, epoch: int, batch: int, sig: int) -> None:
        self.epoch, self.batch, self.sig = epoch, batch, sig

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.sig)


def killed_run(run_dir: str, epoch: int, batch: int, sig: int) -> None:
    """TINY in `run_dir`, killed by `sig` at (epoch, batch); run in a subprocess by the tests below.

    The killer is added to the callbacks in code, not config, so the config matches the resumed run's."""
    import fer.train

    build = fer.train.build_callbacks
    fer.train.build_callbacks = lambda cfg, path: [*build(cfg, path), Kill(epoch, batch, sig)]
    run(compose_config("train", TINY, Path(run_dir)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, tuple]:
    """An uninterrupted TINY run; its folder is freed (renamed) so the killed runs can use the same path,
    which the checkpoints record."""
    base = tmp_path_factory.mktemp("faults")
    run(compose_config("train", TINY, base / "run"))
    (base / "run").rename(base / "reference")
    return base / "run", results(base / "reference")


@pytest.mark.parametrize(
    ("epoch", "batch", "sig"),
    [
        # right after the first epoch's checkpoint
        pytest.param(1, 0, signal.SIGKILL, marks=pytest.mark.slow),
        (1, 2, signal.SIGKILL),  # in the middle of an epoch
        pytest.param(0, 1, signal.SIGKILL, marks=pytest.mark.slow),  # in the first epoch
        pytest.param(1, 1, signal.SIGTERM, marks=pytest.mark.slow),  # pre-emption
    ],
)
def test_killed_run_resumes_exactly(reference, epoch, batch, sig):
    run_dir, expected = reference
    shutil.rmtree(run_dir, ignore_errors=True)
    code = f"from tests.test_faults import killed_run; killed_run({str(run_dir)!r}, {epoch}, {batch}, {int(sig)})"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if sig == signal.SIGKILL:
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        assert not (run_dir / rundir.METRICS).exists()
    else:
        assert done.returncode != 0, done.stderr[-2000:]
        error = (run_dir / rundir.ERROR).read_text()
        assert "stopped by SIGTERM at epoch 1" in error and "last.ckpt (end of epoch 0)" in error
    run(compose_config("train", [*TINY, "ckpt_path=last"], run_dir))
    rows, metrics = results(run_dir)
    assert rows == expected[0]
    # The checkpoint files' sha256 fingerprint their bytes, which also hold Lightning's bookkeeping of
    # how the run got there (loop and callback progress counters); what they hold of the model is compared
    # below instead: the same weights, to the bit.
    hashes = metrics.pop("checkpoints")
    assert set(hashes) == set(expected[1]["checkpoints"])
    assert {k: v for k, v in metrics.items() if v != expected[1][k]} == {}
    reference_dir = run_dir.parent / "reference"
    for name in (rundir.BEST_CKPT, rundir.LAST_CKPT):
        resumed = torch.load(run_dir / name, weights_only=True)["state_dict"]
        uninterrupted = torch.load(reference_dir / name, weights_only=True)["state_dict"]
        assert resumed.keys() == uninterrupted.keys()
        assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed), name
    assert not (run_dir / rundir.ERROR).exists()


def test_resumed_checkpoint_loads_weights_only_with_random_state(reference):
    run_dir, _ = reference
    state = torch.load(run_dir.parent / "reference" / rundir.LAST_CKPT, weights_only=True)
    assert state["epoch"] == 1 and len(state["callbacks"]["History"]["rows"]) == 2
    rng = state["callbacks"]["RunState"]["rng"]
    assert set(rng) == {"python", "numpy", "torch", "torch.cuda"} and len(rng["numpy"][1]) == 624


def test_slurm_requeue_resumes_lightnings_hpc_checkpoint(tmp_path, monkeypatch):
    for n in (1, 2, 10):
        (tmp_path / f"hpc_ckpt_{n}.ckpt").touch()
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert resolve_ckpt_path(None, tmp_path) is None  # outside SLURM: a fresh start
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "fer")
    assert resolve_ckpt_path(None, tmp_path) == str(tmp_path / "hpc_ckpt_10.ckpt")


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory) -> Path:
    """Two epochs that learn nothing (lr 1e-12): val/acc never improves after epoch 0."""
    run_dir = tmp_path_factory.mktemp("flat") / "run"
    run(compose_config("train", [*TINY, "optim.lr=1e-12"], run_dir))
    return run_dir


def test_last_checkpoint_follows_every_epoch(flat_run):
    assert torch.load(flat_run / rundir.BEST_CKPT, weights_only=True)["epoch"] == 0
    assert torch.load(flat_run / rundir.LAST_CKPT, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in (flat_run / rundir.CHECKPOINTS).iterdir()) == ["best.ckpt", "last.ckpt"]


def test_resume_with_other_config_lists_the_keys(flat_run):
    before = (flat_run / rundir.METRICS).read_text()
    overrides = [*TINY, "optim.lr=0.1", "data.batch_size=8", "trainer.max_epochs=5", "ckpt_path=last"]
    with pytest.raises(rundir.RunDirError) as caught:
        run(compose_config("train", overrides, flat_run))
    message = str(caught.value)
    assert "optim.lr: 1e-12 -> 0.1" in message and "data.batch_size: 16 -> 8" in message
    assert "max_epochs:" not in message  # a budget key
    assert (flat_run / rundir.METRICS).read_text() == before and not (flat_run / rundir.ERROR).exists()


@pytest.mark.parametrize("sched", ["onecycle", "budget"])
def test_resume_keeps_the_length_of_a_schedule_sized_in_steps(tmp_path, sched):
    def resolved(*overrides: str) -> dict:
        return OmegaConf.to_container(compose_config("train", [*TINY, *overrides], tmp_path), resolve=True)

    longer = rundir.config_differences(
        resolved(f"sched={sched}"), resolved(f"sched={sched}", "trainer.max_epochs=5")
    )
    assert len(longer) == 1 and longer[0].startswith("trainer.max_epochs: 2 -> 5 (the schedule")
    assert "resumes with that length" in longer[0]
    # Without a schedule sized by it, the epoch budget is free to change.
    assert rundir.config_differences(resolved(), resolved("trainer.max_epochs=5")) == []


def test_a_fit_of_no_epoch_limit_is_sized_by_seconds_or_refused(tmp_path):
    unbounded = [*TINY, "trainer.max_epochs=-1"]
    cfg = compose_config(
        "train", [*unbounded, "sched=onecycle", "data.path=/nonexistent.csv"], tmp_path / "a"
    )
    with pytest.raises(ConfigError, match="sched.scheduler.total_steps: null .* both are -1"):
        run(cfg)  # before any data is read
    # A budget in seconds alone ends the fit (Lightning sizes such a fit at infinitely many steps).
    run(compose_config("train", [*unbounded, "sched=budget", "sched.scheduler.seconds=1"], tmp_path / "b"))
    metrics = json.loads((tmp_path / "b" / rundir.METRICS).read_text())
    assert metrics["epochs"] >= 1 and metrics["test"]["test/acc"] is not None


def test_a_run_deadline_ends_a_timed_fit_early_and_needs_one(tmp_path, caplog):
    deadline = ["callbacks=[default,run_deadline]", "trainer.max_epochs=4"]
    # A deadline already past at the first validation: the schedule's 1000 s end at the next step.
    timed = ["sched=budget", "sched.scheduler.seconds=1000", "callbacks.run_deadline.seconds=0.01"]
    with caplog.at_level(logging.INFO, logger="fer.callbacks.budget"):
        run(compose_config("train", [*TINY, *deadline, *timed], tmp_path / "a"))
    assert "run deadline (0 s): the schedule's budget shrinks from 1000 s to" in caplog.text
    metrics = json.loads((tmp_path / "a" / rundir.METRICS).read_text())
    assert metrics["epochs"] == 2 and metrics["test"]["test/acc"] is not None
    with pytest.raises(ValueError, match="callbacks.run_deadline shortens a schedule in seconds"):
        run(compose_config("train", [*TINY, *deadline], tmp_path / "b"))


def test_successful_resume_removes_stale_error(tmp_path):
    run_dir = tmp_path / "run"
    run(compose_config("train", [*TINY, "trainer.max_epochs=1"], run_dir))
    write_text(run_dir / rundir.ERROR, "Traceback: an earlier attempt failed\n")
    run(compose_config("train", [*TINY, "ckpt_path=last"], run_dir))
    assert not (run_dir / rundir.ERROR).exists()
    assert [r["epoch"] for r in history(run_dir)] == ["0", "1"]


def test_a_start_that_failed_before_training_leaves_its_folder_free(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError):
        run(compose_config("train", [*TINY, "aug.rotation=-1"], run_dir))
    with pytest.raises(DataError):  # the next try's error replaces the first one's
        run(compose_config("train", [*TINY, "data.path=/nonexistent.csv"], run_dir))
    assert "DataError" in (run_dir / rundir.ERROR).read_text()
    # Torch refuses the optimizer inside the fit, after the logger wrote its first files.
    with pytest.raises(Exception, match="Invalid beta parameter"):
        run(compose_config("train", [*TINY, "optim.betas=[2,0.9]"], run_dir))
    assert (run_dir / "csv").is_dir() and not (run_dir / rundir.CHECKPOINTS).exists()
    run(compose_config("train", TINY, run_dir))  # not refused as "already holds a run"
    assert not (run_dir / rundir.ERROR).exists() and (run_dir / rundir.METRICS).is_file()
    # The failed start's logger folder was cleared, not mixed with this run's.
    assert [p.name for p in (run_dir / "csv").iterdir()] == ["version_0"]


def test_used_run_dir_is_refused_then_moved_aside_on_request(flat_run):
    before = {p.name: p.stat().st_mtime_ns for p in flat_run.iterdir()}
    with pytest.raises(rundir.RunDirError, match="already holds a run .*ckpt_path=last.*hydra.run.dir"):
        run(compose_config("train", [*TINY, "data.path=/nonexistent.csv"], flat_run))
    assert {p.name: p.stat().st_mtime_ns for p in flat_run.iterdir()} == before
    old_best = rundir.sha256(flat_run / rundir.BEST_CKPT)

    run(compose_config("train", [*TINY, "trainer.max_epochs=1", "overwrite=true"], flat_run))
    (aside,) = flat_run.parent.glob("run.replaced-*")
    assert rundir.sha256(aside / rundir.BEST_CKPT) == old_best
    assert json.loads((aside / rundir.METRICS).read_text())["epochs"] == 2
    assert json.loads((flat_run / rundir.METRICS).read_text())["epochs"] == 1
    assert sorted(p.name for p in (flat_run / rundir.CHECKPOINTS).iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_refused_run_leaves_the_other_runs_record_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    cli = [sys.executable, "train.py", *TINY, f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path}/cache"]
    subprocess.run([*cli, "trainer.max_epochs=1"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    record = {p.name: p.read_text() for p in (run_dir / rundir.HYDRA_RECORD).iterdir()}
    assert (
        "- trainer.max_epochs=1" in record["overrides.yaml"] and "models.cnn4.CNN4" in record["config.yaml"]
    )
    log = (run_dir / rundir.JOB_LOG).read_text()
    refused = subprocess.run([*cli, "model=vgg8"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and f"error: {run_dir} already holds a run (" in refused.stderr
    assert "Traceback" not in refused.stderr and "traceback is in" not in refused.stderr
    assert {p.name: p.read_text() for p in (run_dir / rundir.HYDRA_RECORD).iterdir()} == record
    assert not (run_dir / rundir.ERROR).exists()
    assert (run_dir / rundir.JOB_LOG).read_text() == log


def test_bad_input_on_the_command_line_is_a_message_not_a_traceback(tmp_path):
    run_dir = tmp_path / "run"
    train = [sys.executable, "train.py", *TINY, f"hydra.run.dir={run_dir}"]
    how = dict(cwd=ROOT, capture_output=True, text=True, timeout=300)
    bad = subprocess.run([*train, "optim.lr=-1"], **how)
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "error: invalid config value(s):\n  optim.lr: expected a number > 0, got -1\n" in bad.stderr
    assert "Traceback" not in bad.stderr
    # The traceback is kept where the run wrote it, and the message says where.
    assert f"(the traceback is in {run_dir / rundir.ERROR})" in bad.stderr
    assert "Traceback" in (run_dir / rundir.ERROR).read_text()
    # A value that only the model's class checks: Hydra names the class, the class the value.
    bad = subprocess.run([*train, "model=vgg8", "model.activation=foo"], **how)
    assert bad.returncode == 1 and "error: Error in call to target 'fer.models.vgg.VGG'" in bad.stderr
    assert "VGG activation must be one of ['gelu', 'relu', 'selu', 'silu'], got 'foo'" in bad.stderr
    assert "Traceback" not in bad.stderr
    analyze = [sys.executable, "analyze.py", "ensemble=[]"]
    bad = subprocess.run(analyze, **how)
    assert bad.returncode == 1 and "error: ensemble=[] names no member" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_non_finite_loss_stops_and_names_where(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"non-finite training loss .* at epoch 0, step \d+") as caught:
        run(compose_config("train", [*TINY, "optim.lr=1e30"], run_dir))
    assert f"last finite checkpoint is {run_dir / rundir.LAST_CKPT} (start of training)" in str(caught.value)
    assert "NonFiniteError" in (run_dir / rundir.ERROR).read_text()
    assert not (run_dir / rundir.METRICS).exists()
    for ckpt in (run_dir / rundir.CHECKPOINTS).glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        # The network's parameters and buffers; metric states such as val_acc_best start at -inf.
        weights = [w for name, w in state.items() if name.startswith("net.") and w.is_floating_point()]
        assert weights and all(torch.isfinite(w).all() for w in weights), ckpt


def test_metrics_json_is_strict(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": None})
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": None}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("aug.rotation=abc", "aug.rotation: expected a number in [0, 180], got 'abc'"),
        ("aug.rotation=400", "aug.rotation: expected a number in [0, 180], got 400"),
        ("data.batch_size=-1", "data.batch_size: expected an integer >= 1, got -1"),
        ("data.batch_size=2.5", "data.batch_size: expected an integer >= 1, got 2.5"),
        ("aug.hflip=1.5", "aug.hflip: expected a number in [0, 1], got 1.5"),
        ("aug.alternate_flip=2", "aug.alternate_flip: expected true or false, got 2"),
        ("aug.pad_crop=30", "aug.pad_crop: expected an integer in [0, 24], got 30"),
        ("aug.padding=mirror", "aug.padding: expected one of zeros, border, reflection, got 'mirror'"),
        ("loss.label_smoothing=1", "loss.label_smoothing: expected a number in [0, 1), got 1"),
        ("loss.class_weights=maybe", "loss.class_weights: expected true or false, got 'maybe'"),
        (
            "data.normalization=zscore",
            "data.normalization: expected one of none, unit, standardize, per_image",
        ),
        ("data.val_fraction=1.0", "data.val_fraction: expected a number in (0, 1) or null, got 1.0"),
        ("trainer.max_epochs=-5", "trainer.max_epochs: expected an integer >= -1 or null, got -5"),
        ("trainer.limit_train_batches=-1", "trainer.limit_train_batches: expected an integer >= 0 (batches)"),
        ("+trainer.max_time=soon", "trainer.max_time: expected null, DD:HH:MM:SS"),
        ("tta=crops tta.shift=-2", "tta.shift: expected an integer in [0, 47], got -2"),
        ("tta=flip tta.flip=maybe", "tta.flip: expected true or false, got 'maybe'"),
        (
            "tta=crops tta.padding=reflect",
            "tta.padding: expected one of zeros, border, reflection or null, got 'reflect'",
        ),
        ("optim.lr=-1", "optim.lr: expected a number > 0, got -1"),
        ("optim.weight_decay=abc", "optim.weight_decay: expected a number >= 0, got 'abc'"),
        ("optim=sgd optim.momentum=1", "optim.momentum: expected a number in [0, 1), got 1"),
        ("optim=muon optim.muon_lr_scale=0", "optim.muon_lr_scale: expected a number > 0, got 0"),
        (
            "optim=muon optim.ns_dtype=fp16",
            "optim.ns_dtype: expected one of auto, bfloat16, float32, got 'fp16'",
        ),
        ("optim=muon optim.filter_norm=yes", "optim.filter_norm: expected true or false, got 'yes'"),
        ("model=vgg8 model.dropout=2", "model.dropout: expected a number in [0, 1), got 2"),
        ("trainer.max_epochs=0", "trainer.max_epochs: 0 trains nothing"),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches: 0 trains nothing"),
        ("data.splits.train=null", "data.splits.train: training needs a split to train on, got null"),
        (
            "data.splits.val=null",
            "data.splits.val: null with data.val_fraction null leaves nothing to validate",
        ),
        # Settings that cannot go together, named by both keys.
        (
            "aug.alternate_flip=true aug.hflip=0.5",
            "aug.alternate_flip=true and aug.hflip=0.5 both flip the faces; set aug.hflip=0",
        ),
        (
            "data.val_fraction=0.1",
            "data.val_fraction=0.1 and data.splits.val='PublicTest' both choose the validation set",
        ),
        (
            "data.on_device=true data.num_workers=2",
            "data.on_device=true serves batches from the device itself",
        ),
        ("+data.splits.tset=x", "data.splits has unknown key(s) ['tset']"),
    ],
)
def test_bad_config_value_is_named_before_data_is_read(override, message, tmp_path):
    # The data path does not exist: reading any data first would fail with a DataError instead.
    cfg = compose_config("train", [*TINY, "data.path=/nonexistent.csv", *override.split()], tmp_path / "run")
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    assert message in str(caught.value)
    assert "ConfigError" in (tmp_path / "run" / rundir.ERROR).read_text()


def test_every_wrong_value_is_listed_at_once(tmp_path):
    cfg = compose_config("train", [*TINY, "aug.rotation=abc", "data.batch_size=0"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"(?s)data.batch_size: expected an integer >= 1.*aug.rotation: "):
        validate(cfg)


def test_quoted_number_is_converted_not_stored_as_text(tmp_path, caplog):
    cfg = compose_config("train", [*TINY, "aug.rotation='30'", "data.batch_size='8'"], tmp_path / "run")
    assert cfg.aug.rotation == "30"  # what Hydra makes of a quoted number
    with caplog.at_level(logging.INFO, logger="fer.schema"):
        validate(cfg)
    assert cfg.aug.rotation == 30.0 and isinstance(cfg.aug.rotation, float)
    assert cfg.data.batch_size == 8 and isinstance(cfg.data.batch_size, int)
    assert "aug.rotation: read the string '30' as the number 30.0" in caplog.text


def bad_fer2013(path: Path) -> Path:
    """A fer2013.csv with all three splits and 3 bad rows (lines 4, 9, 15)."""
    images = np.random.default_rng(0).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    usages = ["Training"] * 30 + ["PublicTest"] * 5 + ["PrivateTest"] * 5
    lines = ["emotion,pixels,Usage"] + [
        f"{k % 7},{' '.join(map(str, image.ravel()))},{u}" for k, (image, u) in enumerate(zip(images, usages))
    ]
    for line in (4, 9, 15):
        lines[line - 1] = "9" + lines[line - 1][1:]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_skipped_rows_reach_log_and_metrics(tmp_path, caplog):
    path = bad_fer2013(tmp_path / "bad.csv")
    datamodule = FERDataModule(str(path), on_bad_row="skip", cache_dir=str(tmp_path / "cache"), batch_size=8)
    with caplog.at_level(logging.WARNING, logger="fer.train"):
        notes = read_data(datamodule)
    assert notes["skipped_rows"] == 3 and len(notes["notes"]) == 1
    for line in (4, 9, 15):
        assert f"line {line}: label '9'" in notes["notes"][0]
        assert f"line {line}: label '9'" in caplog.text


def test_report_shows_skipped_rows(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    note = "skipped 3 bad rows of x.csv (first: x.csv: line 4: label '9'; x.csv: line 9: label '9')"
    write_json(
        run_dir / rundir.METRICS, {"best": {}, "test": {}, "data": {"skipped_rows": 3, "notes": [note]}}
    )
    data = {"rows": 1, "what": "split test", "source": "x.csv", "labelled": 1}
    analysis = {"mode": "analyze", "checkpoint": "c.ckpt", "written": "now", "data": data, "files": {}}
    page = html.unescape(write_report(tmp_path, analysis, run_dir=run_dir).read_text())
    assert note in page


def test_duplicate_test_ids_name_their_lines(tmp_path):
    face = " ".join(["0"] * 48 * 48)
    (tmp_path / "train.csv").write_text("label,feature\n" + "".join(f"{k},{face}\n" for k in range(7)))
    ids = [1, 2, 3, 2, 5, 1]
    (tmp_path / "test.csv").write_text("id,feature\n" + "".join(f"{i},{face}\n" for i in ids))
    with pytest.raises(
        DataError, match=r"test.csv: duplicate ids.*id '1' on lines 2, 7; id '2' on lines 3, 5"
    ):
        read_dataset(tmp_path, cache_dir=False)


def test_changed_checkpoint_is_refused_by_analyze(reference):
    run_dir = reference[0].parent / "reference"
    assert checkpoint_path(None, str(run_dir)) == run_dir / rundir.BEST_CKPT  # intact: accepted
    broken = damaged_copy(run_dir, run_dir.parent / "broken")
    name = re.escape(f"run={broken}: {broken.resolve() / rundir.BEST_CKPT}")
    with pytest.raises(
        rundir.RunDirError, match=rf"^{name}: sha256 [0-9a-f]{{64}} differs from the [0-9a-f]{{64}}"
    ):
        checkpoint_path(None, str(broken))


def test_a_damaged_checkpoint_is_refused_on_resume_by_name(reference, tmp_path):
    run_dir = shutil.copytree(reference[0].parent / "reference", tmp_path / "run")
    last = run_dir / rundir.LAST_CKPT
    last.write_bytes(last.read_bytes()[:1000])  # what a crash while saving leaves
    with pytest.raises(
        rundir.RunDirError, match=rf"ckpt_path=last: {re.escape(str(last))} is not a readable checkpoint"
    ):
        run(compose_config("train", [*TINY, "ckpt_path=last"], run_dir))


def test_concurrent_writers_never_collide(tmp_path):
    path = tmp_path / "summary.csv"
    texts = [f"writer {k}\n" * 2000 for k in range(8)]

    def write(k: int) -> None:
        for _ in range(30):
            write_text(path, texts[k])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))  # a shared temp name would fail here (the file renamed away)
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_checkpoint_config_names_match_the_run_dir_contract():
    nodes = yaml.safe_load((CONF / "callbacks/model_checkpoint.yaml").read_text())
    names = {node["filename"] for node in nodes.values()}
    assert names == {rundir.BEST, rundir.LAST}
    assert all(node["dirpath"].endswith(f"/{rundir.CHECKPOINTS}") for node in nodes.values())

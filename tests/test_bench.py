"""The benchmark scripts that write results run end to end (their timings are not asserted)."""

import csv
import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, compose_config, failed_job, quick_run

from fer.analysis.run import run as analyze


def test_time_to_accuracy_clocks_every_validation_of_a_fresh_run(tmp_path):
    out = tmp_path / "t2a"
    cmd = [sys.executable, "bench/time_to_accuracy.py", "--out", str(out), *quick_run(300)]
    cmd += ["trainer.max_epochs=2", f"paths.cache_dir={tmp_path / 'cache'}"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with (out / "time_to_accuracy.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(r["clock"] == "measured" for r in rows)
    with (out / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    # Each row holds its own epoch's accuracy, not the one before.
    assert [float(r["val_acc"]) for r in rows] == [float(h["val/acc"]) for h in history]
    assert 0 < float(rows[0]["time_s"]) < float(rows[1]["time_s"])
    assert (out / "time_to_accuracy.png").stat().st_size > 0 and (out / "metrics.json").is_file()


def test_step_profile_splits_a_step_into_phases_and_operator_kinds_that_add_up():
    cmd = [sys.executable, "bench/bench_step_profile.py", "--net", "cnn4", "--optim", "adamw"]
    cmd += ["--batch-size", "16", "--steps", "2", "--warmup", "1", "--precision", "32-true"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        r"cnn4: batch 16 on cpu \(\d+ threads\), 32-true, channels_last, optim=adamw", lines[0]
    )
    step = re.match(
        r"one step (\d+) ms \(\d+ img/s\): forward (\d+) ms .*, backward (\d+) ms .*, optimizer (\d+) ms",
        lines[1],
    )
    assert step, lines[1]
    total, *phases = (int(v) for v in step.groups())
    assert abs(sum(phases) - total) <= 2  # each rounded to the millisecond
    shares = {line.split()[0]: float(line.split()[1].rstrip("%")) for line in lines[3:]}
    # cnn4: convs with BatchNorm, LeakyReLU, max-pools and a linear head, every kind present.
    assert set(shares) == {"convolution", "BatchNorm", "activation", "pooling", "linear", "other"}, shares
    assert sum(shares.values()) == pytest.approx(100, abs=0.5)


def test_tta_views_scores_each_set_as_analyze_scores_the_same_views(trained_run, tmp_path):
    run_dir = trained_run[0]
    cmd = [sys.executable, "bench/tta_views.py", str(run_dir), "--split", "test"]
    cmd += ["--out", str(tmp_path / "views")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with (tmp_path / "views/tta_views.csv").open() as f:
        rows = {r["set"]: r for r in csv.DictReader(f)}
    assert {name: int(r["views"]) for name, r in rows.items() if name in ("crops", "grid2", "grid5x5")} == {
        "crops": 10,
        "grid2": 18,
        "grid5x5": 50,
    }
    # The same views through analyze.py's TTA (tta=crops, and its corners shifted 3) give the same accuracy.
    for name, shift in (("crops", 2), ("corners3", 3)):
        out = tmp_path / name
        overrides = [f"run={run_dir}", "tta=crops", f"tta.shift={shift}", "analysis.interpret=false"]
        analyze(compose_config("analyze", [*overrides, f"out={out}"], out))
        expected = json.loads((out / "analysis.json").read_text())["metrics"]["accuracy"]
        assert float(rows[name]["accuracy"]) == pytest.approx(expected, abs=1e-6), name
    # A sweep folder stands for its jobs, as in analyze.py ensemble=: the failed one is left out.
    sweep = tmp_path / "sweep"
    (sweep / "0/.hydra").mkdir(parents=True)
    (sweep / "0/checkpoints").mkdir()
    (sweep / "0/checkpoints/best.ckpt").symlink_to(run_dir / "checkpoints/best.ckpt")
    failed_job(sweep / "1", "RuntimeError: out of memory")
    cmd = [sys.executable, "bench/tta_views.py", str(sweep), "--split", "test", "--out", str(sweep / "views")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "left out its failed job 1: RuntimeError: out of memory" in result.stderr
    with (sweep / "views/tta_views.csv").open() as f:
        jobs = list(csv.DictReader(f))
    assert {r["run"] for r in jobs} == {str(sweep / "0/checkpoints/best.ckpt")}
    assert {r["set"]: r["accuracy"] for r in jobs} == {name: r["accuracy"] for name, r in rows.items()}

"""The benchmark scripts that write results run end to end (their timings are not asserted)."""

import csv
import subprocess
import sys

from conftest import ROOT, quick_run


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

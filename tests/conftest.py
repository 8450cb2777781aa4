"""Shared fixtures: composing the training config the way `train.py` does, into tmp dirs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from fer.config import compose_run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_FER2013 = ROOT.parent / "shared/data/fer2013/fer2013-dev.csv.gz"


def quick_run(faces: int, seed: int = 0) -> list[str]:
    """Overrides of every end-to-end run in the tests: `faces` synthetic faces, the CPU, no progress bar."""
    return [
        f"data.path='synthetic://{faces}?seed={seed}'",
        "trainer.accelerator=cpu",
        "callbacks.rich_progress_bar=null",
    ]


def damaged_copy(run_dir: Path, dest: Path) -> Path:
    """A copy of `run_dir` at `dest` whose checkpoints/best.ckpt has one byte flipped since its run recorded
    the file's sha256."""
    shutil.copytree(run_dir, dest)
    ckpt = dest / "checkpoints/best.ckpt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    return dest


def failed_job(job: Path, error: str) -> Path:
    """A sweep job folder whose run failed before saving a checkpoint, with `error` ending its traceback."""
    (job / ".hydra").mkdir(parents=True)
    (job / "error.txt").write_text(
        f'Traceback (most recent call last):\n  File "train.py", line 1\n{error}\n'
    )
    return job


# A small, quick synthetic setup for end-to-end runs.
FAST = quick_run(700)


def compose_config(name: str, overrides: list[str], run_dir: Path) -> DictConfig:
    """Compose `conf/<name>.yaml` as Hydra would for a run in `run_dir`, caching data beside `run_dir`."""
    cfg = compose_run(name, overrides, run_dir)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(run_dir.parent / "cache")
    return cfg


@pytest.fixture
def train_config(tmp_path: Path):
    """`train_config(*overrides)` composes a training config whose run dir is under tmp_path."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        return compose_config("train", list(overrides), run_dir or tmp_path / "run")

    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> tuple[Path, float, DictConfig]:
    """One 2-epoch cnn4 run on 700 synthetic faces (test split: PrivateTest, 70 faces), shared by every
    test that only reads its outputs: its run dir, `fer.train.run`'s return value and its config."""
    from fer.train import run

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    cfg = compose_config("train", [*FAST, "trainer.max_epochs=2", "seed=0"], run_dir)
    return run_dir, run(cfg), cfg

"""Every option of every config group composes and resolves."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF

# Groups whose options stand alone; experiment and hparams_search overlays are tested with the sweeps.
GROUPS = ["data", "model", "aug", "optim", "sched", "trainer", "logger", "callbacks", "paths", "debug"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(group, option, train_config, tmp_path: Path):
    cfg = train_config(f"{group}={option}")
    OmegaConf.resolve(cfg)
    if group == "debug":  # a global overlay, not a node of its own
        assert cfg.trainer.max_epochs == 1
    else:
        assert cfg[group] is not None
    assert cfg.paths.output_dir == str(tmp_path / "run")


def test_every_group_has_options():
    assert all(any(o for g, o in OPTIONS if g == group) for group in GROUPS)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "optim").glob("*.yaml")))
def test_optimizers_instantiate(option, train_config):
    import torch

    cfg = train_config(f"optim={option}")
    optimizer = instantiate(cfg.optim, params=[torch.nn.Parameter(torch.zeros(2))])
    assert optimizer.param_groups[0]["lr"] == cfg.optim.lr


def test_wandb_is_offline_without_api_key(train_config, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert train_config("logger=wandb").logger.wandb.offline is True
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert train_config("logger=wandb").logger.wandb.offline is False


def test_fer2013_path_from_environment(train_config, monkeypatch):
    monkeypatch.setenv("FER2013_PATH", "/somewhere/fer2013.csv")
    assert train_config("data=fer2013").data.path == "/somewhere/fer2013.csv"
    dev = train_config("data=fer2013_dev").data
    assert dev.splits.val is None and dev.splits.test == "PublicTest" and dev.val_fraction == 0.1

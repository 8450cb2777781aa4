"""Every option of every config group composes, resolves and names classes that exist; the README lists
the options there are."""

import re

import pytest
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from tests.conftest import CONF, ROOT

# Groups whose options stand alone; experiment and hparams_search overlays are tested with the sweeps.
GROUPS = ["data", "model", "aug", "optim", "sched", "tta", "trainer", "logger", "callbacks", "paths", "debug"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
# The groups whose options the README's "Config groups" paragraph names one by one.
LISTED_IN_README = ["data", "model", "aug", "optim", "sched", "tta", "trainer", "logger", "debug"]


def targets(node) -> list[str]:
    """Every `_target_` in a config node, at any depth."""
    if isinstance(node, DictConfig):
        own = [node._target_] if "_target_" in node else []
        return own + [t for value in node.values() for t in targets(value)]
    if isinstance(node, ListConfig):
        return [t for value in node for t in targets(value)]
    return []


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_resolves_and_its_targets_import(group, option, train_config):
    cfg = train_config(f"{group}={option}")
    OmegaConf.resolve(cfg)
    if group == "debug":  # a global overlay, not a node of its own
        assert cfg.trainer.max_epochs == 1
    else:
        assert cfg[group] is not None
    for target in targets(cfg[group] if group != "debug" else cfg):
        assert callable(get_object(target)), target


@pytest.mark.parametrize("group", LISTED_IN_README)
def test_readme_lists_every_option_of_the_group(group):
    paragraph = (ROOT / "README.md").read_text().split("Config groups (`conf/`):", 1)[1].split("\n\n", 1)[0]
    listed = re.search(rf"`{group}` \(([^)]*)\)", paragraph.replace("\n", " "))
    assert listed, f"the README's config groups do not list {group}'s options"
    names = re.findall(r"`(\w+)`", listed.group(1).split(":", 1)[0])  # a colon starts a remark
    assert sorted(names) == sorted(o for g, o in OPTIONS if g == group)


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

"""OmegaConf resolvers and config nodes the configs use, and printing/saving the resolved config of a run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from fer.runtime import bf16_if_native

# `${fer.env_unset:WANDB_API_KEY}` is true when the variable is missing: W&B then logs offline.
OmegaConf.register_new_resolver("fer.env_unset", lambda name: not os.environ.get(name), replace=True)

# `${fer.bf16_if_native:bf16-mixed,32-true}`: the first where the run's device computes bf16 natively, else the second.
OmegaConf.register_new_resolver(
    "fer.bf16_if_native",
    lambda if_native, otherwise, _root_: bf16_if_native(if_native, otherwise, _root_.trainer.accelerator),
    replace=True,
)

# `- any_keys@data` in a defaults list: an empty node that takes any key from the command line
# (`data.path=...`, no `+`), where Hydra's struct mode refuses keys a config does not list. analyze.py
# merges it onto the checkpoint's data config, whose keys it checks (fer.analysis.select.data_config).
ConfigStore.instance().store(name="any_keys", node=OmegaConf.create({}, flags={"struct": False}))

# The config tree of train.py and analyze.py: the checkout's conf/ (fer is installed editable).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_app(name: str, overrides: Sequence[str] = (), hydra: bool = False) -> DictConfig:
    """conf/<name>.yaml composed with `overrides` as `python <name>.py` composes it, interpolations left
    unresolved, with its `hydra` node when `hydra`. Not inside a running Hydra app."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=hydra)


def compose_run(name: str, overrides: Sequence[str], output_dir: str | Path) -> DictConfig:
    """conf/<name>.yaml as Hydra hands it to a run writing to `output_dir` (made here), for benches and tests
    that call train.py's or analyze.py's function in-process: HydraConfig set, the `hydra` node dropped."""
    cfg = compose_app(name, overrides, hydra=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    return cfg


def compose_option(group: str, option: str) -> dict:
    """conf/<group>/<option>.yaml as Hydra composes it, its defaults list applied (model=vgg19 builds on
    vgg16), as plain containers with interpolations left unresolved. Not inside a running Hydra app."""
    return OmegaConf.to_container(compose_app(f"{group}/{option}"))[group]


def compose_node(key: str, overrides: list[str]) -> dict:
    """Node `key` of train.py's config as Hydra composes it with `overrides` (`key="model"` with
    `["experiment=speedrun"]`: that recipe's net), as plain containers with interpolations left unresolved.
    Not inside a running Hydra app."""
    return OmegaConf.to_container(compose_app("train", overrides))[key]


@rank_zero_only
def print_config(cfg: DictConfig, save_to: str | Path | None = None) -> None:
    """Print the resolved config as a tree, one branch per group, and save it as YAML."""
    tree = rich.tree.Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        Path(save_to).write_text(OmegaConf.to_yaml(cfg, resolve=True))

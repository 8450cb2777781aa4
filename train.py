"""Train a model: `python train.py model=resnet18 aug=strong` (see conf/ for every option)."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

import fer.config  # noqa: F401  (registers the resolvers the configs use)
from fer.cli import bad_input_as_message
from fer.rundir import ERROR
from fer.train import run


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    with bad_input_as_message(Path(cfg.paths.output_dir) / ERROR):
        return run(cfg)


if __name__ == "__main__":
    main()

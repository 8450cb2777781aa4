"""Train a model: `python train.py model=resnet18 aug=strong` (see conf/ for every option)."""

import hydra
from omegaconf import DictConfig

import fer.config  # noqa: F401  (registers the resolvers the configs use)
from fer.train import run


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()

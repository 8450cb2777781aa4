"""Analyse a checkpoint: `python analyze.py run=outputs/demo` (see conf/analyze.yaml for every option)."""

import hydra
from omegaconf import DictConfig

import fer.config  # noqa: F401  (registers the resolvers and nodes the configs use)
from fer.analysis.run import run
from fer.cli import bad_input_as_message


@hydra.main(config_path="conf", config_name="analyze", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with bad_input_as_message():
        run(cfg)


if __name__ == "__main__":
    main()

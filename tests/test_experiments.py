"""Every experiment overlay composes and trains a step; sweep experiments compose at every sweep point."""

import itertools
import json

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from fer.config import compose_app
from fer.models import build_model, count_parameters
from fer.train import run
from tests.conftest import CONF, quick_run

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# One training step on tiny synthetic data (300 faces: 240 train, 30 val, 30 test), one batch to test.
TINY = [
    "debug=fast",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    *quick_run(300, seed=1),
]


def composed(*overrides: str):
    """train.py's config with `overrides`, its `hydra` node (the sweeper's params) included."""
    return compose_app("train", overrides, hydra=True)


def sweep_points(params) -> list[list[str]]:
    """The overrides of every job a basic-sweeper `hydra.sweeper.params` node expands to."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    return [list(point) for point in itertools.product(*axes)]


SWEEPS = [n for n in EXPERIMENTS if composed(f"experiment={n}").hydra.sweeper.params]


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n not in SWEEPS])
def test_experiment_trains_one_fast_step(name, train_config, tmp_path):
    cfg = train_config(f"experiment={name}", *TINY)
    assert cfg.task_name == name  # each experiment files its runs under outputs/<its name>/
    run(cfg)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0 <= metrics["test"]["test/acc"] <= 1
    assert metrics["params"] == count_parameters(build_model(cfg.model))  # the experiment's model trained


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_experiment_composes_at_every_point(name):
    params = composed(f"experiment={name}").hydra.sweeper.params
    points = sweep_points(params)
    assert len(points) > 1
    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    for point in points:
        cfg = composed(f"experiment={name}", *point)
        for override in point:
            key, value = override.split("=", 1)
            if key in groups:
                assert cfg.hydra.runtime.choices[key] == value
            else:
                assert str(OmegaConf.select(cfg, key)) == value


def test_ablation_is_the_3x3_grid_on_cnn4():
    cfg = composed("experiment=ablation_norm_aug")
    points = sweep_points(cfg.hydra.sweeper.params)
    assert len(points) == 9 and len({tuple(p) for p in points}) == 9
    assert cfg.model._target_.endswith("CNN4") and cfg.callbacks.early_stopping is None


def test_cnn_vs_dnn_gives_both_the_same_budget():
    cfgs = [
        composed("experiment=cnn_vs_dnn", *point)
        for point in sweep_points(composed("experiment=cnn_vs_dnn").hydra.sweeper.params)
    ]
    assert sorted(c.model._target_.rsplit(".", 1)[-1] for c in cfgs) == ["DNN", "VGGKeras"]
    budgets = [(c.trainer.max_epochs, c.data.batch_size, OmegaConf.to_yaml(c.optim)) for c in cfgs]
    assert budgets[0] == budgets[1] and cfgs[0].callbacks.early_stopping is None

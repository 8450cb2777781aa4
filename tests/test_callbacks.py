"""The interpretability callbacks: figures during training, logged where loggers are, training untouched."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import wandb
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fer.callbacks.interpret import InterpretFigures, confusion_pairs
from fer.data.datamodule import FERDataModule
from fer.module import FERModule
from fer.train import run
from tests.conftest import FAST


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> Path:
    """Three short epochs with `callbacks=interpret` drawing every 2 epochs, logged to CSV, TensorBoard and W&B."""
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("callbacks") / "run"
    overrides = [
        *FAST,
        "debug=fast",
        "trainer.max_epochs=3",
        "seed=0",
        "logger=many",
        "callbacks=interpret",
        "callbacks.interpret_figures.every_n_epochs=2",
        "callbacks.interpret_figures.steps=4",
        "callbacks.interpret_figures.filters=4",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("WANDB_API_KEY", raising=False)
        patch.setenv("WANDB_SILENT", "true")
        run(compose_config("train", overrides, run_dir))
    # fer.train leaves the W&B run open; a later run in this process would log into it.
    wandb.finish()
    return run_dir


def test_training_is_the_same_with_or_without_the_figures(logged_run, tmp_path):
    from tests.conftest import compose_config

    plain = tmp_path / "plain"
    run(compose_config("train", [*FAST, "debug=fast", "trainer.max_epochs=3", "seed=0"], plain))
    assert (plain / "history.csv").read_text() == (logged_run / "history.csv").read_text()


def test_figures_every_n_epochs_and_at_the_end(logged_run):
    # Epoch 1 is the 2nd epoch (every 2); epoch 2 is the last, drawn when fitting ends.
    names = sorted(p.name for p in (logged_run / "figures").glob("*.png"))
    assert names == [
        "classes_epoch001.png",
        "classes_epoch002.png",
        "filters_epoch001.png",
        "filters_epoch002.png",
        "saliency_epoch001.png",
        "saliency_epoch002.png",
    ]
    for path in (logged_run / "figures").glob("*.png"):
        with Image.open(path) as image:
            assert min(image.size) > 200


def test_figures_reach_tensorboard_and_wandb(logged_run):
    accumulator = EventAccumulator(str(logged_run / "tensorboard"), size_guidance={"images": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["images"]
    assert {"figures/saliency", "figures/filters", "figures/classes"} <= set(tags)
    assert len(accumulator.Images("figures/saliency")) == 2
    (offline,) = (logged_run / "wandb").glob("offline-run-*")
    media = offline / "files/media"
    assert len(list(media.glob("images/figures/saliency_*.png"))) == 2
    assert len(list(media.glob("images/figures/filters_*.png"))) == 2
    assert len(list(media.glob("images/figures/classes_*.png"))) == 2
    # TestConfusion: the interactive chart's table.
    assert len(list(media.glob("table/test/confusion_matrix_table_*.table.json"))) == 1


def test_confusion_pairs_reproduce_the_counts():
    counts = torch.tensor([[3, 0, 1], [0, 0, 0], [2, 5, 4]])
    true, pred = confusion_pairs(counts)
    assert len(true) == 15
    rebuilt = np.zeros((3, 3), dtype=int)
    np.add.at(rebuilt, (true, pred), 1)
    assert (rebuilt == counts.numpy()).all()


@pytest.fixture(scope="module")
def datamodule() -> FERDataModule:
    data = FERDataModule(path="synthetic://300?seed=1", cache_dir=False)
    data.setup()
    return data


def test_drawing_leaves_training_state_alone(datamodule, tmp_path):
    module = FERModule(model={"_target_": "fer.models.cnn4.CNN4"}, optim={"_target_": "torch.optim.Adam"})
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    callback = InterpretFigures(tmp_path / "figures", filters=3, steps=2, pool=64)
    trainer = SimpleNamespace(datamodule=datamodule, is_global_zero=True, loggers=[], global_step=7)
    callback.on_fit_start(trainer, module)
    figures = callback.draw(trainer, module, epoch=4)
    assert sorted(p.name for p in figures.values()) == [
        "classes_epoch004.png",
        "filters_epoch004.png",
        "saliency_epoch004.png",
    ]
    assert module.training and all(m.training for m in module.modules())
    assert all(p.grad is None for p in module.parameters())
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included


def test_other_ranks_draw_nothing(datamodule, tmp_path):
    module = FERModule(model={"_target_": "fer.models.cnn4.CNN4"}, optim={"_target_": "torch.optim.Adam"})
    callback = InterpretFigures(tmp_path / "figures")
    trainer = SimpleNamespace(datamodule=datamodule, is_global_zero=False, loggers=[], global_step=0)
    callback.on_fit_start(trainer, module)
    assert callback.draw(trainer, module, epoch=0) == {}
    assert not (tmp_path / "figures").exists()


def test_bad_settings_fail_before_training(datamodule, tmp_path):
    with pytest.raises(ValueError, match="unknown methods \\['lime'\\]"):
        InterpretFigures(tmp_path, methods=["saliency", "lime"])
    module = FERModule(model={"_target_": "fer.models.cnn4.CNN4"}, optim={"_target_": "torch.optim.Adam"})
    trainer = SimpleNamespace(datamodule=datamodule, is_global_zero=True)
    with pytest.raises(ValueError, match="no 'predict' faces"):
        InterpretFigures(tmp_path, stage="predict").on_fit_start(trainer, module)
    with pytest.raises(ValueError, match="conv layers of this model: net.features.0, net.features.4"):
        InterpretFigures(tmp_path, layer="net.features.1x").on_fit_start(trainer, module)

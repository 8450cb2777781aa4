"""Speed knobs (fer/runtime.py): channels_last computes what the contiguous layout computes."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from fer.module import FERModule
from fer.runtime import apply_runtime
from tests.conftest import CONF


def module(model: str) -> FERModule:
    torch.manual_seed(0)
    config = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{model}.yaml"))
    return FERModule(model=config, optim={"_target_": "torch.optim.SGD", "lr": 0.1}).eval()


@pytest.mark.parametrize("model", ["cnn4", "resnet18"])
def test_channels_last_gives_the_logits_of_the_contiguous_layout(model):
    plain = module(model)
    fast = apply_runtime(copy.deepcopy(plain), channels_last=True)
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    images = torch.rand(8, 1, 48, 48) * 255
    with torch.no_grad():
        expected, got = plain(images), fast(images)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # The state dict is the same set of tensors, so a channels_last checkpoint loads into a plain module.
    module_again = module(model)
    module_again.load_state_dict(fast.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(module_again(images), expected, atol=1e-4, rtol=1e-4)

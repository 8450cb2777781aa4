"""Speed knobs: channels_last (fer/runtime.py) computes what the contiguous layout computes; malloc's reuse of
freed memory (runtime.reuse_memory) spares the training steps their page faults; the GPU-resident loader
(data.on_device) serves the batches of the plain one."""

from __future__ import annotations

import copy
import ctypes
import logging
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from fer import runtime
from fer.config import compose_option
from fer.data.datamodule import BatchTensors, FERDataModule, _whole_batch
from fer.data.errors import DataError
from fer.module import FERModule
from fer.runtime import apply_runtime


def module(model: str) -> FERModule:
    torch.manual_seed(0)
    return FERModule(
        model=compose_option("model", model), optim={"_target_": "torch.optim.SGD", "lr": 0.1}
    ).eval()


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


# Twelve fp32 training steps of a small conv net at 48x48, in a fresh process (malloc's settings hold for the
# process); prints the minor page faults of the last eight.
STEPS_SCRIPT = """
import resource, sys, torch
from torch import nn
from fer.runtime import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU(), nn.Conv2d(32, 32, 3, padding=1),
    nn.BatchNorm2d(32), nn.GELU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 24 * 24, 7),
)
images, labels = torch.randn(64, 1, 48, 48), torch.randint(0, 7, (64,))
for step in range(12):
    if step == 4:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    nn.functional.cross_entropy(net(images), labels).backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


def steps_page_faults(way: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", STEPS_SCRIPT, way], check=True, capture_output=True, text=True, timeout=300
    ).stdout
    return int(out.split()[-1])


@pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "mallopt"), reason="glibc's mallopt only (Linux); CI runs on glibc"
)
def test_reuse_memory_spares_the_training_steps_their_page_faults():
    # As glibc sets malloc up, each step maps its activations afresh: ~20k faults a step here (4 KiB pages).
    glibc, reused = steps_page_faults("glibc"), steps_page_faults("reuse")
    assert glibc > 8 * 5000
    assert reused < glibc / 10


def test_reuse_memory_without_mallopt_warns_and_leaves_malloc(monkeypatch, caplog):
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: object())
    assert runtime.reuse_freed_memory() is False
    with caplog.at_level(logging.WARNING, logger="fer.runtime"):
        apply_runtime(torch.nn.Linear(2, 2), reuse_memory=True)
    assert "runtime.reuse_memory=true, but this C library has no glibc mallopt" in caplog.text


def test_batch_tensors_serve_the_batches_of_a_plain_loader():
    images, labels = torch.randint(0, 256, (50, 1, 48, 48), dtype=torch.uint8), torch.randint(0, 7, (50,))
    loaders = [
        DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True),
        DataLoader(BatchTensors(images, labels), batch_size=16, shuffle=True, collate_fn=_whole_batch),
    ]
    batches = []
    for loader in loaders:
        torch.manual_seed(0)
        batches.append(list(loader))
    assert [len(b[0]) for b in batches[1]] == [16, 16, 16, 2]
    for plain, gathered in zip(*batches):
        assert torch.equal(plain[0], gathered[0]) and torch.equal(plain[1], gathered[1])


def test_on_device_needs_the_loader_in_process():
    with pytest.raises(DataError, match="data.on_device=true .* data.num_workers=0 \\(got 2\\)"):
        FERDataModule("synthetic://50?seed=0", num_workers=2, on_device=True)
    # Without a GPU trainer the splits stay plain CPU tensors.
    datamodule = FERDataModule("synthetic://50?seed=0", cache_dir=False, on_device=True)
    datamodule.setup()
    assert type(datamodule.tensors("train")) is TensorDataset


@pytest.mark.parametrize(
    ("precision", "native", "warned"),
    [("bf16-mixed", False, True), ("bf16-mixed", True, False), ("32-true", False, False)],
)
def test_bf16_on_a_cpu_without_native_bf16_warns_how_to_fix_it(
    monkeypatch, caplog, precision, native, warned
):
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: native)
    trainer = pl.Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False)
    with caplog.at_level(logging.WARNING, logger="fer.runtime"):
        runtime.warn_slow_bf16(trainer)
    assert ("set trainer.precision=32-true" in caplog.text) is warned


@pytest.mark.parametrize("experiment", ["speedrun", "best"])
@pytest.mark.parametrize(
    ("accelerator", "cuda", "native_on", "expected"),
    [
        ("auto", False, {"cpu"}, "bf16-mixed"),  # an AVX512-BF16 or AMX CPU
        ("auto", False, set(), "32-true"),  # an AVX2 laptop: bf16 would be emulated, 0.12x fp32's speed
        ("auto", True, {"cuda"}, "bf16-mixed"),  # a GPU that computes bf16, whatever the CPU
        ("cpu", True, {"cuda"}, "32-true"),  # trainer.accelerator=cpu asks the CPU, not the GPU beside it
    ],
)
def test_the_recipes_train_in_bf16_only_where_the_device_computes_it(
    monkeypatch, train_config, experiment, accelerator, cuda, native_on, expected
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: device.type in native_on)
    cfg = train_config(f"experiment={experiment}", f"trainer.accelerator={accelerator}")
    assert cfg.trainer.precision == expected


@pytest.mark.parametrize(
    ("given", "trained", "device", "native", "expected"),
    [
        (None, "bf16-mixed", "cpu", True, "bf16-mixed"),  # the run's, on a CPU that computes bf16
        (None, "bf16-mixed", "cpu", False, "32-true"),  # an AVX2 laptop would emulate it: fp32
        (None, "16-mixed", "cpu", True, "32-true"),  # trainer=gpu's fp16 on a CPU: fp32
        (None, "16-mixed", "cuda", False, "16-mixed"),
        (None, "32-true", "cpu", True, "32-true"),
        (None, None, "cpu", True, "32-true"),  # a checkpoint without a run config
        ("bf16-mixed", "32-true", "cpu", True, "bf16-mixed"),  # precision= wins
        ("32-true", "bf16-mixed", "cpu", True, "32-true"),
    ],
)
def test_analyze_evaluates_in_the_runs_precision_where_the_device_computes_it(
    monkeypatch, given, trained, device, native, expected
):
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: native)
    run_config = {"trainer": {"precision": trained}} if trained else None
    assert runtime.evaluation_precision(given, run_config, torch.device(device)) == expected


@pytest.mark.parametrize(("native", "warned"), [(False, True), (True, False)])
def test_bf16_evaluation_asked_for_on_a_cpu_without_it_warns(monkeypatch, caplog, native, warned):
    monkeypatch.setattr(runtime, "native_bfloat16", lambda device: native)
    with caplog.at_level(logging.WARNING, logger="fer.runtime"):
        runtime.warn_if_emulated("bf16-mixed", torch.device("cpu"))
        runtime.warn_if_emulated("32-true", torch.device("cpu"))
        runtime.warn_if_emulated(None, torch.device("cpu"))
    assert caplog.text.count("pass precision=32-true") == int(warned)

"""optim=muon (fer/optimizers.py): orthogonalised conv updates, AdamW's exact steps elsewhere, and a state
that checkpoints and resumes."""

import io

import pytest
import torch
from torch import nn

import fer.optimizers
from fer.optimizers import MuonAdamW, orthogonalize


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def train_steps(net: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = (
            torch.randn(16, 1, 10, 10, generator=generator),
            torch.randint(0, 3, (16,), generator=generator),
        )
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("shape", [(16, 72), (72, 16), (32, 32)])
def test_orthogonalize_keeps_the_singular_vectors_and_flattens_the_singular_values(shape):
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 5
    ortho = orthogonalize(matrix)
    assert ortho.shape == matrix.shape
    values = torch.linalg.svdvals(ortho)
    assert values.min() > 0.6 and values.max() < 1.25, values
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    assert nn.functional.cosine_similarity(ortho.flatten(), (u @ vh).flatten(), dim=0) > 0.95


def test_conv_filters_take_muon_steps_and_the_rest_adamw_steps():
    net = small_net()
    optimizer = MuonAdamW(net.parameters(), lr=0.01, weight_decay=0.0)
    muon, adam = optimizer.param_groups
    assert muon["muon"] and [p.shape for p in muon["params"]] == [(8, 1, 3, 3), (16, 8, 3, 3)]
    assert not adam["muon"] and all(p.ndim != 4 for p in adam["params"])
    conv = net[3].weight
    before = conv.detach().clone()
    train_steps(net, optimizer, 1)
    # The first step: an orthogonal (16, 72) update of AdamW's size, 0.2 * sqrt(72) times the learning rate.
    step = (conv.detach() - before).reshape(16, -1) / (0.01 * 0.2 * 72**0.5)
    values = torch.linalg.svdvals(step)
    assert values.min() > 0.6 and values.max() < 1.25, values


def test_parameters_other_than_conv_filters_follow_torch_adamw_exactly():
    # Frozen filters (no gradient, so no step) keep both nets' other gradients equal at every step.
    nets = small_net(), small_net()
    for net in nets:
        for conv in (net[0], net[3]):
            conv.weight.requires_grad_(False)
    kwargs = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    train_steps(nets[0], MuonAdamW(nets[0].parameters(), **kwargs), 3)
    train_steps(nets[1], torch.optim.AdamW(nets[1].parameters(), **kwargs), 3)
    for (name, p), q in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(p, q, msg=name)
    assert not torch.equal(nets[0][6].weight, small_net()[6].weight)  # the head did move


def test_state_round_trips_through_a_weights_only_checkpoint_and_resumes_the_same():
    net = small_net()
    optimizer = MuonAdamW(net.parameters(), lr=0.01, weight_decay=0.05)
    train_steps(net, optimizer, 2)
    buffer = io.BytesIO()
    torch.save({"net": net.state_dict(), "optim": optimizer.state_dict()}, buffer)
    train_steps(net, optimizer, 2, seed=5)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = small_net()
    resumed.load_state_dict(saved["net"])
    resumed_optimizer = MuonAdamW(resumed.parameters(), lr=0.01, weight_decay=0.05)
    resumed_optimizer.load_state_dict(saved["optim"])
    train_steps(resumed, resumed_optimizer, 2, seed=5)
    for p, q in zip(net.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)


def first_conv_step(ns_dtype: str) -> torch.Tensor:
    """The first update MuonAdamW(lr=1, momentum=0.5, no decay) gives a (4, 2, 3, 3) filter, as a (4, 18) matrix."""
    weight = nn.Parameter(torch.zeros(4, 2, 3, 3))
    weight.grad = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    MuonAdamW([weight], lr=1.0, momentum=0.5, ns_dtype=ns_dtype).step()
    return -weight.detach().reshape(4, -1) / (0.2 * 18**0.5)


@pytest.mark.parametrize("native", [True, False])
def test_ns_dtype_picks_the_orthogonalisation_precision_and_auto_follows_the_hardware(monkeypatch, native):
    grad = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0)).reshape(4, -1)
    nesterov = grad * 1.5  # the first step's gradient plus momentum 0.5 times its buffer, the gradient
    expected = {
        name: orthogonalize(nesterov.to(dtype)).float() for name, dtype in fer.optimizers.NS_DTYPES.items()
    }
    assert (expected["bfloat16"] - expected["float32"]).abs().max() > 1e-3  # the two precisions differ here
    for name in expected:
        torch.testing.assert_close(first_conv_step(name), expected[name])
    monkeypatch.setattr(fer.optimizers, "native_bfloat16", lambda device: native)
    torch.testing.assert_close(first_conv_step("auto"), expected["bfloat16" if native else "float32"])


def test_muon_lr_scale_multiplies_the_filters_steps_alone():
    nets = {scale: small_net() for scale in (1.0, 3.0)}
    for scale, net in nets.items():
        train_steps(net, MuonAdamW(net.parameters(), lr=0.01, weight_decay=0.1, muon_lr_scale=scale), 1)
    start = small_net()
    for (name, p), q, p0 in zip(nets[1.0].named_parameters(), nets[3.0].parameters(), start.parameters()):
        if p.ndim == 4:  # a conv's filters: decayed, then stepped, at three times the rate
            torch.testing.assert_close(q - p0 * (1 - 0.003), 3 * (p - p0 * (1 - 0.001)), msg=name)
        else:  # the first step's gradients are the same for both nets, so AdamW's steps are too
            torch.testing.assert_close(p, q, msg=name)


def test_a_checkpoint_from_before_ns_dtype_filter_norm_and_muon_lr_scale_resumes_with_their_defaults():
    net = small_net()
    optimizer = MuonAdamW(net.parameters(), lr=0.01)
    train_steps(net, optimizer, 1)
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        del group["ns_dtype"], group["filter_norm"], group["muon_lr_scale"]
    resumed = MuonAdamW(net.parameters(), lr=0.01, ns_dtype="float32", filter_norm=True, muon_lr_scale=2.0)
    resumed.load_state_dict(state)
    options = [(g["ns_dtype"], g["filter_norm"], g["muon_lr_scale"]) for g in resumed.param_groups]
    assert options == [("auto", False, 1.0)] * 2
    train_steps(net, resumed, 1)


def test_filter_norm_rescales_each_conv_to_its_init_norm_leaving_a_batchnormed_conv_s_output_unchanged():
    net = small_net()
    conv = net[0].weight  # followed by BatchNorm
    with torch.no_grad():
        conv.mul_(3.0)  # filters grown to three times their init's norm
    x = torch.randn(16, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    before = net[:2](x)  # train mode: BatchNorm normalizes by the batch's statistics
    train_steps(net, MuonAdamW(net.parameters(), lr=0.0, filter_norm=True), 1)
    assert conv.norm().item() == pytest.approx(8**0.5)
    assert net[3].weight.norm().item() == pytest.approx(16**0.5)
    torch.testing.assert_close(net[:2](x), before, atol=1e-4, rtol=1e-4)


def test_filter_norm_keeps_the_filters_from_growing_under_muon_updates():
    norms = {}
    for filter_norm in (False, True):
        net = small_net()
        start = net[3].weight.norm().item()  # torch's default init: 2.35 here
        train_steps(net, MuonAdamW(net.parameters(), lr=0.05, weight_decay=0.0, filter_norm=filter_norm), 30)
        norms[filter_norm] = start, net[3].weight.norm().item()
    # Without it the orthogonal updates pile up, to 2.8x the start here; with it the filters are held at sqrt(16),
    # off by one update at most.
    start, end = norms[False]
    assert end > 2.5 * start, norms
    assert 16**0.5 < norms[True][1] < 1.1 * 16**0.5, norms


def test_an_unknown_ns_dtype_filter_norm_or_muon_lr_scale_is_refused_by_its_config_key():
    with pytest.raises(
        ValueError, match="optim.ns_dtype: expected one of auto, bfloat16, float32, got 'fp16'"
    ):
        MuonAdamW([nn.Parameter(torch.zeros(2))], ns_dtype="fp16")
    with pytest.raises(ValueError, match="optim.filter_norm: expected true or false, got 'yes'"):
        MuonAdamW([nn.Parameter(torch.zeros(2))], filter_norm="yes")
    # A numeric string too: only a config's is read as its number.
    for bad in (0, -1.0, float("nan"), "2", True):
        with pytest.raises(ValueError, match=f"optim.muon_lr_scale: expected a number > 0, got {bad!r}"):
            MuonAdamW([nn.Parameter(torch.zeros(2))], muon_lr_scale=bad)


def test_parameter_groups_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="pass tensors, not parameter groups"):
        MuonAdamW([{"params": [nn.Parameter(torch.zeros(2))]}])

"""Architectures: parameter counts, configs, forward/backward, Captum-safe activations, pretrained weights."""

import os
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from fer.config import CONF_DIR, compose_node, compose_option
from fer.models import MODEL_NAMES, build_model, count_parameters
from fer.models.joint_ensemble import JointEnsemble
from fer.models.normalization import Normalization
from fer.models.resnet import ResNet18, imagenet_weights_path
from fer.models.vgg import VGG
from fer.models.whitening import PatchWhitening, fit_whitening
from fer.optimizers import MuonAdamW

CONFIG_NAMES = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))

# The configs as Hydra composes them, plus the options they leave at their defaults.
VARIANTS: dict[str, dict] = {name: compose_option("model", name) for name in CONFIG_NAMES}
VARIANTS |= {
    "vgg16-selu": {"_target_": "fer.models.vgg.VGG", "depth": 16, "activation": "selu"},
    "vgg19-selu-nobn": {
        "_target_": "fer.models.vgg.VGG",
        "depth": 19,
        "activation": "selu",
        "batch_norm": False,
    },
    # The speedruns' net as their recipe composes it (vgg8 1.5x wider, with GELU), and SiLU, tried in
    # experiment=speedrun_fp32.
    "speedrun": compose_node("model", ["experiment=speedrun"]),
    "vgg8-silu": compose_option("model", "vgg8") | {"activation": "silu"},
    "resnet18-small": {"_target_": "fer.models.resnet.ResNet18", "stem": "small"},
    "resnet18-gray-stem": {"_target_": "fer.models.resnet.ResNet18", "gray": "stem"},
    "resnet18-gray-stem-small": {"_target_": "fer.models.resnet.ResNet18", "gray": "stem", "stem": "small"},
}

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.SELU, nn.GELU, nn.SiLU)


def faces(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 1, 48, 48)


def test_model_names_match_config_files() -> None:
    assert sorted(MODEL_NAMES) == CONFIG_NAMES


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_values_are_plain(name: str) -> None:
    cfg = VARIANTS[name]
    assert cfg["num_classes"] == 7
    plain = (int, float, str, bool)
    assert all(
        isinstance(v, plain) or (isinstance(v, list) and all(isinstance(x, plain) for x in v))
        for v in cfg.values()
    ), cfg


@pytest.mark.parametrize(("name", "expected"), [("vgg_keras", 40_372_679), ("dnn", 33_073_671)])
def test_parameter_count(name: str, expected: int) -> None:
    assert count_parameters(build_model(VARIANTS[name])) == expected


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(VARIANTS[name]))
    logits = model(faces())
    assert logits.shape == (2, 7)
    logits.logsumexp(dim=1).sum().backward()
    for param_name, p in model.named_parameters():
        # A frozen parameter (a BatchNorm scale at batch_norm_scale=false) gets no gradient.
        assert (p.grad is not None) == p.requires_grad, param_name
        assert p.grad is None or torch.isfinite(p.grad).all(), param_name


@pytest.mark.parametrize("name", VARIANTS)
def test_each_activation_is_its_own_module_called_once(name: str) -> None:
    model = build_model(VARIANTS[name]).eval()
    activations = {n: m for n, m in model.named_modules() if isinstance(m, ACTIVATIONS)}
    assert activations
    calls = dict.fromkeys(activations, 0)
    for n, m in activations.items():
        assert not getattr(m, "inplace", False), f"{n} is in-place"
        m.register_forward_hook(lambda *_, n=n: calls.__setitem__(n, calls[n] + 1))
    with torch.no_grad():
        model(faces())
    assert calls == dict.fromkeys(activations, 1)


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "dnn"])
def test_conv_models_expose_features(name: str) -> None:
    model = build_model(VARIANTS[name])
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    # The trunk holds the model's own conv layers, not copies.
    model_convs = {id(m) for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert {id(m) for m in convs} <= model_convs


def test_head_input_sizes_of_the_study() -> None:
    assert build_model(VARIANTS["cnn4"]).classifier[0].in_features == 2304
    assert build_model(VARIANTS["alexnet_bn"]).classifier[1].in_features == 6272


def test_default_vgg_depths() -> None:
    convs = {
        d: sum(isinstance(m, nn.Conv2d) for m in build_model(VARIANTS[f"vgg{d}"]).modules()) for d in (16, 19)
    }
    assert convs == {16: 13, 19: 16}


def test_vgg_selu_uses_alpha_dropout_and_lecun_init() -> None:
    torch.manual_seed(0)
    model = build_model(VARIANTS["vgg16-selu"])
    assert any(isinstance(m, nn.AlphaDropout) for m in model.modules())
    assert not any(type(m) is nn.Dropout for m in model.modules())
    conv = model.features[-3]  # last conv: 512 * 3 * 3 inputs
    assert isinstance(conv, nn.Conv2d)
    assert conv.weight.std().item() == pytest.approx((512 * 9) ** -0.5, rel=0.02)


def test_resnet_small_stem_keeps_resolution() -> None:
    model = ResNet18(stem="small").eval()
    with torch.no_grad():
        assert model.features(faces()).shape == (2, 512, 6, 6)
        assert ResNet18().eval().features(faces()).shape == (2, 512, 2, 2)


def test_pretrained_without_cache_file_says_where_to_put_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected = os.path.join(str(tmp_path), "checkpoints", "resnet18-f37072fd.pth")
    assert imagenet_weights_path() == expected
    with pytest.raises(FileNotFoundError) as excinfo:
        ResNet18(pretrained=True)
    assert expected in str(excinfo.value)
    assert torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url in str(excinfo.value)


@pytest.fixture
def fake_imagenet_weights(tmp_path: Path, monkeypatch) -> dict[str, torch.Tensor]:
    """A random torchvision resnet18 state_dict placed where the ImageNet weights would be cached."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    os.makedirs(tmp_path / "checkpoints")
    torch.save(state, imagenet_weights_path())
    return state


def test_pretrained_replicate_loads_every_trunk_weight(fake_imagenet_weights: dict) -> None:
    model = ResNet18(pretrained=True)
    own = model.state_dict()
    for key, value in fake_imagenet_weights.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert model.fc[1].out_features == 7


def test_pretrained_gray_stem_sums_conv1_over_rgb(fake_imagenet_weights: dict) -> None:
    model = ResNet18(pretrained=True, gray="stem").eval()
    rgb = fake_imagenet_weights["conv1.weight"]
    assert torch.allclose(model.conv1.weight, rgb.sum(dim=1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, fake_imagenet_weights["layer4.1.conv2.weight"])
    # A 1-channel stem on gray faces matches the pretrained model on the faces replicated to RGB.
    replicated = ResNet18(pretrained=True, gray="replicate").eval()
    x = faces()
    with torch.no_grad():
        assert torch.allclose(model.features(x), replicated.features(x), atol=1e-4)


def test_pretrained_small_stem_warns_and_reinitializes_conv1(fake_imagenet_weights: dict) -> None:
    with pytest.warns(UserWarning, match="conv1 is randomly initialized"):
        model = ResNet18(pretrained=True, stem="small")
    assert model.conv1.weight.shape == (64, 3, 3, 3)
    assert torch.equal(model.layer1[0].conv1.weight, fake_imagenet_weights["layer1.0.conv1.weight"])


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="gray"):
        ResNet18(gray="rgb")
    with pytest.raises(ValueError, match="depth"):
        VGG(depth=11)
    with pytest.raises(ValueError, match="activation"):
        VGG(activation="tanh")
    with pytest.raises(ValueError, match="pool"):
        VGG(pool="sum")
    with pytest.raises(ValueError, match="layers"):
        VGG(layers=[32, "M", 0])
    with pytest.raises(ValueError, match="pool_size"):
        VGG(pool_size=0)
    with pytest.raises(ValueError, match="leading 'W' or 'S'"):
        VGG(layers=[32, "W", 64])
    with pytest.raises(ValueError, match="leading 'W' or 'S'"):
        VGG(layers=["W", "S", 64])


def test_vgg_trunk_and_head_from_config() -> None:
    model = build_model(VARIANTS["vgg8"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128, 256, 256]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 4
    assert isinstance(model.avgpool, nn.AdaptiveMaxPool2d)
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [256, 7]
    # The global pool takes any input size: 40x40 crops give logits of the same shape as 48x48 faces.
    assert model(torch.randn(2, 1, 40, 40)).shape == model(faces()).shape == (2, 7)
    # The default head of VGG16 is unchanged by the configurable head: 512-512-7.
    assert [m.out_features for m in VGG().classifier if isinstance(m, nn.Linear)] == [512, 512, 7]


def test_normalization_modes():
    x = torch.randint(0, 256, (8, 1, 48, 48), generator=torch.Generator().manual_seed(0)).float()
    assert torch.equal(Normalization("none")(x), x)
    assert torch.allclose(Normalization("unit")(x), x / 255)
    z = Normalization("standardize", mean=100.0, std=50.0)(x)
    assert torch.allclose(z, (x - 100) / 50)
    per_image = Normalization("per_image")(x)
    assert per_image.mean(dim=(1, 2, 3)).abs().max() < 1e-4
    assert torch.allclose(per_image.std(dim=(1, 2, 3)), torch.ones(len(x)), atol=1e-4)


def test_equalize_flattens_each_histogram_and_passes_a_gradient():
    gen = torch.Generator().manual_seed(0)
    dim = torch.randint(0, 128, (4, 1, 48, 48), generator=gen).float()
    dark_and_flat, bright_and_contrasty = dim // 4, 2 * dim + 1  # the same order of pixels in each face
    equalized = Normalization("equalize")(dim)
    assert torch.equal(Normalization("equalize")(bright_and_contrasty), equalized)
    assert not torch.equal(Normalization("equalize")(dark_and_flat), equalized)  # levels merged: ties
    assert equalized.mean(dim=(1, 2, 3)).abs().max() < 1e-4
    assert torch.allclose(equalized.std(dim=(1, 2, 3)), torch.ones(4), atol=0.01)
    # Ranks, not values: the brightest pixel of each face maps to the top, the darkest to the bottom.
    flat, top = dim.flatten(1), equalized.flatten(1)
    assert torch.equal(top.gather(1, flat.argmax(1, keepdim=True)).squeeze(1), top.max(1).values)
    assert torch.equal(top.gather(1, flat.argmin(1, keepdim=True)).squeeze(1), top.min(1).values)
    assert Normalization("equalize")(torch.full((1, 1, 8, 8), 77.0)).abs().max() == 0  # a flat face: all 0
    # The gradient is the slope of the cumulative histogram: one pixel's share of its face, at a unique level.
    face = torch.arange(64.0).view(1, 1, 8, 8).requires_grad_()
    Normalization("equalize")(face).sum().backward()
    assert torch.allclose(face.grad, torch.full_like(face, 12**0.5 / 64))


def test_normalization_rejects_unknown_mode_and_bad_std():
    with pytest.raises(ValueError, match="normalization 'zscore'"):
        Normalization("zscore")
    with pytest.raises(ValueError, match="positive pixel std"):
        Normalization("standardize", mean=0.0, std=0.0)


def smooth_faces(n: int) -> torch.Tensor:
    """Noise blurred by a 5x5 box: neighbouring pixels correlate (~0.8 one pixel apart), as in faces."""
    torch.manual_seed(0)
    return nn.functional.avg_pool2d(torch.randn(n, 1, 52, 52), 5, stride=1) * 3 + 1


def patch_covariance(features: torch.Tensor) -> torch.Tensor:
    flat = features.transpose(0, 1).flatten(1)
    return flat @ flat.T / flat.shape[1]


def test_patch_whitening_decorrelates_the_patches_it_was_fitted_on() -> None:
    faces = smooth_faces(200)
    layer = PatchWhitening(1, kernel_size=3, eps=0.0)
    assert layer.out_channels == 18 and not layer.fitted
    # Before fitting, each filter reads one pixel, in both signs: the outputs keep the input's correlation.
    before = patch_covariance(nn.functional.conv2d(faces, layer.weight[:9]))
    assert before[0, 1] > 0.5 * before[0, 0]
    assert fit_whitening(nn.Sequential(layer, nn.ReLU()), faces) == 1 and layer.fitted
    after = patch_covariance(nn.functional.conv2d(faces, layer.weight[:9]))
    assert torch.allclose(after, torch.eye(9), atol=1e-3)
    assert torch.equal(layer.weight[9:], -layer.weight[:9])
    # The filters are frozen (a buffer), the bias is trained; a fitted layer is not fitted again.
    assert [name for name, _ in layer.named_parameters()] == ["bias"]
    assert fit_whitening(layer, faces * 2) == 0
    # Images are passed through `normalize` first, as the net's input is.
    scaled = PatchWhitening(1, kernel_size=3, eps=0.0)
    fit_whitening(scaled, faces / 2, normalize=lambda x: x * 2)
    assert torch.allclose(scaled.weight, layer.weight, atol=1e-5)


def test_vgg_with_a_whitening_stem() -> None:
    model = VGG(layers=["W", 16, "M", 32, "M"], head=[32], pool="max")
    whitening, activation, conv = model.features[:3]
    assert isinstance(whitening, PatchWhitening) and isinstance(activation, nn.ReLU)
    assert conv.in_channels == 18
    assert model(faces()).shape == (2, 7)
    # The state dict carries the fitted filters: a fresh model loading it computes the same logits.
    fit_whitening(model, smooth_faces(20))
    again = VGG(layers=["W", 16, "M", 32, "M"], head=[32], pool="max")
    again.load_state_dict(model.state_dict())
    assert again.features[0].fitted
    images = faces()
    with torch.no_grad():
        assert torch.equal(model.eval()(images), again.eval()(images))


def test_vgg_with_a_space_to_depth_stem() -> None:
    model = VGG(layers=["S", 8, "M", 16, "M"], head=[], pool="max").eval()
    conv = model.features[1]
    assert conv.in_channels == 4
    images = faces()
    with torch.no_grad():
        # Each 2x2 block of pixels becomes the 4 channels of one position: the first conv runs at 24x24.
        folded = model.features[0](images)
        assert folded.shape == (2, 4, 24, 24)
        assert folded[0, :, 5, 7].tolist() == images[0, 0, 10:12, 14:16].flatten().tolist()
        assert model.features(images).shape == (2, 16, 6, 6)
    assert model(images).shape == model(images[..., :32, :32]).shape == (2, 7)


def test_vgg_with_frozen_batch_norm_scales_learns_only_their_shifts() -> None:
    torch.manual_seed(0)
    model = VGG(layers=[8, "M", 16, "M"], head=[], batch_norm_scale=False)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 and not any(n.weight.requires_grad for n in norms)
    assert count_parameters(model) - sum(p.numel() for p in model.parameters() if p.requires_grad) == 8 + 16
    optimizer = MuonAdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    nn.functional.cross_entropy(model(faces(8)), torch.arange(8) % 7).backward()
    optimizer.step()
    for norm in norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))  # no update, no weight decay
        assert norm.bias.abs().min() > 0  # the shift, from zero, did learn
    assert all(
        n.weight.requires_grad for n in VGG(layers=[8], head=[]).modules() if isinstance(n, nn.BatchNorm2d)
    )


def test_vgg_dirac_init_starts_each_conv_passing_its_input_channels_through() -> None:
    torch.manual_seed(0)
    model = VGG(layers=[4, 8, "M", 8], head=[], batch_norm=False, activation="relu", dirac_init=True)
    first, second, third = (m for m in model.features if isinstance(m, nn.Conv2d))
    images = faces()
    with torch.no_grad():
        # The first filter of the first conv copies the face (close, not equal: a conv kernel may reorder its
        # sums); the 3 beyond it stay random.
        torch.testing.assert_close(first(images)[:, :1], images)
        assert first.weight[1:].std() > 0
        # 4 -> 8: filter i copies channel i for i < 4; the 4 beyond stay random.
        maps = torch.relu(first(images))
        torch.testing.assert_close(second(maps)[:, :4], maps)
        assert second.weight[4:].std() > 0
        # 8 -> 8: the whole conv starts as the identity.
        assert torch.equal(third.weight, nn.init.dirac_(torch.empty(8, 8, 3, 3)))
    plain = VGG(layers=[4, 8, "M", 8], head=[], batch_norm=False)  # dirac_init=False, the default
    assert not torch.equal(plain.features[0].weight[:1], nn.init.dirac_(torch.empty(1, 1, 3, 3)))


def test_members_build_a_joint_ensemble_of_nets_initialized_apart() -> None:
    one = {"_target_": "fer.models.vgg.VGG", "layers": [8, "M", 16], "head": [16], "dropout": 0.0}
    model = build_model(one | {"members": 3})
    assert isinstance(model, JointEnsemble) and len(model.members) == 3
    assert count_parameters(model) == 3 * count_parameters(build_model(one))
    first, second = (member.features[0].weight for member in model.members[:2])
    assert not torch.equal(first, second)
    x = faces(4)
    # Training: every member's logits, for a loss each.
    logits = model.train()(x)
    assert logits.shape == (3, 4, 7)
    assert torch.equal(logits[1], model.members[1](x))
    # Evaluation: the log of the members' mean probabilities, read as logits everywhere else.
    mean = torch.stack([member(x).softmax(dim=1) for member in model.eval().members]).mean(dim=0)
    torch.testing.assert_close(model(x).exp(), mean)
    assert type(build_model(one | {"members": 1})) is VGG


def test_vgg_pool_grid_keeps_where_a_feature_fired() -> None:
    model = VGG(layers=[8, "M", 16, "M", 16, "M", 16, "M"], head=[], pool="max", pool_size=3).eval()
    assert model.classifier[0].in_features == 16 * 9
    images = faces()
    with torch.no_grad():
        maps = model.features(images)
        # A 48x48 face's last maps are 3x3: the grid keeps every cell, in place (a flatten head).
        assert maps.shape[-2:] == (3, 3) and torch.equal(model.avgpool(maps), maps)
        # Smaller crops still reach the head as a 3x3 grid.
        assert model.avgpool(model.features(images[..., :40, :40])).shape == maps.shape
        assert model(images[..., :40, :40]).shape == (2, 7)


def test_compose_node_applies_the_experiment_overlay() -> None:
    # What bench_throughput.py measures as `experiment=speedrun`: vgg8 as that recipe overrides it.
    wider = [48, 48, "M", 96, 96, "M", 192, 192, "M", 384, 384, "M"]
    overlay = {"activation": "gelu", "batch_norm_scale": False, "dirac_init": True, "layers": wider}
    assert VARIANTS["speedrun"] == VARIANTS["vgg8"] | overlay

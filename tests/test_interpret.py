"""Interpretability math, measured on a small CNN trained on synthetic faces with ground-truth masks."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from captum.attr import GuidedBackprop, Saliency
from torch import nn

from fer.analysis.saliency import usable_methods
from fer.data.labels import NUM_CLASSES
from fer.data.synthetic import generate
from fer.interpret.activation_max import (
    dataset_max_activation,
    dead_filters,
    maximize_activation,
    maximize_class,
)
from fer.interpret.attribution import METHODS, attribute, guidable
from fer.interpret.evaluation import (
    bootstrap_interval,
    deletion_auc,
    evaluate_methods,
    mask_fraction,
    mass_inside,
    pointing_game,
    random_deletion_auc,
    randomization_check,
    randomized_copy,
    rank_correlation,
    summarize,
    verdict,
)
from fer.interpret.features import channel_activations, feature_maps, top_exemplars
from fer.interpret.layers import conv_layers, last_conv, layer_output
from fer.interpret.mistakes import confusion, most_confident_mistakes, most_confused_pairs, per_class_report
from fer.models.cnn4 import CNN4
from fer.models.normalization import Normalization
from fer.models.vgg import VGG

N_TRAIN, N_EVAL = 2200, 64
REPORT_METHODS = ("saliency", "smoothgrad", "integrated_gradients", "guided_backprop", "hirescam")


def small_cnn(widths: tuple[int, ...] = (8, 16, 32, 32)) -> nn.Module:
    """CNN4's layout (conv, LeakyReLU, BatchNorm, max-pool blocks; MLP head) at a width that trains in seconds."""
    blocks: list[nn.Module] = []
    in_channels = 1
    for width in widths:
        conv = nn.Conv2d(in_channels, width, 3, padding="same")
        blocks += [conv, nn.LeakyReLU(0.05), nn.BatchNorm2d(width), nn.MaxPool2d(2)]
        in_channels = width
    side = 48 // 2 ** len(widths)
    head = [nn.Flatten(), nn.Linear(in_channels * side * side, 64), nn.ReLU(), nn.BatchNorm1d(64)]
    return nn.Sequential(Normalization("unit"), nn.Sequential(*blocks), *head, nn.Linear(64, NUM_CLASSES))


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These nets are tiny: intra-op threads buy nothing and, on a shared machine, cost a lot in contention
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faces() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel-unit images (N,1,48,48), labels and masks of balanced synthetic faces."""
    data = generate(N_TRAIN + 400, seed=0, balanced=True)
    images = torch.from_numpy(data.images).float()[:, None]
    return images, torch.from_numpy(data.labels), torch.from_numpy(data.masks)


@pytest.fixture(scope="module")
def trained(faces) -> nn.Module:
    images, labels, _ = faces
    torch.manual_seed(0)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for batch in torch.randperm(N_TRAIN).split(64):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def held_out(faces) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels, masks = faces
    part = slice(N_TRAIN, N_TRAIN + N_EVAL)
    return images[part], labels[part], masks[part]


@pytest.fixture(scope="module")
def report(trained, held_out) -> dict[str, dict]:
    # HiResCAM on the third conv (12x12): the last one (6x6) is coarse next to the faces' small regions
    return evaluate_methods(trained, *held_out, methods=REPORT_METHODS, layer=convs(trained)[2])


def mean(report: dict, method: str, measure: str) -> float:
    return report[method][measure]["mean"]


def test_small_cnn_learns_the_synthetic_task(trained, faces):
    images, labels, _ = faces
    with torch.no_grad():
        accuracy = (trained(images[N_TRAIN:]).argmax(1) == labels[N_TRAIN:]).float().mean().item()
    assert accuracy > 0.6  # chance is 1/7


# --- attribution quality on the trained model ----------------------------------------------------

ABOVE_CHANCE = ("saliency", "smoothgrad", "integrated_gradients", "hirescam")


@pytest.mark.parametrize("method", ABOVE_CHANCE)
def test_attribution_points_into_the_class_regions(report, method):
    chance = mean(report, method, "chance")
    assert mean(report, method, "pointing_game") > chance + 0.15
    assert mean(report, method, "mass_inside") > chance + 0.03


@pytest.mark.parametrize("method", ABOVE_CHANCE)
def test_deleting_most_attributed_pixels_beats_random_order(report, method):
    assert mean(report, method, "deletion_auc") < mean(report, method, "random_deletion_auc") - 0.1


def test_deletion_order_matters(trained, held_out):
    images, labels, _ = held_out
    maps = attribute(trained, images, labels, "saliency")
    most_first = deletion_auc(trained, images, labels, maps).mean()
    least_first = deletion_auc(trained, images, labels, -maps).mean()
    assert most_first < random_deletion_auc(trained, images, labels).mean() < least_first


def test_weight_randomization_changes_saliency_more_than_guided_backprop(report):
    # Measured, not assumed: IG multiplies by (input - baseline), so its maps keep the image's own edges
    # whatever the weights; SmoothGrad is as insensitive, plain saliency the most sensitive.
    spearman = {method: mean(report, method, "randomization_spearman") for method in report}
    assert spearman["saliency"] + 0.03 < spearman["guided_backprop"] < spearman["integrated_gradients"] - 0.1


def test_report_is_plain_json_with_intervals(report):
    assert set(report) == set(REPORT_METHODS)
    for scores in report.values():
        for measure in ("pointing_game", "mass_inside", "chance", "deletion_auc", "randomization_spearman"):
            summary = scores[measure]
            low, high = summary["ci95"]
            assert type(summary["mean"]) is float and low <= summary["mean"] <= high
            assert summary["n"] + summary["excluded"] == N_EVAL
        assert type(scores["verdict"]["reliable"]) is bool and type(scores["constant_maps"]) is int
    json.dumps(report, allow_nan=False)


def test_verdicts_follow_the_measured_numbers(report):
    for method, scores in report.items():
        checks = scores["verdict"]["checks"]
        assert set(checks) == {"pointing", "deletion", "randomization"}
        assert checks["pointing"]["passed"] == (checks["pointing"]["ci95"][0] > 0.05)
        assert checks["randomization"]["passed"] == (scores["randomization_spearman"]["ci95"][1] < 0.5)
        assert scores["verdict"]["reliable"] == all(c["passed"] for c in checks.values()), method
    # saliency points, deletes and depends on the weights. Guided Backprop points well but is not
    # class-discriminative: deleting its top pixels hurts the model less than a random order (measured:
    # 0.52 vs 0.35), so it fails deletion only
    assert report["saliency"]["verdict"]["reliable"]
    assert report["guided_backprop"]["verdict"]["failed"] == ["deletion"]
    reason = report["guided_backprop"]["verdict"]["reason"]
    assert reason.startswith("unreliable for this model: deleting its top pixels hurts the model no more")
    assert "deletion_auc - random_deletion_auc = 0.1" in reason


def test_occlusion_beats_random_deletion(trained, held_out):
    images, labels, masks = (t[:16] for t in held_out)
    maps = attribute(trained, images, labels, "occlusion")
    random_order = random_deletion_auc(trained, images, labels).mean()
    assert deletion_auc(trained, images, labels, maps).mean() < random_order - 0.1
    assert pointing_game(maps, masks).mean() > mask_fraction(masks).mean()


def test_hirescam_is_gradcam_under_global_average_pooling(trained, held_out):
    # With a GAP head the gradient is the same at every position, so not averaging it changes nothing
    torch.manual_seed(0)
    relu = nn.ReLU()
    gap_model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), relu, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 7)
    )
    images, labels, _ = held_out
    gradcam = attribute(gap_model, images[:8], labels[:8], "gradcam", layer=relu)
    hirescam = attribute(gap_model, images[:8], labels[:8], "hirescam", layer=relu)
    assert gradcam.abs().sum() > 0
    assert torch.allclose(gradcam, hirescam, rtol=1e-4, atol=1e-6 * gradcam.abs().max().item())
    # a flattening head makes them differ
    gradcam = attribute(trained, images[:8], labels[:8], "gradcam")
    hirescam = attribute(trained, images[:8], labels[:8], "hirescam")
    assert not torch.allclose(gradcam, hirescam, rtol=0.1)


# --- attribution mechanics -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def few_faces(held_out) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels, _ = held_out
    return images[:3], labels[:3]


@pytest.mark.parametrize("method", METHODS)
def test_attribute_format_and_batch_independence(trained, few_faces, method):
    images, labels = few_faces
    maps = attribute(trained, images, labels, method)
    assert maps.shape == (3, 48, 48) and maps.dtype == torch.float32 and maps.device.type == "cpu"
    assert maps.abs().sum() > 0
    if method in ("saliency", "smoothgrad", "gradcam", "hirescam"):
        assert maps.min() >= 0
    # A face's map does not depend on its batch-mates: SmoothGrad's sigma is each image's own
    alone = attribute(trained, images[1:2], labels[1:2], method)
    assert torch.allclose(alone[0], maps[1], rtol=1e-3, atol=1e-5 * maps.abs().max().item())


def test_smoothgrad_sigma_is_per_image(trained, few_faces):
    images, labels = few_faces
    # A batch-mate with a far wider pixel range must not change this face's noise
    dim = images[:1] * 0.3
    alone = attribute(trained, dim, labels[:1], "smoothgrad")
    beside = attribute(trained, torch.cat([dim, images[1:2]]), labels[:2], "smoothgrad")
    assert torch.allclose(alone[0], beside[0], rtol=1e-4, atol=1e-6 * alone.abs().max().item())


def test_smoothgrad_is_seeded_not_global(trained, few_faces):
    images, labels = few_faces
    torch.manual_seed(1)
    first = attribute(trained, images, labels, "smoothgrad")
    torch.manual_seed(2)
    assert torch.equal(first, attribute(trained, images, labels, "smoothgrad"))
    other = attribute(trained, images, labels, "smoothgrad", noise_seed=1)
    assert not torch.allclose(first, other, rtol=0.01)


@pytest.mark.parametrize("context", [torch.inference_mode, torch.no_grad])
@pytest.mark.parametrize("method", METHODS)
def test_attribute_works_without_autograd_context(trained, few_faces, method, context):
    images, labels = few_faces
    expected = attribute(trained, images, labels, method)
    with context():
        inside = attribute(trained, images.clone(), labels.clone(), method)
    assert torch.allclose(inside, expected)


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("method", METHODS)
def test_attribute_restores_each_modules_mode(few_faces, method):
    model = small_cnn()
    model[1].eval()  # a mix of train and eval submodules
    before = _modes(model)
    images, labels = few_faces
    attribute(model, images, labels, method)
    assert _modes(model) == before and True in before and False in before


def test_unknown_method_raises(trained, few_faces):
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(trained, *few_faces, "lime")


def test_gradcam_defaults_to_last_conv(trained, few_faces):
    default = attribute(trained, *few_faces, "gradcam")
    assert torch.equal(default, attribute(trained, *few_faces, "gradcam", layer=convs(trained)[-1]))
    assert not torch.equal(default, attribute(trained, *few_faces, "gradcam", layer=convs(trained)[-2]))


def _with_relu(model: nn.Module) -> nn.Module:
    """Copy with every LeakyReLU replaced by ReLU."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.LeakyReLU):
                setattr(parent, name, nn.ReLU())
    return model


@pytest.mark.filterwarnings("ignore:Setting backward hooks")
def test_guided_backprop_guides_leaky_relu(trained, few_faces):
    images, labels = few_faces
    leaky = copy.deepcopy(trained)
    for module in leaky.modules():
        if isinstance(module, nn.LeakyReLU):
            module.negative_slope = 0.0  # now a ReLU in all but type, which Captum alone would not guide
    ours = attribute(leaky, images, labels, "guided_backprop")
    reference = GuidedBackprop(_with_relu(leaky)).attribute(images.clone().requires_grad_(), target=labels)
    assert torch.allclose(ours, reference[:, 0], rtol=1e-4, atol=1e-6 * ours.abs().max().item())
    plain = Saliency(leaky).attribute(images.clone().requires_grad_(), target=labels, abs=False)[:, 0]
    assert not torch.allclose(ours, plain, rtol=0.1)


@pytest.mark.parametrize("activation", ["selu", "gelu", "silu"])
def test_a_net_without_relu_is_not_guided_and_its_analysis_leaves_guided_backprop_out(activation, few_faces):
    images, labels = few_faces
    net = VGG(layers=[8, "M", 16, "M"], head=[], activation=activation)
    assert not guidable(net) and guidable(VGG(layers=[8, "M", 16, "M"], head=[]))
    with pytest.raises(ValueError, match="guided_backprop needs nn.ReLU"):
        attribute(net, images, labels, "guided_backprop")
    assert usable_methods(list(METHODS), "features.0", net) == [m for m in METHODS if m != "guided_backprop"]
    assert usable_methods(list(METHODS), None, net) == [
        m for m in METHODS if m not in ("guided_backprop", "gradcam", "hirescam")
    ]


def test_randomized_copy_reinitialises_every_weight_and_spares_the_original(trained):
    before = copy.deepcopy(trained.state_dict())
    random_model = randomized_copy(trained, seed=1)
    for name, value in random_model.state_dict().items():
        # the input normalization (module 0) holds data statistics, not learned weights: it is kept
        if name.startswith("0."):
            assert torch.equal(value, before[name]), name
        elif value.is_floating_point():
            assert not torch.equal(value, before[name]), name
    assert all(torch.equal(value, before[name]) for name, value in trained.state_dict().items())
    again = randomized_copy(trained, seed=1).state_dict()
    assert all(torch.equal(value, again[name]) for name, value in random_model.state_dict().items())


# --- feature maps and exemplars ------------------------------------------------------------------


def test_feature_map_shapes_of_cnn4():
    model = nn.Sequential(Normalization("unit"), CNN4())
    image = torch.rand(48, 48) * 255
    shapes = [tuple(feature_maps(model, conv, image).shape) for conv in convs(model)]
    assert shapes == [(32, 48, 48), (128, 24, 24), (256, 12, 12), (256, 6, 6)]


def test_top_exemplars_are_the_most_activating_images(trained, held_out):
    images, _, _ = held_out
    layer, channels = convs(trained)[1], [0, 5, 9]
    indices, scores = top_exemplars(trained, layer, images, channels, k=4, batch_size=10)
    assert indices.shape == scores.shape == (3, 4)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    everything = channel_activations(trained, layer, images)[:, channels]
    assert torch.allclose(scores[:, 0], everything.max(0).values)
    for row, channel in enumerate(channels):
        for index, score in zip(indices[row], scores[row]):
            assert feature_maps(trained, layer, images[index])[channel].mean() == pytest.approx(
                score.item(), rel=1e-4
            )


# --- activation maximization ---------------------------------------------------------------------


def _live_channels(model: nn.Module, layer: nn.Module, images: torch.Tensor, n: int) -> list[int]:
    dead = set(dead_filters(model, layer, images).tolist())
    return [c for c in range(layer.out_channels) if c not in dead][:n]


@pytest.mark.parametrize("param", ["pixel", "fft"])
@pytest.mark.parametrize("conv_index", [0, 1, 3])
def test_activation_max_beats_every_real_image(trained, faces, conv_index, param):
    images = faces[0][N_TRAIN:]
    layer = convs(trained)[conv_index]
    channels = _live_channels(trained, layer, images, 8)
    # the analysis defaults (conf/analysis/default.yaml)
    synthetic, reached = maximize_activation(trained, layer, channels, steps=64, lr=0.1, param=param)
    assert synthetic.shape == (len(channels), 48, 48)
    assert synthetic.min() >= 0 and synthetic.max() <= 255
    assert (reached >= dataset_max_activation(trained, layer, images, channels)).all()
    # the reported activation is that of the returned images
    measured = channel_activations(trained, layer, synthetic[:, None])[range(len(channels)), channels]
    assert torch.allclose(reached, measured, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("param", ["pixel", "fft"])
def test_activation_max_climbs_and_stays_in_range(trained, param):
    layer = convs(trained)[1]
    channels = [0, 3, 7]
    start, _ = maximize_activation(trained, layer, channels, steps=0, param=param)
    _, before = maximize_activation(trained, layer, channels, steps=0, param=param, pixel_range=(20, 40))
    images, after = maximize_activation(trained, layer, channels, steps=24, param=param, pixel_range=(20, 40))
    assert start.std() > 10  # starts from noise
    assert (after > before).all()
    assert images.min() >= 20 and images.max() <= 40


def test_class_visualization_beats_every_real_face(trained, faces):
    images = faces[0][N_TRAIN:]
    classes = list(range(NUM_CLASSES))
    synthetic, reached = maximize_class(trained, classes, steps=64, lr=0.1, param="fft")
    with torch.no_grad():
        logits = trained(synthetic[:, None])
    assert torch.allclose(reached, logits[range(NUM_CLASSES), classes], rtol=1e-4, atol=1e-5)
    assert (reached >= dataset_max_activation(trained, trained, images, classes)).all()


def test_activation_max_restores_mode_and_works_in_inference_mode(trained):
    model = copy.deepcopy(trained).train()
    with torch.inference_mode():
        _, reached = maximize_activation(model, convs(model)[0], [0, 1], steps=4)
    assert torch.isfinite(reached).all()
    assert all(m.training for m in model.modules())


def test_dead_filters_finds_filters_that_never_fire(held_out):
    model = small_cnn().eval()
    images = held_out[0]
    conv = convs(model)[0]
    already = set(dead_filters(model, conv, images).tolist())
    with torch.no_grad():
        conv.bias[[1, 3]] = -1e4
    assert dead_filters(model, conv, images).tolist() == sorted(already | {1, 3})


# --- error analysis, on a hand-made example -------------------------------------------------------

NAMES = ("A", "B", "C", "D")  # D never occurs: its scores must be 0, not NaN
TARGETS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
PREDS = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0, 2])


def test_per_class_report_matches_hand_count():
    rows = per_class_report(PREDS, TARGETS, NAMES)
    # A: predicted at 0,1,7 (2 right) of 3 true; B: predicted at 2,3 (1 right) of 2; C: 4 predicted, 3 right, of 4
    expected = {"A": (2 / 3, 2 / 3, 3), "B": (1 / 2, 1 / 2, 2), "C": (3 / 4, 3 / 4, 4), "D": (0.0, 0.0, 0)}
    assert [row["class"] for row in rows] == list(NAMES)
    for row in rows:
        precision, recall, support = expected[row["class"]]
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert row["f1"] == pytest.approx(f1)
        assert row["support"] == support
    json.dumps(rows)


def test_confusion_counts_and_row_shares():
    counts, shares = confusion(PREDS, TARGETS, num_classes=4)
    assert counts.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    expected = [[2 / 3, 1 / 3, 0, 0], [0, 1 / 2, 1 / 2, 0], [1 / 4, 0, 3 / 4, 0], [0, 0, 0, 0]]
    assert torch.allclose(shares, torch.tensor(expected))


def test_most_confused_pairs_ranked_by_share_of_true_class():
    counts, _ = confusion(PREDS, TARGETS, num_classes=4)
    assert most_confused_pairs(counts, NAMES, k=2) == ["B -> C: 50% of B (1/2)", "A -> B: 33% of A (1/3)"]
    assert len(most_confused_pairs(counts, NAMES, k=10)) == 3  # only pairs that happened


def test_most_confident_mistakes():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    targets = torch.tensor([0, 0, 1, 1, 1])  # wrong: 1 (0.8), 2 (0.6), 4 (0.95)
    assert most_confident_mistakes(probs, targets, k=2).tolist() == [4, 1]
    assert most_confident_mistakes(probs, targets, k=5).tolist() == [4, 1, 2]


# --- attribution-quality measures, on hand-made maps ----------------------------------------------


def test_pointing_game_and_mass_inside_by_hand():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True  # a quarter of each image
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0  # peak inside; 3 of 4 mass inside
    maps[1, 3, 3], maps[1, 0, 1], maps[1, 2, 2] = 2.0, 1.0, -5.0  # peak outside; 1 of 3 positive inside
    assert mask_fraction(masks).tolist() == [0.25, 0.25]
    assert pointing_game(maps, masks).tolist() == [1.0, 0.0]
    assert mass_inside(maps, masks).tolist() == pytest.approx([3 / 4, 1 / 3])
    # flat maps: tied peaks count by their share inside, so they score chance in both measures
    assert pointing_game(torch.zeros(2, 4, 4), masks).tolist() == [0.25, 0.25]
    assert mass_inside(torch.zeros(2, 4, 4), masks).tolist() == [0.25, 0.25]


class _ConstantModel(nn.Module):
    """Logits that ignore the input, so every deletion curve is flat at softmax(logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.log(torch.tensor([1.0, 3.0, 6.0])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) + 0 * x.sum()


def test_deletion_auc_is_area_over_unit_interval():
    images, targets = torch.rand(3, 1, 48, 48) * 255, torch.tensor([0, 1, 2])
    model = _ConstantModel()
    # probabilities 0.1, 0.3, 0.6: each flat curve's area over [0, 1] is its height
    areas = deletion_auc(model, images, targets, torch.rand(3, 48, 48), steps=5)
    assert areas.tolist() == pytest.approx([0.1, 0.3, 0.6])
    assert random_deletion_auc(model, images, targets, steps=5).tolist() == pytest.approx([0.1, 0.3, 0.6])


def test_rank_correlation_of_a_constant_map_is_nan():
    ramp = torch.arange(16.0).reshape(1, 4, 4)
    empty = torch.zeros(1, 4, 4)
    # torchmetrics alone says 0 here, even for two identical empty maps: "changed" when nothing changed
    rho = rank_correlation(torch.cat([ramp, empty, empty, ramp]), torch.cat([ramp, empty, ramp, -ramp]))
    assert rho[0] == pytest.approx(1.0) and rho[3] == pytest.approx(-1.0)
    assert rho[1:3].isnan().all()
    # ties are ranked by their average, as scipy does: [1, 1, 2] vs [1, 2, 3] -> 0.866
    assert rank_correlation(torch.tensor([[1.0, 1, 2]]), torch.tensor([[1.0, 2, 3]])).item() == pytest.approx(
        3**0.5 / 2, abs=1e-5
    )


def test_randomization_check_excludes_empty_maps(trained, held_out):
    images, labels, _ = held_out
    # Empty maps, as Grad-CAM gives where the ReLU removes everything; they have no ranking to compare
    maps = attribute(trained, images[:16], labels[:16], "saliency")
    maps[:4] = 0
    rho = randomization_check(trained, images[:16], labels[:16], "saliency", maps=maps)
    assert rho[:4].isnan().all() and rho[4:].isfinite().all()
    summary = summarize(rho)
    assert summary["excluded"] == 4 and summary["n"] == 12
    assert summary["mean"] == pytest.approx(rho[4:].mean().item())


def test_bootstrap_interval_and_summary():
    values = torch.tensor([0.0, 1.0] * 50)
    low, high = bootstrap_interval(values, seed=0)
    # the mean of 100 fair coin flips: about 0.5 +- 1.96 * 0.05
    assert 0.38 < low < 0.45 and 0.55 < high < 0.62
    assert bootstrap_interval(values, seed=0) == [low, high]
    assert bootstrap_interval(torch.full((5,), 0.3)) == pytest.approx([0.3, 0.3])
    empty = summarize(torch.tensor([float("nan")] * 3))
    assert empty["n"] == 0 and empty["excluded"] == 3 and all(v != v for v in [empty["mean"], *empty["ci95"]])


def test_verdict_by_hand():
    n = 40
    good = {
        "pointing_game": torch.ones(n),
        "chance": torch.full((n,), 0.25),
        "deletion_auc": torch.full((n,), 0.2),
        "random_deletion_auc": torch.full((n,), 0.5),
        "randomization_spearman": torch.full((n,), 0.1),
    }
    assert verdict(good) == verdict(good) and verdict(good)["reliable"]
    assert verdict(good)["reason"] == "reliable for this model"
    at_chance = good | {"pointing_game": torch.tensor([1.0, 0.0, 0.0, 0.0] * 10)}
    result = verdict(at_chance)
    assert result["failed"] == ["pointing"]
    assert result["reason"].startswith(
        "unreliable for this model: points at chance (pointing_game - chance = 0.000"
    )
    worse_than_random = good | {"deletion_auc": torch.full((n,), 0.6)}
    assert verdict(worse_than_random)["failed"] == ["deletion"]
    # a stricter threshold fails the same numbers
    assert verdict(good, {"randomization_max": 0.05})["failed"] == ["randomization"]
    # without masks only deletion and randomisation are judged
    no_masks = {k: v for k, v in good.items() if k not in ("pointing_game", "chance")}
    assert set(verdict(no_masks)["checks"]) == {"deletion", "randomization"}
    all_constant = good | {"randomization_spearman": torch.full((n,), float("nan"))}
    assert "undefined on every face" in verdict(all_constant)["reason"]


def test_layer_helpers():
    model = small_cnn()
    assert conv_layers(model) == ["1.0", "1.4", "1.8", "1.12"]
    assert last_conv(model) is model[1][12]
    x = torch.rand(2, 1, 48, 48, requires_grad=True)
    out = layer_output(model, model[1][4], x)
    assert out.shape == (2, 16, 24, 24)
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        last_conv(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))

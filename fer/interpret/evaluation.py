"""Measures of attribution quality against ground-truth masks, the model, and a randomized model; their
bootstrap intervals; and the verdict they give on each method.

Every measure is per image (a (B,) tensor), so that it can carry an interval. A measure that is undefined
for an image is NaN there (a rank correlation with a constant map) and is left out of the mean; the
summary counts how many were left out.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.functional import spearman_corrcoef

from fer.interpret.attribution import as_input, attribute, eval_mode, gray_baseline, model_device
from fer.interpret.layers import layer_name

# What each verdict check needs to pass (see `verdict`).
THRESHOLDS = {"pointing_margin": 0.05, "deletion_margin": 0.0, "randomization_max": 0.5}
FAILURES = {
    "pointing": "points at chance",
    "deletion": "deleting its top pixels hurts the model no more than a random order",
    "randomization": "its maps barely change when the model's weights are randomised",
}


def mask_fraction(masks: Tensor) -> Tensor:
    """Share of each image (B,) covered by its mask: the chance level of `pointing_game` and `mass_inside`."""
    return masks.float().flatten(1).mean(1)


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Per image (B,): 1 if the attribution peak lies inside the mask, else 0.

    Tied peaks (flat maps, occlusion plateaus) count by the share of them inside the mask, the
    expected hit of breaking the tie at random; so a flat map scores its mask fraction, i.e. chance.
    """
    flat, inside = maps.flatten(1), masks.flatten(1).bool()
    peaks = flat == flat.max(dim=1, keepdim=True).values
    return (peaks & inside).sum(1) / peaks.sum(1)


def mass_inside(maps: Tensor, masks: Tensor) -> Tensor:
    """Per image (B,): share of positive attribution mass inside the mask; with none, the mask fraction."""
    positive, inside = maps.flatten(1).clamp(min=0), masks.flatten(1).float()
    total = positive.sum(1)
    share = (positive * inside).sum(1) / total.clamp(min=torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, share, inside.mean(1))


@torch.no_grad()
def _deletion_curves(
    model: nn.Module, images: Tensor, targets: Tensor, order: Tensor, steps: int, batch_size: int
) -> tuple[Tensor, Tensor]:
    """Fractions deleted (steps+1,) and target probabilities (B, steps+1) as pixels go gray in `order`."""
    device = model_device(model)
    x = as_input(images, device)
    shape, x, gray = x.shape[1:], x.flatten(1), gray_baseline(x).flatten(1)
    n_pixels = x.shape[1]
    counts = torch.linspace(0, n_pixels, steps + 1, device=device).round()
    order = order.to(device)
    # rank[i, p]: when pixel p of image i is deleted
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n_pixels, device=device).expand_as(order))
    t = torch.as_tensor(targets, device=device).long()
    chunk = max(1, batch_size // (steps + 1))
    probs = []
    with eval_mode(model):
        for lo in range(0, len(x), chunk):
            part = slice(lo, lo + chunk)
            deleted = rank[part, None, :] < counts[None, :, None]
            batch = torch.where(deleted, gray[part, None, :], x[part, None, :])
            p = model(batch.view(-1, *shape)).softmax(-1).view(*deleted.shape[:2], -1)
            probs.append(p.gather(2, t[part, None, None].expand(-1, steps + 1, 1)).squeeze(2))
    return (counts / n_pixels).cpu(), torch.cat(probs).cpu()


def deletion_auc(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    maps: Tensor,
    steps: int = 16,
    batch_size: int = 512,
    seed: int = 0,
) -> Tensor:
    """Per image (B,): area under the target-probability curve as the most-attributed pixels go gray
    first; lower is better.

    Pixels are set to the image's mean gray, in `steps` equal chunks; the area is over the deleted
    fraction 0..1, so it lies in [0, 1]. Tied pixels (CAM zeros, occlusion plateaus) go in a seeded
    random order, not top-left first.
    """
    flat = maps.flatten(1).cpu()
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.stack([torch.randperm(flat.shape[1], generator=generator) for _ in range(len(flat))])
    order = shuffle.gather(1, flat.gather(1, shuffle).argsort(dim=1, descending=True, stable=True))
    fractions, probs = _deletion_curves(model, images, targets, order, steps, batch_size)
    return torch.trapezoid(probs, fractions)


def random_deletion_auc(
    model: nn.Module, images: Tensor, targets: Tensor, steps: int = 16, batch_size: int = 512, seed: int = 0
) -> Tensor:
    """`deletion_auc` in a seeded random pixel order: the baseline an attribution must beat."""
    flat_maps = torch.zeros(len(images), *images.shape[-2:])
    return deletion_auc(model, images, targets, flat_maps, steps, batch_size, seed)


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman correlation of each pair of maps (B,...) x (B,...): (B,), NaN where either map is constant.

    A constant map has no ranking to compare (scipy says NaN too); torchmetrics would return 0, which
    would count an empty map as "changed", even against another empty map.
    """
    a, b = a.flatten(1).float(), b.flatten(1).float()
    rho = spearman_corrcoef(a.T, b.T).reshape(len(a))
    constant = (a.amax(1) == a.amin(1)) | (b.amax(1) == b.amin(1))
    return torch.where(constant, torch.nan, rho)


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deep copy with every module that has `reset_parameters()` re-initialised (seeded)."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return clone


def randomization_check(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    method: str,
    layer: nn.Module | None = None,
    seed: int = 0,
    maps: Tensor | None = None,
    random_model: nn.Module | None = None,
    **attribution: Any,
) -> Tensor:
    """Model-parameter randomization test (Adebayo et al. 2018), full re-initialisation.

    Per image (B,): the Spearman rank correlation between the absolute maps of the trained model and of
    a randomly re-initialised copy (`randomized_copy(model, seed)` unless `random_model` is given); NaN
    where either map is constant. Near 1: the method ignores what the model learned. `maps` may pass the
    trained model's maps if already computed; `attribution` holds `attribute`'s options.
    """
    random_model = random_model if random_model is not None else randomized_copy(model, seed)
    random_layer = None if layer is None else random_model.get_submodule(layer_name(model, layer))
    if maps is None:
        maps = attribute(model, images, targets, method, layer, **attribution)
    random_maps = attribute(random_model, images, targets, method, random_layer, **attribution)
    return rank_correlation(maps.abs(), random_maps.abs())


def bootstrap_interval(
    values: Tensor, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> list[float]:
    """Percentile bootstrap interval [low, high] of the mean of the finite `values`; NaNs without any."""
    values = values[torch.isfinite(values)].double()
    if not len(values):
        return [math.nan, math.nan]
    generator = torch.Generator().manual_seed(seed)
    means = values[torch.randint(len(values), (resamples, len(values)), generator=generator)].mean(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype)).tolist()
    return [low, high]


def summarize(values: Tensor, seed: int = 0) -> dict[str, Any]:
    """Mean of the finite per-image `values` with its bootstrap 95% interval, how many were averaged and
    how many were excluded (NaN: undefined for that image)."""
    finite = torch.isfinite(values)
    n = int(finite.sum())
    mean = values[finite].double().mean().item() if n else math.nan
    return {"mean": mean, "ci95": bootstrap_interval(values, seed=seed), "n": n, "excluded": len(values) - n}


def verdict(per_image: Mapping[str, Tensor], thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Whether a method's maps can be trusted for this model, from its per-image measures.

    Each check runs where its measures exist, on the bootstrap 95% interval of the mean:
    pointing: pointing_game - chance must lie above `pointing_margin`; deletion: deletion_auc -
    random_deletion_auc must lie below -`deletion_margin`; randomization: randomization_spearman must lie
    below `randomization_max`. A check whose measure is undefined on every image fails.
    """
    t = THRESHOLDS | dict(thresholds or {})
    checks: dict[str, dict[str, Any]] = {}
    if "pointing_game" in per_image:
        gap = summarize(per_image["pointing_game"] - per_image["chance"])
        checks["pointing"] = gap | {
            "measure": "pointing_game - chance",
            "rule": f"95% interval above {t['pointing_margin']:g}",
            "passed": gap["ci95"][0] > t["pointing_margin"],
        }
    if "deletion_auc" in per_image:
        gap = summarize(per_image["deletion_auc"] - per_image["random_deletion_auc"])
        checks["deletion"] = gap | {
            "measure": "deletion_auc - random_deletion_auc",
            "rule": f"95% interval below {-t['deletion_margin']:g}",
            "passed": gap["ci95"][1] < -t["deletion_margin"],
        }
    if "randomization_spearman" in per_image:
        rho = summarize(per_image["randomization_spearman"])
        checks["randomization"] = rho | {
            "measure": "randomization_spearman",
            "rule": f"95% interval below {t['randomization_max']:g}",
            "passed": rho["ci95"][1] < t["randomization_max"],
        }
    failed = [name for name, check in checks.items() if not check["passed"]]
    return {"reliable": not failed, "failed": failed, "checks": checks, "reason": verdict_reason(checks)}


def verdict_reason(checks: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: 'reliable for this model' or 'unreliable for this model: <what failed> (<numbers>)'."""
    failed = [(name, check) for name, check in checks.items() if not check["passed"]]
    if not failed:
        return "reliable for this model"
    parts = []
    for name, check in failed:
        low, high = check["ci95"]
        numbers = f"{check['measure']} = {check['mean']:.3f} [{low:.3f}, {high:.3f}], needs {check['rule']}"
        if not check["n"]:
            numbers = f"{check['measure']} undefined on every face (constant maps)"
        parts.append(f"{FAILURES[name]} ({numbers})")
    return "unreliable for this model: " + "; ".join(parts)


def evaluate_methods(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    masks: Tensor | None,
    methods: Sequence[str],
    layer: nn.Module | None = None,
    steps: int = 16,
    seed: int = 0,
    attribution: Mapping[str, Any] | None = None,
    maps: Mapping[str, Tensor] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every measure of every method as a `summarize` dict, plus the method's `verdict`; plain JSON-able
    values. The mask measures (pointing_game, mass_inside, chance) only where `masks` exist.

    `attribution` holds `attribute`'s options, for the trained and the randomised model alike; `maps` may
    pass the trained model's maps of some methods if already computed.
    """
    attribution, maps = dict(attribution or {}), dict(maps or {})
    random_model = randomized_copy(model, seed)
    random_auc = random_deletion_auc(model, images, targets, steps=steps, seed=seed)
    report = {}
    for method in methods:
        trained = (
            maps[method]
            if method in maps
            else attribute(model, images, targets, method, layer, **attribution)
        )
        per_image = {}
        if masks is not None:
            per_image |= {
                "pointing_game": pointing_game(trained, masks),
                "mass_inside": mass_inside(trained, masks),
                "chance": mask_fraction(masks),
            }
        per_image |= {
            "deletion_auc": deletion_auc(model, images, targets, trained, steps=steps, seed=seed),
            "random_deletion_auc": random_auc,
            "randomization_spearman": randomization_check(
                model, images, targets, method, layer, maps=trained, random_model=random_model, **attribution
            ),
        }
        flat = trained.flatten(1)
        report[method] = {name: summarize(values, seed) for name, values in per_image.items()}
        report[method]["constant_maps"] = int((flat.amax(1) == flat.amin(1)).sum())
        report[method]["verdict"] = verdict(per_image, thresholds)
    return report

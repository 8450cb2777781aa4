"""Measures of attribution quality against ground-truth masks, the model, and a randomized model."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics.functional import spearman_corrcoef

from fer.interpret.attribution import as_input, attribute, eval_mode, gray_baseline, model_device


def mask_fraction(masks: Tensor) -> float:
    """Mean share of the image covered by the mask: the chance level of `pointing_game` and `mass_inside`."""
    return masks.float().flatten(1).mean(1).mean().item()


def pointing_game(maps: Tensor, masks: Tensor) -> float:
    """Fraction of images (B,H,W) whose attribution peak lies inside the mask.

    Tied peaks (flat maps, occlusion plateaus) count by the share of them inside the mask, the
    expected hit of breaking the tie at random; so a flat map scores its mask fraction, i.e. chance.
    """
    flat, inside = maps.flatten(1), masks.flatten(1).bool()
    peaks = flat == flat.max(dim=1, keepdim=True).values
    return ((peaks & inside).sum(1) / peaks.sum(1)).mean().item()


def mass_inside(maps: Tensor, masks: Tensor) -> float:
    """Mean share of positive attribution mass inside the mask; an image with none scores its mask fraction."""
    positive, inside = maps.flatten(1).clamp(min=0), masks.flatten(1).float()
    total = positive.sum(1)
    share = (positive * inside).sum(1) / total.clamp(min=torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, share, inside.mean(1)).mean().item()


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
) -> float:
    """Mean area under the target-probability curve as the most-attributed pixels go gray first; lower is better.

    Pixels are set to the image's mean gray, in `steps` equal chunks; the area is over the deleted
    fraction 0..1, so it lies in [0, 1]. Tied pixels (CAM zeros, occlusion plateaus) go in a seeded
    random order, not top-left first.
    """
    flat = maps.flatten(1).cpu()
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.stack([torch.randperm(flat.shape[1], generator=generator) for _ in range(len(flat))])
    order = shuffle.gather(1, flat.gather(1, shuffle).argsort(dim=1, descending=True, stable=True))
    fractions, probs = _deletion_curves(model, images, targets, order, steps, batch_size)
    return torch.trapezoid(probs, fractions).mean().item()


def random_deletion_auc(
    model: nn.Module, images: Tensor, targets: Tensor, steps: int = 16, batch_size: int = 512, seed: int = 0
) -> float:
    """`deletion_auc` in a seeded random pixel order: the baseline an attribution must beat."""
    flat_maps = torch.zeros(len(images), *images.shape[-2:])
    return deletion_auc(model, images, targets, flat_maps, steps, batch_size, seed)


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
) -> float:
    """Model-parameter randomization test (Adebayo et al. 2018), full re-initialisation.

    Mean over images of the Spearman rank correlation between the absolute maps of the trained
    model and of a randomly re-initialised copy. Near 1: the method ignores what the model learned.
    `maps` may pass the trained model's maps if already computed.
    """
    random_model = randomized_copy(model, seed)
    random_layer = None
    if layer is not None:
        name = next((n for n, m in model.named_modules() if m is layer), None)
        if name is None:
            raise ValueError("layer is not a submodule of model")
        random_layer = random_model.get_submodule(name)
    if maps is None:
        maps = attribute(model, images, targets, method, layer)
    random_maps = attribute(random_model, images, targets, method, random_layer)
    rho = spearman_corrcoef(maps.flatten(1).abs().T, random_maps.flatten(1).abs().T)
    return rho.mean().item()


def evaluate_methods(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    masks: Tensor,
    methods: Sequence[str],
    layer: nn.Module | None = None,
    steps: int = 16,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Every measure for every method, as plain floats (JSON-able)."""
    chance = mask_fraction(masks)
    random_auc = random_deletion_auc(model, images, targets, steps=steps, seed=seed)
    report = {}
    for method in methods:
        maps = attribute(model, images, targets, method, layer)
        report[method] = {
            "pointing_game": pointing_game(maps, masks),
            "mass_inside": mass_inside(maps, masks),
            "chance": chance,
            "deletion_auc": deletion_auc(model, images, targets, maps, steps=steps),
            "random_deletion_auc": random_auc,
            "randomization_spearman": randomization_check(
                model, images, targets, method, layer, seed=seed, maps=maps
            ),
        }
    return report

"""Test-time augmentation (`tta=` group, conf/tta/): a model's class probabilities averaged over views.

A view is the batch itself, the batch shifted by `shift` pixels diagonally towards each corner with the
uncovered pixels filled as `padding` says (the four corner crops of the face padded by `shift`, as the
pad-and-crop training augmentation draws them with the same aug.padding), the whole face resized to each
of `scales` pixels a side, and, with `flip`, each of these mirrored. `crops` (flip, shift 2) is ten-crop
style: 5 positions x 2 mirrors = 10 views, all 48x48, so any model takes them. `multiscale` adds the face
at 44 and 52 pixels: 14 views, for a model with a global pool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fer.data.labels import IMAGE_SIZE
from fer.data.transforms import pad, resize
from fer.models.joint_ensemble import mean_log_probs
from fer.rules import check_values
from fer.schema import TTA_RULES, ConfigError


def shifted_views(images: Tensor, offsets: Sequence[tuple[int, int]], padding: str = "zeros") -> list[Tensor]:
    """For each (dx, dy) of `offsets`, the window of a (B,C,H,W) batch padded as `padding` says that starts dx
    pixels right and dy down of the face's own: the face moved by (-dx, -dy), the same size."""
    margin = max((max(abs(dx), abs(dy)) for dx, dy in offsets), default=0)
    h, w = images.shape[-2:]
    padded = pad(images, margin, padding)
    return [padded[..., margin + dy : margin + dy + h, margin + dx : margin + dx + w] for dx, dy in offsets]


def tta_views(
    images: Tensor, flip: bool = False, shift: int = 0, scales: Sequence[int] = (), padding: str = "zeros"
) -> list[Tensor]:
    """The views of a (B,C,H,W) batch, the unchanged batch first."""
    views = [images]
    if shift:
        s = int(shift)
        views += shifted_views(images, [(dx, dy) for dy in (-s, s) for dx in (-s, s)], padding)
    views += [resize(images, int(size)) for size in scales]
    if flip:
        views += [v.flip(-1) for v in views]
    return views


def num_views(tta: Mapping[str, Any] | None) -> int:
    tta = tta or {}
    return ((5 if tta.get("shift") else 1) + len(tta.get("scales") or ())) * (2 if tta.get("flip") else 1)


def checked_tta(tta: Mapping[str, Any], origin: str = "") -> dict[str, Any]:
    """`tta` with its flip, shift, scales and padding checked against TTA_RULES (a numeric string read as its
    number); the error names each wrong `tta.KEY` and its value, and `origin` says where the values came from."""
    converted, problems = check_values(TTA_RULES, dict(tta), "tta.")
    if problems:
        raise ConfigError(
            f"invalid TTA value(s){origin}: {'; '.join(problems)} (tta.shift: pixels each corner view is "
            f"shifted by, at most {IMAGE_SIZE - 1} on a {IMAGE_SIZE}x{IMAGE_SIZE} face; tta.flip: whether "
            "the mirror images are views too; tta.scales: the sides, in pixels, of the rescaled whole-face views; "
            "tta.padding: how a shift fills the pixels it uncovers)"
        )
    return {**tta, **converted}


def score_views(model: Callable[[Tensor], Tensor], views: Sequence[Tensor]) -> Tensor:
    """Log-softmax of `model` on each of `views`, in fp32 whatever the autocast: (views, B, classes)."""
    return torch.stack([model(v).float().log_softmax(dim=1) for v in views])


def view_log_probs(
    model: Callable[[Tensor], Tensor], images: Tensor, tta: Mapping[str, Any] | None = None
) -> Tensor:
    """Log-softmax of `model` on every view: (views, B, classes), the unchanged batch first."""
    tta = run_padding(checked_tta(tta or {}), None)
    views = tta_views(
        images, tta.get("flip", False), tta.get("shift", 0), tta.get("scales") or (), tta["padding"]
    )
    return score_views(model, views)


def tta_log_probs(model: nn.Module, images: Tensor, tta: Mapping[str, Any] | None = None) -> Tensor:
    """Log of `model`'s class probabilities averaged over the TTA views of `images`: (B, classes).

    With no TTA this is `model(images).log_softmax(1)` exactly.
    """
    return mean_log_probs(view_log_probs(model, images, tta))


def run_padding(tta: Mapping[str, Any], aug: Mapping[str, Any] | None) -> dict[str, Any]:
    """`tta` with a null (or absent) padding made the run's `aug.padding`: the shifted views filled as the
    training shifts were; black without a run (`aug` None) or for one whose aug has no padding (fer before it)."""
    padding = tta.get("padding")
    return {**tta, "padding": (aug or {}).get("padding", "zeros") if padding is None else padding}


def chosen_tta(given: Mapping[str, Any] | None, run_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The TTA to evaluate a checkpoint with, plus its number of views: `given` (a `tta=` of the command
    line), else the one the checkpoint's training run was tested with, else none; its values checked, and a
    null padding made the run's aug.padding."""
    run_tta = (run_config or {}).get("tta")
    if given:
        tta = checked_tta(given)
    elif run_tta:
        tta = checked_tta(run_tta, " in the checkpoint's run config (pass tta=none, flip or crops instead)")
    else:
        tta = {"name": "none", "flip": False, "shift": 0}
    tta = run_padding(tta, (run_config or {}).get("aug"))
    return {**tta, "views": num_views(tta)}


def tta_label(tta: Mapping[str, Any]) -> str:
    """`crops (10 views, shift 2)`, `multiscale (14 views, shift 2, scales 44 52)`, `crops (10 views, shift 2,
    reflection fill)`: a TTA in one table cell."""
    views = num_views(tta)
    parts = [f"{views} view{'s' if views > 1 else ''}", f"shift {tta.get('shift', 0)}"]
    if tta.get("scales"):
        parts.append("scales " + " ".join(str(size) for size in tta["scales"]))
    if tta.get("padding", "zeros") != "zeros":
        parts.append(f"{tta['padding']} fill")
    return f"{tta['name']} ({', '.join(parts)})"

"""Which test-time views pay: each checkpoint's accuracy on a stage of its data under named sets of shifted
views, and each set's mean gain over `tta=crops` with the checkpoints it beats it on.

    python bench/tta_views.py RUN_OR_CKPT_OR_SWEEP [...] [--split val] [--out DIR]

A view is the face shifted (dx, dy) pixels, the uncovered pixels filled as the run's aug.padding (as fer.tta
and the pad-and-crop augmentation fill them), and its mirror image; a set's views' probabilities are averaged,
as fer.tta averages them. Every view is scored once per face and the sets are combined from those scores, so
a set of sets costs the forward passes of their union: 29 positions x 2 mirrors = 58 per face. Select on
val, the default, never on the test split. Writes DIR/tta_views.csv (one row per checkpoint and set) when
`--out` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor

from fer import rundir
from fer.analysis.select import data_config, evaluation_faces, load_model
from fer.ensemble import member_checkpoints
from fer.files import write_csv
from fer.interpret.attribution import as_input
from fer.interpret.layers import eval_mode
from fer.models.joint_ensemble import mean_log_probs
from fer.runtime import autocast, evaluation_precision
from fer.tta import run_padding, score_views, shifted_views

Position = tuple[int, int]


def corners(s: int) -> list[Position]:
    return [(dx, dy) for dy in (-s, s) for dx in (-s, s)]


def sides(s: int) -> list[Position]:
    return [(s, 0), (-s, 0), (0, s), (0, -s)]


CENTRE: list[Position] = [(0, 0)]
# Each set's positions; every set is also mirrored. "crops" is conf/tta/crops.yaml's (shift 2).
VIEW_SETS: dict[str, list[Position]] = {
    "crops": CENTRE + corners(2),
    "corners3": CENTRE + corners(3),
    "corners4": CENTRE + corners(4),
    "sides2": CENTRE + sides(2),
    "grid2": CENTRE + corners(2) + sides(2),
    "corners2+4": CENTRE + corners(2) + corners(4),
    "grid4": CENTRE + corners(4) + sides(4),
    "grid5x5": [(dx, dy) for dy in (-4, -2, 0, 2, 4) for dx in (-4, -2, 0, 2, 4)],
}
BASELINE = "crops"


def position_log_probs(
    model: torch.nn.Module, images: Tensor, positions: list[Position], padding: str
) -> Tensor:
    """Log-softmax of `model` on each position's shifted view of a (B,1,H,W) batch (fer.tta's shifted_views,
    as tta=crops shifts its corners) and then on its mirror image: (2 * positions, B, classes)."""
    views = shifted_views(images, positions, padding)
    return score_views(model, views + [v.flip(-1) for v in views])


def set_accuracies(log_probs: Tensor, labels: Tensor, positions: list[Position]) -> dict[str, float]:
    """Accuracy of every VIEW_SETS entry from the per-view log-probs of `position_log_probs` over `positions`."""
    index = {p: i for i, p in enumerate(positions)}
    out = {}
    for name, chosen in VIEW_SETS.items():
        rows = [index[p] for p in chosen] + [len(positions) + index[p] for p in chosen]
        predicted = mean_log_probs(log_probs[rows]).argmax(dim=1)  # as fer.tta averages the views
        out[name] = (predicted == labels).float().mean().item()
    return out


def score(ckpt: Path, split: str | None, batch_size: int = 256) -> dict[str, float]:
    """Each VIEW_SETS entry's accuracy for one checkpoint on `split` (its data's test stage if None, val
    without one), evaluated as analyze.py evaluates it (the run's precision where native)."""
    model = load_model(ckpt, "cpu")
    faces, _ = evaluation_faces(data_config(model.run_config, OmegaConf.create({}), str(ckpt)), split)
    # The shifts' fill, as tta=crops reads it.
    padding = run_padding({}, model.run_config.get("aug"))["padding"]
    precision = evaluation_precision(None, model.run_config, model.device)
    positions = sorted({p for chosen in VIEW_SETS.values() for p in chosen})
    images, labels = torch.as_tensor(faces.images), torch.as_tensor(faces.labels)
    if (labels < 0).any():
        raise SystemExit(
            f"{ckpt}: --split {split} holds unlabelled faces; score a labelled stage (val, test)"
        )
    cpu = torch.device("cpu")
    with torch.no_grad(), eval_mode(model), autocast(precision, cpu):
        parts = [
            position_log_probs(model, as_input(images[lo : lo + batch_size], cpu), positions, padding)
            for lo in range(0, len(images), batch_size)
        ]
    return set_accuracies(torch.cat(parts, dim=1), labels, positions)


def label(ckpt: Path) -> str:
    """A checkpoint's name in the printed table, the end of its run folder's path for a run's best.ckpt."""
    return str(ckpt.parent.parent if str(ckpt).endswith(rundir.BEST_CKPT) else ckpt)[-24:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", nargs="+", help="run folders (their best.ckpt), checkpoint files, sweep folders (every job's)"
    )
    parser.add_argument("--split", default="val", help="a stage (val, test) or a split of the run's data")
    parser.add_argument("--out", type=Path, help="folder for tta_views.csv")
    args = parser.parse_args()
    ckpts, _ = member_checkpoints(args.runs)  # as analyze.py ensemble= reads them, failed sweep jobs left out
    table = {ckpt: score(ckpt, args.split) for ckpt in ckpts}
    names = list(VIEW_SETS)
    print(f"{'':24}" + "".join(f"{n:>11}" for n in names))
    for ckpt, accs in table.items():
        print(f"{label(ckpt):24}" + "".join(f"{accs[n]:11.4f}" for n in names))
    mean = {n: sum(a[n] for a in table.values()) / len(table) for n in names}
    print(f"{'mean':24}" + "".join(f"{mean[n]:11.4f}" for n in names))
    print(f"{'gain over ' + BASELINE:24}" + "".join(f"{mean[n] - mean[BASELINE]:+11.4f}" for n in names))
    wins = {n: sum(a[n] > a[BASELINE] for a in table.values()) for n in names}
    print(f"{'above ' + BASELINE + ' on':24}" + "".join(f"{f'{wins[n]} of {len(table)}':>11}" for n in names))
    print("views:", ", ".join(f"{n} {2 * len(VIEW_SETS[n])}" for n in names))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        rows = [
            {"run": str(ckpt), "set": n, "views": 2 * len(VIEW_SETS[n]), "accuracy": round(accs[n], 6)}
            for ckpt, accs in table.items()
            for n in names
        ]
        print("wrote", write_csv(args.out / "tta_views.csv", rows, ["run", "set", "views", "accuracy"]))


if __name__ == "__main__":
    main()

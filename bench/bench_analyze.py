"""Time `analyze.py` with its default settings, part by part, on a cnn4 checkpoint and the synthetic test split.

    python bench/bench_analyze.py [RUN_DIR] [--threads N] [--repeats N]

RUN_DIR defaults to outputs/bench/analyze_run, trained on first use (the demo's data, synthetic://3000,
whose test split has 300 faces; a few batches of one epoch: the weights do not change the cost). Prints
wall and CPU seconds per part and each part's share of the wall total, the fastest of `--repeats` runs,
the share of analysed filters whose activation maximization reached the best real image's activation, per
layer, then the cost of one drawing of the interpretability callback (conf/callbacks/interpret.yaml). CPU seconds
count every thread; on a machine shared with other work, wall time is the less reliable of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra.utils import instantiate

from fer.analysis.run import run as analyze
from fer.config import compose_run
from fer.data.datamodule import FERDataModule
from fer.module import FERModule
from fer.train import run as train

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "outputs/bench/analyze_run"
TRAIN = [
    "data.path='synthetic://3000?seed=0'",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=4",
    "callbacks.rich_progress_bar=null",
    "seed=0",
]


def trained_run(run_dir: Path) -> Path:
    if not (run_dir / "checkpoints/best.ckpt").is_file():
        print(f"training a tiny cnn4 run into {run_dir} ...")
        train(compose_run("train", TRAIN, run_dir))
    return run_dir


def time_analysis(run_dir: Path, repeats: int) -> dict:
    """analysis.json of the fastest of `repeats` default analyses (by the wall total of its timings)."""
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            out = Path(tmp) / f"analysis{k}"
            analyze(compose_run("analyze", [f"run={run_dir}", f"out={out}"], out))
            analysis = json.loads((out / "analysis.json").read_text())
            wall = sum(p["wall_s"] for p in analysis["timings_s"].values())
            if best is None or wall < sum(p["wall_s"] for p in best["timings_s"].values()):
                best = analysis
    return best


def time_callback_draw(run_dir: Path) -> float:
    """Seconds of one InterpretFigures drawing (saliency grid and activation maximization) with its defaults."""
    module = FERModule.load_from_checkpoint(run_dir / "checkpoints/best.ckpt", map_location="cpu")
    data = FERDataModule(path="synthetic://3000?seed=0")
    data.setup()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run("train", ["callbacks=interpret"], Path(tmp))
        callback = instantiate(cfg.callbacks.interpret_figures, output_dir=tmp)
        trainer = SimpleNamespace(datamodule=data, is_global_zero=True, loggers=[], global_step=0)
        callback.on_fit_start(trainer, module)
        start = time.perf_counter()
        callback.draw(trainer, module, epoch=0)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=RUN)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = trained_run(args.run_dir)
    load_before = os.getloadavg()[0]
    analysis = time_analysis(run_dir, args.repeats)
    parts = analysis["timings_s"]
    total = sum(p["wall_s"] for p in parts.values())
    print(
        f"\nanalyze.py defaults on {run_dir} ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs)"
    )
    print(f"{'part':16s} {'wall s':>8s} {'cpu s':>8s} {'share':>7s}")
    for name, p in parts.items():
        print(f"{name:16s} {p['wall_s']:8.2f} {p['cpu_s']:8.2f} {p['wall_s'] / total:7.1%}")
    print(f"{'total':16s} {total:8.2f} {sum(p['cpu_s'] for p in parts.values()):8.2f}")
    for layer, info in analysis["filters"].items():
        print(
            f"activation maximization reached the best real image: {info['reached_fraction']:.0%} of {layer}"
        )
    draw = time_callback_draw(run_dir)
    print(f"\ncallbacks=interpret: one drawing (saliency + activation maximization) {draw:.2f} s")
    print(f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

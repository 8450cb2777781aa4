"""Which checkpoint, which data and which rows an analysis (or a prediction, or an ensemble) studies, and
where its files go."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fer import rundir
from fer.data import DataError, read_dataset
from fer.data.datamodule import STAGES
from fer.data.faceset import FaceSet
from fer.module import FERModule
from fer.rundir import RunDirError
from fer.runtime import apply_runtime
from fer.schema import ConfigError
from fer.summarize import error_line, job_dirs

log = logging.getLogger(__name__)
# The result files that list what an analysis (analysis.json) or an ensemble (ensemble.json) wrote.
RESULT_FILES = ("analysis.json", "ensemble.json")
_SHOWN_TENSORS = 5  # non-finite weight tensors named in load_model's error


def checkpoint_path(ckpt: str | None, run: str | None, member: str | None = None) -> Path:
    """The checkpoint that `ckpt=` names, or `run=`'s checkpoints/best.ckpt, checked against the sha256 its
    run recorded; errors say what is missing where (`member` names an ensemble member in them instead of
    the option)."""
    if ckpt and run:
        raise ConfigError(f"pass ckpt=PATH or run=RUN_DIR, not both (got ckpt={ckpt} run={run})")
    name = member or (f"run={run}" if run else f"ckpt={ckpt}")
    if run:
        best = Path(run) / rundir.BEST_CKPT
        if not Path(run).is_dir():
            raise FileNotFoundError(f"{name}: no such run folder")
        if not best.is_file():
            raise FileNotFoundError(f"{name}: no {best}; {_why_no_best(Path(run), member)}")
        return _verified(best, name)
    if ckpt:
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"{name}: no such checkpoint file")
        return _verified(Path(ckpt), name)
    raise ConfigError(
        "nothing to analyse: pass ckpt=PATH.ckpt, run=RUN_DIR (uses RUN_DIR/checkpoints/best.ckpt), "
        "ensemble=[RUN_OR_CKPT,...] or sweep=multirun/DATE/TIME"
    )


def _why_no_best(run: Path, member: str | None) -> str:
    """Why run folder `run` has no checkpoints/best.ckpt, and what to pass instead."""
    folder = run / rundir.CHECKPOINTS
    found = sorted(p.name for p in folder.glob("*.ckpt"))
    if found:
        other = folder / found[0]
        use = f"name {other} in ensemble= instead" if member else f"pass ckpt={other}"
        return f"it has {', '.join(found)}: {use}"
    if (run / rundir.ERROR).is_file():
        return f"the run failed: {error_line(run)} (see {run / rundir.ERROR})"
    jobs = [] if folder.is_dir() else job_dirs(run)
    if jobs:
        return (
            f"it is a sweep folder (jobs {', '.join(job.name for job in jobs)}): pass sweep={run} for its "
            f"table, ensemble=[{run}] to average its jobs' models, or run={jobs[0]} for one job"
        )
    return "the run saved no checkpoints (callbacks=none saves none, and a run that failed early neither)"


def _verified(ckpt: Path, name: str) -> Path:
    """`ckpt`, after checking it against the sha256 that its run's metrics.json recorded when it lies in a
    run folder (RUN/checkpoints/NAME.ckpt); `name` says in errors which option or member gave it."""
    run_dir = ckpt.parent.parent
    try:
        rundir.verify_checkpoint(run_dir, ckpt, name)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(
            f"{name}: {run_dir / rundir.METRICS} is not valid JSON ({e}), so {ckpt} cannot be checked "
            "against the sha256 it recorded: restore the file from a backup (or retrain)"
        ) from e
    return ckpt


def run_dir_of(ckpt: Path) -> Path:
    """The run folder a checkpoint belongs to: the parent of checkpoints/, else the checkpoint's folder."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def load_model(ckpt: Path, device: str, member: str | None = None) -> FERModule:
    """The checkpoint's module (weights only: a checkpoint cannot run code when loaded), in eval mode and
    channels_last (cnn4 on 2 CPU cores: forward 1.5x, forward+backward 1.3x faster; same maths). Errors
    name `member` (an ensemble member), else `ckpt=`."""
    name = member or f"ckpt={ckpt}"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = FERModule.load_from_checkpoint(ckpt, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, EOFError) as e:
        raise RunDirError(f"{name}: not a checkpoint of fer's FERModule ({type(e).__name__}: {e})") from e
    except InstantiationException as e:
        raise RunDirError(f"{name}: its model config does not build with this code: {e}") from e
    bad = non_finite_tensors(model)
    if bad:
        shown = ", ".join(bad[:_SHOWN_TENSORS]) + (
            f" and {len(bad) - _SHOWN_TENSORS} more" if len(bad) > _SHOWN_TENSORS else ""
        )
        raise RunDirError(
            f"{name}: {ckpt} holds NaN or infinite values in {len(bad)} of its weight tensors ({shown}), so "
            "every prediction would be NaN: its training diverged or the file was damaged; use an earlier "
            "checkpoint, or retrain (a lower optim.lr, or trainer.gradient_clip_val)"
        )
    return apply_runtime(model, channels_last=True).eval()


def non_finite_tensors(model: nn.Module) -> list[str]:
    """The names of `model`'s floating-point parameters and buffers holding a NaN or an infinity (not its
    metrics' states: a best-so-far starts at -inf)."""
    return [
        key
        for key, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def _without_nulls(node: Any) -> Any:
    """`node` without its null leaves: a null keeps the checkpoint's value."""
    if isinstance(node, dict):
        kept = {k: _without_nulls(v) for k, v in node.items() if v is not None}
        return {k: v for k, v in kept.items() if v != {}}
    return node


def _unknown_keys(changes: Mapping[str, Any], base: Mapping[str, Any], prefix: str = "data") -> list[str]:
    """The dotted names of the keys of `changes` that `base` lacks."""
    unknown = []
    for key, value in changes.items():
        if key not in base:
            unknown.append(f"{prefix}.{key}")
        elif isinstance(value, Mapping) and isinstance(base[key], Mapping):
            unknown += _unknown_keys(value, base[key], f"{prefix}.{key}")
    return unknown


def data_config(run_config: Mapping[str, Any] | None, changes: DictConfig, name: str) -> DictConfig:
    """The checkpoint's data config with the command line's `data.*` changes merged on top; a key the
    checkpoint's config lacks is an error (a typo would otherwise be ignored or fail far from here). `name`
    says in errors which checkpoint that is."""
    given = _without_nulls(OmegaConf.to_container(changes, resolve=True))
    base = (run_config or {}).get("data")
    if base is None:
        if "path" not in given:
            raise ConfigError(f"{name} holds no run_config (saved by an older fer): pass data.path=...")
        base = {"_target_": "fer.data.datamodule.FERDataModule"}
    else:
        unknown = _unknown_keys(given, base)
        if unknown:
            raise ConfigError(
                f"{', '.join(unknown)}: not in the data config of {name}; "
                f"its keys: {', '.join(k for k in base if k != '_target_')}"
            )
    return OmegaConf.merge(base, given)


def stage_or_split(data: DictConfig, name: str, option: str = "split") -> tuple[FaceSet, str]:
    """Rows of a stage of the data config (train, val, test, predict) or of a split name of its source,
    and their description; `option` is the setting that named them, for the error message."""
    if name in STAGES:
        datamodule = instantiate(data)
        datamodule.setup()
        if name not in datamodule.faces:
            raise ConfigError(
                f"{option}={name}: the run's data config has no {name} stage (data.splits.{name} is null); "
                f"stages it has: {', '.join(datamodule.faces)}; or name a split of {data.path}"
            )
        split = datamodule.splits.get(name) or f"{datamodule.val_fraction:.0%} held out of the train split"
        return datamodule.faces[name], f"the {name} stage ({split})"
    faces = read_dataset(data.path, layout=data.layout, on_bad_row=data.on_bad_row, cache_dir=data.cache_dir)
    kinds = f"a stage ({'|'.join(STAGES)})" if option == "split" else "a stage, a data path"
    return _rows_of_split(faces, name, option, f"{kinds} nor a split of {faces.source}"), f"the {name} split"


def _rows_of_split(faces: FaceSet, name: str, option: str, expected: str) -> FaceSet:
    """The rows of split `name` of `faces`; else an error saying that `option`=`name` is not `expected`."""
    rows = faces.split == name
    if not rows.any():
        present = ", ".join(f"{k} ({v} rows)" for k, v in faces.split_counts().items())
        raise ConfigError(f"{option}={name!r} is not {expected}; its splits: {present}")
    return faces.subset(rows)


def evaluation_faces(data: DictConfig, split: str | None) -> tuple[FaceSet, str]:
    """What an analysis evaluates: `split`, or the test stage of the data config (val when it has none)."""
    if split is None:
        split = "test" if data.get("splits", {}).get("test") else "val"
    return stage_or_split(data, split)


def predicts_a_path(predict: str) -> bool:
    """Whether `predict=` names a data path or address (else a stage or split of the run's data)."""
    return predict not in STAGES and (predict.startswith("synthetic://") or Path(predict).exists())


def prediction_faces(
    data: DictConfig, predict: str, split: str | None, cache_dir: str | None
) -> tuple[FaceSet, str]:
    """What predict mode predicts: a stage or split of the run's data, or the rows of any data path."""
    if not predicts_a_path(predict):
        if split is not None:
            raise ConfigError(
                f"predict={predict} already names the rows; split= only picks rows of a data path"
            )
        return stage_or_split(data, predict, "predict")
    faces = read_dataset(predict, cache_dir=cache_dir)
    if split is not None:
        return _rows_of_split(faces, split, "split", f"a split of predict={predict}"), f"the {split} split"
    unlabelled = faces.labels < 0
    if unlabelled.any():
        return faces.subset(unlabelled), "the unlabelled rows"
    return faces, "every row"


def chosen_faces(data: DictConfig, cfg: DictConfig, name: str) -> tuple[FaceSet, str]:
    """The rows `cfg` asks for (`prediction_faces` with `predict=`, else `evaluation_faces`) and their
    description. A data.path that came from checkpoint `name` and is gone is said to be so, with the
    override that points at the data's new place."""
    predict = str(cfg.predict) if cfg.get("predict") else None
    try:
        if predict:
            return prediction_faces(data, predict, cfg.get("split"), cfg.paths.cache_dir)
        return evaluation_faces(data, cfg.get("split"))
    except DataError as e:
        reads_run_data = not (predict and predicts_a_path(predict))
        from_checkpoint = cfg.data.get("path") is None
        path = str(data.path)
        if not (reads_run_data and from_checkpoint) or path.startswith("synthetic://") or Path(path).exists():
            raise
        raise DataError(
            f"{name}: data.path={path} comes from the checkpoint's run config (the data it trained on), and "
            f"there is nothing there now; if the data moved, pass data.path=NEW_PATH"
        ) from e


def output_dir(out: str | None, ckpt: Path, predicting: bool) -> Path:
    """`out=`, else the run dir's analysis/ (predictions/ in predict mode)."""
    return Path(out) if out else run_dir_of(ckpt) / ("predictions" if predicting else "analysis")


def stale_files(out: Path) -> list[str]:
    """The files an earlier analysis or ensemble wrote into `out`: those its analysis.json or ensemble.json
    lists, and that file. Called before the work starts, so that an unreadable list fails at once."""
    stale = []
    for result in RESULT_FILES:
        path = out / result
        if not path.is_file():
            continue
        try:
            found = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            found = None
        files = found.get("files", {}) if isinstance(found, dict) else None
        if not isinstance(files, dict):
            raise ConfigError(
                f"output folder {out}: {path} is not the JSON an analysis writes (an object with a 'files' "
                "object), so the files of the analysis before cannot be told from others: remove it (and the "
                "files it wrote), or choose another out="
            )
        # Only plain names: nothing outside `out` is ever removed.
        stale += [n for n in files.values() if isinstance(n, str) and Path(n).name == n] + [result]
    return stale


def prepare_output(out: Path, stale: list[str]) -> None:
    """Create `out` and remove the `stale` files in it (`stale_files`), so that no file of an earlier
    analysis stays beside the new ones."""
    out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        if (out / name).is_file():
            (out / name).unlink()
            log.info("removed %s: the analysis before wrote it into %s", name, out)

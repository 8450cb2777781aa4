"""`FERDataModule`: splits, normalization statistics, augmentation and loaders over any layout."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from fer.data import read_dataset
from fer.data.errors import DataError
from fer.data.faceset import FaceSet
from fer.data.labels import CLASS_NAMES, NUM_CLASSES
from fer.data.transforms import BatchAugment, alternating_flip, label_mixing, progressive_size, resize
from fer.models.normalization import NORMALIZATIONS
from fer.schedules import fit_progress

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test", "predict")
DEFAULT_SPLITS = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def conflicting_settings(
    splits: Mapping[str, Any],
    val_fraction: float | None,
    on_device: bool,
    num_workers: int,
    aug: Mapping[str, Any],
) -> list[str]:
    """The data and aug settings that cannot go together, a line each naming its keys: checked before any
    data is read (fer.schema.validate) and by FERDataModule itself."""
    problems = []
    unknown = set(splits) - set(STAGES)
    if unknown:
        problems.append(f"data.splits has unknown key(s) {sorted(unknown)}; valid keys: {list(STAGES)}")
    if val_fraction is not None and splits.get("val"):
        problems.append(
            f"data.val_fraction={val_fraction} and data.splits.val={splits['val']!r} both choose the "
            "validation set; set data.splits.val=null to carve it from the train split"
        )
    if on_device and num_workers:
        problems.append(
            f"data.on_device=true serves batches from the device itself: set data.num_workers=0 "
            f"(got {num_workers})"
        )
    if aug.get("alternate_flip") and aug.get("hflip"):
        problems.append(
            f"aug.alternate_flip=true and aug.hflip={aug['hflip']} both flip the faces; set aug.hflip=0"
        )
    return problems


class BatchTensors(TensorDataset):
    """A TensorDataset that hands the DataLoader a whole batch with one gather per tensor (the loader's
    `__getitems__` protocol) instead of one item per index and a stack: one kernel per batch on a GPU.
    Not for the CPU: there the per-item stack is already cheap, and a multi-threaded gather stalls
    when other processes hold the cores."""

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)
        return [t[index] for t in self.tensors]


def _whole_batch(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """Collation of a batch that `BatchTensors` already gathered."""
    return batch


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask selecting `fraction` of each class (at least one image per non-empty class)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        held[rows[: max(1, round(fraction * len(rows)))]] = True
    return held


def copies_of_kept(images: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Mask of the held-out faces whose pixels equal a face that is not held out."""
    rows = images.reshape(len(images), -1)
    kept = {row.tobytes() for row in rows[~held]}
    copies = np.zeros_like(held)
    copies[held] = [row.tobytes() in kept for row in rows[held]]
    return copies


class FERDataModule(pl.LightningDataModule):
    """Serves uint8 faces as float pixel batches (0..255); the model normalizes, so checkpoints carry it.

    Splits are chosen by the split names in `splits` (`null` leaves a stage out), or, for validation,
    by a seeded stratified `val_fraction` of the train split when `splits.val` is null.
    Augmentation runs batch-wise after the batch reaches its device, on train batches only.
    `on_device` keeps every split on the trainer's device when that is a GPU, so batches are gathered
    there and nothing crosses the bus during training.
    """

    def __init__(
        self,
        path: str,
        layout: str = "auto",
        splits: Mapping[str, str | None] | None = None,
        val_fraction: float | None = None,
        normalization: str = "unit",
        batch_size: int = 128,
        num_workers: int = 0,
        cache_dir: str | None = None,
        on_bad_row: str = "error",
        split_seed: int = 0,
        aug: Mapping[str, Any] | None = None,
        on_device: bool = False,
    ) -> None:
        super().__init__()
        splits = dict(splits or DEFAULT_SPLITS)
        aug = dict(aug or {})
        conflicts = conflicting_settings(splits, val_fraction, on_device, num_workers, aug)
        if conflicts:
            raise DataError("; ".join(conflicts))
        if normalization not in NORMALIZATIONS:
            raise DataError(f"data.normalization={normalization!r} is not one of {list(NORMALIZATIONS)}")
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        self.path, self.layout, self.splits = path, layout, splits
        self.val_fraction, self.normalization = val_fraction, normalization
        self.batch_size, self.num_workers = batch_size, num_workers
        self.cache_dir, self.on_bad_row, self.split_seed = cache_dir, on_bad_row, split_seed
        self.on_device = on_device
        # MixUp/CutMix change the labels too, so they run apart from the image-only BatchAugment.
        self.mix = label_mixing(mixup=aug.pop("mixup", 0.0), cutmix=aug.pop("cutmix", 0.0))
        # The alternating flip depends on each image, so train batches then carry its flag per image.
        self.alternate_flip = bool(aug.pop("alternate_flip", False))
        self.flipped_first: torch.Tensor | None = None  # per train image, drawn in setup
        # Progressive resizing: train batches downscaled to progressive_start pixels at the start of the
        # fit, growing to the full size by the progressive_until fraction of it.
        self.progressive_start = int(aug.pop("progressive_start", 0))
        self.progressive_until = float(aug.pop("progressive_until", 0.5))
        # The fraction of the fit after which train faces go unaugmented (1: never), so the last steps
        # fit the faces as val and test show them.
        self.stop_at = float(aug.pop("stop_at", 1.0))
        self.augment = BatchAugment(**aug)
        self.faces: dict[str, FaceSet] = {}
        self._prepared: FaceSet | None = None  # the read of prepare_data, handed to setup

    def prepare_data(self) -> None:
        # Under DDP this runs once per node, so only one process parses and fills the cache; that
        # process's setup uses this read instead of reading again.
        if not self.faces and self._prepared is None:
            self._prepared = self._read()

    def _read(self) -> FaceSet:
        return read_dataset(
            self.path, layout=self.layout, on_bad_row=self.on_bad_row, cache_dir=self.cache_dir
        )

    def setup(self, stage: str | None = None) -> None:
        if self.faces:
            return
        faces, self._prepared = self._prepared or self._read(), None
        selected = {}
        for name in STAGES:
            split = self.splits.get(name)
            if split:
                selected[name] = self._select(faces, name, split)
        if "train" in selected and self.val_fraction is not None:
            train = selected["train"]
            held = stratified_holdout(train.labels, self.val_fraction, self.split_seed)
            # FER2013's Training holds repeated faces (199 of the dev copy's 2872 held-out faces repeat a
            # face left to train): validating on them would reward memorising, so they train instead.
            copies = copies_of_kept(train.images, held)
            held &= ~copies
            if not held.any():
                raise DataError(
                    f"data.val_fraction={self.val_fraction} leaves no validation faces in "
                    f"data.splits.train={self.splits['train']!r} of {faces.source}: each of the "
                    f"{int(copies.sum())} it holds out repeats a face left to train"
                )
            if copies.any():
                log.info("validation: %d held-out faces repeat a train face and train instead", copies.sum())
            selected["train"], selected["val"] = train.subset(~held), train.subset(held)
        for name in ("train", "val", "test"):
            if name in selected and (selected[name].labels < 0).any():
                raise DataError(
                    f"data.splits.{name}={self.splits.get(name)!r} in {faces.source} has unlabelled rows; "
                    f"only data.splits.predict may be unlabelled"
                )
        self.faces = selected
        if self.alternate_flip and "train" in selected:
            # From torch's seeded generator, so a seed gives the same flips.
            self.flipped_first = torch.rand(len(selected["train"])) < 0.5

    def _select(self, faces: FaceSet, stage: str, split: str) -> FaceSet:
        rows = faces.split == split
        if rows.any():
            return faces.subset(rows)
        counts = faces.split_counts()
        present = ", ".join(f"{k}={v}" for k, v in counts.items())
        choice = f"data.splits.{stage}={'|'.join(counts)}"
        if stage == "val":
            hint = f"{choice}, or data.splits.val=null data.val_fraction=0.1 (a stratified tenth of train)"
        elif stage == "test":
            hint = f"{choice}, or data.splits.test=null to skip testing"
        else:
            hint = choice
        raise DataError(
            f"data.splits.{stage}={split!r} selects no rows of {faces.source} (splits present: {present}). "
            f"Override with {hint}"
        )

    # What the model and the plots need to know about the data.
    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    @property
    def class_counts(self) -> list[int]:
        """Images per class in the train split."""
        return self.faces["train"].class_counts().tolist()

    @property
    def class_weights(self) -> list[float]:
        """Inverse-frequency weights scaled to mean 1 over the classes present in train."""
        counts = np.asarray(self.class_counts, dtype=np.float64)
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / NUM_CLASSES, 0.0)
        return (weights / weights[counts > 0].mean()).tolist()

    @property
    def normalization_args(self) -> dict[str, Any]:
        """The model's `Normalization` arguments: `data.normalization` and the train split's pixel mean
        and std (the `standardize` statistics; never from val/test)."""
        images = self.faces["train"].images
        return {"mode": self.normalization, "mean": float(images.mean()), "std": float(images.std())}

    def tensors(self, stage: str) -> TensorDataset:
        faces = self.faces[stage]
        images = torch.from_numpy(faces.images).unsqueeze(1)
        tensors = [images, torch.from_numpy(faces.labels)]
        if stage == "train" and self.flipped_first is not None:
            tensors.append(self.flipped_first)
        device = self.trainer.strategy.root_device if self.on_device and self.trainer is not None else None
        if device is None or device.type == "cpu":
            return TensorDataset(*tensors)
        return BatchTensors(*(t.to(device) for t in tensors))

    def _loader(self, stage: str, shuffle: bool = False) -> DataLoader:
        if stage not in self.faces:
            raise DataError(f"no {stage} split configured (data.splits.{stage} is null)")
        dataset = self.tensors(stage)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=_whole_batch if isinstance(dataset, BatchTensors) else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def on_after_batch_transfer(self, batch: list[torch.Tensor], dataloader_idx: int) -> list[torch.Tensor]:
        images, labels = batch[0].float(), batch[1]
        if self.trainer is not None and self.trainer.training:
            # Only the options that depend on it ask for the fit's progress: a fit of unknown length has none.
            progress = fit_progress(self.trainer) if self.stop_at < 1 or self.progressive_start else 0.0
            if self.stop_at >= 1 or progress < self.stop_at:
                if self.flipped_first is not None:
                    images = alternating_flip(images, batch[2], self.trainer.current_epoch)
                images = self.augment(images)
                if self.mix is not None:
                    images, labels = self.mix(images, labels)
            if self.progressive_start:
                size = progressive_size(
                    progress, images.shape[-1], self.progressive_start, self.progressive_until
                )
                images = resize(images, size)
        return [images, labels]

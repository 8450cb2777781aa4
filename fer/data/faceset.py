"""`FaceSet`: what every reader returns, whatever the file layout."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fer.data.labels import NUM_CLASSES


@dataclass
class FaceSet:
    """Faces of one data source, held as uint8 arrays (the whole FER2013 is ~80 MB).

    images: uint8 (N, 48, 48); labels: int64 (N,), -1 where unknown; split: str (N,)
    (`Training`, `PublicTest`, `PrivateTest`, `test`, ...); ids: str (N,) row identifiers;
    masks: bool (N, 48, 48) class-bearing regions, synthetic data only.
    """

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    ids: np.ndarray
    layout: str
    source: str
    masks: np.ndarray | None = None
    skipped: int = 0  # bad rows dropped under on_bad_row=skip
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        for name in ("labels", "split", "ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"FaceSet.{name} has {len(getattr(self, name))} rows, images has {n}")
        if self.masks is not None and self.masks.shape != self.images.shape:
            raise ValueError(f"FaceSet.masks has shape {self.masks.shape}, images {self.images.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> FaceSet:
        """Rows selected by a boolean mask or an index array."""
        return FaceSet(
            images=self.images[index],
            labels=self.labels[index],
            split=self.split[index],
            ids=self.ids[index],
            layout=self.layout,
            source=self.source,
            masks=None if self.masks is None else self.masks[index],
        )

    def split_counts(self) -> dict[str, int]:
        names, counts = np.unique(self.split, return_counts=True)
        return {str(k): int(v) for k, v in zip(names, counts)}

    def class_counts(self) -> np.ndarray:
        """Images per class (unknown labels not counted)."""
        known = self.labels[self.labels >= 0]
        return np.bincount(known, minlength=NUM_CLASSES).astype(np.int64)

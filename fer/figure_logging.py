"""Logging saved figures to whatever loggers are active."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger


def read_rgb(path: str | Path) -> np.ndarray:
    """A PNG as a uint8 (H, W, 3) array: W&B and TensorBoard both take that without rescaling."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def log_images(loggers: Sequence[Logger], figures: Mapping[str, str | Path], step: int | None = None) -> None:
    """Log each named PNG to every W&B or TensorBoard logger (CSV loggers take no images)."""
    for logger in loggers:
        for name, path in figures.items():
            image = read_rgb(path)
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"figures/{name}", images=[image], step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    f"figures/{name}", image, global_step=step or 0, dataformats="HWC"
                )

"""The eight-conv VGG-style network of the study's Keras setup."""

import torch
from torch import nn

from fer.data.labels import IMAGE_SIZE, NUM_CLASSES
from fer.models.vgg import make_layers

# Conv widths; "M" is a 2x2 max-pool.
cfg: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"]


class VGGKeras(nn.Module):
    """Eight 3x3 convs with dropout after each, then 4096-4096 dense layers (40,372,679 parameters)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = make_layers(cfg, batch_norm=False, activation="relu", dropout=0.3)
        channels = [v for v in cfg if v != "M"][-1]
        side = IMAGE_SIZE // 2 ** cfg.count("M")
        self.classifier = nn.Sequential(
            nn.Linear(channels * side * side, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

"""Fully connected network on the flattened pixels, the study's no-convolution baseline."""

import torch
from torch import nn

from fer.data.labels import IMAGE_SIZE, NUM_CLASSES

# Hidden widths and the dropout after each.
cfg: list[tuple[int, float]] = [
    (256, 0.3),
    (256, 0.3),
    (512, 0.3),
    (512, 0.3),
    (1024, 0.3),
    (2048, 0.3),
    (2048, 0.3),
    (4096, 0.5),
    (4096, 0.5),
]


class DNN(nn.Module):
    """Nine hidden Linear-ReLU-Dropout layers from 2304 pixels to 7 logits (33,073,671 parameters)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_features = IMAGE_SIZE * IMAGE_SIZE
        for width, p in cfg:
            layers += [nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(p)]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))

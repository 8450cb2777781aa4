"""Four-block convolutional network, the study's baseline."""

import torch
from torch import nn

from fer.data.labels import IMAGE_SIZE, NUM_CLASSES


class CNN4(nn.Module):
    """Four conv blocks (conv, LeakyReLU, BatchNorm, max-pool) and a two-layer head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for out_channels, kernel_size in ((32, 5), (128, 5), (256, 3), (256, 3)):
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size, padding="same"),
                nn.LeakyReLU(0.05),
                nn.BatchNorm2d(out_channels),
                nn.MaxPool2d(2),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        side = IMAGE_SIZE // 2**4  # 'same' convs keep the size, four pools halve it: 48 -> 3
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * side * side, 256),
            nn.ReLU(),
            nn.BatchNorm1d(256),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

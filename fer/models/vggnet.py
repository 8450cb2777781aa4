"""VGGNet of Khaireddin & Chen (2021), the strongest clean from-scratch single model on FER2013."""

import torch
from torch import nn

from fer.data.labels import NUM_CLASSES
from fer.models.vgg import make_layers


class VGGNet(nn.Module):
    """Four stages of two conv3x3-BN-ReLU and a 2x2 max-pool (widths `width` x 1, 2, 4, 8), a global
    average pool and a two-layer head.

    The paper flattens the 2x2 maps of 40x40 crops into a 4096-4096 head; at 48x48 the maps are 3x3,
    and a global pool with a `hidden`-wide head keeps the parameters in the trunk (5.0M at width 64,
    of which 0.27M in the head).
    """

    def __init__(
        self, num_classes: int = NUM_CLASSES, width: int = 64, hidden: int = 512, dropout: float = 0.3
    ) -> None:
        super().__init__()
        layout: list[int | str] = []
        for stage in range(4):
            layout += [width * 2**stage, width * 2**stage, "M"]
        self.features = make_layers(layout, batch_norm=True, activation="relu")
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width * 8, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

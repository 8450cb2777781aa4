"""AlexNet-style network with batch normalization, sized for 48x48 faces."""

import torch
from torch import nn

from fer.data.labels import IMAGE_SIZE, NUM_CLASSES


class AlexNetBN(nn.Module):
    """Five conv layers and a three-layer head, BatchNorm after every hidden layer."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, kernel_size=3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 256, kernel_size=3, padding=1),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=1),
            nn.Conv2d(256, 128, kernel_size=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
        )
        # The study's 6272 = 128 * 7 * 7 head input only comes out with unpadded ('valid') 5x5 convs:
        # 48 -conv5-> 44 -pool2-> 22 -conv5-> 18 -pool2-> 9 -pool3/1-> 7. 'Same' padding would give 10x10.
        side = ((IMAGE_SIZE - 4) // 2 - 4) // 2 - 2
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(128 * side * side, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(1024, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

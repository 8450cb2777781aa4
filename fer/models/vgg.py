"""VGG16 and VGG19 adapted to 48x48 grayscale faces."""

import torch
from torch import nn

from fer.data.labels import NUM_CLASSES

# torchvision's 'D' (VGG16) and 'E' (VGG19) layouts without their fifth max-pool: at 48x48 the
# trunk's last maps are 3x3, which a 2x2 pool would floor to 1x1 from the top-left corner only,
# dropping a row and a column; the global average pool after the trunk sees the whole map.
cfgs: dict[int, list[int | str]] = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}

activations: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "selu": nn.SELU}


def make_layers(cfg: list[int | str], batch_norm: bool, activation: str) -> nn.Sequential:
    """The conv trunk described by `cfg`: 3x3 convs, optional BatchNorm, and 2x2 max-pools at "M"."""
    layers: list[nn.Module] = []
    in_channels = 1
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(activations[activation]())
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG16 or VGG19 trunk, global average pool and a 512-wide three-layer head."""

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        depth: int = 16,
        activation: str = "relu",
        batch_norm: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if depth not in cfgs:
            raise ValueError(f"VGG depth must be one of {sorted(cfgs)}, got {depth}")
        if activation not in activations:
            raise ValueError(f"VGG activation must be one of {sorted(activations)}, got {activation!r}")
        act = activations[activation]
        # Plain dropout would break SELU's self-normalization; alpha dropout keeps mean and variance.
        drop = nn.AlphaDropout if activation == "selu" else nn.Dropout
        self.features = make_layers(cfgs[depth], batch_norm, activation)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        # torchvision's 4096-wide head is sized for 7x7x512 maps of 224x224 images; on the single
        # 512-vector of a 48x48 face it would be 19M parameters (this head: 0.5M) to overfit 28k images.
        self.classifier = nn.Sequential(
            nn.Linear(512, 512),
            act(),
            drop(dropout),
            nn.Linear(512, 512),
            act(),
            drop(dropout),
            nn.Linear(512, num_classes),
        )

        # LeCun normal (kaiming with gain 1, fan_in) is the init SELU's self-normalization assumes.
        nonlinearity = "relu" if activation == "relu" else "linear"
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=nonlinearity)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

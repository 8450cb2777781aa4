"""torchvision's ResNet-18 for 48x48 grayscale faces, optionally from ImageNet weights."""

import os
import warnings
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet

from fer.data.labels import NUM_CLASSES


class BasicBlock(resnet.BasicBlock):
    """torchvision's BasicBlock with a separate, non-inplace ReLU per use, as Captum's ReLU hooks need."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        del self.relu
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class GrayToRGB(nn.Module):
    """Replicates a 1-channel image to 3 channels, for an RGB conv1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1)


def imagenet_weights_path() -> str:
    """Where the ImageNet ResNet-18 weights must lie: torch's hub cache, as torchvision would store them."""
    file_name = os.path.basename(urlparse(ResNet18_Weights.IMAGENET1K_V1.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", file_name)


def load_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet ResNet-18 weights from the hub cache; never downloads."""
    path = imagenet_weights_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained ResNet-18 needs the ImageNet weights at {path}; nothing is downloaded: "
            f"fetch {ResNet18_Weights.IMAGENET1K_V1.url} and place the file there "
            "(or set TORCH_HOME to a folder with checkpoints/ holding it)"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


class ResNet18(resnet.ResNet):
    """ResNet-18 with a dropout before its final Linear and a choice of grayscale input and stem.

    gray: "replicate" copies the one channel to RGB, "stem" gives conv1 a single input channel.
    stem: "imagenet" keeps the 7x7 stride-2 conv and max-pool, "small" uses a 3x3 stride-1 conv
    and no max-pool, which keeps 48x48 inputs at 6x6 rather than 2x2 in layer4.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        dropout: float = 0.3,
        gray: str = "replicate",
        stem: str = "imagenet",
        pretrained: bool = False,
    ) -> None:
        if gray not in ("replicate", "stem"):
            raise ValueError(f"ResNet18 gray must be 'replicate' or 'stem', got {gray!r}")
        if stem not in ("imagenet", "small"):
            raise ValueError(f"ResNet18 stem must be 'imagenet' or 'small', got {stem!r}")
        super().__init__(BasicBlock, [2, 2, 2, 2])
        self.to_rgb = GrayToRGB() if gray == "replicate" else nn.Identity()
        self.relu = nn.ReLU()  # torchvision's stem ReLU is in-place
        if pretrained:
            self.load_state_dict(load_imagenet_state_dict())

        in_channels = 3 if gray == "replicate" else 1
        if stem == "small":
            if pretrained:
                warnings.warn(
                    "ResNet18(stem='small', pretrained=True): the 7x7 ImageNet conv1 weights do not fit "
                    "the 3x3 small stem; conv1 is randomly initialized, the rest is pretrained",
                    stacklevel=2,
                )
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
        elif gray == "stem":
            rgb_weight = self.conv1.weight
            self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            if pretrained:
                # A gray image replicated to RGB meets the summed filter: the pretrained response is kept.
                with torch.no_grad():
                    self.conv1.weight.copy_(rgb_weight.sum(dim=1, keepdim=True))
            else:
                nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.fc.in_features, num_classes))

    @property
    def features(self) -> nn.Sequential:
        """The conv trunk, gray input to layer4, as one Sequential over the model's own modules."""
        return nn.Sequential(
            self.to_rgb,
            self.conv1,
            self.bn1,
            self.relu,
            self.maxpool,
            self.layer1,
            self.layer2,
            self.layer3,
            self.layer4,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.to_rgb(x))

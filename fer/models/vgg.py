"""VGG-style networks for 48x48 grayscale faces: VGG16/VGG19 of the study, or any trunk given as data."""

from collections.abc import Sequence

import torch
from torch import nn

from fer.data.labels import NUM_CLASSES
from fer.models.whitening import PatchWhitening

# torchvision's 'D' (VGG16) and 'E' (VGG19) layouts without their fifth max-pool: at 48x48 the
# trunk's last maps are 3x3, which a 2x2 pool would floor to 1x1 from the top-left corner only,
# dropping a row and a column; the global pool after the trunk sees the whole map.
cfgs: dict[int, list[int | str]] = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}

activations: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "selu": nn.SELU, "silu": nn.SiLU}
pools: dict[str, type[nn.Module]] = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}


def make_layers(
    cfg: Sequence[int | str],
    batch_norm: bool,
    activation: str,
    dropout: float = 0.0,
    batch_norm_scale: bool = True,
) -> nn.Sequential:
    """The conv trunk described by `cfg`: 3x3 convs, optional BatchNorm (its scale frozen at 1 unless
    `batch_norm_scale`), the activation, a Dropout after it when `dropout` > 0, 2x2 max-pools at "M", a
    frozen 3x3 patch-whitening conv and the activation at "W" (first only: it is fitted on the net's input),
    and a space-to-depth stem at "S" (first only: each 2x2 block of pixels becomes 4 channels, so the first
    conv already runs at half resolution)."""
    layers: list[nn.Module] = []
    in_channels = 1
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        elif v == "S":
            layers.append(nn.PixelUnshuffle(2))
            in_channels *= 4
        elif v == "W":
            whitening = PatchWhitening(in_channels, kernel_size=3)
            layers += [whitening, activations[activation]()]
            in_channels = whitening.out_channels
        else:
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            if batch_norm:
                norm = nn.BatchNorm2d(v)
                norm.weight.requires_grad_(batch_norm_scale)
                layers.append(norm)
            layers.append(activations[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """A VGG trunk (VGG16/19 by `depth`, or the custom `layers`), a global pool and a fully connected head.
    `batch_norm_scale=False` freezes each BatchNorm's scale at 1 (airbench's BatchNorm): only its shift learns.
    `dirac_init=True` starts each trunk conv's first `in_channels` filters as the identity (airbench's dirac
    init): each conv first passes its input's channels through, and the filters beyond them start random."""

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        depth: int = 16,
        activation: str = "relu",
        batch_norm: bool = True,
        batch_norm_scale: bool = True,
        dropout: float = 0.5,
        layers: Sequence[int | str] | None = None,
        head: Sequence[int] = (512, 512),
        pool: str = "avg",
        pool_size: int = 1,
        dirac_init: bool = False,
    ) -> None:
        super().__init__()
        if layers is None and depth not in cfgs:
            raise ValueError(f"VGG depth must be one of {sorted(cfgs)}, got {depth}")
        if activation not in activations:
            raise ValueError(f"VGG activation must be one of {sorted(activations)}, got {activation!r}")
        if pool not in pools:
            raise ValueError(f"VGG pool must be one of {sorted(pools)}, got {pool!r}")
        if not (isinstance(pool_size, int) and pool_size >= 1):
            raise ValueError(f"VGG pool_size must be a positive integer, got {pool_size!r}")
        trunk = list(cfgs[depth] if layers is None else layers)
        widths = [v for v in trunk if v not in ("M", "W", "S")]
        stems = [v for v in trunk[1:] if v in ("W", "S")]
        if not widths or any(not isinstance(v, int) or v < 1 for v in widths) or stems:
            raise ValueError(
                f"VGG layers must be positive channel counts, 'M' and a leading 'W' or 'S', got {trunk}"
            )
        act = activations[activation]
        # Plain dropout would break SELU's self-normalization; alpha dropout keeps mean and variance.
        drop = nn.AlphaDropout if activation == "selu" else nn.Dropout
        self.features = make_layers(trunk, batch_norm, activation, batch_norm_scale=batch_norm_scale)
        # An adaptive pool makes the head independent of the input size (crops smaller than 48 work too).
        # pool_size 1 pools each map to one value; a larger grid keeps where on the face a feature fired.
        self.avgpool = pools[pool]((pool_size, pool_size))
        # torchvision's 4096-wide head is sized for 7x7x512 maps of 224x224 images; on the single
        # 512-vector of a 48x48 face it would be 19M parameters (the default head: 0.5M) to overfit 28k images.
        fc: list[nn.Module] = []
        in_features = widths[-1] * pool_size**2
        for width in head:
            fc += [nn.Linear(in_features, width), act(), drop(dropout)]
            in_features = width
        self.classifier = nn.Sequential(*fc, nn.Linear(in_features, num_classes))

        # He init for ReLU; LeCun normal (kaiming with gain 1, fan_in) for the others: the init SELU's
        # self-normalization assumes. Behind BatchNorm only the head's scale differs.
        nonlinearity = "relu" if activation == "relu" else "linear"
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=nonlinearity)
                nn.init.zeros_(m.bias)
            if dirac_init and isinstance(m, nn.Conv2d):  # every conv is the trunk's: the head is Linears
                nn.init.dirac_(m.weight[: m.in_channels])  # a view: the weight's first filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

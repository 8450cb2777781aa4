"""The study's architectures as plain `nn.Module`s, built from their Hydra configs in conf/model/."""

from collections.abc import Mapping

import hydra
from torch import nn

# Config names under conf/model/.
MODEL_NAMES: tuple[str, ...] = (
    "cnn4",
    "alexnet_bn",
    "vgg_keras",
    "dnn",
    "vgg16",
    "vgg19",
    "resnet18",
    "vgg8",
    "vggnet",
)


def build_model(cfg: Mapping) -> nn.Module:
    """The model a `_target_` config node (DictConfig or plain dict) describes."""
    model = hydra.utils.instantiate(cfg, _convert_="all")
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model config {cfg.get('_target_')!r} built a {type(model).__name__}, not an nn.Module"
        )
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, trainable or not (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())

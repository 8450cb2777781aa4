"""The study's architectures as plain `nn.Module`s, built from their Hydra configs in conf/model/."""

from collections.abc import Mapping

import hydra
from torch import nn

from fer.models.joint_ensemble import JointEnsemble

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
    """The model a `_target_` config node (DictConfig or plain dict) describes; with `members: K` above 1, K
    of them, each initialized on its own, as one JointEnsemble."""
    node = dict(cfg)
    members = node.pop("members", 1)  # checked at startup (fer/schema.py)
    nets = [hydra.utils.instantiate(node, _convert_="all") for _ in range(members)]
    if not isinstance(nets[0], nn.Module):
        raise TypeError(
            f"model config {cfg.get('_target_')!r} built a {type(nets[0]).__name__}, not an nn.Module"
        )
    return nets[0] if members == 1 else JointEnsemble(nets)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, trainable or not (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())

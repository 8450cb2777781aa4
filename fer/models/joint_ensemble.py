"""`model.members: K`: K copies of one net, each with its own init, trained together as an ensemble."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


# Here rather than in fer/tta.py, which reads it too: fer.tta imports fer.schema, which loads fer.models first.
def mean_log_probs(log_probs: Tensor) -> Tensor:
    """Log of the mean probability over the first dimension (views or ensemble members), computed stably."""
    return torch.logsumexp(log_probs, dim=0) - math.log(log_probs.shape[0])


def members_log_probs(logits: Tensor) -> Tensor:
    """The members' logits, (members, B, classes), as the log of their mean class probabilities, (B, classes)."""
    return mean_log_probs(logits.float().log_softmax(dim=-1))


class JointEnsemble(nn.Module):
    """Members of one architecture, each initialized on its own and trained on the same batches with its own
    loss: a deep ensemble in one run, so one data pipeline, one validation and one test serve them all.

    In training mode the forward returns every member's logits, (members, B, classes), and FERModule averages
    the members' losses; in eval mode it returns the log of the members' mean class probabilities, (B,
    classes), which every evaluation, TTA and analysis reads as logits.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a JointEnsemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.stack([member(x) for member in self.members])
        if self.training:
            return logits
        return members_log_probs(logits)

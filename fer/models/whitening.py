"""`PatchWhitening`: airbench's frozen first layer, a conv whose filters whiten the train split's patches.

Each filter is an eigenvector of the covariance of k x k input patches, scaled by 1/sqrt(eigenvalue),
in both signs, so that a ReLU after it drops no information. The net then starts from decorrelated,
unit-variance features instead of learning them. Keller Jordan's airbench uses it to train CIFAR-10
faster; torchvision and Lightning have no such layer, hence this module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class PatchWhitening(nn.Module):
    """A frozen k x k conv with 2 * k * k * in_channels outputs whitening the patches it was fitted on.

    Until `fit` it whitens uncorrelated unit-variance input (each filter reads one pixel of the patch);
    `fitted` records whether `fit` ran. The filters are a buffer, so checkpoints carry them and the
    optimizer never sees them; the bias is trained.
    """

    # airbench's eps: directions of near-zero variance (pixel noise) are damped, not blown up to unit scale.
    def __init__(self, in_channels: int = 1, kernel_size: int = 3, eps: float = 5e-4) -> None:
        super().__init__()
        dims = in_channels * kernel_size * kernel_size
        self.kernel_size, self.eps = kernel_size, eps
        basis = torch.eye(dims).reshape(dims, in_channels, kernel_size, kernel_size)
        self.register_buffer("weight", torch.cat([basis, -basis]))
        self.register_buffer("fitted", torch.tensor(False))
        self.bias = nn.Parameter(torch.zeros(2 * dims))

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def fit(self, images: torch.Tensor, chunk: int = 256) -> None:
        """Set the filters from `images` (N, C, H, W), already normalized as the net's input is."""
        # In float64 and by chunks: a 48x48 face has 2116 3x3 patches, so 2000 faces' patches at once
        # would take 300 MB.
        dims = self.weight.shape[0] // 2
        covariance, count = torch.zeros(dims, dims, dtype=torch.float64), 0
        for start in range(0, len(images), chunk):
            patches = F.unfold(images[start : start + chunk].double(), self.kernel_size)
            patches = patches.transpose(1, 2).reshape(-1, dims)  # one row per patch
            covariance += patches.T @ patches
            count += len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance / count)
        # Column i of `eigenvectors` is the i-th eigenvector: it becomes filter i, scaled to unit variance.
        filters = (eigenvectors / (eigenvalues + self.eps).sqrt()).T
        filters = filters.reshape(len(filters), *self.weight.shape[1:])
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight.dtype))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same padding, as the 3x3 convs after it use, so the map keeps the face's size.
        return F.conv2d(x, self.weight, self.bias, padding=self.kernel_size // 2)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, out_channels={self.out_channels}, fitted={bool(self.fitted)}"


def fit_whitening(
    net: nn.Module,
    images: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Fit every not-yet-fitted `PatchWhitening` of `net` on `images`; return how many were fitted.

    `images` are converted to float and passed through `normalize` (the net's input scaling) only when
    there is a layer to fit, so a net without one costs nothing. A whitening layer must come first in
    its net: it is fitted on the net's input.
    """
    layers = [m for m in net.modules() if isinstance(m, PatchWhitening) and not m.fitted]
    if layers:
        images = images.float()
        if normalize is not None:
            images = normalize(images)
    for layer in layers:
        layer.fit(images)
    return len(layers)

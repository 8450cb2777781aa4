"""Batch-wise augmentation of pixel-valued image tensors (0..255); the model normalizes them
(fer.models.normalization)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2

from fer.data.labels import NUM_CLASSES

# How a shift fills the pixels it uncovers, in grid_sample's names: black, the edge pixels repeated, or the face
# mirrored about its edge (airbench pads its translations by reflection too).
PADDING_MODES = ("zeros", "border", "reflection")


def check_padding(mode: str, name: str) -> None:
    """Raise a ValueError naming `name` unless `mode` is one of PADDING_MODES."""
    if mode not in PADDING_MODES:
        raise ValueError(f"{name} must be one of {', '.join(PADDING_MODES)}, got {mode!r}")


def random_affine(
    images: torch.Tensor,
    rotation: float = 0.0,
    shift: int = 0,
    zoom: float = 0.0,
    hflip: float = 0.0,
    padding_mode: str = "zeros",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Each image of a (B,C,H,W) batch rotated by up to +-`rotation` degrees, shifted by a whole number
    of pixels up to +-`shift`, zoomed by 1 +- `zoom` and mirrored with probability `hflip`, in one
    `grid_sample`. Random draws happen on the CPU (with `generator` if given), so a seed gives the same
    transforms on any device.
    """
    n, _, h, w = images.shape
    u = torch.rand(n, 3, generator=generator)
    offsets = torch.randint(-shift, shift + 1, (n, 2), generator=generator).float()
    angle = (u[:, 0] * 2 - 1) * math.radians(rotation)
    scale = 1 + (u[:, 1] * 2 - 1) * zoom
    flip = torch.where(u[:, 2] < hflip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # grid_sample coordinates span [-1, 1] over the image, so one pixel is 2/size.
    rows = (
        torch.stack([cos * flip, -sin, offsets[:, 0] * 2 / w], dim=1),
        torch.stack([sin * flip, cos, offsets[:, 1] * 2 / h], dim=1),
    )
    theta = torch.stack(rows, dim=1).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def pad(images: torch.Tensor, size: int, mode: str = "zeros") -> torch.Tensor:
    """A (B,C,H,W) batch padded by `size` pixels on every side, filled as `random_affine`'s `padding_mode`
    fills a shift: zeros, border (the edge pixels repeated) or reflection (mirrored about the edge, the edge
    pixel included: grid_sample's reflection, which F.pad's "reflect" is not)."""
    h, w = images.shape[-2:]
    check_padding(mode, "padding mode")
    if mode == "zeros":
        return F.pad(images, (size, size, size, size))
    if mode == "border":
        return F.pad(images, (size, size, size, size), mode="replicate")
    if not 0 <= size <= min(h, w):
        raise ValueError(f"a reflection pad reaches at most the side of the image ({min(h, w)}), got {size}")
    # One mirror image per side is enough for size <= side: written out because F.pad has no symmetric mode.
    rows = torch.cat([images[..., :size, :].flip(-2), images, images[..., h - size :, :].flip(-2)], dim=-2)
    return torch.cat([rows[..., :size].flip(-1), rows, rows[..., w - size :].flip(-1)], dim=-1)


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random `size` x `size` window of each image of a (B,C,H,W) batch, drawn per image (on the CPU, as
    in `random_affine`). The face keeps its scale: a net with a global pool tests on the whole image."""
    n, _, h, w = images.shape
    if not 0 < size <= min(h, w):
        raise ValueError(f"crop size must be in 1..{min(h, w)}, got {size}")
    top = torch.randint(0, h - size + 1, (n, 1), generator=generator)
    left = torch.randint(0, w - size + 1, (n, 1), generator=generator)
    span = torch.arange(size)
    rows = (top + span).to(images.device)[:, None, :, None]  # (B,1,size,1)
    cols = (left + span).to(images.device)[:, None, None, :]  # (B,1,1,size)
    picked = images.gather(2, rows.expand(n, images.shape[1], size, w))
    return picked.gather(3, cols.expand(n, images.shape[1], size, size))


def random_photometric(
    images: torch.Tensor,
    brightness: float = 0.0,
    contrast: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Each image of a pixel-valued (B,C,H,W) batch with its contrast scaled by 1 +- `contrast` around
    its mean, then its brightness by 1 +- `brightness`, clamped to 0..255. Random draws happen on the
    CPU, as in `random_affine`.

    torchvision jitters brightness first; with no clamp in between the two orders give the same image:
    ((x - m) * c + m) * b == (x * b - m * b) * c + m * b.
    """
    shape = (images.shape[0], 1, 1, 1)
    # Drawn in this order (brightness, then contrast) so seeded runs keep their factors.
    brightness_factor = 1 + (torch.rand(shape, generator=generator) * 2 - 1) * brightness
    contrast_factor = 1 + (torch.rand(shape, generator=generator) * 2 - 1) * contrast
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    jittered = ((images - mean) * contrast_factor.to(images) + mean) * brightness_factor.to(images)
    return jittered.clamp(0, 255)


def random_erase(
    images: torch.Tensor,
    p: float,
    scale: tuple[float, float] = (0.02, 0.25),
    ratio: tuple[float, float] = (0.3, 3.3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Each image of a (B,C,H,W) batch with one rectangle, with probability `p`, set to that image's mean.

    As torchvision's RandomErasing (area `scale` of the image, aspect `ratio`, log-uniform), but drawn per
    image; the mean fill is what torchvision's value 0 means on standardized inputs. Random draws happen
    on the CPU, as in `random_affine`.
    """
    n, _, h, w = images.shape
    u = torch.rand(n, 5, generator=generator)
    area = (scale[0] + u[:, 0] * (scale[1] - scale[0])) * h * w
    log_ratio = math.log(ratio[0]) + u[:, 1] * (math.log(ratio[1]) - math.log(ratio[0]))
    eh = (area * log_ratio.exp()).sqrt().round().clamp(1, h)
    ew = (area / log_ratio.exp()).sqrt().round().clamp(1, w)
    top, left = (u[:, 2] * (h - eh + 1)).floor(), (u[:, 3] * (w - ew + 1)).floor()
    rows, cols = torch.arange(h), torch.arange(w)
    inside_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = inside_rows[:, :, None] & inside_cols[:, None, :] & (u[:, 4] < p)[:, None, None]
    mask = mask[:, None].to(images.device)
    return torch.where(mask, images.mean(dim=(1, 2, 3), keepdim=True), images)


def alternating_flip(images: torch.Tensor, flipped_first: torch.Tensor, epoch: int) -> torch.Tensor:
    """The (B,C,H,W) batch with image i mirrored when `flipped_first[i]` differs from the epoch's parity:
    each face is flipped in every other epoch, starting with a random half in epoch 0 (airbench's
    alternating flip). Any two epochs in a row show both sides of every face, where a coin per image
    can show one side for several epochs running."""
    flip = flipped_first.to(images.device) ^ bool(epoch % 2)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def progressive_size(progress: float, full: int, start: int, until: float, step: int = 4) -> int:
    """The side of the training faces at `progress` (0..1) of the fit: `start` pixels at 0, growing
    linearly to `full` at `until` and staying there, rounded down to a multiple of `step` pixels."""
    if progress >= until or start >= full:
        return full
    size = start + (full - start) * progress / until
    return max(int(size) // step * step, start)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """A square (B,C,H,W) batch resized to `size` x `size` (bilinear; antialiased, so that shrinking skips
    no pixel), or the batch itself where it has that size already."""
    if size == images.shape[-1]:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class BatchAugment(nn.Module):
    """Random per-image flip, rotation, zoom, pad-and-crop shift, a smaller crop, contrast/brightness jitter
    and erasing, in that order. Every random draw comes from torch's CPU generator (`torch.manual_seed`,
    Lightning's seed_everything), so a seed gives the same augmentation on any device.

    Written by hand because torchvision's v2 transforms draw one set of random parameters per call:
    applied to a batch they would move every image the same way, and per-image calls in the loader
    cost Python overhead per sample and cannot run on the GPU. Here one `grid_sample` moves the whole
    batch, on whatever device it lives. Pad-then-crop by up to `pad_crop` pixels is an integer shift
    filled as `padding` says (PADDING_MODES), which bilinear sampling reproduces exactly when there is no
    rotation or zoom.
    """

    def __init__(
        self,
        hflip: float = 0.0,
        rotation: float = 0.0,
        pad_crop: int = 0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        zoom: float = 0.0,
        erase: float = 0.0,
        crop: int = 0,
        padding: str = "zeros",
    ) -> None:
        super().__init__()
        check_padding(padding, "aug.padding")
        self.padding = padding
        self.hflip, self.rotation, self.pad_crop = float(hflip), float(rotation), int(pad_crop)
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.zoom, self.erase, self.crop = float(zoom), float(erase), int(crop)

    @property
    def is_identity(self) -> bool:
        return not (
            self.hflip
            or self.rotation
            or self.pad_crop
            or self.zoom
            or self.brightness
            or self.contrast
            or self.erase
            or self.crop
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return x
        if self.hflip or self.rotation or self.pad_crop or self.zoom:
            x = self._geometric(x)
        if self.crop:
            x = random_crop(x, self.crop)
        if self.brightness or self.contrast:
            x = random_photometric(x, brightness=self.brightness, contrast=self.contrast)
        if self.erase:
            x = random_erase(x, self.erase)
        return x

    def _geometric(self, x: torch.Tensor) -> torch.Tensor:
        return random_affine(x, self.rotation, self.pad_crop, self.zoom, self.hflip, self.padding)

    def extra_repr(self) -> str:
        return (
            f"hflip={self.hflip}, rotation={self.rotation}, pad_crop={self.pad_crop}, "
            f"zoom={self.zoom}, crop={self.crop}, brightness={self.brightness}, contrast={self.contrast}, "
            f"erase={self.erase}, padding={self.padding}"
        )


def label_mixing(
    mixup: float = 0.0, cutmix: float = 0.0, num_classes: int = NUM_CLASSES
) -> v2.Transform | None:
    """torchvision's batch MixUp and/or CutMix with mixing weights drawn from Beta(alpha, alpha), one of
    the two per batch (chosen evenly) when both alphas are set; None when both are 0.

    Called as `mix(images, labels)`, it returns the mixed images and soft labels: (B, num_classes)
    probabilities that `nn.CrossEntropyLoss` takes as targets. Its draws come from torch's CPU generator.
    """
    mixers: list[v2.Transform] = []
    if mixup:
        mixers.append(v2.MixUp(alpha=float(mixup), num_classes=num_classes))
    if cutmix:
        mixers.append(v2.CutMix(alpha=float(cutmix), num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

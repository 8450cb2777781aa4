"""Figures of what `fer.interpret` computes, and the small helpers that choose what they show (which
faces, how to label them).

Every figure takes plain tensors (pixel-unit faces, maps, scores) and writes a PNG atomically through
`fer.plots.save_figure`. A figure is one image of tiled panels with text around it, not one matplotlib
axes per panel: a 7x8 saliency grid then draws in a fraction of a second instead of seconds, which
matters for figures drawn during training. Nothing here runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from fer.data.labels import IMAGE_SIZE
from fer.plots import save_figure

METHOD_TITLES = {
    "saliency": "Saliency",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated\ngradients",
    "guided_backprop": "Guided\nbackprop",
    "gradcam": "Grad-CAM",
    "hirescam": "HiResCAM",
    "occlusion": "Occlusion",
}
# The share of |attribution| that sets the top of each column's colour scale: a few extreme pixels
# (common in gradient maps) would otherwise leave the rest of the column invisible.
SCALE_QUANTILE = 0.99
PANEL = 1.45  # inches per face


def face_label(class_names: Sequence[str], true: int, pred: int, prob: float) -> str:
    """Two lines under or beside a face: its true class (? if unknown) and the prediction with its probability."""
    return f"true {class_names[true] if true >= 0 else '?'}\npred {class_names[pred]} {prob:.2f}"


def pick_per_class(labels: Tensor, per_class: int) -> Tensor:
    """Indices of the first `per_class` images of each class, round-robin (one of each class, then a second...).

    The first rows of a figure then show every class, and any prefix of the order is class-balanced.
    """
    rounds = [[] for _ in range(per_class)]
    for c in torch.unique(labels[labels >= 0]).tolist():
        for r, i in enumerate(torch.nonzero(labels == c).flatten()[:per_class].tolist()):
            rounds[r].append(i)
    return torch.tensor([i for r in rounds for i in r], dtype=torch.long)


def _alpha_cmap(name: str, signed: bool) -> ListedColormap:
    """Colour map `name` whose opacity rises with |value|, so the face shows through weak attribution."""
    colours = plt.get_cmap(name)(np.linspace(0, 1, 256))
    strength = np.abs(np.linspace(-1, 1, 256)) if signed else np.linspace(0, 1, 256)
    colours[:, 3] = 0.9 * strength**0.6
    return ListedColormap(colours)


def _gray(images: Tensor) -> np.ndarray:
    """Pixel-unit faces (N,[1,]H,W) as RGB in 0..1: (N,H,W,3)."""
    gray = images.detach().float().reshape(len(images), *images.shape[-2:]).cpu().numpy() / 255.0
    return np.repeat(gray.clip(0, 1)[..., None], 3, axis=-1)


def _over(faces: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """RGBA maps composited over RGB faces."""
    alpha = rgba[..., 3:]
    return faces * (1 - alpha) + rgba[..., :3] * alpha


class _PanelGrid:
    """Panels (N,h,w,3) tiled into one image on one axes, with `text` above a panel or anywhere in pixels.

    Sizes are in inches per image pixel, so a 48x48 face is PANEL inches whatever the figure holds.
    """

    def __init__(
        self,
        panels: np.ndarray,
        ncols: int,
        title_lines: int = 0,
        fontsize: float = 7.5,
        margins: tuple[float, float, float, float] = (0.1, 0.55, 0.1, 0.1),  # left, top, right, bottom
        scale: float = PANEL / IMAGE_SIZE,
        gap: int = 3,
    ) -> None:
        n, self.h, self.w = panels.shape[:3]
        ncols = max(1, min(ncols, n))
        nrows = -(-n // ncols)
        self.scale, self.fontsize, self.overhang = scale, fontsize, 0.0
        self.gap_x = gap
        title_px = math.ceil(title_lines * fontsize * 1.35 / 72 / scale)
        self.gap_y = 3 + title_px
        width, height = ncols * (self.w + self.gap_x) - self.gap_x, nrows * (self.h + self.gap_y)
        canvas = np.ones((height, width, 3))
        self.origins = []
        for i, panel in enumerate(panels):
            x, y = (i % ncols) * (self.w + self.gap_x), (i // ncols) * (self.h + self.gap_y) + self.gap_y
            canvas[y : y + self.h, x : x + self.w] = panel
            self.origins.append((x, y))
        left, top, right, bottom = margins
        self.fig = plt.figure(figsize=(left + width * scale + right, top + height * scale + bottom))
        fw, fh = self.fig.get_size_inches()
        self.ax = self.fig.add_axes((left / fw, bottom / fh, width * scale / fw, height * scale / fh))
        self.ax.imshow(canvas, interpolation="nearest", extent=(0, width, height, 0), aspect="auto")
        self.ax.set_axis_off()

    def title(self, i: int, text: str, align: str = "center", **kw: object) -> None:
        x, y = self.origins[i]
        x = x + self.w / 2 if align == "center" else x
        self.ax.text(x, y - 1, text, ha=align, va="bottom", fontsize=self.fontsize, **kw)
        # Points the text reaches above the tiles (titles of a first row without a title gap).
        height = (text.count("\n") + 1) * self.fontsize * 1.35 - (y - 1) * self.scale * 72
        self.overhang = max(self.overhang, height)

    def frame(self, i: int, colour: str) -> None:
        x, y = self.origins[i]
        self.ax.add_patch(Rectangle((x - 0.5, y - 0.5), self.w, self.h, fill=False, edgecolor=colour, lw=2))

    def save(self, path: str | Path, title: str = "") -> Path:
        if title:
            self.ax.set_title(title, fontsize=11, pad=4 + self.overhang)
        return save_figure(self.fig, path)


def saliency_panels(
    images: Tensor, maps: Mapping[str, Tensor]
) -> tuple[np.ndarray, list[tuple[ListedColormap, Normalize]]]:
    """RGB panels (faces, then each method's maps over them) of shape (1 + methods, N, H, W, 3), and the
    colour scale of each method.

    Each method has one scale for all its faces: 0..top for unsigned maps, -top..top for signed ones
    (red for, blue against the target class), top the 99th percentile of |value| over all its maps.
    """
    faces = _gray(images)
    columns, scales = [faces], []
    for values in maps.values():
        values = values.detach().float().cpu().numpy()
        signed = bool((values < 0).any())
        top = float(np.quantile(np.abs(values), SCALE_QUANTILE)) or float(np.abs(values).max()) or 1.0
        norm = Normalize(-top, top) if signed else Normalize(0.0, top)
        cmap = _alpha_cmap("RdBu_r" if signed else "Reds", signed)
        columns.append(_over(faces, cmap(norm(values))))
        scales.append((cmap, norm))
    return np.stack(columns), scales


def plot_saliency(
    images: Tensor,
    maps: Mapping[str, Tensor],
    row_labels: Sequence[str],
    path: str | Path,
    title: str = "",
    unreliable: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Grid: one row per face, the face alone then one column per method, its map over the face in gray,
    each column on one colour scale (`saliency_panels`) shown by the colour bar under it.

    The columns of the methods in `unreliable` (method -> the checks it failed) are framed in red and
    titled UNRELIABLE with those checks."""
    unreliable = unreliable or {}
    columns, scales = saliency_panels(images, maps)
    # Row-major: row r holds face r then its map under each method.
    panels = columns.swapaxes(0, 1).reshape(-1, *columns.shape[2:])
    tiles = _PanelGrid(panels, len(columns), fontsize=8.5, margins=(1.1, 0.45, 0.1, 0.6))
    tiles.title(0, "face")
    for c, method in enumerate(maps, start=1):
        name = METHOD_TITLES.get(method, method)
        if method in unreliable:
            tiles.title(c, f"{name}\nUNRELIABLE:\n{', '.join(unreliable[method])}", color="red")
            for r in range(len(images)):
                tiles.frame(r * len(columns) + c, "red")
        else:
            tiles.title(c, name)
    for r, label in enumerate(row_labels):
        x, y = tiles.origins[r * len(columns)]
        tiles.ax.text(x - 2, y + tiles.h / 2, label, ha="right", va="center", fontsize=8)
    fw, fh = tiles.fig.get_size_inches()
    left = tiles.ax.get_position().x0 * fw
    for c, (cmap, norm) in enumerate(scales, start=1):
        x, _ = tiles.origins[c]
        bar_axes = tiles.fig.add_axes(
            ((left + x * tiles.scale) / fw, 0.38 / fh, tiles.w * tiles.scale / fw, 0.07 / fh)
        )
        bar = tiles.fig.colorbar(ScalarMappable(norm, cmap), cax=bar_axes, orientation="horizontal")
        bar.ax.xaxis.set_major_locator(MaxNLocator(4))
        bar.ax.tick_params(labelsize=6, rotation=45)
        bar.formatter.set_powerlimits((-2, 3))
        bar.ax.xaxis.get_offset_text().set_fontsize(6)
    return tiles.save(path, title)


def plot_faces(
    images: Tensor, titles: Sequence[str], path: str | Path, title: str = "", ncols: int = 8
) -> Path:
    """A grid of faces, each with its own title (e.g. true/predicted class and probability)."""
    if not len(images):
        images = torch.full((1, IMAGE_SIZE, IMAGE_SIZE), 255.0)
        titles = ["(none)"]
    tiles = _PanelGrid(_gray(images), ncols, title_lines=max(t.count("\n") + 1 for t in titles))
    for i, text in enumerate(titles):
        tiles.title(i, text)
    return tiles.save(path, title)


def plot_filters(
    images: Tensor,
    channels: Sequence[int],
    reached: Tensor,
    best_real: Tensor,
    dead: Collection[int],
    path: str | Path,
    title: str = "",
    ncols: int = 8,
) -> Path:
    """Activation-maximization images, one per filter, titled with the activation reached vs the best real
    image's; dead filters (never positive on the data) framed and titled in red."""
    tiles = _PanelGrid(_gray(images), ncols, title_lines=2)
    for i, (channel, value, real) in enumerate(zip(channels, reached.tolist(), best_real.tolist())):
        is_dead = channel in dead
        tiles.title(
            i,
            f"#{channel}{' DEAD' if is_dead else ''}\n{value:.3g} vs {real:.3g}",
            color="red" if is_dead else "black",
        )
        if is_dead:
            tiles.frame(i, "red")
    return tiles.save(path, title)


def plot_layers(
    layers: Mapping[str, tuple[Tensor, Tensor, Tensor, Tensor]], path: str | Path, title: str = ""
) -> Path:
    """Layers side by side, one row per filter: its activation-maximization image, then its best real
    faces. `layers` maps a layer name to (AM images (C,H,W), reached (C,), exemplars (C,k,H,W), their
    activations (C,k)); a filter whose image stays below its best real face is titled in red."""
    blocks, heads = [], []
    rows = max(len(synthetic) for synthetic, *_ in layers.values())
    for synthetic, reached, exemplars, scores in layers.values():
        k = exemplars.shape[1]
        block = np.ones((rows, 1 + k, *synthetic.shape[-2:], 3))
        block[: len(synthetic), 0] = _gray(synthetic)
        block[: len(synthetic), 1:] = _gray(exemplars.flatten(0, 1)).reshape(
            len(synthetic), k, *block.shape[2:]
        )
        blocks.append(block)
        heads.append([(value, real[0]) for value, real in zip(reached.tolist(), scores.tolist())])
    spacer = np.ones((rows, 1, *blocks[0].shape[2:]))  # a blank column between layers
    grid = np.concatenate([part for block in blocks for part in (block, spacer)][:-1], axis=1)
    ncols = grid.shape[1]
    tiles = _PanelGrid(
        grid.reshape(-1, *grid.shape[2:]), ncols, title_lines=2, scale=0.75 * PANEL / IMAGE_SIZE
    )
    column = 0
    for name, block, values in zip(layers, blocks, heads):
        tiles.title(column, f"{name}\n ", align="left")  # the layer's name above its first row
        for r, (value, real) in enumerate(values):
            colour = "black" if value >= real else "red"
            tiles.title(r * ncols + column, f"AM {value:.3g}", align="left", color=colour)
            tiles.title(r * ncols + column + 1, f"real {real:.3g}", align="left")
        column += block.shape[1] + 1
    return tiles.save(path, title)


def plot_classes(
    synthetic: Tensor,
    reached: Tensor,
    real: Tensor,
    real_logits: Tensor,
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Per class: the image maximising its logit (K,H,W) beside the real face with the highest logit
    (K,H,W), titled with both logits."""
    panels = torch.stack([synthetic, real], dim=1).flatten(0, 1)
    tiles = _PanelGrid(_gray(panels), 8, title_lines=2)
    for c, (name, value, best) in enumerate(zip(class_names, reached.tolist(), real_logits.tolist())):
        tiles.title(2 * c, f"{name}\nlogit {value:.3g}", color="black" if value >= best else "red")
        tiles.title(2 * c + 1, f"best real\nlogit {best:.3g}")
    return tiles.save(path, title)


def plot_exemplars(
    images: Tensor, channels: Sequence[int], scores: Tensor, path: str | Path, title: str = "", ncols: int = 2
) -> Path:
    """The top-k real faces of each filter as one strip per filter (images (C,k,H,W), scores (C,k))."""
    faces = _gray(images.flatten(0, 1)).reshape(*images.shape[:2], *images.shape[-2:], 3)
    gap = np.ones((len(faces), faces.shape[2], 2, 3))  # white between the faces of a strip
    strips = np.concatenate([part for k in range(faces.shape[1]) for part in (faces[:, k], gap)][:-1], axis=2)
    tiles = _PanelGrid(strips, ncols, title_lines=1, scale=0.75 * PANEL / IMAGE_SIZE, gap=16)
    for i, (channel, values) in enumerate(zip(channels, scores.tolist())):
        tiles.title(i, f"#{channel}: mean activation {values[0]:.3g} ... {values[-1]:.3g}", align="left")
    return tiles.save(path, title)


def plot_feature_maps(
    image: Tensor,
    maps: Tensor,
    path: str | Path,
    title: str = "",
    image_title: str = "",
    ncols: int | None = None,
) -> Path:
    """The input face then the map of each channel (C,h,w), each on its own colour scale (viridis)."""
    size = image.shape[-2:]
    # Maps of deeper layers are smaller: shown at the input's size, each map pixel a block.
    upsampled = F.interpolate(maps.detach().float().cpu()[None], size=size, mode="nearest")[0].numpy()
    low = upsampled.min(axis=(1, 2), keepdims=True)
    span = np.maximum(upsampled.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    coloured = plt.get_cmap("viridis")((upsampled - low) / span)[..., :3]
    panels = np.concatenate([_gray(image.reshape(1, *size)), coloured])
    # 6 to 12 a row, as few empty places as can be (the face plus 32 maps: 3 rows of 11).
    ncols = ncols or min(range(6, 13), key=lambda c: (-len(panels) % c, abs(c - 8)))
    tiles = _PanelGrid(panels, ncols, title_lines=1, scale=0.8 * PANEL / IMAGE_SIZE)
    tiles.title(0, image_title or "input")
    for c in range(len(maps)):
        tiles.title(c + 1, f"#{c}")
    return tiles.save(path, title)

"""Procedural 48x48 expression faces: the default data set and the ground truth for saliency.

A face is drawn from implicit shapes (ellipses, boxes, arched segments, lip curves) whose soft-edged
coverage is evaluated on the pixel grids of a chunk of images at once. The expression is a vector of
facial action parameters (after FACS) added to the face's rest geometry, and `masks` marks the regions
those parameters act in, so an attribution method that reads the expression should point inside them.

Only IEEE-exact float64 operations (+, -, *, /, sqrt, comparisons) touch pixels and the image is
quantized once at the end, so an (n, seed) pair gives the same bytes on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fer.data.faceset import FaceSet
from fer.data.labels import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES

# FER2013 Training split counts, in CLASS_NAMES order.
FER2013_TRAIN_COUNTS = (3995, 436, 4097, 7215, 4830, 3171, 4965)

# The real file's split names and the share of rows in each.
SPLITS = (("Training", 0.8), ("PublicTest", 0.1), ("PrivateTest", 0.1))

# Action parameters with the range each is clipped to, so every feature stays inside its region.
ACTION_UNITS: dict[str, tuple[float, float]] = {
    "brow_inner_up": (-2.5, 3.8),  # inner brow ends raised (+) or lowered (-)
    "brow_outer_up": (-1.0, 3.5),
    "brow_together": (-0.5, 1.8),  # inner ends drawn toward the midline
    "upper_lid_up": (-0.8, 1.8),  # eyes widened (+) or lids lowered (-)
    "lower_lid_up": (-0.3, 1.3),  # cheeks push the lower lids up, narrowing the eyes
    "lip_corner_up": (-3.0, 3.4),  # smile (+) or frown (-)
    "mouth_open": (0.0, 5.0),
    "mouth_stretch": (-2.6, 2.6),  # corners pulled outward (+) or the mouth made round (-)
    "lip_press": (0.0, 1.0),  # 0 at rest, 1 pressed to a thin line
    "upper_lip_up": (0.0, 2.2),
    "nose_wrinkle": (0.0, 1.5),
}

# Action parameters of each class at full intensity, in ACTION_UNITS order (face units, about pixels).
PROTOTYPES = np.array(
    [
        # in_up out_up togeth upper lower corner open stretch press up_lip wrinkle
        [-2.0, 0.3, 1.3, 0.0, 0.0, -0.4, 0.0, -1.2, 0.9, 0.0, 0.0],  # Angry
        [0.0, 0.0, 0.0, 0.0, 0.0, -0.9, 0.0, 0.0, 0.0, 1.6, 1.0],  # Disgust
        [2.0, 1.0, 1.1, 1.1, 0.0, -0.6, 1.6, 1.8, 0.0, 0.0, 0.0],  # Fear
        [0.0, 0.0, 0.0, -0.4, 1.0, 2.6, 1.0, 1.2, 0.0, 0.0, 0.0],  # Happy
        [1.9, 0.0, 0.4, 0.0, 0.0, -2.1, 0.0, -0.5, 0.3, 0.0, 0.0],  # Sad
        [2.8, 2.6, 0.0, 1.3, 0.0, 0.0, 4.0, -2.2, 0.0, 0.0, 0.0],  # Surprise
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # Neutral
    ]
)

# Face regions as rounded boxes (centre u, centre v, half-width, half-height; inside where
# du^4 + dv^4 <= 1) in face units: u across the face from the midline, v down from the eye line. They
# hold their features over the whole range of ACTION_UNITS; paired ones are mirrored across u = 0.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "brows": (6.6, -9.1, 6.0, 4.8),
    "inner_brows": (3.8, -9.6, 4.0, 4.4),
    "eyes": (6.5, -3.2, 4.6, 3.8),
    "nose": (0.0, 2.8, 4.0, 5.4),
    "mouth": (0.0, 12.6, 9.0, 6.3),
}
PAIRED = ("brows", "inner_brows", "eyes")

# Regions whose features carry each class. Neutral is read from the absence of movement where the other
# classes move, so its evidence is the brows, eyes and mouth at rest.
CLASS_REGIONS: dict[str, tuple[str, ...]] = {
    "Angry": ("brows", "mouth"),
    "Disgust": ("nose", "mouth"),
    "Fear": ("brows", "eyes", "mouth"),
    "Happy": ("eyes", "mouth"),
    "Sad": ("inner_brows", "mouth"),
    "Surprise": ("brows", "eyes", "mouth"),
    "Neutral": ("brows", "eyes", "mouth"),
}

# Pose limits: face units to pixels, and the largest in-plane rotation as tan(angle / 2).
SCALE_RANGE = (1.05, 1.3)
MAX_TAN_HALF = 0.13  # about 15 degrees

_CHUNK = 32  # images drawn at once; small enough for the temporaries to stay in cache
_CLUTTER = 3  # background boxes per image
_TEXTURE = 7  # side of the coarse noise grid upsampled into the background texture


@dataclass
class FaceParams:
    """Everything that decides a batch of faces except background texture and pixel noise."""

    labels: np.ndarray  # int64 (n,)
    expression: np.ndarray  # float64 (n, len(ACTION_UNITS)), action parameters added to the rest face
    face: dict[str, np.ndarray]  # rest geometry, tones, pose and imaging, each (n,) or (n, _CLUTTER)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: slice | np.ndarray) -> FaceParams:
        return FaceParams(self.labels[index], self.expression[index], {k: v[index] for k, v in self.face.items()})


def apportion(n: int, weights: Sequence[float]) -> np.ndarray:
    """Split n into integer counts proportional to weights (largest remainder, ties to the first)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    quota = n * w / w.sum()
    counts = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def sample_labels(n: int, rng: np.random.Generator, freqs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Labels with counts apportioned from freqs, and split names stratified 80/10/10 by class."""
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), apportion(n, freqs)))
    # Deal a 10-long split pattern along the label-sorted order, so each class splits 80/10/10 (+-1).
    pattern = np.repeat(np.arange(len(SPLITS)), apportion(10, [share for _, share in SPLITS]))
    split_id = np.empty(n, dtype=np.int64)
    split_id[np.argsort(labels, kind="stable")] = pattern[np.arange(n) % len(pattern)]
    # Rows in split order like the real file, shuffled within each split.
    order = np.lexsort((rng.random(n), split_id))
    names = np.array([name for name, _ in SPLITS])
    return labels[order], names[split_id[order]]


def sample_params(labels: np.ndarray, rng: np.random.Generator) -> FaceParams:
    """Draw rest faces, poses, imaging conditions and noisy class expressions for the given labels."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)

    def u(lo: float, hi: float, size: int | tuple[int, ...] = n) -> np.ndarray:
        return rng.uniform(lo, hi, size)

    face = {
        # pose (the rotation is kept as tan(angle / 2), which gives cos and sin without calling them)
        "cx": u(21.5, 25.5),
        "cy": u(21.5, 25.5),
        "scale": u(*SCALE_RANGE),
        "tan_half": u(-MAX_TAN_HALF, MAX_TAN_HALF),
        "flip": rng.random(n) < 0.5,
        # rest geometry
        "head_a": u(14.5, 16.5),
        "head_b": u(18.5, 20.5),
        "eye_x": u(6.0, 7.0),
        "eye_y": u(-3.5, -2.5),
        "eye_w": u(3.1, 3.7),
        "eye_hu": u(1.4, 2.0),
        "eye_hl": u(1.0, 1.5),
        "brow_y": u(-8.8, -7.6),
        "brow_in_x": u(2.4, 3.3),
        "brow_out_x": u(9.8, 10.8),
        "brow_tilt": u(-0.6, 0.6),
        "brow_arch": u(0.2, 1.0),
        "brow_thick": u(0.55, 0.85),
        "nose_y": u(5.9, 6.7),
        "mouth_y": u(11.0, 12.2),
        "mouth_w": u(5.0, 6.0),
        "mouth_curve": u(-0.5, 0.5),
        "lip_u": u(0.7, 1.1),
        "lip_l": u(1.0, 1.5),
        "hairline": u(-13.5, -10.5),
        "hair_part": u(0.0, 0.25),  # hairline slope: the side it falls to is what a flip changes
        "long_hair": (rng.random(n) < 0.4).astype(np.float64),
        # tones in [0, 1]
        "skin": u(0.45, 0.85),
        "hair": u(0.03, 0.45),
        "bg": u(0.1, 0.9),
        "bg_texture": u(0.0, 0.2),
        "clut_x": u(-4.0, 52.0, (n, _CLUTTER)),
        "clut_y": u(-4.0, 52.0, (n, _CLUTTER)),
        "clut_a": u(1.5, 12.0, (n, _CLUTTER)),
        "clut_b": u(1.5, 12.0, (n, _CLUTTER)),
        "clut_tone": u(0.0, 1.0, (n, _CLUTTER)),
        # imaging
        "light_x": u(-0.3, 0.3),
        "light_y": u(-0.25, 0.25),
        "contrast": u(0.8, 1.35),
        "brightness": u(-0.12, 0.12),
        "blur": u(0.0, 0.3),  # side weight w of a [w, 1-2w, w] kernel
        "noise": u(0.0, 0.06),  # half-width of uniform pixel noise
    }
    # Classes overlap through the expression's intensity (weak ones look near neutral), noise on the
    # class's own action parameters, and the rest face varying per person (a natural frown or smile).
    proto = PROTOTYPES[labels]
    active = proto != 0
    # Neutral faces still vary in the regions where the absence of expression is read.
    active[labels == CLASS_NAMES.index("Neutral")] = [a != "nose_wrinkle" for a in ACTION_UNITS]
    intensity = u(0.35, 1.3)[:, None]
    jitter = rng.normal(0.0, 1.0, proto.shape) * (0.15 + 0.2 * np.abs(proto)) * active
    lo, hi = np.array(list(ACTION_UNITS.values())).T
    return FaceParams(labels=labels, expression=np.clip(proto * intensity + jitter, lo, hi), face=face)


def _cover(sdf: np.ndarray, s: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """Share of each pixel inside a shape, from its signed distance in face units (1-pixel soft edge)."""
    return np.clip(0.5 + grow * s - sdf * s, 0.0, 1.0)


def _round(u: np.ndarray, v: np.ndarray, cu, cv, a, b) -> np.ndarray:
    """Signed distance to a roundish ellipse, scaled radially (good near the edge when a ~ b)."""
    du = (u - cu) * (1.0 / a)
    dv = (v - cv) * (1.0 / b)
    return (np.sqrt(du * du + dv * dv) - 1.0) * (0.5 * (a + b))


def _lens(u: np.ndarray, half_width) -> np.ndarray:
    """sqrt(1 - (u / half_width)^2), 0 beyond the ends: the profile of an ellipse's upper half."""
    q = u * (1.0 / half_width)
    return np.sqrt(np.maximum(1.0 - q * q, 0.0))


def _paint(img: np.ndarray, alpha: np.ndarray, tone) -> None:
    img += alpha * (tone - img)


def _upsample(coarse: np.ndarray) -> np.ndarray:
    """Bilinear upsampling of (c, k, k) to (c, 48, 48) by gathers (a BLAS matmul may round differently)."""
    k = coarse.shape[-1]
    pos = (np.arange(IMAGE_SIZE) + 0.5) * ((k - 1) / IMAGE_SIZE)
    i0 = pos.astype(np.int64)
    f = pos - i0
    rows = coarse[:, i0, :] * (1.0 - f)[:, None] + coarse[:, i0 + 1, :] * f[:, None]
    return rows[:, :, i0] * (1.0 - f) + rows[:, :, i0 + 1] * f


def _blur(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable [w, 1-2w, w] filter, edges repeated; w has shape (c, 1, 1)."""
    for axis in (1, 2):
        out = img * (1.0 - 2.0 * w)
        side = w * img
        head, tail = [slice(None)] * 3, [slice(None)] * 3
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        out[tuple(head)] += side[tuple(tail)]
        out[tuple(tail)] += side[tuple(head)]
        head[axis], tail[axis] = slice(0, 1), slice(-1, None)
        out[tuple(head)] += side[tuple(head)]
        out[tuple(tail)] += side[tuple(tail)]
        img = out
    return img


def _draw_brows_eyes(img, u, v, s, f, au) -> None:
    au_ = np.abs(u)
    # Brows: a thick arched segment from the inner to the outer end, thinning outward. Raising or
    # lowering the inner end bends the brow's inner part only (by (1 - t)^3), as the frontalis and
    # corrugator do, so the outer brow stays where it was.
    in_x = np.maximum(f["brow_in_x"] - 0.8 * au["brow_together"], 0.9)
    ex = f["brow_out_x"] - in_x
    ey = f["brow_tilt"] - au["brow_outer_up"]
    du, dv = au_ - in_x, v - f["brow_y"]
    t = np.clip((du * ex + dv * ey) * (1.0 / (ex * ex + ey * ey)), 0.0, 1.0)
    bu = du - t * ex
    rest = 1.0 - t
    bv = dv - t * ey + (4.0 * f["brow_arch"]) * (t * rest) + au["brow_inner_up"] * (rest * rest * rest)
    _paint(img, _cover(np.sqrt(bu * bu + bv * bv) + (0.4 * f["brow_thick"]) * t, s, f["brow_thick"]), 0.8 * f["hair"])

    # Eyes: an almond between the upper and lower lid curves, with a dark rim, light sclera, dark iris.
    hu = np.maximum(f["eye_hu"] + 0.9 * au["upper_lid_up"], 0.3)
    hl = np.maximum(f["eye_hl"] - 1.1 * au["lower_lid_up"], 0.2)
    du, dv = au_ - f["eye_x"], v - f["eye_y"]
    lens = _lens(du, f["eye_w"])
    sdf = np.maximum(np.maximum(-dv - hu * lens, dv - hl * lens), np.abs(du) - f["eye_w"])
    _paint(img, _cover(sdf, s, 0.4), 0.3 * f["hair"] + 0.05)
    sclera = _cover(sdf, s)
    _paint(img, sclera, np.minimum(f["skin"] + 0.25, 0.95))
    dv -= 0.1
    _paint(img, sclera * _cover(np.sqrt(du * du + dv * dv), s, 1.5), 0.1)


def _draw_nose(img, u, v, s, f, au) -> None:
    au_ = np.abs(u)
    wrinkle = au["nose_wrinkle"]
    nose_y = f["nose_y"] - 0.7 * wrinkle
    _paint(img, 0.6 * _cover(_round(u, v, 0.0, nose_y - 0.9, 2.6, 1.7), s), 0.85 * f["skin"])
    flare = 1.0 + 0.3 * wrinkle
    nostril = (au_ - 1.6 * flare) * (1.0 / flare)
    dv = (v - nose_y) * (1.0 / 0.55)
    _paint(img, _cover(np.sqrt(nostril * nostril + dv * dv) - 1.0, s * 0.55), 0.35 * f["skin"])
    # Wrinkle lines across the bridge, bowed like it, as dark as the wrinkle is strong.
    bow = 0.08 * u * u
    strength = np.minimum(0.8 * wrinkle, 1.0)
    for line_v in (-0.8, 0.9):
        line = np.maximum(np.abs(v + bow - line_v), au_ - 2.1)
        _paint(img, strength * _cover(line, s, 0.3), 0.55 * f["skin"])


def _draw_mouth(img, u, v, s, f, au) -> None:
    # Lip edges as curves over u: bent by the corners, parted by opening and by a raised upper lip.
    width = f["mouth_w"] + au["mouth_stretch"]
    q = u * (1.0 / width)
    q2 = np.minimum(q * q, 1.0)
    base = f["mouth_y"] - (f["mouth_curve"] + au["lip_corner_up"]) * q2
    lens = np.sqrt(1.0 - q2)
    top = base - (au["upper_lip_up"] + 0.25 * au["mouth_open"]) * lens
    bottom = base + au["mouth_open"] * lens
    ends = np.abs(u) - width
    press = 1.0 - 0.8 * au["lip_press"]
    lips = np.maximum(np.maximum(top - (f["lip_u"] * press) * lens - v, v - bottom - (f["lip_l"] * press) * lens), ends)
    _paint(img, _cover(lips, s), 0.72 * f["skin"])
    gap = np.maximum(np.maximum(top - v, v - bottom), ends)
    _paint(img, _cover(gap, s, 0.4), 0.12)  # a closed mouth is still a dark line
    # Teeth fill the upper part of an opening at least half a pixel high.
    shown = np.clip(bottom - top - 0.5, 0.0, 1.0)
    _paint(img, _cover(gap, s) * _cover(v - top - np.minimum(0.45 * (bottom - top), 1.2), s) * shown, 0.9)


# Each feature group is drawn in a window around it, sized for the largest scale and rotation to hold the
# bounding box of its regions, which the action-parameter ranges keep the features inside.
def _window(regions: Sequence[str]) -> tuple[float, int, int]:
    boxes = [(cu + a if name in PAIRED else a, cv - b, cv + b) for name, (cu, cv, a, b) in REGIONS.items()]
    boxes = [box for name, box in zip(REGIONS, boxes) if name in regions]
    half_u = max(b[0] for b in boxes)
    v0, v1 = min(b[1] for b in boxes), max(b[2] for b in boxes)
    angle = 2.0 * math.atan(MAX_TAN_HALF)
    c, sn, s = math.cos(angle), math.sin(angle), SCALE_RANGE[1]
    width = math.ceil(2.0 * s * (half_u * c + 0.5 * (v1 - v0) * sn)) + 5
    height = math.ceil(2.0 * s * (half_u * sn + 0.5 * (v1 - v0) * c)) + 5
    return 0.5 * (v0 + v1), min(width, IMAGE_SIZE), min(height, IMAGE_SIZE)


_FEATURES = (
    (_draw_brows_eyes, ("brows", "inner_brows", "eyes")),
    (_draw_nose, ("nose",)),
    (_draw_mouth, ("mouth",)),
)
_WINDOWS = [_window(regions) for _, regions in _FEATURES]


def _render_chunk(p: FaceParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    c = len(p)
    f = {k: (v[:, None, None] if v.ndim == 1 else v[:, :, None, None]) for k, v in p.face.items()}
    au = {name: p.expression[:, i, None, None] for i, name in enumerate(ACTION_UNITS)}
    # Image -> face coordinates: u = (cos dx + sin dy) / s mirrored by the flip, v = (cos dy - sin dx) / s.
    t, s = f["tan_half"], f["scale"]
    cos, sin = (1.0 - t * t) / (1.0 + t * t), 2.0 * t / (1.0 + t * t)
    mirror = np.where(f["flip"], -1.0, 1.0)
    ux, uy, vx, vy = mirror * cos / s, mirror * sin / s, -sin / s, cos / s

    def face_coords(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = x - f["cx"], y - f["cy"]
        return ux * dx + uy * dy, vx * dx + vy * dy

    grid = np.arange(IMAGE_SIZE, dtype=np.float64)
    x, y = grid[None, None, :], grid[None, :, None]
    u, v = face_coords(x, y)

    # Background: tone, coarse texture and clutter boxes, in image coordinates.
    img = f["bg"] + f["bg_texture"] * _upsample(rng.normal(0.0, 1.0, (c, _TEXTURE, _TEXTURE)))
    for k in range(_CLUTTER):
        across = np.clip(f["clut_a"][:, k] + 0.5 - np.abs(x - f["clut_x"][:, k]), 0.0, 1.0)
        down = np.clip(f["clut_b"][:, k] + 0.5 - np.abs(y - f["clut_y"][:, k]), 0.0, 1.0)
        _paint(img, across * down, f["clut_tone"][:, k])

    # Hair behind the head (cut at the ears when short), neck, and the shaded face below the hairline.
    a, b, skin, long_hair = f["head_a"], f["head_b"], f["skin"], f["long_hair"]
    hair = _round(u, v, 0.0, -1.0 - long_hair, a + 1.2 + 2.3 * long_hair, b + 1.0 + 0.5 * long_hair)
    _paint(img, _cover(np.maximum(hair, v - (20.0 * long_hair - 3.0)), s), f["hair"])
    _paint(img, _cover(np.maximum(np.abs(u) - 7.5, 12.0 - v), s), 0.8 * skin)
    du, dv = u * (1.0 / a), v * (1.0 / b)
    du *= du
    r2 = du + dv * dv
    hairline = f["hairline"] + f["hair_part"] * u + 4.0 * du
    head = np.maximum((np.sqrt(r2) - 1.0) * (0.5 * (a + b)), hairline - v)
    _paint(img, _cover(head, s), skin * 1.05 - (0.3 * skin) * r2)

    # Features and their class regions, each in its window.
    img = np.ascontiguousarray(img)
    masks = np.zeros(img.shape, dtype=bool)
    flat_img, flat_masks = img.reshape(-1), masks.reshape(-1)
    uses = np.array([[r in CLASS_REGIONS[name] for r in REGIONS] for name in CLASS_NAMES])[p.labels]
    image = np.arange(c)[:, None, None]
    for (draw, regions), (vc, width, height) in zip(_FEATURES, _WINDOWS):
        ox = np.clip(np.floor(p.face["cx"] - (s * sin)[:, 0, 0] * vc) - (width - 1) // 2, 0, IMAGE_SIZE - width)
        oy = np.clip(np.floor(p.face["cy"] + (s * cos)[:, 0, 0] * vc) - (height - 1) // 2, 0, IMAGE_SIZE - height)
        wx = ox[:, None, None] + np.arange(width, dtype=np.float64)
        wy = oy[:, None, None] + np.arange(height, dtype=np.float64)[:, None]
        index = (image * IMAGE_SIZE + wy.astype(np.int64)) * IMAGE_SIZE + wx.astype(np.int64)
        wu, wv = face_coords(wx, wy)
        patch = flat_img[index]
        draw(patch, wu, wv, s, f, au)
        flat_img[index] = patch
        region_mask = flat_masks[index]
        for region in regions:
            cu, cv, ra, rb = REGIONS[region]
            du = ((np.abs(wu) if region in PAIRED else wu) - cu) * (1.0 / ra)
            dv = (wv - cv) * (1.0 / rb)
            du *= du
            dv *= dv
            region_mask |= (du * du + dv * dv <= 1.0) & uses[:, list(REGIONS).index(region), None, None]
        flat_masks[index] = region_mask

    # Imaging: blur, then lighting gradient, contrast and brightness (blur and a smooth gain commute
    # closely enough), sensor noise, and one rounding (+0.5 here, truncation below).
    img = _blur(img, f["blur"])
    gain = 255.0 * f["contrast"]
    img *= gain + (gain * f["light_x"]) * ((x - 23.5) / 24.0) + (gain * f["light_y"]) * ((y - 23.5) / 24.0)
    img += 255.0 * (0.5 + f["brightness"]) - 0.5 * gain + 0.5
    img += rng.integers(-128, 128, img.shape, dtype=np.int8) * (255.0 / 128.0 * f["noise"])
    return np.clip(img, 0.0, 255.5).astype(np.uint8), masks


def render(params: FaceParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (n, 48, 48) and class-region masks bool (n, 48, 48); rng feeds texture and noise."""
    out = [_render_chunk(params.take(slice(i, i + _CHUNK)), rng) for i in range(0, len(params), _CHUNK)]
    empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE))
    images = np.concatenate([o[0] for o in out]) if out else empty.astype(np.uint8)
    masks = np.concatenate([o[1] for o in out]) if out else empty.astype(bool)
    return images, masks


def generate(
    n: int, seed: int = 0, balanced: bool = False, class_freqs: Sequence[float] | None = None
) -> FaceSet:
    """n synthetic faces; classes follow FER2013's Training frequencies unless balanced or class_freqs."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if balanced and class_freqs is not None:
        raise ValueError("pass either balanced=True or class_freqs, not both")
    freqs = [1.0] * NUM_CLASSES if balanced else (FER2013_TRAIN_COUNTS if class_freqs is None else class_freqs)
    if len(freqs) != NUM_CLASSES:
        raise ValueError(f"class_freqs needs {NUM_CLASSES} values, got {len(freqs)}")
    rng = np.random.Generator(np.random.PCG64(seed))
    labels, split = sample_labels(n, rng, freqs)
    images, masks = render(sample_params(labels, rng), rng)
    return FaceSet(
        images=images,
        labels=labels,
        split=split,
        ids=np.array([f"syn-{i:06d}" for i in range(n)]),
        layout="synthetic",
        source=f"synthetic://{n}?seed={seed}" + ("&balanced=1" if balanced else ""),
        masks=masks,
    )

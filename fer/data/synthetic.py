"""Procedural 48x48 expression faces: the default data set and the ground truth for saliency.

A face is drawn from implicit shapes (ellipses, boxes, arched segments, lip curves) whose soft-edged
coverage is evaluated on the pixel grids of a chunk of images at once. The expression is a vector of
facial action parameters (after FACS) added to the face's rest geometry, and `masks` marks the regions
those parameters act in, so an attribution method that reads the expression should point inside them.

Only IEEE-exact float64 operations (+, -, *, /, sqrt, comparisons) touch pixels, all random numbers are
uniform draws from PCG64 (no libm exp/log, whose last bit may differ between machines), and the image is
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
    "brows": (6.6, -9.1, 5.8, 4.8),
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
        return FaceParams(
            self.labels[index], self.expression[index], {k: v[index] for k, v in self.face.items()}
        )


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
        "hair_length": np.where(rng.random(n) < 0.4, 17.0, -3.0),  # v where the hair ends
        "hair_volume": u(0.8, 2.0),  # how far the hair stands off the head
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
    intensity = u(0.45, 1.3)[:, None]
    jitter = u(-1.7, 1.7, proto.shape) * (0.15 + 0.2 * np.abs(proto)) * active  # unit variance
    lo, hi = np.array(list(ACTION_UNITS.values())).T
    return FaceParams(labels=labels, expression=np.clip(proto * intensity + jitter, lo, hi), face=face)


# The helpers below work in place where they can: memory traffic, not arithmetic, bounds this code.
def _cover(sdf: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Turn a signed distance in face units into the share of each pixel inside (1-pixel soft edge), in place."""
    sdf *= -s
    sdf += 0.5
    return np.clip(sdf, 0.0, 1.0, out=sdf)


def _round(u: np.ndarray, v: np.ndarray, cu, cv, a, b) -> np.ndarray:
    """Signed distance to a roundish ellipse, scaled radially (good near the edge when a ~ b)."""
    du = (u - cu) * (1.0 / a)
    du *= du
    dv = (v - cv) * (1.0 / b)
    dv *= dv
    du += dv
    r = np.sqrt(du, out=du)
    r -= 1.0
    r *= 0.5 * (a + b)
    return r


def _paint(img: np.ndarray, alpha: np.ndarray, tone) -> None:
    """Blend tone over img with coverage alpha, in place; alpha is used up."""
    np.subtract(1.0, alpha, out=alpha)
    img -= tone
    img *= alpha
    img += tone


def _upsample(coarse: np.ndarray) -> np.ndarray:
    """Bilinear upsampling of (c, k, k) to (c, 48, 48) by gathers (a BLAS matmul may round differently)."""
    k = coarse.shape[-1]
    pos = (np.arange(IMAGE_SIZE) + 0.5) * ((k - 1) / IMAGE_SIZE)
    i0 = pos.astype(np.int64)
    f = pos - i0
    rows = coarse[:, i0, :] * (1.0 - f)[:, None] + coarse[:, i0 + 1, :] * f[:, None]
    out = rows[:, :, i0] * (1.0 - f)
    out += rows[:, :, i0 + 1] * f
    return out


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
    # t: where the pixel projects onto the inner-outer chord (0 inner, 1 outer); (du, dv) becomes the
    # pixel's offset from the brow's centre line at t.
    du, dv = au_ - in_x, v - f["brow_y"]
    t = du * (ex / (ex * ex + ey * ey))
    t += dv * (ey / (ex * ex + ey * ey))
    np.clip(t, 0.0, 1.0, out=t)
    rest = 1.0 - t
    du -= t * ex
    dv -= t * ey
    dv += (4.0 * f["brow_arch"]) * (t * rest)
    rest *= rest * rest
    dv += au["brow_inner_up"] * rest
    du *= du
    dv *= dv
    du += dv
    dist = np.sqrt(du, out=du)
    dist += (0.4 * f["brow_thick"]) * t
    dist -= f["brow_thick"]
    _paint(img, _cover(dist, s), 0.8 * f["hair"])

    # Eyes: an almond between the upper and lower lid curves, with a dark rim, light sclera, dark iris.
    hu = np.maximum(f["eye_hu"] + 0.9 * au["upper_lid_up"], 0.3)
    hl = np.maximum(f["eye_hl"] - 1.1 * au["lower_lid_up"], 0.2)
    du, dv = au_ - f["eye_x"], v - f["eye_y"]
    lens = du * (1.0 / f["eye_w"])
    lens *= lens
    np.subtract(1.0, lens, out=lens)
    np.maximum(lens, 0.0, out=lens)
    np.sqrt(lens, out=lens)
    sdf = np.maximum(-dv - hu * lens, dv - hl * lens)
    np.maximum(sdf, np.abs(du) - f["eye_w"], out=sdf)
    _paint(img, _cover(sdf - 0.4, s), 0.3 * f["hair"] + 0.05)
    sclera = _cover(sdf, s)
    dv -= 0.1
    du *= du
    dv *= dv
    du += dv
    iris = np.sqrt(du, out=du)
    iris -= 1.5
    iris = _cover(iris, s)
    iris *= sclera
    _paint(img, sclera, np.minimum(f["skin"] + 0.25, 0.95))
    _paint(img, iris, 0.1)


def _draw_nose(img, u, v, s, f, au) -> None:
    au_ = np.abs(u)
    wrinkle = au["nose_wrinkle"]
    nose_y = f["nose_y"] - 0.7 * wrinkle
    _paint(img, 0.6 * _cover(_round(u, v, 0.0, nose_y - 0.9, 2.6, 1.7), s), 0.85 * f["skin"])
    flare = 1.0 + 0.3 * wrinkle
    _paint(img, _cover(_round(au_, v, 1.6 * flare, nose_y, flare, 0.55), s), 0.35 * f["skin"])
    # Wrinkle lines across the bridge, bowed like it, as dark as the wrinkle is strong.
    bowed = 0.08 * (u * u)
    bowed += v
    sides = au_ - 2.1
    strength = np.minimum(0.8 * wrinkle, 1.0)
    for line_v in (-0.8, 0.9):
        line = np.abs(bowed - line_v)
        np.maximum(line, sides, out=line)
        line -= 0.3
        alpha = _cover(line, s)
        alpha *= strength
        _paint(img, alpha, 0.55 * f["skin"])


def _draw_mouth(img, u, v, s, f, au) -> None:
    # Lip edges as curves over u: bent by the corners, parted by opening and by a raised upper lip.
    width = f["mouth_w"] + au["mouth_stretch"]
    q2 = u * (1.0 / width)
    q2 *= q2
    np.minimum(q2, 1.0, out=q2)
    lens = np.sqrt(1.0 - q2)
    base = q2
    base *= -(f["mouth_curve"] + au["lip_corner_up"])
    base += f["mouth_y"]
    top = base - (au["upper_lip_up"] + 0.25 * au["mouth_open"]) * lens
    bottom = base + au["mouth_open"] * lens
    ends = np.abs(u) - width
    press = 1.0 - 0.8 * au["lip_press"]
    above, below = top - v, v - bottom
    lips = np.maximum(above - (f["lip_u"] * press) * lens, below - (f["lip_l"] * press) * lens)
    np.maximum(lips, ends, out=lips)
    _paint(img, _cover(lips, s), 0.72 * f["skin"])
    gap = np.maximum(above, below)
    np.maximum(gap, ends, out=gap)
    _paint(img, _cover(gap - 0.4, s), 0.12)  # a closed mouth is still a dark line
    # Teeth fill the upper part of an opening at least half a pixel high.
    height = bottom - top
    teeth = _cover(gap, s)
    teeth *= np.clip(height - 0.5, 0.0, 1.0)
    height *= 0.45
    np.minimum(height, 1.2, out=height)
    teeth *= _cover(-above - height, s)
    _paint(img, teeth, 0.9)


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

# Class masks are looked up per pixel in templates over face coordinates: cells of 1 / _MASK_RES face
# units covering |u| <= _MASK_U, _MASK_V[0] <= v <= _MASK_V[1], with an empty border for everything
# outside.
_MASK_RES = 4
_MASK_U = 14.0
_MASK_V = (-15.0, 20.0)


def _mask_templates() -> np.ndarray:
    cols = np.arange(int(2 * _MASK_U * _MASK_RES)) + 0.5
    rows = np.arange(int((_MASK_V[1] - _MASK_V[0]) * _MASK_RES)) + 0.5
    u, v = cols[None, :] / _MASK_RES - _MASK_U, rows[:, None] / _MASK_RES + _MASK_V[0]
    inside = {}
    for name, (cu, cv, a, b) in REGIONS.items():
        du = ((np.abs(u) if name in PAIRED else u) - cu) / a
        dv = (v - cv) / b
        du, dv = du * du, dv * dv  # squared twice by multiplying, not by pow(), to stay exact
        inside[name] = du * du + dv * dv <= 1.0
    templates = np.array([np.logical_or.reduce([inside[r] for r in CLASS_REGIONS[c]]) for c in CLASS_NAMES])
    templates[:, [0, -1], :] = False
    templates[:, :, [0, -1]] = False
    return templates


_TEMPLATES = _mask_templates()


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
    img = _upsample(rng.uniform(-1.7, 1.7, (c, _TEXTURE, _TEXTURE)))
    img *= f["bg_texture"]
    img += f["bg"]
    for k in range(_CLUTTER):
        across = np.clip(f["clut_a"][:, k] + 0.5 - np.abs(x - f["clut_x"][:, k]), 0.0, 1.0)
        down = np.clip(f["clut_b"][:, k] + 0.5 - np.abs(y - f["clut_y"][:, k]), 0.0, 1.0)
        _paint(img, across * down, f["clut_tone"][:, k])

    # Head: the hair is its outline grown (to below the chin when long, to the ears when short); the
    # face shows below the hairline, shaded darker toward its edge.
    a, b, skin = f["head_a"], f["head_b"], f["skin"]
    du = u * (1.0 / a)
    du *= du
    r2 = v * (1.0 / b)
    r2 *= r2
    r2 += du
    head = np.sqrt(r2)
    head -= 1.0
    head *= 0.5 * (a + b)
    grow = f["hair_volume"] + (f["hair_length"] > 0) * 2.0  # long hair falls wider
    _paint(img, _cover(np.maximum(head - grow, v - f["hair_length"]), s), f["hair"])
    hairline = f["hair_part"] * u
    hairline += f["hairline"]
    du *= 4.0
    hairline += du
    hairline -= v
    np.maximum(head, hairline, out=head)
    shade = r2
    shade *= -0.3 * skin
    shade += 1.05 * skin
    _paint(img, _cover(head, s), shade)

    # Features, each in its window.
    img = np.ascontiguousarray(img)
    flat_img = img.reshape(-1)
    image = np.arange(c)[:, None, None]
    for draw, (vc, width, height) in zip((d for d, _ in _FEATURES), _WINDOWS):
        # Centred on the image position of the face point (0, vc), shifted inside the image if need be.
        x0 = np.floor(p.face["cx"] - vc * (s * sin).ravel()) - (width - 1) // 2
        y0 = np.floor(p.face["cy"] + vc * (s * cos).ravel()) - (height - 1) // 2
        wx = np.clip(x0, 0, IMAGE_SIZE - width)[:, None, None] + np.arange(width, dtype=np.float64)
        wy = np.clip(y0, 0, IMAGE_SIZE - height)[:, None, None] + np.arange(height, dtype=np.float64)[:, None]
        index = (image * IMAGE_SIZE + wy.astype(np.int64)) * IMAGE_SIZE + wx.astype(np.int64)
        patch = flat_img[index]
        draw(patch, *face_coords(wx, wy), s, f, au)
        flat_img[index] = patch

    # Class masks: the template cell under each pixel (coordinates clipped onto the empty border).
    rows, cols = _TEMPLATES.shape[1:]
    col = u + _MASK_U
    col *= _MASK_RES
    np.clip(col, 0.0, cols - 1.0, out=col)
    row = v - _MASK_V[0]
    row *= _MASK_RES
    np.clip(row, 0.0, rows - 1.0, out=row)
    cell = (p.labels[:, None, None] * rows + row.astype(np.int64)) * cols
    cell += col.astype(np.int64)
    masks = _TEMPLATES.reshape(-1)[cell]

    # Imaging: blur, then lighting gradient, contrast and brightness (blur and a smooth gain commute
    # closely enough), sensor noise, and one rounding (+0.5 here, truncation below).
    img = _blur(img, f["blur"])
    gain = 255.0 * f["contrast"]
    img *= gain + (gain * f["light_x"]) * ((x - 23.5) / 24.0) + (gain * f["light_y"]) * ((y - 23.5) / 24.0)
    img += 255.0 * (0.5 + f["brightness"]) - 0.5 * gain + 0.5
    noise = rng.integers(-128, 128, img.shape, dtype=np.int8) * (255.0 / 128.0 * f["noise"])
    img += noise
    return np.clip(img, 0.0, 255.5, out=img).astype(np.uint8), masks


def render(params: FaceParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (n, 48, 48) and class-region masks bool (n, 48, 48); rng feeds texture and noise."""
    # glibc hands a freed heap top back to the OS past M_TRIM_THRESHOLD and page-faults it in again for
    # the next temporary, which in a fresh process doubled the time per image. Allocating and freeing one
    # large (mmapped) block raises that threshold to twice its size for the rest of the process.
    np.empty(16 << 20, dtype=np.uint8)
    images = np.empty((len(params), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    masks = np.empty(images.shape, dtype=bool)
    for i in range(0, len(params), _CHUNK):
        images[i : i + _CHUNK], masks[i : i + _CHUNK] = _render_chunk(params.take(slice(i, i + _CHUNK)), rng)
    return images, masks


def generate(
    n: int, seed: int = 0, balanced: bool = False, class_freqs: Sequence[float] | None = None
) -> FaceSet:
    """n synthetic faces; classes follow FER2013's Training frequencies unless balanced or class_freqs."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if balanced and class_freqs is not None:
        raise ValueError("pass either balanced=True or class_freqs, not both")
    freqs = (
        class_freqs if class_freqs is not None else [1.0] * NUM_CLASSES if balanced else FER2013_TRAIN_COUNTS
    )
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

import dataclasses
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from fer.data import synthetic
from fer.data.labels import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from fer.data.synthetic import CLASS_REGIONS, FER2013_TRAIN_COUNTS, REGIONS, apportion, generate

NEUTRAL = CLASS_NAMES.index("Neutral")


def digest(faces) -> str:
    h = hashlib.sha256()
    for array in (faces.images, faces.masks, faces.labels, faces.split.astype("U"), faces.ids.astype("U")):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def faces():
    return generate(1400, seed=11)


def labels_and_split(n: int, seed: int, freqs=FER2013_TRAIN_COUNTS) -> tuple[np.ndarray, np.ndarray]:
    """What generate(n, seed) labels its rows with, without drawing the faces."""
    return synthetic.sample_labels(n, np.random.Generator(np.random.PCG64(seed)), freqs)


def test_same_seed_gives_identical_bytes():
    a, b = generate(300, seed=3), generate(300, seed=3)
    assert digest(a) == digest(b)


# numpy picks SIMD kernels by CPU at run time; switching its x86 AVX2/AVX-512 kernels off in the child
# stands in for another machine (names numpy does not know are ignored, leaving the plain rerun).
@pytest.mark.parametrize("disabled_simd", ["", "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"])
def test_same_seed_gives_identical_bytes_in_another_process(disabled_simd):
    code = (
        "import hashlib, numpy as np; from fer.data.synthetic import generate; f = generate(300, seed=3); "
        "h = hashlib.sha256(); "
        "[h.update(np.ascontiguousarray(a).tobytes()) for a in "
        "(f.images, f.masks, f.labels, f.split.astype('U'), f.ids.astype('U'))]; print(h.hexdigest())"
    )
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": disabled_simd}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == digest(generate(300, seed=3))


def test_different_seeds_differ():
    a, b = generate(200, seed=1), generate(200, seed=2)
    assert np.mean(a.images != b.images) > 0.5
    assert not np.array_equal(a.labels, b.labels)


def test_shapes_dtypes_and_metadata():
    faces = generate(50, seed=4)
    assert faces.images.shape == faces.masks.shape == (50, IMAGE_SIZE, IMAGE_SIZE)
    assert faces.images.dtype == np.uint8 and faces.masks.dtype == bool
    assert faces.labels.dtype == np.int64 and faces.labels.min() >= 0 and faces.labels.max() < NUM_CLASSES
    assert faces.layout == "synthetic"
    assert faces.source == "synthetic://50?seed=4"
    assert generate(14, seed=4, balanced=True).source == "synthetic://14?seed=4&balanced=1"
    assert faces.ids[0] == "syn-000000" and faces.ids[-1] == "syn-000049"
    assert len(set(faces.ids)) == 50
    assert set(faces.split) <= {"Training", "PublicTest", "PrivateTest"}


def test_zero_images():
    faces = generate(0)
    assert faces.images.shape == (0, IMAGE_SIZE, IMAGE_SIZE) and len(faces.labels) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"n": -1}, {"n": 10, "class_freqs": [1.0] * 6}, {"n": 10, "balanced": True, "class_freqs": [1.0] * 7}],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        generate(**kwargs)


def test_apportion_is_proportional_and_sums_to_n():
    counts = apportion(10, [1, 1, 1])
    assert counts.sum() == 10 and sorted(counts) == [3, 3, 4]
    assert list(apportion(7, [0, 2, 5])) == [0, 2, 5]
    with pytest.raises(ValueError):
        apportion(5, [1, -1])


def test_generate_labels_rows_as_sample_labels_does(faces):
    labels, split = labels_and_split(1400, seed=11)
    assert np.array_equal(faces.labels, labels) and np.array_equal(faces.split, split)


def test_default_classes_follow_fer2013_training_frequencies():
    counts = np.bincount(labels_and_split(7000, seed=11)[0], minlength=NUM_CLASSES)
    expected = 7000 * np.array(FER2013_TRAIN_COUNTS) / sum(FER2013_TRAIN_COUNTS)
    assert np.all(np.abs(counts - expected) < 1.0)
    assert 0.013 < counts[CLASS_NAMES.index("Disgust")] / 7000 < 0.017
    assert counts.argmax() == CLASS_NAMES.index("Happy")


def test_balanced_and_explicit_frequencies():
    assert list(generate(700, seed=2, balanced=True).class_counts()) == [100] * NUM_CLASSES
    counts = generate(300, seed=2, class_freqs=[2, 0, 0, 0, 0, 0, 1]).class_counts()
    assert list(counts) == [200, 0, 0, 0, 0, 0, 100]


def test_splits_are_80_10_10_within_each_class():
    labels, split = labels_and_split(7000, seed=11)
    names, counts = np.unique(split, return_counts=True)
    assert dict(zip(names, counts)) == {"Training": 5600, "PublicTest": 700, "PrivateTest": 700}
    for k in range(NUM_CLASSES):
        in_class = split[labels == k]
        for name, share in synthetic.SPLITS:
            assert abs(np.sum(in_class == name) - share * len(in_class)) <= 1.0
    # Rows come grouped by split, Training first, like the real file.
    order = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
    assert np.all(np.diff([order[s] for s in split]) >= 0)


def test_pixels_use_most_of_the_range(faces):
    images = faces.images
    low, high = np.percentile(images, [1, 99])
    assert low < 20 and high > 235
    per_image_range = images.max(axis=(1, 2)).astype(int) - images.min(axis=(1, 2))
    assert np.median(per_image_range) > 150


def test_mask_coverage_is_modest(faces):
    cover = faces.masks.mean(axis=(1, 2))
    assert cover.min() > 0.08 and cover.max() < 0.4
    for k in range(NUM_CLASSES):
        assert 0.12 < cover[faces.labels == k].mean() < 0.32


def test_masks_cover_the_pixels_the_expression_changes():
    """Rendered again with a neutral expression (same face, pose, background, noise), a face differs
    from itself only inside its class mask, so the mask follows position, scale, rotation and flip."""
    labels = np.arange(700) % NUM_CLASSES
    params = synthetic.sample_params(labels, np.random.Generator(np.random.PCG64(5)))
    images, masks = synthetic.render(params, np.random.Generator(np.random.PCG64(6)))
    at_rest = dataclasses.replace(params, expression=np.zeros_like(params.expression))
    rest_images, rest_masks = synthetic.render(at_rest, np.random.Generator(np.random.PCG64(6)))
    assert np.array_equal(masks, rest_masks)  # masks depend on class and pose, not on the expression
    diff = np.abs(images.astype(int) - rest_images)
    for k, name in enumerate(CLASS_NAMES):
        d, m = diff[labels == k], masks[labels == k]
        inside = (d * m).sum() / d.sum()
        assert inside > 0.95, f"{name}: {inside:.3f} of the change inside the mask"
        if k != NEUTRAL:
            assert d[m].mean() > 3.0, f"{name}: the expression hardly changes its own regions"


def test_masks_mirror_with_the_flip():
    params = synthetic.sample_params(np.arange(14) % NUM_CLASSES, np.random.Generator(np.random.PCG64(8)))
    params.face.update(cx=np.full(14, 23.5), tan_half=np.zeros(14), flip=np.zeros(14, dtype=bool))
    _, masks = synthetic.render(params, np.random.Generator(np.random.PCG64(0)))
    params.face["flip"][:] = True
    _, flipped = synthetic.render(params, np.random.Generator(np.random.PCG64(0)))
    assert np.array_equal(flipped, masks[:, :, ::-1])


def test_each_class_is_distinct_inside_its_regions():
    """With pose fixed, a nearest-class-mean classifier on per-image standardized pixels reads the class
    from the mask regions and not from the rest of the image."""
    n = 2100
    labels = np.arange(n) % NUM_CLASSES
    rng = np.random.Generator(np.random.PCG64(9))
    params = synthetic.sample_params(labels, rng)
    params.face.update(cx=np.full(n, 23.5), cy=np.full(n, 23.5), scale=np.full(n, 1.15), tan_half=np.zeros(n))
    params.face["flip"][:] = False
    images, masks = synthetic.render(params, rng)
    x = images.reshape(n, -1).astype(float)
    regions = masks[:NUM_CLASSES].any(axis=0).reshape(-1)
    train = np.arange(n) < 1400

    def accuracy(pixels: np.ndarray) -> float:
        z = x[:, pixels]
        z = (z - z.mean(axis=1, keepdims=True)) / (z.std(axis=1, keepdims=True) + 1e-9)
        means = np.array([z[train & (labels == k)].mean(axis=0) for k in range(NUM_CLASSES)])
        dist = ((z[~train][:, None] - means[None]) ** 2).sum(axis=-1)
        return float(np.mean(dist.argmin(axis=1) == labels[~train]))

    assert accuracy(regions) > 0.6
    assert accuracy(~regions) < 0.25  # chance is 1/7


def test_class_regions_name_known_regions():
    assert set(CLASS_REGIONS) == set(CLASS_NAMES)
    assert all(set(r) <= set(REGIONS) for r in CLASS_REGIONS.values())

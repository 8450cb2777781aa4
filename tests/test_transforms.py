import math

import pytest
import torch

from fer.data.transforms import (
    BatchAugment,
    alternating_flip,
    label_mixing,
    pad,
    progressive_size,
    random_erase,
    random_photometric,
    resize,
)


def batch(n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 48, 48), generator=g).float()


def test_no_augmentation_is_identity():
    x = batch()
    aug = BatchAugment()
    assert aug.is_identity
    assert aug(x) is x


def test_flip_always_mirrors_exactly():
    x = batch()
    assert torch.allclose(BatchAugment(hflip=1.0)(x), x.flip(-1), atol=1e-2)


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    x = batch(4)
    first = torch.tensor([True, False, True, False])
    even, odd = alternating_flip(x, first, 0), alternating_flip(x, first, 1)
    assert torch.equal(even[first], x[first].flip(-1)) and torch.equal(even[~first], x[~first])
    assert torch.equal(odd[first], x[first]) and torch.equal(odd[~first], x[~first].flip(-1))
    assert torch.equal(alternating_flip(x, first, 2), even)


def test_pad_fills_zeros_the_edge_or_the_mirror_image():
    row = torch.tensor([[[[1.0, 2.0, 3.0]]]]).expand(1, 1, 3, 3)
    assert pad(row, 2)[0, 0, 2].tolist() == [0, 0, 1, 2, 3, 0, 0]
    assert pad(row, 2, "border")[0, 0, 0].tolist() == [1, 1, 1, 2, 3, 3, 3]
    # Mirrored about the edge, the edge pixel included (grid_sample's reflection, not F.pad's "reflect").
    assert pad(row, 2, "reflection")[0, 0, 0].tolist() == [2, 1, 1, 2, 3, 3, 2]
    with pytest.raises(ValueError, match="got 4"):
        pad(row, 4, "reflection")
    with pytest.raises(ValueError, match="got 'mirror'"):
        pad(row, 1, "mirror")


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_pad_crop_is_an_integer_shift_filled_as_padding_says(padding):
    torch.manual_seed(0)
    x = batch(32)
    y = BatchAugment(pad_crop=4, padding=padding)(x)
    shifts = set()
    for img, out in zip(x, y):
        # Find the shift that reproduces the output exactly.
        padded = pad(img[None], 4, padding)[0]
        matches = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if torch.allclose(padded[:, 4 + dy : 4 + dy + 48, 4 + dx : 4 + dx + 48], out, atol=1e-2)
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 10  # the shift is drawn per image
    with pytest.raises(
        ValueError, match="aug.padding must be one of zeros, border, reflection, got 'mirror'"
    ):
        BatchAugment(pad_crop=4, padding="mirror")


def test_strong_augmentation_keeps_shape_dtype_range_and_varies_per_image():
    torch.manual_seed(0)
    x = batch(16)
    same = x[:1].expand(16, -1, -1, -1).clone()
    aug = BatchAugment(hflip=0.5, rotation=30, pad_crop=4, brightness=0.1, contrast=0.1)
    y = aug(same)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 255
    # Sixteen copies of one image come out as sixteen different images.
    flat = y.flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(math.inf).min() > 1.0


def test_photometric_jitter_stays_within_bounds():
    torch.manual_seed(0)
    x = torch.full((64, 1, 48, 48), 100.0)
    y = BatchAugment(brightness=0.1)(x)
    means = y.mean(dim=(1, 2, 3))
    assert means.min() >= 90 - 1e-3 and means.max() <= 110 + 1e-3
    assert means.std() > 2  # really jittered


def test_photometric_jitter_is_seeded_by_its_generator():
    x = batch(16)
    jittered = random_photometric(x, 0.2, 0.2, generator=torch.Generator().manual_seed(0))
    again = random_photometric(x, 0.2, 0.2, generator=torch.Generator().manual_seed(0))
    other = random_photometric(x, 0.2, 0.2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(jittered, again) and not torch.equal(jittered, other)


def test_photometric_jitter_draws_on_the_cpu_whatever_the_device():
    """A seed gives the same jitter on any device: its factors come from torch's CPU generator, as the
    geometric ones do, never from the device's own (a meta batch stands in for a GPU one here)."""
    aug = BatchAugment(brightness=0.1, contrast=0.1)
    states = []
    for device in ("cpu", "meta"):
        torch.manual_seed(0)
        aug(batch().to(device))
        states.append(torch.get_rng_state())
    assert torch.equal(*states)


def test_random_erase_fills_one_rectangle_per_image_with_its_mean():
    x = batch(64)
    erased = random_erase(x, p=1.0, generator=torch.Generator().manual_seed(0))
    changed = erased != x
    means = x.mean(dim=(1, 2, 3))
    for i in range(len(x)):
        rows = changed[i, 0].any(dim=1).nonzero().flatten()
        cols = changed[i, 0].any(dim=0).nonzero().flatten()
        box = erased[i, 0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        # A filled rectangle: every pixel of the bounding box of the change holds the image's mean.
        assert torch.allclose(box, means[i].expand_as(box))
        assert 0.02 * 48 * 48 * 0.5 <= box.numel() <= 0.25 * 48 * 48 * 1.5
    # The same generator state gives the same rectangles; p=0 erases nothing.
    again = random_erase(x, p=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(erased, again)
    assert torch.equal(random_erase(x, p=0.0), x)


def test_random_erase_probability_is_per_image():
    x = batch(400)
    hit = (random_erase(x, p=0.5, generator=torch.Generator().manual_seed(1)) != x).flatten(1).any(dim=1)
    assert 0.4 < hit.float().mean().item() < 0.6


@pytest.mark.parametrize("alphas", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}])
def test_label_mixing_mixes_labels_in_the_proportions_of_the_pixels(alphas):
    # Face i is constant at 30 * i with label i: a mixed face's mean pixel is its soft label's mean value.
    torch.manual_seed(0)
    values = 30.0 * torch.arange(7)
    images = values.reshape(7, 1, 1, 1).expand(7, 1, 48, 48).clone()
    mix = label_mixing(**alphas)
    mixed_any = False
    for _ in range(8):
        out, soft = mix(images, torch.arange(7))
        assert soft.shape == (7, 7) and torch.allclose(soft.sum(dim=1), torch.ones(7))
        assert torch.allclose(out.mean(dim=(1, 2, 3)), soft @ values, atol=1e-3)
        # Each face mixes with one other face at most.
        assert ((soft > 0).sum(dim=1) <= 2).all()
        mixed_any |= bool((soft.max(dim=1).values < 1).any())
    assert mixed_any


def test_label_mixing_is_off_without_alphas():
    assert label_mixing() is None


def test_progressive_size_grows_from_start_to_full_in_steps_then_stays():
    sizes = [progressive_size(p / 20, 48, start=32, until=0.5) for p in range(21)]
    assert sizes[0] == 32 and sizes[5] == 40 and sizes[9] == 44  # 32 + 16 x 0.45 / 0.5 = 46.4, down to 44
    assert sizes[10:] == [48] * 11
    assert sizes == sorted(sizes) and all(s % 4 == 0 for s in sizes)
    assert progressive_size(0.0, 48, start=48, until=0.5) == 48
    assert progressive_size(0.0, 48, start=30, until=0.5) == 30  # a start off the 4-pixel grid is kept


def test_resize_averages_pixels_when_shrinking_and_leaves_full_size_batches_alone():
    images = torch.zeros(2, 1, 48, 48)
    images[:, :, :, ::2] = 255.0  # one-pixel stripes: a sampler that skips pixels would see one colour
    small = resize(images, 24)
    assert small.shape == (2, 1, 24, 24)
    inner = small[..., 1:-1]  # the edge columns weigh the pixels inside the face only
    assert torch.allclose(inner, torch.full_like(inner, 127.5), atol=1e-3)
    assert resize(images, 48) is images
    # Growing interpolates: values stay within the stripes' range, and a uniform face stays uniform.
    big = resize(images, 96)
    assert big.shape == (2, 1, 96, 96) and big.min() >= 0 and big.max() <= 255 and big.std() > 50
    torch.testing.assert_close(resize(torch.full((1, 1, 48, 48), 7.0), 52), torch.full((1, 1, 52, 52), 7.0))

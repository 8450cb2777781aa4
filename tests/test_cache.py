import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer.data import DataError, cache, read_dataset, readers
from fer.data.errors import DataWarning
from fer.data.readers import read_with_status


def write_csv(path: Path, labels: list[int], seed: int = 0) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), 48, 48), dtype=np.uint8)
    rows = [f"{k},{' '.join(map(str, im.ravel()))},Training" for k, im in zip(labels, images, strict=True)]
    path.write_text("\n".join(["emotion,pixels,Usage", *rows]) + "\n")
    return images


def no_parse(*args, **kwargs):
    raise AssertionError("parsed although the cache should have answered")


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "fer2013.csv"
    return path, write_csv(path, [0, 3, 6])


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_second_read_is_served_from_cache(csv, tmp_path, monkeypatch):
    path, images = csv
    first, status = read_with_status(path, cache_dir=tmp_path / "c")
    assert (
        status == "miss" and len(entries(tmp_path / "c")) == 1 and entries(tmp_path / "c")[0].endswith(".npz")
    )
    monkeypatch.setattr(readers, "_parse_pixels", no_parse)
    second, status = read_with_status(path, cache_dir=tmp_path / "c")
    assert status == "hit"
    np.testing.assert_array_equal(second.images, images)
    for name in ("labels", "split", "ids"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert (second.layout, second.source, second.skipped) == (first.layout, first.source, 0)


def test_changed_file_is_parsed_again(csv, tmp_path, monkeypatch):
    path, _ = csv
    read_dataset(path, cache_dir=tmp_path / "c")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touch
    assert read_with_status(path, cache_dir=tmp_path / "c")[1] == "miss"
    images = write_csv(path, [5, 5, 5, 5], seed=1)
    got, status = read_with_status(path, cache_dir=tmp_path / "c")
    assert status == "miss" and list(got.labels) == [5, 5, 5, 5]
    np.testing.assert_array_equal(got.images, images)
    monkeypatch.setattr(readers, "_parse_pixels", no_parse)
    assert read_with_status(path, cache_dir=tmp_path / "c")[1] == "hit"


def test_on_bad_row_is_part_of_the_key(tmp_path):
    path = tmp_path / "x.csv"
    write_csv(path, [0, 9, 1])
    with pytest.warns(DataWarning, match="skipped 1 bad rows"):
        assert read_dataset(path, on_bad_row="skip", cache_dir=tmp_path / "c").skipped == 1
    with pytest.warns(DataWarning, match="skipped 1 bad rows"):  # replayed from the cache entry
        assert read_with_status(path, on_bad_row="skip", cache_dir=tmp_path / "c")[1] == "hit"
    with pytest.raises(DataError, match="line 3: label '9'"):
        read_dataset(path, cache_dir=tmp_path / "c")


def test_failed_read_caches_nothing(tmp_path):
    path = tmp_path / "x.csv"
    write_csv(path, [0, 7])
    with pytest.raises(DataError):
        read_dataset(path, cache_dir=tmp_path / "c")
    assert entries(tmp_path / "c") == []


def test_interrupted_write_leaves_no_entry(csv, tmp_path, monkeypatch):
    path, images = csv

    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half an entry")
        raise OSError("disk full")

    monkeypatch.setattr(cache.np, "savez", crash)
    with pytest.warns(UserWarning, match="could not write a cache entry .*disk full"):
        got, status = read_with_status(path, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(got.images, images)
    assert status == "miss" and entries(tmp_path / "c") == []
    monkeypatch.undo()
    assert read_with_status(path, cache_dir=tmp_path / "c")[1] == "miss"
    assert read_with_status(path, cache_dir=tmp_path / "c")[1] == "hit"


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"garbage"),
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        lambda p: np.savez(
            p,
            images=np.zeros((3, 10, 10), np.uint8),
            labels=np.zeros(3, np.int64),
            split=np.array(["a"] * 3),
            ids=np.array(["a"] * 3),
            layout=np.array("x"),
            source=np.array("x"),
            skipped=np.array(0),
            warnings=np.array([], dtype=str),
        ),
    ],
    ids=["garbage", "truncated", "wrong-shape"],
)
def test_damaged_entry_is_discarded_and_rewritten(csv, tmp_path, damage):
    path, images = csv
    read_dataset(path, cache_dir=tmp_path / "c")
    (entry,) = (tmp_path / "c").iterdir()
    damage(entry)
    with pytest.warns(UserWarning, match="discarding unreadable cache entry"):
        got, status = read_with_status(path, cache_dir=tmp_path / "c")
    assert status == "miss"
    np.testing.assert_array_equal(got.images, images)
    assert read_with_status(path, cache_dir=tmp_path / "c")[1] == "hit"


def test_cache_location(csv, tmp_path, monkeypatch):
    path, _ = csv
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "env"))
    assert read_with_status(path)[1] == "miss" and len(entries(tmp_path / "env")) == 1
    assert read_with_status(path, cache_dir=False)[1] == "off"
    assert len(entries(tmp_path / "env")) == 1
    monkeypatch.delenv("FER_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home/.cache/fer"
    assert cache.cache_root(False) is None and cache.cache_root("~/x") == tmp_path / "home/x"


def test_deleting_the_cache_dir_is_safe(csv, tmp_path):
    path, images = csv
    read_dataset(path, cache_dir=tmp_path / "c")
    for entry in (tmp_path / "c").iterdir():
        entry.unlink()
    (tmp_path / "c").rmdir()
    got, status = read_with_status(path, cache_dir=tmp_path / "c")
    assert status == "miss"
    np.testing.assert_array_equal(got.images, images)


def test_image_folder_key_covers_every_file(tmp_path, monkeypatch):
    root = tmp_path / "fer"
    (root / "train/happy").mkdir(parents=True)
    Image.new("RGB", (48, 48), (10, 20, 30)).save(root / "train/happy/a.png")
    with pytest.warns(DataWarning, match="converted 1 images"):
        assert read_with_status(root, cache_dir=tmp_path / "c")[1] == "miss"
    with pytest.warns(DataWarning, match="converted 1 images"):  # the warning comes back on a hit
        assert read_with_status(root, cache_dir=tmp_path / "c")[1] == "hit"
    Image.new("L", (48, 48), 7).save(root / "train/happy/b.png")
    with pytest.warns(DataWarning, match="converted 1 images"):
        got, status = read_with_status(root, cache_dir=tmp_path / "c")
    assert status == "miss" and len(got) == 2 and (got.images[1] == 7).all()


def test_a_synthetic_set_is_drawn_once_and_drawn_afresh_when_the_generator_changes(tmp_path, monkeypatch):
    address = "synthetic://40?seed=3"
    first, status = read_with_status(address, cache_dir=tmp_path / "c")
    assert status == "miss"
    monkeypatch.setattr(readers.synthetic, "generate", no_parse)
    again, status = read_with_status(address, cache_dir=tmp_path / "c")
    assert status == "hit" and np.array_equal(again.images, first.images)
    assert np.array_equal(again.masks, first.masks) and again.source == address
    # another address, or the same one after the generator's source changed, is drawn again
    generator = tmp_path / "synthetic.py"
    generator.write_text("# the generator, edited")
    monkeypatch.setattr(readers.synthetic, "__file__", str(generator))
    with pytest.raises(AssertionError, match="parsed although"):
        read_with_status(address, cache_dir=tmp_path / "c")

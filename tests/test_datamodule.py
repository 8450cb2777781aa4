import gzip
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fer.data import datamodule, read_dataset
from fer.data.datamodule import FERDataModule, stratified_holdout
from fer.data.errors import DataError
from fer.schedules import BudgetedLR


def write_fer2013(path, rows):
    """rows: (label, pixel value, usage): each image is constant so statistics are easy to check."""
    lines = ["emotion,pixels,Usage"]
    lines += [f"{label},{' '.join([str(value)] * 2304)},{usage}" for label, value, usage in rows]
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def csv_path(tmp_path):
    rows = [(i % 7, 10, "Training") for i in range(70)]
    rows += [(i % 7, 200, "PublicTest") for i in range(14)]
    rows += [(i % 7, 250, "PrivateTest") for i in range(7)]
    return write_fer2013(tmp_path / "fer2013.csv.gz", rows)


def make(path, tmp_path, **kwargs):
    dm = FERDataModule(path, cache_dir=str(tmp_path / "cache"), **kwargs)
    dm.setup("fit")
    return dm


def test_splits_by_name_and_batches_as_float_pixels(csv_path, tmp_path):
    dm = make(csv_path, tmp_path, batch_size=32)
    assert {k: len(v) for k, v in dm.faces.items()} == {"train": 70, "val": 14, "test": 7}
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 48, 48) and images.dtype == torch.uint8
    images, labels = dm.on_after_batch_transfer([images, labels], 0)
    assert images.dtype == torch.float32 and images.max() == 10


def test_standardize_statistics_come_from_train_only(csv_path, tmp_path):
    dm = make(csv_path, tmp_path, normalization="standardize")
    # Train images are all 10; val (200) and test (250) must not leak in.
    assert dm.normalization_args == {"mode": "standardize", "mean": 10.0, "std": 0.0}


@pytest.fixture
def distinct_path(tmp_path):
    """70 Training faces, no two alike, and 14 PublicTest faces."""
    rows = [(i % 7, i, "Training") for i in range(70)] + [(i % 7, 200, "PublicTest") for i in range(14)]
    return write_fer2013(tmp_path / "distinct.csv.gz", rows)


def test_val_fraction_is_stratified_and_seeded(distinct_path, tmp_path):
    a = make(distinct_path, tmp_path, splits={"train": "Training", "val": None}, val_fraction=0.2)
    b = make(distinct_path, tmp_path, splits={"train": "Training", "val": None}, val_fraction=0.2)
    assert len(a.faces["val"]) == 14 and len(a.faces["train"]) == 56
    assert np.bincount(a.faces["val"].labels).tolist() == [2] * 7
    assert np.array_equal(a.faces["val"].ids, b.faces["val"].ids)
    c = make(
        distinct_path, tmp_path, splits={"train": "Training", "val": None}, val_fraction=0.2, split_seed=1
    )
    assert not np.array_equal(a.faces["val"].ids, c.faces["val"].ids)
    assert not set(a.faces["val"].ids) & set(a.faces["train"].ids)


def test_held_out_faces_that_repeat_a_train_face_train_instead(tmp_path):
    # Faces 0-9 appear twice (as rows i and i + 35), faces 10-34 once.
    rows = [(i % 7, i % 35, "Training") for i in range(70)] + [(0, 200, "PublicTest")]
    path = write_fer2013(tmp_path / "repeats.csv.gz", rows)
    splits = {"train": "Training", "val": None, "test": "PublicTest"}
    dm = make(path, tmp_path, splits=splits, val_fraction=0.5)
    held = stratified_holdout(np.arange(70) % 7, 0.5, seed=0)
    values = np.arange(70) % 35
    repeats = held & np.isin(values, values[~held])
    assert 0 < repeats.sum() < held.sum()
    assert sorted(dm.faces["val"].images[:, 0, 0]) == sorted(values[held & ~repeats])
    assert not set(dm.faces["val"].images[:, 0, 0]) & set(dm.faces["train"].images[:, 0, 0])
    assert len(dm.faces["train"]) == 70 - (held & ~repeats).sum()


def test_a_val_split_of_nothing_but_repeats_is_an_error(csv_path, tmp_path):
    with pytest.raises(
        DataError, match=r"data.val_fraction=0.2 leaves no validation faces .* each of the 14"
    ):
        make(csv_path, tmp_path, splits={"train": "Training", "val": None}, val_fraction=0.2)


def test_holdout_keeps_rare_classes():
    labels = np.array([0] * 100 + [1] * 3)
    held = stratified_holdout(labels, 0.1, seed=0)
    assert held[:100].sum() == 10 and held[100:].sum() == 1


def test_missing_split_says_which_override_to_use(tmp_path):
    path = write_fer2013(tmp_path / "dev.csv.gz", [(0, 1, "Training"), (1, 2, "PublicTest")])
    with pytest.raises(DataError) as err:
        make(path, tmp_path)
    message = str(err.value)
    assert "data.splits.test='PrivateTest'" in message
    assert "PublicTest=1, Training=1" in message
    assert "data.splits.test=PublicTest|Training, or data.splits.test=null" in message


def test_val_fraction_and_val_split_conflict(csv_path, tmp_path):
    with pytest.raises(DataError, match="data.splits.val=null"):
        FERDataModule(csv_path, val_fraction=0.1)


def test_unknown_split_key_and_normalization(csv_path):
    with pytest.raises(DataError, match="unknown key"):
        FERDataModule(csv_path, splits={"training": "Training"})
    with pytest.raises(DataError, match="normalization='zscore'"):
        FERDataModule(csv_path, normalization="zscore")


def test_class_counts_and_weights(tmp_path):
    rows = [(3, 5, "Training")] * 30 + [(1, 5, "Training")] * 3 + [(0, 5, "Training")] * 6
    path = write_fer2013(tmp_path / "imb.csv.gz", rows)
    dm = make(path, tmp_path, splits={"train": "Training"})
    assert dm.class_counts == [6, 3, 0, 30, 0, 0, 0]
    weights = np.array(dm.class_weights)
    assert weights[[2, 4, 5, 6]].tolist() == [0, 0, 0, 0]
    # Inverse frequency: Disgust (3 images) weighs ten times Happy (30).
    assert weights[1] / weights[3] == pytest.approx(10)
    assert weights[[0, 1, 3]].mean() == pytest.approx(1)


def test_augmentation_only_on_train_batches(csv_path, tmp_path):
    dm = make(csv_path, tmp_path, aug={"hflip": 1.0, "pad_crop": 4})
    images = torch.arange(48 * 48, dtype=torch.uint8).reshape(1, 1, 48, 48).repeat(4, 1, 1, 1)
    labels = torch.zeros(4, dtype=torch.long)
    dm.trainer = SimpleNamespace(training=False)
    out, _ = dm.on_after_batch_transfer([images, labels], 0)
    assert torch.equal(out, images.float())
    dm.trainer = SimpleNamespace(training=True)
    out, _ = dm.on_after_batch_transfer([images, labels], 0)
    assert not torch.equal(out, images.float())


def test_progressive_resizing_shrinks_train_batches_by_the_fits_progress(csv_path, tmp_path):
    dm = make(csv_path, tmp_path, aug={"progressive_start": 32, "progressive_until": 0.5})
    images = torch.zeros(4, 1, 48, 48, dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.long)
    schedule = BudgetedLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), total_steps=100)
    dm.trainer = SimpleNamespace(training=True, lr_scheduler_configs=[SimpleNamespace(scheduler=schedule)])
    sizes = []
    for steps in (0, 25, 50, 90):
        schedule.last_epoch = steps
        sizes.append(dm.on_after_batch_transfer([images, labels], 0)[0].shape[-1])
    assert sizes == [32, 40, 48, 48]
    # Without a budget schedule the progress is the steps taken over the steps the trainer expects.
    dm.trainer = SimpleNamespace(
        training=True, lr_scheduler_configs=[], global_step=10, estimated_stepping_batches=40
    )
    assert dm.on_after_batch_transfer([images, labels], 0)[0].shape[-1] == 40
    dm.trainer = SimpleNamespace(training=False)
    assert dm.on_after_batch_transfer([images, labels], 0)[0].shape[-1] == 48  # val and test: full size


def test_stop_at_leaves_train_batches_unaugmented_after_that_fraction_of_the_fit(csv_path, tmp_path):
    dm = make(csv_path, tmp_path, aug={"hflip": 1.0, "pad_crop": 4, "mixup": 1.0, "stop_at": 0.75})
    images = torch.arange(48 * 48, dtype=torch.uint8).reshape(1, 1, 48, 48).repeat(4, 1, 1, 1)
    labels = torch.tensor([0, 1, 2, 3])
    schedule = BudgetedLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), total_steps=100)
    dm.trainer = SimpleNamespace(training=True, lr_scheduler_configs=[SimpleNamespace(scheduler=schedule)])
    images_changed, labels_mixed = [], []
    for steps in (0, 74, 75, 99):
        schedule.last_epoch = steps
        out, out_labels = dm.on_after_batch_transfer([images, labels], 0)
        images_changed.append(not torch.equal(out, images.float()))
        labels_mixed.append(not torch.equal(out_labels, labels))
    assert images_changed == [True, True, False, False]
    assert labels_mixed == [True, True, False, False]  # MixUp stops with the rest


def test_alternate_flip_mirrors_the_same_faces_in_alternate_epochs(csv_path, tmp_path):
    # A face that is not its own mirror image, so a flip shows.
    torch.manual_seed(0)
    dm = make(csv_path, tmp_path, batch_size=70, aug={"alternate_flip": True})
    assert 20 < int(dm.flipped_first.sum()) < 50
    face = torch.arange(48, dtype=torch.uint8).repeat(48, 1)
    dm.faces["train"].images[:] = face.numpy()
    images, labels, flipped_first = next(iter(dm.train_dataloader()))
    assert int(flipped_first.sum()) == int(dm.flipped_first.sum())  # every face's flag, shuffled with it
    outputs = []
    for epoch in range(3):
        dm.trainer = SimpleNamespace(training=True, current_epoch=epoch)
        out, out_labels = dm.on_after_batch_transfer([images, labels, flipped_first], 0)
        assert torch.equal(out_labels, labels)
        outputs.append(out[:, 0, 0, 0] == 47)  # mirrored: the first column holds the last value
    assert torch.equal(outputs[0], flipped_first)
    assert torch.equal(outputs[1], ~outputs[0]) and torch.equal(outputs[2], outputs[0])
    # Validation batches carry no flags and are never flipped.
    val_images, val_labels = next(iter(dm.val_dataloader()))
    dm.trainer = SimpleNamespace(training=False, current_epoch=1)
    assert torch.equal(dm.on_after_batch_transfer([val_images, val_labels], 0)[0], val_images.float())


def test_alternate_flip_with_a_random_flip_is_an_error(csv_path, tmp_path):
    with pytest.raises(DataError, match="aug.alternate_flip=true and aug.hflip=0.5"):
        make(csv_path, tmp_path, aug={"alternate_flip": True, "hflip": 0.5})


def test_mixup_gives_soft_labels_on_train_batches_only(csv_path, tmp_path):
    dm = make(csv_path, tmp_path, aug={"hflip": 0.5, "mixup": 0.4})
    images = torch.zeros(4, 1, 48, 48, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3])
    dm.trainer = SimpleNamespace(training=False)
    assert torch.equal(dm.on_after_batch_transfer([images, labels], 0)[1], labels)
    dm.trainer = SimpleNamespace(training=True)
    _, soft = dm.on_after_batch_transfer([images, labels], 0)
    assert soft.shape == (4, 7) and torch.allclose(soft.sum(dim=1), torch.ones(4))


def test_unlabelled_rows_only_allowed_for_predict(tmp_path):
    (tmp_path / "course").mkdir()
    face = [" ".join([str(i)] * 2304) for i in range(14)]  # no two alike, or none could validate
    (tmp_path / "course/train.csv").write_text(
        "label,feature\n" + "".join(f"{i % 7},{face[i]}\n" for i in range(14))
    )
    (tmp_path / "course/test.csv").write_text("id,feature\n" + "".join(f"{i},{face[i]}\n" for i in range(5)))
    dm = make(
        str(tmp_path / "course"),
        tmp_path,
        splits={"train": "Training", "val": None, "predict": "test"},
        val_fraction=0.5,
    )
    assert len(dm.faces["predict"]) == 5 and (dm.faces["predict"].labels == -1).all()
    with pytest.raises(DataError, match="unlabelled"):
        make(
            str(tmp_path / "course"),
            tmp_path,
            splits={"train": "Training", "val": None, "test": "test"},
            val_fraction=0.5,
        )


def test_a_fit_then_a_test_read_the_data_once(csv_path, tmp_path, monkeypatch):
    reads = []
    monkeypatch.setattr(datamodule, "read_dataset", lambda *a, **k: reads.append(a) or read_dataset(*a, **k))
    dm = FERDataModule(csv_path, cache_dir=str(tmp_path / "cache"))
    for stage in ("fit", "test"):  # what Lightning calls for trainer.fit, then trainer.test
        dm.prepare_data()
        dm.setup(stage)
    assert len(reads) == 1 and len(dm.faces["train"]) == 70

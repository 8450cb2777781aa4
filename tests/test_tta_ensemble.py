"""Test-time augmentation (fer/tta.py) in the test stage and analyze.py, and ensembles (fer/ensemble.py)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from fer.analysis.run import run as analyze
from fer.analysis.select import load_model
from fer.data.datamodule import FERDataModule
from fer.predict import predict_proba
from fer.train import run as train
from fer.tta import tta_log_probs, tta_views
from tests.conftest import compose_config, damaged_copy, quick_run

# 300 synthetic faces: 30 of them in PrivateTest, the test stage.
TINY = [
    *quick_run(300),
    "trainer.max_epochs=2",
    "data.batch_size=32",
]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny runs that differ in architecture and normalization: cnn4 tested with flip TTA (weights
    and batches in channels_last), and a narrow vggnet with per-image normalization."""
    root = tmp_path_factory.mktemp("tta")
    runs = {"cnn4": root / "cnn4", "vggnet": root / "vggnet"}
    train(compose_config("train", [*TINY, "tta=flip", "runtime.channels_last=true"], runs["cnn4"]))
    overrides = [
        *TINY,
        "model=vggnet",
        "model.layers=[8,8,M,16,16,M,32,32,M,64,64,M]",
        "data.normalization=per_image",
    ]
    train(compose_config("train", overrides, runs["vggnet"]))
    return runs


def test_views_shift_with_zero_fill_and_mirror():
    images = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)
    views = tta_views(images, flip=True, shift=1)
    assert len(views) == 10 and all(v.shape == images.shape for v in views)
    torch.testing.assert_close(views[0], images)
    # Second view: shifted one pixel down and right (the top-left crop of the face padded by 1).
    torch.testing.assert_close(views[1][..., 1:, 1:], images[..., :-1, :-1])
    assert (views[1][..., 0, :] == 0).all() and (views[1][..., :, 0] == 0).all()
    # Last view: shifted up and left, then mirrored.
    torch.testing.assert_close(views[9].flip(-1)[..., :-1, :-1], images[..., 1:, 1:])
    torch.testing.assert_close(views[5], images.flip(-1))


def test_flip_tta_is_the_mean_of_the_model_on_the_faces_and_their_mirrors():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 7)).eval()
    images = torch.rand(5, 1, 48, 48)
    with torch.no_grad():
        expected = (model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2
        got = tta_log_probs(model, images, {"flip": True}).exp()
        plain = tta_log_probs(model, images, {"flip": False}).exp()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(plain, model(images).softmax(1).detach())
    assert not torch.allclose(got, plain, atol=1e-3)  # the mirror image does change the answer
    torch.testing.assert_close(predict_proba(model, images[:, 0], batch_size=2, tta={"flip": True}), expected)


def test_test_stage_records_tta_and_its_gain(runs):
    metrics = json.loads((runs["cnn4"] / "metrics.json").read_text())
    assert metrics["tta"] == {"name": "flip", "flip": True, "shift": 0, "views": 2}
    assert {"test/acc", "test/acc_no_tta"} <= set(metrics["test"])
    plain = json.loads((runs["vggnet"] / "metrics.json").read_text())
    assert plain["tta"]["views"] == 1 and "test/acc_no_tta" not in plain["test"]

    # The test stage scored the mean over the two views: recompute it from the checkpoint.
    model = load_model(runs["cnn4"] / "checkpoints/best.ckpt", "cpu")
    datamodule = FERDataModule("synthetic://300?seed=0", cache_dir=False)
    datamodule.setup()
    faces = datamodule.faces["test"]
    labels = torch.from_numpy(faces.labels)
    for tta, key in (({"flip": True}, "test/acc"), (None, "test/acc_no_tta")):
        preds = predict_proba(model, faces.images, tta=tta).argmax(1)
        assert (preds == labels).float().mean().item() == pytest.approx(metrics["test"][key])


def test_analyze_uses_the_runs_tta_unless_told(runs, tmp_path):
    metrics = json.loads((runs["cnn4"] / "metrics.json").read_text())
    for overrides, name, key in (([], "flip", "test/acc"), (["tta=none"], "none", "test/acc_no_tta")):
        out = tmp_path / name
        analyze(
            compose_config(
                "analyze", [f"run={runs['cnn4']}", f"out={out}", "analysis.interpret=false", *overrides], out
            )
        )
        analysis = json.loads((out / "analysis.json").read_text())
        assert analysis["tta"]["name"] == name
        assert analysis["metrics"]["accuracy"] == pytest.approx(metrics["test"][key])


def test_ensemble_of_two_runs_averages_their_probabilities(runs, tmp_path):
    out = tmp_path / "ens"
    members = f"ensemble=[{runs['cnn4']},{runs['vggnet'] / 'checkpoints/best.ckpt'}]"
    analyze(compose_config("analyze", [members, f"out={out}", "tta=flip"], out))
    assert sorted(p.name for p in out.iterdir()) == ["ensemble.json", "predictions.csv", "scores.csv"]
    report = json.loads((out / "ensemble.json").read_text())
    assert [m["model"] for m in report["members"]] == ["CNN4", "VGG"]
    assert [m["normalization"] for m in report["members"]] == ["standardize", "per_image"]

    datamodule = FERDataModule("synthetic://300?seed=0", cache_dir=False)
    datamodule.setup()
    faces = datamodule.faces["test"]
    member_probs = [
        predict_proba(
            load_model(runs[name] / "checkpoints/best.ckpt", "cpu"), faces.images, tta={"flip": True}
        )
        for name in ("cnn4", "vggnet")
    ]
    expected = (member_probs[0] + member_probs[1]) / 2
    rows = read_csv(out / "predictions.csv")
    assert [r["id"] for r in rows] == list(faces.ids)
    got = torch.tensor([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    labels = torch.from_numpy(faces.labels)
    accuracy = (expected.argmax(1) == labels).float().mean().item()
    assert report["ensemble"]["accuracy"] == pytest.approx(accuracy)
    for member, probs in zip(report["members"], member_probs):
        assert member["accuracy"] == pytest.approx((probs.argmax(1) == labels).float().mean().item())
    scores = read_csv(out / "scores.csv")
    assert [r["member"] for r in scores] == ["0", "1", "ensemble"]
    assert float(scores[2]["accuracy"]) == pytest.approx(accuracy)


def test_ensemble_of_a_sweep_folder_predicts_a_course_folder(runs, tmp_path):
    # A sweep folder: job folders with Hydra's .hydra/ and their checkpoints.
    sweep = tmp_path / "sweep"
    for job, name in enumerate(runs):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / "checkpoints").mkdir()
        (sweep / str(job) / "checkpoints/best.ckpt").symlink_to(runs[name] / "checkpoints/best.ckpt")
    datamodule = FERDataModule("synthetic://300?seed=0", cache_dir=False)
    datamodule.setup()
    faces = datamodule.faces["test"]
    course = tmp_path / "course"
    course.mkdir()
    pixels = [" ".join(map(str, image.ravel())) for image in faces.images[:6]]
    (course / "train.csv").write_text(f"label,feature\n{faces.labels[0]},{pixels[0]}\n")
    (course / "test.csv").write_text(
        "id,feature\n" + "".join(f"{70 + i},{p}\n" for i, p in enumerate(pixels))
    )
    out = tmp_path / "ens"
    analyze(compose_config("analyze", [f"ensemble=[{sweep}]", f"predict={course}", f"out={out}"], out))
    report = json.loads((out / "ensemble.json").read_text())
    assert [Path(m["checkpoint"]).parent.parent.name for m in report["members"]] == ["0", "1"]
    assert [m["tta"]["name"] for m in report["members"]] == ["flip", "none"]  # each member's own run's TTA
    assert "accuracy" not in report["members"][0] and report["ensemble"] == {}
    rows = read_csv(out / "predictions.csv")
    assert [r["id"] for r in rows] == [str(70 + i) for i in range(6)]
    assert read_csv(out / "submission.csv") == [{"id": r["id"], "label": r["pred_label"]} for r in rows]
    scores = read_csv(out / "scores.csv")
    assert list(scores[0]) == ["member", "checkpoint", "model", "normalization", "tta"]
    assert [r["tta"] for r in scores] == ["flip (2 views, shift 0)", "none (1 view, shift 0)", ""]
    # The same folder reused to score a labelled split: the other faces' submission does not stay behind.
    analyze(compose_config("analyze", [f"ensemble=[{sweep}]", "tta=crops", "tta.shift=4", f"out={out}"], out))
    assert not (out / "submission.csv").exists()
    assert [m["tta"]["shift"] for m in json.loads((out / "ensemble.json").read_text())["members"]] == [4, 4]


def test_ensemble_names_what_it_cannot_use(runs, tmp_path):
    # Errors name the member, by its place and entry, not an option (run=, ckpt=) the command never used.
    nowhere = tmp_path / "nowhere"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"ensemble member 1 ({nowhere}): no checkpoint file")
    ):
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{nowhere}]"], tmp_path))
    no_best = tmp_path / "no_best"
    shutil.copytree(runs["cnn4"], no_best)
    (no_best / "checkpoints/best.ckpt").rename(no_best / "checkpoints/epoch0.ckpt")
    with pytest.raises(FileNotFoundError) as error:
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{no_best}]"], tmp_path))
    assert str(error.value).startswith(f"ensemble member 1 ({no_best}): no {no_best}/checkpoints/best.ckpt")
    assert str(error.value).endswith(
        f"it has epoch0.ckpt, last.ckpt: name {no_best}/checkpoints/epoch0.ckpt in ensemble= instead"
    )
    # A member whose best.ckpt changed since its run recorded the file's sha256.
    damaged = damaged_copy(runs["cnn4"], tmp_path / "damaged")
    with pytest.raises(ValueError, match=re.escape(f"ensemble member 1 ({damaged}): ") + ".*: sha256 "):
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{damaged}]"], tmp_path))
    with pytest.raises(ValueError, match="named twice"):
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{runs['cnn4']}]"], tmp_path))
    # A member whose classes come in another order cannot be averaged with the others.
    ckpt = torch.load(runs["vggnet"] / "checkpoints/best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["class_names"] = ckpt["hyper_parameters"]["class_names"][::-1]
    reordered = tmp_path / "reordered.ckpt"
    torch.save(ckpt, reordered)
    with pytest.raises(
        ValueError, match=re.escape(f"ensemble member 1 ({reordered}) has classes ['Neutral'")
    ):
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{reordered}]"], tmp_path))


def test_ensemble_notes_a_member_whose_split_differs(runs, tmp_path):
    # A member whose val split was carved with another seed: the faces scored may include its training faces.
    ckpt = torch.load(runs["vggnet"] / "checkpoints/best.ckpt", weights_only=True)
    ckpt["run_config"]["data"]["split_seed"] = 7
    other = tmp_path / "other_split.ckpt"
    torch.save(ckpt, other)
    out = tmp_path / "ens"
    analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{other}]", "split=val", f"out={out}"], out))
    (note,) = json.loads((out / "ensemble.json").read_text())["notes"]
    assert note.startswith(
        f"Ensemble member 1 ({other}) was trained with data.split_seed=7; the faces are those of"
    )
    assert "data.split_seed=0" in note


def test_ensemble_loads_every_member_before_evaluating_any(runs, tmp_path, monkeypatch):
    # A checkpoint whose model config this code no longer builds (a trunk token VGG does not know).
    ckpt = torch.load(runs["vggnet"] / "checkpoints/best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["model"]["layers"] = [8, "X"]
    broken = tmp_path / "broken.ckpt"
    torch.save(ckpt, broken)
    evaluated = []
    monkeypatch.setattr("fer.ensemble.predict_proba", lambda *args, **kwargs: evaluated.append(args))
    out = tmp_path / "ens"
    members = f"ensemble=[{runs['cnn4']},{broken}]"
    name = re.escape(f"ensemble member 1 ({broken})")
    with pytest.raises(ValueError, match=rf"(?s){name}: its model config does not build.*\[8, 'X'\]"):
        analyze(compose_config("analyze", [members, f"out={out}"], tmp_path / "run"))
    assert evaluated == [] and not out.exists()

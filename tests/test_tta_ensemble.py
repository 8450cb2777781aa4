"""Test-time augmentation (fer/tta.py) in the test stage and analyze.py, and ensembles (fer/ensemble.py)."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fer.analysis.run import run as analyze
from fer.analysis.select import load_model
from fer.callbacks.snapshots import Snapshots
from fer.data.datamodule import FERDataModule
from fer.data.faceset import FaceSet
from fer.data.transforms import resize
from fer.predict import predict_proba
from fer.rundir import RunDirError
from fer.schema import ConfigError
from fer.train import run as train
from fer.tta import checked_tta, chosen_tta, num_views, tta_label, tta_log_probs, tta_views, view_log_probs
from tests.conftest import compose_config, damaged_copy, failed_job, quick_run

# 300 synthetic faces: 30 of them in PrivateTest, the test stage.
TINY = [
    *quick_run(300),
    "trainer.max_epochs=2",
    "data.batch_size=32",
]


def tiny_test_faces() -> FaceSet:
    """The faces the test stage of a TINY run scores."""
    datamodule = FERDataModule("synthetic://300?seed=0", cache_dir=False)
    datamodule.setup()
    return datamodule.faces["test"]


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


def test_views_shift_with_the_fill_of_the_training_shift():
    images = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)
    views = tta_views(images, shift=1, padding="reflection")
    # Shifted one pixel down and right, the uncovered row and column mirrored: copies of the first ones.
    torch.testing.assert_close(views[1][..., 1:, 1:], images[..., :-1, :-1])
    torch.testing.assert_close(views[1][..., 0, 1:], images[..., 0, :-1])
    torch.testing.assert_close(views[1][..., 1:, 0], images[..., :-1, 0])
    border = tta_views(images, shift=2, padding="border")[4]  # shifted up and left, the last row repeated
    torch.testing.assert_close(border[..., 2:, :3], images[..., 3:, 2:].expand(-1, -1, 2, -1))
    crops = {"name": "crops", "flip": True, "shift": 2, "padding": "reflection"}
    assert tta_label(crops) == "crops (10 views, shift 2, reflection fill)"


def test_a_null_tta_padding_is_the_runs_aug_padding():
    crops = {"name": "crops", "flip": True, "shift": 2, "padding": None}
    mirror_run = {"aug": {"padding": "reflection"}, "tta": crops}
    # The command line's tta=crops, or the run's own TTA, fills its views as the run filled its shifts.
    assert chosen_tta(crops, mirror_run)["padding"] == "reflection"
    assert chosen_tta(None, mirror_run) == {**crops, "padding": "reflection", "views": 10}
    # A fill given by name wins; a run saved before aug.padding existed shifted with black.
    assert chosen_tta({**crops, "padding": "border"}, mirror_run)["padding"] == "border"
    assert chosen_tta(crops, {"aug": {"pad_crop": 4}})["padding"] == "zeros"
    assert chosen_tta(crops, None)["padding"] == "zeros"


def test_views_rescale_the_whole_face_and_mirror_it_too():
    images = torch.rand(2, 1, 48, 48)
    views = tta_views(images, flip=True, scales=[44, 52])
    assert [v.shape[-1] for v in views] == [48, 44, 52, 48, 44, 52]
    torch.testing.assert_close(views[1], resize(images, 44))
    torch.testing.assert_close(views[5], resize(images, 52).flip(-1))
    for tta in (
        {},
        {"flip": True},
        {"shift": 2},
        {"scales": [40]},
        {"flip": True, "shift": 2, "scales": [44, 52]},
    ):
        views = tta_views(images, tta.get("flip", False), tta.get("shift", 0), tta.get("scales", ()))
        assert num_views(tta) == len(views)
    multiscale = {"name": "multiscale", "flip": True, "shift": 2, "scales": [44, 52]}
    assert tta_label(multiscale) == "multiscale (14 views, shift 2, scales 44 52)"


def test_multiscale_tta_scores_the_test_stage_and_analyze_alike(runs, tmp_path):
    run = tmp_path / "run"
    # tta.padding is null: the views are filled as aug.padding fills the training shifts.
    overrides = [
        *TINY,
        "model=vggnet",
        "model.layers=[8,8,M,16,16,M,32,32,M,64,64,M]",
        "tta=multiscale",
        "aug.padding=border",
    ]
    train(compose_config("train", overrides, run))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tta"] == {
        "name": "multiscale",
        "flip": True,
        "shift": 2,
        "scales": [44, 52],
        "padding": "border",
        "views": 14,
    }
    # analyze.py with the run's TTA, or with tta=multiscale named again, scores what the test stage scored.
    for name, told in (("own", []), ("told", ["tta=multiscale"])):
        out = tmp_path / name
        analyze(
            compose_config("analyze", [f"run={run}", f"out={out}", "analysis.interpret=false", *told], out)
        )
        analysis = json.loads((out / "analysis.json").read_text())
        assert (analysis["tta"]["views"], analysis["tta"]["padding"]) == (14, "border")
        assert analysis["metrics"]["accuracy"] == pytest.approx(metrics["test"]["test/acc"])

    # A flatten head takes 48x48 faces only: train.py and analyze.py refuse the scales by name.
    refused = r"tta\.scales=44: the model fer\.models\.cnn4\.CNN4 cannot take 44x44 faces"
    with pytest.raises(ConfigError, match=refused):
        train(compose_config("train", [*TINY, "tta=multiscale"], tmp_path / "cnn4"))
    assert not (tmp_path / "cnn4" / "checkpoints").exists()
    with pytest.raises(ConfigError, match=rf"ckpt=\S+best\.ckpt: {refused}"):
        analyze(
            compose_config(
                "analyze",
                [f"run={runs['cnn4']}", "tta=multiscale", f"out={tmp_path / 'no'}"],
                tmp_path / "r2",
            )
        )
    assert not (tmp_path / "no").exists()


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


def test_predict_proba_autocasts_the_forward_passes_to_the_precision_asked():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(7)).eval()
    images = torch.rand(5, 48, 48) * 255
    fp32 = predict_proba(model, images, tta={"flip": True})
    bf16 = predict_proba(model, images, tta={"flip": True}, precision="bf16-mixed")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = tta_log_probs(model, images.unsqueeze(1), {"flip": True}).exp()
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, expected)
    # bf16 rounds the convolution and the Linear: close to fp32's probabilities, not equal to them.
    torch.testing.assert_close(bf16, fp32, atol=0.05, rtol=0)
    assert not torch.equal(bf16, fp32)


def test_analyze_and_ensembles_evaluate_a_bf16_run_as_its_test_stage_did(runs, tmp_path, monkeypatch, caplog):
    run = tmp_path / "bf16"
    train(compose_config("train", [*TINY, "tta=flip", "trainer.precision=bf16-mixed"], run))
    metrics = json.loads((run / "metrics.json").read_text())
    faces = tiny_test_faces()
    model = load_model(run / "checkpoints/best.ckpt", "cpu")
    written = {}
    for native, expected in ((True, "bf16-mixed"), (False, "32-true")):
        # precision=null follows the run where the CPU computes bf16, else evaluates in fp32.
        monkeypatch.setattr("fer.runtime.native_bfloat16", lambda device, native=native: native)
        out = tmp_path / expected
        analyze(compose_config("analyze", [f"run={run}", "predict=test", f"out={out}"], out))
        assert json.loads((out / "analysis.json").read_text())["precision"] == expected
        rows = read_csv(out / "predictions.csv")
        written[expected] = torch.tensor(
            [[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows]
        )
        computed = predict_proba(model, faces.images, tta={"flip": True}, precision=expected)
        torch.testing.assert_close(written[expected], computed, atol=1e-6, rtol=0)
    assert not torch.allclose(written["bf16-mixed"], written["32-true"], atol=1e-4)
    # In the run's own precision analyze.py repeats the test stage's accuracy.
    accuracy = (written["bf16-mixed"].argmax(1) == torch.from_numpy(faces.labels)).float().mean().item()
    assert accuracy == pytest.approx(metrics["test"]["test/acc"])
    # Each ensemble member in its own run's precision, or all in the one precision= names.
    monkeypatch.setattr("fer.runtime.native_bfloat16", lambda device: True)
    for told, expected in (([], ["bf16-mixed", "32-true"]), (["precision=32-true"], ["32-true", "32-true"])):
        out = tmp_path / f"ens{len(told)}"
        analyze(compose_config("analyze", [f"ensemble=[{run},{runs['cnn4']}]", f"out={out}", *told], out))
        assert [
            m["precision"] for m in json.loads((out / "ensemble.json").read_text())["members"]
        ] == expected
        assert [r["precision"] for r in read_csv(out / "scores.csv")] == [*expected, ""]
    # bf16 asked for on a CPU that would emulate it: one warning for the whole ensemble, not one per member.
    monkeypatch.setattr("fer.runtime.native_bfloat16", lambda device: False)
    out = tmp_path / "ens_emulated"
    with caplog.at_level(logging.WARNING, logger="fer.runtime"):
        analyze(
            compose_config(
                "analyze", [f"ensemble=[{run},{runs['cnn4']}]", f"out={out}", "precision=bf16-mixed"], out
            )
        )
    assert caplog.text.count("bf16 is emulated there") == 1
    with pytest.raises(
        ConfigError, match=r"precision: expected one of 32-true, bf16-mixed, 16-mixed or null"
    ):
        analyze(
            compose_config("analyze", [f"run={run}", "precision=bf16", f"out={tmp_path / 'no'}"], tmp_path)
        )
    assert not (tmp_path / "no").exists()


def test_test_stage_records_tta_and_its_gain(runs):
    metrics = json.loads((runs["cnn4"] / "metrics.json").read_text())
    assert metrics["tta"] == {
        "name": "flip",
        "flip": True,
        "shift": 0,
        "scales": [],
        "padding": "zeros",
        "views": 2,
    }
    assert {"test/acc", "test/acc_no_tta"} <= set(metrics["test"])
    plain = json.loads((runs["vggnet"] / "metrics.json").read_text())
    assert plain["tta"]["views"] == 1 and "test/acc_no_tta" not in plain["test"]

    # The test stage scored the mean over the two views: recompute it from the checkpoint.
    model = load_model(runs["cnn4"] / "checkpoints/best.ckpt", "cpu")
    faces = tiny_test_faces()
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

    faces = tiny_test_faces()
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
    faces = tiny_test_faces()
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
    assert list(scores[0]) == ["member", "checkpoint", "model", "normalization", "tta", "precision"]
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
    with pytest.raises(RunDirError, match=re.escape(f"ensemble member 1 ({damaged}): ") + ".*: sha256 "):
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{damaged}]"], tmp_path))
    with pytest.raises(ConfigError, match="named twice"):
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{runs['cnn4']}]"], tmp_path))
    # A member whose classes come in another order cannot be averaged with the others.
    ckpt = torch.load(runs["vggnet"] / "checkpoints/best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["class_names"] = ckpt["hyper_parameters"]["class_names"][::-1]
    reordered = tmp_path / "reordered.ckpt"
    torch.save(ckpt, reordered)
    with pytest.raises(
        ConfigError, match=re.escape(f"ensemble member 1 ({reordered}) has classes ['Neutral'")
    ):
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{reordered}]"], tmp_path))


def other_split_member(runs: dict[str, Path], tmp_path: Path) -> Path:
    """The vggnet run's checkpoint as if its val split had been carved with another seed."""
    ckpt = torch.load(runs["vggnet"] / "checkpoints/best.ckpt", weights_only=True)
    ckpt["run_config"]["data"]["split_seed"] = 7
    other = tmp_path / "other_split.ckpt"
    torch.save(ckpt, other)
    return other


def test_ensemble_notes_a_member_whose_split_differs(runs, tmp_path):
    # A member whose val split was carved with another seed: the faces scored may include its training faces.
    other = other_split_member(runs, tmp_path)
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
    with pytest.raises(RunDirError, match=rf"(?s){name}: its model config does not build.*\[8, 'X'\]"):
        analyze(compose_config("analyze", [members, f"out={out}"], tmp_path / "run"))
    assert evaluated == [] and not out.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tta=flip", "tta.flip=maybe"], "tta.flip: expected true or false, got 'maybe'"),
        (["tta=crops", "tta.shift=1.5"], "tta.shift: expected an integer in [0, 47], got 1.5"),
        (["tta=crops", "tta.shift=-2"], "tta.shift: expected an integer in [0, 47], got -2"),
        (["tta=crops", "tta.shift=abc"], "tta.shift: expected an integer in [0, 47], got 'abc'"),
        (["tta=crops", "tta.shift=48"], "tta.shift: expected an integer in [0, 47], got 48"),
        (
            ["tta=multiscale", "tta.scales=[8]"],
            "tta.scales: expected a list of values, each an integer in [16, 96], got [8]",
        ),
        (
            ["tta=crops", "tta.scales=44"],
            "tta.scales: expected a list of values, each an integer in [16, 96], got 44",
        ),
    ],
)
def test_tta_values_are_checked_by_name(runs, tmp_path, overrides, message):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=re.escape(f"invalid TTA value(s): {message}")):
        analyze(
            compose_config("analyze", [f"run={runs['cnn4']}", f"out={out}", *overrides], tmp_path / "run")
        )
    assert not out.exists()


def test_tta_values_are_checked_wherever_they_come_from(runs, tmp_path):
    assert checked_tta({"name": "crops", "flip": True, "shift": "3"}) == {
        "name": "crops",
        "flip": True,
        "shift": 3,
    }
    # The test stage of train.py scores through view_log_probs.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 7))
    with pytest.raises(ConfigError, match=re.escape("tta.flip: expected true or false, got 'maybe'")):
        view_log_probs(model, torch.zeros(2, 1, 48, 48), {"flip": "maybe", "shift": 0})
    # A run config's TTA, used when tta= is not given.
    ckpt = torch.load(runs["cnn4"] / "checkpoints/best.ckpt", weights_only=True)
    ckpt["run_config"]["tta"]["shift"] = 1.5
    odd = tmp_path / "odd_tta.ckpt"
    torch.save(ckpt, odd)
    message = (
        "invalid TTA value(s) in the checkpoint's run config (pass tta=none, flip or crops instead): "
        "tta.shift: expected an integer in [0, 47], got 1.5"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        analyze(compose_config("analyze", [f"ckpt={odd}", f"out={tmp_path / 'out'}"], tmp_path / "run"))
    out = tmp_path / "out"
    analyze(
        compose_config("analyze", [f"ckpt={odd}", "tta=flip", f"out={out}", "analysis.interpret=false"], out)
    )
    assert json.loads((out / "analysis.json").read_text())["tta"]["views"] == 2


def test_ensemble_of_a_sweep_skips_its_failed_jobs(runs, tmp_path):
    sweep = tmp_path / "sweep"
    for job, name in ((0, "cnn4"), (2, "vggnet")):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / "checkpoints").mkdir()
        (sweep / str(job) / "checkpoints/best.ckpt").symlink_to(runs[name] / "checkpoints/best.ckpt")
    failed_job(sweep / "1", "ValueError: optim.lr: expected a number > 0, got -1")
    out = tmp_path / "ens"
    analyze(compose_config("analyze", [f"ensemble=[{sweep}]", f"out={out}"], out))
    report = json.loads((out / "ensemble.json").read_text())
    assert [Path(m["checkpoint"]).parent.parent.name for m in report["members"]] == ["0", "2"]
    assert report["notes"] == [
        f"The sweep {sweep} left out its failed job 1: ValueError: optim.lr: expected a number > 0, got -1"
    ]
    # A sweep of failed jobs only, and a failed run named as a member: their errors, not callbacks=none.
    lost = tmp_path / "lost"
    failed_job(lost / "0", "RuntimeError: out of memory")
    failed_job(lost / "1", "KeyError: 'x'")
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            f"no job of the sweep folder {lost} is usable, every one failed "
            "(job 0: RuntimeError: out of memory; "
            "job 1: KeyError: 'x'); see each job's error.txt"
        ),
    ):
        analyze(compose_config("analyze", [f"ensemble=[{lost}]"], tmp_path / "run"))
    job = lost / "1"
    message = f"ensemble member 1 ({job}): no {job}/checkpoints/best.ckpt; the run failed: KeyError: 'x'"
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{job}]"], tmp_path / "run"))


def test_ensemble_refuses_one_checkpoint_under_two_spellings(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = Path(os.path.relpath(runs["cnn4"], tmp_path))
    assert relative.parts[0] == ".."
    link = tmp_path / "link"
    link.symlink_to(runs["cnn4"])
    for other in (relative, link, link / "checkpoints/best.ckpt"):
        message = (
            f"ensemble: ensemble member 0 ({runs['cnn4'] / 'checkpoints/best.ckpt'}) and ensemble member 2 "
            f"({other if other.suffix else other / 'checkpoints/best.ckpt'}) are one checkpoint, "
            f"{(runs['cnn4'] / 'checkpoints/best.ckpt').resolve()}, named twice"
        )
        members = f"ensemble=[{runs['cnn4']},{runs['vggnet']},{other}]"
        with pytest.raises(ConfigError, match=re.escape(message)):
            analyze(compose_config("analyze", [members], tmp_path / "run"))


def test_ensemble_refuses_a_member_with_non_finite_weights(runs, tmp_path):
    ckpt = torch.load(runs["vggnet"] / "checkpoints/best.ckpt", weights_only=True)
    name = next(k for k, v in ckpt["state_dict"].items() if k.endswith("weight") and v.is_floating_point())
    ckpt["state_dict"][name].fill_(float("nan"))
    nan = tmp_path / "nan.ckpt"
    torch.save(ckpt, nan)
    message = (
        f"ensemble member 1 ({nan}): {nan} holds NaN or infinite values in 1 of its weight tensors ({name})"
    )
    with pytest.raises(RunDirError, match=re.escape(message)):
        analyze(compose_config("analyze", [f"ensemble=[{runs['cnn4']},{nan}]"], tmp_path / "run"))


def test_ensemble_notes_on_a_predicted_path_speak_of_that_path(runs, tmp_path):
    # A member trained with another split seed: no matter for a path predicted, whose faces are its own.
    other = other_split_member(runs, tmp_path)
    out = tmp_path / "ens"
    members = f"ensemble=[{runs['cnn4']},{other}]"
    analyze(compose_config("analyze", [members, "predict='synthetic://40?seed=5'", f"out={out}"], out))
    report = json.loads((out / "ensemble.json").read_text())
    assert report["notes"] == [] and report["data"]["source"] == "synthetic://40?seed=5"
    # The very data both trained on, labelled: its rows may be their training faces.
    analyze(compose_config("analyze", [members, "predict='synthetic://300?seed=0'", f"out={out}"], out))
    notes = json.loads((out / "ensemble.json").read_text())["notes"]
    assert notes == [
        f"Ensemble member {i} ({ckpt}) was trained on data.path='synthetic://300?seed=0', the data that "
        "predict=synthetic://300?seed=0 reads: some of the labelled faces predicted may be faces it "
        "trained on."
        for i, ckpt in enumerate((runs["cnn4"] / "checkpoints/best.ckpt", other))
    ]


def _validated(callback: Snapshots, module: SimpleNamespace, epoch: int, acc: float) -> None:
    """Stand in for Lightning at the end of epoch `epoch`'s validation: the net's weight is the epoch number."""
    module.net.weight.data.fill_(epoch)
    trainer = SimpleNamespace(
        sanity_checking=False,
        callback_metrics={"val/acc": torch.tensor(acc)},
        current_epoch=epoch,
        is_global_zero=True,
    )
    callback.on_validation_end(trainer, module)


def _snapshot_epochs(dirpath: Path) -> dict[str, float]:
    return {
        p.stem: torch.load(p, weights_only=True)["state_dict"]["net.weight"][0, 0].item()
        for p in dirpath.iterdir()
    }


def test_snapshots_keep_the_epochs_before_each_new_best_and_only_theirs(tmp_path, caplog):
    module = SimpleNamespace(net=torch.nn.Linear(2, 2), hparams={"model": {}}, run_config={"seed": 0})
    callback = Snapshots(tmp_path / "checkpoints", epochs=2)
    with caplog.at_level(logging.WARNING, logger="fer.callbacks.snapshots"):
        for epoch, acc in enumerate([0.1, 0.3]):  # epoch 1 is best with only epoch 0 before it
            _validated(callback, module, epoch, acc)
    assert callback.kept == [0] and _snapshot_epochs(tmp_path / "checkpoints") == {"best-prev1": 0.0}
    assert "the best epoch so far, 1, has 1 of its 2 snapshot epochs" in caplog.text
    for epoch, acc in enumerate([0.2, 0.5, 0.5, float("nan"), 0.4], start=2):  # a tie and NaN are no best
        _validated(callback, module, epoch, acc)
    assert callback.kept == [2, 1] and callback.checkpoints() == [
        tmp_path / f"checkpoints/best-prev{k}.ckpt" for k in (1, 2)
    ]
    assert _snapshot_epochs(tmp_path / "checkpoints") == {"best-prev1": 2.0, "best-prev2": 1.0}
    saved = torch.load(callback.path(1), weights_only=True)
    assert (
        saved["epoch"] == 2
        and saved["run_config"] == {"seed": 0}
        and saved["hyper_parameters"] == {"model": {}}
    )

    # Resumed after epoch 6 with the best so far, 0.5: only epoch 6 is remembered, so a best at 7 removes
    # best-prev2 (epoch 1's).
    resumed = Snapshots(tmp_path / "checkpoints", epochs=2)
    resumed.load_state_dict(callback.state_dict())
    module.net.weight.data.fill_(6)
    resumed.on_train_start(SimpleNamespace(current_epoch=7), module)
    _validated(resumed, module, 7, 0.5)
    assert resumed.kept == [2, 1]
    _validated(resumed, module, 8, 0.6)
    assert resumed.kept == [7, 6]
    again = Snapshots(tmp_path / "checkpoints", epochs=2)
    again.load_state_dict(resumed.state_dict())
    again.on_train_start(SimpleNamespace(current_epoch=9), module)  # weights of epoch 8: 8.0
    _validated(again, module, 9, 0.7)
    assert again.kept == [8] and _snapshot_epochs(tmp_path / "checkpoints") == {"best-prev1": 8.0}
    with pytest.raises(ValueError, match="callbacks.snapshots.epochs must be at least 1"):
        Snapshots(tmp_path, epochs=0)
    elsewhere = SimpleNamespace(checkpoint_callback=SimpleNamespace(monitor="val/loss", mode="min"))
    with pytest.raises(
        ValueError, match=r"callbacks.snapshots.monitor='val/acc' .*\(monitor='val/loss', mode='min'\)"
    ):
        Snapshots(tmp_path).on_fit_start(elsewhere, module)


def test_the_test_stage_of_a_snapshot_run_is_analyze_s_ensemble_of_its_snapshots(tmp_path):
    run = tmp_path / "run"
    epochs = [
        "+callbacks.epochs._target_=pytorch_lightning.callbacks.ModelCheckpoint",
        f"+callbacks.epochs.dirpath={run}/epochs",
        "+callbacks.epochs.filename='e{epoch}'",
        "+callbacks.epochs.save_top_k=-1",
        "+callbacks.epochs.auto_insert_metric_name=false",
        "+callbacks.epochs.mode=max",  # its state key must differ from last_checkpoint's
    ]
    overrides = [*TINY, "trainer.max_epochs=5", "callbacks=[default,snapshots]", "tta=flip", *epochs]
    train(compose_config("train", [*overrides, "runtime.channels_last=true"], run))
    metrics = json.loads((run / "metrics.json").read_text())
    best = metrics["best"]["epoch"]
    assert best >= 2, "this seed's best epoch has two epochs before it"
    assert metrics["snapshots"]["epochs"] == [best - 1, best - 2]
    snapshots = [run / "checkpoints/best-prev2.ckpt", run / "checkpoints/best-prev1.ckpt"]
    assert metrics["snapshots"]["checkpoints"] == [str(p) for p in reversed(snapshots)]
    assert {"checkpoints/best-prev1.ckpt", "checkpoints/best-prev2.ckpt"} <= set(metrics["checkpoints"])
    for path, epoch in zip(snapshots, (best - 2, best - 1)):  # each snapshot is its epoch's network
        snapshot = load_model(path, "cpu").net.state_dict()
        saved = load_model(run / f"epochs/e{epoch}.ckpt", "cpu").net.state_dict()
        assert all(torch.equal(snapshot[k], saved[k]) for k in saved)

    out = tmp_path / "ens"
    members = f"ensemble=[{snapshots[0]},{snapshots[1]},{run}]"
    analyze(compose_config("analyze", [members, f"out={out}"], out))
    report = json.loads((out / "ensemble.json").read_text())
    assert report["ensemble"]["accuracy"] == pytest.approx(metrics["test"]["test/acc"])
    assert report["members"][2]["accuracy"] == pytest.approx(metrics["test"]["test/acc_selected_epoch"])
    assert len({m["accuracy"] for m in report["members"]}) > 1, "the snapshots score otherwise than the best"

"""analyze.py end to end on a tiny trained cnn4: every output, its numbers against independent computations,
predict mode, and the errors bad input gets."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fer.analysis.run import run as analyze
from fer.data import DataError
from fer.data.datamodule import FERDataModule
from fer.interpret.attribution import METHODS
from fer.module import FERModule
from fer.rundir import RunDirError
from fer.schema import ConfigError
from fer.train import run as train
from tests.conftest import FAST, ROOT, SHARED_FER2013, compose_config, damaged_copy

# Every method, at a cost that keeps the shared analysis to seconds on a CPU.
SMALL = [
    "analysis.metric_per_class=2",
    "analysis.deletion_steps=4",
    "analysis.attribution.nt_samples=2",
    "analysis.attribution.ig_steps=4",
    "analysis.filters=4",
    "analysis.am.steps=4",
    "analysis.exemplars=3",
    "analysis.feature_maps=8",
    "analysis.mistakes=6",
]
FILES = [
    "confusion.png",
    "per_class.csv",
    "mistakes.png",
    "saliency.png",
    "filters_net.features.0.png",
    "filters_net.features.12.png",
    "exemplars_net.features.0.png",
    "exemplars_net.features.12.png",
    "feature_maps_net.features.0.png",
    "feature_maps_net.features.12.png",
    "layers.png",
    "classes.png",
    "analysis.json",
    "report.html",
]


def analyze_config(out: Path, *overrides: str):
    """analyze.py's config writing into `out` (composed beside it: `out` is created only by the analysis)."""
    return compose_config("analyze", [f"out={out}", *overrides], out.parent / "composed")


def hooked_output(model: torch.nn.Module, name: str, images: torch.Tensor) -> torch.Tensor:
    """The output of layer `name` for `images`, from a plain forward hook."""
    outputs = []
    hook = model.get_submodule(name).register_forward_hook(lambda _m, _i, output: outputs.append(output))
    with torch.no_grad():
        model(images)
    hook.remove()
    return outputs[0]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(trained_run) -> Path:
    """The run dir of the suite's shared 2-epoch cnn4 run (conftest.trained_run)."""
    return trained_run[0]


@pytest.fixture(scope="module")
def analysed(trained) -> tuple[Path, dict]:
    out = trained / "analysis"
    assert analyze(analyze_config(out, f"run={trained}", *SMALL)) == out
    return out, json.loads((out / "analysis.json").read_text())


@pytest.fixture(scope="module")
def model(trained) -> FERModule:
    return FERModule.load_from_checkpoint(trained / "checkpoints/best.ckpt", map_location="cpu").eval()


@pytest.fixture(scope="module")
def test_faces(trained):
    """The run's test split, read independently of fer.analysis."""
    data = FERDataModule(path="synthetic://700?seed=0", cache_dir=False)
    data.setup()
    return data.faces["test"]


def test_writes_every_file(analysed):
    out, analysis = analysed
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))
    assert analysis["mode"] == "analyze" and analysis["notes"] == []
    assert analysis["data"]["what"] == "the test stage (PrivateTest)"
    assert set(analysis["timings_s"]) == {
        "load",
        "evaluate",
        "saliency",
        "exemplars",
        "activation_max",
        "class_visualization",
        "write",
        "report",
    }


def test_scores_match_training_and_an_independent_count(analysed, trained, model, test_faces):
    _, analysis = analysed
    metrics = json.loads((trained / "metrics.json").read_text())["test"]
    n = analysis["data"]["rows"]
    assert n == len(test_faces) == 70
    # The same weights on the same split as training's test: at most one borderline face may flip.
    assert analysis["metrics"]["accuracy"] == pytest.approx(metrics["test/acc"], abs=1.01 / n)
    with torch.no_grad():
        preds = model(torch.from_numpy(test_faces.images).float()[:, None]).argmax(1).numpy()
    assert analysis["metrics"]["accuracy"] == pytest.approx((preds == test_faces.labels).mean(), abs=1.01 / n)
    counts = np.array(analysis["confusion"])
    assert counts.sum() == n and (counts.sum(1) == np.bincount(test_faces.labels, minlength=7)).all()
    rows = read_csv(trained / "analysis/per_class.csv")
    assert [r["class"] for r in rows] == model.class_names
    assert [int(r["support"]) for r in rows] == counts.sum(1).tolist()
    recall = np.diag(counts) / np.maximum(counts.sum(1), 1)
    assert [float(r["recall"]) for r in rows] == pytest.approx(recall.tolist(), abs=1e-6)


def test_mistakes_are_wrong_and_most_confident_first(analysed):
    _, analysis = analysed
    mistakes = analysis["mistakes"]
    assert 0 < len(mistakes) <= 6
    assert all(m["true"] != m["pred"] for m in mistakes)
    probs = [m["prob"] for m in mistakes]
    assert probs == sorted(probs, reverse=True)
    assert all(re.fullmatch(r"\w+ -> \w+: \d+% of \w+ \(\d+/\d+\)", p) for p in analysis["most_confused"])


def test_saliency_measures_are_real_numbers_against_the_masks(analysed, test_faces):
    _, analysis = analysed
    saliency = analysis["saliency"]
    # the CAM layer: cnn4's deepest conv with a 12x12 output
    assert saliency["methods"] == list(METHODS) and saliency["cam_layer"] == "net.features.8"
    # One face per class present, in class order: the grid's rows.
    ids = saliency["rows"]
    index = [int(np.flatnonzero(test_faces.ids == i)[0]) for i in ids]
    classes = sorted(set(test_faces.labels.tolist()))
    assert test_faces.labels[index].tolist() == classes
    # The measured faces: two of each class (metric_per_class=2), the grid's first.
    counts = np.bincount(test_faces.labels, minlength=7)
    assert saliency["metric_images"] == sum(min(2, c) for c in counts)
    assert sum(saliency["metric_classes"].values()) == saliency["metric_images"]
    first_two = [i for c in classes for i in np.flatnonzero(test_faces.labels == c)[:2]]
    chance = test_faces.masks[first_two].mean()
    for method, row in saliency["metrics"].items():
        assert row["chance"]["mean"] == pytest.approx(chance, rel=1e-5), method
        for measure in ("pointing_game", "mass_inside", "deletion_auc"):
            low, high = row[measure]["ci95"]
            assert 0 <= low <= row[measure]["mean"] <= high <= 1, (method, measure)
            assert row[measure]["n"] == saliency["metric_images"]
        assert row["random_deletion_auc"] == saliency["metrics"]["saliency"]["random_deletion_auc"]
        rho = row["randomization_spearman"]
        assert rho["n"] + rho["excluded"] == saliency["metric_images"]
        assert rho["mean"] is None or -1 <= rho["mean"] <= 1
        verdict = row["verdict"]
        assert set(verdict["checks"]) == {"pointing", "deletion", "randomization"}
        assert verdict["reliable"] == (verdict["reason"] == "reliable for this model")


def test_filters_against_hooked_activations(analysed, model, test_faces):
    _, analysis = analysed
    images = torch.from_numpy(test_faces.images).float()[:, None]
    for name, info in analysis["filters"].items():
        out = hooked_output(model, name, images)
        assert info["num_channels"] == out.shape[1] and info["channels"] == [0, 1, 2, 3]
        best = out.mean(dim=(2, 3)).max(0).values[:4]
        assert info["dataset_max"] == pytest.approx(best.tolist(), rel=1e-4, abs=1e-5)
        dead = torch.nonzero(out.amax(dim=(0, 2, 3)) <= 0).flatten().tolist()
        assert info["dead"] == dead
        assert len(info["reached"]) == 4 and all(np.isfinite(info["reached"]))
        reached = sum(r >= b for r, b in zip(info["reached"], info["dataset_max"]))
        assert info["reached_fraction"] == pytest.approx(reached / 4)
        assert len(info["exemplars"]["0"]) == 3


def test_class_visualizations_against_the_model(analysed, model, test_faces):
    _, analysis = analysed
    classes = analysis["classes"]
    assert list(classes) == model.class_names
    images = torch.from_numpy(test_faces.images).float()[:, None]
    with torch.no_grad():
        logits = model(images)
    for c, row in enumerate(classes.values()):
        assert row["best_real_logit"] == pytest.approx(logits[:, c].max().item(), rel=1e-4, abs=1e-5)
        assert 0 <= row["probability"] <= 1 and np.isfinite(row["logit"])


def test_report_inlines_every_figure(analysed, trained):
    out, analysis = analysed
    page = (out / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    pngs = [f for f in FILES if f.endswith(".png")]
    assert len(images) == len(pngs) + 1  # and the run's history.png
    inlined = {base64.b64decode(data) for data in images}
    for name in pngs:
        assert (out / name).read_bytes() in inlined, name
    assert (trained / "history.png").read_bytes() in inlined
    for words in ("pointing_game: share of images whose attribution peak", "macro_f1", "best val/acc_best"):
        assert words in page


def course_folder(folder: Path, faces) -> Path:
    """A course layout of 12 of `faces`: the first 8 in train.csv (labelled), the last 4 in test.csv
    (unlabelled, ids 500-503)."""
    folder.mkdir()
    pixels = [" ".join(map(str, image.ravel())) for image in faces.images[:12]]
    (folder / "train.csv").write_text(
        "label,feature\n" + "".join(f"{label},{p}\n" for label, p in zip(faces.labels[:8], pixels[:8]))
    )
    (folder / "test.csv").write_text(
        "id,feature\n" + "".join(f"{500 + i},{p}\n" for i, p in enumerate(pixels[8:]))
    )
    return folder


def test_predict_unlabelled_course_folder_writes_submission(trained, model, tmp_path, test_faces):
    course = course_folder(tmp_path / "course", test_faces)
    out = tmp_path / "predicted"
    analyze(analyze_config(out, f"ckpt={trained}/checkpoints/best.ckpt", f"predict={course}"))
    rows = read_csv(out / "predictions.csv")
    assert [r["id"] for r in rows] == ["500", "501", "502", "503"] and {r["true_label"] for r in rows} == {""}
    probs = np.array([[float(r[f"prob_{c}"]) for c in model.class_names] for r in rows])
    assert probs.sum(1) == pytest.approx(np.ones(4), abs=1e-5)
    assert [int(r["pred_label"]) for r in rows] == probs.argmax(1).tolist()
    submission = read_csv(out / "submission.csv")
    assert submission == [{"id": r["id"], "label": r["pred_label"]} for r in rows]
    analysis = json.loads((out / "analysis.json").read_text())
    assert "metrics" not in analysis and "saliency" not in analysis and not (out / "saliency.png").exists()
    assert analysis["data"]["rows"] == 4 and analysis["data"]["labelled"] == 0


def test_predict_a_labelled_split_scores_it(trained, tmp_path):
    out = tmp_path / "public"
    analyze(analyze_config(out, f"run={trained}", "predict=PublicTest"))
    rows = read_csv(out / "predictions.csv")
    analysis = json.loads((out / "analysis.json").read_text())
    accuracy = np.mean([r["true_label"] == r["pred_label"] for r in rows])
    assert len(rows) == 70 and {r["split"] for r in rows} == {"PublicTest"}
    assert analysis["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert not (out / "submission.csv").exists() and (out / "confusion.png").is_file()


def test_split_and_data_overrides(trained, tmp_path):
    out = tmp_path / "val"
    analyze(
        analyze_config(
            out,
            f"run={trained}",
            "split=val",
            "data.path='synthetic://700?seed=3'",
            "analysis.interpret=false",
        )
    )
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["data"]["source"] == "synthetic://700?seed=3"
    assert analysis["data"]["what"] == "the val stage (PublicTest)" and analysis["data"]["rows"] == 70
    assert "filters" not in analysis


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["ckpt=/no/such.ckpt"], FileNotFoundError, "ckpt=/no/such.ckpt: no such checkpoint file"),
        (["run=/no/such/run"], FileNotFoundError, "run=/no/such/run: no such run folder"),
        ([], ConfigError, r"pass ckpt=PATH.ckpt, run=RUN_DIR .*, ensemble=\[RUN_OR_CKPT,...\] or sweep="),
        (["RUN", "ckpt=/x.ckpt"], ConfigError, "pass ckpt=PATH or run=RUN_DIR, not both"),
        (
            ["RUN", "analysis.methods=[saliency,lime]"],
            ConfigError,
            r"unknown \['lime'\]; choose from saliency, ",
        ),
        (
            ["RUN", "analysis.layers=[net.features.99]"],
            ConfigError,
            r"analysis.layers: unknown layer 'net.features.99'; conv layers of this model: net.features.0, ",
        ),
        (["RUN", "analysis.cam_layer=net.nope"], ConfigError, "analysis.cam_layer: unknown layer 'net.nope'"),
        (
            ["RUN", "split=Nope"],
            ConfigError,
            r"split='Nope' is not a stage \(train\|val\|test\|predict\) nor ",
        ),
        (["RUN", "predict=Nope"], ConfigError, r"predict='Nope' is not a stage, a data path nor a split of "),
        (["RUN", "predict=val", "split=test"], ConfigError, "split= only picks rows of a data path"),
        (
            ["RUN", "predict='synthetic://40?seed=1'", "split=val"],
            ConfigError,
            r"split='val' is not a split of predict=synthetic://40\?seed=1; its splits: ",
        ),
        (["RUN", "data.pth=x"], ConfigError, r"data.pth: not in the data config of ckpt=.*its keys: path, "),
        (["RUN", "data.splits.tset=x"], ConfigError, "data.splits.tset: not in the data config"),
        (
            ["RUN", "analysis.attribution.window=0"],
            ConfigError,
            r"analysis.attribution.window: expected an integer in \[1, 48\], got 0",
        ),
        (["RUN", "analysis.filters=0"], ConfigError, r"analysis.filters: expected an integer >= 1, got 0"),
        (
            ["RUN", "analysis.batch_size=0"],
            ConfigError,
            r"analysis.batch_size: expected an integer >= 1, got 0",
        ),
        (
            ["RUN", "analysis.am.steps=2.5", "analysis.am.param=dct"],
            ConfigError,
            r"(?s)analysis.am.steps: expected an integer >= 1, got 2.5"
            r".*analysis.am.param: expected one of fft, ",
        ),
        (
            ["RUN", "tta=crops", "tta.shift=1.5"],
            ConfigError,
            r"tta.shift: expected an integer in \[0, 47\], got 1.5",
        ),
        (["ensemble=[]"], ConfigError, r"ensemble=\[\] names no member: list checkpoint files, run folders "),
    ],
)
def test_bad_input_says_what_and_where(trained, tmp_path, overrides, error, message):
    overrides = [f"run={trained}" if o == "RUN" else o for o in overrides]
    with pytest.raises(error, match=message):
        analyze(analyze_config(tmp_path / "out", *overrides))
    assert not (tmp_path / "out" / "analysis.json").exists()


def test_run_dir_without_checkpoints_lists_what_it_has(trained, tmp_path):
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="saved no checkpoints"):
        analyze(analyze_config(tmp_path / "out", f"run={empty}"))
    (empty / "checkpoints/last.ckpt").write_bytes((trained / "checkpoints/last.ckpt").read_bytes())
    with pytest.raises(FileNotFoundError, match=f"it has last.ckpt: pass ckpt={empty}/checkpoints/last.ckpt"):
        analyze(analyze_config(tmp_path / "out", f"run={empty}"))
    (empty / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(RunDirError, match="not a checkpoint of fer's FERModule"):
        analyze(analyze_config(tmp_path / "out", f"ckpt={empty}/junk.ckpt"))


def edited_checkpoint(trained: Path, path: Path, edit) -> Path:
    """A copy at `path` (outside any run folder) of the run's best.ckpt, changed by `edit(checkpoint)`."""
    ckpt = torch.load(trained / "checkpoints/best.ckpt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


def test_a_changed_checkpoint_is_refused_when_named_by_ckpt_too(trained, tmp_path):
    damaged = damaged_copy(trained, tmp_path / "damaged")
    ckpt = damaged / "checkpoints/best.ckpt"
    name = re.escape(f"ckpt={ckpt}: {ckpt.resolve()}")
    with pytest.raises(RunDirError, match=rf"^{name}: sha256 [0-9a-f]{{64}} differs from the [0-9a-f]{{64}}"):
        analyze(analyze_config(tmp_path / "out", f"ckpt={ckpt}"))
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_are_refused_by_name(trained, tmp_path):
    def poison(ckpt: dict) -> None:
        weights = ckpt["state_dict"]
        weights["net.features.0.weight"][0, 0, 0, 0] = float("nan")
        weights["net.classifier.3.bias"][:] = float("inf")

    nan = edited_checkpoint(trained, tmp_path / "nan.ckpt", poison)
    message = (
        f"ckpt={nan}: {nan} holds NaN or infinite values in 2 of its weight tensors "
        "(net.features.0.weight, net.classifier.3.bias), so every prediction would be NaN"
    )
    with pytest.raises(RunDirError, match=re.escape(message)):
        analyze(analyze_config(tmp_path / "out", f"ckpt={nan}"))
    assert not (tmp_path / "out").exists()


def test_moved_data_says_the_path_came_from_the_checkpoint(trained, tmp_path):
    moved = tmp_path / "moved/fer2013.csv"

    def move(ckpt: dict) -> None:
        ckpt["run_config"]["data"]["path"] = str(moved)

    ckpt = edited_checkpoint(trained, tmp_path / "moved.ckpt", move)
    message = (
        f"ckpt={ckpt}: data.path={moved} comes from the checkpoint's run config (the data it trained on), "
        "and there is nothing there now; if the data moved, pass data.path=NEW_PATH"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        analyze(analyze_config(tmp_path / "out", f"ckpt={ckpt}"))
    # Given on the command line, the path is the reader's to report.
    with pytest.raises(DataError, match=rf"^{re.escape(str(moved))}: no such file or folder"):
        analyze(analyze_config(tmp_path / "out", f"ckpt={ckpt}", f"data.path={moved}"))
    # Pointed at the data's new place, the checkpoint is analysed.
    out = analyze(
        analyze_config(
            tmp_path / "out", f"ckpt={ckpt}", "data.path='synthetic://700?seed=0'", "analysis.interpret=false"
        )
    )
    assert json.loads((out / "analysis.json").read_text())["data"]["rows"] == 70


def test_a_damaged_metrics_json_is_named(trained, tmp_path):
    run_dir = shutil.copytree(trained, tmp_path / "run", ignore=shutil.ignore_patterns("analysis"))
    (run_dir / "metrics.json").write_text('{"best": {')
    for option in (f"run={run_dir}", f"ckpt={run_dir}/checkpoints/best.ckpt"):
        with pytest.raises(RunDirError, match=re.escape(f"{run_dir / 'metrics.json'} is not valid JSON (")):
            analyze(analyze_config(tmp_path / "out", option))
    assert not (tmp_path / "out").exists()
    # A checkpoint beside a damaged metrics.json (a run folder without checkpoints/): reported with a note.
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(run_dir / "checkpoints/best.ckpt", flat / "best.ckpt")
    shutil.copy(run_dir / "metrics.json", flat / "metrics.json")
    out = analyze(analyze_config(tmp_path / "out", f"ckpt={flat / 'best.ckpt'}", "analysis.interpret=false"))
    page = (out / "report.html").read_text()
    assert f"{flat / 'metrics.json'} is not valid JSON (" in page and "training scores are left out" in page
    assert json.loads((out / "analysis.json").read_text())["metrics"]["accuracy"] > 0


def listed_files(out: Path) -> set[str]:
    """analysis.json and the files it lists."""
    return {"analysis.json", *json.loads((out / "analysis.json").read_text())["files"].values()}


def test_a_reused_folder_keeps_no_file_of_the_analysis_before(trained, tmp_path, test_faces):
    out = tmp_path / "reused"
    analyze(analyze_config(out, f"run={trained}", "predict=PublicTest"))
    before = {p.name for p in out.iterdir()}
    assert {"per_class.csv", "confusion.png", "mistakes.png", "predictions.csv"} <= before
    assert before == listed_files(out)
    # An unlabelled prediction into the same folder: no scores, no figures, a submission.
    course = course_folder(tmp_path / "course", test_faces)
    analyze(analyze_config(out, f"run={trained}", f"predict={course}"))
    after = {p.name for p in out.iterdir()}
    assert after == listed_files(out) == {"analysis.json", "predictions.csv", "submission.csv", "report.html"}
    assert [r["id"] for r in read_csv(out / "predictions.csv")] == ["500", "501", "502", "503"]
    # An ensemble into it, then an analysis again: each leaves only its own files.
    analyze(analyze_config(out, f"ensemble=[{trained}]", "split=val"))
    assert {p.name for p in out.iterdir()} == {"ensemble.json", "scores.csv", "predictions.csv"}
    analyze(analyze_config(out, f"run={trained}", "analysis.interpret=false"))
    assert (
        {p.name for p in out.iterdir()}
        == listed_files(out)
        == {"analysis.json", "per_class.csv", "confusion.png", "mistakes.png", "report.html"}
    )


def test_a_failure_part_way_leaves_the_folder_as_it_was(trained, tmp_path, monkeypatch):
    out = tmp_path / "kept"
    analyze(analyze_config(out, f"run={trained}", "predict=PublicTest"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail(*args, **kwargs) -> None:
        raise RuntimeError("saliency failed")

    monkeypatch.setattr("fer.analysis.run.add_saliency", fail)
    for folder in (out, tmp_path / "new"):
        with pytest.raises(RuntimeError, match="saliency failed"):
            analyze(analyze_config(folder, f"run={trained}", "predict=val", "analysis.interpret=true"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "new").exists()


def fake_sweep(folder: Path, accuracies: list[float]) -> Path:
    """A sweep folder whose job k ran seed=k and left a metrics.json with test accuracy `accuracies[k]`."""
    for k, accuracy in enumerate(accuracies):
        (folder / str(k) / ".hydra").mkdir(parents=True)
        (folder / str(k) / ".hydra/overrides.yaml").write_text(f"- seed={k}\n- optim.lr=0.0{k + 1}\n")
        metrics = {"best": {"epoch": 1, "val/acc": accuracy - 0.1}, "test": {"test/acc": accuracy}}
        (folder / str(k) / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_sweep_prints_its_table_and_refuses_what_it_ignores(tmp_path, capsys):
    sweep = fake_sweep(tmp_path / "sweep", [0.5, 0.25])
    assert analyze(compose_config("analyze", [f"sweep={sweep}"], tmp_path / "x")) == sweep
    printed = capsys.readouterr().out
    assert f"# Sweep {sweep}" in printed and "2 jobs: 2 ok, 0 failed" in printed
    assert (
        "| 1 | 0.01 | 1 | 0.400 | – | 0.500 |" in printed
        and "| 2 | 0.02 | 1 | 0.150 | – | 0.250 |" in printed
    )
    assert f"  {sweep / 'summary.md'}\n" in printed and (sweep / "summary.csv").is_file()
    for option in ("out=/tmp/fer_out", f"ensemble=[{sweep}]", "tta=flip", "split=val"):
        name = option.split("=")[0]
        with pytest.raises(ConfigError, match=rf"sweep= summarises a sweep folder and takes no {name}=: "):
            analyze(compose_config("analyze", [f"sweep={sweep}", option], tmp_path / "x"))
    # run= on a sweep folder says what it is and what to pass instead.
    with pytest.raises(
        FileNotFoundError, match=rf"it is a sweep folder \(jobs 0, 1\): pass sweep={sweep} for"
    ):
        analyze(analyze_config(tmp_path / "out", f"run={sweep}"))


@pytest.mark.slow  # a second training run (dnn); the default suite analyses the shared cnn4 run
def test_dnn_without_convolutions_skips_the_layer_parts(tmp_path):
    run_dir = tmp_path / "dnn"
    train(compose_config("train", [*FAST, "model=dnn", "debug=fast", "seed=0"], run_dir))
    out = tmp_path / "dnn_analysis"
    analyze(analyze_config(out, f"run={run_dir}", *SMALL, "analysis.methods=[saliency,gradcam,occlusion]"))
    analysis = json.loads((out / "analysis.json").read_text())
    assert "no convolutional layers" in analysis["notes"][0]
    assert "filters" not in analysis and not list(out.glob("filters_*.png"))
    assert analysis["saliency"]["methods"] == ["saliency", "occlusion"]
    assert "no convolutional layers" in (out / "report.html").read_text()


def test_a_gelu_net_leaves_guided_backprop_out_and_says_so(tmp_path):
    run_dir = tmp_path / "gelu"
    net = ["model=vgg8", "model.activation=gelu", "model.layers=[8,M,16,M]", "model.head=[]"]
    train(compose_config("train", [*FAST, *net, "debug=fast", "seed=0"], run_dir))
    out = tmp_path / "gelu_analysis"
    analyze(analyze_config(out, f"run={run_dir}", *SMALL, "analysis.methods=[saliency,guided_backprop]"))
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["saliency"]["methods"] == ["saliency"]
    assert any("Guided Backprop guides: it is left out" in note for note in analysis["notes"])
    assert "Guided Backprop guides: it is left out" in (out / "report.html").read_text()


def test_command_line(trained, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "analyze.py", f"run={trained}", f"out={out}", "analysis.interpret=false"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in result.stdout
    assert not (ROOT / "analyze.log").exists() and not (ROOT / ".hydra").exists()


@pytest.mark.slow
def test_default_settings_on_the_test_split(trained, tmp_path):
    """The defaults as `make demo` runs them (every method, 16 filters): everything present and finite."""
    out = tmp_path / "defaults"
    analyze(analyze_config(out, f"run={trained}"))
    analysis = json.loads((out / "analysis.json").read_text())
    assert len(analysis["saliency"]["metrics"]) == len(METHODS)
    assert all(len(info["reached"]) == 16 for info in analysis["filters"].values())
    assert all(
        np.isfinite(summary["mean"])
        for row in analysis["saliency"]["metrics"].values()
        for summary in row.values()
        if isinstance(summary, dict) and "mean" in summary
    )


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_FER2013.is_file(), reason=f"needs the shared FER2013 copy at {SHARED_FER2013}")
def test_default_analysis_of_a_model_of_real_faces(tmp_path, monkeypatch):
    """cnn4 trained briefly on FER2013 (no masks), analysed with the defaults: every figure and number,
    and verdicts from deletion and randomisation."""
    monkeypatch.setenv("FER2013_PATH", str(SHARED_FER2013))
    run_dir = tmp_path / "real"
    overrides = [
        "data=fer2013_dev",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=40",
        "+trainer.limit_val_batches=4",
        "+trainer.limit_test_batches=4",
        "callbacks.rich_progress_bar=null",
        "seed=0",
    ]
    train(compose_config("train", overrides, run_dir))
    out = tmp_path / "analysis"
    analyze(analyze_config(out, f"run={run_dir}"))
    analysis = json.loads((out / "analysis.json").read_text())
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert analysis["data"]["what"] == "the test stage (PublicTest)" and analysis["data"]["rows"] == 3589
    saliency = analysis["saliency"]
    # PublicTest has at least 56 faces of every class: 10 of each
    assert saliency["metric_images"] == 70 and set(saliency["metric_classes"].values()) == {10}
    assert any("no ground-truth masks" in note for note in analysis["notes"])
    for method, row in saliency["metrics"].items():
        assert "pointing_game" not in row, method
        checks = row["verdict"]["checks"]
        assert set(checks) == {"deletion", "randomization"}, method
        assert all(isinstance(check["passed"], bool) for check in checks.values())
        assert np.isfinite(row["deletion_auc"]["mean"]) and row["deletion_auc"]["n"] == 70
    for layer, info in analysis["filters"].items():
        # the target: AM beats the best real face for at least 90% of each layer's filters
        assert info["reached_fraction"] >= 0.9 and len(info["reached"]) == 16, layer
    assert len(analysis["classes"]) == 7
    page = (out / "report.html").read_text()
    assert "reliable for this model" in page and "excluded" in page


CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const bad = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.body.setAttribute('data-images', document.images.length + '/' + bad);
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(),
    reason="needs headless Chromium at /usr/bin/chromium (Debian: apt-get install -y chromium)",
)
def test_report_opens_in_chromium_without_errors(analysed, tmp_path):
    out, _ = analysed
    # A copy with a probe that records, once the page has loaded, how many images failed to decode.
    probe = tmp_path / "report.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    cmd = [
        "/usr/bin/chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    images = len(re.findall("<img ", (out / "report.html").read_text()))
    assert f'data-images="{images}/0"' in result.stdout
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []

"""The report page, the atomic writers, and the figure helpers, on hand-made inputs (no training)."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fer.files import write_csv, write_json
from fer.interpret.figures import face_label, pick_per_class, plot_faces, plot_saliency, saliency_panels
from fer.interpret.layers import TruncatedModel
from fer.report import write_report


class Page(HTMLParser):
    """The <img> sources, the text and the tags of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def faces(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8))


@pytest.fixture
def analysis(tmp_path: Path) -> dict:
    plot_faces(faces(3), ["a", "b", "c"], tmp_path / "mistakes.png", title="mistakes")
    plot_faces(faces(2), ["x", "y"], tmp_path / "saliency.png")
    return {
        "mode": "analyze",
        "checkpoint": "runs/a/checkpoints/best.ckpt",
        "written": "2026-01-01T00:00:00",
        "data": {
            "source": "<b>odd & name</b>",
            "what": "the test stage (PrivateTest)",
            "rows": 10,
            "labelled": 10,
        },
        "metrics": {"accuracy": 0.5, "macro_f1": 0.25},
        "per_class": [{"class": "Angry", "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 3}],
        "most_confused": ["Fear -> Sad: 50% of Fear (2/4)"],
        "saliency": {
            "metric_images": 2,
            "metrics": {
                "saliency": {
                    "pointing_game": {"mean": 0.5, "ci95": [0.0, 1.0], "n": 2, "excluded": 0},
                    "chance": {"mean": 0.25, "ci95": [0.2, 0.3], "n": 2, "excluded": 0},
                    "deletion_auc": {"mean": 0.1, "ci95": [0.05, 0.15], "n": 2, "excluded": 0},
                    "randomization_spearman": {"mean": 0.2, "ci95": [0.2, 0.2], "n": 1, "excluded": 1},
                    "verdict": {
                        "reliable": False,
                        "failed": ["pointing"],
                        "checks": {
                            "pointing": {
                                "measure": "pointing_game - chance",
                                "rule": "95% interval above 0.05",
                            }
                        },
                        "reason": "unreliable for this model: points at chance (pointing_game - chance = 0.25)",
                    },
                }
            },
        },
        "notes": ["a note"],
        "files": {"mistakes": "mistakes.png", "saliency": "saliency.png"},
    }


def test_report_inlines_figures_and_escapes_text(tmp_path, analysis):
    path = write_report(tmp_path, analysis, {"model": {"_target_": "fer.models.cnn4.CNN4"}, "seed": 3})
    page = Page(path.read_text())
    assert len(page.images) == 2
    for src, name in zip(page.images, ("mistakes.png", "saliency.png")):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (tmp_path / name).read_bytes()
    text = "".join(page.text)
    assert "<b>odd & name</b>" in text and "b" not in page.tags  # shown as text, not markup
    assert "Analysis of CNN4" in text and "a note" in text and "Fear -> Sad: 50% of Fear (2/4)" in text
    # Each measure shown is explained in a sentence; measures absent from the results are not.
    assert "pointing_game: share of images whose attribution peak falls inside" in text
    assert "deletion_auc: area under" in text and "mass_inside:" not in text
    # each score with its interval and the count of faces excluded; the verdict with its numbers
    assert "0.500 [0.000, 1.000] 0 of 2 excluded" in text and "0.200 [0.200, 0.200] 1 of 2 excluded" in text
    assert "unreliable for this model: points at chance (pointing_game - chance = 0.25)" in text
    assert "pointing: pointing_game - chance: 95% interval above 0.05" in text
    assert "seed: 3" in text  # the run's config


def test_report_shows_the_training_run(tmp_path, analysis):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = {"best": {"epoch": 3, "val/acc": 0.75}, "test": {"test/acc": 0.5}, "test_split": "PrivateTest"}
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "epochs": 4, "params": 123}))
    plot_faces(faces(1), ["h"], run_dir / "history.png")
    page = Page(write_report(tmp_path, analysis, run_dir=run_dir).read_text())
    text = "".join(page.text)
    for words in (
        "best epoch3",
        "best val/acc0.7500",
        "test/acc (PrivateTest)0.5000",
        "epochs4",
        "params123",
    ):
        assert words in text
    assert len(page.images) == 3  # mistakes, history, saliency
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert "Training" not in "".join(Page(write_report(tmp_path, analysis, run_dir=empty).read_text()).text)


def test_report_without_figures_or_labels(tmp_path, analysis):
    analysis |= {"mode": "predict", "files": {"predictions": "predictions.csv"}, "metrics": None}
    del analysis["saliency"], analysis["per_class"], analysis["most_confused"]
    page = Page(write_report(tmp_path, analysis).read_text())
    assert page.images == []
    assert "Predictions of model" in "".join(page.text) and "predictions.csv" in "".join(page.text)


def test_json_is_strict_with_nan_as_null(tmp_path):
    path = write_json(tmp_path / "a.json", {"x": [1.0, float("nan")], "y": {"z": float("inf")}})

    def refuse(name: str) -> None:
        raise ValueError(name)

    assert json.loads(path.read_text(), parse_constant=refuse) == {"x": [1.0, None], "y": {"z": None}}


def test_csv_write_is_all_or_nothing(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"a": 1, "b": 2}], ["a", "b"])
    assert path.read_text() == "a,b\n1,2\n"
    with pytest.raises(ValueError):
        write_csv(path, [{"a": 3, "c": 4}], ["a", "b"])
    assert path.read_text() == "a,b\n1,2\n" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_pick_per_class_is_round_robin_and_prefix_stable():
    labels = torch.tensor([3, 0, 3, 1, 0, 3, -1, 0])
    assert pick_per_class(labels, 1).tolist() == [1, 3, 0]
    assert pick_per_class(labels, 3).tolist() == [1, 3, 0, 4, 2, 7, 5]
    assert pick_per_class(labels, 2).tolist() == pick_per_class(labels, 3).tolist()[:5]


def test_saliency_panels_share_one_scale_per_method():
    images = faces(3).float()
    base = torch.rand(48, 48)
    maps = {"unsigned": torch.stack([base, 2 * base, 4 * base]), "signed": torch.stack([base - 0.5] * 3)}
    panels, scales = saliency_panels(images[[0, 0, 0]], maps)
    assert panels.shape == (3, 3, 48, 48, 3) and 0 <= panels.min() and panels.max() <= 1
    assert np.array_equal(panels[0, 0], panels[0, 1])  # the face column
    # The same face under a stronger map is drawn more strongly: one scale for the column, not per face.
    redness = [(p[..., 0] - p[..., 2]).mean() for p in panels[1]]
    assert redness[0] < redness[1] < redness[2]
    (_, unsigned), (_, signed) = scales
    assert unsigned.vmin == 0 and signed.vmin == -signed.vmax
    assert np.array_equal(panels[2, 0], panels[2, 2])  # identical maps, identical pixels


def test_saliency_grid_marks_unreliable_methods(tmp_path):
    images = faces(2).float()
    maps = {"saliency": torch.rand(2, 48, 48), "gradcam": torch.rand(2, 48, 48)}
    plain = plot_saliency(images, maps, ["a", "b"], tmp_path / "plain.png")
    marked = plot_saliency(
        images, maps, ["a", "b"], tmp_path / "marked.png", unreliable={"gradcam": ["pointing"]}
    )

    def red(path: Path) -> int:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB")).astype(int)
        return int(((rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)).sum())

    assert red(marked) > red(plain) + 100  # the red frames and title


def test_face_label():
    assert face_label(["A", "B"], 1, 0, 0.876) == "true B\npred A 0.88"
    assert face_label(["A", "B"], -1, 1, 0.5) == "true ?\npred B 0.50"


def test_plot_faces_with_no_faces(tmp_path):
    path = plot_faces(torch.zeros(0, 48, 48), [], tmp_path / "none.png", title="no mistakes")
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        assert image.size[0] > 50


def test_truncated_model_stops_at_the_layer_and_keeps_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 46 * 46, 2))
    x = torch.rand(2, 1, 48, 48, requires_grad=True)
    out = TruncatedModel(model, model[1])(x)
    assert torch.equal(out, model[1](model[0](x)))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="never reached the layer"):
        TruncatedModel(model, nn.ReLU())(x)

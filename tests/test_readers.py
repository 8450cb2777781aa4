import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer.data import CLASS_NAMES, DataError, FaceSet, read_dataset, readers
from fer.data.__main__ import main
from fer.data.errors import DataWarning

FER2013_SPLITS = ("Training", "PublicTest", "PrivateTest")
REAL_DATA = Path(__file__).resolve().parents[2] / "shared/data/fer2013/fer2013-dev.csv.gz"


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def pixels(image: np.ndarray) -> str:
    return " ".join(map(str, image.ravel()))


def write_fer2013(path: Path, images, labels, usages, newline="\n", prefix="") -> Path:
    rows = ["emotion,pixels,Usage"] + [
        f"{label},{pixels(image)},{usage}" for image, label, usage in zip(images, labels, usages, strict=True)
    ]
    data = (prefix + newline.join(rows) + newline).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def good_rows():
    """Four valid fer2013.csv data lines (lines 2-5 of a file) and their images."""
    images = faces(4)
    usages = ["Training", "Training", "PublicTest", "PrivateTest"]
    return images, [
        f"{k},{pixels(image)},{u}" for k, (image, u) in enumerate(zip(images, usages, strict=True))
    ]


@pytest.mark.parametrize(
    "name, newline, prefix",
    [("fer2013.csv", "\n", ""), ("fer2013.csv.gz", "\n", ""), ("win.csv", "\r\n", "\ufeff")],
)
def test_fer2013_csv(tmp_path, name, newline, prefix):
    images = faces(7)
    usages = ["Training"] * 4 + ["PublicTest", "PrivateTest", "PrivateTest"]
    path = write_fer2013(tmp_path / name, images, range(7), usages, newline, prefix)
    got = read_dataset(path, cache_dir=False)
    assert got.layout == "fer2013_csv" and got.source == str(path.resolve())
    np.testing.assert_array_equal(got.images, images)
    np.testing.assert_array_equal(got.labels, np.arange(7))
    assert got.labels.dtype == np.int64 and got.images.dtype == np.uint8
    assert list(got.split) == usages
    assert list(got.ids) == [f"row-{k}" for k in range(1, 8)]
    assert got.skipped == 0 and got.warnings == [] and got.masks is None


def test_fer2013_folder_and_blank_lines(tmp_path, good_rows):
    images, rows = good_rows
    write_lines(tmp_path / "fer2013.csv", ["emotion,pixels,Usage", rows[0], "", rows[1]])
    got = read_dataset(tmp_path, cache_dir=False)
    np.testing.assert_array_equal(got.images, images[:2])
    assert list(got.ids) == ["row-1", "row-3"]  # row-K is line K+1, whatever blank lines precede it


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_whitespace_only_lines_are_blank(tmp_path, good_rows, newline):
    images, rows = good_rows
    lines = ["emotion,pixels,Usage", rows[0], " ", rows[1], "\t ", rows[2], "", rows[3], "   "]
    path = tmp_path / "x.csv"
    path.write_bytes(newline.join(lines).encode())
    got = read_dataset(path, cache_dir=False)
    np.testing.assert_array_equal(got.images, images)
    assert list(got.ids) == ["row-1", "row-3", "row-5", "row-7"] and got.skipped == 0


def test_whitespace_only_file_body_has_no_data_rows(tmp_path):
    path = write_lines(tmp_path / "x.csv", ["emotion,pixels,Usage", " ", "\t"])
    with pytest.raises(DataError, match="no data rows after the header on line 1"):
        read_dataset(path, cache_dir=False)


def test_unknown_usage_reads_with_a_note_on_every_read(tmp_path, good_rows):
    images, rows = good_rows
    rows = [rows[0], rows[1].replace(",Training", ",Trainnig"), rows[2], rows[3]]
    rows.append(rows[1])  # line 6, the same typo again
    rows.append(rows[0].replace(",Training", ",Holdout"))  # line 7, a split of the file's own
    path = write_lines(tmp_path / "x.csv", ["emotion,pixels,Usage", *rows])
    expected = (
        f"3 rows of {path.resolve()} have a Usage other than Training, PublicTest, PrivateTest: "
        "'Holdout' (1), 'Trainnig' (2) (first on line 3); only a stage whose data.splits names that split "
        "reads them, so correct the Usage in the file if it is a typo"
    )
    for status in ("miss", "hit"):  # cached entries say it too
        with pytest.warns(DataWarning) as caught:
            got, got_status = readers.read_with_status(path, cache_dir=tmp_path / "cache")
        assert got_status == status
        assert [str(w.message) for w in caught] == [expected] and got.warnings == [expected]
        assert got.split_counts() == {
            "Holdout": 1,
            "PrivateTest": 1,
            "PublicTest": 1,
            "Training": 1,
            "Trainnig": 2,
        }
        assert got.skipped == 0 and len(got) == 6


def test_known_usages_and_other_layouts_have_no_usage_note(course):
    folder, _ = course
    assert read_dataset(folder, cache_dir=False).warnings == []  # its test split is not a Usage


def test_unusual_whitespace_and_quotes_parse_exactly(tmp_path, good_rows):
    images, _ = good_rows
    tokens = [list(map(str, image.ravel())) for image in images]
    tokens[0][5] = "00" + tokens[0][5]  # leading zeros
    fields = [
        " " + "  ".join(tokens[0]),
        "\t".join(tokens[1]) + " ",
        '"' + " ".join(tokens[2]) + '"',
        pixels(images[3]),
    ]
    path = write_lines(tmp_path / "x.csv", ["emotion,pixels,Usage"] + [f"1,{f},Training" for f in fields])
    np.testing.assert_array_equal(read_dataset(path, cache_dir=False).images, images)


def test_bulk_parse_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_CHUNK_ROWS", 2)
    images = faces(7, seed=1)
    usages = ["Training"] * 7
    path = write_fer2013(tmp_path / "x.csv", images, [3] * 7, usages)
    text = path.read_text().splitlines()
    text[4] = text[4].replace(",", ",300 ", 1)  # line 5 (row 4) gets an out-of-range first pixel
    write_lines(path, text)
    with pytest.warns(DataWarning, match="skipped 1 bad rows"):
        got = read_dataset(path, on_bad_row="skip", cache_dir=False)
    np.testing.assert_array_equal(got.images, np.delete(images, 3, axis=0))
    assert "row-4" not in got.ids and len(got) == 6


def bad_row(row: str, k: int, token: str) -> str:
    label, field, usage = row.split(",")
    tokens = field.split()
    tokens[k] = token
    return ",".join([label, " ".join(tokens), usage])


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda r: r.rsplit(" ", 1)[0] + "," + r.rsplit(",", 1)[1], ["expected 2304 pixels, got 2303"]),
        (lambda r: bad_row(r, 9, "abc"), ["non-integer pixel 'abc'", "pixel 10 of 2304"]),
        (lambda r: bad_row(r, 0, "1.5"), ["non-integer pixel '1.5'"]),
        (lambda r: bad_row(r, 0, "256"), ["pixel '256' outside 0-255"]),
        (lambda r: bad_row(r, 0, "-3"), ["pixel '-3' outside 0-255"]),
        (lambda r: bad_row(r, 0, "18446744073709551621"), ["'18446744073709551621' outside 0-255"]),
        (lambda r: "7" + r[1:], ["label '7' outside 0-6"]),
        (lambda r: "x" + r[1:], ["label 'x' outside 0-6"]),
        (lambda r: r.rsplit(",", 1)[0] + ",", ["empty Usage"]),
        (lambda r: r + ",extra", ["expected 3 comma-separated fields, got 4"]),
    ],
)
def test_bad_row_names_file_line_and_problem(tmp_path, good_rows, mutate, fragments):
    _, rows = good_rows
    rows = rows.copy()
    rows[2] = mutate(rows[2])  # line 4
    path = write_lines(tmp_path / "bad.csv", ["emotion,pixels,Usage"] + rows)
    with pytest.raises(DataError) as error:
        read_dataset(path, cache_dir=False)
    message = str(error.value)
    assert message.startswith(f"{path.resolve()}: line 4: ")
    for fragment in fragments:
        assert fragment in message


def test_skip_drops_bad_rows_and_warns_with_first_location(tmp_path):
    images = faces(10)
    path = write_fer2013(tmp_path / "x.csv", images, [0] * 10, ["Training"] * 10)
    lines = path.read_text().splitlines()
    for line in (3, 6, 9):
        lines[line - 1] = "9" + lines[line - 1][1:]
    write_lines(path, lines)
    with pytest.warns(DataWarning) as caught:
        got = read_dataset(path, on_bad_row="skip", cache_dir=False)
    assert got.skipped == 3 and len(got) == 7
    np.testing.assert_array_equal(got.images, np.delete(images, [1, 4, 7], axis=0))
    assert [w for w in got.ids if w in ("row-2", "row-5", "row-8")] == []
    assert len(caught) == 1 and got.warnings == [str(caught[0].message)]
    assert (
        f"skipped 3 bad rows of {path.resolve()} (first: {path.resolve()}: line 3: label '9'"
        in got.warnings[0]
    )


def test_skip_with_every_row_bad_is_an_error(tmp_path, good_rows):
    _, rows = good_rows
    path = write_lines(tmp_path / "x.csv", ["emotion,pixels,Usage"] + ["8" + r[1:] for r in rows])
    with pytest.raises(DataError, match="all 4 rows .* are bad"):
        read_dataset(path, on_bad_row="skip", cache_dir=False)


@pytest.mark.parametrize(
    "content, fragments",
    [
        (b"", ["line 1: empty file"]),
        (b"emotion,pixels\n1,2 3\n", ["line 1: missing column usage", "found columns: emotion, pixels"]),
        (b"a,b,c\n1,2,3\n", ["line 1: unknown layout", "emotion,pixels,Usage"]),
        (b"emotion,pixels,Usage\n\n", ["no data rows"]),
        (gzip.compress(b"emotion,pixels,Usage\n" * 1000)[:100], ["cannot read"]),
    ],
)
def test_bad_file_names_file_and_problem(tmp_path, content, fragments):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_dataset(path, cache_dir=False)
    assert str(error.value).startswith(str(path.resolve()))
    for fragment in fragments:
        assert fragment in str(error.value)


def test_missing_path_says_where_and_how_to_get_fer2013(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as error:
        read_dataset("data/fer2013.csv")
    message = str(error.value)
    assert str(tmp_path / "data/fer2013.csv") in message
    for fragment in (
        "Kaggle",
        "Challenges in Representation Learning",
        "fer2013.csv",
        "train/",
        "test/",
        "synthetic://6000?seed=0",
    ):
        assert fragment in message


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"layout": "parquet"}, "unknown layout 'parquet'"),
        ({"on_bad_row": "ignore"}, "on_bad_row"),
        ({"layout": "image_folder"}, "reads a folder"),
        ({"layout": "synthetic"}, "synthetic://"),
    ],
)
def test_bad_arguments(tmp_path, good_rows, kwargs, fragment):
    path = write_lines(tmp_path / "x.csv", ["emotion,pixels,Usage"] + good_rows[1])
    with pytest.raises(DataError, match=fragment):
        read_dataset(path, cache_dir=False, **kwargs)


def test_unrecognised_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown layout"):
        read_dataset(tmp_path, cache_dir=False)


@pytest.fixture
def course(tmp_path):
    images = faces(5, seed=2)
    write_lines(
        tmp_path / "train.csv",
        ["label,feature"] + [f"{k},{pixels(im)}" for k, im in zip([6, 0, 3], images[:3], strict=True)],
    )
    write_lines(
        tmp_path / "test.csv",
        ["id,feature"] + [f"{k},{pixels(im)}" for k, im in zip([17, 4], images[3:], strict=True)],
    )
    return tmp_path, images


@pytest.mark.parametrize("variant", ["course", "kaggle"])
@pytest.mark.parametrize("target", ["", "train.csv", "test.csv"])
def test_course_layout(course, target, variant):
    """The course's pair (label,feature / id,feature) and Kaggle's (emotion,pixels / pixels) read alike."""
    folder, images = course
    if variant == "kaggle":
        write_kaggle_pair(folder, images, [6, 0, 3])
    got = read_dataset(folder / target, cache_dir=False)
    assert got.layout == "course" and got.source == str(folder.resolve())
    np.testing.assert_array_equal(got.images, images)
    assert list(got.labels) == [6, 0, 3, -1, -1]
    assert list(got.split) == ["Training"] * 3 + ["test"] * 2
    test_ids = ["17", "4"] if variant == "course" else ["test-1", "test-2"]  # Kaggle's test.csv has no id
    assert list(got.ids) == ["train-1", "train-2", "train-3", *test_ids]


@pytest.mark.parametrize(
    ("label", "pixel_column", "id_column"), [("label", "feature", "id"), ("emotion", "pixels", None)]
)
def test_pair_errors_name_file_and_line(course, label, pixel_column, id_column):
    """The course's files (label,feature / id,feature) and Kaggle's (emotion,pixels / pixels) alike."""
    folder, images = course
    header, first, second = (
        (f"{id_column},{pixel_column}", "1,", "2,") if id_column else (pixel_column, "", "")
    )
    write_lines(folder / "test.csv", [header, first + pixels(images[0]), second + "1 2 3"])
    with pytest.raises(DataError, match=r"test\.csv: line 3: expected 2304 pixels, got 3"):
        read_dataset(folder, cache_dir=False)
    write_lines(folder / "train.csv", [f"lbl,{pixel_column}", f"1,{pixels(images[0])}"])
    missing = rf"train\.csv: line 1: missing column {label} \(found columns: lbl, {pixel_column}"
    with pytest.raises(DataError, match=missing):
        read_dataset(folder, cache_dir=False)


def write_kaggle_pair(folder: Path, images: np.ndarray, labels: list[int]) -> None:
    """The Kaggle competition's own train.csv (emotion,pixels) and test.csv (pixels) for `images`, the
    labelled ones first."""
    n = len(labels)
    rows = [f"{k},{pixels(im)}" for k, im in zip(labels, images[:n], strict=True)]
    write_lines(folder / "train.csv", ["emotion,pixels", *rows])
    write_lines(folder / "test.csv", ["pixels", *(pixels(im) for im in images[n:])])


def test_kaggle_train_csv_alone(tmp_path):
    images = faces(3, seed=5)
    write_kaggle_pair(tmp_path, images, [0, 6, 3])
    (tmp_path / "test.csv").unlink()
    got = read_dataset(tmp_path / "train.csv", cache_dir=False)
    np.testing.assert_array_equal(got.images, images)
    assert list(got.labels) == [0, 6, 3] and got.split_counts() == {"Training": 3}


@pytest.mark.parametrize("target", ["icml_face_data.csv", ""])
def test_icml_face_data_header_with_spaces(tmp_path, target):
    images = faces(3, seed=7)
    rows = [f"{k},{u},{pixels(im)}" for k, u, im in zip([4, 0, 6], FER2013_SPLITS, images, strict=True)]
    write_lines(tmp_path / "icml_face_data.csv", ["emotion, Usage, pixels", *rows])
    got = read_dataset(tmp_path / target, cache_dir=False)
    assert got.layout == "fer2013_csv" and got.source == str((tmp_path / "icml_face_data.csv").resolve())
    np.testing.assert_array_equal(got.images, images)
    assert list(got.labels) == [4, 0, 6] and list(got.split) == list(FER2013_SPLITS)
    assert got.warnings == []


def save_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def image_tree(tmp_path):
    images = faces(5, seed=3)
    root = tmp_path / "fer"
    save_image(root / "train/happy/Training_1.png", images[0])
    save_image(root / "train/Sad/b.png", images[1])
    save_image(root / "test/ANGRY/PrivateTest_7.png", images[2])
    save_image(root / "test/angry/PublicTest_3.png", images[3])
    save_image(root / "test/neutral/plain.png", images[4])
    save_image(root / "train/fear/x.jpg", images[0])
    return root, images


def test_image_folder(image_tree):
    root, images = image_tree
    rgb = np.zeros((64, 60, 3), np.uint8) + np.array([200, 100, 50], np.uint8)
    save_image(root / "train/surprise/big.png", rgb)
    with pytest.warns(DataWarning, match="converted 1 images to 48x48 grayscale") as caught:
        got = read_dataset(root, cache_dir=False)
    assert str(root / "train/surprise/big.png") in str(caught[0].message) and got.warnings == [
        str(caught[0].message)
    ]
    by_id = {i: k for k, i in enumerate(got.ids)}
    assert set(by_id) == {
        "train/happy/Training_1.png",
        "train/Sad/b.png",
        "test/ANGRY/PrivateTest_7.png",
        "test/angry/PublicTest_3.png",
        "test/neutral/plain.png",
        "train/fear/x.jpg",
        "train/surprise/big.png",
    }
    expect = {  # id -> (label, split, image)
        "train/happy/Training_1.png": (3, "Training", images[0]),
        "train/Sad/b.png": (4, "Training", images[1]),
        "test/ANGRY/PrivateTest_7.png": (0, "PrivateTest", images[2]),
        "test/angry/PublicTest_3.png": (0, "PublicTest", images[3]),
        "test/neutral/plain.png": (6, "test", images[4]),
    }
    for name, (label, split, image) in expect.items():
        k = by_id[name]
        assert (got.labels[k], got.split[k]) == (label, split)
        np.testing.assert_array_equal(got.images[k], image)
    big = by_id["train/surprise/big.png"]
    assert got.labels[big] == 5 and (got.images[big] == 124).all()  # ITU-R 601 luma of (200, 100, 50)
    assert got.labels[by_id["train/fear/x.jpg"]] == 2 and got.layout == "image_folder"


def test_image_folder_unknown_class(image_tree):
    root, images = image_tree
    save_image(root / "train/smiling/a.png", images[0])
    with pytest.raises(DataError) as error:
        read_dataset(root, cache_dir=False)
    assert "'smiling'" in str(error.value) and str(root / "train/smiling") in str(error.value)
    assert "angry, disgust, fear, happy, sad, surprise, neutral" in str(error.value)


def test_unreadable_image(image_tree):
    root, _ = image_tree
    broken = root / "train/Sad/broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"{broken}: unreadable image"):
        read_dataset(root, cache_dir=False)
    with pytest.warns(DataWarning, match=f"skipped 1 bad images of {root} \\(first: {broken}"):
        got = read_dataset(root, on_bad_row="skip", cache_dir=False)
    assert got.skipped == 1 and len(got) == 6 and "train/Sad/broken.jpg" not in got.ids


@pytest.fixture
def fake_synthetic(monkeypatch):
    """A stand-in fer.data.synthetic that records its calls."""
    calls = []

    def generate(n: int, seed: int = 0, balanced: bool = False) -> FaceSet:
        calls.append((n, seed, balanced))
        return FaceSet(
            np.zeros((n, 48, 48), np.uint8),
            np.zeros(n, np.int64),
            np.full(n, "Training"),
            np.arange(n).astype(str),
            "synthetic",
            "synthetic",
        )

    monkeypatch.setattr(readers.synthetic, "generate", generate)
    return calls


def test_synthetic_dispatch(fake_synthetic, tmp_path):
    assert len(read_dataset("synthetic://12?seed=3&balanced=1", cache_dir=tmp_path / "cache")) == 12
    read_dataset("synthetic://5", layout="synthetic", cache_dir=False)
    assert fake_synthetic == [(12, 3, True), (5, 0, False)]
    # cached like a file: the same address is read back, not drawn again
    assert len(read_dataset("synthetic://12?seed=3&balanced=1", cache_dir=tmp_path / "cache")) == 12
    assert len(fake_synthetic) == 2


@pytest.mark.parametrize(
    "address, fragment",
    [
        ("synthetic://abc", "positive integer"),
        ("synthetic://0", "positive integer"),
        ("synthetic://5?colour=1", "unknown option 'colour'"),
        ("synthetic://5?seed=x", "bad seed 'x'"),
        ("synthetic://5?balanced=yes", "bad balanced 'yes'"),
    ],
)
def test_synthetic_bad_address(fake_synthetic, address, fragment):
    with pytest.raises(DataError, match=fragment):
        read_dataset(address)
    assert fake_synthetic == []


def test_cli_summary(tmp_path, capsys):
    path = write_fer2013(tmp_path / "x.csv", faces(4), [0, 0, 3, 6], ["Training"] * 3 + ["PublicTest"])
    assert main([str(path), "--cache-dir", str(tmp_path / "cache")]) == 0
    first = capsys.readouterr().out
    assert main([str(path), "--cache-dir", str(tmp_path / "cache")]) == 0
    second = capsys.readouterr().out
    assert "layout  fer2013_csv" in first and f"source  {path.resolve()}" in first
    assert "(cache miss)" in first and "(cache hit)" in second
    table = [line.split() for line in first.splitlines()[5:]]
    assert table[0] == ["split", "rows", *CLASS_NAMES, "unlabelled"]
    assert table[1] == ["Training", "3", "2", "0", "0", "1", "0", "0", "0", "0"]
    assert table[2] == ["PublicTest", "1", "0", "0", "0", "0", "0", "0", "1", "0"]


def test_cli_prints_data_notes_as_plain_lines(tmp_path, good_rows, capsys):
    _, rows = good_rows
    rows = ["9" + rows[0][1:], rows[1].replace(",Training", ",Trainnig"), rows[2], rows[3]]
    path = write_lines(tmp_path / "x.csv", ["emotion,pixels,Usage", *rows])
    assert main([str(path), "--on-bad-row", "skip", "--no-cache"]) == 0
    out, err = capsys.readouterr()
    source = path.resolve()
    assert err.splitlines() == [
        f"note: skipped 1 bad rows of {source} (first: {source}: line 2: label '9' outside 0-6)",
        f"note: 1 rows of {source} have a Usage other than Training, PublicTest, PrivateTest: 'Trainnig' (1) "
        "(first on line 3); only a stage whose data.splits names that split reads them, so correct the "
        "Usage in the file if it is a typo",
    ]
    assert "rows    3 (1 bad rows skipped)" in out and "Warning" not in out + err


def test_cli_error_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fer.data", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'missing.csv'}: no such file")
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.slow  # parses the real 84 MB file
@pytest.mark.skipif(not REAL_DATA.exists(), reason="shared FER2013 copy not present")
def test_real_fer2013(tmp_path):
    got = read_dataset(REAL_DATA, cache_dir=tmp_path)
    assert got.split_counts() == {"Training": 28709, "PublicTest": 3589}
    train, public = (got.subset(got.split == s).class_counts().tolist() for s in ("Training", "PublicTest"))
    assert train == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert public == [467, 56, 496, 895, 653, 415, 607]
    cached = read_dataset(REAL_DATA, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.images, got.images)

"""The edge runtime: Predictor and cxr-predict on a model exported from the synthetic set."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from checks import assert_one_line_error
from cxr.runtime.cli import app as predict_app
from cxr.core.errors import MissingDependencyError, ModelError
from cxr.runtime.predictor import Failure, Prediction, Predictor

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def predictor(exported) -> Predictor:
    return Predictor(exported.path)


@pytest.fixture(scope="module")
def test_images(dataset: Path) -> list[Path]:
    return sorted((dataset / "test").rglob("*.*"))


def test_predictions_match_keras(predictor: Predictor, trained, test_images: list[Path]) -> None:
    import keras

    from cxr.runtime.imaging import load_image

    model = keras.saving.load_model(trained.model_path, safe_mode=True)
    for path in test_images[:6]:
        result = predictor.predict(path)
        pixels = load_image(path, 32, predictor.info.input.contrast)
        expected = model.predict(pixels[np.newaxis].astype(np.float32), verbose=0)[0]
        got = np.array([result.probabilities[n] for n in trained.class_names])
        assert np.max(np.abs(got - expected)) <= 1e-4
        assert result.label == trained.class_names[int(np.argmax(expected))]
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_predictor_is_safe_to_share_between_threads(predictor: Predictor, test_images: list[Path]) -> None:
    serial = [predictor.predict(p).probabilities for p in test_images]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(lambda p: predictor.predict(p).probabilities, test_images * 3))
    assert parallel == serial * 3


def test_model_without_metadata_is_refused(exported, tmp_path: Path) -> None:
    proto = onnx.load(exported.path)
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, bare)
    with pytest.raises(ModelError, match="not a cxr model"):
        Predictor(bare)


def test_cuda_where_there_is_none_is_a_clear_error(exported) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(MissingDependencyError, match="cxr\\[gpu\\]"):
        Predictor(exported.path, provider="cuda")
    result = runner.invoke(predict_app, ["x.png", "--model", str(exported.path), "--provider", "cuda"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1


def test_cli_table_json_and_csv(exported, dataset: Path, tmp_path: Path) -> None:
    folder = dataset / "test" / "Normal"
    one = dataset / "test" / "Covid" / "0.jpeg"
    table = runner.invoke(predict_app, [str(one), "--model", str(exported.path)])
    assert table.exit_code == 0, table.output
    header, row = table.stdout.splitlines()
    assert header.split("\t") == ["file", "class", "Covid", "Normal", "Viral Pneumonia", "ood_score", "in_distribution"]
    assert row.split("\t")[:2] == [str(one), "Covid"] and row.split("\t")[-1] == "yes"

    csv_path = tmp_path / "out.csv"
    lines = runner.invoke(predict_app, [str(folder), str(one), "--json", "--csv", str(csv_path), "--model", str(exported.path)])
    assert lines.exit_code == 0, lines.output
    records = [json.loads(line) for line in lines.stdout.splitlines()]
    expected_files = [str(p) for p in sorted(folder.iterdir())] + [str(one)]
    assert [r["file"] for r in records] == expected_files
    assert {r["class"] for r in records[:-1]} == {"Normal"}
    assert all(isinstance(r["in_distribution"], bool) and r["ood_score"] > 0 for r in records)
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "file,class,Covid,Normal,Viral Pneumonia,ood_score,in_distribution"
    assert len(rows) == len(records) + 1
    assert [row.split(",")[-1] for row in rows[1:]] == [str(r["in_distribution"]).lower() for r in records]


def test_cli_marks_a_photo_unlike_the_training_images_and_still_exits_0(exported, photo: Path) -> None:
    table = runner.invoke(predict_app, [str(photo), "--model", str(exported.path)])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[1].endswith("\tno: unlike the training images")
    line = json.loads(runner.invoke(predict_app, [str(photo), "--json", "--model", str(exported.path)]).stdout)
    assert line["in_distribution"] is False and line["ood_score"] > Predictor(exported.path).info.ood.threshold


def test_cli_bad_files_fail_alone_with_exit_1(exported, dataset: Path, tmp_path: Path, monkeypatch) -> None:
    import cxr.runtime.imaging as imaging

    good = dataset / "test" / "Covid" / "0.jpeg"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "cut.jpeg"
    truncated.write_bytes(good.read_bytes()[:200])
    big = tmp_path / "big.png"
    Image.new("L", (65, 64)).save(big)
    monkeypatch.setattr(imaging, "MAX_PIXELS", 64 * 64)  # the synthetic images are 64x64
    missing = tmp_path / "missing.png"
    paths = [empty, good, text, truncated, big, missing]
    result = runner.invoke(predict_app, [*map(str, paths), "--json", "--model", str(exported.path)])
    assert result.exit_code == 1
    assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == [str(good)]
    errors = result.stderr.splitlines()
    assert len(errors) == 5 and all(line.startswith("error: ") for line in errors)
    for path in (empty, text, truncated, big, missing):
        assert any(str(path) in line for line in errors), path
    assert "Traceback" not in result.output


@pytest.mark.parametrize("model", ["missing.onnx", "foreign.onnx"])
def test_cli_missing_or_foreign_model_exits_2(tmp_path: Path, dataset: Path, model: str) -> None:
    path = tmp_path / model
    if model == "foreign.onnx":
        path.write_text("definitely not protobuf")
    result = runner.invoke(predict_app, [str(dataset / "test" / "Covid" / "0.jpeg"), "--model", str(path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr


def test_runtime_never_imports_tensorflow(exported, dataset: Path) -> None:
    """A fresh interpreter runs a whole prediction through the CLI's code; no TensorFlow or Ray
    module may load."""
    script = textwrap.dedent(
        f"""
        import sys
        from cxr.runtime.cli import main
        from cxr.runtime.predictor import Predictor
        Predictor({str(exported.path)!r}).predict({str(dataset / "test" / "Covid" / "0.jpeg")!r})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "ray", "pyarrow"))
        print(heavy)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_no_edge_source_imports_tensorflow() -> None:
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(tensorflow|keras|tf2onnx)\b", re.M)
    # Everything but train/ and export/: the edge runtime, what it shares, evaluation, the demo, cxr-adapt.
    edge = [p for folder in ("core", "runtime", "eval", "demo", "adapt") for p in (ROOT / folder).rglob("*.py")]
    assert edge, "no runtime sources found"
    assert [str(p) for p in edge if pattern.search(p.read_text())] == []


def test_only_batch_scoring_imports_ray() -> None:
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(ray|pyarrow)\b", re.M)
    sources = [p for folder in ("core", "runtime", "train", "export", "eval", "demo") for p in (ROOT / folder).rglob("*.py")]
    assert sorted(p.name for p in sources if pattern.search(p.read_text())) == ["archive.py", "batch.py"]


def test_batch_without_the_scale_extra_is_one_line(exported, dataset: Path, monkeypatch) -> None:
    from cxr.runtime.batch_cli import app as batch_app

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the scale extra were not installed
    monkeypatch.setitem(sys.modules, "cxr.runtime.batch", None)
    result = runner.invoke(batch_app, [str(dataset / "test"), "--model", str(exported.path)])
    assert_one_line_error(result, "cxr-batch needs the scale extra: pip install 'cxr[scale]'")


def test_clis_start_without_their_extras(dataset: Path) -> None:
    """Importing any CLI loads no heavy extra, and a missing extra is a one-line error naming it."""
    script = textwrap.dedent(
        f"""
        import sys
        import cxr.train.cli, cxr.export.cli, cxr.eval.cli, cxr.demo.cli, cxr.runtime.cli, cxr.runtime.batch_cli
        heavy = ("tensorflow", "keras", "tf2onnx", "gradio", "matplotlib", "ray", "pyarrow")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        sys.modules["keras"] = None  # as if the train extra were not installed
        from typer.testing import CliRunner
        result = CliRunner().invoke(cxr.train.cli.app, ["--data", {str(dataset)!r}])
        print(result.exit_code, result.stderr.strip())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded, outcome = done.stdout.strip().splitlines()
    assert loaded == "[]"
    assert outcome.startswith("2 error: cxr-train needs the train extra: pip install 'cxr[train]'")


def test_in_memory_images_read_as_their_file_does(predictor: Predictor, dataset: Path) -> None:
    """Bytes, a PIL image or an array of the same X-ray are the model input its file is."""
    path = dataset / "test" / "Viral Pneumonia" / "1.png"
    expected = predictor.prepare(path)
    with Image.open(path) as opened:
        image = opened.copy()
    for source in (path.read_bytes(), image, np.asarray(image), np.asarray(image.convert("RGB"))):
        np.testing.assert_array_equal(predictor.prepare(source), expected)
    result = predictor.predict(path.read_bytes(), name="upload.png")
    assert result.file == "upload.png" and result.label == "Viral Pneumonia"
    assert result.probabilities == pytest.approx(predictor.predict(path).probabilities, abs=1e-6)


def test_predict_files_batches_and_keeps_each_failure_in_place(predictor: Predictor, test_images: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [*test_images[:5], broken, *test_images[5:]]
    outcomes = list(predictor.predict_files(paths, batch_size=4))
    assert [o.file for o in outcomes] == [str(p) for p in paths]
    assert isinstance(outcomes[5], Failure) and "broken.png: not an image" in outcomes[5].error
    one_by_one = [predictor.predict(p).probabilities for p in test_images]
    batched = [o.probabilities for o in outcomes if isinstance(o, Prediction)]
    assert all(b == pytest.approx(s, abs=1e-5) for b, s in zip(batched, one_by_one))


def test_any_error_reading_one_file_fails_that_file_alone(exported, dataset: Path, tmp_path: Path, monkeypatch) -> None:
    """An exception no reader expected (here a RuntimeError) is one line for its file; the rest go on."""
    import cxr.runtime.imaging as imaging

    good = dataset / "test" / "Covid" / "0.jpeg"
    odd = tmp_path / "odd.png"
    Image.new("L", (64, 48 + 32)).save(odd)
    real_to_rgb = imaging._to_rgb

    def explode(image, label):
        if image.size == (64, 80):
            raise RuntimeError("decoder crashed\nwith a second line")
        return real_to_rgb(image, label)

    monkeypatch.setattr(imaging, "_to_rgb", explode)
    csv_path = tmp_path / "out.csv"
    result = runner.invoke(predict_app, [str(odd), str(good), "--csv", str(csv_path), "--model", str(exported.path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: {odd}: cannot read (RuntimeError: decoder crashed)"]
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["file", str(good)]
    assert len(csv_path.read_text().splitlines()) == 2


@pytest.mark.parametrize("case", ["empty folder", "missing file"])
def test_cli_no_input_files(exported, tmp_path: Path, case: str) -> None:
    target = tmp_path / "nothing"
    if case == "empty folder":
        target.mkdir()
    result = runner.invoke(predict_app, [str(target), "--model", str(exported.path)])
    assert result.exit_code != 0 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "error: no input files found"

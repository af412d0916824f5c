"""Data as people download it: kaggle: handles (kagglehub replaced by a local stand-in; these
machines are offline), a collection without a train/test split, with masks beside its X-rays and a
class to leave out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from checks import assert_one_line_error
from cxr.eval.cli import app as eval_app
from cxr.train.cli import app as train_app
from synthetic import pattern

runner = CliRunner()
HANDLE = "kaggle:tawsifurrahman/covid19-radiography-database"
PICKED = ["--classes", "COVID", "--classes", "Normal", "--classes", "viral pneumonia"]
TRAIN_ARGS = ["--weights", "none", "--image-size", "32", "--epochs", "2", "--fine-tune", "0", "--contrast", "none", "--no-near-copies"]


def radiography_download(root: Path, per_class: int = 15) -> Path:
    """Laid out as the COVID-19 Radiography Database downloads: a wrapping folder, four class folders
    each with images/ and masks/, metadata beside them, and no train/test split."""
    data = root / "COVID-19_Radiography_Dataset"
    rng = np.random.default_rng(0)
    for label, name in enumerate(("COVID", "Normal", "Viral Pneumonia", "Lung_Opacity")):
        (data / name / "images").mkdir(parents=True)
        (data / name / "masks").mkdir()
        for i in range(per_class):
            Image.fromarray(pattern(label % 3, 64, rng)).save(data / name / "images" / f"{name}-{i}.png")
            # Were a mask read as an X-ray, it would be skipped as unreadable, and counted.
            (data / name / "masks" / f"{name}-{i}.png").write_text("a lung mask")
    (data / "COVID.metadata.xlsx").write_text("metadata")
    return root


@pytest.fixture
def kaggle(tmp_path: Path, monkeypatch) -> Path:
    """kagglehub.dataset_download answering with a local download; cxr's cache in tmp_path."""
    kagglehub = pytest.importorskip("kagglehub", reason="the kaggle extra (kagglehub) is not installed")
    download = radiography_download(tmp_path / "download")
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: str(download))
    monkeypatch.setenv("CXR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_kaggle_collection_without_a_split_trains_exports_and_evaluates(kaggle: Path, tmp_path: Path) -> None:
    from cxr.export.onnx_export import export_onnx

    out = tmp_path / "out"
    result = runner.invoke(train_app, ["--data", HANDLE, *PICKED, "--out", str(out), *TRAIN_ARGS])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["class_names"] == ["COVID", "Normal", "Viral Pneumonia"]  # Lung_Opacity left out
    assert record["skipped"] == []  # no mask was read
    # cxr made the split: a fifth of each class's 15 images is the test split, the same every time.
    assert record["splits"]["test"]["count"] == 9
    assert record["splits"]["train"]["count"] + record["splits"]["val"]["count"] == 36
    assert json.loads((out / "config.json").read_text())["data"] == [HANDLE]
    (split,) = (kaggle / "splits").iterdir()
    linked = list((split / "test").rglob("*.png"))  # every class's; --classes picks among them
    assert len(linked) == 12 and all(p.is_symlink() and "images" in p.resolve().parts for p in linked)

    export_onnx(out / "model.keras", out / "model.onnx")  # its parity images come from the handle too
    evaluated = runner.invoke(eval_app, ["--data", HANDLE, *PICKED, "--model", str(out / "model.onnx"), "--out", str(tmp_path / "r")])
    assert evaluated.exit_code == 0, evaluated.output
    files = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert files["metrics"]["count"] == 9


def test_a_class_the_collection_lacks_is_one_line(kaggle: Path, tmp_path: Path) -> None:
    result = runner.invoke(train_app, ["--data", HANDLE, "--classes", "Tuberculosis", "--out", str(tmp_path / "o"), *TRAIN_ARGS])
    assert result.exit_code == 2 and "Traceback" not in result.output
    # The line before it says where cxr made the collection's split.
    made, error = result.stderr.splitlines()
    assert "has no train/test split: made one (20% test)" in made
    assert error.startswith("error: no data root has a class folder 'Tuberculosis' (they have ['COVID', 'Lung_Opacity'")


def test_offline_a_kaggle_handle_is_one_line_naming_the_way_out(tmp_path: Path, monkeypatch) -> None:
    kagglehub = pytest.importorskip("kagglehub", reason="the kaggle extra (kagglehub) is not installed")

    def offline(handle, *args, **kwargs):
        raise ConnectionError("Max retries exceeded with url: /api/v1/datasets (Name or service not known)")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    result = runner.invoke(train_app, ["--data", HANDLE, "--out", str(tmp_path / "o"), *TRAIN_ARGS])
    assert_one_line_error(result, f"{HANDLE}: cannot download it (Max retries exceeded")
    assert "pass its folder as --data PATH" in result.stderr


def test_without_kagglehub_the_extra_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    result = runner.invoke(train_app, ["--data", HANDLE, "--out", str(tmp_path / "o"), *TRAIN_ARGS])
    assert_one_line_error(result, "pip install 'cxr[kaggle]'")

"""Every bad or unusual input in tests/corpus.py gets its one-line answer from cxr-predict and from
training; the demo's answers are in test_demo.py. No traceback, no extra stderr line, no hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corpus import CASES, Case, make_fifo
from cxr.runtime.cli import app as predict_app
from synthetic import FAST, copy_dataset

runner = CliRunner()


def made(case: Case, folder: Path) -> Path:
    if case.dicom:
        pytest.importorskip("pydicom", reason="the dicom extra (pydicom) is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    return case.make(folder)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_answers_each_input_in_one_line(case: Case, exported, dataset: Path, tmp_path: Path) -> None:
    path = made(case, tmp_path / "inputs")
    good = dataset / "test" / "Covid" / "0.jpeg"
    table = tmp_path / "out.csv"
    result = runner.invoke(predict_app, [str(path), str(good), "--csv", str(table), "--model", str(exported.path)])
    assert "Traceback" not in result.output
    errors = result.stderr.splitlines()
    predicted = [line.split(",")[0] for line in table.read_text().splitlines()[1:]]
    if case.refused:
        assert result.exit_code == 1, result.output
        assert len(errors) == 1 and errors[0].startswith(f"error: {path}: ") and case.message in errors[0], errors
        assert predicted == [str(good)]
    else:
        assert result.exit_code == 0 and errors == [], result.output
        assert predicted == [str(path), str(good)]


def test_a_fifo_is_refused_without_opening_it(exported, tmp_path: Path) -> None:
    pipe = make_fifo(tmp_path)
    command = [sys.executable, "-c", "from cxr.runtime.cli import app; app()", str(pipe), "--model", str(exported.path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)  # a hang fails here
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"error: {pipe}: not a regular file"]


def test_training_skips_each_refused_input_with_one_warning_or_stops_when_strict(dataset: Path, tmp_path: Path, caplog) -> None:
    from cxr.core.errors import DatasetError
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    data = copy_dataset(dataset, tmp_path / "data")
    refused = [c for c in CASES if c.refused and not (c.dicom and _no_pydicom())]
    bad = [made(c, data / "train" / "Covid") for c in refused]
    with caplog.at_level("WARNING", logger="cxr"):
        result = train(TrainConfig(data=data, out=tmp_path / "out", **FAST))
    for path, case in zip(bad, refused):
        reasons = [s for s in result.skipped if s.startswith(f"{path}: ")]
        assert len(reasons) == 1 and case.message in reasons[0], (case.name, result.skipped)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert all(any(str(path) in w for w in warnings) for path in bad)
    assert all("\n" not in w for w in warnings)
    with pytest.raises(DatasetError, match="--strict"):
        train(TrainConfig(data=data, out=tmp_path / "strict", strict=True, **FAST))
    assert not (tmp_path / "strict" / "model.keras").exists()


def _no_pydicom() -> bool:
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return True
    return False

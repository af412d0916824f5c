"""cxr-batch on a local Ray (2 CPUs): the same answers as cxr-predict, bad files as rows, reruns that
add only what is missing, also after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from checks import assert_one_line_error

pa = pytest.importorskip("pyarrow", reason="the scale extra (ray[data], pyarrow) runs cxr-batch")
pytest.importorskip("ray", reason="the scale extra (ray[data], pyarrow) runs cxr-batch")
import pyarrow.csv  # noqa: E402
import pyarrow.dataset  # noqa: E402
import pyarrow.parquet  # noqa: E402

from cxr.runtime.archive import list_inputs  # noqa: E402
from cxr.runtime.batch_cli import app as batch_app  # noqa: E402
from cxr.runtime.cli import app as predict_app  # noqa: E402
from cxr.runtime.predictor import Predictor  # noqa: E402

runner = CliRunner()
BAD_FILES = {
    "garbage.png": b"not an image at all",
    "empty.jpeg": b"",
    "notes.txt.jpg": "a text file with an image's name\n".encode(),
}


@pytest.fixture(scope="module")
def archive(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic data set's 48 images in nested folders, with unreadable files among them."""
    root = tmp_path_factory.mktemp("archive") / "films"
    shutil.copytree(dataset, root)
    for name, data in BAD_FILES.items():
        (root / "test" / "Covid" / name).write_bytes(data)
    Image.new("L", (20, 20), 128).save(root / "train" / "Normal" / "tiny.png")  # too small to be an X-ray
    return root


def read_rows(out: Path) -> list[dict]:
    return pa.dataset.dataset(out, format="parquet").to_table().to_pylist()


def test_rows_match_cxr_predict_and_bad_files_are_rows(exported, archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions.parquet"
    result = runner.invoke(batch_app, [str(archive), "--out", str(out), "--model", str(exported.path), "--workers", "2", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    rows = {row["file"]: row for row in read_rows(out)}

    predicted = runner.invoke(predict_app, [str(archive), "--model", str(exported.path), "--json"])
    assert predicted.exit_code == 1  # cxr-predict fails on the bad files; cxr-batch makes them rows
    expected = [json.loads(line) for line in predicted.stdout.splitlines()]
    errors = sorted(line.removeprefix("error: ") for line in predicted.stderr.splitlines())
    assert len(rows) == len(expected) + len(errors) == 48 + 4

    names = Predictor(exported.path).info.class_names
    for line in expected:
        row = rows[line["file"]]
        assert row["class"] == line["class"] and row["error"] is None
        np.testing.assert_allclose([row[n] for n in names], [line["probabilities"][n] for n in names], atol=1e-6)
        assert row["ood_score"] == pytest.approx(line["ood_score"], rel=1e-6)
        assert row["in_distribution"] == line["in_distribution"]
    assert sorted(row["error"] for row in rows.values() if row["error"]) == errors
    assert all(row["class"] is None for row in rows.values() if row["error"])
    digests = {(row["model"], row["model_sha256"]) for row in rows.values()}
    assert len(digests) == 1 and digests.pop()[0] == exported.path.name
    assert "scored 52 files on 2 workers" in result.stdout and "4 could not be read" in result.stdout

    again = runner.invoke(batch_app, [str(archive), "--out", str(out), "--model", str(exported.path)])
    assert again.exit_code == 0 and "nothing to score" in again.stdout
    assert len(read_rows(out)) == 52


def test_a_rerun_after_a_kill_scores_only_what_is_missing(exported, archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions.parquet"
    command = [sys.executable, "-m", "cxr.runtime.batch_cli", str(archive), "--out", str(out), "--model", str(exported.path)]
    command += ["--workers", "1", "--batch-size", "1", "--rows-per-file", "1"]  # one part file a row
    # Its own process group, so the kill takes the local Ray it started too, as a machine going
    # down would.
    killed = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while killed.poll() is None and time.monotonic() < deadline and len(list(out.glob("part-*.parquet"))) < 3:
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    before = read_rows(out)
    assert 3 <= len(before) < 52, "the run was not stopped part-way"
    for part in out.glob("part-*.parquet"):
        pa.parquet.read_table(part)  # every part file left behind is whole

    done = subprocess.run(command[:-6], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = read_rows(out)
    files = [row["file"] for row in after]
    assert len(files) == len(set(files)) == 52
    assert f"{len(before)} already had rows" in done.stdout
    kept = {row["file"]: row for row in after}
    assert all(kept[row["file"]] == row for row in before)  # what was written stays as it was


def test_inputs_as_patterns_lists_and_uris(archive: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(archive.parent)
    every = list_inputs(["films"])
    assert len(every) == 52 and every[0].startswith("films/")
    covid = list_inputs(["films/*/Covid/*.png"])
    assert covid and all(name.endswith(".png") and "/Covid/" in name for name in covid)
    (tmp_path / "list.txt").write_text("\n".join(every[:5]) + "\n\n")
    pa.csv.write_csv(pa.table({"path": every[5:9], "other": range(4)}), tmp_path / "list.csv")
    pa.parquet.write_table(pa.table({"path": every[9:12]}), tmp_path / "list.parquet")
    listed = list_inputs([str(tmp_path / name) for name in ("list.txt", "list.csv", "list.parquet")] + every[:2])
    assert listed == every[:12]  # in order, each once
    uris = list_inputs([f"file://{archive.absolute()}/test"])
    assert len(uris) == 12 + 3 and all(u.startswith(f"file://{archive.absolute()}/test/") for u in uris)


def test_files_named_by_uri_are_read_by_the_workers(exported, archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions.parquet"
    folder = f"file://{archive.absolute()}/test/Normal"
    result = runner.invoke(batch_app, [folder, "--out", f"file://{out}", "--model", str(exported.path), "--workers", "1"])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    local = runner.invoke(predict_app, [str(archive / "test" / "Normal"), "--model", str(exported.path), "--json"])
    expected = {Path(line["file"]).name: line for line in map(json.loads, local.stdout.splitlines())}
    assert len(rows) == len(expected) == 4
    for row in rows:
        assert row["file"].startswith("file://") and row["class"] == expected[Path(row["file"]).name]["class"]


@pytest.mark.parametrize(
    "case, needle, code",
    [
        ("nothing", "no such file or folder, or no file matches it", 1),
        ("no-path-column", "no 'path' column", 1),
        ("other-model", "holds predictions of another model", 2),
        ("out-is-a-file", "is a file", 2),
        ("no-model", "no such model file", 2),
    ],
)
def test_bad_requests_are_one_line(exported, archive: Path, tmp_path: Path, case: str, needle: str, code: int) -> None:
    inputs, out, model = [str(archive / "test")], tmp_path / "out", exported.path
    if case == "nothing":
        inputs = [str(tmp_path / "missing" / "*.png")]
    elif case == "no-path-column":
        pa.csv.write_csv(pa.table({"file": ["a.png"]}), tmp_path / "list.csv")
        inputs = [str(tmp_path / "list.csv")]
    elif case == "other-model":
        out.mkdir()
        pa.parquet.write_table(pa.table({"file": ["x.png"], "model_sha256": ["0" * 64]}), out / "part-old.parquet")
    elif case == "out-is-a-file":
        out.write_text("")
    else:
        model = tmp_path / "missing.onnx"
    result = runner.invoke(batch_app, [*inputs, "--out", str(out), "--model", str(model)])
    assert_one_line_error(result, needle, code)

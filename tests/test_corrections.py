"""Label corrections: a CSV of films matched by content, applied in training and in evaluation,
recorded in the run record and the model file; every malformed file is one line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from checks import assert_one_line_error
from synthetic import CLASSES, copy_dataset
from cxr.core.corrections import COLUMNS, correct, corrected_files, read_corrections
from cxr.core.errors import DatasetError
from cxr.eval.cli import app as eval_app
from cxr.train.cli import app as train_app
from test_train import FAST_ARGS

runner = CliRunner()
HEADER = ",".join(COLUMNS)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corrections_file(folder: Path, *rows: str) -> Path:
    path = folder / "fixes.csv"
    path.write_text("\n".join(["# a comment", HEADER, *rows]) + "\n")
    return path


def test_corrections_match_by_content_and_report_what_matched_nothing(tmp_path: Path) -> None:
    fixes = corrections_file(
        tmp_path,
        f"{'a' * 64},x/1.png,SARS,relabel,viral pneumonia",  # spelt case aside
        f"{'b' * 64},x/2.png,ARDS,drop,",
        f"{'c' * 64},x/3.png,elsewhere,drop,",
    )
    read = read_corrections([fixes], CLASSES)
    assert [(c.action, c.label) for c in read] == [("relabel", "Viral Pneumonia"), ("drop", ""), ("drop", "")]
    done = correct(["b" * 64, "d" * 64, "a" * 64], [0, 1, 0], ["one", "two", "one"], read, CLASSES, [fixes])
    assert done.keep == [1, 2] and done.labels == [1, 2]
    assert done.applied.counts == {"one": {"drop": 1, "relabel": 1}}
    assert [c.file for c in done.applied.unmatched] == ["x/3.png"]
    assert "1 matched no film (x/3.png)" in done.applied.summary()


def test_corrected_files_find_a_renamed_copy_by_content(tmp_path: Path) -> None:
    original, renamed, other = tmp_path / "a.png", tmp_path / "moved" / "b.png", tmp_path / "c.png"
    renamed.parent.mkdir()
    for path, body in ((original, b"one film"), (renamed, b"another film"), (other, b"a third")):
        path.write_bytes(body)
    seen_as = tmp_path / "seen.png"
    seen_as.write_bytes(b"another film")  # the film as the corrections file saw it, elsewhere
    fixes = corrections_file(tmp_path, f"{sha256(original)},a.png,ARDS,drop,", f"{sha256(seen_as)},seen.png,SARS,relabel,Normal")
    kept = corrected_files([(original, 0), (renamed, 0), (other, 2)], read_corrections([fixes], CLASSES), CLASSES)
    assert kept == [(renamed, CLASSES.index("Normal")), (other, 2)]


@pytest.mark.parametrize(
    "rows, needle",
    [
        (["sha,file,finding,action,class"], "the header is sha,file"),
        ([HEADER, "abc,x.png,SARS,drop,"], "is not a SHA-256"),
        ([HEADER, f"{'a' * 64},x.png,SARS,delete,"], "action 'delete'"),
        ([HEADER, f"{'a' * 64},x.png,TB,relabel,Tuberculosis"], "class 'Tuberculosis' is not one of the model's classes"),
        ([HEADER, f"{'a' * 64},x.png,SARS,drop,Covid"], "a dropped film takes no class"),
        ([HEADER, f"{'a' * 64},x.png,SARS"], "3 fields; expected 5"),
        ([HEADER, f"{'a' * 64},x.png,SARS,drop,", f"{'a' * 64},y.png,SARS,relabel,Normal"], "corrected two ways"),
        ([], "empty"),
    ],
)
def test_a_malformed_corrections_file_is_a_dataset_error_naming_the_line(tmp_path: Path, rows: list[str], needle: str) -> None:
    path = tmp_path / "fixes.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=needle):
        read_corrections([path], CLASSES)


def test_training_applies_corrections_to_a_renamed_copy_and_records_them(dataset: Path, tmp_path: Path) -> None:
    data = copy_dataset(dataset, tmp_path / "data")
    dropped, relabelled = data / "train" / "Covid" / "3.jpeg", data / "train" / "Normal" / "4.png"
    fixes = corrections_file(
        tmp_path,
        f"{sha256(dropped)},somewhere/else.jpeg,not COVID-19,drop,",
        f"{sha256(relabelled)},Normal/4.png,a Covid film,relabel,Covid",
        f"{'f' * 64},gone.png,a film not in this set,drop,",
    )
    shutil.move(relabelled, relabelled.with_name("renamed.png"))  # found by its bytes, not its name
    out = tmp_path / "out"
    result = runner.invoke(train_app, ["--data", str(data), "--out", str(out), "--corrections", str(fixes), *FAST_ARGS])
    assert result.exit_code == 0, result.output
    assert "corrections applied to 2 films (data/train: 1 dropped, 1 relabelled); 1 matched no film (gone.png)" in result.stdout
    record = json.loads((out / "metrics.json").read_text())
    assert record["corrections"]["counts"] == {"data/train": {"drop": 1, "relabel": 1}}
    assert [c["file"] for c in record["corrections"]["unmatched"]] == ["gone.png"]
    trained = {name: sum(record["splits"][split]["per_class"].get(name, 0) for split in ("train", "val")) for name in CLASSES}
    assert trained == {"Covid": 12, "Normal": 11, "Viral Pneumonia": 12}  # 12 each before: one dropped, one moved
    assert json.loads((out / "config.json").read_text())["corrections"] == [str(fixes.resolve())]


def test_a_correction_onto_a_class_the_model_lacks_is_one_line_and_nothing_is_written(dataset: Path, tmp_path: Path) -> None:
    fixes = corrections_file(tmp_path, f"{sha256(dataset / 'train' / 'Covid' / '0.jpeg')},0.jpeg,TB,relabel,Tuberculosis")
    out = tmp_path / "out"
    result = runner.invoke(train_app, ["--data", str(dataset), "--out", str(out), "--corrections", str(fixes), *FAST_ARGS])
    assert_one_line_error(result, "class 'Tuberculosis' is not one of the model's classes")
    assert not out.exists()


def test_evaluation_shows_the_source_labels_and_the_corrected_ones_side_by_side(exported, dataset: Path, tmp_path: Path) -> None:
    """The synthetic model is right on every test film: a film moved into the wrong folder is a
    mistake with the source's labels, and right again once a correction relabels it."""
    data = copy_dataset(dataset / "test", tmp_path / "test")
    moved = data / "Normal" / "moved.jpeg"
    shutil.move(data / "Covid" / "0.jpeg", moved)
    fixes = corrections_file(
        tmp_path,
        f"{sha256(moved)},Covid/0.jpeg,misfiled,relabel,Covid",
        f"{sha256(data / 'Normal' / '1.png')},Normal/1.png,unreadable film,drop,",
    )
    out = tmp_path / "reports"
    result = runner.invoke(eval_app, ["--data", str(data), "--model", str(exported.path), "--out", str(out), "--corrections", str(fixes)])
    assert result.exit_code == 0, result.output
    assert "all: accuracy 0.917 on 12 images with the source's labels, 1.000 on 11 corrected" in result.stdout
    record = json.loads((out / "metrics.json").read_text())
    assert record["corrected"]["metrics"]["count"] == 11 and record["corrected"]["applied"]["counts"] == {"test": {"drop": 1, "relabel": 1}}
    assert "| all | 12 | 0.917 | 11 | 1.000 |" in (out / "report.md").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("not,a,header\n")
    refused = runner.invoke(eval_app, ["--data", str(data), "--model", str(exported.path), "--out", str(tmp_path / "r2"), "--corrections", str(bad)])
    assert_one_line_error(refused, "the header is not,a,header")
    assert not (tmp_path / "r2").exists()

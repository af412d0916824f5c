"""``cxr-predict``: classify X-ray images with an exported model; no TensorFlow needed."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cxr.core.cli import Command, VersionOption, boundary, new_app
from cxr.core.datasets import files_under
from cxr.core.errors import CxrError, InputFileError
from cxr.core.files import atomic_path
from cxr.core.progress import progress

from .predictor import Failure, Prediction, Predictor, Provider

app = new_app(__doc__)

# Below this many files a progress bar is only noise.
_PROGRESS_FROM = 10


@app.command(cls=Command)
def main(
    inputs: Annotated[list[Path], typer.Argument(metavar="input", help="Image or DICOM files, and folders to search.", show_default=False)],
    model: Annotated[Path, typer.Option(envvar="CXR_MODEL", help="Model from cxr-export (a relative path is from the current folder).")] = Path("artifacts/model.onnx"),
    provider: Annotated[Provider, typer.Option(help="auto: CUDA where available, else CPU.")] = "auto",
    threads: Annotated[int, typer.Option(min=0, help="onnxruntime threads (0: its default).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Also write the results to this CSV file.")] = None,
    version: VersionOption = False,
) -> None:
    """Predict each file; exit 1 if any input could not be read."""
    with boundary():
        predictor = Predictor(model, provider=provider, threads=threads or None)
        files, failures = expand_inputs(inputs)
        for failure in failures:
            typer.echo(f"error: {failure}", err=True)
        if not files:
            raise (InputFileError if failures else CxrError)("no input files found")
        names = predictor.info.class_names
        if not as_json:
            typer.echo("\t".join(["file", "class", *names]))
        results: list[Prediction] = []
        # In a terminal the rows themselves show the progress; a bar there would share their lines.
        show_bar = len(files) >= _PROGRESS_FROM and not sys.stdout.isatty()
        for outcome in progress(predictor.predict_files(files), "Predicting", total=len(files), show=show_bar):
            if isinstance(outcome, Failure):
                typer.echo(f"error: {outcome.error}", err=True)
                failures.append(outcome.error)
                continue
            results.append(outcome)
            typer.echo(_json_line(outcome) if as_json else _table_row(outcome, names))
        if csv_path is not None:
            write_csv(csv_path, results, names)
    if failures:
        raise typer.Exit(1)


def expand_inputs(inputs: list[Path]) -> tuple[list[Path], list[str]]:
    """Files as given and folders searched recursively (sorted, hidden skipped); missing paths listed."""
    files: list[Path] = []
    missing: list[str] = []
    for path in inputs:
        if path.is_dir():
            files.extend(files_under(path))
        elif path.exists():
            files.append(path)
        else:
            missing.append(f"{path}: no such file or folder")
    return files, missing


def _table_row(result: Prediction, names: list[str]) -> str:
    return "\t".join([result.file, result.label, *(f"{result.probabilities[n]:.4f}" for n in names)])


def _json_line(result: Prediction) -> str:
    return json.dumps(
        {
            "file": result.file,
            "class": result.label,
            "probabilities": result.probabilities,
            "seconds": round(result.seconds, 4),
        }
    )


def write_csv(target: Path, results: list[Prediction], names: list[str]) -> None:
    with atomic_path(target) as tmp, tmp.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["file", "class", *names])
        for result in results:
            writer.writerow([result.file, result.label, *(f"{result.probabilities[n]:.6f}" for n in names)])

"""``cxr-predict``: classify X-ray images with an exported model; no TensorFlow needed."""

from __future__ import annotations

import csv
import json
from enum import Enum
from pathlib import Path

import typer

from .dataset import files_under
from .errors import CxrError, cli_errors
from .files import atomic_path
from .predictor import Prediction, Predictor
from .progress import progress

app = typer.Typer(add_completion=False, help=__doc__)

# Below this many files a progress bar is only noise.
_PROGRESS_FROM = 10


class ProviderChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command()
def main(
    inputs: list[Path] = typer.Argument(..., help="Image or DICOM files, and folders to search."),
    model: Path = typer.Option(Path("artifacts/model.onnx"), envvar="CXR_MODEL", help="Model from cxr-export."),
    provider: ProviderChoice = typer.Option(ProviderChoice.auto, help="auto: CUDA where available, else CPU."),
    threads: int = typer.Option(0, min=0, help="onnxruntime threads (0: its default)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Also write the results to this CSV file."),
) -> None:
    """Predict each file; exit 1 if any input could not be read."""
    with cli_errors():
        predictor = Predictor(model, provider=provider.value, threads=threads or None)
    files, failures = expand_inputs(inputs)
    for failure in failures:
        typer.echo(f"error: {failure}", err=True)
    names = predictor.info.class_names
    if not as_json:
        typer.echo("\t".join(["file", "class", *names]))
    results: list[Prediction] = []
    items = progress(files, "Predicting") if len(files) >= _PROGRESS_FROM else files
    for path in items:
        try:
            result = predictor.predict_file(path)
        except CxrError as error:  # this file failed (unreadable, or DICOM without pydicom)
            typer.echo(f"error: {error}", err=True)
            failures.append(str(error))
            continue
        results.append(result)
        typer.echo(_json_line(result) if as_json else _table_row(result, names))
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

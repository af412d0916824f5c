"""``cxr-predict``: classify X-ray images with an exported model; no TensorFlow needed."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from cxr.core.cli import Command, VersionOption, boundary, new_app
from cxr.core.datasets import files_under
from cxr.core.errors import CxrError, InputFileError
from cxr.core.files import atomic_path
from cxr.core.progress import progress

from .heatmaps import write_png
from .predictor import Failure, Prediction, Predictor, Provider

app = new_app(__doc__)

# Below this many files a progress bar is only noise.
_PROGRESS_FROM = 10
# How the table marks an image the model's out-of-distribution gate flags: its class is no answer.
UNLIKE = "no: unlike the training images"


@app.command(cls=Command)
def main(
    inputs: Annotated[list[Path], typer.Argument(metavar="input", help="Image or DICOM files, and folders to search.", show_default=False)],
    model: Annotated[Path, typer.Option(envvar="CXR_MODEL", help="Model from cxr-export (a relative path is from the current folder).")] = Path("artifacts/model.onnx"),
    provider: Annotated[Provider, typer.Option(help="auto: CUDA where available, else CPU.")] = "auto",
    threads: Annotated[int, typer.Option(min=0, help="onnxruntime threads (0: its default).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Also write the results to this CSV file.")] = None,
    heatmaps: Annotated[Path | None, typer.Option("--heatmaps", metavar="DIR", help="Write one PNG per input to this folder: the predicted class's evidence map over the image as the model read it.", show_default=False)] = None,
    version: VersionOption = False,
) -> None:
    """Predict each file; exit 1 if any input could not be read.

    Images unlike those the model was trained on (not a chest X-ray, or one very unlike them) are
    still predicted, and marked in_distribution "no"; that is a result, not an error."""
    with boundary():
        predictor = Predictor(model, provider=provider, threads=threads or None)
        if predictor.info.adaptation:
            typer.echo(f"note: {model} is {predictor.info.adaptation.summary}", err=True)
        files, failures = expand_inputs(inputs)
        for failure in failures:
            typer.echo(f"error: {failure}", err=True)
        if not files:
            raise (InputFileError if failures else CxrError)("no input files found")
        if heatmaps is not None and heatmaps.exists() and not heatmaps.is_dir():
            raise CxrError(f"--heatmaps {heatmaps}: not a folder")
        names = predictor.info.class_names
        gated = predictor.info.ood is not None
        columns = ["file", "class", *names, *(["ood_score", "in_distribution"] if gated else []), *(["heatmap"] if heatmaps else [])]
        if not as_json:
            typer.echo("\t".join(columns))
        rows: list[Row] = []
        overlays = OverlayNames(heatmaps) if heatmaps else None
        # In a terminal the rows themselves show the progress; a bar there would share their lines.
        show_bar = len(files) >= _PROGRESS_FROM and not sys.stdout.isatty()
        outcomes = predictor.predict_files(files, heatmaps="predicted" if heatmaps else "none")
        for outcome in progress(outcomes, "Predicting", total=len(files), show=show_bar):
            if isinstance(outcome, Failure):
                typer.echo(f"error: {outcome.error}", err=True)
                failures.append(outcome.error)
                continue
            row = Row(outcome, overlays.write(outcome) if overlays else None)
            rows.append(row)
            typer.echo(json.dumps(row.to_json()) if as_json else "\t".join(row.cells(names, table=True)))
        if csv_path is not None:
            write_csv(csv_path, rows, columns, names)
    if failures:
        raise typer.Exit(1)


@dataclass(frozen=True)
class Row:
    """One predicted file as cxr-predict reports it: in the table, as JSON and in the CSV file."""

    prediction: Prediction
    heatmap: Path | None  # the overlay PNG written for it, if any

    def cells(self, names: list[str], table: bool) -> list[str]:
        """The row's cells: rounded and the flag in words for the table, in full for a CSV file."""
        result = self.prediction
        digits = 4 if table else 6
        cells = [result.file, result.label, *(f"{result.probabilities[n]:.{digits}f}" for n in names)]
        if result.in_distribution is not None:
            flag = ("yes" if result.in_distribution else UNLIKE) if table else str(result.in_distribution).lower()
            cells += [f"{result.ood_score:.1f}", flag]
        return cells + ([str(self.heatmap)] if self.heatmap else [])

    def to_json(self) -> dict[str, object]:
        result = self.prediction
        line: dict[str, object] = {
            "file": result.file,
            "class": result.label,
            "probabilities": result.probabilities,
            "seconds": round(result.seconds, 4),
        }
        if result.in_distribution is not None:
            line["ood_score"] = result.ood_score
            line["in_distribution"] = result.in_distribution
        if self.heatmap:
            line["heatmap"] = str(self.heatmap)
        return line


class OverlayNames:
    """Writes each prediction's overlay as ``folder/<file name>.png``, numbering names already used
    in this run (two folders may each hold a 0001.jpeg)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._used: set[str] = set()

    def write(self, prediction: Prediction) -> Path:
        stem = Path(prediction.file).stem
        name, n = f"{stem}.png", 1
        while name in self._used:
            n += 1
            name = f"{stem}-{n}.png"
        self._used.add(name)
        target = self.folder / name
        assert prediction.heatmaps is not None  # asked for with heatmaps="predicted"
        write_png(target, prediction.heatmaps.overlay(prediction.label))
        return target


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


def write_csv(target: Path, rows: list[Row], columns: list[str], names: list[str]) -> None:
    with atomic_path(target) as tmp, tmp.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(row.cells(names, table=False) for row in rows)

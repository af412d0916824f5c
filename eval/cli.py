"""``cxr-eval``: metrics with intervals, the reference report's figures and a model card."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import typer

from cxr.runtime.errors import MissingDependencyError, cli_errors

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    data: Path = typer.Option(..., help="A folder-per-class set, or a root with train/ and test/ (its test split is evaluated)."),
    model: Path = typer.Option(Path("artifacts/model.onnx"), envvar="CXR_MODEL", help="FP32 or INT8 model from cxr-export."),
    out: Path = typer.Option(Path("reports"), help="Where metrics.json, report.md and the figures go."),
    eda: bool = typer.Option(False, "--eda", help="Only draw the data set's own figure; no model needed."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON on stdout."),
) -> None:
    """Evaluate the model on DATA; the model card goes beside the model."""
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    with cli_errors():
        try:
            from .report import describe_dataset, evaluate
        except ImportError as error:
            raise MissingDependencyError(f"cxr-eval needs the eval extra: pip install 'cxr[eval]' ({error})") from None
        if eda:
            typer.echo(f"wrote {describe_dataset(data, out)}")
            return
        result = evaluate(data, model, out)
    metrics = result.metrics
    if as_json:
        typer.echo(json.dumps(asdict(metrics)))
        return
    low, high = metrics.accuracy_ci95
    typer.echo(
        f"accuracy {metrics.accuracy:.3f} (95% CI {low:.3f}-{high:.3f}) on {metrics.count} images, "
        f"macro-F1 {metrics.macro_f1:.3f}, {len(result.mistakes)} misclassified"
    )
    for path in result.written:
        typer.echo(f"wrote {path}")

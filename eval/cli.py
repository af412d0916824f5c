"""``cxr-eval``: metrics with intervals, the reference report's figures and a model card."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from cxr.core.cli import ClassMapOption, Command, CorrectionsOption, VersionOption, boundary, extra_imports, new_app, parse_class_map
from cxr.core.datasets import open_sources

app = new_app(__doc__)


@app.command(cls=Command)
def main(
    data: Annotated[list[Path], typer.Option(help="A folder-per-class set, or a root with train/ and test/ (its test split is evaluated). Or kaggle:OWNER/NAME. Repeat to evaluate several, each on its own and together.", show_default=False)],
    model: Annotated[Path, typer.Option(envvar="CXR_MODEL", help="FP32 or INT8 model from cxr-export.")] = Path("artifacts/model.onnx"),
    classes: Annotated[list[str], typer.Option(help="Evaluate these class folders only (repeat; matched case aside). Default: all.", show_default=False)] = [],
    class_map: ClassMapOption = [],
    corrections: CorrectionsOption = [],
    out: Annotated[Path, typer.Option(help="Where metrics.json, report.md and the figures go.")] = Path("reports"),
    ood: Annotated[Path | None, typer.Option(metavar="DIR", help="A folder of images that are not chest X-rays like the training ones: the share the out-of-distribution gate flags there and on --data, and the score's ROC AUC between them.", show_default=False)] = None,
    eda: Annotated[bool, typer.Option("--eda", help="Only draw the data set's own figure; no model needed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")] = False,
    version: VersionOption = False,
) -> None:
    """Evaluate the model on DATA; the model card goes beside the model. Class folders are mapped as
    the model's training mapped them (cxr-train --class-map), then by --class-map."""
    with boundary():
        pairs = parse_class_map(class_map)
        with extra_imports("cxr-eval", "eval"):
            from .report import describe_dataset, evaluate
        if eda:
            typer.echo(f"wrote {describe_dataset(open_sources(data), out)}")
            return
        result = evaluate(data, model, out, tuple(classes), ood, pairs, tuple(corrections))
    metrics = result.metrics
    if as_json:
        sources = {k: asdict(m) for k, m in result.sources.items()}
        corrected = asdict(result.corrected) if result.corrected else None
        typer.echo(json.dumps({**asdict(metrics), "sources": sources, "ood": asdict(result.ood) if result.ood else None, "corrected": corrected}))
        return
    for name, m in {**result.sources, "all": metrics}.items():
        low, high = m.accuracy_ci95
        where = f"{name}: " if result.sources else ""
        trust = ""
        if m.uncalibrated is not None and m.flagged is not None:
            trust = (
                f"; ECE {m.confidence.ece:.3f} ({m.uncalibrated.ece:.3f} before scaling, {m.confidence.ece_by_chance:.3f} "
                f"by chance alone), flagged out of distribution {m.flagged:.1%}"
            )
        typer.echo(
            f"{where}accuracy {m.accuracy:.3f} (95% CI {low:.3f}-{high:.3f}) on {m.count} images, "
            f"macro-F1 {m.macro_f1:.3f}{trust}"
        )
    if result.corrected:
        fixed = result.corrected
        typer.echo(fixed.applied.summary())
        for name, m in {**result.sources, "all": metrics}.items():
            after = fixed.metrics if name == "all" else fixed.sources.get(name)
            if after:
                typer.echo(f"{name}: accuracy {m.accuracy:.3f} on {m.count} images with the source's labels, {after.accuracy:.3f} on {after.count} corrected")
    if result.ood:
        check = result.ood
        typer.echo(
            f"--ood {check.folder}: {check.flagged:.1%} of {len(check.scores)} images flagged "
            f"({len(check.refused)} refused as unreadable), against {metrics.flagged:.1%} of --data; "
            f"ROC AUC {check.roc_auc:.3f}"
        )
    typer.echo(f"{len(result.mistakes)} misclassified")
    for path in result.written:
        typer.echo(f"wrote {path}")

"""``cxr-adapt``: fit an exported model to your site's own labelled films, and see whether it helped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxr.core.cli import ClassMapOption, Command, VersionOption, boundary, extra_imports, new_app, parse_class_map

app = new_app(__doc__)


@app.command(cls=Command)
def main(
    data: Annotated[Path, typer.Option(metavar="SITE", help="Your site's films, one folder per class (any of the model's classes, at least 5 films each).", show_default=False)],
    model: Annotated[Path, typer.Option(envvar="CXR_MODEL", help="Model from cxr-export, FP32 or INT8.")] = Path("artifacts/model.onnx"),
    out: Annotated[Path | None, typer.Option(help="Where the adapted model goes (default: beside --model, named MODEL.SITE.onnx).", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="The site's name in the model file (default: the folder's name).", show_default=False)] = None,
    class_map: ClassMapOption = [],
    force: Annotated[bool, typer.Option("--force", help="Write the adapted model even when cross-validation says it does not help.")] = False,
    version: VersionOption = False,
) -> None:
    """Refit the model's head (pulled toward its own), temperature and gate on the site's films; how
    far to move is chosen by cross-validation on them, which is also printed, per class, for the
    model as it is and adapted. Nothing is written when adapting does not help, unless --force."""
    with boundary():
        pairs = parse_class_map(class_map)
        with extra_imports("cxr-adapt", "adapt"):
            from .site import adapt
        result = adapt(model, data, out, pairs, name, force)
        record = result.record
        typer.echo("cross-validated recall on the site's films, the model as it is -> adapted:")
        for class_name, films in record.films.items():
            typer.echo(f"  {class_name:<20} {films:>4} films  {record.before[class_name]:.3f} -> {record.after[class_name]:.3f}")
        typer.echo(f"gate: {record.gate_pass_before:.1%} of the site's films pass as it is, {record.gate_pass_after:.1%} adapted")
        if not result.helped:
            typer.echo("adapting does not help on these films: the model's own head does as well in cross-validation")
        if result.path is None:
            typer.echo("nothing written (--force writes the adapted model anyway)")
            return
        typer.echo(f"{record.summary}; temperature x{record.temperature:.2f}")
        typer.echo(f"wrote {result.path} in {result.seconds:.0f} s")

"""``cxr-export``: turn a trained model.keras into a self-describing model.onnx."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from cxr.runtime.errors import MissingDependencyError, cli_errors

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    onnx: bool = typer.Option(False, "--onnx", help="Export to ONNX (the one format so far)."),
    model: Path = typer.Option(Path("artifacts/model.keras"), help="Model written by cxr-train."),
    out: Path = typer.Option(Path("artifacts/model.onnx"), help="Where the ONNX file goes."),
    int8: bool = typer.Option(
        False, "--int8", help="Also write model.int8.onnx (static INT8, calibrated on train images)."
    ),
    data: Path | None = typer.Option(
        None, help="Data root for the parity check (default: the one the model was trained on)."
    ),
) -> None:
    """Export the model, then check onnxruntime against Keras on real images."""
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    if not onnx:
        typer.echo("error: nothing to export; pass --onnx", err=True)
        raise typer.Exit(2)
    with cli_errors():
        try:
            from .onnx_export import export_onnx
            from .quantize import export_int8
        except ImportError as error:
            raise MissingDependencyError(
                f"cxr-export needs the train extra: pip install 'cxr[train]' ({error})"
            ) from None
        result = export_onnx(model, out, data)
        typer.echo(
            f"parity: max probability difference {result.max_abs_diff:.2e} over "
            f"{result.parity_images} images (limit 1e-04)"
        )
        typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB)")
        if int8:
            quantized = export_int8(out, out.with_name(f"{out.stem}.int8.onnx"), result.data)
            typer.echo(
                f"int8: top-1 agreement with FP32 {quantized.agreement:.1%} over "
                f"{quantized.test_images} images (minimum 99%)"
            )
            typer.echo(
                f"wrote {quantized.path} ({quantized.fp32_bytes / 1e6:.1f} MB -> "
                f"{quantized.int8_bytes / 1e6:.1f} MB)"
            )

"""``cxr-export``: turn a trained model.keras into a self-describing model.onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxr.core.cli import Command, VersionOption, boundary, extra_imports, new_app
from cxr.core.errors import CxrError

app = new_app(__doc__)


@app.command(cls=Command)
def main(
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the one format so far).")] = False,
    model: Annotated[Path, typer.Option(help="Model written by cxr-train.")] = Path("artifacts/model.keras"),
    out: Annotated[Path, typer.Option(help="Where the ONNX file goes.")] = Path("artifacts/model.onnx"),
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx (static INT8, calibrated on train images).")] = False,
    data: Annotated[Path | None, typer.Option(help="Data root for the parity check (default: the one the model was trained on).", show_default=False)] = None,
    version: VersionOption = False,
) -> None:
    """Export the model, then check onnxruntime against Keras on real images."""
    with boundary():
        if not onnx:
            raise CxrError("nothing to export; pass --onnx")
        with extra_imports("cxr-export", "train"):
            from .onnx_export import export_onnx
            from .quantize import export_int8
        result = export_onnx(model, out, data)
        typer.echo(
            f"parity: max probability difference {result.max_abs_diff:.2e} over "
            f"{result.parity_images} images (limit 1e-04); heat maps add up to the probabilities "
            f"within {result.map_sum_diff:.2e}"
        )
        typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB)")
        if int8:
            quantized = export_int8(out, out.with_name(f"{out.stem}.int8.onnx"), result.data)
            typer.echo(
                f"int8: top-1 agreement with FP32 {quantized.agreement:.1%} over "
                f"{quantized.test_images} images (minimum 99%); heat maps' correlation with FP32's "
                f"{quantized.map_correlation:.4f}"
            )
            typer.echo(
                f"wrote {quantized.path} ({quantized.fp32_bytes / 1e6:.1f} MB -> "
                f"{quantized.int8_bytes / 1e6:.1f} MB)"
            )

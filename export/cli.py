"""``cxr-export``: turn a trained model.keras into a self-describing model.onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxr.core.cli import Command, VersionOption, boundary, extra_imports, new_app
from cxr.core.errors import CxrError
from cxr.export import MIN_AGREEMENT

app = new_app(__doc__)


@app.command(cls=Command)
def main(
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the one format so far).")] = False,
    model: Annotated[Path, typer.Option(help="Model written by cxr-train.")] = Path("artifacts/model.keras"),
    out: Annotated[Path, typer.Option(help="Where the ONNX file goes.")] = Path("artifacts/model.onnx"),
    int8: Annotated[bool, typer.Option("--int8", help="Also write model.int8.onnx (static INT8, calibrated on train images).")] = False,
    data: Annotated[Path | None, typer.Option(help="Data root for the parity check (default: the one the model was trained on).", show_default=False)] = None,
    min_agreement: Annotated[float, typer.Option(min=0.0, max=1.0, help="Least share of test images on which the INT8 model must pick the FP32 model's class; below it model.int8.onnx is not written.")] = MIN_AGREEMENT,
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
            f"within {result.map_sum_diff:.2e}; out-of-distribution score within {result.score_diff:.1e} (relative)"
        )
        typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB)")
        if int8:
            quantized = export_int8(out, out.with_name(f"{out.stem}.int8.onnx"), result.data, min_agreement)
            typer.echo(
                f"int8: top-1 agreement with FP32 {quantized.agreement:.1%} over "
                f"{quantized.test_images} images (minimum {min_agreement:.1%}), on the out-of-distribution flag "
                f"{quantized.flag_agreement:.1%}; heat maps' correlation with FP32's {quantized.map_correlation:.4f}"
            )
            if quantized.flag_agreement < MIN_AGREEMENT:
                typer.echo(
                    f"warning: the INT8 model's out-of-distribution flag agrees with FP32's on only "
                    f"{quantized.flag_agreement:.1%} of test images; prefer the FP32 model where the flag matters",
                    err=True,
                )
            typer.echo(
                f"wrote {quantized.path} ({quantized.fp32_bytes / 1e6:.1f} MB -> "
                f"{quantized.int8_bytes / 1e6:.1f} MB)"
            )

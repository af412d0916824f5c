"""Why an INT8 model disagrees with its FP32 model on a collection, and what the quantization's cheap
levers give: calibration images, calibration method, VGG16's last block left in float.

    python research/int8_variants.py --model M.onnx --data ROOT [--data ROOT ...]

Each variant quantizes ``--model`` as ``cxr-export --int8`` does (``export.quantize.export_int8``:
static QDQ, per-channel 7-bit weights, the head, maps and gate in float), calibrated on the roots'
train films, and prints how often it picks FP32's class on the roots' test films, its maps'
correlation with FP32's, its gate's agreement, its size, and the FP32 margin (top-1 minus top-2
probability) of the films that flip: small margins are films any rounding would move.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import typer

os.environ.setdefault("CXR_QUIET", "1")

from onnxruntime.quantization import CalibrationMethod  # noqa: E402

from cxr.export import quantize  # noqa: E402

SHIPPED = quantize.quantize_static


def last_block(model: Path) -> list[str]:
    """The convolutions after the graph's fourth MaxPool (VGG16's block5)."""
    nodes = onnx.load(str(model), load_external_data=False).graph.node
    pools = [i for i, node in enumerate(nodes) if node.op_type == "MaxPool"]
    return [node.name for node in nodes[pools[3] + 1 :] if node.op_type == "Conv"]


VARIANTS = {
    "MinMax, 64 images (shipped)": dict(images=64),
    "MinMax, 256 images": dict(images=256),
    "Percentile 99.999, 64 images": dict(images=64, calibrate_method=CalibrationMethod.Percentile),
    "Entropy, 64 images": dict(images=64, calibrate_method=CalibrationMethod.Entropy),
    "MinMax, 64 images, block5 in float": dict(images=64, block5_float=True),
}


def main(
    model: Path = typer.Option(..., help="An FP32 model from cxr-export."),
    data: list[Path] = typer.Option(..., help="Roots with train/ and test/ (repeat)."),
    only: list[str] = typer.Option([], "--variant", help="Only the variants whose names start so (repeat)."),
) -> None:
    from cxr.runtime.predictor import Predictor

    fp32 = Predictor(model, provider="cpu")
    _, test = quantize._calibration_and_test(fp32, data)
    expected = quantize._explained(fp32, test).probabilities
    ordered = np.sort(expected, axis=1)
    margin = ordered[:, -1] - ordered[:, -2]
    print(f"{model.name} on {len(test)} test films of {', '.join(root.name for root in data)}.\n")
    print("| variant | picks FP32's class | maps' correlation | gate agrees | MB | FP32 margin of the films that flip (median) |")
    print("|---|---|---|---|---|---|", flush=True)
    for name, options in VARIANTS.items():
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        options = dict(options)
        quantize.CALIBRATION_IMAGES = options.pop("images")
        excluded = last_block(model) if options.pop("block5_float", False) else []

        def patched(*args, nodes_to_exclude=(), **kwargs):
            return SHIPPED(*args, nodes_to_exclude=[*nodes_to_exclude, *excluded], **{**kwargs, **options})

        quantize.quantize_static = functools.partial(patched)
        with tempfile.TemporaryDirectory() as scratch:
            result = quantize.export_int8(model, Path(scratch) / "int8.onnx", data, min_agreement=0.0)
            got = quantize._explained(Predictor(result.path, provider="cpu"), test).probabilities
        flips = got.argmax(axis=1) != expected.argmax(axis=1)
        flipped = f"{np.median(margin[flips]):.3f} ({flips.sum()} films)" if flips.any() else "-"
        print(f"| {name} | {result.agreement:.1%} | {result.map_correlation:.3f} | {result.flag_agreement:.1%} | {result.int8_bytes / 1e6:.0f} | {flipped} |", flush=True)


if __name__ == "__main__":
    typer.run(main)

"""Issue #12's goals over seeds: the README's default model (both collections) trained, exported to
FP32 and INT8 and evaluated as a user would, with the images that are not chest X-rays as --ood.

    python benchmarks/trust.py --weights PATH [--seeds 0 1 2]

Prints, per seed and as mean (min or max), each test split's expected calibration error before and
after temperature scaling and the share the gate flags, the share of the other images flagged, and
INT8's agreement with FP32 on the flag. Features come from cxr's cache after the first run.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import typer

os.environ.setdefault("CXR_QUIET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = [SHARED / "Covid19-dataset", SHARED / "Covid19-radiography-subset"]


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    seeds: list[int] = typer.Option([0, 1, 2], help="Seeds to train (repeat the option)."),
) -> None:
    from cxr.eval.report import evaluate
    from cxr.export.onnx_export import export_onnx
    from cxr.export.quantize import export_int8
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train
    from not_xrays import write_not_xrays

    names = [root.name for root in DATA]
    columns = [f"{what} {name}" for name in names for what in ("ECE before", "ECE after", "flagged")]
    columns += ["not X-rays flagged", "INT8 flag agreement", "temperature"]
    rows: list[list[float]] = []
    with tempfile.TemporaryDirectory() as folder:
        others = write_not_xrays(Path(folder) / "not-xrays")
        for seed in seeds:
            out = Path(folder) / f"seed{seed}"
            result = train(TrainConfig(data=tuple(DATA), out=out, weights=weights, seed=seed))
            export_onnx(result.model_path, out / "model.onnx")
            int8 = export_int8(out / "model.onnx", out / "model.int8.onnx", DATA)
            evaluated = evaluate(DATA, out / "model.onnx", out / "eval", ood=others)
            row = []
            for name in names:
                m = evaluated.sources[name]
                row += [m.uncalibrated.ece, m.confidence.ece, m.flagged]
            row += [evaluated.ood.flagged, int8.flag_agreement, result.trust.temperature]
            rows.append(row)
            print(f"seed {seed}: " + ", ".join(f"{c} {v:.3f}" for c, v in zip(columns, row)), file=sys.stderr)

    print(f"The default model on both collections, seeds {', '.join(map(str, seeds))} (test splits):\n")
    print("| seed | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for seed, row in zip(seeds, rows):
        print(f"| {seed} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    table = np.array(rows)
    print("| mean | " + " | ".join(f"{v:.3f}" for v in table.mean(axis=0)) + " |")
    print("| worst | " + " | ".join("" if np.isnan(v) else f"{v:.3f}" for v in _worst(table, columns)) + " |")


def _worst(table: np.ndarray, columns: list[str]) -> list[float]:
    """The worst seed per column: the highest ECE or share of X-rays flagged, the lowest share of
    other images flagged or agreement; none for the temperature."""
    worst = []
    for i, column in enumerate(columns):
        if column == "temperature":
            worst.append(float("nan"))
        else:
            worst.append(table[:, i].max() if column.startswith(("ECE", "flagged")) else table[:, i].min())
    return worst


if __name__ == "__main__":
    typer.run(main)

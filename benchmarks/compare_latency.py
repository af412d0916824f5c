"""Single-image latency of two or more model files, measured in one run on the same images.

    python benchmarks/compare_latency.py BASELINE.onnx OTHER.onnx [...] --images DIR [--rounds 5]

Each model gets its own Predictor (one onnxruntime session, reused); every round predicts each image
once with each model, the models interleaved so that the machine's drift falls on all alike. A
latency is one ``Predictor.predict`` call: decode, resize, contrast step and the model call with its
heat maps and gate. Prints a Markdown table: p50 and p95 per model and the ratio of each p50 to the
first model's.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import typer


def main(
    models: list[Path] = typer.Argument(..., help="ONNX files; the first is the baseline."),
    images: Path = typer.Option(..., help="A folder of images (searched recursively)."),
    count: int = typer.Option(32, help="Images used."),
    rounds: int = typer.Option(5, help="Passes over the images per model."),
) -> None:
    from cxr.core.datasets import files_under
    from cxr.runtime.predictor import Predictor

    files = files_under(images)[:count]
    predictors = [Predictor(path) for path in models]
    for predictor in predictors:  # warm-up: first calls allocate
        predictor.predict(files[0])
    seconds: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for file in files:
            for times, predictor in zip(seconds, predictors):
                started = time.perf_counter()
                predictor.predict(file)
                times.append(time.perf_counter() - started)
    base = statistics.median(seconds[0])
    print(f"{len(files)} images x {rounds} rounds, interleaved\n")
    print("| model | p50 ms | p95 ms | p50 against the first |")
    print("|---|---|---|---|")
    for path, times in zip(models, seconds):
        p50, p95 = statistics.median(times), float(np.percentile(times, 95))
        print(f"| {path} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} | {p50 / base:.2f}x |")


if __name__ == "__main__":
    typer.run(main)

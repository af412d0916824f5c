"""Edge inference on this machine: Keras against ONNX FP32 and INT8, on the same real images.

    python benchmarks/predict_latency.py --artifacts artifacts --images ../shared/data/Covid19-dataset/test

Measures, in one run: single-image latency end to end (decode + resize + model call; p50 and p95),
batch throughput (model call on 32 preloaded images), what the out-of-distribution gate and the heat
maps cost the INT8 model (against the same model cut back to its probability output) and what drawing
an overlay PNG costs,
preprocessing alone with each contrast step, and the whole-process time of `cxr-predict one.png`
against a script that does the same with Keras. Prints Markdown tables with ratios.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import typer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

KERAS_SCRIPT = """
import sys
import keras, numpy as np
from cxr.runtime.imaging import load_image
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
x = load_image(sys.argv[2], model.input_shape[1], sys.argv[3])[np.newaxis].astype(np.float32)
print(model.predict(x, verbose=0)[0])
"""


def main(
    artifacts: Path = typer.Option(Path("artifacts")),
    images: Path = typer.Option(Path("../shared/data/Covid19-dataset/test")),
    count: int = typer.Option(40, help="Images for the latency runs."),
    process_runs: int = typer.Option(5, help="Whole-process runs per command."),
) -> None:
    import keras

    from cxr.runtime.imaging import CONTRASTS, load_image
    from cxr.runtime.predictor import Predictor

    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    keras_model = keras.saving.load_model(artifacts / "model.keras", safe_mode=True)
    fp32 = Predictor(artifacts / "model.onnx", provider="cpu")
    int8 = Predictor(artifacts / "model.int8.onnx", provider="cpu")
    size, contrast = fp32.info.image_size, fp32.info.input.contrast
    load = fp32.prepare  # how this model reads an image (the INT8 model reads the same way)
    runners = {
        # predict_on_batch is Keras' fastest call; predict() is what most scripts write (it builds
        # a data pipeline on every call). Ratios are against the fastest.
        "Keras predict_on_batch (TensorFlow CPU)": lambda batch: np.asarray(keras_model.predict_on_batch(batch.astype(np.float32))),
        "Keras predict (TensorFlow CPU)": lambda batch: keras_model.predict(batch.astype(np.float32), verbose=0),
        "ONNX FP32 (onnxruntime)": fp32.run_batch,
        "ONNX INT8 (onnxruntime)": int8.run_batch,
    }

    latency: dict[str, list[float]] = {}
    throughput: dict[str, float] = {}
    batch = np.stack([load(p) for p in (files * 2)[:32]])
    for name, run in runners.items():
        for path in files[:3]:  # warm-up: graph compilation, allocator, caches
            run(load(path)[np.newaxis])
        times = []
        for path in files:
            started = time.perf_counter()
            run(load(path)[np.newaxis])
            times.append(time.perf_counter() - started)
        latency[name] = times
        rates = []
        for _ in range(3):
            started = time.perf_counter()
            run(batch)
            rates.append(len(batch) / (time.perf_counter() - started))
        throughput[name] = statistics.median(rates)

    fastest_keras = next(iter(runners))
    base_p50 = statistics.median(latency[fastest_keras])
    base_rate = throughput[fastest_keras]
    print(f"Single image, end to end ({len(files)} real {_size_of(files[0])} images), and batch of 32:\n")
    print("| model | p50 ms | p95 ms | p50 speed-up vs Keras | batch images/s | batch speed-up |")
    print("|---|---|---|---|---|---|")
    for name, times in latency.items():
        p50, p95 = statistics.median(times), float(np.percentile(times, 95))
        print(
            f"| {name} | {p50 * 1e3:.0f} | {p95 * 1e3:.0f} | {base_p50 / p50:.1f}x | "
            f"{throughput[name]:.1f} | {throughput[name] / base_rate:.1f}x |"
        )

    graph_extras_cost(artifacts / "model.int8.onnx", files)

    # The part of the end-to-end time spent before the model call, for each contrast step.
    print(f"\nPreprocessing alone (decode + resize + contrast step), {files[0].suffix} files, 5 passes:\n")
    print("| contrast step | p50 ms |")
    print("|---|---|")
    for step in CONTRASTS:
        times = []
        for _ in range(5):
            for path in files:
                started = time.perf_counter()
                load_image(path, size, step)
                times.append(time.perf_counter() - started)
        mark = " (this model's)" if step == contrast else ""
        print(f"| {step}{mark} | {statistics.median(times) * 1e3:.2f} |")

    one = str(files[0])
    commands = {
        "Keras script (load model, predict one image)": [sys.executable, "-c", KERAS_SCRIPT, str(artifacts / "model.keras"), one, contrast],
        "cxr-predict one.png (FP32)": ["cxr-predict", one, "--model", str(artifacts / "model.onnx")],
        "cxr-predict one.png (INT8)": ["cxr-predict", one, "--model", str(artifacts / "model.int8.onnx")],
    }
    seconds = {}
    for name, command in commands.items():
        runs = []
        for _ in range(process_runs):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            runs.append(time.perf_counter() - started)
        seconds[name] = statistics.median(runs)
    base = seconds[next(iter(commands))]
    print(f"\nWhole process, median of {process_runs} runs:\n")
    print("| command | median s | speed-up vs Keras script |")
    print("|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {base / value:.1f}x |")


def graph_extras_cost(int8_path: Path, files: list[Path], passes: int = 6) -> None:
    """Single-image INT8 latency of the same graph cut back to fewer outputs (no gate, no maps) against
    the model as shipped, in alternating blocks (each pass runs the images through each variant in
    turn, starting with a different one each pass, so that drift hits each alike; image-by-image
    interleaving would time each session against the previous session's still-spinning threads);
    then drawing and writing the overlay PNG alone."""
    from cxr.runtime.heatmaps import write_png
    from cxr.runtime.predictor import Predictor

    with tempfile.TemporaryDirectory() as scratch:
        plain = Predictor(cut_to(int8_path, Path(scratch) / "plain.onnx", ["probabilities"]), provider="cpu")
        gated = Predictor(cut_to(int8_path, Path(scratch) / "gated.onnx", ["probabilities", "ood_score"]), provider="cpu")
        shipped = Predictor(int8_path, provider="cpu")
        runs = {
            "INT8 probabilities only (no gate, no maps in the graph)": lambda path: plain.predict(path),
            "INT8 with the out-of-distribution gate (no maps in the graph)": lambda path: gated.predict(path),
            "INT8 as exported (gate, maps in the graph, not asked for)": lambda path: shipped.predict(path),
            "INT8 as exported, with the predicted class's map": lambda path: shipped.predict(path, heatmaps="predicted"),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for path in files[:3]:
            for run in runs.values():
                run(path)
        names = list(runs)
        for i in range(passes):
            for name in names[i % len(names):] + names[: i % len(names)]:
                for path in files:
                    started = time.perf_counter()
                    runs[name](path)
                    times[name].append(time.perf_counter() - started)
        drawing = []
        for i, path in enumerate(files):
            maps = shipped.predict(path, heatmaps="predicted").heatmaps
            started = time.perf_counter()
            write_png(Path(scratch) / f"{i}.png", maps.overlay(next(iter(maps.maps))))
            drawing.append(time.perf_counter() - started)

    base = statistics.median(times[names[0]])
    print(f"\nThe gate and the heat maps, single image end to end, INT8, {passes} alternating passes over {len(files)} images:\n")
    print("| run | p50 ms | p95 ms | p50 vs probabilities only |")
    print("|---|---|---|---|")
    for name, values in times.items():
        p50, p95 = statistics.median(values), float(np.percentile(values, 95))
        print(f"| {name} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} | {p50 / base:.3f}x |")
    print(f"| drawing and writing the overlay PNG (alone) | {statistics.median(drawing) * 1e3:.1f} | "
          f"{float(np.percentile(drawing, 95)) * 1e3:.1f} | |")


def cut_to(model_path: Path, target: Path, outputs: list[str]) -> Path:
    """The same graph with only ``outputs``, and the metadata of the ones it keeps: as if exported
    without the others."""
    import onnx

    onnx.utils.extract_model(str(model_path), str(target), ["image"], outputs)
    proto = onnx.load(target)
    # The metadata entries that describe an output; without it, they would point at nothing.
    dropped = [key for key, output in {"cxr.heatmaps": "evidence", "cxr.ood": "ood_score"}.items() if output not in outputs]
    kept = [p for p in onnx.load(model_path, load_external_data=False).metadata_props if p.key not in dropped]
    proto.metadata_props.extend(kept)
    onnx.save(proto, target)
    return target


def _size_of(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return f"{image.width}x{image.height} {image.format}"


if __name__ == "__main__":
    typer.run(main)

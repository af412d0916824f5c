"""Training's two costly passes in float32 and in bfloat16, measured in one run on the same films.

    python benchmarks/precision.py --weights PATH [--films 128] [--rounds 3]

The frozen pass (images -> block4_pool, what cxr-train runs once per film, in bfloat16 where the
CPU has it: train/precision.py) and one fine-tuning epoch (block5 and the head, trained on those
features; cxr-train keeps this in float32, since in bfloat16 it cost the exported model's accuracy),
the two precisions interleaved round by round so that the machine's drift falls on both alike.
Prints a Markdown table: median films per second of each and the ratio, and how far the bfloat16
features lie from float32's. Whether the exported model's accuracy holds is
measured by ``generalization.py --runs all --precision float32|bfloat16`` (the runtime reads the
exported float32 file).
"""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path

import numpy as np
import typer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    films: int = typer.Option(128, help="Films read (the first of Covid19-radiography-subset's train split)."),
    rounds: int = typer.Option(3, help="Timed passes per precision."),
) -> None:
    import keras

    from cxr.core.datasets import files_under
    from cxr.runtime.imaging import load_image
    from cxr.train.config import TrainConfig
    from cxr.train.model import build_model, cut_layer
    from cxr.train.precision import computing_in, cpu_flags

    config = TrainConfig(data=SHARED)
    read = functools.partial(load_image, size=config.image_size, contrast=config.contrast)
    images = np.stack([read(path) for path in files_under(SHARED / "Covid19-radiography-subset" / "train")[:films]]).astype(np.float32)
    labels = keras.utils.to_categorical(np.arange(films) % 3, 3)
    net = build_model(3, config.image_size, weights, config.model_recipe)
    cut = cut_layer(config.fine_tune)
    net.freeze_all_but_last_blocks(config.fine_tune)
    precisions = ("float32", "bfloat16")
    fronts = {p: computing_in(net.segment(None, cut), p) for p in precisions}
    features = {p: np.asarray(front.predict(images, batch_size=config.batch_size, verbose=0), np.float32) for p, front in fronts.items()}

    def frozen_pass(p: str) -> None:
        fronts[p].predict(images, batch_size=config.batch_size, verbose=0)

    trainees = {p: computing_in(net.segment(cut, None), p) for p in precisions}  # built and compiled once, as in a run
    for model in trainees.values():
        model.compile(keras.optimizers.Adam(config.fine_tune_learning_rate), "categorical_crossentropy")

    def fine_tuning_epoch(p: str) -> None:
        trainees[p].fit(features["float32"], labels, batch_size=config.batch_size, epochs=1, verbose=0)

    rows = []
    for name, work in (("frozen pass (images -> block4_pool)", frozen_pass), ("fine-tuning epoch (block5 and head; not taken)", fine_tuning_epoch)):
        for p in precisions:  # warm-up: the first call builds the graph
            work(p)
        seconds: dict[str, list[float]] = {p: [] for p in precisions}
        for _ in range(rounds):
            for p in precisions:
                started = time.perf_counter()
                work(p)
                seconds[p].append(time.perf_counter() - started)
        rate = {p: films / statistics.median(s) for p, s in seconds.items()}
        rows.append(f"| {name} | {rate['float32']:.1f} | {rate['bfloat16']:.1f} | {rate['bfloat16'] / rate['float32']:.2f}x |")
    exact, rounded = features["float32"], features["bfloat16"]
    error = np.linalg.norm(rounded - exact) / np.linalg.norm(exact)
    native = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512f", "avx2"})
    print(f"{films} films, median of {rounds} rounds; CPU flags: {', '.join(native)}\n")
    print("| pass | float32, films/s | bfloat16, films/s | bfloat16 speed-up |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nbfloat16 features against float32's: relative error {error:.4f}")


if __name__ == "__main__":
    typer.run(main)

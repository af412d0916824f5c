"""Does a recipe's model keep working on X-rays exposed differently? Accuracy under exposure shifts.

    python research/exposure.py --data ../shared/data/Covid19-dataset --weights PATH [--seeds 5]

Another hospital's scanner and settings give the same chest another gray-level curve. Each recipe is
trained with seeds 0..N-1; its model then reads the held-out validation images and the test images
after a shift of their gray levels (applied to the decoded image, before cxr's own preprocessing,
as the scanner would), and the table gives the mean accuracy per shift. Validation decides; the
test split only reports.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer
from PIL import Image

os.environ.setdefault("CXR_QUIET", "1")

from cxr.train.config import REFERENCE_RECIPE  # noqa: E402  (imports no Keras)

RECIPES: dict[str, dict] = {
    "reference": REFERENCE_RECIPE,
    "fine-tune 1 block, 16 epochs": dict(contrast="none"),
    "the same + equalize (default)": {},
}

# Gray-level curves x -> y on 0-255, clipped back to 0-255.
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as is": lambda x: x,
    "gamma 0.6 (lighter)": lambda x: 255 * (x / 255) ** 0.6,
    "gamma 1.6 (darker)": lambda x: 255 * (x / 255) ** 1.6,
    "contrast x0.6 (flat)": lambda x: 128 + 0.6 * (x - 128),
    "brightness +30": lambda x: x + 30,
}


def shifted(image: Image.Image, shift: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    values = shift(np.asarray(image, dtype=np.float64))
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))


def main(
    data: Path = typer.Option(Path("../shared/data/Covid19-dataset")),
    weights: str = typer.Option("imagenet", envvar="CXR_VGG16_WEIGHTS"),
    seeds: int = typer.Option(5),
) -> None:
    import keras

    from cxr.core.datasets import class_folders
    from cxr.runtime.imaging import read_rgb, to_model_input
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    size = TrainConfig(data=data).image_size
    files = {split: class_folders(data / split) for split in ("train", "test")}
    names = sorted(files["train"])
    label = {str(p): names.index(name) for split in files.values() for name, ps in split.items() for p in ps}
    decoded = {path: read_rgb(path, min_size=size) for path in label}

    def accuracy(model: keras.Model, paths: list[str], shift: Callable, contrast: str) -> float:
        batch = np.stack([to_model_input(shifted(decoded[p], shift), size, contrast) for p in paths])
        predicted = model.predict(batch.astype(np.float32), batch_size=32, verbose=0).argmax(axis=1)
        return float(np.mean(predicted == np.array([label[p] for p in paths])))

    test = [str(p) for ps in files["test"].values() for p in ps]
    print("| recipe | split | " + " | ".join(SHIFTS) + " |")
    print("|---|---|" + "---|" * len(SHIFTS), flush=True)
    for name, options in RECIPES.items():
        scores: dict[str, dict[str, list[float]]] = {"val": {}, "test": {}}
        for seed in range(seeds):
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(data=data, out=Path(out), weights=weights, seed=seed, **options)
                result = train(config)
                model = keras.saving.load_model(result.model_path, safe_mode=True)
            for split, paths in (("val", result.validation_files), ("test", test)):
                for shift_name, shift in SHIFTS.items():
                    scores[split].setdefault(shift_name, []).append(accuracy(model, paths, shift, config.contrast))
        for split, by_shift in scores.items():
            cells = " | ".join(f"{statistics.mean(v):.3f}" for v in by_shift.values())
            print(f"| {name} | {split} | {cells} |", flush=True)


if __name__ == "__main__":
    typer.run(main)

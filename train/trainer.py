"""One training run: read the data, fit the transfer model, evaluate it, write the run record."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from cxr.runtime import __version__
from cxr.runtime.dataset import (
    LabeledImages,
    class_counts,
    class_folders,
    load_images,
    stratified_split,
)
from cxr.runtime.errors import DatasetError
from cxr.runtime.files import atomic_path, write_json
from cxr.runtime.progress import progress, quiet

from .config import TrainConfig
from cxr.eval.figures import plot_curves
from .model import build_model
from .weights import resolve_weights


@dataclass
class SplitMetrics:
    accuracy: float
    loss: float
    count: int
    per_class: dict[str, int]
    confusion: list[list[int]]  # rows: true class, columns: predicted class


@dataclass
class TrainResult:
    model_path: Path
    class_names: list[str]
    splits: dict[str, SplitMetrics]  # "train", "val", and "test" when the data has one
    skipped: list[str]
    seconds: dict[str, float]


def train(config: TrainConfig) -> TrainResult:
    """Run the recipe in ``config`` and write model.keras and its run record under ``config.out``."""
    started = time.perf_counter()
    train_files, test_files = _scan(config.data)
    class_names = sorted(train_files)
    weights = resolve_weights(config.weights)

    train_all = load_images(train_files, class_names, config.image_size, config.strict, "Reading train")
    test = (
        load_images(test_files, class_names, config.image_size, config.strict, "Reading test")
        if test_files
        else None
    )
    for name, count in class_counts(train_all.labels, class_names).items():
        if count < 2:
            raise DatasetError(f"class {name!r} has {count} readable train images; it needs at least 2")
    fit_idx, val_idx = stratified_split(train_all.labels, config.val_split, config.seed)
    splits = {"train": train_all.subset(fit_idx), "val": train_all.subset(val_idx)}
    if test is not None and len(test):
        splits["test"] = test
    splits = {name: split for name, split in splits.items() if len(split)}

    keras.utils.set_random_seed(config.seed)
    net = build_model(len(class_names), config.image_size, weights)
    # The fast path runs the frozen base once per image instead of once per image per epoch.
    model = net.head if config.fast_path else net.model
    inputs_of: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for name, split in splits.items():
        inputs_of[name] = (
            _predict(net.features, split.images, config.batch_size, f"Features ({name})")
            if config.fast_path
            else split.images.astype(np.float32)
        )
    feature_seconds = time.perf_counter() - t0

    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    n = len(class_names)
    t0 = time.perf_counter()
    history = model.fit(
        inputs_of["train"],
        keras.utils.to_categorical(splits["train"].labels, n),
        validation_data=(
            (inputs_of["val"], keras.utils.to_categorical(splits["val"].labels, n))
            if "val" in splits
            else None
        ),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0 if quiet() else 1,
    )
    fit_seconds = time.perf_counter() - t0

    metrics = {
        name: _evaluate(model, inputs_of[name], split, class_names, config.batch_size)
        for name, split in splits.items()
    }
    seconds = {
        "features": feature_seconds,
        "fit": fit_seconds,
        "total": time.perf_counter() - started,
    }
    result = TrainResult(
        model_path=config.out / "model.keras",
        class_names=class_names,
        splits=metrics,
        skipped=train_all.skipped + (test.skipped if test else []),
        seconds=seconds,
    )
    _write_run_record(config, net.model, result, history.history)
    return result


def _scan(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    if not root.is_dir():
        raise DatasetError(f"{root}: no such data folder")
    train_files = class_folders(root / "train") if (root / "train").is_dir() else {}
    if not train_files:
        raise DatasetError(f"{root}: no train split (expected {root / 'train'}/<class>/<image>)")
    if len(train_files) < 2:
        raise DatasetError(f"{root / 'train'}: {len(train_files)} class folder; need at least 2")
    for name, files in train_files.items():
        if not files:
            raise DatasetError(f"{root / 'train' / name}: empty class folder")
    test_files = class_folders(root / "test") if (root / "test").is_dir() else {}
    return train_files, test_files


def _predict(model: keras.Model, inputs: np.ndarray, batch_size: int, description: str) -> np.ndarray:
    batches = range(0, len(inputs), batch_size)
    return np.concatenate(
        [
            np.asarray(model.predict_on_batch(inputs[i : i + batch_size].astype(np.float32)))
            for i in progress(batches, description)
        ]
    )


def _evaluate(
    model: keras.Model,
    inputs: np.ndarray,
    split: LabeledImages,
    class_names: list[str],
    batch_size: int,
) -> SplitMetrics:
    probabilities = _predict(model, inputs, batch_size, "Evaluating")
    predicted = probabilities.argmax(axis=1)
    # The same clipped cross-entropy Keras reports during fit.
    picked = np.clip(probabilities[np.arange(len(split)), split.labels], 1e-7, 1.0)
    confusion = np.zeros((len(class_names), len(class_names)), dtype=int)
    np.add.at(confusion, (split.labels, predicted), 1)
    return SplitMetrics(
        accuracy=float(np.mean(predicted == split.labels)),
        loss=float(-np.mean(np.log(picked))),
        count=len(split),
        per_class=class_counts(split.labels, class_names),
        confusion=confusion.tolist(),
    )


def _versions() -> dict[str, str]:
    return {
        "cxr": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _write_run_record(
    config: TrainConfig, model: keras.Model, result: TrainResult, history: dict[str, list[float]]
) -> None:
    out = config.out
    record: dict[str, Any] = {
        "class_names": result.class_names,
        "splits": {name: asdict(m) for name, m in result.splits.items()},
        "skipped": result.skipped,
        "seconds": result.seconds,
        "versions": _versions(),
    }
    history = {key: [float(v) for v in values] for key, values in history.items()}
    with atomic_path(result.model_path) as tmp:
        model.save(tmp)
    write_json(out / "config.json", {**config.to_json(), "class_names": result.class_names})
    write_json(out / "history.json", history)
    write_json(out / "metrics.json", record)
    plot_curves(history, out / "curves.png")

"""One training run: read the data, fit the transfer model, evaluate it, write the run record."""

from __future__ import annotations

import functools
import importlib
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cxr.core import __version__
from cxr.core.datasets import (
    DataRoot,
    LabeledImages,
    class_counts,
    load_images,
    scan_roots,
    source_names,
    stratified_split,
)
from cxr.core.errors import DatasetError
from cxr.core.figures import plot_curves
from cxr.core.files import atomic_paths, dump_json
from cxr.core.progress import progress
from cxr.runtime.imaging import load_image

from .config import TrainConfig
from .model import TransferModel, build_model, cut_layer
from .weights import resolve_weights

log = logging.getLogger(__name__)


@dataclass
class SplitMetrics:
    accuracy: float
    loss: float
    count: int
    per_class: dict[str, int]
    confusion: list[list[int]]  # rows: true class, columns: predicted class


@dataclass(frozen=True)
class Stage:
    trainable_blocks: int  # VGG16 blocks that train, counted from the last; the head always trains
    epochs: int
    learning_rate: float

    @property
    def description(self) -> str:
        what = f"fine-tuning the last {self.trainable_blocks} VGG16 block(s) and the head" if self.trainable_blocks else "training the head on the frozen VGG16 base"
        return f"{what}, {self.epochs} epochs at learning rate {self.learning_rate:g}"


class _EpochLog(keras.callbacks.Callback):
    """One plain log line per epoch: where training is and how it goes."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = "  ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        log.info("epoch %d/%d  %s  (%.1f s)", epoch + 1, self.epochs, values, time.perf_counter() - self.started)


@dataclass
class TrainResult:
    model_path: Path
    class_names: list[str]
    splits: dict[str, SplitMetrics]  # "train", "val", and "test" when the data has one
    sources: dict[str, dict[str, SplitMetrics]]  # the same per data root, by source name
    skipped: list[str]
    seconds: dict[str, float]
    validation_files: list[str]  # held out of training, so other tools can check on the same images


def train(config: TrainConfig) -> TrainResult:
    """Run the recipe in ``config`` and write model.keras and its run record under ``config.out``."""
    started = time.perf_counter()
    roots = scan_roots(list(config.data), config.classes)
    class_names = roots[0].class_names
    weights = resolve_weights(config.weights)  # before the slow part: a bad --weights fails at once
    splits, skipped = _read_splits(config, roots, class_names)

    keras.utils.set_random_seed(config.seed)
    net = build_model(len(class_names), config.image_size, weights, config.model_recipe, config.seed)
    stages = [Stage(0, config.epochs, config.learning_rate)]
    if config.fine_tune:
        stages.append(Stage(config.fine_tune, config.fine_tune_epochs, config.fine_tune_learning_rate))

    t0 = time.perf_counter()
    # Augmentation changes the images every epoch, so then nothing in front of the cut can be cached.
    cached = config.fast_path and not config.augment
    inputs_at = (
        _cache_features(net, splits, stages, config.batch_size)
        if cached
        else {None: {k: s.images.astype(np.float32) for k, s in splits.items()}}
    )
    feature_seconds = time.perf_counter() - t0

    targets = {k: keras.utils.to_categorical(s.labels, len(class_names)) for k, s in splits.items()}
    history: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for number, stage in enumerate(stages, 1):
        log.info("stage %d of %d: %s", number, len(stages), stage.description)
        if stage.trainable_blocks:  # mark where fine-tuning starts, for the curves
            history["fine_tune_from_epoch"] = [len(history.get("loss", []))]
        net.freeze_all_but_last_blocks(stage.trainable_blocks)
        cut = cut_layer(stage.trainable_blocks) if cached else None
        model, inputs = net.segment(cut, None), inputs_at[cut]
        for key, values in _fit(model, inputs, targets, stage, config).items():
            history.setdefault(key, []).extend(values)
    fit_seconds = time.perf_counter() - t0

    probabilities = {name: _predict(model, inputs[name], config.batch_size, f"Evaluating ({name})") for name in splits}
    metrics = {name: split_metrics(probabilities[name], split.labels, class_names) for name, split in splits.items()}
    by_source = {
        source: {
            name: split_metrics(probabilities[name][mine], split.labels[mine], class_names)
            for name, split in splits.items()
            if (mine := split.sources == index).any()
        }
        for index, source in enumerate(source_names(list(config.data)))
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
        sources=by_source,
        skipped=skipped,
        seconds=seconds,
        validation_files=[str(path) for path in splits["val"].paths] if "val" in splits else [],
    )
    _write_run_record(config, net.model, result, history)
    return result


def _read_splits(
    config: TrainConfig, roots: list[DataRoot], class_names: list[str]
) -> tuple[dict[str, LabeledImages], list[str]]:
    """Decoded train, validation (stratified from train by source and class) and test splits, each
    image marked with its source, and the skipped files."""
    strict = config.strict
    read = functools.partial(load_image, size=config.image_size, contrast=config.contrast)
    names = source_names(list(config.data))
    train_all = LabeledImages.joined(
        [load_images(data.train, class_names, read, strict, f"Reading train ({name})") for data, name in zip(roots, names)]
    )
    test = LabeledImages.joined(
        [load_images(data.test, class_names, read, strict, f"Reading test ({name})") for data, name in zip(roots, names)]
    )
    for name, count in class_counts(train_all.labels, class_names).items():
        if count < 2:
            raise DatasetError(f"class {name!r} has {count} readable train images; it needs at least 2")
    strata = train_all.sources * len(class_names) + train_all.labels
    fit_idx, val_idx = stratified_split(strata, config.val_split, config.seed)
    splits = {"train": train_all.subset(fit_idx), "val": train_all.subset(val_idx), "test": test}
    return {k: split for k, split in splits.items() if len(split)}, train_all.skipped + test.skipped


def _fit(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    stage: Stage,
    config: TrainConfig,
) -> dict[str, list[float]]:
    """One training stage; returns Keras' per-epoch history."""
    model.compile(
        optimizer=keras.optimizers.Adam(stage.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    validation = (inputs["val"], targets["val"]) if "val" in inputs else None
    callbacks = []
    if config.early_stopping and validation:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.early_stopping, restore_best_weights=True
            )
        )
    labels = targets["train"].argmax(axis=1)
    fitted = model.fit(
        inputs["train"],
        targets["train"],
        validation_data=validation,
        epochs=stage.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        class_weight=_class_weights(labels, targets["train"].shape[1]) if config.class_weights else None,
        callbacks=[*callbacks, _EpochLog(stage.epochs)],
        verbose=0,  # Keras' own bar writes terminal escapes into logs; _EpochLog writes plain lines
    )
    return fitted.history


def _cache_features(
    net: TransferModel, splits: dict[str, LabeledImages], stages: list[Stage], batch_size: int
) -> dict[str, dict[str, np.ndarray]]:
    """Each stage's frozen-front output per split: ``{cut layer: {split: array}}``.

    The earliest cut is computed from the images and later ones from it, so no image goes through
    the early blocks twice.
    """
    cuts = sorted({cut_layer(stage.trainable_blocks) for stage in stages})
    first = cuts[0]  # "block4_pool" sorts before "block5_pool": the earliest layer
    front = net.segment(None, first)
    cached = {first: {k: _predict(front, s.images, batch_size, f"Features ({k})") for k, s in splits.items()}}
    for cut in cuts[1:]:
        middle = net.segment(first, cut)
        cached[cut] = {k: _predict(middle, v, batch_size, f"Features {cut} ({k})") for k, v in cached[first].items()}
    return cached


def _class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Weights that make every class count as much as the others in the loss."""
    counts = np.bincount(labels, minlength=num_classes)
    return {i: len(labels) / (num_classes * c) for i, c in enumerate(counts) if c}


def _predict(model: keras.Model, inputs: np.ndarray, batch_size: int, description: str) -> np.ndarray:
    batches = range(0, len(inputs), batch_size)
    return np.concatenate(
        [
            np.asarray(model.predict_on_batch(inputs[i : i + batch_size].astype(np.float32)))
            for i in progress(batches, description)
        ]
    )


def split_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> SplitMetrics:
    predicted = probabilities.argmax(axis=1)
    # The same clipped cross-entropy Keras reports during fit.
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    confusion = np.zeros((len(class_names), len(class_names)), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    return SplitMetrics(
        accuracy=float(np.mean(predicted == labels)),
        loss=float(-np.mean(np.log(picked))),
        count=len(labels),
        per_class=class_counts(labels, class_names),
        confusion=confusion.tolist(),
    )


def _versions() -> dict[str, str]:
    # Only Keras is imported here, so training also runs on Keras' torch or jax backends.
    backend = keras.config.backend()
    return {
        "cxr": __version__,
        "keras": keras.__version__,
        backend: importlib.import_module(backend).__version__,
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
        "sources": {source: {name: asdict(m) for name, m in splits.items()} for source, splits in result.sources.items()},
        "skipped": result.skipped,
        "validation_files": result.validation_files,
        "seconds": result.seconds,
        "versions": _versions(),
    }
    history = {key: [float(v) for v in values] for key, values in history.items()}
    # Written together: a kill part-way leaves the previous model and its own run record.
    files = [result.model_path, out / "config.json", out / "history.json", out / "metrics.json"]
    with atomic_paths(*files) as (model_file, config_file, history_file, metrics_file):
        model.save(model_file)
        dump_json(config_file, {**config.to_json(), "class_names": result.class_names})
        dump_json(history_file, history)
        dump_json(metrics_file, record)
    plot_curves(history, out / "curves.png")

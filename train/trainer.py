"""One training run: read the data, fit the transfer model, evaluate it, write the run record."""

from __future__ import annotations

import functools
import importlib
import logging
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import confusion_matrix

from cxr.core import __version__
from cxr.core.calibration import confidence, fit_temperature, with_temperature
from cxr.core.corrections import Applied, Correction, correct, read_corrections
from cxr.core.datasets import DataRoot, class_counts, model_classes, scan_roots, source_names, stratified_split
from cxr.core.errors import DatasetError
from cxr.core.figures import plot_curves
from cxr.core.files import atomic_paths, dump_json
from cxr.core.progress import checkpoint
from cxr.runtime.imaging import load_image

from . import copies, lung_prior, ood, precision
from .calibration import fold_temperature
from .config import Precision, TrainConfig
from .distribute import strategy_scope, writes_results
from .inputs import Batches, Examples, Step, balance_groups, fill, listed, on_batch, open_stores, predict, sample_weights, store_specs
from .model import LUNG_PRIOR, PROBABILITIES, TransferModel, build_model, cut_layer
from .record import CalibrationFit, Distribution, GateFit, LungPriorFit, NearCopies, NearCopy, RunRecord, SplitMetrics
from .store import RowStore
from .weights import resolve_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trust:
    """What makes the model say when not to trust it, fitted after training."""

    temperature: float  # the logits are divided by it (folded into the output layer)
    gaussians: ood.ClassGaussians
    threshold: float  # scores above it are flagged as unlike the training images
    fitted_on: str  # the split T and the threshold were chosen on


@dataclass(frozen=True)
class Stage:
    trainable_blocks: int  # VGG16 blocks that train, counted from the last; the head always trains
    epochs: int
    learning_rate: float
    per_epoch: int = 0  # images per epoch, a balanced draw (inputs.balanced_draw); 0: every image

    @property
    def description(self) -> str:
        what = f"fine-tuning the last {self.trainable_blocks} VGG16 block(s) and the head" if self.trainable_blocks else "training the head on the frozen VGG16 base"
        each = f" of {self.per_epoch} images drawn balanced" if self.per_epoch else ""
        return f"{what}, {self.epochs} epochs{each} at learning rate {self.learning_rate:g}"


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
        checkpoint("fitting")


@dataclass
class TrainResult:
    model_path: Path
    class_names: list[str]
    splits: dict[str, SplitMetrics]  # "train", "val", and "test" when the data has one
    sources: dict[str, dict[str, SplitMetrics]]  # the same per data root, by source name
    skipped: list[str]
    seconds: dict[str, float]
    validation_files: list[str]  # held out of training, so other tools can check on the same images
    trust: Trust
    cached: int = 0  # images whose features (or decoded pixels) came from the cache
    test_copies: list[str] = field(default_factory=list)  # test files byte-identical to a train file
    replicas: int = 1  # devices that trained in sync (--distribute)
    # Near-copies of training images (copies.py), in any data root: validation ones were moved into
    # training; test ones stay, and make test accuracy flatter the model.
    val_near_copies: list[NearCopy] = field(default_factory=list)
    test_near_copies: list[NearCopy] = field(default_factory=list)
    lung_prior: LungPriorFit | None = None  # when the model has one
    precision: Precision = "float32"  # what the frozen layers' features were computed in
    corrections: Applied = field(default_factory=Applied)  # --corrections, per source and split


@dataclass
class _Filled:
    splits: dict[str, Examples]  # train, val and test, of the readable images
    skipped: list[str]
    cached: int
    test_copies: list[str]
    val_near_copies: list[NearCopy]  # moved from validation into training
    test_near_copies: list[NearCopy]
    corrections: Applied


def train(config: TrainConfig, roots: list[DataRoot] | None = None) -> TrainResult:
    """Run the recipe in ``config`` and write model.keras and its run record under ``config.out``.

    ``roots`` are ``config.data`` already scanned (the CLI scans them before TensorFlow loads).
    Four steps, as keras.io's transfer-learning examples have them: prepare (the model, and every
    image's features through the frozen front), fit (each stage), trust (temperature and gate, fitted
    on what the model makes of the splits), write (the model and its run record, together).
    """
    started = time.perf_counter()
    roots = roots or scan_roots(list(config.data), config.classes, config.class_map)
    class_names = model_classes(roots)
    weights = resolve_weights(config.weights)  # before the slow part: a bad --weights fails at once
    corrections = read_corrections(config.corrections, class_names)
    masks = lung_prior.masks_of(roots) if config.lung_prior is not False else []
    if config.lung_prior is None:  # by default, wherever there are masks to measure it on
        config = replace(config, lung_prior=bool(masks))
    stages = _stages(config)
    # Augmentation changes the images every epoch, so then nothing in front of the cut can be cached:
    # the stages read decoded images (layer None) instead of features.
    cached = config.fast_path and not config.augment
    # Only the cached frozen pass may run in bfloat16; a run that reads images trains in float32.
    config = replace(config, precision=precision.resolve(config.precision) if cached else "float32")
    layers = sorted({cut_layer(stage.trainable_blocks) for stage in stages}) if cached else [None]

    with strategy_scope(config.distribute) as replicas:
        keras.utils.set_random_seed(config.seed)
        net = build_model(len(class_names), config.image_size, weights, config.model_recipe, config.seed)
        prior = _set_lung_prior(net, masks, config) if config.lung_prior else None
        t0 = time.perf_counter()
        with open_stores(store_specs(config, net.model, weights, layers), keep=config.cache) as stores:
            filled = _fill_stores(config, net, roots, class_names, corrections, stores, layers)
            checkpoint("features")
            features = _Features(
                {layer: store.array() for layer, store in zip(layers, stores)},
                {layer: {k: store.rows_of(s.digests) for k, s in filled.splits.items()} for layer, store in zip(layers, stores)},
            )
            seconds = {"features": time.perf_counter() - t0}
            t0 = time.perf_counter()
            history, cut = _fit_stages(net, stages, features, filled.splits, config, cached, len(class_names))
            seconds["fit"] = time.perf_counter() - t0
            outputs = _read_out(net, cut, features, filled.splits, config)

    trust, metrics, by_source = _trusted(net, filled.splits, outputs, class_names, config)
    seconds["total"] = time.perf_counter() - started
    splits = filled.splits
    result = TrainResult(
        model_path=config.out / "model.keras",
        class_names=class_names,
        splits=metrics,
        sources=by_source,
        skipped=filled.skipped,
        seconds=seconds,
        # Absolute, as config.json's data roots are: a tool run from another folder finds them.
        validation_files=[str(path.absolute()) for path in splits["val"].paths] if "val" in splits else [],
        trust=trust,
        cached=filled.cached,
        test_copies=filled.test_copies,
        replicas=replicas,
        val_near_copies=filled.val_near_copies,
        test_near_copies=filled.test_near_copies,
        lung_prior=prior,
        precision=config.precision,
        corrections=filled.corrections,
    )
    if writes_results(config.distribute):
        _write_run_record(config, net.model, result, history)
    return result


@dataclass(frozen=True)
class _Features:
    """The stores' rows, memory-mapped, per cut layer (None: decoded images), and each split's rows."""

    arrays: dict[str | None, np.ndarray]
    rows: dict[str | None, dict[str, np.ndarray]]


def _stages(config: TrainConfig) -> list[Stage]:
    stages = [Stage(0, config.epochs, config.learning_rate)]
    if config.fine_tune:
        stages.append(Stage(config.fine_tune, config.fine_tune_epochs, config.fine_tune_learning_rate, config.fine_tune_sample))
    return stages


def _fit_stages(
    net: TransferModel, stages: list[Stage], features: _Features, splits: dict[str, Examples], config: TrainConfig, cached: bool, classes: int
) -> tuple[dict[str, list[float]], str | None]:
    """Fit each stage on the segment behind its cut; the history of all, and the last stage's cut."""
    history: dict[str, list[float]] = {}
    cut = None
    for number, stage in enumerate(stages, 1):
        log.info("stage %d of %d: %s", number, len(stages), stage.description)
        if stage.trainable_blocks:  # mark where fine-tuning starts, for the curves
            history["fine_tune_from_epoch"] = [len(history.get("loss", []))]
        net.freeze_all_but_last_blocks(stage.trainable_blocks)
        cut = cut_layer(stage.trainable_blocks) if cached else None
        model = net.segment(cut, None)
        for key, values in _fit(model, features.arrays[cut], features.rows[cut], splits, stage, config, classes).items():
            history.setdefault(key, []).extend(values)
    return history, cut


def _read_out(
    net: TransferModel, cut: str | None, features: _Features, splits: dict[str, Examples], config: TrainConfig
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's probabilities (before calibration) and the gate's pooled features."""
    inputs, tensors = net.tensors(cut)
    readout = keras.Model(inputs, [tensors[PROBABILITIES], ood.pooled(tensors[ood.LAYER])])
    return {
        name: predict(readout, features.arrays[cut], features.rows[cut][name], config.batch_size, f"Evaluating ({name})")
        for name in splits
    }


def _trusted(
    net: TransferModel, splits: dict[str, Examples], outputs: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str], config: TrainConfig
) -> tuple[Trust, dict[str, SplitMetrics], dict[str, dict[str, SplitMetrics]]]:
    """Fit the gate and the temperature (folded into the model), and measure every split, whole and
    per source, as the exported model will answer."""
    probabilities = {name: values for name, (values, _) in outputs.items()}
    gaussians = ood.fit_gaussians(outputs["train"][1], splits["train"].labels, len(class_names))
    scores = {name: keras.ops.convert_to_numpy(ood.distance(pooled, gaussians)) for name, (_, pooled) in outputs.items()}
    trust = _fit_trust(splits, probabilities, scores, gaussians)
    fold_temperature(net.model, trust.temperature)

    def measured(name: str, mine: np.ndarray | slice = slice(None)) -> SplitMetrics:
        return split_metrics(probabilities[name][mine], splits[name].labels[mine], scores[name][mine], class_names, trust)

    by_source = {
        source: {name: measured(name, mine) for name, split in splits.items() if (mine := split.sources == index).any()}
        for index, source in enumerate(source_names(list(config.data)))
    }
    return trust, {name: measured(name) for name in splits}, by_source


def _fill_stores(
    config: TrainConfig,
    net: TransferModel,
    roots: list[DataRoot],
    class_names: list[str],
    corrections: list[Correction],
    stores: list[RowStore],
    layers: list[str | None],
) -> _Filled:
    """Fill every store for every image; split the readable images into train, validation
    (stratified from train by source and class) and test, and find test files that are copies of
    train files (the digests are at hand: a copy makes test accuracy look better than it is).

    The first layer's rows are computed from the images and later ones from them, so no image goes
    through the early blocks twice."""
    read = functools.partial(load_image, size=config.image_size, contrast=config.contrast)
    steps = [_step(net, before, layer, config.precision) for before, layer in zip([None, *layers], layers)]
    listings, applied = _corrected({split: listed(roots, split, class_names) for split in ("train", "test")}, corrections, config, class_names)
    readable, skipped = {}, []
    for split, listing in listings.items():
        examples, failed = fill(stores, steps, listing, read, config.strict, f"Features ({split})")
        readable[split] = examples
        skipped += failed
    train_all = readable["train"]
    for name, count in class_counts(train_all.labels, class_names).items():
        if count < 2:
            raise DatasetError(f"class {name!r} has {count} readable train images; it needs at least 2")
    strata = train_all.sources * len(class_names) + train_all.labels
    fit_idx, val_idx = stratified_split(strata, config.val_split, config.seed)
    test = readable["test"]
    val_copies, test_near = _near_copies(readable, train_all.subset(fit_idx), train_all.subset(val_idx), config) if config.near_copies else ([], [])
    # A validation image that is a copy of a training image would steer the recipe and the
    # temperature with an answer already seen: it trains instead.
    moved = {copy.file for copy in val_copies}
    back = np.array([str(train_all.paths[i]) in moved for i in val_idx], dtype=bool)
    fit_idx, val_idx = np.sort(np.concatenate([fit_idx, val_idx[back]])), val_idx[~back]
    splits = {"train": train_all.subset(fit_idx), "val": train_all.subset(val_idx), "test": test}
    trained_on = set(train_all.digests)
    return _Filled(
        {k: split for k, split in splits.items() if len(split)},
        skipped,
        sum(examples.cached for examples in readable.values()),
        [str(path) for path, digest in zip(test.paths, test.digests) if digest in trained_on],
        val_copies,
        test_near,
        applied,
    )


def _corrected(
    listings: dict[str, Examples], corrections: list[Correction], config: TrainConfig, class_names: list[str]
) -> tuple[dict[str, Examples], Applied]:
    """The splits' films after ``corrections`` (dropped or relabelled by content), and what was
    applied, counted per source and split ("Covid19-dataset/train")."""
    names = source_names(list(config.data))
    splits = [split for split, examples in listings.items() for _ in examples.paths]
    everything = Examples(
        [path for examples in listings.values() for path in examples.paths],
        np.concatenate([examples.labels for examples in listings.values()]),
        np.concatenate([examples.sources for examples in listings.values()]),
        [digest for examples in listings.values() for digest in examples.digests],
    )
    where = [f"{names[source]}/{split}" for source, split in zip(everything.sources, splits)]
    done = correct(everything.digests, everything.labels, where, corrections, class_names, config.corrections)
    kept = everything.subset(done.keep)
    kept.labels = np.asarray(done.labels, np.int64)
    split_of = np.asarray([splits[i] for i in done.keep])
    return {split: kept.subset(np.flatnonzero(split_of == split)) for split in listings}, done.applied


def _set_lung_prior(net: TransferModel, masks: list[Path], config: TrainConfig) -> LungPriorFit:
    grid = tuple(net.model.get_layer(LUNG_PRIOR).output.shape[1:3])
    prior = lung_prior.measure(masks, config.image_size, grid)
    lung_prior.set_prior(net.model, prior)
    return LungPriorFit(prior.round(4).tolist(), len(masks))


def _near_copies(readable: dict[str, Examples], fitted: Examples, held: Examples, config: TrainConfig) -> tuple[list[NearCopy], list[NearCopy]]:
    """The validation images within copies.NEAR_BITS of a film that trains, and the test images
    within it of any train-folder film (validation included, as for byte-for-byte copies), by
    either hash."""
    with open_stores([copies.SPEC], keep=config.cache) as (hashes,):
        for examples in readable.values():
            fill([hashes], [lambda codes: codes], examples, copies.mean_hashes, strict=False, description="Near-copies")
        codes = hashes.array()

        def near(examples: Examples, among: Examples) -> list[NearCopy]:
            bits, index = copies.nearest(codes[hashes.rows_of(examples.digests)], codes[hashes.rows_of(among.digests)])
            return [NearCopy(str(examples.paths[i]), str(among.paths[index[i]]), int(bits[i])) for i in np.flatnonzero(bits <= copies.NEAR_BITS)]

        return near(held, fitted), near(readable["test"], readable["train"])


def _fit_trust(
    splits: dict[str, Examples], probabilities: dict[str, np.ndarray], scores: dict[str, np.ndarray], gaussians: ood.ClassGaussians
) -> Trust:
    """Temperature and threshold chosen on the validation split (the Gaussians behind the scores
    were fitted on the training split). Without a validation split (--val-split 0) nothing honest
    can choose a temperature, so T stays 1 and the threshold comes from the training images, which
    pass more easily than new ones."""
    fitted_on = "val" if "val" in splits else "train"
    held = splits[fitted_on]
    temperature = fit_temperature(probabilities[fitted_on], held.labels) if fitted_on == "val" else 1.0
    return Trust(temperature, gaussians, ood.threshold(scores[fitted_on], held.sources), fitted_on)


def _step(net: TransferModel, before: str | None, layer: str | None, arithmetic: Precision) -> Step:
    """How a store's rows follow from the previous store's (or from the images)."""
    if layer is None:
        return lambda images: images
    segment = precision.computing_in(net.segment(before, layer), arithmetic)
    return lambda values: on_batch(segment, values.astype(np.float32))[0]


def _fit(
    model: keras.Model,
    array: np.ndarray,
    rows: dict[str, np.ndarray],
    splits: dict[str, Examples],
    stage: Stage,
    config: TrainConfig,
    num_classes: int,
) -> dict[str, list[float]]:
    """One training stage; returns Keras' per-epoch history."""
    model.compile(
        optimizer=keras.optimizers.Adam(stage.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )

    def batches(name: str, weights: np.ndarray, seed: int | None, groups: np.ndarray | None = None, per_epoch: int = 0) -> Batches:
        targets = keras.utils.to_categorical(splits[name].labels, num_classes)
        return Batches(array, rows[name], targets, weights, config.batch_size, seed, groups, per_epoch)

    films = splits["train"]
    if stage.per_epoch:  # a balanced draw each epoch needs no loss weights
        groups = balance_groups(films, config.balance)
        training = batches("train", np.ones(len(films), np.float32), config.seed, groups, stage.per_epoch)
    else:
        training = batches("train", sample_weights(films, config.balance), config.seed)
    validation = batches("val", np.ones(len(splits["val"]), np.float32), None) if "val" in splits else None
    callbacks = []
    if config.early_stopping and validation:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.early_stopping, restore_best_weights=True
            )
        )
    fitted = model.fit(
        training,
        validation_data=validation,
        epochs=stage.epochs,
        shuffle=False,  # Batches shuffles, from the run's seed
        callbacks=[*callbacks, _EpochLog(stage.epochs)],
        verbose=0,  # Keras' own bar writes terminal escapes into logs; _EpochLog writes plain lines
    )
    return fitted.history


def split_metrics(
    probabilities: np.ndarray, labels: np.ndarray, scores: np.ndarray, class_names: list[str], trust: Trust
) -> SplitMetrics:
    """Metrics of the model as exported, from its probabilities before calibration and its
    out-of-distribution scores."""
    calibrated = with_temperature(probabilities, trust.temperature)
    predicted = calibrated.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, labels=range(len(class_names)))
    honesty = confidence(calibrated, labels)
    return SplitMetrics(
        accuracy=float(np.mean(predicted == labels)),
        loss=honesty.loss,
        ece=honesty.ece,
        ece_by_chance=honesty.ece_by_chance,
        count=len(labels),
        per_class={name: count for name, count in class_counts(labels, class_names).items() if count},
        confusion=confusion.tolist(),
        uncalibrated=confidence(probabilities, labels),
        flagged=float(np.mean(scores > trust.threshold)),
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
    trust = result.trust
    record = RunRecord(
        config=config,
        class_names=result.class_names,
        splits=result.splits,
        sources=result.sources,
        calibration=CalibrationFit(trust.temperature, trust.fitted_on),
        ood=GateFit(ood.SCORE, trust.threshold, ood.VALIDATION_PASS, trust.fitted_on, trust.gaussians.count, trust.gaussians.shrinkage),
        versions=_versions(),
        corrections=result.corrections,
        skipped=result.skipped,
        validation_files=result.validation_files,
        seconds=result.seconds,
        cached_images=result.cached,
        test_copies_of_train=result.test_copies,
        near_copies=NearCopies(f"{copies.METHOD}, at most {copies.NEAR_BITS} of 256 bits apart", result.val_near_copies, result.test_near_copies),
        lung_prior=result.lung_prior,
        distribute=Distribution(config.distribute, result.replicas),
    )
    history = {key: [float(v) for v in values] for key, values in history.items()}
    # Written together: a kill part-way leaves the previous model and its own run record.
    files = [result.model_path, out / "config.json", out / "history.json", out / "metrics.json", out / ood.FILE]
    with atomic_paths(*files) as (model_file, config_file, history_file, metrics_file, gaussians_file):
        model.save(model_file)
        checkpoint("writing")
        result.trust.gaussians.save(gaussians_file)
        dump_json(config_file, record.config_json())
        dump_json(history_file, history)
        dump_json(metrics_file, record.metrics_json())
    plot_curves(history, out / "curves.png")

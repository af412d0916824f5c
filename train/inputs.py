"""What the training stages read: each image's model input or frozen-front features, computed in one
streamed pass into on-disk stores (``store.py``) and handed to Keras in shuffled, weighted batches.

Nothing here holds a whole split's images or features in memory: decoding runs a batch ahead of the
model, rows go straight to disk, and training reads them back a batch at a time.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cxr.core import __version__
from cxr.core.datasets import DECODE_BATCH, DataRoot, decode_batches, file_digest, file_digests, labelled_files, readable
from cxr.core.progress import progress
from cxr.core.sources import cache_dir

from .config import Balance, TrainConfig
from .store import RowStore, StoreSpec, made_by

IMAGE = "image"  # the store of decoded model inputs, for runs that cannot cache features


@dataclass
class Examples:
    """One split's images: file, class, source and content digest each (their arrays live in stores)."""

    paths: list[Path]
    labels: np.ndarray  # int64, class index
    sources: np.ndarray  # int64, which data root
    digests: list[str]
    cached: int = 0  # how many were read from the feature cache rather than computed

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Examples:
        return Examples(
            [self.paths[i] for i in indices],
            self.labels[indices],
            self.sources[indices],
            [self.digests[i] for i in indices],
        )


def listed(roots: list[DataRoot], split: str, class_names: list[str]) -> Examples:
    """Every file of ``split`` ("train" or "test") in every root, with its class, source and digest."""
    items = [(path, label, source) for source, data in enumerate(roots) for path, label in labelled_files(getattr(data, split), class_names)]
    paths = [path for path, _, _ in items]
    return Examples(
        paths,
        np.asarray([label for _, label, _ in items], dtype=np.int64),
        np.asarray([source for _, _, source in items], dtype=np.int64),
        file_digests(paths),
    )


def store_specs(config: TrainConfig, model: keras.Model, weights: str | None, layers: list[str | None]) -> list[StoreSpec]:
    """The stores a run reads: decoded images (None) or the outputs of ``layers``, in order."""
    common = dict(image_size=config.image_size, contrast=config.contrast, cxr=__version__)
    image = StoreSpec(IMAGE, (config.image_size, config.image_size, 3), "uint8", made_by(**common))
    # Random weights are the seed's: only a run with the same seed may reuse them.
    source = file_digest(Path(weights)) if weights else f"random, seed {config.seed}"
    feature = made_by(
        **common,
        weights=source,
        preprocess=config.preprocess,
        precision=config.precision,
        keras=keras.__version__,
        backend=keras.config.backend(),
    )
    return [
        image if layer is None else StoreSpec(layer, tuple(model.get_layer(layer).output.shape[1:]), "float32", feature)
        for layer in layers
    ]


@contextlib.contextmanager
def open_stores(specs: list[StoreSpec], keep: bool) -> Iterator[list[RowStore]]:
    """The stores under cxr's cache (``keep``), or in a temporary folder removed afterwards."""
    if keep:
        yield [RowStore(cache_dir() / "features", spec) for spec in specs]
        return
    with tempfile.TemporaryDirectory(prefix="cxr-features-") as folder:
        yield [RowStore(Path(folder), spec) for spec in specs]


Step = Callable[[np.ndarray], np.ndarray]  # one store's rows from the previous store's (or images)


def fill(
    stores: list[RowStore],
    steps: list[Step],
    examples: Examples,
    read: Callable[[Path], np.ndarray],
    strict: bool,
    description: str,
) -> tuple[Examples, list[str]]:
    """Give every store a row for each image it lacks, decoding and computing in batches; return the
    readable examples and the unreadable files ("path: reason"). ``examples.cached`` counts the
    images that were all there already."""
    wanted = set().union(*(store.missing(examples.digests) for store in stores))
    first_path = {digest: path for path, digest in zip(examples.paths, examples.digests) if digest in wanted}
    digest_of = {path: digest for digest, path in first_path.items()}
    skipped: list[str] = []
    unreadable: set[str] = set()
    batches = decode_batches(list(first_path.values()), read, DECODE_BATCH)
    with contextlib.ExitStack() as held:
        for store in stores:
            held.enter_context(store.writing())
        for batch in progress(batches, description, total=-(-len(first_path) // DECODE_BATCH)):
            decoded, failed = readable(batch, strict)
            skipped += failed
            unreadable |= {digest_of[path] for path, outcome in batch if not isinstance(outcome, np.ndarray)}
            if not decoded:
                continue
            keys = [digest_of[path] for path, _ in decoded]
            values = np.stack([image for _, image in decoded])
            for store, step in zip(stores, steps):
                values = step(values)
                store.add(keys, values)
    keep = [i for i, digest in enumerate(examples.digests) if digest not in unreadable]
    readable_examples = examples.subset(keep)
    readable_examples.cached = sum(digest not in wanted for digest in examples.digests)
    return readable_examples, skipped


def balance_groups(examples: Examples, balance: Balance) -> np.ndarray:
    """The group each image is balanced within: its class (``class``), its class in its source
    (``source-class``), or one group for all (``none``)."""
    if balance == "none":
        return np.zeros(len(examples), np.int64)
    return examples.labels if balance == "class" else examples.sources * (examples.labels.max() + 1) + examples.labels


def sample_weights(examples: Examples, balance: Balance) -> np.ndarray:
    """Per-image loss weights that make every balance group count as much as the others (all 1 for
    ``none``). They average 1."""
    _, group, counts = np.unique(balance_groups(examples, balance), return_inverse=True, return_counts=True)
    return (len(group) / (len(counts) * counts[group])).astype(np.float32)


def balanced_draw(groups: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """About ``size`` indices, as many from each group (rounded up), in a random order: a group
    smaller than its share gives all its images and then repeats some, a larger one a random part."""
    members = [np.flatnonzero(groups == group) for group in np.unique(groups)]
    share = -(-size // len(members))
    drawn = [
        np.concatenate([rng.permutation(ids)[: min(share, len(ids))], rng.choice(ids, max(0, share - len(ids)))])
        for ids in members
    ]
    return rng.permutation(np.concatenate(drawn))


class Batches(keras.utils.PyDataset):
    """Rows of a store for Keras: ``(inputs, targets, weights)`` batches, in a new order each epoch
    when ``seed`` is given (in order otherwise). With ``groups`` and ``per_epoch``, each epoch is
    instead a new balanced draw of ``per_epoch`` rows (``balanced_draw``). Only the batch in hand is
    read into memory."""

    def __init__(
        self,
        array: np.ndarray,
        rows: np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray,
        batch_size: int,
        seed: int | None = None,
        groups: np.ndarray | None = None,
        per_epoch: int = 0,
    ):
        super().__init__()
        self.array, self.rows, self.targets, self.weights = array, rows, targets, weights
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed) if seed is not None else None
        self.groups, self.per_epoch = groups, per_epoch
        self.order = self._new_order()

    def _new_order(self) -> np.ndarray:
        if self.rng is None:
            return np.arange(len(self.rows))
        if self.per_epoch:
            return balanced_draw(self.groups, self.per_epoch, self.rng)
        return self.rng.permutation(len(self.rows))

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return rows_as_inputs(self.array, self.rows[picked]), self.targets[picked], self.weights[picked]

    def on_epoch_end(self) -> None:
        self.order = self._new_order()


def rows_as_inputs(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.asarray(array[rows], dtype=np.float32)


def predict(model: keras.Model, array: np.ndarray, rows: np.ndarray, batch_size: int, description: str) -> list[np.ndarray]:
    """Each of ``model``'s outputs on the given rows, computed a batch at a time."""
    starts = range(0, len(rows), batch_size)
    batches = [on_batch(model, rows_as_inputs(array, rows[i : i + batch_size])) for i in progress(starts, description)]
    return [np.concatenate([np.asarray(batch[k]) for batch in batches]) for k in range(len(model.outputs))]


def on_batch(model: keras.Model, inputs: np.ndarray) -> list[np.ndarray]:
    """The model's outputs on one batch. Under a tf.distribute strategy with several replicas the
    batch is split across them by ``predict`` (Keras' predict_on_batch would give every replica the
    whole batch and return each one's copy); on one device predict_on_batch is 12% faster on a CPU."""
    strategy = getattr(model, "distribute_strategy", None)  # Keras' TensorFlow backend only
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        outputs = model.predict(inputs, batch_size=len(inputs), verbose=0)
    else:
        outputs = model.predict_on_batch(inputs)
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

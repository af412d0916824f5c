"""Ways to make the model read the lungs, compared in seconds: heads trained on cached features.

    python research/lung_heads.py --weights PATH [--seeds 0 --seeds 1 --seeds 2]
    python research/lung_heads.py --weights PATH --bacterial "" --variant none   # bacterial films left out

Every variant trains the default recipe's head (Flatten, dropout 0.5, label smoothing 0.1, Adam 1e-3,
8 epochs, loss balanced by collection and class) on the frozen VGG16 base's block5_pool features of
the four shared collections (block5 run on block4_pool features kept in cxr's feature cache, as
cxr-train keeps them), with:
- nothing (the recipe without a lung prior);
- the lung prior at each sharpness: the map times each cell's share on the lungs, to a power;
- a lung prior one block earlier too: block4_pool (14x14) times its cells' share on the lungs before
  the frozen block5 reads it, so that block5's wide view cannot carry what lies off the lungs;
- a penalty on evidence off the lungs ("right for the right reasons", Ross et al. 2017): the share of
  the true class's positive evidence outside the lungs, times lambda, added to the loss, for the
  films with a mask (only NLM's Normal films have one), or for every film, using the mean mask
  where a film has none.
Per variant, mean over seeds: the lowest collection's validation accuracy (the training-domain
choice), the mean leave-one-collection-out validation accuracy (trained without a collection, scored
on that collection's train split: the choice for collections never seen), and the share of the
evidence on the lungs of the NLM test Normal films. Fine-tuning is left out, so that a variant costs
seconds; the winner is then trained whole (benchmarks/generalization.py).
"""

from __future__ import annotations

import functools
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

os.environ.setdefault("CXR_QUIET", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COLLECTIONS = ["Covid19-dataset", "Covid19-radiography-subset", "Pediatric-pneumonia-subset", "NLM-tuberculosis-subset"]
GRID = (7, 7)
EPOCHS, BATCH = 8, 32


@dataclass(frozen=True)
class Variant:
    name: str
    sharpness: float | None = None  # the lung prior's power; None: no prior
    penalty: float = 0.0  # lambda
    mean_mask_for_all: bool = False  # penalise films without a mask against the mean mask
    earlier: float | None = None  # the power of a prior on block4_pool too; None: none there


VARIANTS = [
    Variant("none"),
    *[Variant(f"lung prior, power {p:g}", sharpness=p) for p in (1, 2, 3, 4)],
    *[Variant(f"penalty {lam:g}, own masks", penalty=lam) for lam in (1, 10)],
    *[Variant(f"penalty {lam:g}, mean mask where none", penalty=lam, mean_mask_for_all=True) for lam in (1, 10)],
    *[Variant(f"block4 prior, power {q:g}, and lung prior, power 3", sharpness=3, earlier=q) for q in (1, 2)],
    Variant("block4 prior, power 1, alone", earlier=1),
]
EARLIER, EARLIER_GRID = "block4_pool", (14, 14)


def fit(features, labels, weights, off, classes, seed, prior, penalty):
    """The head's kernel and bias after EPOCHS of Adam on the smoothed, weighted cross-entropy plus
    ``penalty`` times each film's share of its true class's positive evidence on ``off`` cells."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    scaled = features * prior[np.newaxis, :, :, np.newaxis]
    dense = keras.layers.Dense(classes)
    dense.build((None, scaled[0].size))
    dropout = keras.layers.Dropout(0.5, seed=seed)
    optimizer = keras.optimizers.Adam(1e-3)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, reduction="none")
    rng = np.random.default_rng(seed)
    for _ in range(EPOCHS):
        order = rng.permutation(len(labels))
        for start in range(0, len(labels), BATCH):
            rows = order[start : start + BATCH]
            x = tf.constant(scaled[rows])
            y = tf.one_hot(labels[rows], classes)
            with tf.GradientTape() as tape:
                logits = dense(dropout(tf.reshape(x, (len(rows), -1)), training=True))
                value = tf.reduce_sum(loss(y, logits) * weights[rows]) / len(rows)
                if penalty:
                    kernel = tf.reshape(dense.kernel, (*GRID, -1, classes))
                    evidence = tf.einsum("nijk,ijkc,nc->nij", x, kernel, y)
                    raised = tf.nn.relu(evidence)
                    outside = tf.reduce_sum(raised * off[rows], axis=(1, 2)) / (tf.reduce_sum(raised, axis=(1, 2)) + 1e-6)
                    value += penalty * tf.reduce_mean(outside)
            grads = tape.gradient(value, dense.trainable_variables)
            optimizer.apply_gradients(zip(grads, dense.trainable_variables))
    kernel, bias = (v.numpy() for v in dense.weights)
    return kernel, bias


def predicted(features, prior, kernel, bias) -> np.ndarray:
    scaled = features * prior[np.newaxis, :, :, np.newaxis]
    return (scaled.reshape(len(features), -1) @ kernel + bias).argmax(axis=1)


def evidence_on_lungs(features, masks, prior, kernel, bias, size) -> float:
    """Mean share of the predicted class's positive evidence on each film's own mask (cxr-eval's figure)."""
    from cxr.runtime.masks import read_mask
    from cxr.eval.lungs import share_on

    classes = predicted(features, prior, kernel, bias)
    per_cell = kernel.reshape(*GRID, -1, kernel.shape[1])
    shares = []
    for film, mask, c in zip(features * prior[np.newaxis, :, :, np.newaxis], masks, classes):
        share = share_on(read_mask(mask, size), np.einsum("ijk,ijk->ij", film, per_cell[..., c]))
        if share is not None:
            shares.append(share)
    return statistics.mean(shares)


def four_collections(weights: str, bacterial: str = "Viral Pneumonia"):
    """The four shared collections as the README's first command reads them (bacterial films as
    ``bacterial``, "" leaving them out; tuberculosis left out), the model's classes, the default
    config and the untrained transfer model."""
    from cxr.core.datasets import model_classes, scan_roots
    from cxr.train.config import TrainConfig
    from cxr.train.model import build_model

    class_map = (("Bacterial Pneumonia", bacterial), ("Tuberculosis", ""))
    roots = scan_roots([SHARED / name for name in COLLECTIONS], (), class_map)
    names = model_classes(roots)
    # float32: the features these scripts compute themselves, as their published tables were.
    config = TrainConfig(data=tuple(SHARED / name for name in COLLECTIONS), weights=weights, class_map=class_map, precision="float32")
    return roots, names, config, build_model(len(names), config.image_size, weights, config.model_recipe)


def cached_block4(config, net, roots, names, weights):
    """Each split's films and their block4_pool features, through cxr-train's feature cache."""
    from cxr.runtime.imaging import load_image
    from cxr.train.inputs import fill, listed, on_batch, open_stores, store_specs

    front = net.segment(None, EARLIER)
    read = functools.partial(load_image, size=config.image_size, contrast=config.contrast)
    with open_stores(store_specs(config, net.model, weights, [EARLIER]), keep=True) as (store,):
        splits = []
        for split in ("train", "test"):
            examples, _ = fill([store], [lambda images: on_batch(front, images.astype(np.float32))[0]], listed(roots, split, names), read, False, f"Features ({split})")
            splits.append((examples, np.asarray(store.array()[store.rows_of(examples.digests)], np.float32)))
    return splits


def block5_of(back, block4: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The frozen block5's output on block4 features times ``prior`` (each of their cells)."""
    from cxr.train.inputs import on_batch

    return np.concatenate([on_batch(back, block4[i : i + 64] * prior[np.newaxis, :, :, np.newaxis])[0] for i in range(0, len(block4), 64)])


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    seeds: list[int] = typer.Option([0, 1, 2], help="Seeds (repeat)."),
    bacterial: str = typer.Option("Viral Pneumonia", help="The class bacterial films count as; \"\" leaves them out."),
    only: list[str] = typer.Option([], "--variant", help="Only the variants whose names start so (repeat); default: all."),
) -> None:
    from cxr.core.datasets import stratified_split
    from cxr.runtime.masks import mask_for
    from cxr.train.inputs import sample_weights
    from cxr.train.lung_prior import cells_on_lungs
    from cxr.train.model import FEATURES

    roots, names, config, net = four_collections(weights, bacterial)
    (train, x4), (test, x4_test) = cached_block4(config, net, roots, names, weights)
    block5 = functools.partial(block5_of, net.segment(EARLIER, FEATURES))
    plain = np.ones(EARLIER_GRID, np.float32)
    x_plain, x_test_plain = block5(x4, plain), block5(x4_test, plain)
    masks = [mask_for(path) for path in train.paths]
    has_mask = np.array([m is not None for m in masks])
    lungs = np.stack([cells_on_lungs(m, config.image_size, GRID) if m else np.zeros(GRID, np.float32) for m in masks])
    mean_lungs = lungs[has_mask].mean(axis=0)
    mean_earlier = np.mean([cells_on_lungs(m, config.image_size, EARLIER_GRID) for m in masks if m], axis=0)
    nlm = np.flatnonzero(test.sources == COLLECTIONS.index("NLM-tuberculosis-subset"))
    nlm_masks = [mask_for(test.paths[i]) for i in nlm]

    print(f"Heads on {FEATURES} features (from cached {EARLIER} ones), bacterial films as {bacterial or 'nothing (left out)'}, seeds {seeds}.\n")
    print("| variant | lowest collection's validation accuracy | leave-one-collection-out validation accuracy | evidence on the lungs (NLM test Normal) |")
    print("|---|---|---|---|", flush=True)
    for variant in [v for v in VARIANTS if not only or any(v.name.startswith(prefix) for prefix in only)]:
        prior = mean_lungs**variant.sharpness if variant.sharpness else np.ones(GRID, np.float32)
        earlier = (mean_earlier**variant.earlier).astype(np.float32) if variant.earlier else None
        x, x_test = (block5(x4, earlier), block5(x4_test, earlier)) if variant.earlier else (x_plain, x_test_plain)
        # Off the lungs: by the film's own mask; without one, by the mean mask or not at all.
        elsewhere = 1 - mean_lungs if variant.mean_mask_for_all else 0.0
        off = np.where(has_mask[:, None, None], 1 - lungs, elsewhere).astype(np.float32)
        lowest, held_out, on_lungs = [], [], []
        for seed in seeds:
            fitted, val = stratified_split(train.sources * len(names) + train.labels, config.val_split, seed)
            part = train.subset(fitted)
            kernel, bias = fit(x[fitted], part.labels, sample_weights(part, "source-class"), off[fitted], len(names), seed, prior, variant.penalty)
            right = predicted(x[val], prior, kernel, bias) == train.labels[val]
            lowest.append(min(right[train.sources[val] == s].mean() for s in np.unique(train.sources[val])))
            on_lungs.append(evidence_on_lungs(x_test[nlm], nlm_masks, prior, kernel, bias, config.image_size))
            scores = []
            for source in range(len(COLLECTIONS)):
                kept = np.flatnonzero(train.sources != source)
                part = train.subset(kept)
                kernel, bias = fit(x[kept], part.labels, sample_weights(part, "source-class"), off[kept], len(names), seed, prior, variant.penalty)
                mine = train.sources == source
                scores.append(float((predicted(x[mine], prior, kernel, bias) == train.labels[mine]).mean()))
            held_out.append(statistics.mean(scores))
        print(f"| {variant.name} | {statistics.mean(lowest):.3f} | {statistics.mean(held_out):.3f} | {statistics.mean(on_lungs):.2f} |", flush=True)


if __name__ == "__main__":
    typer.run(main)

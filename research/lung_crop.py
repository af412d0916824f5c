"""Lung-centred input, measured before it is built: does cropping each film to its lungs help a
collection the model never saw?

    python research/lung_crop.py --weights PATH [--seeds 0 --seeds 1 --seeds 2] [--epochs 30]

A small U-Net (four levels, 16-128 filters, 128x128 equalized gray input, Dice plus cross-entropy,
random zoom, shift, rotation and gamma) learns the lungs from the masks beside the NLM train films
and is scored by Dice on the NLM test masks. Every film of the four shared collections is then cut
to the box around the U-Net's lungs (its pieces of at least a fifth of the largest, widened by
MARGIN on each side; the whole film where it finds under 3% lung), optionally with what lies outside
the (dilated) lungs painted mid-gray, and read by the runtime's imaging code and the frozen VGG16
to block5_pool. The default recipe's head is trained on those features as research/lung_heads.py
trains it (no fine-tuning), with and without a lung prior measured on the cropped masks.

Prints, per variant and mean over seeds: the lowest collection's validation accuracy (the
training-domain choice), the mean leave-one-collection-out validation accuracy (trained without a
collection, scored on its train split) and, for the same held-out models, each collection's test
accuracy and Normal recall. The whole film (with and without today's prior) is measured the same way
in the same run. About an hour on 2 CPU cores (each set of features ~8 minutes, each variant ~4).
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer
from PIL import Image
from scipy import ndimage

os.environ.setdefault("CXR_QUIET", "1")

from lung_heads import COLLECTIONS, GRID, SHARED, fit, four_collections, predicted  # noqa: E402

SIZE = 128  # the U-Net's input side
MARGIN = 0.08  # of the lung box's width and height, added on each side
LEAST_LUNG = 0.03  # a film whose lungs cover less of it than this is read whole
WHOLE = (0.0, 0.0, 1.0, 1.0)  # a box: left, top, right, bottom as shares of the film
BATCH = 32


@dataclass(frozen=True)
class Variant:
    name: str
    crop: str  # "film" (whole), "crop" (lung box) or "gray" (lung box, gray outside the lungs)
    power: float | None = None  # the lung prior's power (measured on the masks as cut); None: none


VARIANTS = [
    Variant("whole film, no prior", "film"),
    Variant("whole film, lung prior power 3 (today's default)", "film", 3),
    Variant("lung box", "crop"),
    Variant("lung box, lung prior power 1", "crop", 1),
    Variant("lung box, lung prior power 3", "crop", 3),
    Variant("lung box, gray outside the lungs", "gray"),
    Variant("lung box, gray outside the lungs, lung prior power 1", "gray", 1),
]


def unet():
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 1))
    x, skips = inputs, []
    for filters in (16, 32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu")(x)
    for filters, skip in zip((128, 64, 32, 16), reversed(skips)):
        x = layers.Concatenate()([layers.UpSampling2D()(x), skip])
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def dice_loss(truth, guess):
    import tensorflow as tf

    overlap = tf.reduce_sum(truth * guess, axis=(1, 2, 3))
    total = tf.reduce_sum(truth, axis=(1, 2, 3)) + tf.reduce_sum(guess, axis=(1, 2, 3))
    return 1 - tf.reduce_mean((2 * overlap + 1) / (total + 1))


def segmenter_input(images: list[Image.Image]) -> np.ndarray:
    from cxr.runtime.imaging import to_model_input

    return np.stack([to_model_input(image, SIZE, "equalize")[..., :1] for image in images]).astype(np.float32) / 255


def masked_films(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from cxr.runtime.masks import mask_for, read_mask
    from cxr.runtime.imaging import read_rgb

    films = [(path, mask) for path in paths if (mask := mask_for(path))]
    x = segmenter_input([read_rgb(path) for path, _ in films])
    y = np.stack([read_mask(mask, SIZE) for _, mask in films]).astype(np.float32)[..., np.newaxis]
    return x, y


def train_segmenter(train_paths: list[Path], test_paths: list[Path], epochs: int):
    """The U-Net and its Dice on the test films' masks."""
    import keras
    import tensorflow as tf
    from keras import layers

    keras.utils.set_random_seed(0)
    x, y = masked_films(train_paths)
    x_test, y_test = masked_films(test_paths)
    move = keras.Sequential(
        [
            layers.RandomZoom((-0.25, 0.15), fill_mode="constant"),
            layers.RandomTranslation(0.12, 0.12, fill_mode="constant"),
            layers.RandomRotation(0.04, fill_mode="constant"),
        ]
    )

    def augment(film, mask):  # one geometric move for film and mask; gamma for the film alone
        both = move(tf.concat([film, mask], -1), training=True)
        gamma = tf.exp(tf.random.uniform((tf.shape(film)[0], 1, 1, 1), -0.5, 0.5))
        return tf.clip_by_value(both[..., :1], 1e-3, 1.0) ** gamma, tf.cast(both[..., 1:] > 0.5, tf.float32)

    batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(16).map(augment)
    net = unet()
    net.compile(keras.optimizers.Adam(1e-3), loss=lambda t, g: keras.losses.binary_crossentropy(t, g) + dice_loss(t, g))
    net.fit(batches, epochs=epochs, verbose=0)
    guess = (net.predict(x_test, verbose=0) > 0.5).astype(np.float32)
    return net, 1 - float(dice_loss(y_test, guess))


def lung_box(lungs: np.ndarray) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """The box (left, top, right, bottom as shares of the film) around the lungs the U-Net found, and
    the pieces kept; the whole film where they cover less than LEAST_LUNG of it."""
    pieces, count = ndimage.label(lungs)
    if count == 0:
        return WHOLE, lungs
    sizes = ndimage.sum(lungs, pieces, range(1, count + 1))
    kept = np.isin(pieces, 1 + np.flatnonzero(sizes >= 0.2 * sizes.max()))  # both lungs, no specks
    if kept.mean() < LEAST_LUNG:
        return WHOLE, kept
    rows, cols = np.nonzero(kept)
    top, bottom, left, right = rows.min() / SIZE, (rows.max() + 1) / SIZE, cols.min() / SIZE, (cols.max() + 1) / SIZE
    dy, dx = MARGIN * (bottom - top), MARGIN * (right - left)
    return (max(0.0, left - dx), max(0.0, top - dy), min(1.0, right + dx), min(1.0, bottom + dy)), kept


def pixels(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    return int(left * width), int(top * height), int(np.ceil(right * width)), int(np.ceil(bottom * height))


def cut(image: Image.Image, lungs: np.ndarray, crop: str) -> tuple[Image.Image, tuple[float, float, float, float]]:
    box, kept = lung_box(lungs)
    if crop == "gray" and box != WHOLE:
        around = Image.fromarray((ndimage.binary_dilation(kept, iterations=4) * 255).astype(np.uint8)).resize(image.size, Image.Resampling.BILINEAR)
        image = Image.composite(image, Image.new("RGB", image.size, (128, 128, 128)), around)
    return image.crop(pixels(box, *image.size)), box


def lung_cuts(segmenter, crop: str, images: list[Image.Image]) -> list[tuple[Image.Image, tuple[float, float, float, float]]]:
    if crop == "film":  # no U-Net needed
        return [(image, WHOLE) for image in images]
    lungs = segmenter.predict_on_batch(segmenter_input(images))[..., 0] > 0.5
    return [cut(image, found, crop) for image, found in zip(images, lungs)]


def features(paths: list[Path], cutter, backbone, size: int, contrast: str) -> tuple[np.ndarray, np.ndarray]:
    """block5_pool features of each film as ``cutter`` (a batch of images -> each one's piece and
    box) cuts it, and each film's box."""
    from cxr.runtime.imaging import read_rgb, to_model_input
    from cxr.train.inputs import on_batch

    rows, boxes = [], []
    for start in range(0, len(paths), BATCH):
        cuts = cutter([read_rgb(path) for path in paths[start : start + BATCH]])
        boxes += [box for _, box in cuts]
        rows.append(on_batch(backbone, np.stack([to_model_input(piece, size, contrast) for piece, _ in cuts]).astype(np.float32))[0])
    return np.concatenate(rows), np.array(boxes, np.float32)


def prior_as_cut(paths: list[Path], boxes: np.ndarray, size: int, power: float) -> np.ndarray:
    """Each cell's share on the lungs in the masks beside ``paths``, each mask cut as its film was."""
    from cxr.runtime.masks import mask_for

    shares = []
    for path, box in zip(paths, boxes):
        if (mask := mask_for(path)) is None:
            continue
        with Image.open(mask) as opened:
            gray = opened.convert("L")
            piece = gray.crop(pixels(tuple(box), *gray.size)).resize((size, size), Image.Resampling.BILINEAR)
        lungs = Image.fromarray((np.asarray(piece) > 127).astype(np.float32))
        shares.append(np.asarray(lungs.resize(GRID[::-1], Image.Resampling.BOX)))
    return (np.mean(shares, axis=0) ** power).astype(np.float32)


def scores(train, x, test, x_test, prior, normal: int, classes: int, seed: int, copies: tuple[np.ndarray, ...] = ()) -> tuple[float, float, list[float], list[float]]:
    """Lowest collection's validation accuracy; mean leave-one-collection-out validation accuracy;
    per held-out collection, test accuracy and Normal recall. ``copies``: features of altered copies
    of the train films (row for row), trained on beside each film a head trains on, never scored."""
    from cxr.core.datasets import stratified_split
    from cxr.train.config import TrainConfig
    from cxr.train.inputs import sample_weights

    def head(rows):
        part = train.subset(rows)
        shown = 1 + len(copies)
        return fit(
            np.concatenate([x[rows], *(copy[rows] for copy in copies)]),
            np.tile(part.labels, shown),
            np.tile(sample_weights(part, "source-class"), shown),
            np.zeros((shown * len(rows), *GRID), np.float32),
            classes,
            seed,
            prior,
            0.0,
        )

    fitted, val = stratified_split(train.sources * classes + train.labels, TrainConfig.val_split, seed)
    right = predicted(x[val], prior, *head(fitted)) == train.labels[val]
    lowest = min(right[train.sources[val] == s].mean() for s in np.unique(train.sources[val]))
    held_val, held_test, held_normal = [], [], []
    for source in range(len(COLLECTIONS)):
        kernel, bias = head(np.flatnonzero(train.sources != source))
        mine, theirs = train.sources == source, test.sources == source
        held_val.append((predicted(x[mine], prior, kernel, bias) == train.labels[mine]).mean())
        guess, truth = predicted(x_test[theirs], prior, kernel, bias), test.labels[theirs]
        held_test.append(float((guess == truth).mean()))
        held_normal.append(float((guess[truth == normal] == normal).mean()))
    return float(lowest), float(np.mean(held_val)), held_test, held_normal


def header(first: str) -> str:
    held_out = " | ".join(f"{c} held out: accuracy (Normal recall)" for c in COLLECTIONS)
    return (
        f"| {first} | lowest collection's validation accuracy | leave-one-collection-out validation accuracy | held-out test accuracy, mean | {held_out} |\n"
        + "|---|---|---|---|" + "---|" * len(COLLECTIONS)
    )


def row(name: str, runs: list[tuple[float, float, list[float], list[float]]]) -> str:
    """A table row: the mean over seeds of each of ``scores``' figures."""
    accuracy, normal = np.mean([r[2] for r in runs], axis=0), np.mean([r[3] for r in runs], axis=0)
    each = " | ".join(f"{a:.3f} ({n:.2f})" for a, n in zip(accuracy, normal))
    return f"| {name} | {statistics.mean(r[0] for r in runs):.3f} | {statistics.mean(r[1] for r in runs):.3f} | {accuracy.mean():.3f} | {each} |"


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    seeds: list[int] = typer.Option([0, 1, 2], help="Seeds (repeat)."),
    epochs: int = typer.Option(30, help="The U-Net's epochs."),
) -> None:
    from cxr.core.datasets import scan_roots
    from cxr.train.inputs import listed
    from cxr.train.model import FEATURES

    roots, names, config, net = four_collections(weights)
    train, test = listed(roots, "train", names), listed(roots, "test", names)
    started = time.monotonic()
    # The U-Net learns from every film with a mask, Tuberculosis films too: where the lungs lie has no class.
    every = scan_roots([SHARED / name for name in COLLECTIONS])
    segmenter, dice = train_segmenter(*([path for data in every for paths in getattr(data, split).values() for path in paths] for split in ("train", "test")), epochs)
    print(f"U-Net: Dice {dice:.3f} on the NLM test masks after {epochs} epochs ({time.monotonic() - started:.0f} s).\n")
    backbone = net.segment(None, FEATURES)
    cuts = {}
    for crop in dict.fromkeys(v.crop for v in VARIANTS):
        cutter = functools.partial(lung_cuts, segmenter, crop)
        x, boxes = features(train.paths, cutter, backbone, config.image_size, config.contrast)
        cuts[crop] = (x, boxes, features(test.paths, cutter, backbone, config.image_size, config.contrast)[0])
    kept = np.array([(right - left) * (bottom - top) for left, top, right, bottom in cuts["crop"][1]])
    print(f"The lung box keeps {np.median(kept):.2f} of a film (median); {np.mean(kept == 1):.3f} of films read whole.\n")

    print(header("input"), flush=True)
    for variant in VARIANTS:
        x, boxes, x_test = cuts[variant.crop]
        prior = prior_as_cut(train.paths, boxes, config.image_size, variant.power) if variant.power else np.ones(GRID, np.float32)
        print(row(variant.name, [scores(train, x, test, x_test, prior, names.index("Normal"), len(names), seed) for seed in seeds]), flush=True)


if __name__ == "__main__":
    typer.run(main)

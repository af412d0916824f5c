"""Tiny folder-per-class data sets with patterns any model can tell apart, made on the fly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.train.config import REFERENCE_RECIPE

CLASSES = ("Covid", "Normal", "Viral Pneumonia")

# The fast recipe: the reference recipe on random VGG16 weights, whose tiny features need a large step
# size. (Equalizing the synthetic two-level patterns would spread their noise over all 256 levels; the
# default recipe, equalization included, is tested on the real data in test_real.py.) Every image of a
# class has the same 16x16 mean hash, so the near-copy check would take them all for copies: off.
# fine_tune_sample: where a test fine-tunes, a draw the size of the tiny set; the default's 1,200
# films an epoch took three quarters of the fast suite's slowest tests.
FAST = dict(weights="none", image_size=32, epochs=10, learning_rate=1.0, seed=0, near_copies=False, fine_tune_sample=48, **REFERENCE_RECIPE)


def pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A grayscale image: bright top half, bright left half, or a bright centre, plus noise."""
    image = rng.normal(60, 15, (size, size))
    half = size // 2
    if label == 0:
        image[:half] += 140
    elif label == 1:
        image[:, :half] += 140
    else:
        q = size // 4
        image[q : size - q, q : size - q] += 140
    return np.clip(image, 0, 255).astype(np.uint8)


def make_dataset(
    root: Path,
    per_class: dict[str, int] | None = None,
    size: int = 64,
    seed: int = 0,
    names: tuple[str, ...] = CLASSES,
) -> Path:
    """Write ``root/{train,test}/<class>/*`` in a mix of PNG, JPEG and modes; return ``root``.

    ``names`` are the class folders, in the order of the patterns (another collection may spell
    them ``COVID``, ``normal``, ...)."""
    per_class = per_class or {"train": 12, "test": 4}
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                gray = Image.fromarray(pattern(label, size, rng), mode="L")
                if i % 3 == 0:
                    gray.convert("RGB").save(folder / f"{i}.jpeg", quality=95)
                elif i % 3 == 1:
                    gray.save(folder / f"{i}.png")
                else:
                    gray.convert("RGBA").save(folder / f"{i}.png")
    return root


def copy_dataset(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def masked_copy(source: Path, target: Path, lungs: dict[str, tuple[slice, slice]], splits: tuple[str, ...] = ("train", "test")) -> Path:
    """``source``'s classes in ``lungs``, laid out as CLASS/images beside CLASS/masks (the COVID-19
    Radiography Database's way), each mask 255 on its class's ``lungs`` region; return ``target``."""
    for split in splits:
        for name, region in lungs.items():
            images, masks = target / split / name / "images", target / split / name / "masks"
            images.mkdir(parents=True, exist_ok=True)
            masks.mkdir(parents=True, exist_ok=True)
            for film in sorted((source / split / name).iterdir()):
                shutil.copy(film, images / film.name)
                with Image.open(film) as opened:
                    mask = np.zeros(opened.size[::-1], np.uint8)
                mask[region] = 255
                Image.fromarray(mask).save(masks / f"{film.stem}.png")
    return target

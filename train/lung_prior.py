"""The lung prior: how often each cell of the last feature map lies on the lungs, measured on the
training films that have lung masks, multiplied into that map before the head reads it.

A cell that is almost never lung then carries almost no evidence, whatever it shows: a hospital's
marker in a corner, the neck, the belly. The head is still linear in the map it reads, so the heat
maps stay exact contributions to the logits (the prior is part of the map they are computed on).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from cxr.core.datasets import DataRoot
from cxr.core.errors import DatasetError
from cxr.runtime.masks import mask_for, read_mask

LAYER = "lung_prior"
# The prior is each cell's share on the lungs raised to this power: cells that are lung in only some
# films (the heart's border, the diaphragm's) count for less. Leave-one-collection-out validation
# cannot tell 1-4 apart; 3 is the least whose fine-tuned model puts most of the evidence on the
# lungs (research/HISTORY.md, "Reading the lungs").
SHARPNESS = 3.0


@keras.saving.register_keras_serializable(package="cxr")
class LungPrior(keras.layers.Layer):
    """Multiplies each cell of a (N, h, w, channels) map by a fixed weight in [0, 1]."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        # Not trained: set from the masks (set_prior), saved with the model, a constant in ONNX.
        self.prior = self.add_weight(name="prior", shape=(*input_shape[1:3], 1), initializer="ones", trainable=False)

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        return inputs * self.prior


def masks_of(roots: Sequence[DataRoot]) -> list[Path]:
    """The lung masks beside the roots' train films (validation films count: the prior reads only
    where the lungs lie, no class; test films never do)."""
    films = [film for data in roots for paths in data.train.values() for film in paths]
    return [mask for film in films if (mask := mask_for(film))]


def measure(masks: Sequence[Path], image_size: int, grid: tuple[int, int]) -> np.ndarray:
    """The prior: each grid cell's share on the lungs, averaged over ``masks`` (each resized as its
    film is), to the power SHARPNESS. A DatasetError when there is no mask."""
    if not masks:
        raise DatasetError(
            "--lung-prior needs training films with lung masks (CLASS/images/NAME beside CLASS/masks/NAME); "
            "none of the --data roots has them"
        )
    shares = np.mean([cells_on_lungs(mask, image_size, grid) for mask in masks], axis=0)
    return (shares**SHARPNESS).astype(np.float32)


def cells_on_lungs(mask: Path, image_size: int, grid: tuple[int, int]) -> np.ndarray:
    """Each grid cell's share on the lungs in one film's mask (resized as its film is)."""
    lungs = Image.fromarray(read_mask(mask, image_size).astype(np.float32))
    return np.asarray(lungs.resize(grid[::-1], Image.Resampling.BOX))  # each cell's mean


def set_prior(model: keras.Model, prior: np.ndarray) -> None:
    model.get_layer(LAYER).set_weights([prior[..., np.newaxis]])

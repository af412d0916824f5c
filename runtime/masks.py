"""Lung masks kept beside films: ``CLASS/images/NAME.ext`` with ``CLASS/masks/NAME.*``, the layout of
the COVID-19 Radiography Database (and of the shared NLM tuberculosis subset). Training reads them for
the lung prior, evaluation for the share of the evidence on the lungs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .imaging import RESAMPLING

MASKS = "masks"


def mask_for(image: Path) -> Path | None:
    """The lung mask kept beside a film, if its collection has one."""
    if image.parent.name != "images":
        return None
    found = sorted((image.parent.parent / MASKS).glob(f"{image.stem}.*"))
    return found[0] if found else None


def read_mask(path: Path, size: int) -> np.ndarray:
    """The mask resized as its film is (to the model's square input), True on the lungs."""
    with Image.open(path) as mask:
        return np.asarray(mask.convert("L").resize((size, size), RESAMPLING)) > 127

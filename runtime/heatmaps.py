"""Heat maps: the model's per-class evidence maps, and the overlay images drawn from them.

The maps come out of the ONNX graph (see ``cxr.train.model.with_evidence_maps``); drawing them needs
only numpy and Pillow, so the edge install can write overlays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.core.files import atomic_path

# Viridis (perceptually uniform, readable in grey and by most colour-blind readers), sampled at nine
# evenly spaced points; interpolating between them stays within a shade of the full colormap.
_VIRIDIS = np.array(
    [[(c >> 16) & 255, (c >> 8) & 255, c & 255] for c in
     (0x440154, 0x472D7B, 0x3B528B, 0x2C728E, 0x21918C, 0x28AE80, 0x5EC962, 0xADDC30, 0xFDE725)],
    dtype=np.float32,
)
# How opaque the colour is where the evidence is strongest; it fades to nothing where there is none,
# so the X-ray stays readable under the map.
STRENGTH = 0.6


@dataclass(frozen=True)
class Heatmaps:
    """One image's evidence maps and the model input they were computed on."""

    image: np.ndarray  # uint8 (size, size, 3): the image as the model read it
    maps: dict[str, np.ndarray]  # class -> (h, w): each cell's contribution to the class's logit

    def overlay(self, class_name: str) -> np.ndarray:
        return overlay(self.image, self.maps[class_name])


def raised(evidence: np.ndarray) -> np.ndarray:
    """The cells that raised the score, scaled so the strongest is 1 (all 0 when none did)."""
    positive = np.maximum(evidence, 0.0)
    peak = positive.max()
    return positive / peak if peak > 0 else positive


def upsample(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """A coarse (h, w) map resized bilinearly to (height, width)."""
    image = Image.fromarray(values.astype(np.float32))  # mode "F": one float per pixel
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))


def colorize(values: np.ndarray) -> np.ndarray:
    """RGB (0-255, float) for values in [0, 1]."""
    anchors = np.linspace(0.0, 1.0, len(_VIRIDIS))
    return np.stack([np.interp(values, anchors, _VIRIDIS[:, c]) for c in range(3)], axis=-1)


def overlay(image: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """``image`` (uint8 RGB) with the positive part of ``evidence`` upsampled, coloured and blended."""
    values = upsample(raised(evidence), *image.shape[:2])
    alpha = (STRENGTH * values)[..., np.newaxis]
    blended = image.astype(np.float32) * (1 - alpha) + colorize(values) * alpha
    return np.clip(blended.round(), 0, 255).astype(np.uint8)


def write_png(target: Path, rgb: np.ndarray) -> None:
    with atomic_path(target) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")

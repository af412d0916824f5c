"""Where the evidence lies, measured with lung masks: of a film's positive evidence for the class the
model gave it (its map upsampled to the image as the overlay is), the share that falls on the lungs,
beside the share of the image the lungs cover (what evidence spread evenly would give).

A collection keeps masks the COVID-19 Radiography Database's way: ``CLASS/images/NAME.ext`` beside
``CLASS/masks/NAME.*``. Films without a mask are left out of these figures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr.runtime.masks import mask_for, read_mask
from cxr.runtime.heatmaps import raised, upsample
from cxr.runtime.predictor import Prediction


@dataclass(frozen=True)
class LungShare:
    """One collection's films of one class (or of all its classes: ``class_name`` "all")."""

    source: str
    class_name: str
    films: int
    evidence_on_lungs: float  # mean over the films of the share of positive evidence on the lungs
    lung_area: float  # mean share of the image the lungs cover


def share_on(mask: np.ndarray, evidence: np.ndarray) -> float | None:
    """Share of the positive evidence on the mask; None when nothing raised the score."""
    values = upsample(raised(evidence), *mask.shape)
    total = float(values.sum())
    return float(values[mask].sum()) / total if total > 0 else None


class LungEvidence:
    """Adds up, per collection and true class, each masked film's share on the lungs."""

    def __init__(self) -> None:
        self._films: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def add(self, source: str, true_class: str, prediction: Prediction) -> None:
        """Count a prediction made with heat maps, if its film has a mask."""
        mask_path = mask_for(Path(prediction.file))
        if mask_path is None or prediction.heatmaps is None:
            return
        mask = read_mask(mask_path, prediction.heatmaps.image.shape[0])
        share = share_on(mask, prediction.heatmaps.maps[prediction.label])
        if share is not None:
            self._films.setdefault((source, true_class), []).append((share, float(mask.mean())))

    def shares(self) -> list[LungShare]:
        """A row per collection and class, and one over all its classes where it has several."""
        rows = [_row(source, name, films) for (source, name), films in sorted(self._films.items())]
        classes = Counter(source for source, _ in self._films)
        for source in sorted(s for s, count in classes.items() if count > 1):
            rows.append(_row(source, "all", [film for (s, _), films in self._films.items() if s == source for film in films]))
        return rows


def _row(source: str, name: str, films: list[tuple[float, float]]) -> LungShare:
    shares, areas = np.array(films).T
    return LungShare(source, name, len(films), float(shares.mean()), float(areas.mean()))

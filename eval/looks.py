"""Where the model looks on average: each class's mean heat map over the images of that class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr.runtime.heatmaps import Heatmaps, overlay, raised


@dataclass
class MeanMap:
    class_name: str
    count: int  # images of this class that went into the mean
    image: np.ndarray  # their mean model input, uint8 RGB
    evidence: np.ndarray  # the mean of their own class's maps, each scaled to peak 1 first

    @property
    def edge_share(self) -> float | None:
        """Share of the evidence in the outer ring of cells (None for grids under 3x3).

        On a centred chest film the lungs fill the inner cells; the ring holds shoulders, neck,
        abdomen, the film's corners and its burnt-in labels.
        """
        if min(self.evidence.shape) < 3:
            return None
        total = self.evidence.sum()
        return float(1 - self.evidence[1:-1, 1:-1].sum() / total) if total > 0 else None

    @property
    def uniform_edge_share(self) -> float:
        """The edge share of evidence spread evenly over the grid: what "more than chance" is above."""
        rows, columns = self.evidence.shape
        return 1 - (rows - 2) * (columns - 2) / (rows * columns)

    def picture(self) -> np.ndarray:
        return overlay(self.image, self.evidence)


class MeanMaps:
    """Adds up, per true class, the model input and that class's map, one prediction at a time."""

    def __init__(self) -> None:
        self._images: dict[str, np.ndarray] = {}
        self._evidence: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}

    def add(self, true_class: str, heatmaps: Heatmaps) -> None:
        image = heatmaps.image.astype(np.float64)
        evidence = raised(heatmaps.maps[true_class])  # each image counts the same
        self._images[true_class] = self._images.get(true_class, 0) + image
        self._evidence[true_class] = self._evidence.get(true_class, 0) + evidence
        self._counts[true_class] = self._counts.get(true_class, 0) + 1

    def means(self, class_names: list[str]) -> list[MeanMap]:
        return [
            MeanMap(
                name,
                self._counts[name],
                (self._images[name] / self._counts[name]).round().astype(np.uint8),
                self._evidence[name] / self._counts[name],
            )
            for name in class_names
            if name in self._counts
        ]

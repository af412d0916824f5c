"""What ``cxr-eval`` hands back: its result and the records inside it (the report and the card read them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cxr.core.corrections import Applied

from .lungs import LungShare
from .metrics import Metrics


@dataclass
class Mistake:
    file: str
    true: str
    predicted: str
    probabilities: dict[str, float]

    @property
    def probability(self) -> float:
        return self.probabilities[self.predicted]


@dataclass
class OodCheck:
    """How the out-of-distribution gate tells a folder of other images from the evaluated ones."""

    folder: str
    scores: dict[str, float]  # each readable image of the folder, by path
    refused: list[str]  # the folder's files the runtime would not read (too small, not an image, ...)
    flagged: float  # share of the folder's readable images flagged
    roc_auc: float  # the chance that an image of the folder scores above an evaluated one
    threshold: float

    @property
    def passed(self) -> list[str]:
        """The folder's images the gate let through."""
        return [path for path, score in self.scores.items() if score <= self.threshold]


@dataclass
class EvalResult:
    data: list[Path]  # the folder-per-class sets that were evaluated, one per data root
    metrics: Metrics  # all of them together
    sources: dict[str, Metrics]  # each data root's own, when there are several
    mistakes: list[Mistake]
    skipped: list[str]
    written: list[Path]
    ood: OodCheck | None = None  # with --ood
    lungs: list[LungShare] = field(default_factory=list)  # where the films have lung masks
    corrected: Corrected | None = None  # with --corrections: the same with corrected labels


@dataclass
class Corrected:
    """Metrics with the labels after --corrections, beside those with the source's labels."""

    metrics: Metrics
    sources: dict[str, Metrics]
    applied: Applied

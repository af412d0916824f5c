"""Classification metrics with error bars: with 66 test images, one image is 1.5 points of accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from cxr.core.calibration import Confidence, confidence, with_temperature

BOOTSTRAP_RESAMPLES = 2000


@dataclass
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int
    roc_auc: float | None  # one-vs-rest; None when the class has no positives or no negatives


@dataclass
class Metrics:
    accuracy: float
    accuracy_ci95: tuple[float, float]  # percentile bootstrap over images
    macro_f1: float
    per_class: dict[str, ClassMetrics]  # the classes among the true labels
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    count: int
    confidence: Confidence  # of the probabilities the model gives
    uncalibrated: Confidence | None  # the same before its temperature; None for a model without one
    flagged: float | None  # share the out-of-distribution gate flags; None for a model without one


def compute_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    temperature: float | None = None,
    flagged: np.ndarray | None = None,
    seed: int = 0,
) -> Metrics:
    """``temperature``: the one the model's probabilities were scaled by, to measure them before it;
    ``flagged``: per image, whether the gate flagged it."""
    predicted = probabilities.argmax(axis=1)
    everything = list(range(len(class_names)))
    confusion = confusion_matrix(labels, predicted, labels=everything)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=everything, zero_division=0)
    # A collection may lack some of the model's classes: no row, rather than a recall of 0.
    per_class = {
        name: ClassMetrics(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]), roc_auc(probabilities[:, i], labels == i))
        for i, name in enumerate(class_names)
        if support[i]
    }
    correct = (predicted == labels).astype(float)
    return Metrics(
        accuracy=float(correct.mean()),
        accuracy_ci95=bootstrap_ci(correct, seed),
        macro_f1=float(np.mean([m.f1 for m in per_class.values()])),
        per_class=per_class,
        confusion=confusion.tolist(),
        count=len(labels),
        confidence=confidence(probabilities, labels),
        uncalibrated=None if temperature is None else confidence(with_temperature(probabilities, 1 / temperature), labels),
        flagged=None if flagged is None else float(np.mean(flagged)),
    )


def bootstrap_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(BOOTSTRAP_RESAMPLES, len(values)), replace=True).mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random positive outscores a random negative."""
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, scores))

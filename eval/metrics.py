"""Classification metrics with error bars: with 66 test images, one image is 1.5 points of accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    count: int


def compute_metrics(
    labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], seed: int = 0
) -> Metrics:
    predicted = probabilities.argmax(axis=1)
    n = len(class_names)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        tp = confusion[i, i]
        precision = _ratio(tp, confusion[:, i].sum())
        recall = _ratio(tp, confusion[i].sum())
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[name] = ClassMetrics(
            precision, recall, f1, int(confusion[i].sum()), roc_auc(probabilities[:, i], labels == i)
        )
    correct = (predicted == labels).astype(float)
    return Metrics(
        accuracy=float(correct.mean()),
        accuracy_ci95=bootstrap_ci(correct, seed),
        macro_f1=float(np.mean([m.f1 for m in per_class.values()])),
        per_class=per_class,
        confusion=confusion.tolist(),
        count=len(labels),
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
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return None
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0

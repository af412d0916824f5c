"""How honest a model's probabilities are, and changing their temperature; numpy only, so training,
evaluation and the edge runtime share one definition."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECE_BINS = 15  # equal-width confidence bins, as Guo et al. (2017) report the expected calibration error
_SMALLEST = np.finfo(np.float32).tiny  # below this a float32 probability is 0: clipped, not log(0)


@dataclass
class Confidence:
    """How honest a set of probabilities is on labelled images."""

    loss: float  # negative log-likelihood of the true class
    ece: float  # expected calibration error


def confidence(probabilities: np.ndarray, labels: np.ndarray) -> Confidence:
    return Confidence(negative_log_likelihood(probabilities, labels), expected_calibration_error(probabilities, labels))


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class), each probability clipped at 1e-7 as Keras' cross-entropy does."""
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Over equal-width bins of the top probability: the gap between accuracy and mean confidence,
    weighted by the share of images in the bin."""
    confidence = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [abs(right[which == b].mean() - confidence[which == b].mean()) * np.mean(which == b) for b in np.unique(which)]
    return float(np.sum(gaps))


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the same as dividing the logits by T, since log(p) is the logits less a
    per-image constant. ``with_temperature(p, 1 / T)`` undoes a temperature T."""
    scaled = np.log(np.maximum(probabilities.astype(np.float64), _SMALLEST)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)

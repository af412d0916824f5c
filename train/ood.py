"""The out-of-distribution score: how unlike the training images an image's features are.

Squared Mahalanobis distance (Lee et al. 2018) of the globally average-pooled last feature map (what
the head reads) to the nearest class mean, under one covariance shared by the classes and shrunk
(Ledoit-Wolf), all fitted on the training images. Written with keras.ops, so the same function scores
the validation images in training and becomes part of the exported graph. Why this layer and not
another, nor the energy score or the top probability: research/HISTORY.md, "When it does not know".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from sklearn.covariance import LedoitWolf

from .model import FEATURES

# The map the head reads. Block 5's last convolution, before pooling, separates with more margin, but
# tapping it costs the INT8 model 15% in latency; this one costs nothing (research/HISTORY.md, "When it does not know").
LAYER = FEATURES
FILE = "ood.npz"  # the fitted Gaussians, in the run record beside model.keras
OUTPUT = "ood_score"  # the exported model's output
# Share of each source's validation images that pass; the threshold is the highest of the sources'.
# Above 95%, so that a test split (drawn like validation) is not flagged 5% of the time by construction.
VALIDATION_PASS = 0.975
SCORE = (
    f"squared Mahalanobis distance of the globally average-pooled {LAYER} features to the nearest "
    "class mean, one Ledoit-Wolf shrunk covariance shared by the classes, fitted on the training images"
)


@dataclass(frozen=True)
class ClassGaussians:
    """Per-class means of the training features and the shared precision's Cholesky factor L
    (precision = L @ L.T), so that a squared distance is the squared length of (x - mean) @ L."""

    means: np.ndarray  # (classes, channels)
    whitening: np.ndarray  # (channels, channels)
    shrinkage: float
    count: int  # training images fitted

    def save(self, target: Path) -> None:
        with target.open("wb") as file:
            np.savez(file, means=self.means, whitening=self.whitening, shrinkage=self.shrinkage, count=self.count)

    @classmethod
    def load(cls, source: Path) -> ClassGaussians:
        with np.load(source) as saved:
            return cls(saved["means"], saved["whitening"], float(saved["shrinkage"]), int(saved["count"]))


def pooled(features: keras.KerasTensor | np.ndarray) -> keras.KerasTensor:
    """(N, h, w, channels) -> (N, channels): the mean over the map's cells."""
    return keras.ops.mean(features, axis=(1, 2))


def with_score(model: keras.Model, gaussians: ClassGaussians) -> keras.Model:
    """``model`` with one more output, OUTPUT: each image's score, shape (N,)."""
    features = pooled(model.get_layer(LAYER).output)
    score = keras.layers.Identity(name=OUTPUT)(distance(features, gaussians))
    return keras.Model(model.input, [*model.outputs, score], name=f"{model.name}_with_{OUTPUT}")


def fit_gaussians(features: np.ndarray, labels: np.ndarray, num_classes: int) -> ClassGaussians:
    """Fit on pooled training features (N, channels) and their class indices."""
    features = features.astype(np.float64)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])
    shrunk = LedoitWolf().fit(features - means[labels])
    whitening = np.linalg.cholesky(shrunk.precision_)
    return ClassGaussians(means.astype(np.float32), whitening.astype(np.float32), float(shrunk.shrinkage_), len(labels))


def distance(features: keras.KerasTensor | np.ndarray, gaussians: ClassGaussians) -> keras.KerasTensor:
    """The score of pooled features (N, channels): (N,), larger is less like the training images.

    Whitened first, so that the graph holds one matrix product and a few element-wise steps."""
    whitened = keras.ops.matmul(features, gaussians.whitening)
    centres = gaussians.means @ gaussians.whitening  # (classes, channels), a constant of the graph
    gaps = keras.ops.expand_dims(whitened, 1) - centres
    return keras.ops.min(keras.ops.sum(gaps * gaps, axis=-1), axis=1)


def threshold(scores: np.ndarray, sources: np.ndarray) -> float:
    """The score under which VALIDATION_PASS of every source's validation images fall."""
    return float(max(np.quantile(scores[sources == s], VALIDATION_PASS) for s in np.unique(sources)))

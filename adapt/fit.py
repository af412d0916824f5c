"""Refitting a linear head on a site's films, pulled toward the head it had, and how far to pull
chosen by cross-validation on those films.

The head's logits are z = x @ W + b for the flattened feature map x. Adapting adds (dW, db) that
minimise the class-balanced cross-entropy on the site's films plus strength / 2 * ||(dW, db)||^2 in
features scaled to unit mean square (with the bias as one more feature of the same size), so a
strength means the same on any model. With far fewer films than features, the best (dW, db) is a
combination of the films' own feature vectors, so the fit runs on their Gram matrix: N x classes
unknowns, not 25,088 x classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from sklearn.model_selection import StratifiedKFold

from cxr.core.calibration import fit_temperature

# Strengths tried, strongest (nearest the model's own head) first. On collections held out of
# training the weakest pulls did best at 20 films a class (benchmarks/adapt.py); where the model
# already knows the site, cross-validation keeps its own head.
STRENGTHS = (10.0, 1.0, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001, 0.00003, 0.00001)
FOLDS = 5


@dataclass(frozen=True)
class SiteFeatures:
    """What the head reads for each of a site's films, and what the model made of them."""

    features: np.ndarray  # (N, F) flattened head input
    labels: np.ndarray  # (N,) class indices
    logits: np.ndarray  # (N, classes): the model's own, x @ W + b


@dataclass(frozen=True)
class Choice:
    """The strength chosen and what cross-validation measured with it and without adapting."""

    strength: float | None  # None: no strength beat the model's own head
    base: np.ndarray  # (N, classes) the model's own logits
    adapted: np.ndarray  # (N, classes) out-of-fold logits at the chosen strength (the base's if None)
    scores: dict[float, float]  # every strength's cross-validated balanced accuracy


def balanced_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean recall over the classes present: every class counts alike, whatever the site's mix."""
    right = logits.argmax(axis=1) == labels
    return float(np.mean([right[labels == c].mean() for c in np.unique(labels)]))


def choose(site: SiteFeatures, seed: int = 0) -> Choice:
    """Cross-validate every strength (stratified folds of the site's films) against the model's own
    head; the best balanced accuracy wins only if it beats the own head's. Equal accuracies (with 5
    films a class, one film is a fifth of a class) are told apart by the out-of-fold likelihood."""
    gram = _gram(site.features)
    folds = StratifiedKFold(min(FOLDS, _smallest_class(site.labels)), shuffle=True, random_state=seed)
    out_of_fold = {strength: np.empty_like(site.logits) for strength in STRENGTHS}
    for fit, held in folds.split(site.features, site.labels):
        for strength in STRENGTHS:
            combination = _fit(gram[np.ix_(fit, fit)], site.logits[fit], site.labels[fit], strength)
            out_of_fold[strength][held] = site.logits[held] + gram[np.ix_(held, fit)] @ combination
    scores = {strength: balanced_accuracy(logits, site.labels) for strength, logits in out_of_fold.items()}
    best = min(STRENGTHS, key=lambda strength: (-scores[strength], _balanced_loss(out_of_fold[strength], site.labels)))
    wins = scores[best] > balanced_accuracy(site.logits, site.labels)
    return Choice(best if wins else None, site.logits, out_of_fold[best] if wins else site.logits, scores)


@dataclass(frozen=True)
class Adapted:
    """The head to write: the model's own where no strength beat it (temperature factor 1)."""

    choice: Choice
    kernel: np.ndarray
    bias: np.ndarray
    temperature: float


def adapt_head(site: SiteFeatures, kernel: np.ndarray, bias: np.ndarray, seed: int = 0) -> Adapted:
    """Choose a strength by cross-validation and, if one beat the model's head, refit at it."""
    choice = choose(site, seed)
    if choice.strength is None:
        return Adapted(choice, kernel, bias, 1.0)
    return Adapted(choice, *refit(site, kernel, bias, choice.strength, choice.adapted))


def refit(site: SiteFeatures, kernel: np.ndarray, bias: np.ndarray, strength: float, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The head fitted on all of the site's films at ``strength``, and the temperature that makes the
    cross-validated ``logits`` honest, divided in (returned too, as a factor on the model's own)."""
    scale = _scale(site.features)
    combination = _fit(_gram(site.features, scale), site.logits, site.labels, strength)
    temperature = fit_temperature(softmax(logits), site.labels)
    new_kernel = kernel + site.features.T @ combination / scale
    new_bias = bias + combination.sum(axis=0)
    return (new_kernel / temperature).astype(np.float32), (new_bias / temperature).astype(np.float32), temperature


def _scale(features: np.ndarray) -> float:
    return float(np.mean(np.einsum("nf,nf->n", features, features, dtype=np.float64)))


def _gram(features: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Inner products of the films' scaled features, the bias feature included."""
    scale = scale or _scale(features)
    return (features.astype(np.float64) @ features.T.astype(np.float64)) / scale + 1.0


def _fit(gram: np.ndarray, logits: np.ndarray, labels: np.ndarray, strength: float) -> np.ndarray:
    """The films' weights A (N, classes): the logits move by gram @ A."""
    n, classes = logits.shape
    onehot = np.eye(classes)[labels]
    counts = np.bincount(labels, minlength=classes)
    weight = (1.0 / (len(np.flatnonzero(counts)) * counts[labels]))[:, None]  # each present class sums to the same

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        combination = flat.reshape(n, classes)
        moved = gram @ combination
        z = logits + moved
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = -(weight * onehot * log_p).sum() + strength / 2 * (combination * moved).sum()
        gradient = gram @ (weight * (np.exp(log_p) - onehot) + strength * combination)
        return float(value), gradient.ravel()

    found = minimize(loss, np.zeros(n * classes), jac=True, method="L-BFGS-B")
    return found.x.reshape(n, classes)


def _balanced_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present of the mean negative log-likelihood of the true class."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(np.mean([-log_p[labels == c, c].mean() for c in np.unique(labels)]))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(z)
    return exp / exp.sum(axis=1, keepdims=True)


def _smallest_class(labels: np.ndarray) -> int:
    counts = np.bincount(labels)
    return int(counts[counts > 0].min())

"""Temperature scaling (Guo et al. 2017): one T, fitted on the validation split, divides the logits."""

from __future__ import annotations

import keras
import numpy as np
from scipy.optimize import minimize_scalar

from cxr.core.calibration import negative_log_likelihood, with_temperature

from .model import PROBABILITIES

# The range T is searched in, as log T. Published models need 1-3 (Guo et al.), label smoothing pulls
# it under 1. The bounds matter when the model is right on every validation image: then the likelihood
# only grows as T shrinks, and T stops at the lower bound instead of making every answer certain.
_LOG_T_RANGE = (np.log(0.25), np.log(4.0))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimises the negative log-likelihood of softmax(logits / T) on these images."""
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(with_temperature(probabilities, np.exp(log_t)), labels),
        bounds=_LOG_T_RANGE,
        method="bounded",
    )
    return float(np.exp(found.x))


def fold_temperature(model: keras.Model, temperature: float) -> None:
    """Divide the output layer's kernel and bias by T, so the model itself computes softmax(logits / T)
    and its evidence maps still add up to its (scaled) logits."""
    layer = model.get_layer(PROBABILITIES)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / temperature, bias / temperature])

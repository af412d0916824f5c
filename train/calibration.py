"""Temperature scaling (Guo et al. 2017) folded into the Keras model; T itself is fitted by
cxr.core.calibration.fit_temperature."""

from __future__ import annotations

import keras

from .model import PROBABILITIES


def fold_temperature(model: keras.Model, temperature: float) -> None:
    """Divide the output layer's kernel and bias by T, so the model itself computes softmax(logits / T)
    and its evidence maps still add up to its (scaled) logits."""
    layer = model.get_layer(PROBABILITIES)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / temperature, bias / temperature])

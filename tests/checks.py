"""Assertions the tests share."""

from __future__ import annotations

import numpy as np


def assert_one_line_error(result, needle: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.output


def assert_maps_add_up(predictor, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each class's cells plus its bias are the logits: their softmax is the probability output.
    Returns the logits and the maps."""
    outputs = predictor.run_batch(images, maps=True)
    probabilities, maps = outputs.probabilities, outputs.maps
    assert maps.shape == (len(images), len(predictor.info.class_names), *predictor.info.heatmaps.grid)
    logits = maps.sum(axis=(2, 3)) + np.array(predictor.info.heatmaps.bias)
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(axis=1, keepdims=True), probabilities, atol=1e-4)
    return logits, maps

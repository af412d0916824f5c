"""Calibration (temperature scaling, ECE) and the out-of-distribution score, on known numbers."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.core.calibration import ece_by_chance, expected_calibration_error, negative_log_likelihood, with_temperature


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_ece_of_known_cases() -> None:
    labels = np.array([0] * 8 + [1] * 2)
    honest = np.tile([0.8, 0.1, 0.1], (10, 1))  # sure to 80%, right 8 times in 10
    assert expected_calibration_error(honest, labels) == pytest.approx(0.0)
    sure = np.tile([1.0, 0.0, 0.0], (10, 1))  # sure to 100%, right 8 times in 10
    assert expected_calibration_error(sure, labels) == pytest.approx(0.2)
    # Two bins: 0.95-sure and right half the time (gap 0.45), 0.55-sure and always right (gap 0.45).
    mixed = np.array([[0.95, 0.05, 0.0]] * 2 + [[0.55, 0.45, 0.0]] * 2)
    assert expected_calibration_error(mixed, np.array([0, 1, 0, 0])) == pytest.approx(0.45)


def test_ece_by_chance_is_what_a_calibrated_model_scores_and_shrinks_with_more_images() -> None:
    rng = np.random.default_rng(0)
    few, many = (softmax(rng.normal(0, 2, (n, 3))) for n in (66, 3000))
    # Labels drawn from the probabilities: calibrated by construction, yet ECE > 0 on few images.
    measured = [expected_calibration_error(few, np.array([rng.choice(3, p=row) for row in few])) for _ in range(200)]
    assert ece_by_chance(few) == pytest.approx(np.median(measured), abs=0.01)
    assert ece_by_chance(few) > 3 * ece_by_chance(many) > 0
    assert ece_by_chance(np.tile([1.0, 0.0, 0.0], (66, 1))) == 0.0  # sure and always right: no gap to find
    assert ece_by_chance(few, seed=1) == pytest.approx(ece_by_chance(few), abs=0.01)


def test_temperature_keeps_the_class_and_undoes_itself() -> None:
    rng = np.random.default_rng(0)
    probabilities = softmax(rng.normal(0, 3, (50, 3)))
    np.testing.assert_allclose(with_temperature(probabilities, 1.0), probabilities, atol=1e-12)
    hotter = with_temperature(probabilities, 2.0)
    assert (hotter.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert (hotter.max(axis=1) <= probabilities.max(axis=1) + 1e-12).all()  # T > 1 softens
    np.testing.assert_allclose(with_temperature(hotter, 0.5), probabilities, atol=1e-9)
    # A probability that underflowed to 0 stays 0, and nothing becomes NaN.
    assert np.isfinite(with_temperature(np.array([[1.0, 0.0, 0.0]]), 3.0)).all()


def test_fitted_temperature_recovers_an_overconfident_model() -> None:
    pytest.importorskip("scipy", reason="the train extra (scipy) fits the temperature")
    from cxr.core.calibration import fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])  # drawn from the honest model
    overconfident = softmax(3 * logits)
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    calibrated = with_temperature(overconfident, temperature)
    assert negative_log_likelihood(calibrated, labels) < negative_log_likelihood(overconfident, labels)
    assert expected_calibration_error(calibrated, labels) < 0.03 < expected_calibration_error(overconfident, labels)


def test_the_score_is_the_distance_to_the_nearest_class_mean() -> None:
    pytest.importorskip("sklearn", reason="the train extra (scikit-learn) fits the covariance")
    from sklearn.covariance import LedoitWolf

    from cxr.train import ood

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 200)
    centres = np.array([[0, 0, 0, 0], [6, 0, 0, 0], [0, 6, 0, 0]], float)
    features = centres[labels] + rng.normal(0, [1, 2, 0.5, 1], (600, 4))
    gaussians = ood.fit_gaussians(features, labels, 3)
    np.testing.assert_allclose(gaussians.means, centres, atol=0.3)

    points = np.array([[0.1, 0, 0, 0], [6, 0.5, 0, 0], [3, 3, 3, 3], [40, 40, 0, 0]], np.float32)
    precision = LedoitWolf().fit(features - features.reshape(3, 200, 4).mean(axis=1)[labels]).precision_
    gaps = points[:, None, :] - gaussians.means[None]
    expected = np.einsum("ncd,de,nce->nc", gaps, precision, gaps).min(axis=1)
    got = np.asarray(ood.distance(points, gaussians))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert got[0] < 2 and got[1] < 2 and 10 < got[2] < got[3]  # near a class, off every class, far off


def test_the_threshold_lets_the_same_share_of_every_source_through() -> None:
    pytest.importorskip("sklearn", reason="the train extra (scikit-learn) fits the covariance")
    from cxr.train import ood

    scores = np.concatenate([np.arange(1, 201.0), 10 * np.arange(1, 41.0)])  # source 1 scores higher
    sources = np.repeat([0, 1], [200, 40])
    limit = ood.threshold(scores, sources)
    for source in (0, 1):
        assert np.mean(scores[sources == source] <= limit) >= ood.VALIDATION_PASS
    assert np.mean(scores[sources == 1] <= limit) < 1.0  # set by the higher-scoring source


@pytest.mark.parametrize("seed", range(5))
def test_the_fitted_temperature_never_raises_the_loss_it_fits(seed: int) -> None:
    """What temperature scaling guarantees on the images it is fitted on, whatever the model: T = 1
    is among the candidates, so the minimum is never worse."""
    pytest.importorskip("scipy", reason="the train extra (scipy) fits the temperature")
    from cxr.core.calibration import fit_temperature

    rng = np.random.default_rng(seed)
    probabilities = softmax(rng.normal(0, rng.uniform(0.5, 6), (rng.integers(20, 200), 3)))
    labels = rng.integers(0, 3, len(probabilities))  # anything from honest to wrong
    temperature = fit_temperature(probabilities, labels)
    scaled = with_temperature(probabilities, temperature)
    assert negative_log_likelihood(scaled, labels) <= negative_log_likelihood(probabilities, labels) + 1e-9


def test_the_folded_temperature_is_dividing_the_logits(trained) -> None:
    """Folding T into the output layer gives the probabilities of softmax(logits / T)."""
    import keras

    from cxr.train.calibration import fold_temperature

    model = keras.saving.load_model(trained.model_path)
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.float32)
    before = model.predict(images, verbose=0)
    fold_temperature(model, 2.5)
    np.testing.assert_allclose(model.predict(images, verbose=0), with_temperature(before, 2.5), atol=1e-6)

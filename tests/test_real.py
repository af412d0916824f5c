"""The real thing: the README's default model, trained on both real collections with the real
ImageNet weights (about 10 minutes on a 2-core CPU).

Runs when ../shared/data is there (it is in CI); otherwise each test says why it skipped. The floors
here are sanity checks for seed 0; the accuracy goals are measured over seeds in
benchmarks/generalization.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from checks import assert_maps_add_up

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real_run(real_data: list[Path], real_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    out = tmp_path_factory.mktemp("real")
    return train(TrainConfig(data=tuple(real_data), out=out, weights=str(real_weights), seed=0))


def test_default_model_learns_both_collections(real_run) -> None:
    assert real_run.splits["train"].count + real_run.splits["val"].count == 251 + 900
    assert real_run.splits["test"].count == 66 + 300
    assert real_run.splits["train"].accuracy >= 0.95
    first, second = (real_run.sources[name]["test"] for name in ("Covid19-dataset", "Covid19-radiography-subset"))
    assert first.accuracy >= 0.75 and second.accuracy >= 0.90
    normal = real_run.class_names.index("Normal")
    assert second.confusion[normal][normal] / sum(second.confusion[normal]) >= 0.85  # adults' Normal films
    # Covid19-dataset's test split holds 6 byte-for-byte copies of its train images.
    assert len(real_run.test_copies) == 6


def test_real_export_parity(real_run, real_data: list[Path]) -> None:
    from cxr.export.onnx_export import export_onnx

    result = export_onnx(real_run.model_path, real_run.model_path.with_suffix(".onnx"))
    assert result.max_abs_diff <= 1e-4
    assert result.parity_images >= 12
    # The runtime reads the contrast step from the model file and so sees what training saw: file by
    # file, it reproduces the trainer's test accuracy.
    from cxr.runtime.predictor import Predictor

    predictor = Predictor(result.path)
    assert predictor.info.input.contrast == "equalize"
    test_files = sorted(path for root in real_data for path in (root / "test").rglob("*.*"))
    right = [predictor.predict(path).label.casefold() == path.parent.name.casefold() for path in test_files]
    assert sum(right) / len(right) == pytest.approx(real_run.splits["test"].accuracy)


def test_real_maps_are_exact_and_survive_int8(real_run, real_data: list[Path]) -> None:
    from cxr.core.datasets import load_folder
    from cxr.export.quantize import export_int8
    from cxr.runtime.predictor import Predictor

    fp32_path = real_run.model_path.with_suffix(".onnx")  # written by test_real_export_parity
    if not fp32_path.is_file():
        pytest.skip("needs the FP32 export of test_real_export_parity")
    fp32 = Predictor(fp32_path)
    assert fp32.info.heatmaps.grid == (7, 7) and fp32.info.cell_pixels == 32
    images = load_folder(real_data[0] / "test", fp32.info.class_names, fp32.prepare).images
    assert_maps_add_up(fp32, images)

    # Pearson correlation of each test image's maps, INT8 against FP32, averaged over the test split.
    int8 = export_int8(fp32_path, fp32_path.with_name("model.int8.onnx"), real_data)
    assert int8.test_images == 66 + 300 and int8.agreement >= 0.99
    assert int8.map_correlation >= 0.95
    assert int8.flag_agreement >= 0.99  # the gate survives quantization


def test_real_calibration_and_gate(real_run, not_xrays: Path) -> None:
    """Issue #12's goals for the default model: the gate flags what is not a chest X-ray and lets
    the test X-rays through; the temperature makes the radiography subset's probabilities honest.
    (Covid19-dataset's test ECE stays near 0.09: its test accuracy, 0.80, is far below its
    validation's, and no one temperature fixes a shift in accuracy; docs/RESULTS.md.)"""
    from cxr.core.datasets import files_under
    from cxr.runtime.predictor import Prediction, Predictor

    from not_xrays import sample_images

    for name in ("Covid19-dataset", "Covid19-radiography-subset"):
        test = real_run.sources[name]["test"]
        assert test.flagged <= 0.05, name
        assert test.ece <= test.uncalibrated.ece, name
    assert real_run.sources["Covid19-radiography-subset"]["test"].ece <= 0.05
    assert 0.3 < real_run.trust.temperature < 3

    fp32_path = real_run.model_path.with_suffix(".onnx")  # written by test_real_export_parity
    if not fp32_path.is_file():
        pytest.skip("needs the FP32 export of test_real_export_parity")
    predictor = Predictor(fp32_path)
    outcomes = {Path(o.file).name: o for o in predictor.predict_files(files_under(not_xrays))}
    samples = [outcomes[p.name] for p in sample_images() if isinstance(outcomes.get(p.name), Prediction)]
    assert len(samples) >= 25
    assert sum(not s.in_distribution for s in samples) / len(samples) >= 0.95
    made = [o for o in outcomes.values() if isinstance(o, Prediction)]
    assert sum(not o.in_distribution for o in made) / len(made) >= 0.95

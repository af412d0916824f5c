"""cxr-export on the synthetic model: the contract in the metadata, parity, INT8, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from checks import assert_one_line_error
from cxr.core.errors import ModelError
from cxr.export.cli import app as export_app
from cxr.runtime.metadata import ModelInfo
from cxr.runtime.predictor import Predictor
from synthetic import FAST

runner = CliRunner()


def test_export_carries_the_contract_and_matches_keras(exported, trained) -> None:
    assert exported.max_abs_diff <= 1e-4 and exported.parity_images >= 3
    assert exported.map_sum_diff <= 1e-4
    proto = onnx.load(exported.path, load_external_data=False)
    info = ModelInfo.from_metadata({p.key: p.value for p in proto.metadata_props})
    assert info.class_names == trained.class_names
    assert (info.input.height, info.input.width, info.input.channels) == (32, 32, 3)
    assert info.input.pixel_range == (0.0, 255.0) and "255" in info.preprocessing["in_graph"]
    assert info.metrics["splits"]["test"]["accuracy"] == trained.splits["test"].accuracy
    assert info.recipe["epochs"] == FAST["epochs"] and info.versions["tf2onnx"]
    assert info.created.endswith("Z")
    # Calibration and the gate travel in the file: the trainer's temperature and threshold.
    assert info.calibration.temperature == pytest.approx(trained.trust.temperature) and "Guo" in info.calibration.method
    assert info.ood.threshold == pytest.approx(trained.trust.threshold) and "Mahalanobis" in info.ood.score
    assert info.ood.output == "ood_score" and exported.score_diff <= 1e-3
    assert info.metrics["splits"]["val"]["ece"] == trained.splits["val"].ece
    assert info.metrics["splits"]["val"]["ece_by_chance"] == trained.splits["val"].ece_by_chance > 0


def test_the_graph_computes_the_gate_the_trainer_fitted(exported, trained, dataset: Path) -> None:
    """The ONNX score equals the distance of the model's pooled features under the saved Gaussians,
    and the training split (which fitted them) passes more easily than a photo."""
    import keras

    from cxr.train import ood

    predictor = Predictor(exported.path)
    images = np.stack([predictor.prepare(p) for p in sorted((dataset / "test").rglob("*.*"))])
    model = keras.saving.load_model(trained.model_path, safe_mode=True)
    features = keras.Model(model.input, model.get_layer(ood.LAYER).output).predict(images.astype("float32"), verbose=0)
    gaussians = ood.ClassGaussians.load(trained.model_path.parent / ood.FILE)
    expected = np.asarray(ood.distance(features.mean(axis=(1, 2)), gaussians))
    np.testing.assert_allclose(predictor.run_batch(images).scores, expected, rtol=1e-3)


def test_foreign_onnx_metadata_is_refused(exported) -> None:
    with pytest.raises(ModelError, match="not a cxr model"):
        ModelInfo.from_metadata({"producer": "someone else"})
    props = {p.key: p.value for p in onnx.load(exported.path, load_external_data=False).metadata_props}
    props["cxr.input"] = json.dumps({**json.loads(props["cxr.input"]), "contrast": "clahe"})
    with pytest.raises(ModelError, match="unknown contrast step 'clahe'"):
        ModelInfo.from_metadata(props)


def test_export_cli_prints_parity(trained, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = runner.invoke(export_app, ["--onnx", "--model", str(trained.model_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "max probability difference" in result.stdout and "heat maps add up" in result.stdout and out.is_file()


def test_export_refuses_a_parity_failure_and_writes_nothing(trained, tmp_path: Path, monkeypatch) -> None:
    import cxr.export.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE", -1.0)
    out = tmp_path / "m.onnx"
    result = runner.invoke(export_app, ["--onnx", "--model", str(trained.model_path), "--out", str(out)])
    assert_one_line_error(result, "differs from Keras")
    assert list(tmp_path.iterdir()) == []


def test_export_bad_inputs(tmp_path: Path) -> None:
    assert_one_line_error(runner.invoke(export_app, []), "pass --onnx")
    missing = runner.invoke(export_app, ["--onnx", "--model", str(tmp_path / "none.keras")])
    assert_one_line_error(missing, "no such model file")


def test_int8_model_agrees_and_describes_itself(exported, dataset: Path, tmp_path: Path) -> None:
    from cxr.export.quantize import export_int8

    result = export_int8(exported.path, tmp_path / "m.int8.onnx", dataset)
    assert result.agreement >= 0.99 and result.test_images == 12
    assert result.map_correlation >= 0.95
    assert result.int8_bytes < result.fp32_bytes / 3
    quantized, fp32 = Predictor(result.path), Predictor(exported.path)
    assert quantized.info.quantization.startswith("int8")
    graph = onnx.load(result.path).graph
    # The convolutions' weights are quantized; the head's and the gate's (MatMul or Gemm) stay float.
    stored = {t.name for t in graph.initializer}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in stored}
    quantized_ops = {node.op_type for node in graph.node if dequantized.intersection(node.input)}
    assert "Conv" in quantized_ops and not quantized_ops & {"MatMul", "Gemm"}
    # Weights in 7 bits, so that CPUs without VNNI (int16 sums of uint8 x int8 pairs) cannot overflow.
    initializers = [onnx.numpy_helper.to_array(t) for t in graph.initializer]
    weights = [w for w in initializers if w.dtype == np.int8 and w.ndim >= 2]  # not the zero points
    assert weights and all(np.abs(w.astype(int)).max() <= 64 for w in weights)
    assert max(np.abs(w.astype(int)).max() for w in weights) == 64  # the range is used, not merely bounded
    assert quantized.info.class_names == fp32.info.class_names
    image = dataset / "test" / "Normal" / "0.jpeg"
    int8_p = quantized.predict(image).probabilities
    fp32_p = fp32.predict(image).probabilities
    assert max(abs(int8_p[k] - fp32_p[k]) for k in fp32_p) < 0.05
    # The softmax stays in float: probabilities are not rounded to steps of 1/255.
    assert any(abs(p * 255 - round(p * 255)) > 1e-3 for p in int8_p.values())
    # The gate travels too, and its flag agreement is measured as reported. (Random VGG16 weights'
    # tiny features quantize badly, so on this model it is low; tests/test_real.py holds the real
    # model to 99%.)
    assert quantized.info.ood == fp32.info.ood
    images = np.stack([fp32.prepare(p) for p in sorted((dataset / "test").rglob("*.*"))])
    limit = fp32.info.ood.threshold
    flags = [predictor.run_batch(images).scores > limit for predictor in (quantized, fp32)]
    assert result.flag_agreement == pytest.approx(np.mean(flags[0] == flags[1]))


def test_int8_below_agreement_is_refused(exported, dataset: Path, tmp_path: Path) -> None:
    from cxr.export.quantize import export_int8

    with pytest.raises(ModelError, match="not written"):
        export_int8(exported.path, tmp_path / "m.int8.onnx", dataset, min_agreement=1.01)
    assert list(tmp_path.iterdir()) == []


def test_export_cli_takes_the_int8_floor(trained, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    args = ["--onnx", "--int8", "--model", str(trained.model_path), "--out", str(out)]
    out_of_range = runner.invoke(export_app, [*args, "--min-agreement", "1.5"])  # a usage error, as Click reports it
    assert out_of_range.exit_code == 2 and "--min-agreement" in out_of_range.stderr and list(tmp_path.iterdir()) == []
    result = runner.invoke(export_app, [*args, "--min-agreement", "0.5"])
    assert result.exit_code == 0, result.output
    assert "(minimum 50.0%)" in result.stdout and out.with_name("m.int8.onnx").is_file()


def test_export_needs_the_gates_fit_beside_the_model(trained, tmp_path: Path) -> None:
    import shutil

    from cxr.train import ood

    run = tmp_path / "run"
    shutil.copytree(trained.model_path.parent, run)
    (run / ood.FILE).write_bytes(b"not an npz")
    damaged = runner.invoke(export_app, ["--onnx", "--model", str(run / "model.keras"), "--out", str(tmp_path / "m.onnx")])
    assert_one_line_error(damaged, "damaged")
    (run / ood.FILE).unlink()
    missing = runner.invoke(export_app, ["--onnx", "--model", str(run / "model.keras"), "--out", str(tmp_path / "m.onnx")])
    assert_one_line_error(missing, "no ood.npz beside the model")
    assert not (tmp_path / "m.onnx").exists()

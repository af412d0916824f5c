"""Evidence maps: computed by the exported graph, exact, carried by predictions, drawn as overlays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from checks import assert_maps_add_up, assert_one_line_error
from cxr.core.errors import ModelError
from cxr.runtime.cli import app as predict_app
from cxr.runtime.heatmaps import overlay, raised, upsample
from cxr.runtime.predictor import Predictor
from synthetic import CLASSES, FAST, masked_copy

runner = CliRunner()


def prepared_test_split(dataset: Path, predictor: Predictor) -> np.ndarray:
    return np.stack([predictor.prepare(p) for p in sorted((dataset / "test").rglob("*.*"))])


def assert_maps_are_exact(model_path: Path, keras_path: Path, images: np.ndarray, features_layer: str) -> np.ndarray:
    """The maps' cells plus the bias are the logits (Keras' own, from the head's input) and their
    softmax is the probability output. Returns the maps."""
    import keras

    logits, maps = assert_maps_add_up(Predictor(model_path), images)
    model = keras.saving.load_model(keras_path, safe_mode=True)
    head_input = keras.Model(model.input, model.get_layer(features_layer).output).predict(images.astype(np.float32), verbose=0)
    kernel, bias = model.get_layer("probabilities").get_weights()
    expected = head_input @ kernel + bias
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    return maps


def test_flatten_head_maps_add_up_to_the_logits(exported, trained, dataset: Path) -> None:
    predictor = Predictor(exported.path)
    assert predictor.info.heatmaps.method.startswith("HiResCAM")
    assert_maps_are_exact(exported.path, trained.model_path, prepared_test_split(dataset, predictor), "flatten")


@pytest.mark.parametrize("head, method", [("flatten", "HiResCAM"), ("gap", "class activation map")])
def test_maps_of_a_larger_grid_add_up_to_the_logits(dataset: Path, tmp_path: Path, head: str, method: str) -> None:
    from cxr.export.onnx_export import export_onnx
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    # 64 pixels: a 2x2 feature map, so each cell must meet its own weights.
    run = train(TrainConfig(data=dataset, out=tmp_path, **{**FAST, "head": head, "image_size": 64, "learning_rate": 0.1}))
    path = export_onnx(run.model_path, tmp_path / "model.onnx").path
    predictor = Predictor(path)
    assert predictor.info.heatmaps.grid == (2, 2) and predictor.info.cell_pixels == 32
    assert predictor.info.heatmaps.method.startswith(method)
    maps = assert_maps_are_exact(path, run.model_path, prepared_test_split(dataset, predictor), head)
    assert np.ptp(maps, axis=(2, 3)).max() > 0  # the cells are not all alike


def test_lung_prior_leaves_no_evidence_where_no_lung_lies(dataset: Path, tmp_path: Path) -> None:
    """Masks on the left half of every film: the prior is 1 on the left cells of the 2x2 map and 0
    on the right ones, the maps still add up to the logits, and the right cells carry nothing."""
    from cxr.export.onnx_export import export_onnx
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    masked = masked_copy(dataset, tmp_path / "masked", {name: np.s_[:, :32] for name in CLASSES})
    # None, the default (FAST, the reference recipe, has none): wherever training films have masks.
    run = train(TrainConfig(data=masked, out=tmp_path, **{**FAST, "lung_prior": None, "image_size": 64, "learning_rate": 0.1}))
    assert run.lung_prior.grid == [[1.0, 0.0], [1.0, 0.0]] and run.lung_prior.films == 3 * 12
    assert json.loads((tmp_path / "metrics.json").read_text())["lung_prior"]["grid"] == run.lung_prior.grid
    assert json.loads((tmp_path / "config.json").read_text())["lung_prior"] is True
    path = export_onnx(run.model_path, tmp_path / "model.onnx").path
    predictor = Predictor(path)
    assert "lung prior" in predictor.info.preprocessing["in_graph"] and predictor.info.recipe["lung_prior"]
    maps = assert_maps_are_exact(path, run.model_path, prepared_test_split(dataset, predictor), "flatten")
    assert np.all(maps[..., 1] == 0) and np.abs(maps[..., 0]).max() > 0
    assert run.splits["test"].accuracy > 0.9  # the left half tells the three patterns apart


def test_a_prediction_carries_the_maps_asked_for(exported, dataset: Path) -> None:
    predictor = Predictor(exported.path)
    image = dataset / "test" / "Covid" / "0.jpeg"
    assert predictor.predict(image).heatmaps is None
    predicted = predictor.predict(image, heatmaps="predicted")
    assert list(predicted.heatmaps.maps) == [predicted.label] == ["Covid"]
    every = predictor.predict(image, heatmaps="all")
    assert list(every.heatmaps.maps) == predictor.info.class_names
    np.testing.assert_array_equal(every.heatmaps.image, predictor.prepare(image))
    np.testing.assert_array_equal(every.heatmaps.maps["Covid"], predicted.heatmaps.maps["Covid"])
    batched = list(predictor.predict_files([image] * 3, heatmaps="all"))
    np.testing.assert_allclose(batched[2].heatmaps.maps["Normal"], every.heatmaps.maps["Normal"], atol=1e-5)


def test_a_model_without_maps_says_so(exported, dataset: Path, tmp_path: Path) -> None:
    proto = onnx.load(exported.path)
    kept = [p for p in proto.metadata_props if p.key != "cxr.heatmaps"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    old = tmp_path / "old.onnx"
    onnx.save(proto, old)
    predictor = Predictor(old)
    assert predictor.info.heatmaps is None
    assert predictor.predict(dataset / "test" / "Covid" / "0.jpeg").label == "Covid"
    with pytest.raises(ModelError, match="no heat maps; export it again"):
        predictor.predict(dataset / "test" / "Covid" / "0.jpeg", heatmaps="predicted")


def test_overlay_colours_only_where_the_evidence_raised_the_score() -> None:
    image = np.full((64, 64, 3), 128, np.uint8)
    evidence = np.array([[3.0, -1.0], [-2.0, 0.0]])  # only the top-left cell raised the score
    drawn = overlay(image, evidence)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    changed = np.abs(drawn.astype(int) - image).sum(axis=2) > 0
    assert changed[:16, :16].all() and not changed[48:, :].any() and not changed[:, 48:].any()
    np.testing.assert_array_equal(overlay(image, -np.abs(evidence)), image)  # nothing raised it
    values = upsample(raised(evidence), 64, 64)
    assert values.max() == pytest.approx(1.0) and values[0, 0] > values[0, 31] > values[0, 63] >= 0


def test_cli_heatmaps_writes_one_overlay_per_input(exported, dataset: Path, tmp_path: Path) -> None:
    inputs = [dataset / "test" / "Covid" / "0.jpeg", dataset / "test" / "Normal" / "0.jpeg", dataset / "test" / "Normal" / "1.png"]
    out, table = tmp_path / "maps", tmp_path / "results.csv"
    args = [*map(str, inputs), "--model", str(exported.path), "--heatmaps", str(out)]
    result = runner.invoke(predict_app, [*args, "--csv", str(table)])
    assert result.exit_code == 0, result.output
    # Both 0.jpeg files keep their name, numbered: nothing is overwritten.
    written = [out / "0.png", out / "0-2.png", out / "1.png"]
    assert sorted(out.iterdir()) == sorted(written)
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0][-1] == "heatmap" and [row[-1] for row in rows[1:]] == list(map(str, written))
    assert table.read_text().splitlines()[1].endswith(f",{written[0]}")
    predictor = Predictor(exported.path)
    with Image.open(written[0]) as drawn:
        assert drawn.size == (predictor.info.image_size,) * 2
        expected = predictor.predict(inputs[0], heatmaps="predicted").heatmaps
        np.testing.assert_array_equal(np.asarray(drawn.convert("RGB")), expected.overlay("Covid"))

    lines = runner.invoke(predict_app, [*args, "--json"]).stdout.splitlines()
    assert json.loads(lines[1])["heatmap"] == str(written[1])


def test_cli_heatmaps_into_a_file_is_refused(exported, dataset: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"x")
    image = dataset / "test" / "Covid" / "0.jpeg"
    result = runner.invoke(predict_app, [str(image), "--model", str(exported.path), "--heatmaps", str(taken)])
    assert_one_line_error(result, "not a folder", code=2)
    assert taken.read_bytes() == b"x"

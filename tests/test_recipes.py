"""The recipe options beyond the reference: each changes what it says and survives export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthetic import FAST
from cxr.train.config import TrainConfig


def fresh(recipe_options: dict, seed: int = 0):
    """The model train() starts from, for the same seed: to compare trained weights against."""
    import keras

    from cxr.train.config import ModelRecipe
    from cxr.train.model import build_model

    keras.utils.set_random_seed(seed)
    return build_model(3, FAST["image_size"], None, ModelRecipe(**recipe_options), seed)


def test_vgg_preprocessing_reverses_the_first_kernels_channels() -> None:
    scale = fresh({}).model.get_layer("block1_conv1").get_weights()[0]
    vgg = fresh({"preprocess": "vgg"}).model.get_layer("block1_conv1").get_weights()[0]
    np.testing.assert_array_equal(vgg, scale[:, :, ::-1, :])


def test_fine_tuning_trains_only_the_last_block_and_the_head(dataset: Path, tmp_path: Path) -> None:
    import keras

    from cxr.train.trainer import train

    result = train(TrainConfig(data=dataset, out=tmp_path, **{**FAST, "fine_tune": 1, "fine_tune_epochs": 2}))
    trained = keras.saving.load_model(result.model_path, safe_mode=True)
    start = fresh({}).model
    for name, should_change in (("block4_conv3", False), ("block5_conv3", True), ("probabilities", True)):
        before = start.get_layer(name).get_weights()[0]
        after = trained.get_layer(name).get_weights()[0]
        assert (not np.array_equal(before, after)) == should_change, name
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["loss"]) == FAST["epochs"] + 2  # head stage, then fine-tuning stage
    assert history["fine_tune_from_epoch"] == [FAST["epochs"]]


def test_early_stopping_keeps_the_best_epoch(dataset: Path, tmp_path: Path) -> None:
    from cxr.train.trainer import train

    options = {**FAST, "epochs": 40, "learning_rate": 3.0}
    result = train(TrainConfig(data=dataset, out=tmp_path, early_stopping=2, **options))
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["val_loss"]) < 40
    # Keras' validation loss is the model's before temperature scaling.
    assert result.splits["val"].uncalibrated.loss == pytest.approx(min(history["val_loss"]), rel=1e-3)


def test_balance_weights_make_each_class_or_source_class_count_equally() -> None:
    from cxr.train.inputs import Examples, sample_weights

    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    sources = np.array([0, 0, 0, 1, 0, 1, 0, 1])
    examples = Examples([Path(f"{i}.png") for i in range(8)], labels, sources, [str(i) for i in range(8)])
    assert sample_weights(examples, "none") == pytest.approx(np.ones(8))
    by_class = sample_weights(examples, "class")
    assert [by_class[labels == c].sum() for c in range(3)] == pytest.approx([8 / 3] * 3)
    by_group = sample_weights(examples, "source-class")
    groups = sources * 3 + labels
    assert [by_group[groups == g].sum() for g in np.unique(groups)] == pytest.approx([8 / 6] * 6)
    assert by_group[0] == pytest.approx(8 / 6 / 3)  # Covid of source 0: three images share a group's weight


def test_a_balanced_draw_takes_as_many_from_each_group_and_a_new_one_each_epoch() -> None:
    from cxr.train.inputs import Batches, balanced_draw

    groups = np.array([0] * 3 + [1] * 40 + [2] * 10)
    drawn = balanced_draw(groups, 30, np.random.default_rng(0))
    assert np.bincount(groups[drawn]).tolist() == [10, 10, 10]
    assert set(drawn[groups[drawn] == 0]) == {0, 1, 2}  # a small group gives every image, then repeats
    assert len(set(drawn[groups[drawn] == 1])) == 10  # a large one gives distinct images
    assert np.array_equal(drawn, balanced_draw(groups, 30, np.random.default_rng(0)))
    assert np.bincount(groups[balanced_draw(groups, 31, np.random.default_rng(0))]).tolist() == [11, 11, 11]

    batches = Batches(np.arange(53.0)[:, None], np.arange(53), np.zeros((53, 3)), np.ones(53), 8, seed=0, groups=groups, per_epoch=30)
    assert len(batches) == 4  # 30 images in batches of 8
    first = np.concatenate([batches[i][0][:, 0] for i in range(len(batches))])
    batches.on_epoch_end()
    second = np.concatenate([batches[i][0][:, 0] for i in range(len(batches))])
    assert len(first) == len(second) == 30 and not np.array_equal(first, second)


def test_fine_tuning_on_a_balanced_sample_of_each_epoch(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import logging

    import keras

    from cxr.train import inputs
    from cxr.train.trainer import train

    draws, draw = [], inputs.balanced_draw

    def recorded(groups: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        drawn = draw(groups, size, rng)
        draws.append(np.bincount(groups[drawn]).tolist())
        return drawn

    monkeypatch.setattr(inputs, "balanced_draw", recorded)
    options = {**FAST, "fine_tune": 1, "fine_tune_epochs": 2, "fine_tune_sample": 12, "balance": "class"}
    with caplog.at_level(logging.INFO, logger="cxr.train.trainer"):
        result = train(TrainConfig(data=dataset, out=tmp_path, **options))
    # A new draw for each epoch (Keras may ask for one more at the end), 4 images of each of the 3 classes.
    assert len(draws) >= 2 and all(counts == [4, 4, 4] for counts in draws)
    assert "2 epochs of 12 images drawn balanced" in caplog.text
    assert json.loads((tmp_path / "config.json").read_text())["fine_tune_sample"] == 12
    trained = keras.saving.load_model(result.model_path, safe_mode=True)
    before = fresh({}).model.get_layer("block5_conv3").get_weights()[0]
    assert not np.array_equal(before, trained.get_layer("block5_conv3").get_weights()[0])
    assert result.splits["test"].accuracy >= 0.9


def test_every_option_together_trains_and_exports_with_parity(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Augmentation layers, GAP, dropout: inert at inference, so ONNX still matches Keras."""
    monkeypatch.setenv("CXR_CACHE", str(tmp_path / "cache"))
    from cxr.export.onnx_export import export_onnx
    from cxr.runtime.predictor import Predictor
    from cxr.train.trainer import train

    config = TrainConfig(
        data=dataset, out=tmp_path,
        **{**FAST, "epochs": 2, "fine_tune": 1, "preprocess": "vgg", "head": "gap", "dropout": 0.3, "augment": True,
           "label_smoothing": 0.1, "balance": "class", "early_stopping": 3, "fine_tune_epochs": 1},
    )
    result = train(config)
    # Augmentation: no features can be cached; the stages read decoded images every epoch.
    assert [p.name.split("-")[0] for p in (tmp_path / "cache" / "features").iterdir()] == ["image"]
    exported = export_onnx(result.model_path, tmp_path / "model.onnx")
    assert exported.max_abs_diff <= 1e-4
    info = Predictor(exported.path).info
    assert "ImageNet" in info.preprocessing["in_graph"] and info.recipe["augment"] is True


@pytest.mark.parametrize("option", [["--preprocess", "zscore"], ["--fine-tune-sample", "-1"]])
def test_unknown_choice_is_a_usage_error(dataset: Path, tmp_path: Path, option: list[str]) -> None:
    from typer.testing import CliRunner

    from cxr.train.cli import app

    result = CliRunner().invoke(app, ["--data", str(dataset), "--out", str(tmp_path / "o"), *option])
    assert result.exit_code == 2 and not (tmp_path / "o").exists()


def test_equalized_model_equalizes_in_the_runtime_too(dataset: Path, tmp_path: Path) -> None:
    """--contrast equalize is recorded in the model file, so the predictor does what training did."""
    import keras
    from PIL import Image
    from typer.testing import CliRunner

    from cxr.export.onnx_export import export_onnx
    from cxr.runtime.imaging import load_image
    from cxr.runtime.predictor import Predictor
    from cxr.train.cli import app

    def option(name: str, value: object) -> str:
        return (f"--{name}" if value else f"--no-{name}") if isinstance(value, bool) else f"--{name}={value}"

    options = [option(k.replace("_", "-"), v) for k, v in {**FAST, "contrast": "equalize"}.items()]
    result = CliRunner().invoke(app, ["--data", str(dataset), "--out", str(tmp_path), *options])
    assert result.exit_code == 0, result.output
    exported = export_onnx(tmp_path / "model.keras", tmp_path / "model.onnx")
    predictor = Predictor(exported.path)
    assert predictor.info.input.contrast == "equalize" and exported.max_abs_diff <= 1e-4

    # A dim, flat copy of a test image: equalizing it or not makes a visibly different input.
    source = next((dataset / "test" / "Normal").glob("*.png"))
    dim = tmp_path / "dim.png"
    Image.fromarray((np.asarray(Image.open(source).convert("L")) * 0.2).astype(np.uint8)).save(dim)
    model = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    expected, unequalized = (
        model.predict(load_image(dim, 32, contrast)[np.newaxis].astype(np.float32), verbose=0)[0]
        for contrast in ("equalize", "none")
    )
    got = np.array(list(predictor.predict(dim).probabilities.values()))
    assert np.max(np.abs(got - expected)) <= 1e-4
    assert np.max(np.abs(got - unequalized)) > 1e-3

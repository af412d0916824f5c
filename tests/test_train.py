"""cxr-train on a synthetic data set: the run record, repeatability, and bad inputs."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from checks import assert_one_line_error
from synthetic import CLASSES, FAST, copy_dataset, make_dataset, masked_copy
from cxr.train.cli import app as train_app

runner = CliRunner()
FAST_ARGS = ["--weights", "none", "--image-size", "32", "--epochs", "2", "--reference", "--no-near-copies", "--fine-tune-sample", "48"]
DEFAULT_RECIPE_ARGS = [arg for arg in FAST_ARGS if arg != "--reference"]  # the reference recipe has no lung prior


def test_training_writes_the_run_record(trained) -> None:
    out = trained.model_path.parent
    for name in ("model.keras", "metrics.json", "config.json", "history.json", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*")), "temporary files left behind"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"train", "val", "test"}
    # 12 train images per class, 15% held out per class (2), 4 test images per class.
    assert metrics["splits"]["val"]["per_class"] == {"Covid": 2, "Normal": 2, "Viral Pneumonia": 2}
    assert metrics["splits"]["test"]["count"] == 12
    held_out = [Path(f) for f in metrics["validation_files"]]
    assert len(held_out) == 6 and all(f.is_absolute() and f.is_file() and f.parent.parent.name == "train" for f in held_out)
    assert metrics["versions"]["keras"]
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == FAST["epochs"] and len(history["val_accuracy"]) == FAST["epochs"]
    assert history["loss"][-1] < history["loss"][0]
    # The patterns are easy: even random VGG16 features separate them.
    assert trained.splits["test"].accuracy >= 0.9
    with Image.open(out / "curves.png") as figure:
        assert figure.width >= 600 and figure.height >= 300


def test_saved_model_loads_in_safe_mode_and_takes_0_255_pixels(trained, dataset: Path) -> None:
    import keras

    from cxr.core.datasets import class_folders, load_images
    from cxr.runtime.imaging import load_image

    model = keras.saving.load_model(trained.model_path, safe_mode=True)
    files = class_folders(dataset / "test")
    contrast = json.loads((trained.model_path.parent / "config.json").read_text())["contrast"]
    test = load_images(files, trained.class_names, lambda path: load_image(path, 32, contrast))
    predicted = model.predict(test.images.astype(np.float32), verbose=0).argmax(axis=1)
    assert np.mean(predicted == test.labels) == pytest.approx(trained.splits["test"].accuracy)


def test_same_seed_same_run(trained, dataset: Path, tmp_path: Path) -> None:
    """On one machine the same seed trains the same model (on another CPU it may round otherwise)."""
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    again = train(TrainConfig(data=dataset, out=tmp_path, **FAST))
    assert again.splits["val"].loss == pytest.approx(trained.splits["val"].loss, rel=1e-5)


def test_plain_fit_matches_fast_path_quality(dataset: Path, tmp_path: Path) -> None:
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    plain = train(TrainConfig(data=dataset, out=tmp_path, fast_path=False, **FAST))
    assert plain.splits["test"].accuracy >= 0.9


@pytest.mark.parametrize(
    "breakage, needle",
    [
        ("missing", "no such data folder"),
        ("no-train", "no train split"),
        ("one-class", "need at least 2"),
        ("empty-class", "empty class folder"),
    ],
)
def test_train_bad_data_exits_2_and_writes_nothing(dataset: Path, tmp_path: Path, breakage: str, needle: str) -> None:
    data = tmp_path / "data"
    if breakage != "missing":
        copy_dataset(dataset, data)
    if breakage == "no-train":
        for path in sorted((data / "train").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (data / "train").rmdir()
    elif breakage == "one-class":
        for name in ("Normal", "Viral Pneumonia"):
            for path in (data / "train" / name).iterdir():
                path.unlink()
            (data / "train" / name).rmdir()
    elif breakage == "empty-class":
        for path in (data / "train" / "Normal").iterdir():
            path.unlink()
    out = tmp_path / "out"
    result = runner.invoke(train_app, ["--data", str(data), "--out", str(out), *FAST_ARGS])
    assert_one_line_error(result, needle)
    assert not out.exists()


def test_unreadable_image_is_skipped_and_counted_or_fatal_when_strict(
    dataset: Path, tmp_path: Path, caplog
) -> None:
    data = copy_dataset(dataset, tmp_path / "data")
    bad = data / "train" / "Covid" / "broken.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "out"
    result = runner.invoke(train_app, ["--data", str(data), "--out", str(out), *FAST_ARGS])
    assert result.exit_code == 0, result.output
    assert f"skipped {bad}: not an image" in caplog.text
    skipped = json.loads((out / "metrics.json").read_text())["skipped"]
    assert len(skipped) == 1 and str(bad) in skipped[0]

    strict_out = tmp_path / "strict"
    strict = runner.invoke(train_app, ["--data", str(data), "--out", str(strict_out), "--strict", *FAST_ARGS])
    assert_one_line_error(strict, "broken.png")
    assert not strict_out.exists()


def test_unreachable_imagenet_download_names_the_weights_option(
    dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    import cxr.train.weights as weights

    # A closed port on this machine: fails like a machine without network, whatever the network.
    monkeypatch.setattr(weights, "IMAGENET_URL", "http://127.0.0.1:9/cxr-test-vgg16-notop.h5")
    out = tmp_path / "out"
    result = runner.invoke(
        train_app, ["--data", str(dataset), "--out", str(out), "--weights", "imagenet", "--image-size", "32"]
    )
    assert_one_line_error(result, "--weights PATH")
    assert not out.exists()


def test_missing_weights_file(dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        train_app, ["--data", str(dataset), "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "w.h5")]
    )
    assert_one_line_error(result, "no such file")


def test_two_sources_spelled_differently_train_one_model_with_metrics_for_each(dataset: Path, tmp_path: Path) -> None:
    from cxr.export.onnx_export import export_onnx
    from cxr.export.quantize import export_int8
    from cxr.runtime.predictor import Predictor

    other = make_dataset(tmp_path / "other", seed=1, names=("COVID", "normal", "Viral pneumonia"))
    out = tmp_path / "out"
    result = runner.invoke(train_app, ["--data", str(dataset), "--data", str(other), "--out", str(out), *FAST_ARGS])
    assert result.exit_code == 0, result.output
    assert f"images of {other.name})" in result.stdout
    record = json.loads((out / "metrics.json").read_text())
    # Each ECE beside what a perfectly calibrated model would score on as few images (12 per source).
    chance = record["sources"]["other"]["test"]["ece_by_chance"]
    assert chance > 0 and f"{chance:.3f} by chance alone)  flagged" in result.stdout
    assert record["class_names"] == list(CLASSES)
    assert record["splits"]["test"]["count"] == 24 and list(record["sources"]) == [dataset.name, "other"]
    for source in record["sources"].values():
        # Validation is stratified by source and class: every class of every source is in it.
        assert min(source["val"]["per_class"].values()) >= 1
        assert source["test"]["count"] == 12
    assert sum(s["val"]["count"] for s in record["sources"].values()) == record["splits"]["val"]["count"]
    assert json.loads((out / "config.json").read_text())["data"] == [str(dataset.resolve()), str(other.resolve())]

    exported = export_onnx(out / "model.keras", out / "model.onnx")
    assert Predictor(exported.path).info.metrics["sources"]["other"]["test"]["count"] == 12
    # INT8 is calibrated and checked on both roots.
    assert export_int8(exported.path, out / "model.int8.onnx", exported.data).test_images == 24


def test_sources_that_hold_some_of_the_classes(dataset: Path, tmp_path: Path) -> None:
    """A root without Viral Pneumonia, and one whose extra class is mapped onto another and whose
    other extra class is left out: the model has the union of what is kept, and each source's
    metrics count only the classes it has."""
    partial = make_dataset(tmp_path / "partial", per_class={"train": 4, "test": 2}, names=("covid", "normal"))
    extra = make_dataset(tmp_path / "extra", per_class={"train": 4, "test": 2}, names=("Normal", "Viral Pneumonia", "Bacterial Pneumonia"))
    (extra / "train" / "Tuberculosis").mkdir()
    shutil.copy(extra / "train" / "Normal" / "0.jpeg", extra / "train" / "Tuberculosis" / "0.jpeg")
    maps = ["--class-map", "Bacterial Pneumonia=Viral Pneumonia", "--class-map", "Tuberculosis="]
    out = tmp_path / "out"
    result = runner.invoke(train_app, ["--data", str(dataset), "--data", str(partial), "--data", str(extra), *maps, "--out", str(out), *FAST_ARGS])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == list(CLASSES)  # the first root's spelling
    sources = metrics["sources"]
    assert sources["partial"]["test"]["per_class"] == {"Covid": 2, "Normal": 2}
    # Bacterial films count as Viral Pneumonia; the Tuberculosis film is in no split.
    assert sources["extra"]["test"]["per_class"] == {"Normal": 2, "Viral Pneumonia": 4}
    counted = sum(metrics["splits"][split]["count"] for split in ("train", "val"))
    assert counted == 3 * 12 + 2 * 4 + 3 * 4
    config = json.loads((out / "config.json").read_text())
    assert config["class_map"] == {"Bacterial Pneumonia": "Viral Pneumonia", "Tuberculosis": ""}


def test_an_unmapped_extra_class_becomes_a_class(dataset: Path, tmp_path: Path) -> None:
    from cxr.core.datasets import model_classes, scan_roots

    other = make_dataset(tmp_path / "other", per_class={"train": 2}, names=(*CLASSES, "Lung_Opacity"))
    assert model_classes(scan_roots([dataset, other])) == sorted([*CLASSES, "Lung_Opacity"])


@pytest.mark.parametrize(
    "options, needle",
    [
        (["--class-map", "Pneumonia=Viral Pneumonia"], "no data root has a class folder 'Pneumonia'"),
        (["--class-map", "no-equals-sign"], "expected FOLDER=CLASS"),
        (["--classes", "Tuberculosis"], "no data root has a class folder 'Tuberculosis'"),
        (["--class-map", "Covid=", "--class-map", "Normal=", "--class-map", "Viral Pneumonia="], "none of its class folders is kept"),
    ],
)
def test_class_choices_that_match_nothing_are_one_line(dataset: Path, tmp_path: Path, options: list[str], needle: str) -> None:
    result = runner.invoke(train_app, ["--data", str(dataset), *options, "--out", str(tmp_path / "out"), *FAST_ARGS])
    assert_one_line_error(result, needle)


def test_lung_prior_without_masks_is_one_line(dataset: Path, tmp_path: Path, trained) -> None:
    # Not asked for, on films without masks: trained without it, and the record says so.
    assert trained.lung_prior is None
    assert json.loads((trained.model_path.parent / "config.json").read_text())["lung_prior"] is False
    result = runner.invoke(train_app, ["--data", str(dataset), "--lung-prior", "--out", str(tmp_path / "out"), *DEFAULT_RECIPE_ARGS])
    assert_one_line_error(result, "--lung-prior needs training films with lung masks")
    assert not (tmp_path / "out").exists()


def test_lung_prior_is_on_where_training_films_have_masks_unless_turned_off(dataset: Path, tmp_path: Path) -> None:
    masked = masked_copy(dataset, tmp_path / "masked", {name: np.s_[:, :32] for name in CLASSES})
    for options, used in (([], True), (["--no-lung-prior"], False), (["--reference"], False)):
        out = tmp_path / f"out-{options}"
        result = runner.invoke(train_app, ["--data", str(masked), *options, "--out", str(out), *DEFAULT_RECIPE_ARGS])
        assert result.exit_code == 0, result.output
        assert ("lung prior measured on 36 training films' lung masks" in result.stdout) is used
        assert json.loads((out / "config.json").read_text())["lung_prior"] is used


def test_test_images_copied_from_train_are_reported(dataset: Path, tmp_path: Path) -> None:
    import shutil

    data = copy_dataset(dataset, tmp_path / "data")
    shutil.copyfile(data / "train" / "Covid" / "0.jpeg", data / "test" / "Covid" / "same-bytes.jpeg")
    result = runner.invoke(train_app, ["--data", str(data), "--out", str(tmp_path / "out"), *FAST_ARGS])
    assert result.exit_code == 0, result.output
    assert "identical to a train image, byte for byte: 1 " in result.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test_copies_of_train"] == [str(data / "test" / "Covid" / "same-bytes.jpeg")]
    # --reference (in FAST_ARGS) trains the report's recipe, whatever the defaults are.
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    from cxr.train.config import REFERENCE_RECIPE, TrainConfig

    assert {k: config[k] for k in REFERENCE_RECIPE} == REFERENCE_RECIPE
    defaults = TrainConfig(data=data)
    assert all(getattr(defaults, k) != v for k, v in REFERENCE_RECIPE.items())


def test_without_a_validation_split_nothing_is_calibrated_and_the_gate_uses_training_images(dataset: Path, tmp_path: Path) -> None:
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    result = train(TrainConfig(data=dataset, out=tmp_path, val_split=0.0, **FAST))
    assert "val" not in result.splits
    assert result.trust.temperature == 1.0 and result.trust.fitted_on == "train"
    assert result.splits["train"].flagged <= 0.05  # the threshold passes 97.5% of them
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["calibration"] == {"temperature": 1.0, "fitted_on": "train"}


def test_mirrored_strategy_on_two_devices_trains_the_same_model(dataset: Path, tmp_path: Path) -> None:
    """--distribute mirrored on two logical CPU devices: two replicas train, their model gives the
    single-device model's classes on the test images. A fresh interpreter, since the devices must
    be split before TensorFlow starts; no feature cache, so the feature pass also runs replicated."""
    script = textwrap.dedent(
        f"""
        import json
        from pathlib import Path
        import keras, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from cxr.core.datasets import class_folders, load_images
        from cxr.runtime.imaging import load_image
        from cxr.train.config import TrainConfig
        from cxr.train.trainer import train
        data, out, fast = Path({str(dataset)!r}), Path({str(tmp_path)!r}), {FAST!r}
        for strategy in ("none", "mirrored"):
            result = train(TrainConfig(data=data, out=out / strategy, distribute=strategy, cache=False, **fast))
            model = keras.saving.load_model(result.model_path)
            test = load_images(class_folders(data / "test"), result.class_names, lambda p: load_image(p, fast["image_size"], "none"))
            classes = model.predict(test.images.astype(np.float32), verbose=0).argmax(axis=1).tolist()
            record = json.loads((out / strategy / "metrics.json").read_text())["distribute"]
            print(json.dumps({{"replicas": result.replicas, "record": record, "classes": classes}}))
        """
    )
    env = {**os.environ, "CXR_QUIET": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    single, mirrored = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert single["replicas"] == 1 and single["record"] == {"strategy": "none", "replicas": 1}
    assert mirrored["replicas"] == 2 and mirrored["record"] == {"strategy": "mirrored", "replicas": 2}
    assert mirrored["classes"] == single["classes"]
    assert sorted(set(single["classes"])) == [0, 1, 2]  # a model that learned, not one class for all


@pytest.mark.parametrize(
    "tf_config, needle",
    [(None, "needs TF_CONFIG"), ("{not json", "TF_CONFIG is not a cluster description")],
)
def test_multi_worker_without_a_cluster_is_one_line(dataset: Path, tmp_path: Path, monkeypatch, tf_config, needle) -> None:
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    result = runner.invoke(train_app, ["--data", str(dataset), "--out", str(tmp_path), *FAST_ARGS, "--distribute", "multi-worker"])
    assert_one_line_error(result, needle)
    assert not (tmp_path / "model.keras").exists()


def test_near_copies_leave_validation_and_are_reported(tmp_path: Path) -> None:
    """A second root holds resized, contrast-stretched copies of the first's train films, and the
    test split one more copy: validation keeps no image whose copy trains, and the test copy is
    reported."""
    from PIL import ImageOps

    rng = np.random.default_rng(0)
    first, second = tmp_path / "first", tmp_path / "second"
    originals = {}
    for split, count in (("train", 10), ("test", 2)):
        for name in ("a", "b"):
            for i in range(count):
                blobs = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).resize((64, 64), Image.Resampling.BICUBIC)
                path = first / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                blobs.save(path)
                originals[path] = blobs
    for path, blobs in originals.items():
        if path.parts[-3] == "train":
            twin = second / "train" / path.parent.name / f"copy-{path.name}"
            twin.parent.mkdir(parents=True, exist_ok=True)
            ImageOps.autocontrast(blobs.resize((80, 80)), cutoff=5).save(twin)
    planted = first / "test" / "a" / "copy.png"
    ImageOps.equalize(originals[first / "train" / "a" / "3.png"]).save(planted)
    # Byte-for-byte copies of every train film in test: those whose original ends in validation are
    # copies of the training data all the same.
    same = [first / "test" / path.parent.name / f"same-{path.name}" for path in originals if path.parts[-3] == "train"]
    for copy in same:
        copy.write_bytes((first / "train" / copy.parent.name / copy.name.removeprefix("same-")).read_bytes())

    out = tmp_path / "out"
    args = ["--weights", "none", "--image-size", "32", "--epochs", "1", "--reference", "--val-split", "0.3"]
    result = runner.invoke(train_app, ["--data", str(first), "--data", str(second), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    near = json.loads((out / "metrics.json").read_text())["near_copies"]
    found = {entry["file"]: entry for entry in near["test"]}
    assert set(found) == {str(planted), *map(str, same)}
    assert Path(found[str(planted)]["train_file"]).name in ("3.png", "copy-3.png")
    assert near["validation_moved_to_train"] and all(entry["bits"] <= 12 for entry in near["validation_moved_to_train"])

    def twin(path: str) -> str:
        name = Path(path).name
        other = second if Path(path).is_relative_to(first) else first
        return str(other / "train" / Path(path).parent.name / (f"copy-{name}" if other == second else name.removeprefix("copy-")))

    validation = set(json.loads((out / "metrics.json").read_text())["validation_files"])
    assert validation and all(twin(path) in validation for path in validation)  # no twin trains
    assert "near-copies of a train image" in result.stdout and "train instead" in result.stdout

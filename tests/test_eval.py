"""cxr-eval: metrics against hand-computed values, a known confusion matrix, figures, bad inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from checks import assert_one_line_error
from synthetic import copy_dataset, make_dataset, masked_copy
from cxr.eval.cli import app as eval_app
from cxr.eval.metrics import bootstrap_ci, compute_metrics, roc_auc

runner = CliRunner()
NAMES = ["Covid", "Normal", "Viral Pneumonia"]


def test_metrics_match_hand_computed_values() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(3)[predicted] * 0.8 + 0.2 / 3
    m = compute_metrics(labels, probabilities, NAMES)
    assert m.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.per_class["Covid"].precision == 1.0 and m.per_class["Covid"].recall == pytest.approx(2 / 3)
    assert m.per_class["Normal"].precision == pytest.approx(0.5) and m.per_class["Normal"].recall == 0.5
    assert m.per_class["Viral Pneumonia"].f1 == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert m.macro_f1 == pytest.approx(np.mean([0.8, 0.5, 2 / 3]))
    low, high = m.accuracy_ci95
    assert 0.0 <= low < 4 / 6 < high <= 1.0


def test_a_set_without_some_classes_reports_only_the_classes_it_has() -> None:
    labels = np.array([0, 0, 1, 1])  # no Viral Pneumonia among them
    probabilities = np.eye(3)[[0, 2, 1, 1]] * 0.8 + 0.2 / 3  # one Covid film called Viral Pneumonia
    m = compute_metrics(labels, probabilities, NAMES)
    assert list(m.per_class) == ["Covid", "Normal"] and m.per_class["Covid"].recall == 0.5
    assert m.macro_f1 == pytest.approx(np.mean([2 / 3, 1.0])) and np.isfinite(m.macro_f1)
    assert m.confusion[2] == [0, 0, 0]


def test_roc_auc_known_cases() -> None:
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([True, True, False, False])) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([True, True, False, False])) == 0.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert roc_auc(np.array([0.5]), np.array([True])) is None


def test_bootstrap_interval_narrows_with_more_images() -> None:
    small = bootstrap_ci(np.array([1.0] * 9 + [0.0]))
    large = bootstrap_ci(np.array([1.0] * 900 + [0.0] * 100))
    assert small[0] <= 0.9 <= small[1] and large[0] <= 0.9 <= large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 3


def test_eval_on_a_set_with_known_mistakes(exported, dataset: Path, tmp_path: Path) -> None:
    """The synthetic model is right on every test image; relabel two to make two known mistakes."""
    data = copy_dataset(dataset / "test", tmp_path / "test")
    moved = [data / "Covid" / "0.jpeg", data / "Covid" / "1.png"]
    for path in moved:
        shutil.move(path, data / "Normal" / f"moved-{path.name}")
    out = tmp_path / "reports"
    result = runner.invoke(eval_app, ["--data", str(data), "--model", str(exported.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["metrics"]["confusion"] == [[2, 0, 0], [2, 4, 0], [0, 0, 4]]
    assert record["metrics"]["accuracy"] == pytest.approx(10 / 12)
    wrong = sorted(Path(m["file"]).name for m in record["misclassified"])
    assert wrong == ["moved-0.jpeg", "moved-1.png"]
    assert all(m["true"] == "Normal" and m["predicted"] == "Covid" for m in record["misclassified"])
    for name in ("dataset.png", "curves.png", "confusion.png", "misclassified.png", "correct.png", "mean_maps.png"):
        with Image.open(out / name) as figure:
            assert figure.format == "PNG" and figure.width >= 500 and figure.height >= 300, name
    report = (out / "report.md").read_text()
    assert "![confusion.png](confusion.png)" in report and "moved-0.jpeg" in report
    card = (exported.path.parent / "MODEL_CARD.md").read_text()
    assert "Not for diagnosis" in card and "children" in card and "0.833" in card


def test_mean_maps_and_where_the_card_says_the_model_looks(exported, tmp_path: Path) -> None:
    from cxr.eval.card import write_model_card
    from cxr.eval.looks import MeanMaps
    from cxr.runtime.heatmaps import Heatmaps
    from cxr.runtime.predictor import Predictor

    image = np.full((224, 224, 3), 100, np.uint8)
    corners, centre = np.zeros((7, 7)), np.zeros((7, 7))
    corners[[0, 0, 6, 6], [0, 6, 0, 6]] = 1.0
    centre[2:5, 2:5] = 5.0
    means = MeanMaps()
    means.add("Covid", Heatmaps(image, {"Covid": corners, "Normal": centre}))
    means.add("Covid", Heatmaps(image + 20, {"Covid": 3 * corners, "Normal": -centre}))
    means.add("Normal", Heatmaps(image, {"Covid": corners, "Normal": centre}))
    covid, normal = means.means(NAMES)
    assert (covid.count, normal.count) == (2, 1) and covid.image[0, 0, 0] == 110
    np.testing.assert_allclose(covid.evidence, corners)  # each image scaled to peak 1 before the mean
    assert covid.edge_share == 1.0 and normal.edge_share == 0.0 and covid.uniform_edge_share == pytest.approx(24 / 49)
    assert covid.picture().shape == image.shape

    info = Predictor(exported.path).info
    info = replace(info, heatmaps=replace(info.heatmaps, grid=(7, 7)))
    metrics = compute_metrics(np.array([0, 1]), np.eye(3)[[0, 1]], NAMES)
    card = write_model_card(tmp_path / "MODEL_CARD.md", info, metrics, [tmp_path], [covid, normal]).read_text()
    assert "| Covid | 2 | 100% |" in card and "| Normal | 1 | 0% |" in card
    assert "evidence for Covid leans outside the lungs" in card


def test_each_model_gets_its_own_card_and_training_images_are_not_a_test_set(exported, dataset: Path, tmp_path: Path) -> None:
    models = tmp_path / "artifacts"
    models.mkdir()
    for name in ("model.onnx", "model.int8.onnx"):
        shutil.copy(exported.path, models / name)
    (models / "MODEL_CARD.md").write_text("the FP32 model's card")
    result = runner.invoke(eval_app, ["--data", str(dataset), "--model", str(models / "model.int8.onnx"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (models / "MODEL_CARD.md").read_text() == "the FP32 model's card"
    assert "Not for diagnosis" in (models / "MODEL_CARD.model.int8.md").read_text()

    train_only = copy_dataset(dataset / "train", tmp_path / "train-only" / "train").parent
    result = runner.invoke(eval_app, ["--data", str(train_only), "--model", str(exported.path), "--out", str(tmp_path / "r2")])
    assert_one_line_error(result, "no test split")


def test_several_roots_are_evaluated_each_on_its_own_and_together(exported, dataset: Path, tmp_path: Path) -> None:
    other = make_dataset(tmp_path / "other", per_class={"train": 2, "test": 4}, seed=3, names=("COVID", "normal", "Viral pneumonia"))
    out = tmp_path / "r"
    result = runner.invoke(eval_app, ["--data", str(dataset), "--data", str(other), "--model", str(exported.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{dataset.name}: accuracy") and lines[1].startswith("other: accuracy")
    assert lines[2].startswith("all: accuracy") and "on 24 images" in lines[2]
    record = json.loads((out / "metrics.json").read_text())
    assert record["metrics"]["count"] == 24 and [m["count"] for m in record["sources"].values()] == [12, 12]
    assert "| other | 12 |" in (out / "report.md").read_text()
    assert "| other | 12 |" in (exported.path.parent / "MODEL_CARD.md").read_text()
    with Image.open(out / "dataset.png") as figure:  # four columns: two roots, two splits each
        assert figure.width >= 1500


def test_eval_json_and_eda(exported, dataset: Path, tmp_path: Path) -> None:
    as_json = runner.invoke(eval_app, ["--data", str(dataset), "--model", str(exported.path), "--out", str(tmp_path / "r"), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["count"] == 12  # a root with splits: its test split
    eda = runner.invoke(eval_app, ["--data", str(dataset), "--eda", "--out", str(tmp_path / "e"), "--model", "none.onnx"])
    assert eda.exit_code == 0, eda.output
    assert [p.name for p in (tmp_path / "e").iterdir()] == ["dataset.png"]


@pytest.mark.parametrize("case, needle", [("missing", "no such data folder"), ("unknown", "not among the model's classes"), ("empty", "no readable images")])
def test_eval_bad_inputs(exported, dataset: Path, tmp_path: Path, case: str, needle: str) -> None:
    data = tmp_path / "data"
    if case == "unknown":
        copy_dataset(dataset / "test", data)
        (data / "Tuberculosis").mkdir()
        shutil.copy(data / "Covid" / "0.jpeg", data / "Tuberculosis" / "0.jpeg")
    elif case == "empty":
        for name in NAMES:
            (data / name).mkdir(parents=True)
    result = runner.invoke(eval_app, ["--data", str(data), "--model", str(exported.path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and needle in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_eval_maps_class_folders_as_told_and_as_the_model_was_trained(exported, dataset: Path, tmp_path: Path) -> None:
    """A set with a folder the model has no class for: --class-map renames it onto a class or leaves
    it out; a model trained with a map applies its own without being told; a bad map is one line."""
    import onnx

    data = copy_dataset(dataset / "test", tmp_path / "data")
    shutil.copytree(data / "Viral Pneumonia", data / "Bacterial Pneumonia")  # 4 more pneumonia films
    shutil.copytree(data / "Normal", data / "Tuberculosis")  # 4 films of a class the model lacks
    common = ["--data", str(data), "--model", str(exported.path), "--json"]

    mapped = runner.invoke(eval_app, [*common, "--out", str(tmp_path / "a"), "--class-map", "Bacterial Pneumonia=Viral Pneumonia", "--class-map", "tuberculosis="])
    assert mapped.exit_code == 0, mapped.output
    record = json.loads(mapped.stdout)
    assert record["count"] == 16 and record["per_class"]["Viral Pneumonia"]["support"] == 8

    unmapped = runner.invoke(eval_app, [*common, "--out", str(tmp_path / "b")])
    assert_one_line_error(unmapped, "--class-map FOLDER=CLASS")
    for value, needle in (("Nope=Normal", "no class folder of that name"), ("=Normal", "expected FOLDER=CLASS")):
        assert_one_line_error(runner.invoke(eval_app, [*common, "--out", str(tmp_path / "c"), "--class-map", value]), needle)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()

    proto = onnx.load(exported.path)
    for prop in proto.metadata_props:
        if prop.key == "cxr.recipe":
            prop.value = json.dumps(json.loads(prop.value) | {"class_map": {"Bacterial Pneumonia": "Viral Pneumonia", "Tuberculosis": ""}})
    trained_with_map = tmp_path / "model" / "model.onnx"
    trained_with_map.parent.mkdir()
    onnx.save(proto, trained_with_map)
    recorded = runner.invoke(eval_app, ["--data", str(data), "--model", str(trained_with_map), "--json", "--out", str(tmp_path / "d")])
    assert recorded.exit_code == 0, recorded.output
    assert json.loads(recorded.stdout)["count"] == 16


def test_drawing_figures_leaves_matplotlib_as_it_was(tmp_path: Path) -> None:
    """Drawing needs no pyplot state, and importing the trainer or the figures switches no backend.

    (Keras imports pyplot itself, so pyplot is checked before the trainer is imported.)"""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys
        import matplotlib
        matplotlib.use("svg")  # a notebook's or a user's choice
        from cxr.core.figures import plot_curves
        plot_curves({{"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}}, __import__("pathlib").Path({str(tmp_path / "c.png")!r}))
        pyplot = "matplotlib.pyplot" in sys.modules
        import cxr.train.trainer
        print(matplotlib.get_backend(), pyplot)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["svg", "False"]
    with Image.open(tmp_path / "c.png") as figure:
        assert figure.format == "PNG"


def test_eval_reports_calibration_and_the_gate_on_other_images(exported, dataset: Path, not_xrays: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    result = runner.invoke(eval_app, ["--data", str(dataset), "--model", str(exported.path), "--out", str(out), "--ood", str(not_xrays)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    check, metrics = record["ood"], record["metrics"]
    readable = [p for p in not_xrays.iterdir() if p.name != "no_time_for_that_tiny.gif"]
    assert len(check["scores"]) == len(readable)
    flagged = np.mean([score > check["threshold"] for score in check["scores"].values()])
    assert check["flagged"] == pytest.approx(flagged) and check["flagged"] >= 0.9
    assert metrics["flagged"] <= 0.25 and check["roc_auc"] >= 0.9  # the synthetic test split mostly passes
    assert f"{check['flagged']:.1%} of {len(readable)} images flagged" in result.stdout
    # ECE before scaling is measured by undoing the model's own temperature.
    assert metrics["uncalibrated"]["ece"] != metrics["confidence"]["ece"]
    assert 0 < metrics["confidence"]["ece_by_chance"] < 0.5
    assert f"{metrics['confidence']['ece_by_chance']:.3f} by chance alone" in result.stdout
    for name in ("reliability.png", "ood_scores.png"):
        with Image.open(out / name) as figure:
            assert figure.format == "PNG" and figure.width >= 500, name
    report = (out / "report.md").read_text()
    assert "ECE before scaling" in report and "ECE by chance alone" in report and "ROC AUC of the score" in report
    card = (exported.path.parent / "MODEL_CARD.md").read_text()
    assert "## When it does not know" in card and "does not catch a chest X-ray of another disease" in card


def test_eval_ood_needs_a_folder_and_a_gated_model(exported, dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(eval_app, ["--data", str(dataset), "--model", str(exported.path), "--out", str(tmp_path / "r"), "--ood", str(tmp_path / "none")])
    assert_one_line_error(result, "--ood")
    assert not (tmp_path / "r").exists()


def test_evidence_on_the_lungs_where_films_have_masks(exported, dataset: Path, tmp_path: Path) -> None:
    """A collection laid out as CLASS/images + CLASS/masks: the report, metrics and card give each
    class's share of the positive evidence on the lungs, beside the lungs' share of the image."""
    from cxr.runtime.masks import read_mask
    from cxr.eval.lungs import share_on
    from cxr.runtime.predictor import Predictor

    halves = {"Covid": np.s_[:, :32], "Normal": np.s_[:, :]}  # Covid's "lungs": the left half
    root = masked_copy(dataset, tmp_path / "masked", halves, splits=("test",))
    out = tmp_path / "report"
    result = runner.invoke(eval_app, ["--data", str(root), "--model", str(exported.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {row["class_name"]: row for row in json.loads((out / "metrics.json").read_text())["evidence_on_lungs"]}
    assert set(rows) == {"Covid", "Normal", "all"} and rows["Covid"]["films"] == 4
    assert rows["Normal"]["evidence_on_lungs"] == pytest.approx(1.0) and rows["Normal"]["lung_area"] == pytest.approx(1.0)
    assert rows["Covid"]["lung_area"] == pytest.approx(0.5)

    predictor = Predictor(exported.path)
    by_hand = []
    for image in sorted((root / "test" / "Covid" / "images").iterdir()):
        prediction = predictor.predict(image, heatmaps="all")
        mask = read_mask(root / "test" / "Covid" / "masks" / f"{image.stem}.png", predictor.info.image_size)
        by_hand.append(share_on(mask, prediction.heatmaps.maps[prediction.label]))
    assert rows["Covid"]["evidence_on_lungs"] == pytest.approx(np.mean(by_hand))
    for text in ((out / "report.md").read_text(), (exported.path.parent / "MODEL_CARD.md").read_text()):
        assert "| masked | Covid | 4 |" in text and "evidence on the lungs" in text


def test_card_says_how_a_model_with_a_lung_prior_reads(exported) -> None:
    from cxr.eval.card import reading_lines
    from cxr.runtime.predictor import Predictor

    info = Predictor(exported.path).info
    assert reading_lines(info) == []  # trained without masks, so without the prior
    assert "lung prior" in "\n".join(reading_lines(replace(info, recipe={**info.recipe, "lung_prior": True})))


def test_share_on_the_mask_of_known_maps() -> None:
    from cxr.eval.lungs import share_on

    mask = np.zeros((32, 32), bool)
    mask[:, :16] = True
    assert share_on(mask, np.array([[1.0, 1.0], [1.0, 1.0]])) == pytest.approx(0.5)
    assert share_on(mask, np.array([[2.0, -5.0], [2.0, -5.0]])) > 0.7  # only what raised the score counts
    assert share_on(mask, -np.ones((2, 2))) is None

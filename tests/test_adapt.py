"""cxr-adapt on the synthetic model: a site whose films look unlike the training data (the patterns
inverted: dark on bright) is learnt from a few films per class, the proof is printed and recorded,
the maps still add up, and each refusal is one line with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from checks import assert_maps_add_up, assert_one_line_error
from synthetic import CLASSES, make_dataset

runner = CliRunner()


def inverted_site(root: Path, per_class: int, seed: int, classes: tuple[str, ...] = CLASSES) -> Path:
    """``root/<class>/*``: the synthetic patterns, inverted (another hospital's look)."""
    made = make_dataset(root.with_name(root.name + "-made"), {"films": per_class}, seed=seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for film in sorted((made / "films" / name).iterdir()):
            with Image.open(film) as image:
                ImageOps.invert(image.convert("L")).save(root / name / f"{film.stem}.png")
    return root


def accuracy(model: Path, site: Path) -> float:
    from cxr.runtime.predictor import Predictor

    predictor = Predictor(model)
    films = [(path, name) for name in CLASSES for path in sorted((site / name).iterdir())]
    return float(np.mean([predictor.predict(path).label == name for path, name in films]))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inverted_site(tmp_path_factory.mktemp("hospital") / "hospital", 10, seed=1)


@pytest.fixture(scope="module")
def adapted(exported, site: Path, tmp_path_factory: pytest.TempPathFactory):
    from cxr.adapt.site import adapt

    return adapt(exported.path, site, tmp_path_factory.mktemp("adapted") / "model.hospital.onnx")


def test_adapting_to_a_site_helps_and_says_how_much(exported, adapted, site: Path, tmp_path: Path) -> None:
    from cxr.runtime.predictor import Predictor

    record = adapted.record
    assert adapted.helped and adapted.path.is_file()
    assert record.films == {name: 10 for name in CLASSES}
    assert np.mean(list(record.after.values())) > np.mean(list(record.before.values()))
    # On other films of the same site, never seen by the adaptation: the adapted model does better.
    unseen = inverted_site(tmp_path / "unseen", 8, seed=2)
    assert accuracy(adapted.path, unseen) > accuracy(exported.path, unseen) + 0.2
    # The file says what was done, and the head is still exactly decomposed into the maps.
    predictor = Predictor(adapted.path)
    assert predictor.info.adaptation == record and record.site == "hospital"
    from cxr.core.datasets import file_digest

    assert record.base_model == file_digest(exported.path)
    images = np.stack([predictor.prepare(path) for path in sorted((unseen / "Normal").iterdir())])
    assert_maps_add_up(predictor, images)
    base = Predictor(exported.path).info
    assert predictor.info.class_names == base.class_names and predictor.info.metrics == base.metrics


def test_the_gate_learns_the_site_and_still_flags_what_is_not_an_xray(exported, adapted, site: Path, not_xrays: Path) -> None:
    from cxr.core.datasets import files_under
    from cxr.runtime.predictor import Prediction, Predictor

    assert adapted.record.gate_pass_after >= adapted.record.gate_pass_before
    before, after = Predictor(exported.path), Predictor(adapted.path)
    assert after.info.ood.threshold == before.info.ood.threshold
    made = [o for o in after.predict_files(files_under(not_xrays)) if isinstance(o, Prediction)]
    flagged_before = [o for o in before.predict_files(files_under(not_xrays)) if isinstance(o, Prediction) and not o.in_distribution]
    # The site's centres are added, the model's kept: what was unlike every class stays mostly flagged.
    assert sum(not o.in_distribution for o in made) >= 0.8 * len(flagged_before) > 0


def test_an_int8_model_adapts_alike(exported, dataset: Path, site: Path, tmp_path: Path, capfd) -> None:
    from cxr.adapt.site import adapt
    from cxr.export.quantize import export_int8
    from cxr.runtime.predictor import Predictor

    int8 = export_int8(exported.path, tmp_path / "model.int8.onnx", dataset, min_agreement=0.0).path
    result = adapt(int8, site, force=True)
    assert result.path == tmp_path / "model.int8.hospital.onnx"
    capfd.readouterr()
    predictor = Predictor(result.path)
    # The gate's recorded shapes follow its new centres: onnxruntime loads the file without a warning.
    assert "MergeShapeInfo" not in capfd.readouterr().err
    assert predictor.info.quantization != "none" and predictor.info.adaptation is not None
    assert_maps_add_up(predictor, np.stack([predictor.prepare(p) for p in sorted((site / "Covid").iterdir())]))


def test_cli_prints_the_proof_and_writes_the_model(exported, site: Path, tmp_path: Path) -> None:
    from cxr.adapt.cli import app

    out = tmp_path / "adapted.onnx"
    result = runner.invoke(app, ["--data", str(site), "--model", str(exported.path), "--out", str(out), "--name", "St. Elsewhere"])
    assert result.exit_code == 0, result.output
    assert "Viral Pneumonia" in result.stdout and " -> " in result.stdout and f"wrote {out}" in result.stdout
    from cxr.runtime.predictor import Predictor

    assert Predictor(out).info.adaptation.site == "St. Elsewhere"


def test_where_adapting_does_not_help_nothing_is_written_unless_forced(exported, dataset: Path, tmp_path: Path) -> None:
    """The training look itself: the model is right on every film, so no refit can beat it."""
    from cxr.adapt.cli import app

    out = tmp_path / "same.onnx"
    args = ["--data", str(dataset / "train"), "--model", str(exported.path), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "does not help" in result.stdout and "nothing written" in result.stdout and not out.exists()
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0 and out.is_file()


def test_bad_sites_are_refused_in_one_line(exported, site: Path, tmp_path: Path) -> None:
    from cxr.adapt.cli import app

    few = tmp_path / "few"
    for name in CLASSES:
        (few / name).mkdir(parents=True)
        for film in sorted((site / name).iterdir())[:4]:
            (few / name / film.name).write_bytes(film.read_bytes())
    one = tmp_path / "one"
    (one / "Normal").mkdir(parents=True)
    for film in sorted((site / "Normal").iterdir()):
        (one / "Normal" / film.name).write_bytes(film.read_bytes())
    stranger = tmp_path / "stranger"
    for name in ("Normal", "Fracture"):
        (stranger / name).mkdir(parents=True)
        for film in sorted((site / "Normal").iterdir())[:5]:
            (stranger / name / film.name).write_bytes(film.read_bytes())
    (tmp_path / "empty" / "Normal").mkdir(parents=True)
    cases = {
        few: "at least 5",
        one: "one class only",
        stranger: "Fracture",
        tmp_path / "empty": "no readable films",
        tmp_path / "missing": "no such folder",
    }
    for data, needle in cases.items():
        out = tmp_path / f"{data.name}.onnx"
        result = runner.invoke(app, ["--data", str(data), "--model", str(exported.path), "--out", str(out)])
        assert_one_line_error(result, needle)
        assert not out.exists()


def test_a_model_without_heat_maps_is_refused(exported, site: Path, tmp_path: Path) -> None:
    from cxr.adapt.cli import app

    old = onnx.load(str(exported.path))
    kept = [prop for prop in old.metadata_props if prop.key != "cxr.heatmaps"]
    del old.metadata_props[:]
    old.metadata_props.extend(kept)
    path = tmp_path / "old.onnx"
    onnx.save(old, path)
    result = runner.invoke(app, ["--data", str(site), "--model", str(path), "--out", str(tmp_path / "new.onnx")])
    assert_one_line_error(result, "export it again")
    assert not (tmp_path / "new.onnx").exists()


def test_adapting_loads_no_tensorflow(exported, site: Path, tmp_path: Path) -> None:
    """cxr-adapt runs on the edge install: a fresh interpreter adapts a model without TensorFlow."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from cxr.adapt.site import adapt
        adapt(Path({str(exported.path)!r}), Path({str(site)!r}), Path({str(tmp_path / "m.onnx")!r}), force=True)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "ray")))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]" and (tmp_path / "m.onnx").is_file()


def test_predict_the_demo_and_the_card_say_the_model_is_adapted(adapted, site: Path, tmp_path: Path) -> None:
    from cxr.demo.app import model_card_brief
    from cxr.eval.cli import app as eval_app
    from cxr.runtime.cli import app as predict_app
    from cxr.runtime.predictor import Predictor

    film = sorted((site / "Normal").iterdir())[0]
    result = runner.invoke(predict_app, [str(film), "--model", str(adapted.path)])
    assert result.exit_code == 0 and "adapted to hospital" in result.stderr
    assert "Adapted to hospital" in model_card_brief(Predictor(adapted.path).info)
    evaluated = runner.invoke(eval_app, ["--data", str(site), "--model", str(adapted.path), "--out", str(tmp_path / "reports")])
    assert evaluated.exit_code == 0, evaluated.output
    card = (adapted.path.parent / "MODEL_CARD.model.hospital.md").read_text()
    assert "adapted to hospital (Covid 10, Normal 10, Viral Pneumonia 10 films)" in card

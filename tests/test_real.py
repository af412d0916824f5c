"""The real thing: the README's default, trained on the five real collections with the real ImageNet
weights and Covid19-dataset's label corrections, once per run (the module fixture), as the README's
first command trains it (seed 0) but for a fine-tuning draw of 600 films an epoch instead of 1,200,
which keeps CI under 30 minutes (fine-tuning is half of the fixture's time). The default's own
figures over seeds are measured in benchmarks/.

Runs when ../shared/data is there (it is in CI); otherwise each test says why it skipped.

The same seed trains a slightly different model on another CPU (TensorFlow's oneDNN picks other
kernels for other instruction sets, so sums round differently): between a CPU with AMX and one
without, seed 0's figures moved by up to 4 films of a test split. So the floors here are sanity
checks with a margin several times that, each beside the value it guards as measured; the goals
themselves (accuracy, ECE, shares flagged) are measured over seeds 0-4 in benchmarks/ and
docs/RESULTS.md, not asserted for one seed. What the code guarantees whatever the rounding (the
temperature never raises the validation loss it minimises, the file predicts what the trainer
measured, the corrections applied) is asserted exactly.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from checks import assert_maps_add_up
from conftest import REAL_CLASS_MAP, REAL_CORRECTIONS

pytestmark = pytest.mark.real
FINE_TUNE_SAMPLE = 600  # films per fine-tuning epoch; the default draws 1,200


@pytest.fixture(scope="module")
def real_run(real_data: list[Path], real_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    out = tmp_path_factory.mktemp("real")
    config = TrainConfig(data=tuple(real_data), out=out, weights=str(real_weights), seed=0, class_map=REAL_CLASS_MAP, corrections=REAL_CORRECTIONS)
    return train(replace(config, fine_tune_sample=FINE_TUNE_SAMPLE))


# Seed 0 of the default on an AVX-512 BF16 EPYC (no AMX), read by the runtime: Covid19-dataset 0.864
# with its corrected labels (Normal recall 0.85), the radiography subset 0.890 (0.90), the pediatric
# subset 0.967 (0.97), NLM 0.985 (0.985), COVID-QU-Ex 0.849 (0.93). Each floor is about 10 films
# (Normal: 4-15) under its figure, several times the 4 films a CPU's rounding has moved seed 0 between
# a CPU with AMX and one without.
FLOORS = {
    "Covid19-dataset": (0.74, 0.65),
    "Covid19-radiography-subset": (0.85, 0.75),
    "Pediatric-pneumonia-subset": (0.93, 0.85),
    "NLM-tuberculosis-subset": (0.85, 0.85),
    "COVID-QU-Ex-subset": (0.80, 0.80),
}
# COVID-QU-Ex's test Non-COVID films called Covid: 16 of 98 at seed 0 (the four-collection model,
# which never saw an adult with non-COVID pneumonia: 64); the ceiling allows 8 more.
NON_COVID_AS_COVID_CEILING = 0.25
# Share of the evidence on the lungs of the test Normal films, each with its own mask: 0.63 on NLM's,
# 0.65 on COVID-QU-Ex's at seed 0 (lungs cover about a quarter of each film; 0.18 without the prior).
LUNG_FLOOR = 0.5
IN_FOLDERS = 66 + 300 + 300 + 67 + 298  # test films of the model's classes, as the folders hold them
TRAIN_FILMS = 251 + 900 + 1200 + 270 + 1196 - 21  # the corrections leave out 21 of Covid19-dataset's train films
TEST_FILMS = IN_FOLDERS - 1  # and 1 of its test films


def labelled_test_files(real_data: list[Path]) -> list[tuple[Path, str]]:
    """Every test film of the model's classes in ``real_data`` (some of the five collections, or all),
    with its class after the README's class map (the pairs whose folder they have) and corrections."""
    from cxr.core.corrections import corrected_files, read_corrections
    from cxr.core.datasets import scan_roots

    names = ["Covid", "Normal", "Viral Pneumonia"]
    mapped = [(folder, target) for folder, target in REAL_CLASS_MAP if any((root / "train" / folder).is_dir() for root in real_data)]
    items = [(path, names.index(name)) for data in scan_roots(real_data, (), mapped) for name, paths in data.test.items() for path in paths]
    return [(path, names[label]) for path, label in corrected_files(items, read_corrections(REAL_CORRECTIONS, names), names)]


def normal_recall(split) -> float:
    return split.confusion[1][1] / sum(split.confusion[1])  # classes: Covid, Normal, Viral Pneumonia


def test_real_model_learns_every_collection(real_run) -> None:
    assert real_run.class_names == ["Covid", "Normal", "Viral Pneumonia"]
    assert real_run.splits["train"].count + real_run.splits["val"].count == TRAIN_FILMS
    assert real_run.splits["test"].count == TEST_FILMS
    assert real_run.splits["train"].accuracy >= 0.9  # 0.964 at seed 0 without the corrections; 0.9 is ~300 films below
    tests = {name: splits["test"] for name, splits in real_run.sources.items()}
    for name, (accuracy, normal) in FLOORS.items():
        assert tests[name].accuracy >= accuracy, name
        assert normal_recall(tests[name]) >= normal, name
    non_covid = tests["COVID-QU-Ex-subset"].confusion[2]  # its Non-COVID films, as Viral Pneumonia
    assert non_covid[0] / sum(non_covid) <= NON_COVID_AS_COVID_CEILING
    # Every shipped correction matches a film and leaves it out: 21 train films, 1 test film.
    applied = real_run.corrections
    assert applied.counts == {"Covid19-dataset/train": {"drop": 21}, "Covid19-dataset/test": {"drop": 1}}
    assert applied.unmatched == []
    # The lung prior is measured on every training film with a mask: NLM's Normal films (Tuberculosis
    # is left out) and all of COVID-QU-Ex's.
    assert real_run.lung_prior is not None and real_run.lung_prior.films == 270 + 1196
    # Covid19-dataset's test split holds 6 byte-for-byte copies of its train images (exact: digests),
    # and a byte-for-byte copy is 0 bits from its original by the near-copy hashes (exact too).
    assert len(real_run.test_copies) == 6
    assert set(real_run.test_copies) <= {copy.file for copy in real_run.test_near_copies}


def test_real_export_parity(real_run, real_data: list[Path]) -> None:
    from cxr.export.onnx_export import export_onnx

    result = export_onnx(real_run.model_path, real_run.model_path.with_suffix(".onnx"))
    assert result.max_abs_diff <= 1e-4  # 9.5e-7 measured: 100 times under
    assert result.parity_images >= 12
    # The runtime reads the contrast step from the model file and so sees what training saw: file by
    # file, it reproduces the trainer's test accuracy.
    from cxr.runtime.predictor import Predictor

    predictor = Predictor(result.path)
    assert predictor.info.input.contrast == "equalize" and predictor.info.recipe["lung_prior"] is True
    # Two collections' test films, one with corrected labels (a pass over all 1,030 costs CI 3 minutes).
    checked = [real_data[0], real_data[4]]
    right = [predictor.predict(path).label == name for path, name in labelled_test_files(checked)]
    trainer = [real_run.sources[root.name]["test"] for root in checked]
    assert len(right) == sum(split.count for split in trainer)
    # Keras and onnxruntime differ by ~1e-6 in a probability: one film may flip only if its top two
    # classes are that close, so one film of slack. Where the frozen layers' features were computed in
    # bfloat16, the trainer read the test films through features about 1% off float32's: 1 film of 733
    # flipped at seed 0 (AVX-512 BF16 EPYC), so 4 of slack there.
    slack = 1.01 if real_run.precision == "float32" else 4.01
    assert sum(right) == pytest.approx(sum(split.accuracy * split.count for split in trainer), abs=slack)


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

    # INT8 picks FP32's class on 99.0% of the 1,031 test films at seed 1 (cxr-export's floor is 99%);
    # every film that changes class lies near a tie in FP32, and a CPU's rounding moves which ones
    # (98.9-99.6% for earlier defaults by CPU). With 7-bit weights every CPU computes the same integers
    # for a given model (full 8-bit weights gave 0.937 on a CPU without VNNI), so the floor here is
    # 0.98, about twice the films that swing.
    # Calibrated and checked on two collections' films, not all five (two passes over all 1,031 test
    # films cost CI 4 minutes). Folders mapped as training mapped them: COVID-QU-Ex's Non-COVID films
    # count as Viral Pneumonia, and its COVID-19 films as Covid.
    int8 = export_int8(fp32_path, fp32_path.with_name("model.int8.onnx"), [real_data[0], real_data[4]], min_agreement=0.98)
    assert int8.test_images == 66 + 298
    assert int8.agreement >= 0.98
    # Pearson correlation of each test image's maps, INT8 against FP32, averaged over the test split.
    assert int8.map_correlation >= 0.95  # 0.9983 at seed 1
    assert int8.flag_agreement >= 0.97  # the gate survives quantization: 0.999 at seed 1


def test_real_calibration_and_gate(real_run, not_xrays: Path) -> None:
    """The temperature does what it promises on the split it was fitted on; the gate flags what is
    not a chest X-ray and lets the test X-rays through. (The ECE goals are per collection and over
    seeds, in benchmarks/trust.py: a test split's ECE after scaling can exceed its ECE before, as
    Covid19-dataset's does on a CPU with AMX, 0.107 against 0.102, when its accuracy shifts away
    from validation's; temperature scaling promises nothing there.)"""
    from cxr.core.datasets import files_under
    from cxr.runtime.predictor import Prediction, Predictor

    from not_xrays import sample_images

    val = real_run.splits["val"]
    assert val.loss <= val.uncalibrated.loss + 1e-6  # T minimises it; T = 1 was among the candidates
    assert 0.3 < real_run.trust.temperature < 3  # 0.62 at seed 1
    for name in real_run.sources:
        # Flagged test films at seed 0: at most 3.4% of a collection's (COVID-QU-Ex). The threshold lets
        # 97.5% of each source's validation films through; 0.12 allows 7 of 66 and 36 of 300.
        assert real_run.sources[name]["test"].flagged <= 0.12, name

    fp32_path = real_run.model_path.with_suffix(".onnx")  # written by test_real_export_parity
    if not fp32_path.is_file():
        pytest.skip("needs the FP32 export of test_real_export_parity")
    predictor = Predictor(fp32_path)
    outcomes = {Path(o.file).name: o for o in predictor.predict_files(files_under(not_xrays))}
    samples = [outcomes[p.name] for p in sample_images() if isinstance(outcomes.get(p.name), Prediction)]
    assert len(samples) == 26  # every scikit-image sample is readable (exact)
    # Flagged: 26 of 26 at seed 1; 0.85 allows 3 through.
    assert sum(not s.in_distribution for s in samples) / len(samples) >= 0.85
    made = [o for o in outcomes.values() if isinstance(o, Prediction)]
    # 34 of 34 at seed 1; 0.85 allows 5 through.
    assert sum(not o.in_distribution for o in made) / len(made) >= 0.85


@pytest.mark.parametrize("collection", [3, 4], ids=["NLM-tuberculosis-subset", "COVID-QU-Ex-subset"])
def test_real_evidence_lies_on_the_lungs(real_run, real_data: list[Path], collection: int) -> None:
    """cxr-eval's figure on a collection's test Normal films, read from the exported model with each
    film's own mask: the share of the predicted class's positive evidence that falls on the lungs."""
    from cxr.core.datasets import files_under
    from cxr.eval.lungs import LungEvidence
    from cxr.runtime.predictor import Predictor

    fp32_path = real_run.model_path.with_suffix(".onnx")  # written by test_real_export_parity
    if not fp32_path.is_file():
        pytest.skip("needs the FP32 export of test_real_export_parity")
    lungs = LungEvidence()
    films = files_under(real_data[collection] / "test" / "Normal" / "images")
    for prediction in Predictor(fp32_path).predict_files(films, heatmaps="predicted"):
        lungs.add(real_data[collection].name, "Normal", prediction)
    (row,) = lungs.shares()
    assert row.films == len(films) > 60
    assert row.evidence_on_lungs >= LUNG_FLOOR


def test_real_adapting_to_a_known_collection_costs_nothing(real_run, real_data: list[Path], tmp_path: Path) -> None:
    """cxr-adapt on 10 films per class of COVID-QU-Ex's train split, which the model trained on: its
    test split scores no worse than the model as it is (the trainer's figure; 2 films of slack for
    the trainer's bfloat16 features), and the adapted file's maps still add up."""
    from cxr.adapt.site import adapt
    from cxr.runtime.predictor import Predictor

    fp32_path = real_run.model_path.with_suffix(".onnx")  # written by test_real_export_parity
    if not fp32_path.is_file():
        pytest.skip("needs the FP32 export of test_real_export_parity")
    qu_ex = real_data[4]
    site = tmp_path / "site"
    for folder in ("COVID-19", "Non-COVID", "Normal"):
        (site / folder).mkdir(parents=True)
        for film in sorted((qu_ex / "train" / folder / "images").iterdir())[:10]:
            (site / folder / film.name).symlink_to(film)
    result = adapt(fp32_path, site, tmp_path / "adapted.onnx", force=True)
    assert result.record.films == {"Covid": 10, "Normal": 10, "Viral Pneumonia": 10}
    adapted = Predictor(result.path)
    films = [(path, name) for path, name in labelled_test_files([qu_ex])]
    right = sum(adapted.predict(path).label == name for path, name in films)
    before = real_run.sources[qu_ex.name]["test"]
    assert right >= before.accuracy * before.count - 2 - 0.02 * len(films)
    assert_maps_add_up(adapted, np.stack([adapted.prepare(path) for path, _ in films[:8]]))

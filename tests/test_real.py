"""The real thing: the README's default recipe, trained on the four real collections with the real
ImageNet weights, once per run (the module fixture), with one change: each fine-tuning epoch reads a
balanced draw of 720 films instead of all 2,241 (`--fine-tune-sample 720`). That keeps CI under its
30 minutes (fitting takes 5 minutes on a 2-core AVX-512 BF16 EPYC against 15 for every film; the
frozen pass, 4 minutes from an empty cache, comes on top) and costs the figures the floors guard little
(docs/RESULTS.md, "Fine-tuning on a balanced draw"); the default's own figures are measured in
benchmarks/.

Runs when ../shared/data is there (it is in CI); otherwise each test says why it skipped.

The same seed trains a slightly different model on another CPU (TensorFlow's oneDNN picks other
kernels for other instruction sets, so sums round differently): between a CPU with AMX and one
without, seed 0's figures moved by up to 4 films of a test split. So the floors here are sanity
checks with a margin several times that, each beside the value it guards as measured on both CPUs
(AMX, and AVX-512 without AMX); the goals themselves (accuracy, ECE, shares flagged) are measured
over seeds 0-4 in benchmarks/ and docs/RESULTS.md, not asserted for one seed. What the code
guarantees whatever the rounding (the temperature never raises the validation loss it minimises,
the file predicts what the trainer measured) is asserted exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from checks import assert_maps_add_up
from conftest import REAL_CLASS_MAP

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real_run(real_data: list[Path], real_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    out = tmp_path_factory.mktemp("real")
    return train(TrainConfig(data=tuple(real_data), out=out, weights=str(real_weights), seed=0, class_map=REAL_CLASS_MAP, fine_tune_sample=720))


# Seed 0 of this fixture's recipe on an AVX-512 BF16 EPYC (no AMX), from the runtime: Covid19-dataset
# 0.909 (Normal 0.90), the radiography subset 0.890 (0.91), the pediatric subset 0.967 (1.00), NLM
# 1.000 (1.00); with float32 features, as a CPU without bfloat16 computes them: 0.909 (0.90), 0.887
# (0.90), 0.967 (1.00), 1.000 (1.00). Each floor is about 10 films (Normal: 3-15) under its figure,
# several times the 4 films a CPU's rounding has moved seed 0's default between a CPU with AMX and one
# without AVX-512.
FLOORS = {
    "Covid19-dataset": (0.77, 0.70),
    "Covid19-radiography-subset": (0.86, 0.75),
    "Pediatric-pneumonia-subset": (0.93, 0.85),
    "NLM-tuberculosis-subset": (0.85, 0.85),
}
# Share of the evidence on the lungs of the NLM test Normal films: 0.66 at seed 0 (the default, every
# film: 0.67 with AMX, 0.66 without; lungs cover 0.24 of these films; the model without the prior put
# 0.18 of its evidence there).
LUNG_FLOOR = 0.5


def labelled_test_files(real_data: list[Path]) -> list[tuple[Path, str]]:
    """Every test film of the model's classes, with its class after the README's class map."""
    from cxr.core.datasets import scan_roots

    return [(path, name) for data in scan_roots(real_data, (), REAL_CLASS_MAP) for name, paths in data.test.items() for path in paths]


def normal_recall(split) -> float:
    return split.confusion[1][1] / sum(split.confusion[1])  # classes: Covid, Normal, Viral Pneumonia


def test_real_model_learns_every_collection(real_run) -> None:
    assert real_run.class_names == ["Covid", "Normal", "Viral Pneumonia"]
    assert real_run.splits["train"].count + real_run.splits["val"].count == 251 + 900 + 1200 + 270
    assert real_run.splits["test"].count == 66 + 300 + 300 + 67
    assert real_run.splits["train"].accuracy >= 0.95  # 0.972; 0.95 is ~50 images below
    tests = {name: splits["test"] for name, splits in real_run.sources.items()}
    for name, (accuracy, normal) in FLOORS.items():
        assert tests[name].accuracy >= accuracy, name
        assert normal_recall(tests[name]) >= normal, name
    # The lung prior is measured on the masks beside the NLM Normal train films (Tuberculosis is left out).
    assert real_run.lung_prior is not None and real_run.lung_prior.films == 270
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
    right = [predictor.predict(path).label == name for path, name in labelled_test_files(real_data)]
    # Keras and onnxruntime differ by ~1e-6 in a probability: one film may flip only if its top two
    # classes are that close, so one film of slack. Where the frozen layers' features were computed in
    # bfloat16, the trainer read the test films through features about 1% off float32's: 1 film of 733
    # flipped at seed 0 (AVX-512 BF16 EPYC), so 4 of slack there.
    slack = 1.01 if real_run.precision == "float32" else 4.01
    assert sum(right) == pytest.approx(real_run.splits["test"].accuracy * len(right), abs=slack)


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

    # The fixture's cheaper model (a 720-film draw an epoch) leaves more films on a class boundary
    # than the default, whose INT8 agrees on 99.5-99.7% (cxr-export's floor is 99%): 0.992 (6 of 733
    # films) for seed 0 trained on an AVX-512 EPYC, 0.996 with float32 features, 0.989 (8) trained on
    # a CPU with AMX, every film that changed class within 0.06 of a tie in FP32. With 7-bit weights
    # every CPU computes the same integers for a given model (full 8-bit weights gave 0.937 on a CPU
    # without VNNI), so the floor here is 0.98, about twice the films that swing.
    int8 = export_int8(fp32_path, fp32_path.with_name("model.int8.onnx"), real_data, min_agreement=0.98)
    # Folders mapped as training mapped them: the pediatric subset's 100 "Bacterial Pneumonia" test
    # films count as Viral Pneumonia, the NLM subset's tuberculosis films are left out, so 733 films.
    assert int8.test_images == 66 + 300 + 300 + 67
    assert int8.agreement >= 0.98
    # Pearson correlation of each test image's maps, INT8 against FP32, averaged over the test split.
    assert int8.map_correlation >= 0.95  # 0.9981, with the lung prior (the default on AMX: 0.9988)
    assert int8.flag_agreement >= 0.97  # the gate survives quantization: 0.999 (the default on AMX: 1.000)


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
    assert 0.3 < real_run.trust.temperature < 3  # 0.66; the default's 0.58 (AMX) and 0.59-0.61 over seeds
    for name in real_run.sources:
        # Flagged test films: 1 of 66, 8 of 300 (the default: 2-3 of 66, 11 of 300). The threshold lets 97.5%
        # of each source's validation films through; 0.12 allows 7 of 66 and 36 of 300.
        assert real_run.sources[name]["test"].flagged <= 0.12, name

    fp32_path = real_run.model_path.with_suffix(".onnx")  # written by test_real_export_parity
    if not fp32_path.is_file():
        pytest.skip("needs the FP32 export of test_real_export_parity")
    predictor = Predictor(fp32_path)
    outcomes = {Path(o.file).name: o for o in predictor.predict_files(files_under(not_xrays))}
    samples = [outcomes[p.name] for p in sample_images() if isinstance(outcomes.get(p.name), Prediction)]
    assert len(samples) == 26  # every scikit-image sample is readable (exact)
    # Flagged: 26 of 26 at seed 0 (the default: 26 of 26 on both CPUs, 25 at seeds 1-2); 0.85 allows 3 through.
    assert sum(not s.in_distribution for s in samples) / len(samples) >= 0.85
    made = [o for o in outcomes.values() if isinstance(o, Prediction)]
    # 34 of 34 at seed 0 (the default: 34 on both CPUs, 33 at seeds 1-2); 0.85 allows 5 through.
    assert sum(not o.in_distribution for o in made) / len(made) >= 0.85


def test_real_evidence_lies_on_the_lungs(real_run, real_data: list[Path]) -> None:
    """cxr-eval's figure on the NLM test Normal films, read from the exported model with each film's
    own mask: the share of the predicted class's positive evidence that falls on the lungs."""
    from cxr.core.datasets import files_under
    from cxr.eval.lungs import LungEvidence
    from cxr.runtime.predictor import Predictor

    fp32_path = real_run.model_path.with_suffix(".onnx")  # written by test_real_export_parity
    if not fp32_path.is_file():
        pytest.skip("needs the FP32 export of test_real_export_parity")
    lungs = LungEvidence()
    films = files_under(real_data[3] / "test" / "Normal" / "images")
    for prediction in Predictor(fp32_path).predict_files(films, heatmaps="predicted"):
        lungs.add("NLM", "Normal", prediction)
    (row,) = lungs.shares()
    assert row.films == 67
    assert row.evidence_on_lungs >= LUNG_FLOOR

"""Does a model hold up on a collection it never saw? Leave one collection out: for each collection,
train on all the others and test on it; and train on all of them, test on each.

    python benchmarks/generalization.py --weights PATH [--seeds 0 --seeds 1 ...] [--no-lung-prior] [--fine-tune N] [--fine-tune-epochs N] [--fine-tune-sample N] [--runs all --runs NAME ...]

Each model is trained with the default recipe (``--lung-prior`` as given), exported to ONNX and read
by the runtime's Predictor, as a user would. A held-out collection's train split is never trained
on, so it is that model's leave-one-collection-out validation set (what a recipe is chosen on when
the collection to serve is unseen; Gulrajani & Lopez-Paz 2020); its test split is what is reported.
Prints Markdown tables: accuracy and Normal recall, mean (min) over seeds, per held-out collection;
for the model trained on all, each test split's recall per class, calibration and flagged share;
the evidence on the lungs (NLM masks) and the gate's flagged share of the Tuberculosis films.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import typer

os.environ.setdefault("CXR_QUIET", "1")

from cxr.train.config import Precision, TrainConfig  # noqa: E402  (no TensorFlow behind it)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COLLECTIONS = ["Covid19-dataset", "Covid19-radiography-subset", "Pediatric-pneumonia-subset", "NLM-tuberculosis-subset"]
# As the README's first command: bacterial films are pneumonia; tuberculosis is no class of the model.
CLASS_MAP = (("Bacterial Pneumonia", "Viral Pneumonia"), ("Tuberculosis", ""))
UNSEEN = "Tuberculosis"  # a disease the model has no class for: how often does the gate flag it?
EVERY = "all"


@dataclass(frozen=True)
class Score:
    accuracy: float
    recall: dict[str, float]  # per class the split has
    ece: float  # expected calibration error of the model file's (temperature-scaled) probabilities
    ece_by_chance: float  # a perfectly calibrated model's ECE with these probabilities on as many films
    flagged: float  # share of the split the gate calls unlike the training films

    def __str__(self) -> str:
        recall = ", ".join(f"{name} {value:.2f}" for name, value in self.recall.items())
        return f"accuracy {self.accuracy:.3f} (recall {recall}), ECE {self.ece:.3f}, flagged {self.flagged:.3f}"

    @property
    def normal_recall(self) -> float | None:  # None where the split has no Normal film
        return self.recall.get("Normal")


def mapped_here(roots: list[Path]) -> tuple[tuple[str, str], ...]:
    """CLASS_MAP's pairs whose folder one of ``roots`` has (cxr-train refuses a map naming no folder)."""
    return tuple(pair for pair in CLASS_MAP if any((root / "train" / pair[0]).is_dir() for root in roots))


def scored(predictor, files: dict[str, list[Path]]) -> Score:
    """Accuracy, recall per class, calibration and the gate's flagged share of the runtime's
    predictions on a split's files by class."""
    import numpy as np

    from cxr.core.calibration import confidence
    from cxr.core.datasets import labelled_files
    from cxr.runtime.predictor import Prediction

    # Matched case aside: a model trained without Covid19-dataset spells "COVID", not "Covid".
    label_of = dict(labelled_files(files, predictor.info.class_names))
    said = [p for p in predictor.predict_files(list(label_of)) if isinstance(p, Prediction)]
    labels = np.array([label_of[Path(p.file)] for p in said])
    probabilities = np.array([list(p.probabilities.values()) for p in said])
    right = probabilities.argmax(axis=1) == labels
    recall = {name: float(right[labels == label_of[paths[0]]].mean()) for name, paths in files.items() if paths}
    flagged = [p.in_distribution is False for p in said]
    honesty = confidence(probabilities, labels)
    return Score(float(right.mean()), recall, honesty.ece, honesty.ece_by_chance, statistics.mean(flagged))


def lungs_and_gate(predictor, root: Path) -> tuple[float, float]:
    """On the NLM test split: the mean share of the predicted class's positive evidence on the lungs
    (Normal films), and the share of the Tuberculosis films the gate flags."""
    from cxr.core.datasets import class_folders
    from cxr.eval.lungs import LungEvidence

    folders = class_folders(root / "test")
    lungs = LungEvidence()
    for prediction in predictor.predict_files(folders["Normal"], heatmaps="predicted"):
        lungs.add(root.name, "Normal", prediction)
    flagged = [not p.in_distribution for p in predictor.predict_files(folders[UNSEEN])]
    return lungs.shares()[0].evidence_on_lungs, statistics.mean(flagged)


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    seeds: list[int] = typer.Option([0, 1, 2, 3, 4], help="Seeds (repeat)."),
    lung_prior: bool = typer.Option(True, help="The default: the lung prior wherever some training film has a mask; --no-lung-prior: never."),
    fine_tune: int = typer.Option(TrainConfig.fine_tune, help="VGG16 blocks fine-tuned after the head (0: the head alone on frozen features)."),
    runs: list[str] = typer.Option([EVERY, *COLLECTIONS], help=f"'{EVERY}' (train on every collection) and the collections to leave out in turn (repeat)."),
    precision: Precision = typer.Option(TrainConfig.precision, help="What the frozen layers' features are computed in (cxr-train --precision)."),
    fine_tune_sample: int = typer.Option(TrainConfig.fine_tune_sample, help="Images per fine-tuning epoch, a balanced draw (cxr-train --fine-tune-sample; 0: all)."),
    fine_tune_epochs: int = typer.Option(TrainConfig.fine_tune_epochs, help="Fine-tuning epochs (cxr-train --fine-tune-epochs)."),
) -> None:
    from cxr.core.datasets import scan_roots
    from cxr.export.onnx_export import export_onnx
    from cxr.runtime.predictor import Predictor
    from cxr.train.trainer import train

    roots = {name: SHARED / name for name in COLLECTIONS}
    # Each collection's files by class, mapped and spelt as the models' classes are.
    labelled = dict(zip(COLLECTIONS, scan_roots(list(roots.values()), (), CLASS_MAP)))
    nlm = roots["NLM-tuberculosis-subset"]
    test: dict[tuple[str, str], list[Score]] = {}
    validation: dict[str, list[float]] = {}
    lowest_validation: dict[str, list[float]] = {}  # the trainer's own, of each collection trained on
    lungs: dict[str, list[float]] = {}
    gate: dict[str, list[float]] = {}
    for run in runs:
        trained_on = [root for name, root in roots.items() if name != run]
        for seed in seeds:
            with tempfile.TemporaryDirectory() as folder:
                out = Path(folder)
                started = time.perf_counter()
                config = TrainConfig(data=tuple(trained_on), out=out, weights=weights, seed=seed, class_map=mapped_here(trained_on), lung_prior=None if lung_prior else False, fine_tune=fine_tune, precision=precision, fine_tune_sample=fine_tune_sample, fine_tune_epochs=fine_tune_epochs)
                result = train(config)
                lowest_validation.setdefault(run, []).append(min(splits["val"].accuracy for splits in result.sources.values()))
                predictor = Predictor(export_onnx(result.model_path, out / "model.onnx").path)
                tested = COLLECTIONS if run == EVERY else [run]
                for name in tested:
                    test.setdefault((run, name), []).append(scored(predictor, labelled[name].test))
                if run != EVERY:
                    validation.setdefault(run, []).append(scored(predictor, labelled[run].train).accuracy)
                share, flagged = lungs_and_gate(predictor, nlm)
                lungs.setdefault(run, []).append(share)
                gate.setdefault(run, []).append(flagged)
            print(
                f"{run} seed {seed} ({time.perf_counter() - started:.0f} s): "
                + "; ".join(f"{n} {test[(run, n)][-1]}" for n in tested)
                + (f"; validation {validation[run][-1]:.3f}" if run != EVERY else "")
                + f"; lowest collection's validation {lowest_validation[run][-1]:.3f}"
                + f"; evidence on lungs {share:.2f}; Tuberculosis flagged {flagged:.2f}",
                file=sys.stderr,
                flush=True,
            )

    def cell(values: list[float | None]) -> str:
        kept = [v for v in values if v is not None]
        return f"{statistics.mean(kept):.3f} ({min(kept):.3f})" if kept else "-"

    recipe = "the lung prior wherever a training film has a mask (so none without NLM)" if lung_prior else "no lung prior"
    tuned = f"{fine_tune} VGG16 block(s) fine-tuned" if fine_tune else "the head alone on frozen features"
    if fine_tune:
        tuned += f", {fine_tune_epochs} epochs" + (f" of {fine_tune_sample} images drawn balanced" if fine_tune_sample else "")
    print(f"Default recipe, {recipe}, {tuned}, seeds {seeds}; each model exported to ONNX and read by the runtime.\n")
    print("| tested on | trained on all: accuracy | Normal recall | left out: accuracy | Normal recall | left out: validation accuracy |")
    print("|---|---|---|---|---|---|")
    for name in COLLECTIONS:
        every, out = test.get((EVERY, name), []), test.get((name, name), [])
        print(
            f"| {name} | {cell([s.accuracy for s in every])} | {cell([s.normal_recall for s in every])} | "
            f"{cell([s.accuracy for s in out])} | {cell([s.normal_recall for s in out])} | {cell(validation.get(name, []))} |"
        )
    if (EVERY, COLLECTIONS[0]) in test:
        print("\n| trained on all, tested on | accuracy | recall per class | ECE after scaling | ECE by chance alone | flagged by the gate |")
        print("|---|---|---|---|---|---|")
        for name in COLLECTIONS:
            scores = test[(EVERY, name)]
            recalls = ", ".join(f"{c} {cell([s.recall[c] for s in scores])}" for c in scores[0].recall)
            print(f"| {name} | {cell([s.accuracy for s in scores])} | {recalls} | {cell([s.ece for s in scores])} | {cell([s.ece_by_chance for s in scores])} | {cell([s.flagged for s in scores])} |")
    held = [statistics.mean(s.accuracy for s in test[(name, name)]) for name in runs if name != EVERY]
    if held:
        print(f"\nMean held-out test accuracy: {statistics.mean(held):.3f}")
    print("\n| trained on | lowest collection's validation accuracy | evidence on the lungs (NLM test Normal films) | Tuberculosis films flagged |")
    print("|---|---|---|---|")
    for run in runs:
        print(f"| {'all' if run == EVERY else 'all but ' + run} | {cell(lowest_validation[run])} | {cell(lungs[run])} | {cell(gate[run])} |")


if __name__ == "__main__":
    typer.run(main)

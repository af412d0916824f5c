"""Does a model hold up on a collection it never saw? Leave one collection out: for each collection,
train on all the others and test on it; and train on all of them, test on each.

    python benchmarks/generalization.py --weights PATH [--seeds 0 --seeds 1 ...] [--no-lung-prior] [--no-corrections] [--fine-tune-sample N] [--runs all --runs NAME ...] [--keep DIR]

Each model is trained with the default recipe (``--lung-prior`` as given), exported to ONNX and read
by the runtime's Predictor, as a user would. A held-out collection's train split is never trained
on, so it is that model's leave-one-collection-out validation set (what a recipe is chosen on when
the collection to serve is unseen; Gulrajani & Lopez-Paz 2020); its test split is what is reported.
Prints Markdown tables: accuracy, Normal recall and the shares of pneumonia films called Covid and of
Covid films called pneumonia, mean (min) over seeds, per collection trained on and held out (and
Covid19-dataset's test split with its corrected labels); for the model trained on all, each test
split's recall per class, calibration and flagged share; the evidence on the lungs of the test Normal
films of each collection with masks, and what the Tuberculosis films are called and how many the
gate flags.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import typer

os.environ.setdefault("CXR_QUIET", "1")

from cxr.train.config import TrainConfig  # noqa: E402  (no TensorFlow behind it)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
COLLECTIONS = ["Covid19-dataset", "Covid19-radiography-subset", "Pediatric-pneumonia-subset", "NLM-tuberculosis-subset", "COVID-QU-Ex-subset"]
# As the README's first command: bacterial films and adults' non-COVID infections are pneumonia;
# tuberculosis is no class of the model.
CLASS_MAP = (("Bacterial Pneumonia", "Viral Pneumonia"), ("Tuberculosis", ""), ("COVID-19", "Covid"), ("Non-COVID", "Viral Pneumonia"))
CORRECTIONS = (ROOT / "corrections" / "Covid19-dataset.csv",)
PNEUMONIA = "Viral Pneumonia"  # the class of pneumonia that is not COVID-19
UNSEEN = "Tuberculosis"  # a disease the model has no class for: how often does the gate flag it?
EVERY = "all"


@dataclass(frozen=True)
class Score:
    accuracy: float
    recall: dict[str, float]  # per class the split has
    ece: float  # expected calibration error of the model file's (temperature-scaled) probabilities
    ece_by_chance: float  # a perfectly calibrated model's ECE with these probabilities on as many films
    flagged: float  # share of the split the gate calls unlike the training films
    pneumonia_as_covid: float | None  # share of the pneumonia films called Covid (None: the split has none)
    covid_as_pneumonia: float | None  # share of the Covid films called pneumonia

    def __str__(self) -> str:
        recall = ", ".join(f"{name} {value:.2f}" for name, value in self.recall.items())
        shares = "".join(f", {what} {value:.2f}" for what, value in (("pneumonia as Covid", self.pneumonia_as_covid), ("Covid as pneumonia", self.covid_as_pneumonia)) if value is not None)
        return f"accuracy {self.accuracy:.3f} (recall {recall}{shares}), ECE {self.ece:.3f}, flagged {self.flagged:.3f}"

    @property
    def normal_recall(self) -> float | None:  # None where the split has no Normal film
        return self.recall.get("Normal")


def mapped_here(roots: list[Path]) -> tuple[tuple[str, str], ...]:
    """CLASS_MAP's pairs whose folder one of ``roots`` has (cxr-train refuses a map naming no folder)."""
    return tuple(pair for pair in CLASS_MAP if any((root / "train" / pair[0]).is_dir() for root in roots))


def recipe_config(
    trained_on: list[Path], out: Path, weights: str, seed: int, corrections: tuple[Path, ...] = CORRECTIONS, lung_prior: bool = True,
    fine_tune_sample: int = TrainConfig.fine_tune_sample,
) -> TrainConfig:
    """The README's default trained on ``trained_on`` (the prior where a film has a mask, or never)."""
    return TrainConfig(
        data=tuple(trained_on), out=out, weights=weights, seed=seed, class_map=mapped_here(trained_on),
        corrections=corrections, lung_prior=None if lung_prior else False, fine_tune_sample=fine_tune_sample,
    )


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
    index = {name.casefold(): i for i, name in enumerate(predictor.info.class_names)}  # "COVID" without Covid19-dataset
    called = probabilities.argmax(axis=1)

    def share_called(true: str, as_class: str) -> float | None:
        mine = labels == index[true.casefold()]
        return float(np.mean(called[mine] == index[as_class.casefold()])) if mine.any() else None

    return Score(
        float(right.mean()), recall, honesty.ece, honesty.ece_by_chance, statistics.mean(flagged),
        share_called(PNEUMONIA, "Covid"), share_called("Covid", PNEUMONIA),
    )


def lungs(predictor, root: Path) -> float:
    """The mean share of the predicted class's positive evidence on the lungs of a collection's test
    Normal films, each with its own mask."""
    from cxr.core.datasets import class_folders
    from cxr.eval.lungs import LungEvidence

    evidence = LungEvidence()
    for prediction in predictor.predict_files(class_folders(root / "test")["Normal"], heatmaps="predicted"):
        evidence.add(root.name, "Normal", prediction)
    return evidence.shares()[0].evidence_on_lungs


def unseen_disease(predictor, root: Path) -> tuple[dict[str, float], float]:
    """On the NLM test split's Tuberculosis films (no class of the model): the share called each
    class, and the share the gate flags."""
    from cxr.core.datasets import class_folders

    said = list(predictor.predict_files(class_folders(root / "test")[UNSEEN]))
    called = {name: statistics.mean(p.label.casefold() == name.casefold() for p in said) for name in ("Covid", "Normal", PNEUMONIA)}
    return called, statistics.mean(not p.in_distribution for p in said)


def corrected_files(files: dict[str, list[Path]], class_names: list[str]) -> dict[str, list[Path]]:
    """A split's files by class after CORRECTIONS (dropped films left out, relabelled ones moved)."""
    from cxr.core.corrections import corrected_files as corrected, read_corrections
    from cxr.core.datasets import labelled_files

    fixed: dict[str, list[Path]] = {name: [] for name in class_names}
    for path, label in corrected(labelled_files(files, class_names), read_corrections(CORRECTIONS, class_names), class_names):
        fixed[class_names[label]].append(path)
    return {name: found for name, found in fixed.items() if found}


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    seeds: list[int] = typer.Option([0, 1, 2, 3, 4], help="Seeds (repeat)."),
    lung_prior: bool = typer.Option(True, help="The default: the lung prior wherever some training film has a mask; --no-lung-prior: never."),
    runs: list[str] = typer.Option([EVERY, *COLLECTIONS], help=f"'{EVERY}' (train on every collection) and the collections to leave out in turn (repeat)."),
    corrections: str = typer.Option(str(CORRECTIONS[0].relative_to(ROOT)), help="Label corrections to train with, as the README's default does ('' for none; relative to the project)."),
    fine_tune_sample: int = typer.Option(TrainConfig.fine_tune_sample, help="Images per fine-tuning epoch, a balanced draw (cxr-train --fine-tune-sample; 0: all)."),
    keep: Path | None = typer.Option(None, help="Keep each exported model here as RUN-seedN.onnx (benchmarks/adapt.py reads them)."),
) -> None:
    from cxr.core.datasets import scan_roots
    from cxr.export.onnx_export import export_onnx
    from cxr.runtime.predictor import Predictor
    from cxr.train.trainer import train

    roots = {name: SHARED / name for name in COLLECTIONS}
    # Each collection's files by class, mapped and spelt as the models' classes are.
    labelled = {name: data.test for name, data in zip(COLLECTIONS, scan_roots(list(roots.values()), (), CLASS_MAP))}
    validation_files = {name: data.train for name, data in zip(COLLECTIONS, scan_roots(list(roots.values()), (), CLASS_MAP))}
    fixed = f"{COLLECTIONS[0]}, corrected labels"
    labelled[fixed] = corrected_files(labelled[COLLECTIONS[0]], ["Covid", "Normal", PNEUMONIA])
    test: dict[tuple[str, str], list[Score]] = {}
    validation: dict[str, list[float]] = {}
    lowest_validation: dict[str, list[float]] = {}  # the trainer's own, of each collection trained on
    evidence: dict[tuple[str, str], list[float]] = {}
    tuberculosis: dict[str, list[tuple[dict[str, float], float]]] = {}
    masked = [name for name in COLLECTIONS if (roots[name] / "test" / "Normal" / "masks").is_dir()]
    for run in runs:
        trained_on = [root for name, root in roots.items() if name != run]
        for seed in seeds:
            with tempfile.TemporaryDirectory() as folder:
                out = Path(folder)
                started = time.perf_counter()
                config = recipe_config(trained_on, out, weights, seed, (ROOT / corrections,) if corrections else (), lung_prior, fine_tune_sample)
                result = train(config)
                lowest_validation.setdefault(run, []).append(min(splits["val"].accuracy for splits in result.sources.values()))
                exported = export_onnx(result.model_path, out / "model.onnx").path
                if keep:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(exported, keep / f"{run}-seed{seed}.onnx")
                predictor = Predictor(exported)
                tested = [*COLLECTIONS, fixed] if run == EVERY else [run] + ([fixed] if run == COLLECTIONS[0] else [])
                for name in tested:
                    test.setdefault((run, name), []).append(scored(predictor, labelled[name]))
                if run != EVERY:
                    validation.setdefault(run, []).append(scored(predictor, validation_files[run]).accuracy)
                for name in masked:
                    evidence.setdefault((run, name), []).append(lungs(predictor, roots[name]))
                tuberculosis.setdefault(run, []).append(unseen_disease(predictor, roots["NLM-tuberculosis-subset"]))
            print(
                f"{run} seed {seed} ({time.perf_counter() - started:.0f} s): "
                + "; ".join(f"{n} {test[(run, n)][-1]}" for n in tested)
                + (f"; validation {validation[run][-1]:.3f}" if run != EVERY else "")
                + "; validation " + ", ".join(f"{name} {splits['val'].accuracy:.3f}" for name, splits in result.sources.items())
                + "".join(f"; evidence on lungs ({name}) {evidence[(run, name)][-1]:.2f}" for name in masked)
                + f"; Tuberculosis called {tuberculosis[run][-1][0]}, flagged {tuberculosis[run][-1][1]:.2f}",
                file=sys.stderr,
                flush=True,
            )
    tables(runs, seeds, lung_prior, corrections, test, validation, lowest_validation, evidence, tuberculosis, [*COLLECTIONS, fixed])


def cell(values: list[float | None]) -> str:
    kept = [v for v in values if v is not None]
    return f"{statistics.mean(kept):.3f} ({min(kept):.3f})" if kept else "-"


def tables(runs, seeds, lung_prior, corrections, test, validation, lowest_validation, evidence, tuberculosis, rows) -> None:
    recipe = "the lung prior wherever a training film has a mask" if lung_prior else "no lung prior"
    fixes = corrections or "the source's labels"
    print(f"Default recipe, {recipe}, trained with {fixes}, seeds {seeds}; each model exported to ONNX and read by the runtime; mean (min).\n")
    print("| tested on | trained on all: accuracy | Normal recall | pneumonia called Covid | Covid called pneumonia | left out: accuracy | Normal recall | pneumonia called Covid | Covid called pneumonia | left out: validation accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in rows:
        every = test.get((EVERY, name), [])
        out = test.get((name.split(",")[0], name), [])  # "Covid19-dataset, corrected labels" is held out with Covid19-dataset
        print(
            f"| {name} | {cell([s.accuracy for s in every])} | {cell([s.normal_recall for s in every])} | "
            f"{cell([s.pneumonia_as_covid for s in every])} | {cell([s.covid_as_pneumonia for s in every])} | "
            f"{cell([s.accuracy for s in out])} | {cell([s.normal_recall for s in out])} | "
            f"{cell([s.pneumonia_as_covid for s in out])} | {cell([s.covid_as_pneumonia for s in out])} | {cell(validation.get(name, []))} |"
        )
    if (EVERY, COLLECTIONS[0]) in test:
        print("\n| trained on all, tested on | accuracy | recall per class | ECE after scaling | ECE by chance alone | flagged by the gate |")
        print("|---|---|---|---|---|---|")
        for name in rows:
            scores = test[(EVERY, name)]
            recalls = ", ".join(f"{c} {cell([s.recall[c] for s in scores])}" for c in scores[0].recall)
            print(f"| {name} | {cell([s.accuracy for s in scores])} | {recalls} | {cell([s.ece for s in scores])} | {cell([s.ece_by_chance for s in scores])} | {cell([s.flagged for s in scores])} |")
    held = [statistics.mean(s.accuracy for s in test[(name, name)]) for name in runs if name != EVERY]
    if held:
        print(f"\nMean held-out test accuracy: {statistics.mean(held):.3f}")
    masked = sorted({name for _, name in evidence})
    print("\n| trained on | lowest collection's validation accuracy | " + " | ".join(f"evidence on the lungs ({name} test Normal)" for name in masked) + " | Tuberculosis films called Covid / Normal / pneumonia | flagged |")
    print("|---|---|" + "---|" * len(masked) + "---|---|")
    for run in runs:
        called = " / ".join(cell([c[name] for c, _ in tuberculosis[run]]) for name in ("Covid", "Normal", PNEUMONIA))
        lung_cells = " | ".join(cell(evidence[(run, name)]) for name in masked)
        print(f"| {'all' if run == EVERY else 'all but ' + run} | {cell(lowest_validation[run])} | {lung_cells} | {called} | {cell([f for _, f in tuberculosis[run]])} |")


if __name__ == "__main__":
    typer.run(main)

"""``cxr-eval``'s work: run an exported model over a labelled set, write metrics, figures and reports."""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from cxr.core.calibration import with_temperature
from cxr.core.corrections import Correction, correct, read_corrections
from cxr.core.datasets import class_folders, file_digests, files_under, labelled_files, mapped_folders, only_classes, open_sources
from cxr.core.errors import CxrError, DatasetError, ModelError
from cxr.core.figures import (
    Panel,
    Reliability,
    SplitSummary,
    plot_confusion,
    plot_dataset,
    plot_gallery,
    plot_ood_scores,
    plot_reliability,
)
from cxr.core.files import atomic_path, write_json, write_text
from cxr.core.progress import progress
from cxr.runtime.imaging import read_rgb
from cxr.runtime.metadata import ModelInfo
from cxr.runtime.predictor import Failure, Prediction, Predictor

from .card import correction_table, lung_lines, ood_lines, source_table, trust_table, write_model_card
from .looks import MeanMap, MeanMaps
from .lungs import LungEvidence, LungShare
from .metrics import Metrics, compute_metrics
from .results import Corrected, EvalResult, Mistake, OodCheck

SPLIT_NAMES = ("train", "val", "validation", "test")
CORRECT_PER_CLASS = 3  # correct predictions drawn with their heat maps, per class

log = logging.getLogger(__name__)


def splits_of(data: Path) -> dict[str, Path]:
    """``{split: folder}`` for a root with train/test folders, else the folder itself as one split."""
    if not data.is_dir():
        raise DatasetError(f"{data}: no such data folder")
    named = {name: data / name for name in SPLIT_NAMES if (data / name).is_dir()}
    return named or {data.name: data}


def evaluation_split(data: Path) -> Path:
    """The test split of a root with splits, or a folder-per-class set itself; never training images."""
    splits = splits_of(data)
    if set(splits) == {data.name}:
        return data
    if "test" not in splits:
        raise DatasetError(
            f"{data} has {', '.join(sorted(splits))} but no test split: evaluating images the model "
            f"was trained on would overstate it (pass --data {data}/{next(iter(splits))} to do so anyway)"
        )
    return splits["test"]


def card_path(model: Path) -> Path:
    """The model card beside the model, named after it: model.onnx -> MODEL_CARD.md, any other
    (model.int8.onnx) -> MODEL_CARD.<its stem>.md, so evaluating one model never overwrites another's."""
    return model.with_name("MODEL_CARD.md" if model.stem == "model" else f"MODEL_CARD.{model.stem}.md")


def describe_dataset(sources: dict[str, Path], out: Path) -> Path:
    """Draw the data set figure (counts, shares, image sizes per label and split; with several
    sources, per source and split) to out/dataset.png. Class folders are matched case aside.

    ``sources`` maps each source's name to its local root (``open_sources``)."""
    summaries = []
    spelling: dict[str, str] = {}  # the first spelling met names a class
    for source, root in sources.items():
        for split, folder in splits_of(root).items():
            files: dict[str, list[Path]] = {}
            for name, paths in class_folders(folder).items():
                files[spelling.setdefault(name.casefold(), name)] = paths
            summaries.append(
                SplitSummary(
                    name=split if len(sources) == 1 else f"{source}/{split}",
                    counts={name: len(paths) for name, paths in files.items()},
                    sizes={name: [s for s in map(_image_size, paths) if s] for name, paths in files.items()},
                )
            )
    if not spelling or not any(sum(s.counts.values()) for s in summaries):
        raise DatasetError(f"{', '.join(map(str, sources.values()))}: no class folders with images")
    target = out / "dataset.png"
    plot_dataset(summaries, sorted(spelling.values()), target)
    return target


def evaluate(
    roots: list[Path],
    model: Path,
    out: Path,
    classes: tuple[str, ...] = (),
    ood: Path | None = None,
    class_map: tuple[tuple[str, str], ...] = (),
    corrections: tuple[Path, ...] = (),
) -> EvalResult:
    """Evaluate ``model`` on each data root (its test split if it has one; only ``classes`` when
    given), each on its own and all together, and write everything to ``out``. Class folders are
    renamed or left out as the model's training did (its recorded class map), then by ``class_map``.
    With ``ood``, a folder of images that are not like the training images: how well the gate flags
    them. With ``corrections`` (core/corrections.py), metrics with the corrected labels as well."""
    predictor = Predictor(model)
    info = predictor.info
    fixes = read_corrections(corrections, info.class_names)
    if ood is not None and info.ood is None:
        raise ModelError(f"{model}: this model has no out-of-distribution score; export it again with cxr-export")
    if ood is not None and not ood.is_dir():
        raise DatasetError(f"--ood {ood}: no such folder")
    names = info.class_names
    local = open_sources(roots)
    folders = [evaluation_split(root) for root in local.values()]
    sourced = _films(local, folders, info, classes, class_map)
    items = [item for _, item in sourced]
    true_of = {str(path): names[label] for path, label in items}
    source_of = {str(path): source for source, (path, _) in sourced}
    run = _predict_all(predictor, items, true_of, source_of)
    if not run.predictions:
        raise DatasetError(f"{', '.join(map(str, folders))}: no readable images")
    predictions, skipped = run.predictions, run.skipped
    metrics = _metrics(predictions, true_of, info)
    by_source = {source: [p for p in predictions if source_of[p.file] == source] for source in local}
    sources = {s: _metrics(ps, true_of, info) for s, ps in by_source.items() if ps} if len(local) > 1 else {}
    check = _check_ood(predictor, ood, predictions) if ood is not None else None
    mistakes = [Mistake(p.file, true_of[p.file], p.label, p.probabilities) for p in predictions if p.label != true_of[p.file]]
    mean_maps = run.means.means(names)
    lungs = run.lungs.shares()
    corrected = _corrected(predictions, items, source_of, fixes, info, corrections) if corrections else None

    written = [describe_dataset(local, out), *_figures(model, out, metrics, run, by_source, true_of, mean_maps, check, info)]
    record = {
        "model": str(model),
        "data": [str(folder) for folder in folders],
        "metrics": asdict(metrics),
        "sources": {source: asdict(m) for source, m in sources.items()},
        "misclassified": [asdict(m) for m in mistakes],
        "ood": asdict(check) if check else None,
        "evidence_on_lungs": [asdict(row) for row in lungs],
        "skipped": skipped,
        "corrected": asdict(corrected) if corrected else None,
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out / "metrics.json", record)
    _write_report(out / "report.md", model, folders, metrics, sources, mistakes, [p.name for p in written], check, lungs, corrected)
    card = write_model_card(card_path(model), info, metrics, folders, mean_maps, sources, check, lungs)
    written += [out / "metrics.json", out / "report.md", card]
    return EvalResult(folders, metrics, sources, mistakes, skipped, written, check, lungs, corrected)


def _films(
    local: dict[str, Path], folders: list[Path], info: ModelInfo, classes: tuple[str, ...], class_map: tuple[tuple[str, str], ...]
) -> list[tuple[str, tuple[Path, int]]]:
    """Every film to evaluate, with its collection: ``(source, (file, class index))``, folders renamed
    as the model's training did (a later pair of ``class_map`` wins), then only ``classes``."""
    found = [class_folders(folder) for folder in folders]
    spelt = {name.casefold() for files in found for name in files}
    for folder, _ in class_map:
        if folder.casefold() not in spelt:
            raise DatasetError(f"--class-map {folder!r}: no class folder of that name in {', '.join(map(str, folders))}")
    renames = info.class_map + class_map
    return [
        (source, item)
        for source, files in zip(local, found)
        for item in labelled_files(only_classes(mapped_folders(files, renames), classes), info.class_names)
    ]


def _figures(model: Path, out: Path, metrics: Metrics, run, by_source: dict[str, list[Prediction]], true_of: dict[str, str], mean_maps, check: OodCheck | None, info: ModelInfo) -> list[Path]:
    """The PNGs: the training curves (cxr-train drew them; copied, not redrawn), the confusion
    matrix, heat maps, reliability and the gate's scores; the files written."""
    written = []
    curves = model.parent / "curves.png"
    if curves.is_file():
        with atomic_path(out / "curves.png") as tmp:
            shutil.copyfile(curves, tmp)
        written.append(out / "curves.png")
    plot_confusion(metrics.confusion, info.class_names, out / "confusion.png")
    written += [out / "confusion.png", *_draw_heatmaps(run.shown, true_of, mean_maps, out)]
    predictions = run.predictions
    if info.calibration is not None:
        groups = {**by_source, "all": predictions} if len(by_source) > 1 else {"all": predictions}
        plot_reliability([_reliability(name, ps, true_of, info) for name, ps in groups.items() if ps], out / "reliability.png")
        written.append(out / "reliability.png")
    if check is not None:
        plot_ood_scores(
            {"evaluated X-rays": _scores(predictions), f"--ood {Path(check.folder).name}": np.array(list(check.scores.values()))},
            check.threshold,
            out / "ood_scores.png",
        )
        written.append(out / "ood_scores.png")
    return written


def _corrected(
    predictions: list[Prediction],
    items: list[tuple[Path, int]],
    source_of: dict[str, str],
    fixes: list[Correction],
    info: ModelInfo,
    files: tuple[Path, ...],
) -> Corrected:
    """The predictions scored against corrected labels: dropped films left out, relabelled ones
    counted as their new class."""
    paths = [path for path, _ in items]
    done = correct(file_digests(paths), [label for _, label in items], [source_of[str(p)] for p in paths], fixes, info.class_names, files)
    true_of = {str(paths[i]): info.class_names[label] for i, label in zip(done.keep, done.labels)}
    kept = [p for p in predictions if p.file in true_of]
    by_source = {source: [p for p in kept if source_of[p.file] == source] for source in dict.fromkeys(source_of.values())}
    sources = {s: _metrics(ps, true_of, info) for s, ps in by_source.items() if ps} if len(by_source) > 1 else {}
    return Corrected(_metrics(kept, true_of, info), sources, done.applied)


def _labelled(predictions: list[Prediction], true_of: dict[str, str], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([names.index(true_of[p.file]) for p in predictions])
    return labels, np.array([[p.probabilities[n] for n in names] for p in predictions])


def _metrics(predictions: list[Prediction], true_of: dict[str, str], info: ModelInfo) -> Metrics:
    labels, probabilities = _labelled(predictions, true_of, info.class_names)
    temperature = info.calibration.temperature if info.calibration else None
    flagged = np.array([p.in_distribution is False for p in predictions]) if info.ood else None
    return compute_metrics(labels, probabilities, info.class_names, temperature, flagged)


def _reliability(name: str, predictions: list[Prediction], true_of: dict[str, str], info: ModelInfo) -> Reliability:
    labels, probabilities = _labelled(predictions, true_of, info.class_names)
    assert info.calibration is not None  # drawn only for calibrated models
    before = with_temperature(probabilities, 1 / info.calibration.temperature)
    return Reliability(name, labels, {"before scaling": before, f"after (T = {info.calibration.temperature:.2f})": probabilities})


def _scores(predictions: list[Prediction]) -> np.ndarray:
    return np.array([p.ood_score for p in predictions], dtype=np.float64)


def _check_ood(predictor: Predictor, folder: Path, evaluated: list[Prediction]) -> OodCheck:
    """Predict every image under ``folder`` and compare its scores with the evaluated images'."""
    assert predictor.info.ood is not None  # checked before any work
    files = files_under(folder)
    outcomes = list(progress(predictor.predict_files(files), "Scoring the --ood images", total=len(files)))
    scored = [o for o in outcomes if isinstance(o, Prediction)]
    if not scored:
        raise DatasetError(f"--ood {folder}: no readable images")
    theirs, ours = _scores(scored), _scores(evaluated)
    outside = np.concatenate([np.ones(len(theirs), bool), np.zeros(len(ours), bool)])
    return OodCheck(
        folder=str(folder),
        scores={p.file: float(p.ood_score) for p in scored},
        refused=[o.error for o in outcomes if isinstance(o, Failure)],
        flagged=float(np.mean([p.in_distribution is False for p in scored])),
        roc_auc=float(roc_auc_score(outside, np.concatenate([theirs, ours]))),
        threshold=predictor.info.ood.threshold,
    )


@dataclass
class _Run:
    predictions: list[Prediction]  # without their heat maps
    skipped: list[str]
    shown: list[Prediction]  # with their maps: every mistake, and the first few right per class
    means: MeanMaps
    lungs: LungEvidence


def _predict_all(predictor: Predictor, items: list[tuple[Path, int]], true_of: dict[str, str], source_of: dict[str, str]) -> _Run:
    """Predict every file with its maps, keeping the maps only of the predictions to be drawn."""
    run = _Run([], [], [], MeanMaps(), LungEvidence())
    right_shown: Counter[str] = Counter()
    outcomes = predictor.predict_files((path for path, _ in items), heatmaps="all")
    for outcome in progress(outcomes, "Evaluating", total=len(items)):
        if isinstance(outcome, Failure):
            log.warning("skipped %s", outcome.error)
            run.skipped.append(outcome.error)
            continue
        true = true_of[outcome.file]
        run.means.add(true, outcome.heatmaps)
        run.lungs.add(source_of[outcome.file], true, outcome)
        if outcome.label != true or right_shown[true] < CORRECT_PER_CLASS:
            right_shown[true] += outcome.label == true
            run.shown.append(outcome)
        run.predictions.append(replace(outcome, heatmaps=None))
    return run


def _draw_heatmaps(shown: list[Prediction], true_of: dict[str, str], means: list[MeanMap], out: Path) -> list[Path]:
    wrong = [_panel(p, true_of[p.file]) for p in shown if p.label != true_of[p.file]]
    right = [_panel(p, true_of[p.file]) for p in shown if p.label == true_of[p.file]]
    plot_gallery(wrong, f"Misclassified images ({len(wrong)}), with the predicted class's heat map",
                 out / "misclassified.png", empty="no misclassified images")
    plot_gallery(right, "Correct predictions, a few per class, with their heat maps",
                 out / "correct.png", empty="no correct predictions", columns=CORRECT_PER_CLASS)
    plot_gallery([_mean_panel(m) for m in means], "Where the model looks: each class's mean heat map on its own images",
                 out / "mean_maps.png")
    return [out / "misclassified.png", out / "correct.png", out / "mean_maps.png"]


def _panel(prediction: Prediction, true: str) -> Panel:
    caption = f"{Path(prediction.file).name}\ntrue: {true}\npredicted: {prediction.label} ({prediction.probability:.2f})"
    return Panel(prediction.heatmaps.overlay(prediction.label), caption)


def _mean_panel(mean: MeanMap) -> Panel:
    share = mean.edge_share
    where = "" if share is None else f"\n{share:.0%} of it in the outer cells (even spread: {mean.uniform_edge_share:.0%})"
    return Panel(mean.picture(), f"{mean.class_name}: mean of {mean.count} images{where}")


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # not something Pillow reads by itself: DICOM, or unreadable
        try:
            return read_rgb(path).size
        except CxrError:
            return None


def _write_report(
    target: Path,
    model: Path,
    data: list[Path],
    metrics: Metrics,
    sources: dict[str, Metrics],
    mistakes: list[Mistake],
    figures: list[str],
    check: OodCheck | None,
    lungs: list[LungShare],
    corrected: Corrected | None,
) -> None:
    low, high = metrics.accuracy_ci95
    lines = [
        f"# Evaluation of `{model.name}`",
        "",
        f"Data: {', '.join(f'`{folder}`' for folder in data)} ({metrics.count} images). "
        "Research and teaching only, not a diagnosis.",
        "",
        f"**Accuracy {metrics.accuracy:.3f}** (95% bootstrap interval {low:.3f} to {high:.3f}), "
        f"macro-F1 {metrics.macro_f1:.3f}.",
        "",
        *source_table(sources),
        *correction_table(metrics, sources, corrected),
        *trust_table({**sources, "all": metrics} if sources else {"all": metrics}),
        *ood_lines(check, metrics),
        *lung_lines(lungs),
        "| class | precision | recall | F1 | ROC AUC (one-vs-rest) | images |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in metrics.per_class.items():
        auc = "n/a" if m.roc_auc is None else f"{m.roc_auc:.3f}"
        lines.append(f"| {name} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | {auc} | {m.support} |")
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({name})" for name in figures]
    lines += ["", f"## Misclassified ({len(mistakes)})", ""]
    if mistakes:
        lines += ["| file | true | predicted | probability |", "|---|---|---|---|"]
        lines += [f"| `{m.file}` | {m.true} | {m.predicted} | {m.probability:.3f} |" for m in mistakes]
    else:
        lines.append("None.")
    write_text(target, "\n".join(lines) + "\n")

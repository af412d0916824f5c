"""MODEL_CARD.md: what the model is for, what it learned from, how well it does, where it fails."""

from __future__ import annotations

from pathlib import Path

from cxr.core.files import write_text
from cxr.runtime.metadata import ModelInfo

from .looks import MeanMap
from .lungs import LungShare
from .metrics import Metrics
from .results import Corrected, OodCheck


LIMITATIONS = [
    "In the reference data set (Kaggle 'Covid-19 Image Dataset') the Normal and Viral Pneumonia "
    "patients are children (a pediatric pneumonia collection from Guangzhou) and most Covid patients "
    "adults (public COVID-19 collections): a model can score well by telling age apart instead of "
    "disease. Expect much lower accuracy on adult X-rays from other hospitals.",
    "Heat maps of models trained on that data set without a lung prior put much of the evidence off "
    "the lungs: for Covid on the clavicles and upper mediastinum or below the diaphragm, for Viral "
    "Pneumonia on the lower corners and the lateral chest wall. The lung prior puts about two thirds of "
    "it on the lungs (docs/RESULTS.md); even so, high accuracy does not mean the model reads lung disease.",
    "The test set is small: one image is about 1.5 points of accuracy on 66 images; read the "
    "interval, not the point estimate.",
    "What 'Viral Pneumonia' holds: pneumonia that is not COVID-19. Trained as the README's default, "
    "that is children's pneumonia from one pediatric hospital (bacterial films among them) and adults' "
    "viral, bacterial and other non-COVID infections from COVID-QU-Ex; the name is the reference data "
    "set's. A model trained without COVID-QU-Ex has never seen an adult with pneumonia other than "
    "COVID-19 and calls most of them Covid.",
    "Three classes only: any other finding (tuberculosis, effusion, devices) is forced into one of "
    "them. Tuberculosis films pass the out-of-distribution gate (2-4% of 50 flagged): the gate tells "
    "what is not a chest X-ray, not a disease the model lacks.",
    "Trained on 640x640 re-encoded JPEG/PNG; DICOM input is windowed and stretched to 8 bits, which "
    "may differ from how the training images were made.",
]


def write_model_card(
    target: Path,
    info: ModelInfo,
    metrics: Metrics,
    data: list[Path],
    mean_maps: list[MeanMap],
    sources: dict[str, Metrics] | None = None,
    check: OodCheck | None = None,
    lungs: list[LungShare] | None = None,
) -> Path:
    """Write the card beside the model and return its path."""
    splits = info.metrics.get("splits", {})
    names = info.class_names
    low, high = metrics.accuracy_ci95
    lines = [
        "# Model card: cxr chest X-ray classifier",
        "",
        "## Intended use",
        "Research and teaching: showing how a transfer-learned classifier behaves on chest X-rays. "
        "**Not for diagnosis** or any clinical decision.",
        "",
        "## Model",
        f"- Classes (output order): {', '.join(names)}",
        *[f"- {name} also holds the training data's {', '.join(folders)} films" for name, folders in info.merged_folders.items()],
        f"- Input: {info.input.height}x{info.input.width} RGB, 0-255 pixels; contrast: {info.input.contrast}; "
        f"graph: {info.preprocessing.get('in_graph', 'n/a')}",
        f"- Quantization: {info.quantization}",
        *([f"- {info.adaptation.summary} (cxr-adapt; base model SHA-256 {info.adaptation.base_model[:12]})"] if info.adaptation else []),
        f"- Created: {info.created}; versions: "
        + ", ".join(f"{k} {v}" for k, v in sorted(info.versions.items())),
        "",
        "## Training recipe",
        "| setting | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in info.recipe.items()],
        "",
        "## Data",
        "| split | " + " | ".join(names) + " | total |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for split, values in splits.items():
        counts = [values.get("per_class", {}).get(name, 0) for name in names]
        lines.append(f"| {split} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
    if info.corrections:
        lines += ["", f"Label corrections in training ({', '.join(Path(f).name for f in info.corrections.files)}): {info.corrections.summary()}."]
    lines += [
        "",
        "## Metrics",
        f"On {', '.join(f'`{folder}`' for folder in data)} ({metrics.count} images): accuracy "
        f"**{metrics.accuracy:.3f}** (95% bootstrap interval {low:.3f} to {high:.3f}), macro-F1 {metrics.macro_f1:.3f}.",
        "",
        *source_table(sources or {}),
        "| class | precision | recall | F1 |",
        "|---|---|---|---|",
        *[
            f"| {name} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} |"
            for name, m in metrics.per_class.items()
        ],
        "",
        *reading_lines(info),
        *(lung_lines(lungs) if lungs else _where_it_looks(info, mean_maps)),
        *_when_it_does_not_know(info, {**(sources or {}), "all": metrics}, check),
        "## Known limitations",
        *[f"- {text}" for text in LIMITATIONS],
        "",
    ]
    write_text(target, "\n".join(lines))
    return target


def reading_lines(info: ModelInfo) -> list[str]:
    """How a model with a lung prior reads a film; nothing for one without."""
    if not info.recipe.get("lung_prior"):
        return []
    return [
        "## How it reads a film",
        "Before the classifier reads the last feature map, each cell is multiplied by a lung prior: how "
        "often that cell lies on the lungs in the training films' lung masks, sharpened so that cells "
        "that are lung in only some films count for less. Cells that are rarely lung (neck, shoulders, "
        "belly, corners with burnt-in markers) carry little evidence. The convolutions behind the map "
        "still see the whole film: the prior steers where evidence is read, not what the network sees.",
        "",
    ]


def _where_it_looks(info: ModelInfo, mean_maps: list[MeanMap]) -> list[str]:
    """The card's heat-map section: each class's mean map, and a warning where it sits off the lungs."""
    shares = [(m, m.edge_share) for m in mean_maps if m.edge_share is not None]
    if info.heatmaps is None or not shares:
        return []
    uniform = shares[0][0].uniform_edge_share
    rows, columns = info.heatmaps.grid
    lines = [
        "## Where the model looks",
        f"Heat maps: {info.heatmaps.method}, on a {rows}x{columns} grid (about {info.cell_pixels:.0f} "
        "pixels per cell). Each class's mean map over its own images is in `mean_maps.png` beside the "
        "evaluation report. On a centred film the lungs fill the inner cells; the outer ring holds the "
        "shoulders, neck, abdomen, corners and burnt-in labels, and "
        f"{uniform:.0%} of evidence spread evenly would fall there. The ring is a crude stand-in for "
        "'outside the lungs' (the inner cells still hold the clavicles and the diaphragm): look at the figure.",
        "",
        "| class | images | evidence in the outer cells |",
        "|---|---|---|",
        *[f"| {m.class_name} | {m.count} | {share:.0%} |" for m, share in shares],
        "",
    ]
    outside = [m.class_name for m, share in shares if share > uniform]
    if outside:
        lines += [
            f"**The evidence for {', '.join(outside)} leans outside the lungs**: more of it falls on "
            "the outer cells than an even spread would put there. The model may be reading the patient's "
            "build and age, positioning or the film's labels rather than the lungs; do not trust it on "
            "images that differ in those.",
            "",
        ]
    return lines


def lung_lines(lungs: list[LungShare]) -> list[str]:
    """Where the films have lung masks: how much of the evidence falls on the lungs, per collection
    and class, beside what evidence spread evenly over the image would give."""
    if not lungs:
        return []
    lines = [
        "## Where the evidence lies (lung masks)",
        "Of each film's positive evidence for the class the model gave it (its map upsampled to the "
        "image, as the overlay is), the share on the lungs, by the film's lung mask; beside it the share "
        "of the image the lungs cover, which evidence spread evenly would give.",
        "",
        "| collection | class | films | evidence on the lungs | lungs' share of the image |",
        "|---|---|---|---|---|",
        *[f"| {row.source} | {row.class_name} | {row.films} | {row.evidence_on_lungs:.0%} | {row.lung_area:.0%} |" for row in lungs],
        "",
    ]
    off = [f"{row.source} {row.class_name}" for row in lungs if row.evidence_on_lungs <= row.lung_area]
    if off:
        lines += [
            f"**On {', '.join(off)} the evidence lies on the lungs no more than chance would put it**: the "
            "model is reading something else on these films (build, positioning, the film's labels).",
            "",
        ]
    return lines


# What the gate is for and where it stops, measured in research/HISTORY.md ("Out-of-distribution gate").
GATE_CATCHES = (
    "It catches images whose features are far from every class of the training X-rays: photos, "
    "screenshots, a text page, microscopy, a retina, a CT phantom, noise and patterns (33-34 of 34 "
    "tried with the default model over three seeds), and most chest X-rays uploaded rotated, upside down or photographed on a screen, but only "
    "about half of those uploaded as a negative or as half a film. Images under 64 pixels a side, of "
    "one uniform gray, or not images at all are refused before the model runs."
)
GATE_MISSES = (
    "It does not catch a chest X-ray of another disease (tuberculosis, effusion, bacterial pneumonia), "
    "nor necessarily one from another hospital or of another age group: those look like the training "
    "films, and the model still forces them into one of its classes. Passing the gate means 'looks "
    "like the training images', not 'the answer is right'."
)


def _when_it_does_not_know(info: ModelInfo, groups: dict[str, Metrics], check: OodCheck | None) -> list[str]:
    """The card's calibration and out-of-distribution section."""
    if info.ood is None or info.calibration is None:
        return []
    return [
        "## When it does not know",
        f"- Calibration: {info.calibration.method}; T = {info.calibration.temperature:.3f}.",
        f"- Out-of-distribution gate: the {info.ood.score}. Images scoring above {info.ood.threshold:.4g} "
        f"(at most {1 - info.ood.validation_pass:.1%} of each source's validation images do) are flagged "
        "as unlike the training images, and their class is no answer.",
        f"- {GATE_CATCHES}",
        f"- {GATE_MISSES}",
        "",
        *trust_table(groups),
        *ood_lines(check, groups["all"]),
    ]


def trust_table(groups: dict[str, Metrics]) -> list[str]:
    """Expected calibration error and negative log-likelihood, before and after the temperature, and
    the share the gate flags, per set of images; beside the ECE, what chance alone gives on as many."""
    rows = [(name, m) for name, m in groups.items() if m.uncalibrated is not None and m.flagged is not None]
    if not rows:
        return []
    lines = [
        "| images | count | ECE | ECE by chance alone | ECE before scaling | NLL | NLL before scaling | flagged out of distribution |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {m.count} | {m.confidence.ece:.3f} | {m.confidence.ece_by_chance:.3f} | {m.uncalibrated.ece:.3f} "
            f"| {m.confidence.loss:.3f} | {m.uncalibrated.loss:.3f} | {m.flagged:.1%} |"
        )
    return [
        *lines,
        "",
        "ECE by chance alone: the median ECE of a perfectly calibrated model giving these probabilities on as many "
        "images (labels drawn from the probabilities). On a small set it is large; an ECE near it is as calibrated as "
        "that set can show.",
        "",
    ]


def ood_lines(check: OodCheck | None, evaluated: Metrics) -> list[str]:
    """What ``cxr-eval --ood`` found, against the ``evaluated`` X-rays."""
    if check is None:
        return []
    lines = [
        f"Images that are not like the training X-rays (`{check.folder}`, {len(check.scores)} readable): "
        f"**{check.flagged:.1%} flagged** against {evaluated.flagged:.1%} of the evaluated X-rays; "
        f"ROC AUC of the score between the two {check.roc_auc:.3f}.",
    ]
    if check.refused:
        lines.append(f"{len(check.refused)} more were refused before the model ran (too small, not an image, ...).")
    if check.passed:
        lines.append("Let through: " + ", ".join(f"`{Path(path).name}`" for path in check.passed) + ".")
    return [*lines, ""]


def correction_table(metrics: Metrics, sources: dict[str, Metrics], corrected: Corrected | None) -> list[str]:
    """Accuracy with the source's labels beside accuracy with --corrections, per source and in all."""
    if corrected is None:
        return []
    lines = [
        corrected.applied.summary() + ".",
        "",
        "| data root | images, source's labels | accuracy | images, corrected | accuracy |",
        "|---|---|---|---|---|",
    ]
    pairs = [(name, m, corrected.sources.get(name)) for name, m in sources.items()] + [("all", metrics, corrected.metrics)]
    for name, before, after in pairs:
        fixed = f"{after.count} | {after.accuracy:.3f}" if after else "0 | n/a"
        lines.append(f"| {name} | {before.count} | {before.accuracy:.3f} | {fixed} |")
    return [*lines, ""]


def source_table(sources: dict[str, Metrics]) -> list[str]:
    """Each data root's own accuracy: a total can hide a collection on which the model fails."""
    if not sources:
        return []
    lines = ["| data root | images | accuracy | 95% interval | macro-F1 |", "|---|---|---|---|---|"]
    for name, m in sources.items():
        low, high = m.accuracy_ci95
        lines.append(f"| {name} | {m.count} | {m.accuracy:.3f} | {low:.3f}-{high:.3f} | {m.macro_f1:.3f} |")
    return [*lines, ""]

"""The figures people would rather look at than read: PNG files drawn with matplotlib.

Each is a ``matplotlib.figure.Figure`` drawn and saved once: no pyplot state and no backend switch,
so importing this module changes nothing in a notebook that also plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .files import atomic_path


@dataclass
class SplitSummary:
    """What the data set figure shows of one split: images per class and each image's size."""

    name: str
    counts: dict[str, int]
    sizes: dict[str, list[tuple[int, int]]]  # class -> [(width, height)]


@dataclass
class Panel:
    """One picture of a gallery and the lines under it."""

    image: np.ndarray  # RGB, uint8
    caption: str


def plot_curves(history: dict[str, list[float]], target: Path) -> None:
    """Keras' history (``accuracy``, ``loss`` and their ``val_`` twins) per epoch, and where
    fine-tuning started (``fine_tune_from_epoch``) when it did."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if key in history:
                values = history[key]
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        for epoch in history.get("fine_tune_from_epoch", []):
            ax.axvline(epoch + 0.5, linestyle="--", color="gray", label="fine-tuning starts")
        ax.set_title(metric.capitalize())
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    _save(fig, target)


def plot_dataset(splits: list[SplitSummary], class_names: list[str], target: Path) -> None:
    """Images per label per split (bars, one y axis), label shares (pies), height against width."""
    n = len(splits)
    fig = Figure(figsize=(5 * max(n, 2), 12), layout="constrained")
    grid = fig.add_gridspec(3, n)
    colors = {name: colormaps["tab10"](i) for i, name in enumerate(class_names)}
    first = None
    for col, split in enumerate(splits):
        ax = fig.add_subplot(grid[0, col], sharey=first)
        first = first or ax
        counts = [split.counts.get(name, 0) for name in class_names]
        bars = ax.bar(class_names, counts, color=[colors[c] for c in class_names])
        ax.bar_label(bars)
        ax.set_title(f"{split.name}: {sum(counts)} images")
        ax.set_ylabel("images")
        ax.tick_params(axis="x", labelrotation=15)
        pie = fig.add_subplot(grid[1, col])
        shown = [(name, c) for name, c in zip(class_names, counts) if c]
        pie.pie(
            [c for _, c in shown],
            labels=[name for name, _ in shown],
            colors=[colors[name] for name, _ in shown],
            autopct="%1.0f%%",
        )
        pie.set_title(f"{split.name}: label shares")
    scatter = fig.add_subplot(grid[2, :])
    for name in class_names:
        sizes = [wh for split in splits for wh in split.sizes.get(name, [])]
        if sizes:
            widths, heights = zip(*sizes)
            scatter.scatter(widths, heights, label=name, alpha=0.6, color=colors[name])
    scatter.set_xlabel("width (pixels)")
    scatter.set_ylabel("height (pixels)")
    scatter.set_title("Image sizes by label")
    scatter.legend()
    fig.suptitle("Data set")
    _save(fig, target)


def plot_confusion(confusion: list[list[int]], class_names: list[str], target: Path) -> None:
    """The confusion matrix with counts, and the misclassified (true, predicted) pairs alone."""
    matrix = np.asarray(confusion)
    mistakes = matrix * (1 - np.eye(len(class_names), dtype=int))
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, values, title, cmap in (
        (axes[0], matrix, f"Confusion matrix ({matrix.sum()} images)", "Blues"),
        (axes[1], mistakes, f"Misclassified pairs ({mistakes.sum()} images)", "Reds"),
    ):
        image = ax.imshow(values, cmap=cmap, vmin=0, vmax=max(1, values.max()))
        for (row, col), value in np.ndenumerate(values):
            dark = value > values.max() / 2
            ax.text(col, row, str(value), ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(len(class_names)), class_names, rotation=15)
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, shrink=0.8)
    _save(fig, target)


def plot_gallery(panels: list[Panel], title: str, target: Path, empty: str = "none", columns: int = 4) -> None:
    """Pictures in rows of ``columns``, each with its caption; ``empty`` is shown when there are none."""
    columns = max(1, min(columns, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    fig = Figure(figsize=(3.2 * columns, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        ax.imshow(panel.image)
        ax.set_title(panel.caption, fontsize=9)
    if not panels:
        axes.flat[0].text(0.5, 0.5, empty, ha="center", va="center", fontsize=14)
    fig.suptitle(title)
    _save(fig, target)


@dataclass
class Reliability:
    """One panel of the reliability diagram: a set of labelled images and the model's probabilities
    for them, by name ("before scaling", "after scaling")."""

    name: str
    labels: np.ndarray
    probabilities: dict[str, np.ndarray]  # (N, classes) each


def plot_reliability(panels: list[Reliability], target: Path) -> None:
    """Accuracy against confidence (the top probability) in ECE_BINS equal-width bins, one panel per
    set of images: on the diagonal, a probability of 0.8 is right 80% of the time."""
    from sklearn.calibration import calibration_curve

    from .calibration import ECE_BINS, expected_calibration_error

    fig = Figure(figsize=(5 * len(panels), 5), layout="constrained")
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False).flat, panels):
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
        for name, probabilities in panel.probabilities.items():
            right = probabilities.argmax(axis=1) == panel.labels
            accuracy, confidence = calibration_curve(right, probabilities.max(axis=1), n_bins=ECE_BINS)
            ece = expected_calibration_error(probabilities, panel.labels)
            ax.plot(confidence, accuracy, marker="o", label=f"{name} (ECE {ece:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{panel.name} ({len(panel.labels)} images)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.suptitle("Reliability: how often the top class is right, by how sure the model is")
    _save(fig, target)


def plot_ood_scores(scores: dict[str, np.ndarray], threshold: float, target: Path) -> None:
    """Histograms of out-of-distribution scores per set of images (log scale), and the threshold."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    positive = np.concatenate([values[values > 0] for values in scores.values()] + [np.array([threshold])])
    edges = np.geomspace(positive.min(), positive.max(), 40)
    for name, values in scores.items():
        ax.hist(np.clip(values, edges[0], edges[-1]), bins=edges, alpha=0.6, label=f"{name} ({len(values)})")
    ax.axvline(threshold, color="black", linestyle="--", label="threshold: flagged above")
    ax.set_xscale("log")
    ax.set_xlabel("out-of-distribution score")
    ax.set_ylabel("images")
    ax.legend()
    ax.set_title("Out-of-distribution scores")
    _save(fig, target)


def _save(fig: Figure, target: Path) -> None:
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=100)

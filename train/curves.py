"""The training-curves figure: accuracy and loss per epoch, train and validation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402

from cxr.runtime.files import atomic_path  # noqa: E402


def plot_curves(history: dict[str, list[float]], target: Path) -> None:
    """Draw Keras' history (``accuracy``, ``loss`` and their ``val_`` twins) to a PNG."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if key in history:
                values = history[key]
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_title(metric.capitalize())
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)

"""MODEL_CARD.md: what the model is for, what it learned from, how well it does, where it fails."""

from __future__ import annotations

from pathlib import Path

from cxr.core.files import write_text
from cxr.runtime.metadata import ModelInfo

from .metrics import Metrics

LIMITATIONS = [
    "In the reference data set (Kaggle 'Covid-19 Image Dataset') the Normal and Viral Pneumonia "
    "patients are children (a pediatric pneumonia collection from Guangzhou) and most Covid patients "
    "adults (public COVID-19 collections): a model can score well by telling age apart instead of "
    "disease. Expect much lower accuracy on adult X-rays from other hospitals.",
    "The test set is small: one image is about 1.5 points of accuracy on 66 images; read the "
    "interval, not the point estimate.",
    "Three classes only: any other finding (tuberculosis, effusion, bacterial pneumonia, devices) "
    "is forced into one of them.",
    "Trained on 640x640 re-encoded JPEG/PNG; DICOM input is windowed and stretched to 8 bits, which "
    "may differ from how the training images were made.",
]


def write_model_card(target: Path, info: ModelInfo, metrics: Metrics, data: Path) -> Path:
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
        f"- Input: {info.input.height}x{info.input.width} RGB, 0-255 pixels; contrast: {info.input.contrast}; "
        f"graph: {info.preprocessing.get('in_graph', 'n/a')}",
        f"- Quantization: {info.quantization}",
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
    lines += [
        "",
        "## Metrics",
        f"On `{data}` ({metrics.count} images): accuracy **{metrics.accuracy:.3f}** "
        f"(95% bootstrap interval {low:.3f} to {high:.3f}), macro-F1 {metrics.macro_f1:.3f}.",
        "",
        "| class | precision | recall | F1 |",
        "|---|---|---|---|",
        *[
            f"| {name} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} |"
            for name, m in metrics.per_class.items()
        ],
        "",
        "## Known limitations",
        *[f"- {text}" for text in LIMITATIONS],
        "",
    ]
    write_text(target, "\n".join(lines))
    return target

"""Draw the README's heat-map figure: for each image given, the image as the model read it and every
class's evidence map over it.

    python docs/heatmap_figure.py --model artifacts/model.onnx --out docs/heatmaps.png \\
        ../shared/data/Covid19-dataset/test/Covid/0102.jpeg ../shared/data/Covid19-dataset/test/Normal/0109.jpeg

The true class is the image's folder name.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cxr.core.figures import Panel, plot_gallery
from cxr.runtime.predictor import Predictor


def main(
    images: list[Path],
    model: Path = typer.Option(Path("artifacts/model.onnx")),
    out: Path = typer.Option(Path("docs/heatmaps.png")),
) -> None:
    predictor = Predictor(model)
    names = predictor.info.class_names
    panels = []
    for path in images:
        result = predictor.predict(path, heatmaps="all")
        verdict = "right" if result.label == path.parent.name else "wrong"
        panels.append(
            Panel(result.heatmaps.image, f"{path.name}, true: {path.parent.name}\npredicted: {result.label} "
                                          f"({result.probability:.2f}), {verdict}")
        )
        panels += [
            Panel(result.heatmaps.overlay(name), f"evidence for {name}\n(probability {result.probabilities[name]:.2f})")
            for name in names
        ]
    title = "Heat maps: where the evidence for each class lies (7x7 cells, about 32 pixels each)"
    plot_gallery(panels, title, out, columns=len(names) + 1)
    print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)

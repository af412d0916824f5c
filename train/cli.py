"""``cxr-train``: train the VGG16 transfer model on a folder-per-class data set."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from cxr.runtime.errors import MissingDependencyError, cli_errors

from .config import TrainConfig

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    data: Path = typer.Option(
        Path("data/Covid19-dataset"), help="Data root with train/<class>/* (and optional test/<class>/*)."
    ),
    out: Path = typer.Option(Path("artifacts"), help="Where model.keras and the run record go."),
    weights: str = typer.Option(
        "imagenet",
        envvar="CXR_VGG16_WEIGHTS",
        help="VGG16 base weights: imagenet (Keras download), none, or a local no-top .h5 file.",
    ),
    epochs: int = typer.Option(8, min=1),
    batch_size: int = typer.Option(32, min=1),
    learning_rate: float = typer.Option(1e-3, min=0.0),
    image_size: int = typer.Option(224, min=32, help="Square input side in pixels (VGG16 needs >= 32)."),
    val_split: float = typer.Option(0.15, min=0.0, max=0.9, help="Share of each train class held out for validation."),
    seed: int = typer.Option(0, help="Makes the split, initialisation and shuffling repeatable."),
    strict: bool = typer.Option(False, help="Treat an unreadable image as an error instead of skipping it."),
    fast_path: bool = typer.Option(True, help="Fit the head on features computed once (same result, faster)."),
) -> None:
    """Train the transfer model and write model.keras, metrics, history and curves to --out."""
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    with cli_errors():
        try:
            from .trainer import train
        except ImportError as error:
            raise MissingDependencyError(
                f"cxr-train needs the train extra: pip install 'cxr[train]' ({error})"
            ) from None

        result = train(
            TrainConfig(
                data=data, out=out, weights=weights, epochs=epochs, batch_size=batch_size,
                learning_rate=learning_rate, image_size=image_size, val_split=val_split,
                seed=seed, strict=strict, fast_path=fast_path,
            )
        )
    for name, split in result.splits.items():
        typer.echo(f"{name:<5} accuracy {split.accuracy:.3f}  loss {split.loss:.4f}  ({split.count} images)")
    if result.skipped:
        typer.echo(f"skipped {len(result.skipped)} unreadable files (listed in metrics.json)")
    typer.echo(f"wrote {result.model_path} in {result.seconds['total']:.0f} s")

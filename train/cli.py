"""``cxr-train``: train the VGG16 transfer model on a folder-per-class data set."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

import typer

from cxr.runtime.errors import MissingDependencyError, cli_errors

from .config import TrainConfig

app = typer.Typer(add_completion=False, help=__doc__)


class Preprocess(str, Enum):
    scale = "scale"
    vgg = "vgg"


class Contrast(str, Enum):
    none = "none"
    equalize = "equalize"


class Head(str, Enum):
    flatten = "flatten"
    gap = "gap"


# Option defaults come from TrainConfig, so the CLI and the Python API cannot drift apart.
@app.command()
def main(
    data: Path = typer.Option(
        Path("data/Covid19-dataset"), help="Data root with train/<class>/* (and optional test/<class>/*)."
    ),
    out: Path = typer.Option(TrainConfig.out, help="Where model.keras and the run record go."),
    weights: str = typer.Option(
        TrainConfig.weights,
        envvar="CXR_VGG16_WEIGHTS",
        help="VGG16 base weights: imagenet (Keras download), none, or a local no-top .h5 file.",
    ),
    epochs: int = typer.Option(TrainConfig.epochs, min=1),
    batch_size: int = typer.Option(TrainConfig.batch_size, min=1),
    learning_rate: float = typer.Option(TrainConfig.learning_rate, min=0.0),
    image_size: int = typer.Option(TrainConfig.image_size, min=32, help="Square input side in pixels (VGG16 needs >= 32)."),
    val_split: float = typer.Option(TrainConfig.val_split, min=0.0, max=0.9, help="Share of each train class held out for validation."),
    seed: int = typer.Option(TrainConfig.seed, help="Makes the split, initialisation and shuffling repeatable."),
    strict: bool = typer.Option(TrainConfig.strict, help="Treat an unreadable image as an error instead of skipping it."),
    fast_path: bool = typer.Option(TrainConfig.fast_path, help="Run the frozen layers once per image, not once per epoch (same result, faster)."),
    contrast: Contrast = typer.Option(Contrast(TrainConfig.contrast), help="equalize: spread each resized image's gray levels evenly (histogram equalization), in training and in the runtime alike; none: as decoded."),
    preprocess: Preprocess = typer.Option(Preprocess(TrainConfig.preprocess), help="In-graph input normalisation: scale (/255) or vgg (ImageNet means)."),
    head: Head = typer.Option(Head(TrainConfig.head), help="Classifier head: flatten or gap (global average pooling)."),
    dropout: float = typer.Option(TrainConfig.dropout, min=0.0, max=0.9, help="Dropout before the softmax layer."),
    augment: bool = typer.Option(TrainConfig.augment, help="Random rotation, shift, zoom, brightness, contrast in training only."),
    label_smoothing: float = typer.Option(TrainConfig.label_smoothing, min=0.0, max=0.5),
    class_weights: bool = typer.Option(TrainConfig.class_weights, help="Weight the loss so every class counts equally."),
    early_stopping: int = typer.Option(TrainConfig.early_stopping, min=0, help="Stop after N epochs without a better validation loss; keep the best."),
    fine_tune: int = typer.Option(TrainConfig.fine_tune, min=0, max=5, help="Then unfreeze the last N VGG16 blocks and train on (0, with --contrast none: the reference recipe)."),
    fine_tune_epochs: int = typer.Option(TrainConfig.fine_tune_epochs, min=1),
    fine_tune_learning_rate: float = typer.Option(TrainConfig.fine_tune_learning_rate, min=0.0),
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
                seed=seed, strict=strict, fast_path=fast_path, contrast=contrast.value,
                preprocess=preprocess.value,
                head=head.value, dropout=dropout, augment=augment, label_smoothing=label_smoothing,
                class_weights=class_weights, early_stopping=early_stopping, fine_tune=fine_tune,
                fine_tune_epochs=fine_tune_epochs, fine_tune_learning_rate=fine_tune_learning_rate,
            )
        )
    for name, split in result.splits.items():
        typer.echo(f"{name:<5} accuracy {split.accuracy:.3f}  loss {split.loss:.4f}  ({split.count} images)")
    if result.skipped:
        typer.echo(f"skipped {len(result.skipped)} unreadable files (listed in metrics.json)")
    typer.echo(f"wrote {result.model_path} in {result.seconds['total']:.0f} s")

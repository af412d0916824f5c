"""``cxr-train``: train the VGG16 transfer model on a folder-per-class data set."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cxr.core.cli import ClassMapOption, Command, CorrectionsOption, VersionOption, boundary, extra_imports, new_app, parse_class_map
from cxr.core.corrections import read_corrections
from cxr.core.datasets import model_classes, scan_roots
from cxr.runtime.imaging import Contrast

from .config import REFERENCE_RECIPE, Balance, Distribute, Head, Precision, Preprocess, TrainConfig

if TYPE_CHECKING:  # the trainer imports Keras, which only the command itself waits for
    from .record import SplitMetrics

app = new_app(__doc__)
_DEFAULTS = TrainConfig(data=Path())
_OPTIONS = {f.name for f in fields(TrainConfig)}


# Defaults come from TrainConfig and choices from its Literal types, so the CLI and the Python API
# cannot drift apart; the parameters' names are TrainConfig's fields.
@app.command(cls=Command)
def main(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option(help="Data root: DATA/train/<class>/* and optional DATA/test/<class>/*. Or kaggle:OWNER/NAME (downloaded once with kagglehub). Repeat to train on several: the model's classes are every root's class folders (case aside), after --class-map and --classes.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Where model.keras and the run record go.")] = _DEFAULTS.out,
    classes: Annotated[list[str], typer.Option(help="Train on these class folders only (repeat; matched case aside). Default: all.", show_default=False)] = list(_DEFAULTS.classes),
    class_map: ClassMapOption = [],
    corrections: CorrectionsOption = [],
    weights: Annotated[str, typer.Option(envvar="CXR_VGG16_WEIGHTS", help="VGG16 base weights: imagenet (Keras download), none, or a local no-top .h5 file.")] = _DEFAULTS.weights,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs training the head on the frozen base.")] = _DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per gradient step.")] = _DEFAULTS.batch_size,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Adam's learning rate for the head.")] = _DEFAULTS.learning_rate,
    image_size: Annotated[int, typer.Option(min=32, help="Square input side in pixels (VGG16 needs >= 32).")] = _DEFAULTS.image_size,
    val_split: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of each train class held out for validation.")] = _DEFAULTS.val_split,
    seed: Annotated[int, typer.Option(help="Makes the split, initialisation and shuffling repeatable.")] = _DEFAULTS.seed,
    strict: Annotated[bool, typer.Option(help="Treat an unreadable image as an error instead of skipping it.")] = _DEFAULTS.strict,
    fast_path: Annotated[bool, typer.Option(help="Run the frozen layers once per image, not once per epoch (same result, faster).")] = _DEFAULTS.fast_path,
    cache: Annotated[bool, typer.Option(help="Keep the frozen layers' output on disk (CXR_CACHE, default ~/.cache/cxr/features), keyed by the images' contents, weights, size and contrast, so the next run on the same images skips that pass.")] = _DEFAULTS.cache,
    precision: Annotated[Precision, typer.Option(help="What the frozen layers' features are computed in: bfloat16 (twice as fast on CPUs with AVX-512 BF16 or AMX, emulated and slow elsewhere), float32, or auto (bfloat16 where TensorFlow runs on such a CPU). The layers that train and the saved model are float32 either way.")] = _DEFAULTS.precision,
    near_copies: Annotated[bool, typer.Option(help="Find validation and test images that are near-copies of a train image in any --data (16x16 mean hashes, plain and equalized): those in validation train instead, those in test are reported.")] = _DEFAULTS.near_copies,
    contrast: Annotated[Contrast, typer.Option(help="equalize: spread each resized image's gray levels evenly, in training and in the runtime alike; none: as decoded.")] = _DEFAULTS.contrast,
    preprocess: Annotated[Preprocess, typer.Option(help="In-graph input normalisation: scale (/255) or vgg (ImageNet means).")] = _DEFAULTS.preprocess,
    head: Annotated[Head, typer.Option(help="Classifier head: flatten or gap (global average pooling).")] = _DEFAULTS.head,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9, help="Dropout before the softmax layer.")] = _DEFAULTS.dropout,
    augment: Annotated[bool, typer.Option(help="Random rotation, shift, zoom, brightness, contrast in training only.")] = _DEFAULTS.augment,
    lung_prior: Annotated[Optional[bool], typer.Option(help="Multiply the last feature map by how often each cell is lung in the training films that have masks (CLASS/images beside CLASS/masks), so evidence off the lungs counts for little. Default: when some training film has a mask.", show_default=False)] = _DEFAULTS.lung_prior,
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.5, help="Share of each target spread over the other classes.")] = _DEFAULTS.label_smoothing,
    balance: Annotated[Balance, typer.Option(help="Weight the loss so that every class (class), or every class of every --data (source-class), counts equally; none: every image alike.")] = _DEFAULTS.balance,
    early_stopping: Annotated[int, typer.Option(min=0, help="Stop after N epochs without a better validation loss; keep the best (0: off).")] = _DEFAULTS.early_stopping,
    fine_tune: Annotated[int, typer.Option(min=0, max=5, help="Then unfreeze the last N VGG16 blocks and train on (0, with --contrast none: the reference recipe).")] = _DEFAULTS.fine_tune,
    fine_tune_epochs: Annotated[int, typer.Option(min=1, help="Epochs of the fine-tuning stage.")] = _DEFAULTS.fine_tune_epochs,
    fine_tune_learning_rate: Annotated[float, typer.Option(min=0.0, help="Adam's learning rate while fine-tuning.")] = _DEFAULTS.fine_tune_learning_rate,
    fine_tune_sample: Annotated[int, typer.Option(min=0, help="Fine-tune on this many images per epoch, drawn afresh each epoch, as many from each --balance group (faster; 0: every training image, loss-weighted).")] = _DEFAULTS.fine_tune_sample,
    distribute: Annotated[Distribute, typer.Option(help="none: one device; mirrored: every GPU of this machine (tf.distribute.MirroredStrategy); multi-worker: every GPU of the machines in TF_CONFIG. --batch-size is the global batch, split across them.")] = _DEFAULTS.distribute,
    reference: Annotated[bool, typer.Option("--reference", help="The reference report's recipe: no fine-tuning, contrast step, balancing, dropout, label smoothing or lung prior (overrides those options).")] = False,
    version: VersionOption = False,
) -> None:
    """Train the transfer model and write model.keras, metrics, history and curves to --out."""
    with boundary():
        pairs = parse_class_map(class_map)
        roots = scan_roots(data, tuple(classes), pairs)  # a wrong --data fails here, before seconds of TensorFlow import
        read_corrections(corrections, model_classes(roots))  # and so does a bad --corrections file
        with extra_imports("cxr-train", "train"):
            from .trainer import train

        options = {k: v for k, v in ctx.params.items() if k in _OPTIONS} | {"class_map": pairs}
        result = train(TrainConfig(**{**options, **(REFERENCE_RECIPE if reference else {})}), roots)
    trust = result.trust
    typer.echo(
        f"temperature {trust.temperature:.3f} and out-of-distribution threshold {trust.threshold:.4g}, "
        f"chosen on {trust.fitted_on}"
    )
    for name, split in result.splits.items():
        typer.echo(_split_line(name, split, f"{split.count} images"))
    if len(result.sources) > 1:  # each source on its own: a total can hide one that fails
        for source, splits in result.sources.items():
            for name, split in splits.items():
                if name != "train":
                    typer.echo(_split_line(name, split, f"{split.count} images of {source}"))
    if result.corrections.files:
        typer.echo(result.corrections.summary())
    if result.lung_prior:
        typer.echo(f"lung prior measured on {result.lung_prior.films} training films' lung masks")
    if result.precision == "bfloat16":
        typer.echo("frozen layers' features computed in bfloat16, which this CPU does natively (--precision float32 to compare); the model is float32")
    if result.replicas > 1:
        typer.echo(f"trained on {result.replicas} replicas in sync (--distribute {options['distribute']})")
    if result.cached:
        typer.echo(f"{result.cached} images' features read from the cache (--no-cache to recompute)")
    if result.test_copies:
        typer.echo(f"warning: test images identical to a train image, byte for byte: {len(result.test_copies)} (test accuracy flatters the model; listed in metrics.json)")
    if result.val_near_copies:
        typer.echo(f"{len(result.val_near_copies)} validation images are near-copies of train images: they train instead (listed in metrics.json)")
    if result.test_near_copies:
        typer.echo(f"warning: test images that are near-copies of a train image (resized, recompressed or re-contrasted, in any --data): {len(result.test_near_copies)} (listed in metrics.json)")
    if result.skipped:
        typer.echo(f"skipped {len(result.skipped)} unreadable files (listed in metrics.json)")
    typer.echo(f"wrote {result.model_path} in {result.seconds['total']:.0f} s")


def _split_line(name: str, split: SplitMetrics, what: str) -> str:
    return (
        f"{name:<5} accuracy {split.accuracy:.3f}  loss {split.loss:.4f}  ECE {split.ece:.3f} "
        f"({split.uncalibrated.ece:.3f} before scaling, {split.ece_by_chance:.3f} by chance alone)  flagged {split.flagged:.1%}  ({what})"
    )

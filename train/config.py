"""A training run's settings: the default recipe, and the reference report's as the changes that undo it.

Each choice is declared here once, as a Literal type that TrainConfig, the code using it and the
``cxr-train`` options all share (the contrast steps are the runtime's, in ``cxr.runtime.imaging``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from cxr.core.sources import is_kaggle
from cxr.runtime.imaging import Contrast

Preprocess = Literal["scale", "vgg"]  # scale: pixels / 255 (reference); vgg: ImageNet means subtracted
Head = Literal["flatten", "gap"]  # flatten (reference) or global average pooling
# Loss weights: none (reference), every class equal, or every class of every data root equal.
Balance = Literal["none", "class", "source-class"]
# How many devices train (train/distribute.py): none: one; mirrored: every local GPU (or logical
# device); multi-worker: every GPU of every machine that TF_CONFIG names.
Distribute = Literal["none", "mirrored", "multi-worker"]
# What the frozen layers' features are computed in (train/precision.py): auto is bfloat16 where the
# CPU has it natively, float32 elsewhere; the layers that train and the saved model are float32.
Precision = Literal["auto", "float32", "bfloat16"]
PREPROCESSES: tuple[str, ...] = get_args(Preprocess)
HEADS: tuple[str, ...] = get_args(Head)


@dataclass(frozen=True)
class ModelRecipe:
    """The parts of the recipe that shape the model's graph (and so its exported metadata)."""

    preprocess: Preprocess = "scale"
    head: Head = "flatten"
    dropout: float = 0.0
    augment: bool = False
    lung_prior: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """The defaults are the best recipe measured (research/recipes.py); REFERENCE_RECIPE undoes them."""

    data: tuple[Path, ...]  # data roots or kaggle:OWNER/NAME handles (a single Path is taken as one)
    out: Path = Path("artifacts")
    classes: tuple[str, ...] = ()  # only these class folders (matched case aside); empty: all
    # (folder, class) pairs: a data root's folder renamed onto another class, or left out when the
    # class is "" (a root may hold classes the model does not have).
    class_map: tuple[tuple[str, str], ...] = ()
    # Label corrections files (core/corrections.py): films dropped or relabelled, found by content.
    corrections: tuple[Path, ...] = ()
    weights: str = "imagenet"  # imagenet | none | path to a VGG16 no-top .h5
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 1e-3
    image_size: int = 224
    val_split: float = 0.15
    seed: int = 0
    strict: bool = False
    # Run the frozen front of the model once per image and fit only what trains behind it (exact
    # while nothing augments the images); False runs plain model.fit on images, for comparison.
    fast_path: bool = True
    # Keep the frozen front's output (or the decoded images) on disk, keyed by what made it, so the
    # next run on the same images skips that pass; False computes it into a temporary folder.
    cache: bool = True
    # bfloat16 halves the frozen pass on CPUs with AVX-512 BF16 or AMX, and the exported float32
    # model's accuracy holds; fine-tuning in bfloat16 too cost it (research/HISTORY.md, "bfloat16 features").
    precision: Precision = "auto"
    # Find validation and test images that copy a training image (train/copies.py): the first train
    # instead, the second are reported. Off only for data whose distinct images look alike at 16x16.
    near_copies: bool = True
    contrast: Contrast = "equalize"  # done to each resized image, in training and at runtime
    preprocess: Preprocess = "scale"
    head: Head = "flatten"
    # Regularised, because one stratum is small (60 children's Normal films in Covid19-dataset):
    # chosen on validation accuracy per source (research/HISTORY.md, "Two collections").
    dropout: float = 0.5
    augment: bool = False
    # Multiply the last feature map by how often each cell is lung in the training films that have
    # masks (train/lung_prior.py), so evidence off the lungs counts for little. None: wherever a
    # training film has a mask (chosen on validation, research/HISTORY.md, "Reading the lungs").
    lung_prior: bool | None = None
    label_smoothing: float = 0.1
    balance: Balance = "source-class"
    early_stopping: int = 0  # patience in epochs on validation loss, best weights restored; 0: off
    # After the head, unfreeze the last N VGG16 blocks and train on; 0 is the reference recipe.
    fine_tune: int = 1
    fine_tune_epochs: int = 8
    fine_tune_learning_rate: float = 3e-5
    # Images per fine-tuning epoch, drawn afresh each epoch, as many from each --balance group (which
    # then needs no loss weights): fine-tuning is most of a run's time, and every film of the five
    # collections would take the README's run past 20 minutes (docs/RESULTS.md, "Five collections").
    # 0: every training image, loss-weighted.
    fine_tune_sample: int = 1200
    distribute: Distribute = "none"

    def __post_init__(self) -> None:
        roots = (self.data,) if isinstance(self.data, (str, Path)) else self.data
        object.__setattr__(self, "data", tuple(Path(root) for root in roots))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "class_map", tuple(tuple(pair) for pair in self.class_map))
        object.__setattr__(self, "corrections", tuple(Path(path) for path in self.corrections))

    @property
    def model_recipe(self) -> ModelRecipe:
        return ModelRecipe(self.preprocess, self.head, self.dropout, self.augment, bool(self.lung_prior))

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TrainConfig:
        """Read back what ``to_json`` wrote (config.json); keys of other tools are left aside."""
        known = {f.name for f in fields(cls)}
        read = {name: value for name, value in values.items() if name in known}
        read["class_map"] = tuple(dict(values.get("class_map", {})).items())
        read["out"] = Path(values.get("out", cls.out))
        read.setdefault("contrast", "none")  # records from before the option: no contrast step
        return cls(**read)

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["data"] = [str(root) if is_kaggle(root) else str(root.resolve()) for root in self.data]
        values["classes"] = list(self.classes)
        values["class_map"] = {folder: target for folder, target in self.class_map}
        values["corrections"] = [str(path.resolve()) for path in self.corrections]
        values["out"] = str(self.out)
        return values


# The reference report's recipe: the defaults without fine-tuning, contrast equalization, balancing,
# regularisation and lung prior.
REFERENCE_RECIPE: dict[str, Any] = dict(fine_tune=0, contrast="none", balance="none", dropout=0.0, label_smoothing=0.0, lung_prior=False)

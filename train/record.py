"""The run record: what cxr-train writes beside model.keras (config.json and metrics.json) and
cxr-export reads back, as one typed value. The JSON is ``asdict`` of these types, so other tools can
read it by key too; here it is read back into the same types."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cxr.core.calibration import Confidence
from cxr.core.corrections import Applied
from cxr.core.errors import ModelError

from .config import TrainConfig

CONFIG = "config.json"
METRICS = "metrics.json"


@dataclass
class SplitMetrics:
    accuracy: float
    loss: float  # of the calibrated probabilities, which the model file gives
    ece: float
    ece_by_chance: float  # a perfectly calibrated model's ECE with these probabilities (core.calibration)
    count: int
    per_class: dict[str, int]  # images of each class the split has (a source may lack some)
    confusion: list[list[int]]  # rows: true class, columns: predicted class; all the model's classes
    uncalibrated: Confidence  # the same before temperature scaling
    flagged: float  # share of images the out-of-distribution gate flags

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SplitMetrics:
        return cls(**{**data, "uncalibrated": Confidence(**data["uncalibrated"])})

    def summary(self) -> dict[str, Any]:
        """What the model file keeps: all but the confusion matrix."""
        return {key: value for key, value in asdict(self).items() if key != "confusion"}


@dataclass(frozen=True)
class NearCopy:
    """A validation or test image that is a copy of a training image, maybe resized or re-contrasted."""

    file: str
    train_file: str
    bits: int  # how many of the hash's 256 bits differ (copies.NEAR_BITS at most)


@dataclass(frozen=True)
class NearCopies:
    method: str
    validation_moved_to_train: list[NearCopy]
    test: list[NearCopy]  # they stay, and make test accuracy flatter the model


@dataclass(frozen=True)
class LungPriorFit:
    grid: list[list[float]]  # each cell's share on the lungs
    films: int  # training films with a mask, that it was measured on


@dataclass(frozen=True)
class CalibrationFit:
    temperature: float
    fitted_on: str  # the split it was chosen on


@dataclass(frozen=True)
class GateFit:
    score: str  # what the score is, in words
    threshold: float
    validation_pass: float  # the share of each source's validation images under the threshold
    fitted_on: str
    training_images: int
    shrinkage: float


@dataclass(frozen=True)
class Distribution:
    strategy: str
    replicas: int


@dataclass
class RunRecord:
    config: TrainConfig  # config.json; the rest is metrics.json
    class_names: list[str]
    splits: dict[str, SplitMetrics]  # "train", "val", and "test" when the data has one
    sources: dict[str, dict[str, SplitMetrics]]  # the same per data root, by source name
    calibration: CalibrationFit
    ood: GateFit
    versions: dict[str, str]
    corrections: Applied = field(default_factory=Applied)
    skipped: list[str] = field(default_factory=list)
    validation_files: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    cached_images: int = 0
    test_copies_of_train: list[str] = field(default_factory=list)
    near_copies: NearCopies | None = None
    lung_prior: LungPriorFit | None = None
    distribute: Distribution = Distribution("none", 1)

    def config_json(self) -> dict[str, Any]:
        return {**self.config.to_json(), "class_names": self.class_names}

    def metrics_json(self) -> dict[str, Any]:
        values = asdict(self)
        del values["config"]
        return values

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        """The record in ``folder``; a ModelError when it is missing, damaged or from a cxr that
        wrote another layout."""
        try:
            config = json.loads((folder / CONFIG).read_text())
            metrics = json.loads((folder / METRICS).read_text())
            return cls._from_json(config, metrics)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelError(f"{folder}: the run record ({CONFIG}, {METRICS}) written by cxr-train is missing or damaged ({error}); train again with this cxr") from None

    @classmethod
    def _from_json(cls, config: dict[str, Any], metrics: dict[str, Any]) -> RunRecord:
        near = metrics.get("near_copies")
        prior = metrics.get("lung_prior")
        return cls(
            config=TrainConfig.from_json(config),
            class_names=list(metrics["class_names"]),
            splits={name: SplitMetrics.from_json(split) for name, split in metrics["splits"].items()},
            sources={source: {name: SplitMetrics.from_json(split) for name, split in splits.items()} for source, splits in metrics["sources"].items()},
            calibration=CalibrationFit(**metrics["calibration"]),
            ood=GateFit(**metrics["ood"]),
            versions=dict(metrics["versions"]),
            corrections=Applied.from_json(metrics["corrections"]),
            skipped=list(metrics["skipped"]),
            validation_files=list(metrics["validation_files"]),
            seconds=dict(metrics["seconds"]),
            cached_images=int(metrics["cached_images"]),
            test_copies_of_train=list(metrics["test_copies_of_train"]),
            near_copies=NearCopies(near["method"], [NearCopy(**c) for c in near["validation_moved_to_train"]], [NearCopy(**c) for c in near["test"]]) if near else None,
            lung_prior=LungPriorFit(**prior) if prior else None,
            distribute=Distribution(**metrics["distribute"]),
        )

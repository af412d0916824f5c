"""The model-file contract: what ``cxr-export`` writes into model.onnx and every predictor reads.

Each field is one entry of the ONNX file's metadata_props, its value JSON, its key prefixed ``cxr.``,
so tools such as Netron show it readably and a predictor needs nothing beside the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from cxr.core.corrections import Applied
from cxr.core.errors import ModelError

from .imaging import CONTRASTS

FORMAT = "cxr-model/1"
_PREFIX = "cxr."


@dataclass(frozen=True)
class InputSpec:
    height: int
    width: int
    channels: int = 3
    dtype: str = "float32"
    layout: str = "NHWC"
    pixel_range: tuple[float, float] = (0.0, 255.0)
    contrast: str = "none"  # imaging.CONTRASTS: what the runtime does to the resized image


@dataclass(frozen=True)
class HeatmapSpec:
    """How to read the graph's evidence maps: output ``output``, shape (N, classes, *grid).

    Each cell holds its contribution to the class's logit: the cells' sum plus ``bias[c]`` is the
    logit, and the softmax of the logits is the probability output.
    """

    output: str
    grid: tuple[int, int]  # cells down, cells across
    bias: list[float]  # the logits' bias, per class
    method: str


@dataclass(frozen=True)
class OodSpec:
    """How to read the graph's out-of-distribution score: output ``output``, shape (N,); larger is
    less like the training images, and above ``threshold`` an image is flagged."""

    output: str
    threshold: float
    score: str  # what the score is, in words
    validation_pass: float  # the share of each source's validation images under the threshold


@dataclass(frozen=True)
class Calibration:
    """The temperature the graph's logits are divided by before the softmax."""

    temperature: float
    method: str


@dataclass(frozen=True)
class Adaptation:
    """What cxr-adapt did to a model for one site: its films, the strength chosen (None: adapting did
    not help and was forced), and the cross-validated recall per class before and after."""

    site: str
    films: dict[str, int]  # per class
    base_model: str  # SHA-256 of the file adapted
    strength: float | None  # how hard the head was pulled toward the base's (adapt.fit)
    strengths: dict[str, float]  # each strength tried -> its cross-validated balanced accuracy
    temperature: float  # the factor on the base's temperature, fitted on the out-of-fold predictions
    before: dict[str, float]  # the base model's cross-validated recall per class (no fitting: its own)
    after: dict[str, float]  # the adapted head's, out of fold
    gate_pass_before: float  # share of the site's films under the gate's threshold
    gate_pass_after: float

    @property
    def summary(self) -> str:
        films = ", ".join(f"{name} {count}" for name, count in self.films.items())
        before, after = (sum(recalls.values()) / len(recalls) for recalls in (self.before, self.after))
        return f"adapted to {self.site} ({films} films): cross-validated balanced accuracy {before:.3f} -> {after:.3f}"


@dataclass(frozen=True)
class ModelInfo:
    class_names: list[str]  # in the order of the model's output
    input: InputSpec
    preprocessing: dict[str, str]  # what the runtime does before the graph, and the graph itself
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    quantization: str = "none"
    heatmaps: HeatmapSpec | None = None  # None in models exported before evidence maps
    ood: OodSpec | None = None  # None in models exported before the out-of-distribution gate
    calibration: Calibration | None = None  # None in models exported before temperature scaling
    adaptation: Adaptation | None = None  # set by cxr-adapt

    def to_metadata(self) -> dict[str, str]:
        props = {f"{_PREFIX}format": FORMAT}
        props.update({_PREFIX + k: json.dumps(v) for k, v in asdict(self).items()})
        return props

    @classmethod
    def from_metadata(cls, props: dict[str, str], source: str = "model") -> ModelInfo:
        """Read the contract back; a file without it (not written by cxr-export) is refused."""
        if props.get(f"{_PREFIX}format") != FORMAT:
            raise ModelError(
                f"{source}: not a cxr model (no '{_PREFIX}format: {FORMAT}' metadata); "
                "export it with cxr-export --onnx"
            )
        try:
            values = {f.name: json.loads(props[_PREFIX + f.name]) for f in fields(cls) if f.name not in _ADDED}
            values["input"] = InputSpec(**{**values["input"], "pixel_range": tuple(values["input"]["pixel_range"])})
            for name, spec in _ADDED.items():
                found = json.loads(props.get(_PREFIX + name, "null"))
                values[name] = spec(**found) if found else None
            if values["heatmaps"]:
                values["heatmaps"] = replace(values["heatmaps"], grid=tuple(values["heatmaps"].grid))
            info = cls(**values)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"{source}: damaged cxr metadata ({error})") from None
        # Refused here, not at the first image: a step this runtime cannot do would skew every input.
        if info.input.contrast not in CONTRASTS:
            raise ModelError(f"{source}: unknown contrast step {info.input.contrast!r} (this cxr knows {CONTRASTS})")
        return info

    @property
    def image_size(self) -> int:
        return self.input.height

    @property
    def class_map(self) -> tuple[tuple[str, str], ...]:
        """The ``(folder, class)`` renames training applied (``class`` empty: left out), so that readers
        of labelled folders map them the same way."""
        return tuple(self.recipe.get("class_map", {}).items())

    @property
    def merged_folders(self) -> dict[str, list[str]]:
        """Each class that training filled from other folders too, with those folders' names (the
        README's default: "Viral Pneumonia" also holds "Bacterial Pneumonia" and "Non-COVID")."""
        merged: dict[str, list[str]] = {}
        for folder, target in self.class_map:
            if target:
                merged.setdefault(target, []).append(folder)
        return merged

    @property
    def corrections(self) -> Applied | None:
        """The label corrections training applied (cxr-train --corrections); None without any."""
        applied = self.metrics.get("corrections")
        return Applied.from_json(applied) if applied and applied["files"] else None

    @property
    def cell_pixels(self) -> float:
        """Input pixels per heat-map cell, across (32 for VGG16's 7x7 map of a 224-pixel input)."""
        return self.input.width / self.heatmaps.grid[1] if self.heatmaps else 0.0


# Fields added after the format's first release: absent from older model files, read as None.
_ADDED: dict[str, type] = {"heatmaps": HeatmapSpec, "ood": OodSpec, "calibration": Calibration, "adaptation": Adaptation}

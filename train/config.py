"""A training run's settings; the defaults are the reference report's recipe."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    out: Path = Path("artifacts")
    weights: str = "imagenet"  # imagenet | none | path to a VGG16 no-top .h5
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 1e-3
    image_size: int = 224
    val_split: float = 0.15
    seed: int = 0
    strict: bool = False
    # Fit the head on the frozen base's features computed once; False runs plain model.fit.
    fast_path: bool = True

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["data"] = str(self.data.resolve())
        values["out"] = str(self.out)
        return values

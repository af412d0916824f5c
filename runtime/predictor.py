"""The edge predictor: a model written by cxr-export, one onnxruntime session, reused and thread-safe."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from .errors import MissingDependencyError, ModelError
from .imaging import load_image
from .metadata import ModelInfo

Provider = Literal["auto", "cpu", "cuda"]
_CUDA, _CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@dataclass(frozen=True)
class Prediction:
    file: str
    label: str
    probabilities: dict[str, float]  # in the model's class order
    seconds: float  # decoding, resizing and the model call

    @property
    def probability(self) -> float:
        return self.probabilities[self.label]


class Predictor:
    """Loads ``model.onnx`` once; everything else (classes, input size) comes from its metadata.

    onnxruntime's ``InferenceSession.run`` may be called from several threads at once, so one
    Predictor can serve a whole application.
    """

    def __init__(self, model_path: str | Path, provider: Provider = "auto", threads: int | None = None):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file (make one with cxr-export --onnx)")
        providers = _providers(provider)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors for foreign files
            reason = str(error).splitlines()[0][:200]
            raise ModelError(f"{path}: not a readable ONNX model ({reason})") from None
        if provider == "cuda" and self._session.get_providers()[0] != _CUDA:
            raise MissingDependencyError("--provider cuda: onnxruntime could not start CUDA on this machine")
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_metadata(metadata, source=str(path))
        self.path = path
        self.input_name = self._session.get_inputs()[0].name

    @property
    def provider(self) -> str:
        return self._session.get_providers()[0]

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Probabilities, shape (N, classes), for uint8 model inputs of shape (N, size, size, 3)."""
        return self._session.run(None, {self.input_name: images.astype(np.float32)})[0]

    def predict_file(self, path: str | Path) -> Prediction:
        """Read one image file (raises InputFileError naming it) and classify it."""
        started = time.perf_counter()
        pixels = load_image(path, self.info.image_size, self.info.input.contrast)
        probabilities = self.predict_batch(pixels[np.newaxis])[0]
        names = self.info.class_names
        return Prediction(
            file=str(path),
            label=names[int(np.argmax(probabilities))],
            probabilities={name: float(p) for name, p in zip(names, probabilities)},
            seconds=time.perf_counter() - started,
        )


def _providers(provider: Provider) -> list[str]:
    available = ort.get_available_providers()
    if provider == "cpu":
        return [_CPU]
    if provider == "cuda":
        if _CUDA not in available:
            raise MissingDependencyError(
                "--provider cuda: this onnxruntime has no CUDA support; "
                "pip install 'cxr[gpu]' on a machine with an NVIDIA GPU"
            )
        return [_CUDA, _CPU]
    return [_CUDA, _CPU] if _CUDA in available else [_CPU]

"""The edge predictor: a model written by cxr-export, one onnxruntime session, reused and thread-safe.

The Predictor owns how its model reads an image: ``prepare`` makes model input from any image source,
``run_batch`` runs the model on prepared inputs, ``predict`` and ``predict_files`` do both.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from cxr.core.errors import CxrError, MissingDependencyError, ModelError, first_line
from cxr.core.files import located

from .heatmaps import Heatmaps
from .imaging import ImageSource, load_image
from .metadata import ModelInfo

Provider = Literal["auto", "cpu", "cuda"]
HeatmapChoice = Literal["none", "predicted", "all"]  # which classes' maps a prediction carries
_CUDA, _CPU = "CUDAExecutionProvider", "CPUExecutionProvider"

# Images per model call in predict_files: most of batching's gain on a CPU, little memory.
BATCH_SIZE = 8


@dataclass(frozen=True)
class Prediction:
    file: str  # the path, or the name given to an in-memory image
    label: str
    probabilities: dict[str, float]  # in the model's class order
    seconds: float  # reading the image and its share of the model call
    heatmaps: Heatmaps | None = None  # when asked for: the predicted class's map, or every class's
    # The model's out-of-distribution score, and whether it is at or under the model's threshold: if
    # not, the image is unlike the training images and the class is no answer. None for models
    # exported without the gate.
    ood_score: float | None = None
    in_distribution: bool | None = None

    @property
    def probability(self) -> float:
        return self.probabilities[self.label]


@dataclass(frozen=True)
class Outputs:
    """One model call's results for N prepared inputs."""

    probabilities: np.ndarray  # (N, classes)
    scores: np.ndarray | None  # (N,) out-of-distribution scores; None for a model without the gate
    maps: np.ndarray | None  # (N, classes, h, w) evidence maps, when asked for


@dataclass(frozen=True)
class Failure:
    """An input that could not be predicted, and why, in one line naming it."""

    file: str
    error: str


class Predictor:
    """Loads ``model.onnx`` once; everything else (classes, input size, contrast step) comes from its
    metadata. onnxruntime's ``InferenceSession.run`` may be called from several threads at once, so
    one Predictor can serve a whole application.
    """

    def __init__(self, model_path: str | Path, provider: Provider = "auto", threads: int | None = None):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{located(path)}: no such model file (make one with cxr-export --onnx, or pass --model)")
        providers = _providers(provider)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors for foreign files
            raise ModelError(f"{path}: not a readable ONNX model ({first_line(error)})") from None
        if provider == "cuda" and self._session.get_providers()[0] != _CUDA:
            raise MissingDependencyError("--provider cuda: onnxruntime could not start CUDA on this machine")
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_metadata(metadata, source=str(path))
        self.path = path
        self.input_name = self._session.get_inputs()[0].name
        self._probabilities = self._session.get_outputs()[0].name

    @property
    def provider(self) -> str:
        return self._session.get_providers()[0]

    def prepare(self, image: ImageSource, name: str | None = None) -> np.ndarray:
        """Model input, uint8 (size, size, 3), from a path, bytes, a PIL image or an array.

        Raises InputFileError (naming ``name``, or the path) when it cannot be read.
        """
        return load_image(image, self.info.image_size, self.info.input.contrast, name)

    def run_batch(self, inputs: np.ndarray, maps: bool = False) -> Outputs:
        """One model call on prepared inputs of shape (N, size, size, 3); the evidence maps too
        when ``maps``."""
        if maps and self.info.heatmaps is None:
            raise ModelError(f"{self.path}: this model has no heat maps; export it again with cxr-export")
        names = [self._probabilities]
        names += [self.info.ood.output] if self.info.ood else []
        names += [self.info.heatmaps.output] if maps else []
        results = iter(self._session.run(names, {self.input_name: inputs.astype(np.float32)}))
        probabilities = next(results)
        return Outputs(probabilities, next(results) if self.info.ood else None, next(results) if maps else None)

    def predict(self, image: ImageSource, name: str | None = None, heatmaps: HeatmapChoice = "none") -> Prediction:
        """Read one image (raises InputFileError naming it) and classify it."""
        started = time.perf_counter()
        pixels = self.prepare(image, name)
        label = name or (str(image) if isinstance(image, (str, Path)) else "image")
        return next(self._run([(label, pixels, time.perf_counter() - started)], heatmaps))

    def predict_files(
        self, paths: Iterable[Path], batch_size: int = BATCH_SIZE, heatmaps: HeatmapChoice = "none"
    ) -> Iterator[Prediction | Failure]:
        """Each file's Prediction, or its Failure, in the order given; files are read one by one and
        their inputs batched into one model call.

        Any error while reading one file (a damaged DICOM raises whatever pydicom raises) fails that
        file alone.
        """
        return self.predict_named(((str(path), path) for path in paths), batch_size, heatmaps)

    def predict_named(
        self, sources: Iterable[tuple[str, ImageSource]], batch_size: int = BATCH_SIZE, heatmaps: HeatmapChoice = "none"
    ) -> Iterator[Prediction | Failure]:
        """``predict_files`` for ``(name, source)`` pairs: a source is anything ``prepare`` reads (the
        bytes of a file fetched from an object store, say), and errors name it by ``name``."""
        pending: list[Failure | tuple[str, np.ndarray, float]] = []  # in order, until the batch runs
        for name, source in sources:
            pending.append(self._read(name, source))
            if sum(not isinstance(item, Failure) for item in pending) == batch_size:
                yield from self._run(pending, heatmaps)
                pending = []
        yield from self._run(pending, heatmaps)

    def _read(self, name: str, source: ImageSource) -> Failure | tuple[str, np.ndarray, float]:
        started = time.perf_counter()
        try:
            pixels = self.prepare(source, name)
        except CxrError as error:
            return Failure(name, str(error))
        except Exception as error:  # noqa: BLE001 - one bad file must not end the batch
            return Failure(name, cannot_read(name, error))
        return name, pixels, time.perf_counter() - started

    def _run(
        self, pending: list[Failure | tuple[str, np.ndarray, float]], heatmaps: HeatmapChoice
    ) -> Iterator[Prediction | Failure]:
        read = [item for item in pending if not isinstance(item, Failure)]
        if not read:
            yield from pending
            return
        started = time.perf_counter()
        outputs = self.run_batch(np.stack([pixels for _, pixels, _ in read]), maps=heatmaps != "none")
        share = (time.perf_counter() - started) / len(read)
        rows = iter(range(len(read)))
        for item in pending:
            if isinstance(item, Failure):
                yield item
                continue
            name, pixels, seconds = item
            yield self._prediction(name, outputs, next(rows), seconds + share, pixels, heatmaps)

    def _prediction(
        self, file: str, outputs: Outputs, row: int, seconds: float, pixels: np.ndarray, heatmaps: HeatmapChoice
    ) -> Prediction:
        """The prediction for row ``row`` of one model call's outputs."""
        names = self.info.class_names
        probabilities = outputs.probabilities[row]
        label = names[int(np.argmax(probabilities))]
        maps = None
        if outputs.maps is not None:
            shown = names if heatmaps == "all" else [label]
            maps = Heatmaps(pixels, {name: outputs.maps[row, names.index(name)] for name in shown})
        score = None if outputs.scores is None else float(outputs.scores[row])
        return Prediction(
            file=file,
            label=label,
            probabilities={name: float(p) for name, p in zip(names, probabilities)},
            seconds=seconds,
            heatmaps=maps,
            ood_score=score,
            in_distribution=None if score is None else score <= self.info.ood.threshold,
        )


def cannot_read(name: str, error: BaseException) -> str:
    """The one line for a file that failed in a way no cxr check foresaw."""
    return f"{name}: cannot read ({type(error).__name__}: {first_line(error)})"


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

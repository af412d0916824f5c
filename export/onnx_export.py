"""Keras model -> self-describing ONNX file, checked against Keras on real images before it lands."""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from cxr.core.datasets import check_split, load_folder, open_root
from cxr.core.errors import DatasetError, ModelError, first_line
from cxr.core.files import atomic_path, located
from cxr.core.progress import checkpoint, phase
from cxr.runtime.imaging import PREPROCESSING, load_image
from cxr.runtime.metadata import Calibration, HeatmapSpec, InputSpec, ModelInfo, OodSpec
from cxr.train import ood
from cxr.train.config import Head
from cxr.train.model import EVIDENCE, PROBABILITIES, in_graph_preprocessing, with_evidence_maps
from cxr.train.record import RunRecord, SplitMetrics

OPSET = 17
PARITY_TOLERANCE = 1e-4
SCORE_TOLERANCE = 1e-3  # relative: the scores are sums of hundreds of squares, in the thousands
CALIBRATION = "temperature scaling (Guo et al. 2017) on the validation split: the output layer's weights and bias divided by T"
PARITY_IMAGES = 16
HEATMAP_METHODS: dict[Head, str] = {
    "flatten": "HiResCAM (Draelos & Carin 2020): each cell's exact contribution to the class logit",
    "gap": "class activation map (Zhou et al. 2016): each cell's exact contribution to the class logit",
}


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float  # largest probability difference, Keras against onnxruntime
    map_sum_diff: float  # largest difference between softmax(the maps' sums + bias) and the probabilities
    score_diff: float  # largest relative difference of the out-of-distribution score, Keras against onnxruntime
    parity_images: int
    size_bytes: int
    data: list[Path]  # the data roots: the parity check used the first, INT8 uses them all


def export_onnx(model_path: Path, out_path: Path, data: Path | None = None) -> ExportResult:
    """Convert ``model_path`` (with its run record beside it) and write ``out_path`` atomically.

    ``data`` is a data root for the parity check; by default the one the model was trained on.
    """
    if not model_path.is_file():
        raise ModelError(f"{located(model_path)}: no such model file (train one with cxr-train)")
    record = RunRecord.read(model_path.parent)
    config = record.config
    model = _load_keras(model_path)
    class_names = record.class_names
    roots = [open_root(Path(root)) for root in ([data] if data else config.data)]
    data = roots[0]  # its class folders are spelled as the model's classes
    images = _parity_images(data, class_names, config.image_size, config.contrast)
    recipe = config.model_recipe

    gaussians = _gaussians(model_path)
    explained = ood.with_score(with_evidence_maps(model, recipe), gaussians)
    size = config.image_size
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
    checkpoint("converting")
    with phase("Converting to ONNX (tf2onnx)"):
        proto, _ = tf2onnx.convert.from_keras(explained, input_signature=spec, opset=OPSET)
    info = _model_info(record, explained, model)
    onnx.helper.set_model_props(proto, info.to_metadata())
    proto.doc_string = "cxr chest X-ray classifier (research and teaching, not diagnosis)"

    with atomic_path(out_path) as tmp:
        onnx.save(proto, tmp)
        checkpoint("checking")
        with phase(f"Checking parity with Keras on {len(images)} images"):
            diff, map_diff, score_diff = parity(explained, tmp, images, np.array(info.heatmaps.bias))
        if diff > PARITY_TOLERANCE:
            raise ModelError(
                f"ONNX output differs from Keras by {diff:.2e} (> {PARITY_TOLERANCE:.0e}); not written"
            )
        if map_diff > PARITY_TOLERANCE:
            raise ModelError(
                f"the heat maps do not add up to the probabilities (off by {map_diff:.2e}); not written"
            )
        if score_diff > SCORE_TOLERANCE:
            raise ModelError(
                f"ONNX out-of-distribution score differs from Keras by {score_diff:.2e} (relative, > {SCORE_TOLERANCE:.0e}); not written"
            )
    return ExportResult(out_path, diff, map_diff, score_diff, len(images), out_path.stat().st_size, roots)


def _model_info(record: RunRecord, explained: keras.Model, model: keras.Model) -> ModelInfo:
    """The model file's contract, from the run record and the graph."""
    config = record.config
    size = config.image_size
    recipe = config.model_recipe
    return ModelInfo(
        class_names=record.class_names,
        input=InputSpec(height=size, width=size, contrast=config.contrast),
        preprocessing={**PREPROCESSING, "in_graph": in_graph_preprocessing(recipe)},
        recipe={k: v for k, v in config.to_json().items() if k not in ("data", "out")},
        metrics={
            "splits": _summaries(record.splits),
            "sources": {source: _summaries(splits) for source, splits in record.sources.items()},
            "corrections": dataclasses.asdict(record.corrections),
        },
        versions={**record.versions, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__},
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        heatmaps=HeatmapSpec(
            output=EVIDENCE,
            grid=tuple(explained.outputs[1].shape[2:]),
            bias=model.get_layer(PROBABILITIES).get_weights()[1].tolist(),
            method=HEATMAP_METHODS[recipe.head],
        ),
        ood=OodSpec(
            output=ood.OUTPUT,
            threshold=record.ood.threshold,
            score=record.ood.score,
            validation_pass=record.ood.validation_pass,
        ),
        calibration=Calibration(temperature=record.calibration.temperature, method=CALIBRATION),
    )


def parity(model: keras.Model, onnx_path: Path, images: np.ndarray, bias: np.ndarray) -> tuple[float, float, float]:
    """On ``images``, with ``model`` the Keras graph that was converted: the largest difference
    between Keras' and onnxruntime's probabilities; between onnxruntime's probabilities and the
    softmax of its maps' sums plus ``bias``; and the largest relative difference of the scores."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = images.astype(np.float32)
    expected, _, expected_scores = (np.asarray(output) for output in model.predict(batch, verbose=0))
    got, maps, scores = session.run([PROBABILITIES, EVIDENCE, ood.OUTPUT], {session.get_inputs()[0].name: batch})
    logits = maps.sum(axis=(2, 3)) + bias
    from_maps = np.exp(logits - logits.max(axis=1, keepdims=True))
    from_maps /= from_maps.sum(axis=1, keepdims=True)
    score_diff = np.max(np.abs(scores - expected_scores) / np.maximum(np.abs(expected_scores), 1.0))
    return float(np.max(np.abs(expected - got))), float(np.max(np.abs(from_maps - got))), float(score_diff)


def _summaries(splits: dict[str, SplitMetrics]) -> dict[str, dict[str, Any]]:
    return {name: split.summary() for name, split in splits.items()}


def _gaussians(model_path: Path) -> ood.ClassGaussians:
    saved = model_path.parent / ood.FILE
    if not saved.is_file():
        raise ModelError(
            f"{model_path.parent}: no {ood.FILE} beside the model (trained before the out-of-distribution "
            "gate); train it again with this cxr"
        )
    try:
        return ood.ClassGaussians.load(saved)
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(f"{saved}: damaged ({first_line(error)}); train the model again") from None


def _load_keras(model_path: Path) -> keras.Model:
    try:
        return keras.saving.load_model(model_path, safe_mode=True)
    except Exception as error:  # Keras raises many types for a foreign or damaged file
        raise ModelError(f"{model_path}: cannot load Keras model ({first_line(error)})") from None


def _parity_images(data: Path, class_names: list[str], size: int, contrast: str) -> np.ndarray:
    try:
        read = functools.partial(load_image, size=size, contrast=contrast)
        return load_folder(check_split(data), class_names, read, PARITY_IMAGES, "Parity images").images
    except DatasetError as error:
        raise DatasetError(f"{error}; pass --data with images for the parity check") from None

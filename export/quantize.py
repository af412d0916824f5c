"""INT8 model: onnxruntime static quantization of the convolutions (QDQ, per-channel 7-bit weights),
calibrated on train images."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from cxr.core.datasets import check_split, load_folder
from cxr.core.errors import ModelError
from cxr.core.files import atomic_path
from cxr.core.progress import phase, progress
from cxr.export import MIN_AGREEMENT
from cxr.runtime.predictor import BATCH_SIZE, Outputs, Predictor

CALIBRATION_IMAGES = 64


@dataclass
class Int8Result:
    path: Path
    agreement: float  # share of test images where INT8 and FP32 pick the same class
    map_correlation: float  # mean over test images of the Pearson correlation of their evidence maps
    flag_agreement: float  # share of test images both flag, or both pass, as out of distribution
    test_images: int
    fp32_bytes: int
    int8_bytes: int


class _Images(CalibrationDataReader):
    def __init__(self, images: np.ndarray, input_name: str):
        batches = images[:, np.newaxis].astype(np.float32)
        self._batches = iter(progress(batches, "Calibrating INT8 (MinMax)"))
        self._input = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._input: batch}


def export_int8(fp32_path: Path, out_path: Path, data: Path | list[Path], min_agreement: float = MIN_AGREEMENT) -> Int8Result:
    """Quantize ``fp32_path``, calibrated on the train splits of ``data`` (one root or several); refuse
    (write nothing) if top-1 agreement on their test splits is below ``min_agreement``. How often the
    two agree on the out-of-distribution flag is measured and returned: on ImageNet features it is
    above 99%, but on features that quantize badly the flags can differ while the classes do not, and
    the file is still worth having (the CLI warns)."""
    fp32 = Predictor(fp32_path, provider="cpu")
    calibration, test = _calibration_and_test(fp32, data if isinstance(data, list) else [data])

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quantized = Path(scratch) / "int8.onnx"
        with phase("Preparing the graph for quantization"):
            quant_pre_process(str(fp32_path), str(prepared))
        # Only VGG16's convolutions are quantized; what follows its last pooling stays in float. A
        # quantized softmax would report probabilities in steps of 1/255 (0.0 for "unlikely"); the
        # gate's distance, in 8 bits, would move scores across the threshold; the head in float keeps
        # the class of 1 more film in 733 (0.9945 against 0.9932 agreement) at 1.007x the latency.
        head = _after_base(onnx.load(prepared).graph)
        quantize_static(
            str(prepared),
            str(quantized),
            _Images(calibration, fp32.input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # 7-bit weights: without VNNI (AVX2, plain AVX-512) onnxruntime multiplies uint8 activations
            # by int8 weights in pairs summed into int16, which full-range weights overflow (a seed-0
            # default agreed with FP32 on 93.7% of its test films on such a CPU; another, 99.5% with
            # VNNI). With 7 bits no pair can overflow, so every CPU computes the same integers, at
            # 1.00x the latency.
            reduce_range=True,
            nodes_to_exclude=head,
        )
        proto = onnx.load(quantized)

    with atomic_path(out_path) as tmp:
        info = dataclasses.replace(
            fp32.info,
            quantization=(
                f"int8: onnxruntime static QDQ of the convolutions (per-channel 7-bit weights; the head, "
                f"maps and gate in float), MinMax calibration on "
                f"{len(calibration)} train images"
            ),
        )
        onnx.helper.set_model_props(proto, info.to_metadata())
        onnx.save(proto, tmp)
        with phase(f"Checking INT8 against FP32 on {len(test)} images"):
            int8_outputs = _explained(Predictor(tmp, provider="cpu"), test)
            fp32_outputs = _explained(fp32, test)
            agreement = float(np.mean(int8_outputs.probabilities.argmax(axis=1) == fp32_outputs.probabilities.argmax(axis=1)))
            correlation = map_correlation(fp32_outputs.maps, int8_outputs.maps)
            limit = info.ood.threshold
            flag_agreement = float(np.mean((int8_outputs.scores > limit) == (fp32_outputs.scores > limit)))
        if agreement < min_agreement:
            raise ModelError(
                f"INT8 model agrees with FP32 on {agreement:.1%} of {len(test)} test images "
                f"(< {min_agreement:.1%}); not written (--min-agreement sets the floor)"
            )
    return Int8Result(
        out_path, agreement, correlation, flag_agreement, len(test), fp32_path.stat().st_size, out_path.stat().st_size
    )


def _calibration_and_test(fp32: Predictor, roots: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated on every root's training images and checked on every root's test split, so that no
    collection's range of activations is clipped; class folders mapped as the model's training did."""
    names, mapped = fp32.info.class_names, fp32.info.class_map
    per_root = -(-CALIBRATION_IMAGES // len(roots))
    calibration = [load_folder(root / "train", names, fp32.prepare, per_root, "Calibration images", mapped).images for root in roots]
    test = [load_folder(check_split(root), names, fp32.prepare, None, "Agreement images", mapped).images for root in roots]
    return np.concatenate(calibration), np.concatenate(test)


def _after_base(graph: onnx.GraphProto) -> list[str]:
    """The nodes that read, directly or not, the output of the graph's last MaxPool (VGG16's
    block5_pool): the head, the evidence maps, the gate and the softmax."""
    pools = [node for node in graph.node if node.op_type == "MaxPool"]
    reached, found = set(pools[-1].output), []
    for node in graph.node:  # ONNX stores nodes in topological order
        if reached.intersection(node.input):
            reached.update(node.output)
            found.append(node.name)
    return found


def _explained(predictor: Predictor, images: np.ndarray) -> Outputs:
    """Every output for ``images``, BATCH_SIZE at a time: VGG16's first activations take 13 MB per
    image, so a whole test split in one call can exhaust memory (366 images took 23 GB)."""
    parts = [predictor.run_batch(images[i : i + BATCH_SIZE], maps=True) for i in range(0, len(images), BATCH_SIZE)]
    return Outputs(*(np.concatenate([getattr(part, name) for part in parts]) for name in ("probabilities", "scores", "maps")))


def map_correlation(expected: np.ndarray, got: np.ndarray) -> float:
    """Mean over images of the Pearson correlation between two models' maps (all classes' cells)."""
    pairs = zip(expected.reshape(len(expected), -1), got.reshape(len(got), -1))
    return float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in pairs]))

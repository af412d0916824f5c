"""The arithmetic of training's own passes: bfloat16 where the CPU computes it natively.

On CPUs with AVX-512 BF16 or AMX, oneDNN runs VGG16's convolutions in bfloat16 about twice as fast
as in float32 (docs/RESULTS.md, "bfloat16 training"): both the frozen layers' pass over every
image and the fine-tuning epochs, which together are nearly all of a run. Only the arithmetic
changes: the weights are kept and updated in float32 (Keras' mixed_bfloat16 policy), and the saved
model, its ONNX export and the runtime compute in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras

from .config import Precision
from .model import PROBABILITIES

# /proc/cpuinfo flags of CPUs whose bfloat16 arithmetic oneDNN uses (elsewhere it is emulated, slower).
NATIVE_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPU_INFO = Path("/proc/cpuinfo")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where the system does not list them."""
    try:
        text = CPU_INFO.read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def resolve(precision: Precision) -> Precision:
    """``auto`` made definite: bfloat16 when Keras runs on TensorFlow on a CPU (no GPU) that has
    bfloat16 instructions, float32 otherwise."""
    if precision != "auto":
        return precision
    if keras.config.backend() != "tensorflow":
        return "float32"
    import tensorflow as tf

    native = not tf.config.list_physical_devices("GPU") and bool(NATIVE_FLAGS & cpu_flags())
    return "bfloat16" if native else "float32"


def computing_in(model: keras.Model, precision: Precision) -> keras.Model:
    """``model`` itself for float32; for bfloat16 a copy with its weights (and which of them train)
    computing under mixed_bfloat16, except the softmax layer: the loss reads its probabilities, and
    bfloat16 rounds a probability near 1 to 1 (keras.io's mixed-precision guide does the same)."""
    if precision == "float32":
        return model

    def in_bfloat16(layer: keras.layers.Layer) -> keras.layers.Layer:
        policy = "float32" if layer.name == PROBABILITIES else "mixed_bfloat16"
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})

    copy = keras.models.clone_model(model, clone_function=in_bfloat16)
    copy.set_weights(model.get_weights())
    return copy


@contextlib.contextmanager
def training_in(model: keras.Model, precision: Precision) -> Iterator[keras.Model]:
    """The model to fit: ``model``, or a bfloat16 copy whose weights go back into ``model`` after."""
    copy = computing_in(model, precision)
    yield copy
    if copy is not model:
        model.set_weights(copy.get_weights())

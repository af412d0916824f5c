"""The precision of the frozen layers' features: bfloat16 where the CPU computes it natively.

A run's first pass takes the frozen VGG16 blocks over every film, once. On CPUs with AVX-512 BF16
or AMX, oneDNN runs those convolutions in bfloat16 twice as fast as in float32, and the features come
out about 1% (relative) off float32's (research/HISTORY.md, "bfloat16 features"). Only that pass changes:
the layers that train are fitted in float32 (in bfloat16 they cost the exported model's accuracy),
and the saved model, its ONNX export and the runtime are float32.
"""

from __future__ import annotations

from pathlib import Path

import keras

from .config import Precision

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
    """``model`` itself for float32; for bfloat16 a copy with its weights, computing under Keras'
    mixed_bfloat16 policy (weights kept in float32, each layer's arithmetic in bfloat16)."""
    if precision == "float32":
        return model

    def in_bfloat16(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "mixed_bfloat16"})

    copy = keras.models.clone_model(model, clone_function=in_bfloat16)
    copy.set_weights(model.get_weights())
    return copy

"""The head of an exported cxr model, found in its ONNX graph and rewritten in place.

An exported graph ends in three linear pieces that read the last feature map A (times the lung
prior): the classifier, Softmax(Reshape(A) @ kernel + bias); the evidence maps, ReduceSum(A *
per_cell), where per_cell is the same kernel cell by cell; and the gate, the distance of the whitened,
pooled map to the nearest of the class centres. ``find_head`` finds those initializers and tensors by
walking back from the graph's outputs (FP32 and INT8 files alike: INT8 leaves everything after the
convolutions in float), ``with_taps`` adds the tensors a refit needs as outputs, and ``rewritten``
swaps in a new kernel, bias and centres, keeping the maps the kernel's exact decomposition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from cxr.core.errors import ModelError
from cxr.runtime.metadata import ModelInfo

HEAD_INPUT = "cxr_head_input"  # (N, h, w, channels): what the classifier and the maps read
GATE_INPUT = "cxr_gate_input"  # (N, 1, channels): the pooled map, whitened, before the class centres
_LAYOUT = {"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Cast"}


@dataclass(frozen=True)
class Head:
    """Where the head lives in one graph, and its current weights."""

    features: str  # the tensor the classifier flattens
    whitened: str  # the gate's whitened pooled map, (N, 1, channels)
    kernel: np.ndarray  # (h * w * channels, classes), the temperature already divided in
    bias: np.ndarray  # (classes,)
    centres: np.ndarray  # (centres, channels), whitened class means
    grid: tuple[int, int, int]  # h, w, channels
    names: dict[str, str]  # role ("kernel", "bias", "per_cell", "centres") -> initializer name


def find_head(model: onnx.ModelProto, info: ModelInfo) -> Head:
    """The head of ``model``; a ModelError naming what is missing for a file that lacks a piece (one
    exported before heat maps or the gate, or not by cxr)."""
    if info.heatmaps is None or info.ood is None:
        raise ModelError("this model has no heat maps or no out-of-distribution gate: export it again with cxr-export to adapt it")
    graph = model.graph
    made_by = {output: node for node in graph.node for output in node.output}
    constants = {tensor.name: tensor for tensor in graph.initializer}

    def step(tensor: str, *ops: str) -> onnx.NodeProto:
        """The node, of one of the types ``ops``, that makes ``tensor``, past reshapes and transposes
        (tf2onnx writes a 1 x 1 map's transpose as a reshape)."""
        node = made_by.get(tensor)
        while node is not None and node.op_type in _LAYOUT and node.op_type not in ops:
            node = made_by.get(node.input[0])
        if node is None or node.op_type not in ops:
            raise ModelError(f"the graph's head is not the one cxr-export writes (no {' or '.join(ops)} before {tensor!r}); cannot adapt this file")
        return node

    def constant_input(node: onnx.NodeProto) -> tuple[str, str]:
        """(the initializer input's name, the other input's name) of a two-input node."""
        first, second = node.input
        if second in constants:
            return second, first
        if first in constants:
            return first, second
        raise ModelError(f"the graph's {node.op_type} node {node.name!r} has no constant input; cannot adapt this file")

    # Softmax(Add(MatMul(flat, kernel), bias)), or one Gemm where quantization's pre-processing fused them.
    logits = step(step(graph.output[0].name, "Softmax").input[0], "Add", "Gemm")
    if logits.op_type == "Gemm":
        flat, kernel, bias = logits.input
        transposed = any(a.name in ("transA", "transB") and a.i for a in logits.attribute)
        if transposed or kernel not in constants or bias not in constants:
            raise ModelError("the graph's classifier is a Gemm cxr-export does not write; cannot adapt this file")
    else:
        bias, product = constant_input(logits)
        kernel, flat = constant_input(step(product, "MatMul"))
    per_cell, expanded = constant_input(step(step(info.heatmaps.output, "ReduceSum").input[0], "Mul"))
    features = step(expanded, "Unsqueeze").input[0]  # the map (N, h, w, channels) the maps and the classifier read
    if features not in _layout_sources(flat, made_by):
        raise ModelError("the graph's classifier does not read the map its heat maps read; cannot adapt this file")
    difference = step(step(step(info.ood.output, "ReduceMin").input[0], "ReduceSum").input[0], "Mul").input[0]
    centres, whitened = constant_input(step(difference, "Sub"))
    h, w, classes, channels = constants[per_cell].dims
    names = {"kernel": kernel, "bias": bias, "per_cell": per_cell, "centres": centres}
    readers = [name for node in graph.node for name in node.input]
    shared = [role for role, name in names.items() if readers.count(name) != 1]
    if shared:
        raise ModelError(f"the head's {', '.join(shared)} is shared with other parts of the graph; cannot adapt this file")
    value = {role: numpy_helper.to_array(constants[name]) for role, name in names.items()}
    if value["kernel"].shape != (h * w * channels, classes) or value["bias"].shape != (classes,):
        raise ModelError(f"the head's kernel {value['kernel'].shape} does not match its {h}x{w}x{channels} maps; cannot adapt this file")
    return Head(features, whitened, value["kernel"], value["bias"], value["centres"], (h, w, channels), names)


def with_taps(model: onnx.ModelProto, head: Head) -> bytes:
    """A copy of ``model`` that also outputs the head's input (HEAD_INPUT) and the gate's
    (GATE_INPUT), serialized for an onnxruntime session."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    for source, name in ((head.features, HEAD_INPUT), (head.whitened, GATE_INPUT)):
        tapped.graph.node.append(onnx.helper.make_node("Identity", [source], [name]))
        tapped.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return tapped.SerializeToString()


def rewritten(model: onnx.ModelProto, head: Head, kernel: np.ndarray, bias: np.ndarray, centres: np.ndarray) -> onnx.ModelProto:
    """A copy of ``model`` with a new head: ``kernel`` (h*w*channels, classes) and ``bias`` in the
    classifier, the same kernel cell by cell in the evidence maps (so they still add up to the
    logits), and ``centres`` (any number of rows) in the gate."""
    h, w, channels = head.grid
    per_cell = kernel.reshape(h, w, channels, -1).transpose(0, 1, 3, 2)  # the Reshape reads A row by row, channels last
    values = {"kernel": kernel, "bias": bias, "per_cell": per_cell, "centres": centres}
    new = onnx.ModelProto()
    new.CopyFrom(model)
    for tensor in new.graph.initializer:
        role = next((role for role, name in head.names.items() if name == tensor.name), None)
        if role:
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values[role], dtype=np.float32), tensor.name))
    # Shapes recorded for the gate's tensors count the old centres: left, onnxruntime would warn that
    # they disagree with the graph each time the file loads.
    stale = _downstream(new.graph, head.names["centres"])
    kept = [info for info in new.graph.value_info if info.name not in stale]
    del new.graph.value_info[:]
    new.graph.value_info.extend(kept)
    return new


def _downstream(graph: onnx.GraphProto, tensor: str) -> set[str]:
    """Every tensor computed, directly or not, from ``tensor`` (nodes are in topological order)."""
    reached = {tensor}
    for node in graph.node:
        if reached.intersection(node.input):
            reached.update(node.output)
    return reached - {tensor}


def _layout_sources(tensor: str, made_by: dict[str, onnx.NodeProto]) -> list[str]:
    """``tensor`` and the tensors it is a reshape or transpose of, nearest first."""
    found = [tensor]
    while (node := made_by.get(found[-1])) is not None and node.op_type in _LAYOUT:
        found.append(node.input[0])
    return found

"""The transfer model, in Keras' functional API: 0-255 pixels -> [augment] -> normalise -> VGG16 -> head.

The model is one flat chain of layers, so that it can be cut anywhere into segments that share its
weights: training runs the frozen front once per image and fits only the segment behind the cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from cxr.core.errors import ModelError, first_line

from .config import ModelRecipe, Preprocess
from .lung_prior import LAYER as LUNG_PRIOR
from .lung_prior import LungPrior

# ImageNet's channel means in RGB order, as keras.applications.vgg16.preprocess_input subtracts them.
VGG_MEAN_RGB = (123.68, 116.779, 103.939)
BLOCKS = 5  # VGG16's convolution blocks
PROBABILITIES = "probabilities"  # the output layer, and the exported model's first output
FEATURES = "block5_pool"  # the last feature map (the head reads it, times the lung prior if any)
EVIDENCE = "evidence"  # the exported model's second output


@dataclass
class TransferModel:
    model: keras.Model
    chain: list[layers.Layer]  # every layer after the input, in order
    outputs: list[keras.KerasTensor]  # chain[i]'s output in ``model``

    def segment(self, start: str | None, end: str | None) -> keras.Model:
        """The part of the model after layer ``start`` up to and including layer ``end``.

        None means the image input or the final output. Segments share the model's weights.
        """
        inputs, tensors = self.tensors(start)
        last = tensors[end] if end else tensors[self.chain[-1].name]
        return keras.Model(inputs, last, name=f"{start or 'image'}_to_{end or 'output'}")

    def tensors(self, start: str | None) -> tuple[keras.KerasTensor, dict[str, keras.KerasTensor]]:
        """The input after layer ``start`` (None: the image) and, by layer name, its own output (the
        input) and each later layer's on it; a model from the one to any of the others shares this
        model's weights."""
        if start is None:
            return self.model.input, {layer.name: x for layer, x in zip(self.chain, self.outputs)}
        first = self._index(start) + 1
        x = inputs = keras.Input(shape=self.outputs[first - 1].shape[1:], name=f"{start}_output")
        tensors = {start: inputs}
        for layer in self.chain[first:]:
            x = tensors[layer.name] = layer(x)
        return inputs, tensors

    def freeze_all_but_last_blocks(self, blocks: int) -> None:
        """Freeze every VGG16 convolution except those of the last ``blocks`` blocks; the head trains."""
        for layer in self.chain:
            if layer.name.startswith("block"):
                layer.trainable = int(layer.name[5]) > BLOCKS - blocks

    def _index(self, name: str) -> int:
        return next(i for i, layer in enumerate(self.chain) if layer.name == name)


def cut_layer(trainable_blocks: int) -> str:
    """The last frozen layer when the last ``trainable_blocks`` blocks train: where features are cached."""
    return f"block{BLOCKS - trainable_blocks}_pool"


def in_graph_preprocessing(recipe: ModelRecipe) -> str:
    """What the graph itself does to its 0-255 input; recorded in the exported model's metadata."""
    steps: dict[Preprocess, str] = {
        "scale": "pixels / 255 (Rescaling layer)",
        "vgg": "ImageNet RGB channel means subtracted (Normalization layer), as VGG16 was trained",
    }
    prior = ", each cell of the last feature map times how often it is lung (the lung prior)" if recipe.lung_prior else ""
    return f"{steps[recipe.preprocess]}, then VGG16 convolutions{prior}"


def build_model(num_classes: int, image_size: int, weights: str | None, recipe: ModelRecipe, seed: int = 0) -> TransferModel:
    shape = (image_size, image_size, 3)
    try:
        base = keras.applications.VGG16(include_top=False, weights=weights, input_shape=shape)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load VGG16 weights from {weights}: {first_line(error)}") from None
    if recipe.preprocess == "vgg":
        # Keras' VGG16 weights expect BGR; reversing the first kernel's input channels lets the graph
        # take RGB with no channel-swapping layer (a Lambda would break Keras' safe-mode loading).
        conv = base.get_layer("block1_conv1")
        kernel, bias = conv.get_weights()
        conv.set_weights([kernel[:, :, ::-1, :], bias])

    chain: list[layers.Layer] = []
    if recipe.augment:
        # Only active in training; at inference (and so in the exported graph) they pass pixels through.
        # No flips: a chest X-ray is not mirror-symmetric (heart on the left).
        chain += [
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed, name="aug_rotate"),
            layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed, name="aug_shift"),
            layers.RandomZoom(0.1, fill_mode="constant", seed=seed, name="aug_zoom"),
            layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed, name="aug_brightness"),
            layers.RandomContrast(0.1, value_range=(0, 255), seed=seed, name="aug_contrast"),
        ]
    if recipe.preprocess == "scale":
        chain.append(layers.Rescaling(1.0 / 255, name="scale_0_1"))
    else:
        chain.append(layers.Normalization(mean=VGG_MEAN_RGB, variance=(1.0, 1.0, 1.0), name="vgg_mean"))
    chain += base.layers[1:]
    if recipe.lung_prior:
        chain.append(LungPrior(name=LUNG_PRIOR))  # ones until the trainer sets it from the masks
    chain.append(layers.Flatten(name="flatten") if recipe.head == "flatten" else layers.GlobalAveragePooling2D(name="gap"))
    if recipe.dropout:
        chain.append(layers.Dropout(recipe.dropout, seed=seed, name="dropout"))
    chain.append(layers.Dense(num_classes, activation="softmax", name=PROBABILITIES))

    inputs = keras.Input(shape=shape, name="image")
    outputs, x = [], inputs
    for layer in chain:
        x = layer(x)
        outputs.append(x)
    net = TransferModel(keras.Model(inputs, x, name="cxr_vgg16"), chain, outputs)
    net.freeze_all_but_last_blocks(0)
    return net


def with_evidence_maps(model: keras.Model, recipe: ModelRecipe) -> keras.Model:
    """``model`` with a second output, ``evidence``: per class, each cell's contribution to its logit.

    The head is linear in the last feature map A (h x w x 512; times the lung prior, if the recipe
    has one), so the contribution of cell (i, j) to
    class c, sum_k W[i, j, k, c] * A[i, j, k], is exact: over all cells, plus the bias, it is the logit
    (HiResCAM for the Flatten head; the class activation map for the GAP head, whose per-cell weights
    are W[k, c] / (h * w)). No gradient is needed, so the ONNX graph computes it, FP32 and INT8 alike.
    Shape (N, classes, h, w).
    """
    features = model.get_layer(LUNG_PRIOR if recipe.lung_prior else FEATURES).output
    kernel = model.get_layer(PROBABILITIES).get_weights()[0]
    h, w, k = features.shape[1:]
    if recipe.head == "flatten":
        per_cell = kernel.reshape(h, w, k, -1)  # Flatten reads the map row by row, channels last
    else:
        per_cell = np.broadcast_to(kernel / (h * w), (h, w, *kernel.shape))
    per_cell = per_cell.transpose(0, 1, 3, 2)  # (h, w, classes, k)
    # A Mul and a ReduceSum in ONNX: plain enough for onnxruntime's shape inference and quantizer.
    contributions = keras.ops.sum(keras.ops.expand_dims(features, 3) * per_cell, axis=-1)
    maps = layers.Permute((3, 1, 2), name=EVIDENCE)(contributions)
    return keras.Model(model.input, [model.output, maps], name=f"{model.name}_with_evidence")

"""The transfer model, in Keras' functional API: 0-255 pixels -> scale -> frozen VGG16 -> head."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from cxr.runtime.errors import ModelError

# What the graph itself does to its 0-255 input; recorded in the exported model's metadata.
IN_GRAPH_PREPROCESSING = "pixels / 255 (Rescaling layer), then VGG16 convolutions"


@dataclass
class TransferModel:
    """The whole model, and its two halves sharing the same layers.

    ``features`` (scaling and the frozen base) and ``head`` (the trainable classifier) let training
    compute the base's output once and fit only the head; ``model`` is what gets saved and exported.
    """

    model: keras.Model
    features: keras.Model
    head: keras.Model


def build_model(num_classes: int, image_size: int, weights: str | None) -> TransferModel:
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    scaled = layers.Rescaling(1.0 / 255, name="scale_0_1")(inputs)
    try:
        base = keras.applications.VGG16(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
        )
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load VGG16 weights from {weights}: {error}") from None
    base.trainable = False
    # training=False keeps the base in inference mode even when it is unfrozen later.
    features = keras.Model(inputs, base(scaled, training=False), name="features")

    feature_inputs = keras.Input(shape=features.output.shape[1:], name="vgg16_features")
    x = layers.Flatten(name="flatten")(feature_inputs)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    head = keras.Model(feature_inputs, outputs, name="head")

    model = keras.Model(inputs, head(features.output), name="cxr_vgg16")
    return TransferModel(model=model, features=features, head=head)

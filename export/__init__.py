"""Exporting a trained model to ONNX (imports TensorFlow/Keras; install the ``train`` extra)."""

import os

# TensorFlow's C++ start-up chatter hides the lines people need; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

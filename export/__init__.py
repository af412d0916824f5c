"""Exporting a trained model to ONNX (imports TensorFlow/Keras; install the ``train`` extra)."""

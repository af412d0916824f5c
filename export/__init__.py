"""Exporting a trained model to ONNX (imports TensorFlow/Keras; install the ``train`` extra)."""

# The least share of test images on which the INT8 model must pick the FP32 model's class to be
# written (cxr-export --min-agreement sets another), and below which the CLI warns that their
# out-of-distribution flags differ. Here, not in quantize.py, so that the CLI can show it without
# importing onnx.
MIN_AGREEMENT = 0.99

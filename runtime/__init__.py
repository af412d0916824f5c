"""cxr's edge runtime: decoding, the model-file contract, the Predictor and cxr-predict. No TensorFlow.

Its base install is numpy, pillow, onnxruntime and typer.
"""

"""cxr's edge runtime: decoding, the model-file contract and the predictor. No TensorFlow here."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cxr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

"""What every cxr command shares, none of it TensorFlow.

- ``errors``: the few exception types, each with its exit code
- ``cli``: the one command-line boundary (errors to exit codes, --version, logging, optional extras)
- ``files``: writing files so that a crash never leaves one that looks complete
- ``progress``: progress bars and phase spinners on stderr
- ``datasets``: folder-per-class data sets, decoding them, the stratified split
- ``figures``: the PNG figures (matplotlib, the ``train`` or ``eval`` extra; imported only where drawn)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cxr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

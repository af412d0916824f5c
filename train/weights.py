"""Where the VGG16 base's starting weights come from: ``imagenet``, ``none`` or a local .h5 file."""

from __future__ import annotations

from pathlib import Path

import keras

from cxr.core.errors import ModelError, first_line

# Keras' own file, the one keras.applications.VGG16(weights="imagenet", include_top=False) fetches.
IMAGENET_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
IMAGENET_MD5 = "6d6bbae143d832006294945121d1f1fc"


def resolve_weights(spec: str) -> str | None:
    """Turn ``--weights`` into what keras.applications.VGG16 takes: a local path, or None."""
    if spec == "none":
        return None
    if spec == "imagenet":
        return _download_imagenet()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(f"--weights {spec}: no such file (use imagenet, none or a VGG16 no-top .h5)")
    return str(path)


def _download_imagenet() -> str:
    try:
        return keras.utils.get_file(
            fname=IMAGENET_URL.rsplit("/", 1)[1],
            origin=IMAGENET_URL,
            cache_subdir="models",
            file_hash=IMAGENET_MD5,
        )
    except Exception as error:  # Keras wraps every network failure in a bare Exception
        raise ModelError(
            f"could not download the VGG16 ImageNet weights ({first_line(error)}); offline, pass "
            "--weights PATH to a local VGG16 no-top .h5 (or set CXR_VGG16_WEIGHTS)"
        ) from None

"""The one definition of how a file becomes model input, used by training and the runtime alike.

Any supported file is decoded to an upright 8-bit RGB image and resized to the model's square input.
Pixels stay 0-255: scaling lives inside the model graph, so no caller can forget or repeat it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal, Union, get_args

import numpy as np
from PIL import Image, ImageOps

from cxr.core.errors import InputFileError, first_line

from .dicom import is_dicom, is_dicom_bytes, read_dicom_pixels

# A 640x640 X-ray is 0.4 MP and the largest scanners write about 4,300x3,500 (15 MP): anything far
# beyond that is a decompression bomb or not an X-ray, and decoding it could exhaust memory.
MAX_PIXELS = 64_000_000
# The smallest side worth a prediction: a thumbnail or an icon is not an X-ray, and the model would
# still answer with confidence.
MIN_SIDE = 64
# Images with more than 8 bits per sample are reduced (by taking every k-th pixel) to this longest
# side before their values are stretched: a small, well-compressed 16-bit file can hold 64 megapixels,
# and the stretch works on floats. Far above any model input size, so nothing it needs is lost.
MAX_HIGH_BIT_SIDE = 2048

RESAMPLING = Image.Resampling.BILINEAR

# What the runtime does to a file before the graph sees it; written into the model's metadata.
PREPROCESSING = {
    "decode": "JPEG decoded at the smallest DCT scale not below the input size; EXIF orientation applied; alpha composited on black; 16-bit stretched to 0-255; "
    "DICOM: modality and VOI LUT or window, MONOCHROME1 inverted, stretched to 0-255",
    "color": "RGB, grayscale replicated to 3 channels",
    "resize": "bilinear to the input size, aspect ratio not kept",
    "contrast": "as the model's input.contrast says: none, or equalize (gray histogram equalized after resizing)",
    "pixels": "0-255 float32, NHWC",
}


# What a model can read: a file's path, its bytes, an image already opened, or an array of pixels
# (H x W gray or H x W x 3 RGB; 8-bit as is, any other type stretched like a 16-bit file).
ImageSource = Union[str, Path, bytes, Image.Image, np.ndarray]


def read_rgb(source: ImageSource, min_size: int | None = None, name: str | None = None) -> Image.Image:
    """Decode an image to an upright 8-bit RGB image, or raise InputFileError naming it.

    ``name`` is how errors call an in-memory image (a path names itself). With ``min_size``, a JPEG
    may be decoded at a reduced scale (1/2, 1/4, 1/8) that keeps both sides at least that large:
    several times faster for an image that will be resized down anyway. Images under MIN_SIDE a
    side, of one uniform gray, or with NaN or infinite values are refused: any answer would be noise.
    """
    label = name or _label(source)
    image = _decode(source, label, min_size)
    low, high = image.convert("L").getextrema()
    if low == high:
        raise InputFileError(f"{label}: the image is one uniform gray ({low}): nothing to classify")
    return image


def _label(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return "uploaded bytes"
    return "array" if isinstance(source, np.ndarray) else "image"


def _decode(source: ImageSource, label: str, min_size: int | None) -> Image.Image:
    if isinstance(source, Image.Image):
        _check_pixels(label, *source.size)
        return _to_rgb(ImageOps.exif_transpose(source), label)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, label)
    if isinstance(source, bytes):
        stream: Path | io.BytesIO = io.BytesIO(source)
        dicom = is_dicom_bytes(source[:132])
    else:
        stream = _regular_file(Path(source), label)
        dicom = is_dicom(stream)
    if dicom:
        pixels = read_dicom_pixels(stream, label, check_size=_check_pixels, reduce=_reduced)
        return _stretch_to_8bit(pixels, label).convert("RGB")
    try:
        with Image.open(stream) as image:
            _check_pixels(label, *image.size)
            if min_size and image.format == "JPEG":
                image.draft(image.mode, (min_size, min_size))
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image), label)
    except InputFileError:
        raise
    except Image.DecompressionBombError:
        raise InputFileError(f"{label}: image is over the pixel limit") from None
    except Image.UnidentifiedImageError:
        raise InputFileError(f"{label}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow reports truncated and corrupt data with these three.
        raise InputFileError(f"{label}: cannot decode image ({first_line(error)})") from None


def _regular_file(path: Path, label: str) -> Path:
    # Only regular files: a FIFO or a device would block or never end.
    if not path.exists():
        raise InputFileError(f"{label}: no such file")
    if path.is_dir():
        raise InputFileError(f"{label}: is a directory")
    if not path.is_file():
        raise InputFileError(f"{label}: not a regular file")
    return path


def _array_to_rgb(pixels: np.ndarray, label: str) -> Image.Image:
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
        raise InputFileError(f"{label}: an image array is H x W or H x W x 3, not {pixels.shape}")
    _check_pixels(label, pixels.shape[1], pixels.shape[0])
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype == np.uint8:
        return Image.fromarray(pixels).convert("RGB")
    return _stretch_to_8bit(_reduced(pixels), label).convert("RGB")


def _check_pixels(label: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise InputFileError(f"{label}: image is {width}x{height}, over the limit of {MAX_PIXELS:,} pixels")
    if min(width, height) < MIN_SIDE:
        raise InputFileError(f"{label}: image is {width}x{height}, under {MIN_SIDE} pixels a side: too small to be an X-ray")


def _step(height: int, width: int) -> int:
    """Take every k-th row and column, so that the longest side is at most MAX_HIGH_BIT_SIDE."""
    return -(-max(height, width) // MAX_HIGH_BIT_SIDE)


def _reduced(pixels: np.ndarray) -> np.ndarray:
    step = _step(*pixels.shape[:2])
    return pixels[::step, ::step]  # a view: no copy of the full-size array


def _high_bit_values(image: Image.Image) -> np.ndarray:
    # Row by row: a whole-image array would copy the decoded image (twice, through bytes).
    width, height = image.size
    step = _step(height, width)
    return np.stack([np.asarray(image.crop((0, y, width, y + 1)))[0, ::step] for y in range(0, height, step)])


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _stretch_to_8bit(_high_bit_values(image), label).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def _stretch_to_8bit(pixels: np.ndarray, label: str) -> Image.Image:
    # X-ray detectors write 10 to 16 significant bits into 16-bit files; a fixed /257 would leave a
    # 12-bit image nearly black, so the image's own range is mapped to 0-255.
    values = pixels.astype(np.float64)
    if not np.isfinite(values).all():
        raise InputFileError(f"{label}: the image has NaN or infinite pixel values")
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.round(scaled).astype(np.uint8))


# How the resized image's contrast is normalised. "equalize" spreads the gray levels evenly over 0-255,
# so that an over- or under-exposed X-ray from another scanner looks like those the model learnt from.
Contrast = Literal["none", "equalize"]
CONTRASTS: tuple[str, ...] = get_args(Contrast)


def to_model_input(image: Image.Image, size: int, contrast: str = "none") -> np.ndarray:
    """Resize an RGB image to the model's square input: uint8 array of shape (size, size, 3)."""
    resized = image.resize((size, size), RESAMPLING)
    if contrast == "equalize":
        resized = ImageOps.equalize(resized.convert("L")).convert("RGB")
    elif contrast != "none":
        raise ValueError(f"contrast must be one of {CONTRASTS}, not {contrast!r}")
    return np.asarray(resized, dtype=np.uint8)


def load_image(source: ImageSource, size: int, contrast: str = "none", name: str | None = None) -> np.ndarray:
    """Read an image and make it model input; see read_rgb and to_model_input."""
    return to_model_input(read_rgb(source, min_size=size, name=name), size, contrast)

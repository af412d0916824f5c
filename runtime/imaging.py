"""The one definition of how a file becomes model input, used by training and the runtime alike.

Any supported file is decoded to an upright 8-bit RGB image and resized to the model's square input.
Pixels stay 0-255: scaling lives inside the model graph, so no caller can forget or repeat it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .dicom import is_dicom, read_dicom_pixels
from .errors import InputFileError

# A 640x640 X-ray is 0.4 MP and the largest scanners write about 4,300x3,500 (15 MP): anything far
# beyond that is a decompression bomb or not an X-ray, and decoding it could exhaust memory.
MAX_PIXELS = 64_000_000

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


def read_rgb(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode an image file to an upright 8-bit RGB image, or raise InputFileError naming the file.

    With ``min_size``, a JPEG may be decoded at a reduced scale (1/2, 1/4, 1/8) that keeps both sides
    at least that large: several times faster for an image that will be resized down anyway.
    """
    path = Path(path)
    if path.is_file() and is_dicom(path):
        pixels = read_dicom_pixels(path, check_size=_check_pixels)
        return _stretch_to_8bit(pixels).convert("RGB")
    try:
        with Image.open(path) as image:
            _check_pixels(path, *image.size)
            if min_size and image.format == "JPEG":
                image.draft(image.mode, (min_size, min_size))
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
    except InputFileError:
        raise
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a directory") from None
    except Image.DecompressionBombError:
        raise InputFileError(f"{path}: image is over the pixel limit") from None
    except Image.UnidentifiedImageError:
        raise InputFileError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow reports truncated and corrupt data with these three.
        raise InputFileError(f"{path}: cannot decode image ({error})") from None


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise InputFileError(f"{path}: image is {width}x{height}, over the limit of {MAX_PIXELS:,} pixels")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _stretch_to_8bit(np.asarray(image)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def _stretch_to_8bit(pixels: np.ndarray) -> Image.Image:
    # X-ray detectors write 10 to 16 significant bits into 16-bit files; a fixed /257 would leave a
    # 12-bit image nearly black, so the image's own range is mapped to 0-255.
    values = pixels.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.round(scaled).astype(np.uint8))


# How the resized image's contrast is normalised. "equalize" spreads the gray levels evenly over 0-255,
# so that an over- or under-exposed X-ray from another scanner looks like those the model learnt from.
CONTRASTS = ("none", "equalize")


def to_model_input(image: Image.Image, size: int, contrast: str = "none") -> np.ndarray:
    """Resize an RGB image to the model's square input: uint8 array of shape (size, size, 3)."""
    resized = image.resize((size, size), RESAMPLING)
    if contrast == "equalize":
        resized = ImageOps.equalize(resized.convert("L")).convert("RGB")
    elif contrast != "none":
        raise ValueError(f"contrast must be one of {CONTRASTS}, not {contrast!r}")
    return np.asarray(resized, dtype=np.uint8)


def load_image(path: str | Path, size: int, contrast: str = "none") -> np.ndarray:
    """Read a file and make it model input; see read_rgb and to_model_input."""
    return to_model_input(read_rgb(path, min_size=size), size, contrast)

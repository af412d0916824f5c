"""DICOM X-rays (the ``dicom`` extra): the stored values made into the image a radiologist sees."""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cxr.core.errors import InputFileError, MissingDependencyError, first_line

_SIGNATURE = slice(128, 132)  # "DICM" after the 128-byte preamble
_PIXEL_DATA = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom(path: Path) -> bool:
    """The ``DICM`` signature after the 128-byte preamble: the content decides, not the name."""
    try:
        with path.open("rb") as file:
            return is_dicom_bytes(file.read(132))
    except OSError:
        return False


def is_dicom_bytes(head: bytes) -> bool:
    return head[_SIGNATURE] == b"DICM"


def read_dicom_pixels(
    source: Path | BinaryIO,
    label: str,
    check_size: Callable[[str, int, int], None],
    reduce: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Displayed values of a single-frame DICOM: modality LUT, VOI LUT or window, MONOCHROME1 inverted,
    palette colour looked up.

    ``check_size(label, width, height)`` runs before the pixel data is decoded and may refuse it;
    ``reduce`` shrinks the decoded stored values before the LUTs turn them into floats. Returns a
    float array, (H, W) for grayscale or (H, W, 3) for colour, in the file's own units. pydicom's
    warnings about a file are not printed: what matters reaches the caller as one InputFileError.
    Safe to call from several threads at once.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
    except ImportError:
        raise MissingDependencyError(
            f"{label}: reading DICOM needs the dicom extra: pip install 'cxr[dicom]'"
        ) from None
    _silence_pydicom()
    try:
        dataset = pydicom.dcmread(source)
    except Exception as error:  # pydicom raises many types for damaged files
        raise InputFileError(f"{label}: cannot read DICOM ({first_line(error)})") from None
    _check_is_image(dataset, label)
    check_size(label, int(dataset.Columns), int(dataset.Rows))
    try:
        pixels = reduce(dataset.pixel_array)
    except Exception as error:
        raise _decode_error(dataset, label, error) from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    try:
        if photometric == "PALETTE COLOR":
            return apply_color_lut(pixels, dataset).astype(np.float64)
        if not photometric.startswith("MONOCHROME"):
            return pixels.astype(np.float64)  # pydicom already converts colour to RGB
        # The LUTs read the file's own attributes, which may be damaged too (a zero window width).
        values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float64)
    except Exception as error:  # numpy and pydicom raise many types for damaged attributes
        raise InputFileError(f"{label}: cannot read DICOM ({first_line(error)})") from None
    if photometric == "MONOCHROME1":  # low values are bright: flip so bone is white as usual
        values = values.max() + values.min() - values
    return values


@functools.cache
def _silence_pydicom() -> None:
    # Once per process, not per call: warnings.catch_warnings() swaps the process-wide filters and
    # is not safe while another thread reads a file (the demo serves several at once).
    warnings.filterwarnings("ignore", module="pydicom")


def _check_is_image(dataset: Any, label: str) -> None:
    """Refuse, by name, what is not one 2-D image: an RT plan, a report, a truncated file, frames."""
    if not any(key in dataset for key in _PIXEL_DATA) or "Rows" not in dataset or "Columns" not in dataset:
        kind = getattr(dataset.get("SOPClassUID"), "name", None) or "unknown kind"
        raise InputFileError(f"{label}: a DICOM file without an image ({kind})")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputFileError(f"{label}: multi-frame DICOM ({frames} frames) is not supported")


def _decode_error(dataset: Any, label: str, error: Exception) -> InputFileError:
    """Name the compression and what to do when its pixel data cannot be decoded."""
    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        return InputFileError(f"{label}: cannot decode DICOM pixel data ({first_line(error)})")
    if importlib.util.find_spec("pylibjpeg") is None:
        advice = "pip install 'cxr[dicom]' brings the pylibjpeg decoders"
    else:
        advice = "the installed decoders failed on it; convert it to uncompressed DICOM (dcmdjpeg, gdcmconv --raw)"
    return InputFileError(f"{label}: cannot decode {syntax.name} pixel data: {advice}")

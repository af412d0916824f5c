"""DICOM X-rays (the ``dicom`` extra): the stored values made into the image a radiologist sees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cxr.core.errors import InputFileError, MissingDependencyError, first_line

_SIGNATURE = slice(128, 132)  # "DICM" after the 128-byte preamble


def is_dicom(path: Path) -> bool:
    """A ``.dcm`` name, or the ``DICM`` signature after the 128-byte preamble."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as file:
            return is_dicom_bytes(file.read(132))
    except OSError:
        return False


def is_dicom_bytes(head: bytes) -> bool:
    return head[_SIGNATURE] == b"DICM"


def read_dicom_pixels(
    source: Path | BinaryIO, label: str, check_size: Callable[[str, int, int], None]
) -> np.ndarray:
    """Displayed values of a single-frame DICOM: modality LUT, VOI LUT or window, MONOCHROME1 inverted.

    ``check_size(label, width, height)`` runs before the pixel data is decoded and may refuse it.
    Returns a float array, (H, W) for grayscale or (H, W, 3) for colour, in the file's own units.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise MissingDependencyError(
            f"{label}: reading DICOM needs the dicom extra: pip install 'cxr[dicom]'"
        ) from None
    try:
        dataset = pydicom.dcmread(source)
        if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
            raise InputFileError(f"{label}: multi-frame DICOM ({dataset.NumberOfFrames} frames) is not supported")
        check_size(label, int(dataset.Columns), int(dataset.Rows))
        pixels = dataset.pixel_array
        photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
        if not photometric.startswith("MONOCHROME"):
            return pixels.astype(np.float64)  # pydicom already converts colour to RGB
        # The LUTs read the file's own attributes, which may be damaged too (a zero window width).
        values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float64)
    except InputFileError:
        raise
    except Exception as error:  # pydicom and numpy raise many types for damaged or pixel-less files
        raise InputFileError(f"{label}: cannot read DICOM ({first_line(error)})") from None
    if photometric == "MONOCHROME1":  # low values are bright: flip so bone is white as usual
        values = values.max() + values.min() - values
    return values

"""DICOM X-rays (the ``dicom`` extra): the stored values made into the image a radiologist sees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import InputFileError, MissingDependencyError


def is_dicom(path: Path) -> bool:
    """A ``.dcm`` name, or the ``DICM`` signature after the 128-byte preamble."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as file:
            return file.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_dicom_pixels(path: Path, check_size: Callable[[Path, int, int], None]) -> np.ndarray:
    """Displayed values of a single-frame DICOM: modality LUT, VOI LUT or window, MONOCHROME1 inverted.

    ``check_size(path, width, height)`` runs before the pixel data is decoded and may refuse it.
    Returns a float array, (H, W) for grayscale or (H, W, 3) for colour, in the file's own units.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise MissingDependencyError(
            f"{path}: reading DICOM needs the dicom extra: pip install 'cxr[dicom]'"
        ) from None
    try:
        dataset = pydicom.dcmread(path)
        if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
            raise InputFileError(f"{path}: multi-frame DICOM ({dataset.NumberOfFrames} frames) is not supported")
        check_size(path, int(dataset.Columns), int(dataset.Rows))
        pixels = dataset.pixel_array
    except InputFileError:
        raise
    except Exception as error:  # pydicom raises many types for damaged or pixel-less files
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise InputFileError(f"{path}: cannot read DICOM ({reason})") from None
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    if not photometric.startswith("MONOCHROME"):
        return pixels.astype(np.float64)  # pydicom already converts colour to RGB
    values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float64)
    if photometric == "MONOCHROME1":  # low values are bright: flip so bone is white as usual
        values = values.max() + values.min() - values
    return values

"""Bad and unusual inputs, made on the fly, each with the answer every reader must give.

``refused`` cases end in one line naming the file and containing ``message``; the others are read.
DICOM cases need pydicom (the dicom extra); some copy files that pydicom's wheel ships for its own
tests (an RT plan, a 12-bit JPEG, a palette-colour image).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], Path]  # writes the input into a folder, returns its path
    message: str | None  # what the one-line refusal says; None: the input is read and predicted
    dicom: bool = False

    @property
    def refused(self) -> bool:
        return self.message is not None


def _xray_like(size: int = 96) -> np.ndarray:
    return np.tile(np.linspace(20, 230, size), (size, 1)).astype(np.uint8)


def _png(folder: Path, name: str, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(folder / name)
    return folder / name


def _float_tiff(bad: float) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        values = _xray_like().astype(np.float32)
        values[40, 40] = bad
        path = folder / f"float-{bad}.tiff"
        Image.fromarray(values).save(path)
        return path

    return make


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **attributes) -> Path:
    """A 12-bit DX DICOM of ``pixels`` ((H, W), or (frames, H, W)), with any attributes added."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    frames = pixels if pixels.ndim == 3 else pixels[np.newaxis]
    ds.Rows, ds.Columns = frames.shape[1:]
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = frames.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _dicom(folder: Path, name: str, **attributes) -> Path:
    return write_dicom(folder / name, _xray_like().astype(np.uint16) * 16, **attributes)


def _slope_not_a_number(folder: Path) -> Path:
    # pydicom will not write a bad DS value, so a good one is written and overwritten in the bytes.
    path = _dicom(folder, "slope.dcm", RescaleSlope="9.75", RescaleIntercept=0)
    path.write_bytes(path.read_bytes().replace(b"9.75", b"abc "))
    return path


def _short_voi_lut(folder: Path) -> Path:
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]  # says 4,096 entries ...
    lut.LUTData = np.array([0, 100, 200], np.uint16).tobytes()  # ... holds three
    return _dicom(folder, "short-lut.dcm", VOILUTSequence=[lut])


def _pydicom_file(name: str, target: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from pydicom.data import get_testdata_file

        return Path(shutil.copy(get_testdata_file(name), folder / target))

    return make


def _truncated_dicom(folder: Path) -> Path:
    whole = _dicom(folder, "whole.dcm").read_bytes()
    (folder / "whole.dcm").unlink()
    path = folder / "truncated.dcm"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _truncated_png(folder: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)).save(buffer, "PNG")
    path = folder / "cut.png"
    path.write_bytes(buffer.getvalue()[:5000])
    return path


def _text(folder: Path, name: str, content: bytes) -> Path:
    (folder / name).write_bytes(content)
    return folder / name


def _png_named_dcm(folder: Path) -> Path:
    Image.fromarray(_xray_like()).save(folder / "really-a-png.dcm", format="PNG")
    return folder / "really-a-png.dcm"


def _dicom_without_suffix(folder: Path) -> Path:
    path = _dicom(folder, "scan.dcm")
    return path.rename(folder / "scan")


CASES = [
    Case("empty file", lambda f: _text(f, "empty.png", b""), "not an image"),
    Case("text", lambda f: _text(f, "notes.jpg", b"not an X-ray"), "not an image"),
    Case("truncated PNG", _truncated_png, "cannot decode"),
    Case("NaN pixel", _float_tiff(np.nan), "NaN or infinite"),
    Case("inf pixel", _float_tiff(np.inf), "NaN or infinite"),
    Case("1x1 image", lambda f: _png(f, "dot.png", np.array([[128]], np.uint8)), "under 64 pixels a side"),
    Case("thin strip", lambda f: _png(f, "strip.png", _xray_like()[:20]), "under 64 pixels a side"),
    Case("uniform image", lambda f: _png(f, "gray.png", np.full((96, 96), 77, np.uint8)), "one uniform gray"),
    Case("PNG named .dcm", _png_named_dcm, None),
    Case("DICOM window width 0", lambda f: _dicom(f, "window0.dcm", WindowCenter=100, WindowWidth=0), "cannot read DICOM", dicom=True),
    Case("DICOM slope not a number", _slope_not_a_number, "cannot read DICOM", dicom=True),
    Case("DICOM VOI LUT shorter than declared", _short_voi_lut, "cannot read DICOM", dicom=True),
    Case("DICOM truncated", _truncated_dicom, "cannot", dicom=True),
    Case("DICOM RT plan", _pydicom_file("rtplan.dcm", "plan.dcm"), "a DICOM file without an image (RT Plan Storage)", dicom=True),
    Case("DICOM truncated RT plan", _pydicom_file("rtplan_truncated.dcm", "plan-cut.dcm"), "without an image", dicom=True),
    Case("DICOM 12-bit JPEG", _pydicom_file("JPEG-lossy.dcm", "jpeg12.dcm"), "cannot decode JPEG Extended", dicom=True),
    Case("DICOM palette colour", _pydicom_file("examples_palette.dcm", "palette.dcm"), None, dicom=True),
    Case("DICOM without a suffix", _dicom_without_suffix, None, dicom=True),
]


def make_fifo(folder: Path) -> Path:
    """A named pipe: reading it would block forever, so it must be refused before it is opened."""
    path = folder / "pipe.png"
    os.mkfifo(path)
    return path

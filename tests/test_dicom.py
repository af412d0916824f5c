"""DICOM input: the displayed image (LUTs, window, MONOCHROME1), through the same read_rgb as PNGs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from corpus import write_dicom
from cxr.core.errors import InputFileError, MissingDependencyError
from cxr.runtime.imaging import read_rgb

pydicom = pytest.importorskip("pydicom", reason="the dicom extra (pydicom) is not installed")


def ramp() -> np.ndarray:
    return np.tile(np.linspace(0, 4000, 128), (64, 1)).astype(np.uint16)


def test_monochrome2_is_stretched_left_dark_right_bright(tmp_path: Path) -> None:
    image = np.asarray(read_rgb(write_dicom(tmp_path / "a.dcm", ramp())))
    assert image.shape == (64, 128, 3)
    assert image[:, 0].max() == 0 and image[:, -1].min() == 255


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    normal = np.asarray(read_rgb(write_dicom(tmp_path / "m2.dcm", ramp())))
    inverted = np.asarray(read_rgb(write_dicom(tmp_path / "m1.dcm", ramp(), "MONOCHROME1")))
    assert np.abs(inverted.astype(int) - (255 - normal.astype(int))).max() <= 1


def test_window_is_applied(tmp_path: Path) -> None:
    # A window over the lower half of the values: everything above it saturates to white.
    path = write_dicom(tmp_path / "w.dcm", ramp(), WindowCenter=1000, WindowWidth=2000)
    image = np.asarray(read_rgb(path))[0, :, 0]
    assert image[:60].max() < 255 and image[70:].min() == 255 and image[0] == 0


def test_signature_without_dcm_suffix(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "scan.img", ramp())
    assert np.asarray(read_rgb(path)).shape == (64, 128, 3)


def test_multi_frame_is_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "multi.dcm", np.stack([ramp(), ramp()]))
    with pytest.raises(InputFileError, match="multi-frame"):
        read_rgb(path)


def test_corrupt_dicom_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(InputFileError, match="bad.dcm"):
        read_rgb(path)


def test_without_pydicom_the_extra_is_named(tmp_path: Path, monkeypatch) -> None:
    path = write_dicom(tmp_path / "a.dcm", ramp())
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(MissingDependencyError, match="cxr\\[dicom\\]"):
        read_rgb(path)

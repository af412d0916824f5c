"""Decoding: every supported mode and format ends as the same upright uint8 RGB model input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.core.errors import InputFileError
from cxr.runtime.imaging import MAX_PIXELS, load_image, read_rgb


def gradient(width: int = 40, height: int = 30) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))


@pytest.mark.parametrize(
    "mode, suffix",
    [("L", ".png"), ("RGB", ".jpg"), ("RGBA", ".png"), ("P", ".png"), ("L", ".bmp"), ("RGB", ".tiff")],
)
def test_modes_and_formats_give_rgb(tmp_path: Path, mode: str, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    Image.fromarray(gradient(), "L").convert(mode).save(path)
    pixels = load_image(path, 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    # Grayscale content: all three channels agree (within JPEG's rounding), left dark, right bright.
    assert np.abs(pixels[..., 0].astype(int) - pixels[..., 2]).max() <= 3
    assert pixels[:, 0].mean() < 40 and pixels[:, -1].mean() > 215


def test_sixteen_bit_is_stretched_to_full_range(tmp_path: Path) -> None:
    twelve_bit = (np.tile(np.linspace(0, 4095, 40), (30, 1))).astype(np.uint16)
    path = tmp_path / "x16.png"
    Image.fromarray(twelve_bit).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(read_rgb(path))
    assert pixels.min() == 0 and pixels.max() == 255


def test_transparent_pixels_become_black(tmp_path: Path) -> None:
    rgba = np.full((10, 10, 4), 255, np.uint8)
    rgba[:, :5, 3] = 0
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    pixels = np.asarray(read_rgb(path))
    assert pixels[:, :5].max() == 0 and pixels[:, 5:].min() == 255


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((10, 20), np.uint8)
    stored[0, 0] = 255  # top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "rot.jpg"
    Image.fromarray(stored, "L").save(path, exif=exif, quality=100)
    upright = np.asarray(read_rgb(path))[..., 0]
    assert upright.shape == (20, 10)
    assert upright[0, -1] > 128 and upright[0, 0] < 128  # stored top-left ends top-right


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not an image"),
        (b"hello, I am text", "not an image"),
        ("truncated", "cannot decode"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "bad.png"
    if content == "truncated":
        buffer = io.BytesIO()
        noise = np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)
        Image.fromarray(noise).save(buffer, "PNG")
        content = buffer.getvalue()[:5000]
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=message) as error:
        read_rgb(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        read_rgb(tmp_path / "nope.png")


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    side = int(MAX_PIXELS**0.5) + 100
    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)
    with pytest.raises(InputFileError, match="over the limit"):
        read_rgb(path)


def test_equalize_undoes_exposure_and_spreads_gray_levels(tmp_path: Path) -> None:
    """The same X-ray, dim and flat or bright, is one model input once equalized."""
    scene = np.random.default_rng(0).integers(0, 51, (32, 32))
    dim, bright = tmp_path / "dim.png", tmp_path / "bright.png"
    Image.fromarray((40 + scene).astype(np.uint8)).save(dim)  # gray levels 40-90
    Image.fromarray((100 + 3 * scene).astype(np.uint8)).save(bright)  # the same levels, 100-250
    plain = load_image(dim, 32)
    assert plain.max() < 100
    equalized = load_image(dim, 32, contrast="equalize")
    assert equalized.min() < 10 and equalized.max() == 255
    np.testing.assert_array_equal(equalized, load_image(bright, 32, contrast="equalize"))
    with pytest.raises(ValueError, match="contrast"):
        load_image(dim, 32, contrast="clahe")

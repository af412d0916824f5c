"""Decoding: every supported mode and format ends as the same upright uint8 RGB model input."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.core.errors import InputFileError
from cxr.runtime.imaging import MAX_PIXELS, load_image, read_rgb


def gradient(width: int = 80, height: int = 64) -> np.ndarray:
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
    twelve_bit = (np.tile(np.linspace(0, 4095, 80), (64, 1))).astype(np.uint16)
    path = tmp_path / "x16.png"
    Image.fromarray(twelve_bit).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(read_rgb(path))
    assert pixels.min() == 0 and pixels.max() == 255


def test_transparent_pixels_become_black(tmp_path: Path) -> None:
    rgba = np.full((64, 64, 4), 255, np.uint8)
    rgba[:, :32, 3] = 0
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    pixels = np.asarray(read_rgb(path))
    assert pixels[:, :32].max() == 0 and pixels[:, 32:].min() == 255


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((64, 128), np.uint8)
    stored[:8, :8] = 255  # top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "rot.jpg"
    Image.fromarray(stored, "L").save(path, exif=exif, quality=100)
    upright = np.asarray(read_rgb(path))[..., 0]
    assert upright.shape == (128, 64)
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
    scene = np.random.default_rng(0).integers(0, 51, (64, 64))
    dim, bright = tmp_path / "dim.png", tmp_path / "bright.png"
    Image.fromarray((40 + scene).astype(np.uint8)).save(dim)  # gray levels 40-90
    Image.fromarray((100 + 3 * scene).astype(np.uint8)).save(bright)  # the same levels, 100-250
    plain = load_image(dim, 64)
    assert plain.max() < 100
    equalized = load_image(dim, 64, contrast="equalize")
    assert equalized.min() < 10 and equalized.max() == 255
    np.testing.assert_array_equal(equalized, load_image(bright, 64, contrast="equalize"))
    with pytest.raises(ValueError, match="contrast"):
        load_image(dim, 32, contrast="clahe")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_pixels_are_refused(tmp_path: Path, bad: float) -> None:
    values = np.tile(np.linspace(0, 1, 80, dtype=np.float32), (64, 1))
    values[10, 10] = bad
    path = tmp_path / "float.tiff"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "F"
    for source in (path, values):
        with pytest.raises(InputFileError, match="NaN or infinite"):
            read_rgb(source)


@pytest.mark.parametrize("size", [(1, 1), (63, 200), (200, 40)])
def test_images_too_small_to_be_x_rays_are_refused(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "tiny.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, size[::-1], dtype=np.uint8)).save(path)
    with pytest.raises(InputFileError, match="under 64 pixels a side"):
        read_rgb(path)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_uniform_images_are_refused(tmp_path: Path, value: int) -> None:
    path = tmp_path / "flat.png"
    Image.new("L", (256, 256), value).save(path)
    with pytest.raises(InputFileError, match=f"one uniform gray \\({value}\\)"):
        read_rgb(path)


def test_a_large_sixteen_bit_image_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """An 8000x8000 16-bit PNG compresses to a few hundred KB; reading it must not take gigabytes."""
    path = tmp_path / "big16.png"
    side = 8000
    big = np.zeros((side, side), np.uint16)
    big[:, : side // 2] = 40000
    Image.fromarray(big).save(path)
    del big
    script = (
        "import re\n"
        "from cxr.runtime.imaging import load_image\n"
        f"pixels = load_image({str(path)!r}, 224)\n"
        "assert pixels[:, :100].min() == 255 and pixels[:, -100:].max() == 0, pixels.mean()\n"
        # This process's own peak (ru_maxrss would count the forking parent's pages too).
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.split()[-1])
    assert peak_mb < 600, f"peak {peak_mb} MB"  # 1.9 GB before it was bounded

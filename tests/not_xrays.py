"""Images that are not chest X-rays, as people upload them by mistake: photos, a text page, coins,
microscopy, a retina, a CT phantom (scikit-image's sample data), the README's own screenshots, and
made ones (noise, a gradient, stripes, a checkerboard, a disk)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = [ROOT / "docs" / "demo.png", ROOT / "docs" / "heatmaps.png"]
SIDE = 300


def sample_images() -> list[Path]:
    """scikit-image's sample photos and scans (its animated GIF is 14x25 pixels: the runtime refuses
    anything that small before the model sees it)."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))


def made_images(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:SIDE, 0:SIDE]
    return {
        "noise": rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8),
        "colour-noise": rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8),
        "gradient": (columns * 255 // (SIDE - 1)).astype(np.uint8),
        "stripes": (rows // 10 % 2 * 255).astype(np.uint8),
        "checkerboard": ((rows // 25 + columns // 25) % 2 * 255).astype(np.uint8),
        "disk": np.where(np.hypot(rows - SIDE / 2, columns - SIDE / 2) < SIDE / 3, 200, 20).astype(np.uint8),
    }


def write_not_xrays(folder: Path) -> Path:
    """All of them in ``folder`` (PNG), which is returned."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in [*sample_images(), *SCREENSHOTS]:
        shutil.copyfile(path, folder / path.name)
    for name, pixels in made_images().items():
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder

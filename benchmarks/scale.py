"""Training time and memory against the number of images, and the feature cache's second-run speed-up.

    python benchmarks/scale.py --weights PATH [--sizes 1000 4000 16000]

Makes data sets of N images by repeating the real train splits (both collections) at 96 px, each
copy a distinct file (a PNG text chunk numbers it, so the cache cannot share rows between copies),
then runs ``cxr-train`` on each twice in a fresh process: once with an empty cache and once more
with another seed, which reads the features back. Memory is sampled from /proc every 50 ms: the
process's own (anonymous) memory, and file pages (the memory-mapped feature rows, which the
kernel can drop at will). Prints a Markdown table.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer
from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parents[1]
DATA = [ROOT.parent / "shared" / "data" / name for name in ("Covid19-dataset", "Covid19-radiography-subset")]
SIDE = 96  # pixels of the written copies
IMAGE_SIZE = 64  # the model's input side: small, so 16k images train in minutes on a CPU


def make_set(target: Path, count: int) -> Path:
    """``count`` train images (and a few test ones), cycling through the real train images."""
    sources = sorted((p, p.parent.name.casefold()) for root in DATA for p in (root / "train").rglob("*") if p.is_file())
    random.Random(0).shuffle(sources)  # every class in any first N
    for i in range(count + 30):
        path, label = sources[i % len(sources)]
        split = "test" if i >= count else "train"
        folder = target / split / label
        folder.mkdir(parents=True, exist_ok=True)
        info = PngImagePlugin.PngInfo()
        info.add_text("copy", str(i))
        with Image.open(path) as image:
            image.convert("L").resize((SIDE, SIDE)).save(folder / f"{i}.png", pnginfo=info)
    return target


def measured(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Seconds, peak anonymous MiB and peak file-backed MiB of one run of ``command``."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    anon = files = 0.0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            break
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "RssAnon" in fields:
            anon = max(anon, int(fields["RssAnon"].split()[0]) / 1024)
            files = max(files, int(fields["RssFile"].split()[0]) / 1024)
        time.sleep(0.05)
    if process.wait() != 0:
        sys.exit(f"{' '.join(command)} failed:\n{process.stderr.read()[-3000:]}")
    return time.perf_counter() - started, anon, files


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    sizes: list[int] = typer.Option([1000, 4000, 16000]),
) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="cxr-scale-") as folder:
        env = {**os.environ, "CXR_QUIET": "1", "CXR_CACHE": str(Path(folder) / "cache")}
        for count in sizes:
            data = make_set(Path(folder) / str(count), count)
            base = ["cxr-train", "--data", str(data), "--weights", weights, "--image-size", str(IMAGE_SIZE),
                    "--fine-tune", "0", "--out", str(Path(folder) / f"out{count}")]
            first = measured([*base, "--seed", "0"], env)
            second = measured([*base, "--seed", "1"], env)
            rows.append((count, first, second))
            print(f"{count}: {first} {second}", file=sys.stderr, flush=True)
    print(f"Training at {IMAGE_SIZE} px (frozen base, 8 epochs), in a fresh process each:\n")
    print("| images | first run s | s per 1k images | peak own MiB | peak file pages MiB | second run s (cache) | cache speed-up |")
    print("|---|---|---|---|---|---|---|")
    for count, (s1, anon1, file1), (s2, _, _) in rows:
        print(f"| {count} | {s1:.0f} | {1000 * s1 / count:.1f} | {anon1:.0f} | {file1:.0f} | {s2:.0f} | {s1 / s2:.1f}x |")


if __name__ == "__main__":
    typer.run(main)

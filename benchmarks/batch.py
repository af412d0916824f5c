"""Images per second of ``cxr-batch`` (Ray Data) against ``cxr-predict`` over the same files, and
``cxr-batch`` with 1 and 2 workers.

    python benchmarks/batch.py --model artifacts/model.int8.onnx [--runs 3] [DATA...]

Each command runs whole, in a fresh process, as a user would run it (Ray's start-up included; each
cxr-batch run writes a new output folder, so it scores every file), ``--runs`` times; the table gives
the median images per second and the ratios between medians of this one run. A separate run over 16
files estimates Ray's fixed start-up cost. Default files: the Pediatric-pneumonia-subset's 1,200
train films in ../shared. Prints Markdown.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "Pediatric-pneumonia-subset" / "train"


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "CXR_QUIET": "1"})
    return time.perf_counter() - started


def main(
    data: Annotated[list[Path] | None, typer.Argument(help="Folders of images (default: Pediatric-pneumonia-subset/train).")] = None,
    model: Annotated[Path, typer.Option(help="The model both commands run (INT8 for the goal).")] = Path("artifacts/model.int8.onnx"),
    runs: Annotated[int, typer.Option(min=1)] = 3,
) -> None:
    folders = [str(p) for p in (data or [DEFAULT_DATA])]
    files = sum(1 for folder in folders for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    scratch = Path(tempfile.mkdtemp(prefix="cxr-batch-bench-"))

    def batch(workers: int, inputs: list[str], tag: str) -> list[str]:
        out = scratch / f"{tag}-{time.monotonic_ns()}"
        return ["cxr-batch", *inputs, "--out", str(out), "--model", str(model), "--workers", str(workers)]

    predict = ["cxr-predict", *folders, "--model", str(model), "--json"]
    rates: dict[str, list[float]] = {"cxr-predict": [], "cxr-batch, 1 worker": [], "cxr-batch, 2 workers": []}
    for _ in range(runs):  # interleaved, so a slow spell of the machine falls on every command alike
        rates["cxr-predict"].append(files / seconds(predict))
        rates["cxr-batch, 1 worker"].append(files / seconds(batch(1, folders, "one")))
        rates["cxr-batch, 2 workers"].append(files / seconds(batch(2, folders, "two")))
    small = sorted(p for p in Path(folders[0]).rglob("*") if p.is_file())[:16]
    list_file = scratch / "small.txt"
    list_file.write_text("\n".join(map(str, small)) + "\n")
    startup = statistics.median(seconds(batch(2, [str(list_file)], "small")) for _ in range(runs))

    median = {name: statistics.median(values) for name, values in rates.items()}
    print(f"{files} files, model {model.name}, {runs} runs each, median images/s (min-max)\n")
    print("| command | images/s | against cxr-predict |")
    print("|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {median[name]:.1f} ({min(values):.1f}-{max(values):.1f}) | {median[name] / median['cxr-predict']:.2f}x |")
    print(f"\n2 workers against 1: {median['cxr-batch, 2 workers'] / median['cxr-batch, 1 worker']:.2f}x")
    print(f"cxr-batch over 16 files (Ray's start-up and one batch): {startup:.1f} s median")


if __name__ == "__main__":
    typer.run(main)

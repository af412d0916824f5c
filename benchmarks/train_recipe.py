"""The reference recipe over seeds on the real data, and plain model.fit against the fast path.

    python benchmarks/train_recipe.py --data ../shared/data/Covid19-dataset --weights PATH

Prints a Markdown table: per-seed train/validation/test accuracy with mean and spread beside the
reference report's 0.954, then the median seconds of both training paths and their ratio.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import typer

os.environ.setdefault("CXR_QUIET", "1")

REFERENCE_TEST_ACCURACY = 0.954


def main(
    data: Path = typer.Option(Path("../shared/data/Covid19-dataset")),
    weights: str = typer.Option("imagenet", envvar="CXR_VGG16_WEIGHTS"),
    seeds: int = typer.Option(5, help="Seeds 0..N-1 for the fast path."),
    plain_runs: int = typer.Option(2, help="Plain model.fit runs (seeds 0..N-1), for the timing ratio."),
) -> None:
    from cxr.train.config import REFERENCE_RECIPE, TrainConfig
    from cxr.train.trainer import train

    def run(seed: int, fast_path: bool):
        with tempfile.TemporaryDirectory() as out:
            # No feature cache: each run pays for its own features, as the timing compares whole runs.
            config = TrainConfig(data=data, out=Path(out), weights=weights, seed=seed, fast_path=fast_path, cache=False, **REFERENCE_RECIPE)
            return train(config)

    fast = [run(seed, True) for seed in range(seeds)]
    plain = [run(seed, False) for seed in range(plain_runs)]

    print("| seed | train acc | val acc | test acc | test errors (true -> predicted) |")
    print("|---|---|---|---|---|")
    for seed, result in enumerate(fast):
        s = result.splits
        print(f"| {seed} | {s['train'].accuracy:.3f} | {s['val'].accuracy:.3f} | {s['test'].accuracy:.3f} | {_errors(result)} |")
    test = [r.splits["test"].accuracy for r in fast]
    train_acc = [r.splits["train"].accuracy for r in fast]
    print(
        f"| mean ± sd | {statistics.mean(train_acc):.3f} | "
        f"{statistics.mean(r.splits['val'].accuracy for r in fast):.3f} | "
        f"**{statistics.mean(test):.3f} ± {statistics.pstdev(test):.3f}** (min {min(test):.3f}, max {max(test):.3f}) | |"
    )
    print(f"| reference report | 0.996 | | {REFERENCE_TEST_ACCURACY} | 3 Normal -> Viral Pneumonia |")
    print()
    fast_s = statistics.median(r.seconds["total"] for r in fast)
    plain_s = statistics.median(r.seconds["total"] for r in plain)
    print("| training path | runs | median seconds (whole run) | ratio |")
    print("|---|---|---|---|")
    print(f"| plain model.fit | {len(plain)} | {plain_s:.0f} | 1.0x |")
    print(f"| fast path (features once) | {len(fast)} | {fast_s:.0f} | {plain_s / fast_s:.1f}x faster |")
    print()
    print(
        "plain-fit test accuracy, same seeds: "
        + ", ".join(f"{r.splits['test'].accuracy:.3f}" for r in plain)
    )


def _errors(result) -> str:
    names = result.class_names
    confusion = result.splits["test"].confusion
    pairs = [
        f"{confusion[t][p]} {names[t]} -> {names[p]}"
        for t in range(len(names))
        for p in range(len(names))
        if t != p and confusion[t][p]
    ]
    return ", ".join(pairs) or "none"


if __name__ == "__main__":
    typer.run(main)

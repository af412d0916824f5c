"""Candidate training recipes over seeds on the real data: which options pay for themselves.

    python research/recipes.py --data ../shared/data/Covid19-dataset --weights PATH [--only NAME ...]
    python research/recipes.py --data A --data B --only "two: ..."     # several collections

Each candidate runs with seeds 0..N-1. Choices are made on the validation column (the test split
only reports). Prints a Markdown table: mean and min test accuracy, mean validation accuracy and
loss, and the median seconds of a whole training run on this machine; with several collections,
also each one's mean validation and test accuracy (the lowest validation accuracy of a collection
is then what to choose on: a total can hide a collection that fails).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

import typer

os.environ.setdefault("CXR_QUIET", "1")

# Each candidate changes the reference recipe (pixels / 255, flatten head, Adam 1e-3, 8 epochs, no
# fine-tuning) by the options named. Fine-tuning: 8 more epochs at 1e-5 with the last blocks unfrozen,
# unless the name says otherwise. (The default for Covid19-dataset alone was "fine-tune 1 block +
# equalize, 16 epochs"; for two collections it is the second "two:" candidate.)
BASE = dict(fine_tune_epochs=8, fine_tune_learning_rate=1e-5)
CANDIDATES: dict[str, dict] = {
    "reference": {},
    "vgg-norm": dict(preprocess="vgg"),
    "vgg-norm, lr 1e-4": dict(preprocess="vgg", learning_rate=1e-4),
    "gap head": dict(head="gap"),
    "dropout 0.5": dict(dropout=0.5),
    "label smoothing 0.1": dict(label_smoothing=0.1),
    "class weights": dict(balance="class"),
    "early stopping (30 epochs max, patience 5)": dict(epochs=30, early_stopping=5),
    "augment": dict(augment=True),
    "fine-tune 1 block": dict(fine_tune=1),
    "fine-tune 2 blocks": dict(fine_tune=2),
    "fine-tune 1 block + class weights": dict(fine_tune=1, balance="class"),
    "fine-tune 1 block + dropout 0.5": dict(fine_tune=1, dropout=0.5),
    "fine-tune 1 block + label smoothing 0.1": dict(fine_tune=1, label_smoothing=0.1),
    "vgg-norm, lr 1e-4 + fine-tune 1 block": dict(preprocess="vgg", learning_rate=1e-4, fine_tune=1),
    "equalize": dict(contrast="equalize"),
    "fine-tune 1 block + equalize": dict(fine_tune=1, contrast="equalize"),
    "fine-tune 2 blocks + equalize": dict(fine_tune=2, contrast="equalize"),
    "fine-tune 1 block, 16 epochs": dict(fine_tune=1, fine_tune_epochs=16),
    "fine-tune 1 block, lr 3e-5": dict(fine_tune=1, fine_tune_learning_rate=3e-5),
    "fine-tune 1 block, 24 epochs": dict(fine_tune=1, fine_tune_epochs=24),
    "fine-tune 1 block, 32 epochs": dict(fine_tune=1, fine_tune_epochs=32),
    "fine-tune 1 block, 16 epochs, lr 2e-5": dict(fine_tune=1, fine_tune_epochs=16, fine_tune_learning_rate=2e-5),
    "fine-tune 1 block + equalize, 16 epochs": dict(fine_tune=1, contrast="equalize", fine_tune_epochs=16),
    "fine-tune 1 block + equalize, lr 3e-5": dict(fine_tune=1, contrast="equalize", fine_tune_learning_rate=3e-5),
    # For two collections, balanced by source and class (the default is the second).
    "two: fine-tune 1 block + equalize + balance": dict(fine_tune=1, contrast="equalize", balance="source-class"),
    "two: the same + dropout 0.5 + label smoothing 0.1, lr 3e-5": dict(
        fine_tune=1, contrast="equalize", balance="source-class", dropout=0.5, label_smoothing=0.1, fine_tune_learning_rate=3e-5
    ),
    "two: the same, head 2 epochs, lr 3e-5": dict(
        fine_tune=1, contrast="equalize", balance="source-class", epochs=2, fine_tune_learning_rate=3e-5
    ),
}


def main(
    data: list[Path] = typer.Option([Path("../shared/data/Covid19-dataset")], help="Repeat for several collections."),
    weights: str = typer.Option("imagenet", envvar="CXR_VGG16_WEIGHTS"),
    seeds: int = typer.Option(5),
    only: list[str] = typer.Option([], help="Run only the candidate of this name (repeatable)."),
) -> None:
    from cxr.train.config import REFERENCE_RECIPE, TrainConfig
    from cxr.train.trainer import train

    unknown = set(only) - set(CANDIDATES)
    if unknown:
        raise typer.BadParameter(f"unknown candidates {sorted(unknown)}; known: {list(CANDIDATES)}")
    chosen = {k: v for k, v in CANDIDATES.items() if not only or k in only}
    sources = [root.name for root in data] if len(data) > 1 else []
    each = "".join(f" {n}: mean val acc | {n}: mean test acc (min) |" for n in sources)
    print(f"| recipe | mean test acc | min test acc | mean val acc | mean val loss | median train s |{each}")
    print("|---|---|---|---|---|---|" + "---|---|" * len(sources), flush=True)
    for name, options in chosen.items():
        runs = []
        for seed in range(seeds):
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(
                    data=tuple(data), out=Path(out), weights=weights, seed=seed, **{**REFERENCE_RECIPE, **BASE, **options}
                )
                runs.append(train(config))
            s = runs[-1].splits
            print(f"{name} seed {seed}: test {s['test'].accuracy:.3f} val {s['val'].accuracy:.3f}", file=sys.stderr, flush=True)
        test = [r.splits["test"].accuracy for r in runs]
        per_source = ""
        for source in sources:
            val_s = statistics.mean(r.sources[source]["val"].accuracy for r in runs)
            test_s = [r.sources[source]["test"].accuracy for r in runs]
            per_source += f" {val_s:.3f} | {statistics.mean(test_s):.3f} ({min(test_s):.3f}) |"
        print(
            f"| {name} | {statistics.mean(test):.3f} | {min(test):.3f} | "
            f"{statistics.mean(r.splits['val'].accuracy for r in runs):.3f} | "
            f"{statistics.mean(r.splits['val'].loss for r in runs):.3f} | "
            f"{statistics.median(r.seconds['total'] for r in runs):.0f} |{per_source}",
            flush=True,
        )


if __name__ == "__main__":
    typer.run(main)

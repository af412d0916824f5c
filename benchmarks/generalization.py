"""Does a model hold up on a collection it never saw? Train on each collection alone and on all of
them together, then test every model on every collection's test split.

    python benchmarks/generalization.py --weights PATH [--seeds 5]

Each model is trained with the default recipe, exported to ONNX and
evaluated by the runtime (``cxr-eval``'s code), as a user would. Features come from cxr's cache
after the first run, so the seeds cost only their training. Prints Markdown tables: accuracy
(mean and min over seeds) per train -> test pair, and the Normal class's recall.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import typer

os.environ.setdefault("CXR_QUIET", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = [SHARED / "Covid19-dataset", SHARED / "Covid19-radiography-subset"]


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    data: list[Path] = typer.Option(DATA, help="The collections (each with train/ and test/)."),
    seeds: int = typer.Option(5, help="Seeds 0..N-1."),
) -> None:
    from cxr.eval.report import evaluate
    from cxr.export.onnx_export import export_onnx
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    names = [root.name for root in data]
    # All together first: the default model's figures, should the run be cut short.
    trainings = {" + ".join(names): list(data), **{name: [root] for name, root in zip(names, data)}}
    accuracy: dict[tuple[str, str], list[float]] = {}
    normal: dict[tuple[str, str], list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for trained_on, roots in trainings.items():
        for seed in range(seeds):
            with tempfile.TemporaryDirectory() as folder:
                out = Path(folder)
                started = time.perf_counter()
                result = train(TrainConfig(data=tuple(roots), out=out, weights=weights, seed=seed))
                seconds.setdefault(trained_on, []).append(time.perf_counter() - started)
                export_onnx(result.model_path, out / "model.onnx")
                evaluated = evaluate(list(data), out / "model.onnx", out / "eval")
            for name in names:
                metrics = evaluated.sources[name]
                accuracy.setdefault((trained_on, name), []).append(metrics.accuracy)
                normal.setdefault((trained_on, name), []).append(metrics.per_class["Normal"].recall)
            print(
                f"{trained_on} seed {seed} ({seconds[trained_on][-1]:.0f} s): "
                + ", ".join(f"{n} {accuracy[(trained_on, n)][-1]:.3f} (Normal {normal[(trained_on, n)][-1]:.2f})" for n in names),
                file=sys.stderr,
                flush=True,
            )

    def table(title: str, values: dict[tuple[str, str], list[float]]) -> None:
        print(f"\n{title}, mean (min) over seeds 0-{seeds - 1}:\n")
        print("| trained on | " + " | ".join(f"tested on {n}" for n in names) + " |")
        print("|---|" + "---|" * len(names))
        for trained_on in trainings:
            cells = [values[(trained_on, n)] for n in names]
            print(f"| {trained_on} | " + " | ".join(f"{statistics.mean(c):.3f} ({min(c):.3f})" for c in cells) + " |")

    print("Default recipe; each model exported to ONNX and evaluated by the runtime.")
    table("Test accuracy", accuracy)
    table("Normal recall", normal)
    print("\n| trained on | median training s (features cached after the first run) |\n|---|---|")
    for trained_on, values in seconds.items():
        print(f"| {trained_on} | {statistics.median(values):.0f} |")


if __name__ == "__main__":
    typer.run(main)

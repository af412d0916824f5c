"""Why Covid19-dataset's films are misread: the class prior that balancing by collection and class
implies, and what moving a class boundary (Covid's, Viral Pneumonia's) does to each collection.

    python research/class_prior.py --artifacts artifacts [--weights PATH] [--seeds 0 --seeds 1]

Balancing by collection and class (the default) gives each (collection, class) cell the same share of
the loss, so with the four shared collections, which hold some of the classes each, the training prior
is Normal 4/9, Viral Pneumonia 3/9, Covid 2/9. Two measurements:

1. The trained model in ``--artifacts`` (``model.onnx``, read by the runtime, and the validation files
   in its ``metrics.json``): each collection's validation and test accuracy, and the recall of the
   class moved and of Normal, with an offset added to every film's Covid log-probability (0 is the
   model as it is), then to its Viral Pneumonia log-probability instead; and a figure (``--figure``).
2. With ``--weights``: the default's head on cached features (``research/lung_heads.py``, with the
   lung prior) trained with each cell's share of the loss as today, and with each class's share equal
   and each collection's equal within its class (a uniform class prior), over ``--seeds``.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import typer

os.environ.setdefault("CXR_QUIET", "1")

OFFSETS = [-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
SHIFTED = ["Covid", "Viral Pneumonia"]  # each class's log-probability is moved on its own


def labelled(artifacts: Path) -> tuple[list[str], dict[Path, tuple[int, str]], list[Path], list[Path]]:
    """The model's classes, every train and test film of its roots with (class, collection), the
    validation films and the test films, as the run in ``artifacts`` read them."""
    from cxr.core.datasets import labelled_files, model_classes, scan_roots

    config = json.loads((artifacts / "config.json").read_text())
    roots = [Path(root) for root in config["data"]]
    data = scan_roots(roots, (), tuple(config["class_map"].items()))
    names = model_classes(data)
    films = {
        path: (label, root.name)
        for root, split_data in zip(roots, data)
        for split in (split_data.train, split_data.test)
        for path, label in labelled_files(split, names)
    }
    tests = [path for split_data in data for path, _ in labelled_files(split_data.test, names)]
    val = [Path(path) for path in json.loads((artifacts / "metrics.json").read_text())["validation_files"]]
    return names, films, val, tests


def log_probabilities(predictor, files: list[Path]) -> np.ndarray:
    return np.log(np.stack([[p.probabilities[name] for name in predictor.info.class_names] for p in predictor.predict_files(files)]) + 1e-12)


def boundary_rows(names, films, files, logp, moved: str) -> dict[float, dict[str, tuple[float, float, float]]]:
    """Per offset on class ``moved``, per collection: accuracy, ``moved``'s recall and Normal recall
    (NaN where the collection has no such film)."""
    labels = np.array([films[f][0] for f in files])
    sources = np.array([films[f][1] for f in files])
    shifted_class, normal = names.index(moved), names.index("Normal")
    rows = {}
    for offset in OFFSETS:
        shifted = logp.copy()
        shifted[:, shifted_class] += offset
        right = shifted.argmax(axis=1) == labels
        rows[offset] = {
            source: tuple(
                float(right[mine].mean()) if mine.any() else float("nan")
                for mine in (sources == source, (sources == source) & (labels == shifted_class), (sources == source) & (labels == normal))
            )
            for source in dict.fromkeys(sources)
        }
    return rows


def draw(curves: dict[str, tuple[dict, dict]], target: Path) -> None:
    """A row of panels (validation, test) per class moved: accuracy and Normal recall per collection."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4 * len(curves)), layout="constrained")
    grid = fig.subplots(len(curves), 2, sharey=True, squeeze=False)
    for axes, (moved, (val_rows, test_rows)) in zip(grid, curves.items()):
        for ax, rows, title in zip(axes, (val_rows, test_rows), ("validation (the choice)", "test")):
            panel(ax, rows, f"{title}: {moved} moved", f"offset added to the {moved} log-probability")
    grid[0][1].legend(fontsize=7, loc="lower left")
    fig.suptitle("Moving a class boundary trades one collection's films for another's")
    fig.savefig(target, dpi=110)


def panel(ax, rows, title: str, xlabel: str) -> None:
    for source in rows[OFFSETS[0]]:
        line = ax.plot(OFFSETS, [rows[o][source][0] for o in OFFSETS], marker="o", label=f"{source}: accuracy")
        if not np.isnan(rows[0.0][source][2]):
            ax.plot(OFFSETS, [rows[o][source][2] for o in OFFSETS], linestyle=":", color=line[0].get_color(), label=f"{source}: Normal recall")
    ax.axvline(0, color="gray", linewidth=0.8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of films")
    ax.grid(alpha=0.3)


def uniform_class_prior(examples) -> np.ndarray:
    """Loss weights giving each class the same share, and each collection the same share within it."""
    weights = np.zeros(len(examples), np.float32)
    classes = np.unique(examples.labels)
    for c in classes:
        sources = np.unique(examples.sources[examples.labels == c])
        for s in sources:
            cell = (examples.labels == c) & (examples.sources == s)
            weights[cell] = len(examples) / (len(classes) * len(sources) * cell.sum())
    return weights


def heads(weights: str, seeds: list[int]) -> None:
    from lung_heads import COLLECTIONS, EARLIER, EARLIER_GRID, GRID, block5_of, cached_block4, fit, four_collections, predicted

    from cxr.core.datasets import stratified_split
    from cxr.runtime.masks import mask_for
    from cxr.train.inputs import sample_weights
    from cxr.train.lung_prior import measure
    from cxr.train.model import FEATURES

    roots, names, config, net = four_collections(weights)
    (train, x4), (test, x4_test) = cached_block4(config, net, roots, names, weights)
    block5 = functools.partial(block5_of, net.segment(EARLIER, FEATURES), prior=np.ones(EARLIER_GRID, np.float32))
    x, x_test = block5(x4), block5(x4_test)
    prior = measure([mask for mask in map(mask_for, train.paths) if mask], config.image_size, GRID)  # the default's, as cxr-train measures it
    none_off = np.zeros((len(train), *GRID), np.float32)
    covid = names.index("Covid")
    print(f"\nHeads on {FEATURES} features with the lung prior, seeds {seeds}; mean over seeds.\n")
    print("| loss weights | lowest collection's validation accuracy | validation: " + " / ".join(COLLECTIONS) + " | test: " + " / ".join(COLLECTIONS) + " | Covid19-dataset test Covid recall, Normal recall |")
    print("|---|---|---|---|---|", flush=True)
    for label, weigh in (("each (collection, class) cell equal (default)", lambda e: sample_weights(e, "source-class")), ("each class equal, then each collection", uniform_class_prior)):
        per_seed = []
        for seed in seeds:
            fitted, val = stratified_split(train.sources * len(names) + train.labels, config.val_split, seed)
            part = train.subset(fitted)
            kernel, bias = fit(x[fitted], part.labels, weigh(part), none_off[fitted], len(names), seed, prior, 0.0)
            v, t = predicted(x[val], prior, kernel, bias), predicted(x_test, prior, kernel, bias)
            val_acc = [float((v == train.labels[val])[train.sources[val] == s].mean()) for s in range(len(COLLECTIONS))]
            test_acc = [float((t == test.labels)[test.sources == s].mean()) for s in range(len(COLLECTIONS))]
            cd = test.sources == 0
            recalls = [float((t[cd & (test.labels == c)] == c).mean()) for c in (covid, names.index("Normal"))]
            per_seed.append([min(val_acc), *val_acc, *test_acc, *recalls])
        m = np.mean(per_seed, axis=0)
        fmt = lambda values: " / ".join(f"{value:.3f}" for value in values)  # noqa: E731
        print(f"| {label} | {m[0]:.3f} | {fmt(m[1:5])} | {fmt(m[5:9])} | {m[9]:.2f}, {m[10]:.2f} |", flush=True)


def main(
    artifacts: Path = typer.Option(Path("artifacts"), help="A cxr-train output folder with model.onnx exported."),
    weights: str = typer.Option("", envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5: also compare loss weights on heads."),
    seeds: list[int] = typer.Option([0, 1, 2, 3, 4], help="Seeds of the heads (repeat)."),
    figure: Path = typer.Option(Path("docs/class_prior.png"), help="Where the curve is drawn."),
) -> None:
    from cxr.runtime.predictor import Predictor

    names, films, val, tests = labelled(artifacts)
    predictor = Predictor(artifacts / "model.onnx")
    val_logp, test_logp = log_probabilities(predictor, val), log_probabilities(predictor, tests)
    curves = {moved: (boundary_rows(names, films, val, val_logp, moved), boundary_rows(names, films, tests, test_logp, moved)) for moved in SHIFTED}
    for moved, (val_rows, test_rows) in curves.items():
        print(f"{artifacts / 'model.onnx'}: per collection, accuracy ({moved} recall, Normal recall) with an offset on the {moved} log-probability.\n")
        sources = list(val_rows[0.0])
        print("| offset | split | lowest | " + " | ".join(sources) + " |")
        print("|---|---|---|" + "---|" * len(sources))
        for offset in OFFSETS:
            for split, rows in (("validation", val_rows), ("test", test_rows)):
                cells = [rows[offset][s] for s in sources]
                text = [f"{a:.3f} ({c:.2f}, {n:.2f})".replace("nan", "-") for a, c, n in cells]
                print(f"| {offset:+g} | {split} | {min(a for a, _, _ in cells):.3f} | " + " | ".join(text) + " |")
        print()
    draw(curves, figure)
    print(f"\nDrawn: {figure}")
    if weights:
        heads(weights, seeds)


if __name__ == "__main__":
    typer.run(main)

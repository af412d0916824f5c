"""Does cxr-adapt teach a model a collection (a hospital) it never saw, and leave alone one it knows?

    python benchmarks/adapt.py --models DIR [--k 0 --k 5 ...] [--draws 5] [--figure docs/adapt.png] [--with-site 20]

DIR holds the models that ``benchmarks/generalization.py --keep DIR`` exported: COLLECTION-seedN.onnx
(trained on the other collections) and all-seedN.onnx (trained on all). For each held-out collection,
k films per class are drawn from its train split (``--draws`` times), the model is adapted on them
exactly as ``cxr-adapt`` does (adapt.fit: strength chosen by cross-validation on the k films, refit,
temperature) and the collection's test split is scored; k = 0 is the model as it is. The same for
the all-collections model on each collection it knows. The head is linear in the features the graph
computes, so a draw is scored from the test films' features, read once per model from the ONNX file
by onnxruntime; for one draw per model (k = 20) the adapted file is written by ``adapt()`` and its
test split read by the Predictor, for the first held-out model, to show the two agree. Also: the gate
on scikit-image's samples with that file, and seconds to adapt 200 films end to end (median of 3).
With ``--with-site K`` (and the VGG16 weights), each held-out seed-0 model's recipe is also trained
with K films per class of its collection as one more ``--data`` (the draw the runtime check adapts
on), to show what adapting at the edge leaves on the table against training with the site's films.
Features are kept in ~/.cache/cxr/adapt-benchmark by the model's digest: a rerun reads no film twice.

Prints Markdown tables (mean (min) over draws and seeds) and draws accuracy against k per collection.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

os.environ.setdefault("CXR_QUIET", "1")

from generalization import CLASS_MAP, COLLECTIONS, SHARED, recipe_config, scored  # noqa: E402  (beside this file)

POOL = 100  # films per class drawn once from a train split: the k films of every draw come from them
TIMED_FILMS = 200
CACHE = Path.home() / ".cache" / "cxr" / "adapt-benchmark"  # each model's features of each split, by the model's digest
NORMAL = "Normal"


@dataclass(frozen=True)
class Split:
    features: np.ndarray
    whitened: np.ndarray
    labels: np.ndarray
    paths: list[Path]


@dataclass(frozen=True)
class Score:
    accuracy: float
    normal_recall: float


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def files_of(root: Path, names: list[str]) -> dict[str, list[Path]]:
    from cxr.core.datasets import class_folders, mapped_folders, only_classes

    return only_classes(mapped_folders(class_folders(root), CLASS_MAP), names)


def read_split(predictor, graph, head, files: dict[str, list[Path]], cache: Path) -> Split:
    """The films' head and gate inputs, read once by onnxruntime and kept in ``cache`` (.npz)."""
    from cxr.adapt.site import tapped_outputs
    from cxr.core.datasets import load_images

    if cache.is_file():
        with np.load(cache) as saved:
            return Split(saved["features"], saved["whitened"], saved["labels"], [Path(p) for p in saved["paths"]])
    films = load_images(files, predictor.info.class_names, predictor.prepare)
    features, whitened = tapped_outputs(graph, head, films.images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=features, whitened=whitened, labels=films.labels, paths=np.array([str(p) for p in films.paths]))
    return Split(features, whitened, films.labels, films.paths)


def score(kernel: np.ndarray, bias: np.ndarray, split: Split, names: list[str]) -> Score:
    called = (split.features @ kernel + bias).argmax(axis=1)
    normal = split.labels == names.index(NORMAL)
    return Score(float(np.mean(called == split.labels)), float(np.mean(called[normal] == split.labels[normal])))


def adapted_head(head, pool: Split, chosen: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What cxr-adapt does with these films: the strength by cross-validation, then the refit."""
    from cxr.adapt import fit

    site = fit.SiteFeatures(pool.features[chosen], pool.labels[chosen], pool.features[chosen] @ head.kernel + head.bias)
    adapted = fit.adapt_head(site, head.kernel, head.bias, seed)
    return adapted.kernel, adapted.bias


def draw(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), min(k, int(np.sum(labels == c))), replace=False) for c in np.unique(labels)])


def linked_site(paths: list[Path], labels: np.ndarray, names: list[str], folder: Path) -> Path:
    """A folder-per-class site of links to ``paths``, as a user would lay their films out."""
    for path, label in zip(paths, labels):
        target = folder / names[label] / f"{len(list(folder.rglob('*')))}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    return folder


def runtime_check(model: Path, root: Path, pool: Split, chosen: np.ndarray, test: Split, names: list[str]) -> str:
    """Adapt with ``adapt()`` on these films, read the test split with the Predictor, and compare it
    with the written head applied to the test films' features (the path every other row takes)."""
    import onnx

    from cxr.adapt.graph import find_head
    from cxr.adapt.site import adapt
    from cxr.runtime.predictor import Prediction, Predictor

    from cxr.export.quantize import export_int8

    with tempfile.TemporaryDirectory() as scratch:
        site = linked_site([pool.paths[i] for i in chosen], pool.labels[chosen], names, Path(scratch) / "site")
        result = adapt(model, site, Path(scratch) / "adapted.onnx", force=True)
        predictor = Predictor(result.path)
        written = find_head(onnx.load(str(result.path)), predictor.info)
        called = [p.label for p in predictor.predict_files(test.paths) if isinstance(p, Prediction)]
        runtime = float(np.mean([c == names[t] for c, t in zip(called, test.labels)]))
        samples = [p for p in predictor.predict_files(sample_images()) if isinstance(p, Prediction)]
        flagged = sum(not p.in_distribution for p in samples)
        # The INT8 file adapted on the same films, against the adapted FP32 file.
        int8 = export_int8(model, Path(scratch) / "model.int8.onnx", root, min_agreement=0.0)  # calibrated on its train films
        quantized = adapt(int8.path, site, Path(scratch) / "adapted.int8.onnx", force=True)
        called_int8 = [p.label for p in Predictor(quantized.path).predict_files(test.paths) if isinstance(p, Prediction)]
    features = score(written.kernel, written.bias, test, names).accuracy
    agreement = float(np.mean([a == b for a, b in zip(called, called_int8)]))
    return (
        f"test accuracy read by the runtime {runtime:.3f}, from the features {features:.3f}; scikit-image samples flagged "
        f"{flagged} of {len(samples)}; adapted INT8 picks adapted FP32's class on {agreement:.1%} of {len(called)} test films "
        f"(unadapted, on the {int8.test_images} test films of the model's classes as its training mapped them: {int8.agreement:.1%})"
    )


def trained_with_site(run: str, seed: int, weights: str, pool: Split, chosen: np.ndarray, test: Split, names: list[str]) -> Score:
    """The default recipe trained on the collections ``run`` left out's model saw and, as one more
    data root, the chosen films of ``run``; its exported file's test accuracy as the runtime reads it."""
    from cxr.export.onnx_export import export_onnx
    from cxr.runtime.predictor import Predictor
    from cxr.train.trainer import train

    with tempfile.TemporaryDirectory() as scratch:
        site = Path(scratch) / "site"
        linked_site([pool.paths[i] for i in chosen], pool.labels[chosen], names, site / "train")
        others = [SHARED / name for name in COLLECTIONS if name != run]
        result = train(recipe_config([*others, site], Path(scratch) / "out", weights, seed))
        predictor = Predictor(export_onnx(result.model_path, Path(scratch) / "model.onnx").path)
        said = scored(predictor, {name: [test.paths[i] for i in np.flatnonzero(test.labels == c)] for c, name in enumerate(names)})
    return Score(said.accuracy, said.normal_recall)


def sample_images() -> list[Path]:
    """scikit-image's sample photos and scans: images that are not chest X-rays."""
    import skimage

    return sorted(p for p in (Path(skimage.__file__).parent / "data").iterdir() if p.suffix in (".png", ".jpg"))


def timed(model: Path, pool: Split, names: list[str], runs: int = 3) -> float:
    from cxr.adapt.site import adapt

    rng = np.random.default_rng(0)
    chosen = draw(pool.labels, -(-TIMED_FILMS // len(np.unique(pool.labels))), rng)[:TIMED_FILMS]
    seconds = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as scratch:
            site = linked_site([pool.paths[i] for i in chosen], pool.labels[chosen], names, Path(scratch) / "site")
            started = time.perf_counter()
            adapt(model, site, Path(scratch) / "adapted.onnx", force=True)
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main(
    models: Path = typer.Option(..., help="Folder of COLLECTION-seedN.onnx and all-seedN.onnx (generalization.py --keep)."),
    k: list[int] = typer.Option([0, 5, 10, 20, 50], help="Films per class to adapt on (repeat); 0 is the model as it is."),
    draws: int = typer.Option(5, help="Draws of k films per class."),
    figure: Path | None = typer.Option(None, help="Also draw accuracy against k here (PNG)."),
    check_k: int = typer.Option(20, help="k at which one draw per model is written by adapt() and read by the runtime."),
    with_site: int = typer.Option(0, help="Also train each held-out seed-0 model's recipe with this many films per class of its collection (0: not)."),
    weights: str = typer.Option("", envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5, for --with-site."),
) -> None:
    import onnx

    from cxr.adapt.graph import find_head
    from cxr.core.datasets import file_digest
    from cxr.runtime.predictor import Predictor

    found = sorted(p for p in models.glob("*-seed*.onnx") if re.fullmatch(r".+-seed\d+", p.stem))
    rows: dict[tuple[str, str], dict[int, list[Score]]] = {}
    checks, seconds, trained = [], [], []
    for model in found:
        run, seed = model.stem.rsplit("-seed", 1)
        predictor = Predictor(model, provider="cpu")
        graph = onnx.load(str(model))
        head = find_head(graph, predictor.info)
        names = predictor.info.class_names
        sites = [run] if run != "all" else [p.name for p in sorted(SHARED.iterdir()) if p.is_dir()]
        for collection in sites:
            root = SHARED / collection
            rng = np.random.default_rng(int(seed))
            pool_files = {name: list(rng.permutation(paths))[:POOL] for name, paths in files_of(root / "train", names).items()}
            if len(pool_files) < 2:
                print(f"{collection}: one class of the model's only ({list(pool_files)}); cxr-adapt needs two: left out")
                continue
            digest = file_digest(model)[:16]
            log(f"{model.name} on {collection}: reading the films")
            pool = read_split(predictor, graph, head, pool_files, CACHE / f"{digest}-{collection}-pool.npz")
            test = read_split(predictor, graph, head, files_of(root / "test", names), CACHE / f"{digest}-{collection}-test.npz")
            log(f"{model.name} on {collection}: adapting")
            kind = "held out" if run != "all" else "known"
            cells = rows.setdefault((kind, collection), {})
            for films in k:
                for d in range(draws if films else 1):
                    kernel, bias = (head.kernel, head.bias) if films == 0 else adapted_head(head, pool, draw(pool.labels, films, rng), d)
                    cells.setdefault(films, []).append(score(kernel, bias, test, names))
            if kind == "held out" and not checks:
                log(f"{model.name} on {collection}: adapt() and the runtime, k = {check_k}")
                chosen = draw(pool.labels, check_k, np.random.default_rng(0))
                checks.append(f"{model.name} on {collection}, k = {check_k}: {runtime_check(model, root, pool, chosen, test, names)}")
                log(f"{model.name}: timing {TIMED_FILMS} films")
                seconds.append(timed(model, pool, names))
            if kind == "held out" and with_site and seed == "0":
                log(f"{model.name} on {collection}: training with {with_site} of its films a class")
                chosen = draw(pool.labels, with_site, np.random.default_rng(0))
                scores = (score(head.kernel, head.bias, test, names), score(*adapted_head(head, pool, chosen, 0), test, names))
                trained.append((collection, *scores, trained_with_site(run, int(seed), weights, pool, chosen, test, names)))
                log(f"{collection}: as it is, adapted, trained with them: {trained[-1][1:]}")
    table(rows, k)
    for line in checks:
        print(f"- {line}")
    if seconds:
        print(f"- {TIMED_FILMS} films adapted end to end (read, features, cross-validation, write): {seconds[0]:.1f} s (median of 3)")
    if trained:
        print(f"\n| held out (seed 0; {with_site} films a class, one draw) | as it is | adapted (cxr-adapt) | trained with them (a further --data) |\n|---|---|---|---|")
        for collection, *scores in trained:
            print(f"| {collection} | " + " | ".join(f"{s.accuracy:.3f} (Normal recall {s.normal_recall:.2f})" for s in scores) + " |")
    if figure:
        draw_figure(rows, k, figure)


def cell(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ({min(values):.3f})"


def table(rows: dict[tuple[str, str], dict[int, list[Score]]], ks: list[int]) -> None:
    print("| collection | model | " + " | ".join(f"k = {films}: accuracy | Normal recall" for films in ks) + " |")
    print("|---|---|" + "---|---|" * len(ks))
    for (kind, collection), cells in rows.items():
        values = " | ".join(f"{cell([s.accuracy for s in cells[f]])} | {cell([s.normal_recall for s in cells[f]])}" for f in ks)
        print(f"| {collection} | {kind} | {values} |")
    for kind in ("held out", "known"):
        for films in ks:
            means = [statistics.mean(s.accuracy for s in cells[films]) for (which, _), cells in rows.items() if which == kind]
            if means:
                print(f"- {kind}, k = {films}: mean accuracy over collections {statistics.mean(means):.3f}")
    for (kind, collection), cells in rows.items():
        if kind == "known":
            drop = max(statistics.mean(s.accuracy for s in cells[0]) - statistics.mean(s.accuracy for s in cells[f]) for f in ks)
            print(f"- known {collection}: largest drop in mean accuracy below the model as it is, any k: {drop:.3f}")


def draw_figure(rows: dict[tuple[str, str], dict[int, list[Score]]], ks: list[int], target: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind in zip(axes, ("held out", "known")):
        for (which, collection), cells in rows.items():
            if which != kind:
                continue
            means = [statistics.mean(s.accuracy for s in cells[f]) for f in ks]
            lows = [min(s.accuracy for s in cells[f]) for f in ks]
            line = ax.plot(ks, means, marker="o", label=collection)[0]
            ax.fill_between(ks, lows, means, color=line.get_color(), alpha=0.15)
        ax.set_title(f"collection {kind}: test accuracy after cxr-adapt")
        ax.set_xlabel("films per class adapted on (k)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy (mean over draws and seeds; band: lowest)")
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    typer.run(main)

"""Why COVID-QU-Ex's adult non-COVID pneumonia is called Covid, and what cheap levers give: heads on
the five-collection default's frozen features, compared in seconds.

    python research/adult_pneumonia_heads.py --weights PATH [--seeds 0 --seeds 1 --seeds 2]
    python research/adult_pneumonia_heads.py --weights PATH --whole 2 --seeds 0 --out DIR
    python research/adult_pneumonia_heads.py --weights PATH --model all-seed1.onnx --seeds 1

Every variant trains the default recipe's head (``research/lung_heads.py``'s ``fit``: Flatten of
block5_pool times the lung prior, dropout 0.5, label smoothing 0.1, Adam 1e-3, 8 epochs) on the
README's default data (five collections, its class map and corrections), with the features and the
train/validation split exactly as cxr-train makes them for each seed (its feature cache, bfloat16
where the CPU has it). The levers:
- loss weights: each (collection, class) cell equal (the default); COVID-QU-Ex's three cells counted
  2x or 4x; each class equal, then each collection within it;
- COVID-QU-Ex's films alone: what the frozen features can tell apart in adults at all.
Per variant, mean over seeds, on validation only (where a choice is made): each collection's
accuracy, the lowest and the mean, and the share of COVID-QU-Ex's Non-COVID validation films called
Covid. Fine-tuning is left out (a whole run costs 12-20 minutes). ``--whole N`` then trains the default
whole (cxr-train's ``train``, fine-tuning included) with COVID-QU-Ex's cells counted N times, in the
head's loss and in each fine-tuning epoch's balanced draw (each of its cells split into N groups of the
draw), and prints each collection's validation accuracy from the run record. ``--model`` takes the
default trained with the seed given and moves its pneumonia boundary: an offset on that class's
log-probability, read by the runtime on the run's validation and test films.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import typer

os.environ.setdefault("CXR_QUIET", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "research")]

from class_prior import uniform_class_prior  # noqa: E402  (each class equal, then each collection)
from generalization import COLLECTIONS, SHARED, recipe_config  # noqa: E402

QU_EX = COLLECTIONS.index("COVID-QU-Ex-subset")


@dataclass(frozen=True)
class Films:
    features: np.ndarray  # block5_pool, (N, 7, 7, 512)
    labels: np.ndarray
    sources: np.ndarray
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.labels)


def default_config(weights: str, seed: int, out: Path = Path("artifacts"), **changes):
    """The README's default run (five collections, its class map and corrections) for ``seed``."""
    return replace(recipe_config([SHARED / name for name in COLLECTIONS], out, weights, seed), **changes)


def default_films(weights: str, seed: int):
    """The default run's train, validation and test films for ``seed`` (as cxr-train splits them),
    their frozen block5_pool features, the class names and the lung prior."""
    from cxr.core.corrections import read_corrections
    from cxr.core.datasets import model_classes, scan_roots
    from cxr.train import lung_prior, precision
    from cxr.train.inputs import open_stores, store_specs
    from cxr.train.model import FEATURES, build_model
    from cxr.train.trainer import _fill_stores  # the trainer's own split, near-copy moves included
    from cxr.train.weights import resolve_weights

    config = default_config(weights, seed, lung_prior=True)
    config = replace(config, precision=precision.resolve(config.precision))
    roots = scan_roots(list(config.data), config.classes, config.class_map)
    names = model_classes(roots)
    path = resolve_weights(weights)
    net = build_model(len(names), config.image_size, path, config.model_recipe, seed)
    prior = lung_prior.measure(lung_prior.masks_of(roots), config.image_size, (7, 7))
    with open_stores(store_specs(config, net.model, path, [FEATURES]), keep=True) as stores:
        filled = _fill_stores(config, net, roots, names, read_corrections(config.corrections, names), stores, [FEATURES])
        array = stores[0].array()
        splits = {
            name: Films(np.asarray(array[stores[0].rows_of(split.digests)], np.float32), split.labels, split.sources, split.paths)
            for name, split in filled.splits.items()
        }
    return splits, names, prior


def cell_weights(qu_ex: float) -> Callable[[Films], np.ndarray]:
    """Each (collection, class) cell the same share of the loss, COVID-QU-Ex's cells ``qu_ex`` times."""

    def weigh(films: Films) -> np.ndarray:
        cells = films.sources * 10 + films.labels
        _, group, counts = np.unique(cells, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[group] * np.where(films.sources == QU_EX, qu_ex, 1.0)
        return (weights * len(weights) / weights.sum()).astype(np.float32)

    return weigh


VARIANTS: dict[str, tuple[Callable[[Films], np.ndarray], bool]] = {
    "each (collection, class) cell equal (the default)": (cell_weights(1.0), False),
    "COVID-QU-Ex's cells 2x": (cell_weights(2.0), False),
    "COVID-QU-Ex's cells 4x": (cell_weights(4.0), False),
    "each class equal, then each collection": (uniform_class_prior, False),
    "COVID-QU-Ex's films alone": (cell_weights(1.0), True),
}


def whole(weights: str, seed: int, factor: int, out: Path) -> None:
    """The default trained whole with COVID-QU-Ex's cells counted ``factor`` times."""
    from cxr.train import inputs, trainer
    from cxr.train.record import RunRecord

    plain = inputs.balance_groups

    def heavier(examples, balance):
        groups = plain(examples, balance)
        # Split each COVID-QU-Ex cell into ``factor`` groups: the draw and the loss weights give every
        # group the same share, so the cell counts ``factor`` times.
        part = np.arange(len(groups)) % factor
        return np.where(examples.sources == QU_EX, groups + (1 + part) * 1000, groups)

    inputs.balance_groups = trainer.balance_groups = heavier
    trainer.train(default_config(weights, seed, out=out))
    record = RunRecord.read(out)
    val = {source: splits["val"].accuracy for source, splits in record.sources.items()}
    confusion = np.array(record.sources[COLLECTIONS[QU_EX]]["val"].confusion)
    covid, pneumonia = record.class_names.index("Covid"), record.class_names.index("Viral Pneumonia")
    called_covid = confusion[pneumonia, covid] / confusion[pneumonia].sum()
    print(f"| COVID-QU-Ex's cells {factor}x, seed {seed}, fine-tuned | " + " | ".join(f"{val[name]:.3f}" for name in COLLECTIONS) + f" | {min(val.values()):.3f} | {statistics.mean(val.values()):.3f} | {called_covid:.2f} |")


OFFSETS = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]


def boundary(model: Path, weights: str, seed: int) -> None:
    """An offset added to the pneumonia log-probability of ``model`` (trained with ``seed``, read by
    the runtime): each collection's accuracy on the run's validation and test films, and COVID-QU-Ex's
    Non-COVID films called Covid and Covid films called pneumonia."""
    from cxr.runtime.predictor import Predictor

    splits, names, _ = default_films(weights, seed)
    predictor = Predictor(model)
    covid, pneumonia = names.index("Covid"), names.index("Viral Pneumonia")
    print(f"\n{model.name} (seed {seed}): offset on the pneumonia log-probability.\n")
    print("| offset | split | " + " | ".join(COLLECTIONS) + " | lowest | mean | COVID-QU-Ex Non-COVID called Covid | its Covid called pneumonia |")
    print("|---|---|" + "---|" * (len(COLLECTIONS) + 4))
    logp = {}
    for split in ("val", "test"):
        films = splits[split]
        probabilities = np.array([[p.probabilities[n] for n in names] for p in predictor.predict_files(films.paths)])
        logp[split] = np.log(probabilities + 1e-12)
    for offset in OFFSETS:
        for split in ("val", "test"):
            films = splits[split]
            said = (logp[split] + offset * (np.arange(len(names)) == pneumonia)).argmax(axis=1)
            accuracy = [float((said == films.labels)[films.sources == s].mean()) for s in range(len(COLLECTIONS))]
            qu = films.sources == QU_EX
            shares = [float((said[qu & (films.labels == true)] == called).mean()) for true, called in ((pneumonia, covid), (covid, pneumonia))]
            print(f"| {offset:+g} | {split} | " + " | ".join(f"{a:.3f}" for a in accuracy) + f" | {min(accuracy):.3f} | {statistics.mean(accuracy):.3f} | {shares[0]:.2f} | {shares[1]:.2f} |", flush=True)


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    seeds: list[int] = typer.Option([0, 1, 2], help="Seeds (repeat): each its own validation split."),
    factor: int = typer.Option(0, "--whole", help="Train the default whole with COVID-QU-Ex's cells counted this many times (0: heads only)."),
    out: Path = typer.Option(Path("/tmp/cxr-adult-pneumonia"), help="Where --whole writes its run."),
    model: Path | None = typer.Option(None, help="The default trained with the one --seeds given (generalization.py --keep): move its pneumonia boundary instead."),
) -> None:
    from lung_heads import fit, predicted

    if model:
        boundary(model, weights, seeds[0])
        return
    if factor:
        for seed in seeds:
            whole(weights, seed, factor, out / f"seed{seed}")
        return

    rows: dict[str, list[list[float]]] = {name: [] for name in VARIANTS}
    for seed in seeds:
        splits, names, prior = default_films(weights, seed)
        train, val = splits["train"], splits["val"]
        covid, pneumonia = names.index("Covid"), names.index("Viral Pneumonia")
        none_off = np.zeros((len(train.labels), 7, 7), np.float32)
        for name, (weigh, alone) in VARIANTS.items():
            mine = train.sources == QU_EX if alone else np.ones(len(train.labels), bool)
            part = Films(train.features[mine], train.labels[mine], train.sources[mine], [])
            kernel, bias = fit(part.features, part.labels, weigh(part), none_off[mine], len(names), seed, prior, 0.0)
            said = predicted(val.features, prior, kernel, bias)
            accuracy = [float((said == val.labels)[val.sources == s].mean()) for s in range(len(COLLECTIONS))]
            adult_pneumonia = (val.sources == QU_EX) & (val.labels == pneumonia)
            rows[name].append([*accuracy, float((said[adult_pneumonia] == covid).mean())])
            print(f"seed {seed}: {name}: " + " ".join(f"{v:.3f}" for v in rows[name][-1]), file=sys.stderr, flush=True)

    print(f"\nHeads on the five-collection default's frozen block5_pool features, validation, mean over seeds {seeds}.\n")
    print("| loss weights | " + " | ".join(COLLECTIONS) + " | lowest | mean | COVID-QU-Ex Non-COVID called Covid |")
    print("|---|" + "---|" * (len(COLLECTIONS) + 3))
    for name, per_seed in rows.items():
        m = np.mean(per_seed, axis=0)
        accuracy, alone = m[: len(COLLECTIONS)], VARIANTS[name][1]
        shown = [f"{a:.3f}" if not alone or s == QU_EX else "-" for s, a in enumerate(accuracy)]
        summary = ("-", "-") if alone else (f"{accuracy.min():.3f}", f"{statistics.mean(accuracy):.3f}")
        print(f"| {name} | " + " | ".join(shown) + f" | {summary[0]} | {summary[1]} | {m[-1]:.2f} |")


if __name__ == "__main__":
    typer.run(main)

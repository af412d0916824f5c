"""How cxr-adapt should choose its strength: rules compared on the features benchmarks/adapt.py cached.

    python research/adapt_rules.py [--models /tmp/models]

For each leave-one-collection-out model (seed 0) and k = 5 and 20 films per class (5 draws from the
held-out collection's train pool), the strength is chosen from adapt.fit's grid by each rule on the
k films' out-of-fold predictions, refitted, and the held-out test split scored from its features.
Run benchmarks/adapt.py first: it caches the features this reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import typer
from sklearn.model_selection import StratifiedKFold

from cxr.adapt import fit
from cxr.adapt.graph import find_head
from cxr.core.datasets import file_digest
from cxr.runtime.predictor import Predictor

CACHE = Path.home() / ".cache" / "cxr" / "adapt-benchmark"
HELD_OUT = ["COVID-QU-Ex-subset", "Covid19-dataset", "Covid19-radiography-subset", "Pediatric-pneumonia-subset"]
RULES = {
    "accuracy, ties to the stronger pull": lambda scores, losses: min(scores, key=lambda s: (-scores[s], -s)),
    "accuracy, ties to the weaker pull": lambda scores, losses: min(scores, key=lambda s: (-scores[s], s)),
    "out-of-fold likelihood": lambda scores, losses: min(losses, key=losses.get),
    "accuracy, ties by likelihood (shipped)": lambda scores, losses: min(scores, key=lambda s: (-scores[s], losses[s])),
}


def out_of_fold(site: fit.SiteFeatures, seed: int) -> dict[float, np.ndarray]:
    gram = fit._gram(site.features)
    folds = StratifiedKFold(min(fit.FOLDS, fit._smallest_class(site.labels)), shuffle=True, random_state=seed)
    found = {strength: np.empty_like(site.logits) for strength in fit.STRENGTHS}
    for train, held in folds.split(site.features, site.labels):
        for strength in fit.STRENGTHS:
            weights = fit._fit(gram[np.ix_(train, train)], site.logits[train], site.labels[train], strength)
            found[strength][held] = site.logits[held] + gram[np.ix_(held, train)] @ weights
    return found


def main(models: Path = typer.Option(Path("/tmp/models"), help="Where benchmarks/adapt.py read the models.")) -> None:
    for k in (5, 20):
        results = {rule: [] for rule in RULES}
        for collection in HELD_OUT:
            path = models / f"{collection}-seed0.onnx"
            head = find_head(onnx.load(str(path)), Predictor(path).info)
            digest = file_digest(path)[:16]
            pool, test = (np.load(CACHE / f"{digest}-{collection}-{split}.npz") for split in ("pool", "test"))
            x, y = pool["features"], pool["labels"]
            rng = np.random.default_rng(0)
            scored = {rule: [] for rule in RULES}
            for draw in range(5):
                chosen = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in np.unique(y)])
                site = fit.SiteFeatures(x[chosen], y[chosen], x[chosen] @ head.kernel + head.bias)
                found = out_of_fold(site, draw)
                scores = {s: fit.balanced_accuracy(z, site.labels) for s, z in found.items()}
                losses = {s: fit._balanced_loss(z, site.labels) for s, z in found.items()}
                for rule, pick in RULES.items():
                    strength = pick(scores, losses)
                    kernel, bias = head.kernel, head.bias
                    if scores[strength] > fit.balanced_accuracy(site.logits, site.labels):
                        kernel, bias, _ = fit.refit(site, head.kernel, head.bias, strength, found[strength])
                    scored[rule].append(np.mean((test["features"] @ kernel + bias).argmax(1) == test["labels"]))
            for rule in RULES:
                results[rule].append(float(np.mean(scored[rule])))
        for rule, accuracies in results.items():
            print(f"k = {k:2d}  {rule:40s} held-out mean {np.mean(accuracies):.3f}  ({', '.join(f'{a:.3f}' for a in accuracies)})")


if __name__ == "__main__":
    typer.run(main)

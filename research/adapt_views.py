"""Which view of the last feature map should cxr-adapt move the head in?

    python research/adapt_views.py [--models /tmp/models]

cxr-adapt moves every weight of the Flatten head: one weight per position and channel (7 x 7 x 512),
pulled toward the model's own. Fewer, shared weights might generalise better from 5-20 films a
class. Each view below is a linear map of the flattened features, so the head it adapts is still
linear in the feature map (heat maps stay exact): the update is fitted as cxr-adapt fits it
(adapt.fit.adapt_head: strength by cross-validation, refit) on the view's features and added to the
model's own logits. For each leave-one-collection-out model (seed 0), k = 5 and 20 films per class
(5 draws from the held-out collection's train pool), the held-out test split is scored from the
features benchmarks/adapt.py cached (run it first).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import typer

from cxr.adapt import fit
from cxr.adapt.graph import find_head
from cxr.core.datasets import file_digest
from cxr.runtime.predictor import Predictor

CACHE = Path.home() / ".cache" / "cxr" / "adapt-benchmark"
HELD_OUT = ["COVID-QU-Ex-subset", "Covid19-dataset", "Covid19-radiography-subset", "Pediatric-pneumonia-subset"]
CHANNELS = 512  # VGG16's last block


def pooled(features: np.ndarray) -> np.ndarray:
    """The channels' means over the map's positions (the flattened map is position-major)."""
    return features.reshape(len(features), -1, CHANNELS).mean(axis=1)


def unit(parts: list[np.ndarray], reference: list[np.ndarray]) -> np.ndarray:
    """The parts side by side, each scaled to unit mean square on the site's films (``reference``)."""
    return np.hstack([p / np.sqrt(np.mean(np.sum(r.astype(np.float64) ** 2, axis=1))) for p, r in zip(parts, reference)])


VIEWS: dict[str, Callable[[np.ndarray], list[np.ndarray]]] = {
    "every position and channel (shipped)": lambda x: [x],
    "channels, pooled over positions": lambda x: [pooled(x)],
    "both": lambda x: [x, pooled(x)],
}


def adapted_logits(view, site_x: np.ndarray, labels: np.ndarray, base: np.ndarray, test_x: np.ndarray, test_base: np.ndarray, seed: int) -> np.ndarray:
    """The test films' logits after adapting in ``view``: the model's own plus the fitted update."""
    site_parts = view(site_x)
    site = fit.SiteFeatures(unit(site_parts, site_parts), labels, base)
    width = site.features.shape[1]
    adapted = fit.adapt_head(site, np.zeros((width, base.shape[1])), np.zeros(base.shape[1]), seed)
    # adapt_head divides its (here: update-only) head by the temperature; argmax needs the update as fitted.
    update = adapted.kernel * adapted.temperature, adapted.bias * adapted.temperature
    return test_base + unit(view(test_x), site_parts) @ update[0] + update[1]


def main(models: Path = typer.Option(Path("/tmp/models"), help="Where benchmarks/adapt.py read the models.")) -> None:
    for k in (5, 20):
        results: dict[str, list[float]] = {name: [] for name in VIEWS}
        for collection in HELD_OUT:
            path = models / f"{collection}-seed0.onnx"
            head = find_head(onnx.load(str(path)), Predictor(path).info)
            digest = file_digest(path)[:16]
            pool, test = (np.load(CACHE / f"{digest}-{collection}-{split}.npz") for split in ("pool", "test"))
            x, y, test_x = pool["features"], pool["labels"], test["features"]
            test_base = test_x @ head.kernel + head.bias
            rng = np.random.default_rng(0)
            scored: dict[str, list[float]] = {name: [] for name in VIEWS}
            for draw in range(5):
                chosen = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in np.unique(y)])
                base = x[chosen] @ head.kernel + head.bias
                for name, view in VIEWS.items():
                    logits = adapted_logits(view, x[chosen], y[chosen], base, test_x, test_base, draw)
                    scored[name].append(float(np.mean(logits.argmax(1) == test["labels"])))
            for name in VIEWS:
                results[name].append(float(np.mean(scored[name])))
        for name, accuracies in results.items():
            print(f"k = {k:2d}  {name:40s} held-out mean {np.mean(accuracies):.3f}  ({', '.join(f'{a:.3f}' for a in accuracies)})")


if __name__ == "__main__":
    typer.run(main)

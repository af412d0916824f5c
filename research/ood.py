"""Which out-of-distribution score tells chest X-rays from other images? The shipped one (squared
Mahalanobis distance of the pooled map the head reads) against the same at other depths, the energy
score and the maximum softmax probability, on a trained model.

    python research/ood.py --artifacts artifacts

Each Mahalanobis candidate is fitted on the model's own training split as cxr-train fits the shipped
one (cxr.train.ood), and every candidate's threshold follows the same rule on the validation split.
The other images are tests/not_xrays.py's (scikit-image's samples, screenshots, made ones). The choice
is read on validation (ROC AUC between the other images and the validation X-rays, their share
flagged, and how far the nearest of them lies beyond the threshold); the test split is reported for
the record. Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import typer

os.environ.setdefault("CXR_QUIET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

POOLED = {
    "block4_pool": "block 4 (frozen ImageNet)",
    "block5_conv3": "block 5's last convolution, before pooling",
    "block5_pool": "block 5 after max-pooling, what the head reads (shipped)",
}


def main(artifacts: Path = typer.Option(Path("artifacts"), help="Folder with model.keras and its run record.")) -> None:
    import keras
    from scipy.special import logsumexp, softmax
    from sklearn.metrics import roc_auc_score

    from cxr.core.datasets import files_under, scan_roots, source_names
    from cxr.runtime.imaging import load_image, read_rgb, to_model_input
    from cxr.train import ood
    from cxr.train.model import PROBABILITIES
    from not_xrays import write_not_xrays

    config = json.loads((artifacts / "config.json").read_text())
    record = json.loads((artifacts / "metrics.json").read_text())
    names = config["class_names"]
    validation = {Path(f).resolve() for f in record["validation_files"]}
    roots = scan_roots([Path(root) for root in config["data"]], config["classes"], tuple(config.get("class_map", {}).items()))
    rows = []  # (path, split, source, label)
    for root, source in zip(roots, source_names([r.root for r in roots])):
        for split, files in (("train", root.train), ("test", root.test)):
            for label, name in enumerate(names):
                rows += [(p, "val" if p.resolve() in validation else split, source, label) for p in files.get(name, [])]
    with tempfile.TemporaryDirectory() as scratch:
        others = files_under(write_not_xrays(Path(scratch)))
        read = [(p, load_image(p, config["image_size"], config["contrast"])) for p in others]
    rows += [(p, "other", "not chest X-rays", -1) for p, _ in read]
    split = np.array([r[1] for r in rows])
    source = np.array([r[2] for r in rows])
    labels = np.array([r[3] for r in rows])

    model = keras.saving.load_model(artifacts / "model.keras", safe_mode=True)
    dense = model.get_layer(PROBABILITIES)
    taps = [model.get_layer(name).output for name in POOLED] + [dense.input]
    reader = keras.Model(model.input, taps)
    kernel, bias = dense.get_weights()
    def features(images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each depth's pooled features, and the logits, of model inputs."""
        pooled: dict[str, list[np.ndarray]] = {name: [] for name in POOLED}
        logits = []
        for start in range(0, len(images), 16):
            outputs = reader.predict_on_batch(np.stack(images[start : start + 16]).astype(np.float32))
            for name, values in zip(POOLED, outputs):
                pooled[name].append(np.asarray(values).mean(axis=(1, 2)))
            logits.append(np.asarray(outputs[-1]) @ kernel + bias)
            print(f"\r{start + 16}/{len(images)} images", end="", file=sys.stderr)
        print(file=sys.stderr)
        return {name: np.concatenate(values) for name, values in pooled.items()}, np.concatenate(logits)

    pixels = {p: image for p, image in read}
    pooled, logits_all = features([pixels[p] if p in pixels else load_image(p, config["image_size"], config["contrast"]) for p, *_ in rows])

    fit = split == "train"
    scores, fitted = {}, {}
    for name, description in POOLED.items():
        fitted[name] = ood.fit_gaussians(pooled[name][fit], labels[fit], len(names))
        scores[f"Mahalanobis, {description}"] = np.asarray(ood.distance(pooled[name].astype(np.float32), fitted[name]))
    scores["energy (-logsumexp of the logits)"] = -logsumexp(logits_all, axis=1)
    scores["maximum softmax probability (negated)"] = -softmax(logits_all, axis=1).max(axis=1)

    val, test, other = split == "val", split == "test", split == "other"
    sources = sorted(set(source[val]))
    print(f"Out-of-distribution scores on {artifacts}: {other.sum()} images that are not chest X-rays, "
          f"{val.sum()} validation and {test.sum()} test X-rays; each threshold lets "
          f"{ood.VALIDATION_PASS:.1%} of every source's validation images through.\n")
    print("| score | ROC AUC, others vs validation | others flagged | nearest other / threshold | "
          + " | ".join(f"test flagged, {s}" for s in sources) + " | ROC AUC, others vs test |")
    print("|---|---|---|---|" + "---|" * len(sources) + "---|")
    for name, values in scores.items():
        limit = ood.threshold(values[val], source[val])
        auc = roc_auc_score(np.r_[np.ones(other.sum()), np.zeros(val.sum())], np.r_[values[other], values[val]])
        test_auc = roc_auc_score(np.r_[np.ones(other.sum()), np.zeros(test.sum())], np.r_[values[other], values[test]])
        margin = f"{values[other].min() / limit:.2f}" if limit > 0 else "n/a"
        flagged = [f"{np.mean(values[test & (source == s)] > limit):.1%}" for s in sources]
        print(f"| {name} | {auc:.3f} | {np.mean(values[other] > limit):.1%} | {margin} | {' | '.join(flagged)} | {test_auc:.3f} |")


    # Chest X-rays changed the ways uploads go wrong, scored as the model file scores them.
    shipped = f"Mahalanobis, {POOLED[ood.LAYER]}"
    limit = ood.threshold(scores[shipped][val], source[val])
    picked = [p for s_ in sources for p, *_ in [r for r in rows if r[1] == "test" and r[2] == s_][:TRANSFORMED_PER_SOURCE]]
    originals = [read_rgb(p) for p in picked]
    print(f"\nThe shipped score on {len(picked)} test X-rays (up to {TRANSFORMED_PER_SOURCE} per source) changed as uploads go wrong:\n")
    print("| the X-ray | flagged | median score / threshold |")
    print("|---|---|---|")
    for what, change in TRANSFORMS.items():
        changed = [to_model_input(change(image), config["image_size"], config["contrast"]) for image in originals]
        values = np.asarray(ood.distance(features(changed)[0][ood.LAYER].astype(np.float32), fitted[ood.LAYER]))
        print(f"| {what} | {np.mean(values > limit):.0%} | {np.median(values) / limit:.2f} |")


TRANSFORMED_PER_SOURCE = 40


def _on_a_screen(image):
    """A photo of the X-ray on a monitor: smaller, in a dark bezel, blue-tinted, soft, with glare."""
    from PIL import Image, ImageFilter

    width, height = image.size
    frame = Image.new("RGB", (width, height), (25, 25, 30))
    frame.paste(image.resize((int(width * 0.7), int(height * 0.7))), (int(width * 0.15), int(height * 0.12)))
    tint = Image.new("RGB", frame.size, (40, 60, 110))
    glare = Image.linear_gradient("L").resize(frame.size).point(lambda v: v // 3)
    shot = Image.composite(Image.new("RGB", frame.size, (255, 255, 255)), Image.blend(frame, tint, 0.25), glare)
    return shot.filter(ImageFilter.GaussianBlur(2))


TRANSFORMS = {
    "as it is": lambda image: image,
    "inverted (a negative, as a misread MONOCHROME1 DICOM)": lambda image: image.point(lambda v: 255 - v),
    "rotated 90 degrees": lambda image: image.rotate(90, expand=True),
    "upside down": lambda image: image.rotate(180),
    "one half (the left lung)": lambda image: image.crop((0, 0, image.width // 2, image.height)),
    "photographed on a screen": _on_a_screen,
}


if __name__ == "__main__":
    typer.run(main)

"""Augmentation against acquisition signatures, measured on heads: does showing each training film as
another department might have framed and marked it help a collection the model never saw?

    python research/augment_heads.py --weights PATH [--seeds 0 --seeds 1 --seeds 2]

Each train film gets one altered copy (fixed seed): cut to a random 75-100% of its width and of its
height at a random place (so framing, scale and aspect differ), and in half of them a burned-in
marker (a white letter L, R, A or P) in a random corner. No gamma or contrast change: the default
equalizes each resized film's histogram, which undoes any monotonic change of its gray levels. The
copies are read by the runtime's imaging code and the frozen VGG16 to block5_pool (about 6 minutes on
2 CPU cores); the films themselves come from cxr-train's feature cache. The default recipe's head
(research/lung_heads.py) is trained on the films with and without their copies, with and without
today's lung prior, and scored as research/lung_crop.py scores it (validation and test films are
never altered): mean over seeds of the lowest collection's validation accuracy, the mean
leave-one-collection-out validation accuracy, and each held-out collection's test accuracy and
Normal recall.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import typer
from PIL import Image, ImageDraw, ImageFont

os.environ.setdefault("CXR_QUIET", "1")

from lung_crop import WHOLE, features, header, prior_as_cut, row, scores  # noqa: E402
from lung_heads import EARLIER, EARLIER_GRID, GRID, block5_of, cached_block4, four_collections  # noqa: E402

LEAST_KEPT = 0.75  # of each side
MARKERS = "LRAP"


def reframed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The film cut to a random part of it, with a burned-in letter in a corner half of the time."""
    width, height = image.size
    kept_w, kept_h = rng.uniform(LEAST_KEPT, 1.0, 2)
    left, top = rng.uniform(0, 1 - kept_w) * width, rng.uniform(0, 1 - kept_h) * height
    piece = image.crop((int(left), int(top), int(left + kept_w * width), int(top + kept_h * height)))
    if rng.random() < 0.5:
        side = int(rng.uniform(0.05, 0.12) * min(piece.size))
        x, y = (rng.uniform(0.02, 0.12, 2) * piece.size).astype(int)
        x = x if rng.random() < 0.5 else piece.size[0] - x - side
        y = y if rng.random() < 0.5 else piece.size[1] - y - side
        ImageDraw.Draw(piece).text((x, y), rng.choice(list(MARKERS)), fill=(255, 255, 255), font=ImageFont.load_default(size=max(side, 8)))
    return piece


def main(
    weights: str = typer.Option(..., envvar="CXR_VGG16_WEIGHTS", help="VGG16 no-top .h5"),
    seeds: list[int] = typer.Option([0, 1, 2], help="Seeds (repeat)."),
) -> None:
    from cxr.train.model import FEATURES

    roots, names, config, net = four_collections(weights)
    (train, x4), (test, x4_test) = cached_block4(config, net, roots, names, weights)
    block5 = functools.partial(block5_of, net.segment(EARLIER, FEATURES))
    plain = np.ones(EARLIER_GRID, np.float32)
    x, x_test = block5(x4, plain), block5(x4_test, plain)
    rng = np.random.default_rng(0)
    copies = features(train.paths, lambda images: [(reframed(image, rng), WHOLE) for image in images], net.segment(None, FEATURES), config.image_size, config.contrast)[0]
    lung_prior = prior_as_cut(train.paths, np.tile(WHOLE, (len(train), 1)), config.image_size, 3)

    print(header("training films"), flush=True)
    for name, prior, altered in [
        ("as they are", np.ones(GRID, np.float32), ()),
        ("as they are, lung prior power 3 (today's default)", lung_prior, ()),
        ("and a reframed, marked copy of each", np.ones(GRID, np.float32), (copies,)),
        ("and a reframed, marked copy of each, lung prior power 3", lung_prior, (copies,)),
    ]:
        print(row(name, [scores(train, x, test, x_test, prior, names.index("Normal"), len(names), seed, altered) for seed in seeds]), flush=True)

if __name__ == "__main__":
    typer.run(main)

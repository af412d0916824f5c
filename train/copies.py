"""Near-copies across collections: the same film, resized, recompressed or contrast-enhanced, stored
in two collections (or twice in one), found by two 16x16 mean hashes.

Each hash is a 256-bit image: a pixel's bit is set when it is brighter than the image's mean, after
the film is made gray and resized to 16x16; the second does the same after equalizing the gray
histogram, which finds the copies that one collection stores contrast-enhanced and another plain
(the plain hash alone missed half of the shared collections' true copies). Two films whose hashes
differ in at most NEAR_BITS bits, by either hash, are taken to be copies (the threshold the shared
collections were deduplicated with). Hashes are kept in a row store by file content, so a rerun
computes none again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cxr.core import __version__
from cxr.runtime.imaging import RESAMPLING, read_rgb

from .store import StoreSpec, made_by

SIDE = 16  # a hash is SIDE x SIDE bits
NEAR_BITS = 12  # of 256: at most this many bits apart is a copy
METHOD = "16x16 mean hash, plain and after histogram equalization"
SPEC = StoreSpec("meanhash", (2, SIDE * SIDE // 8), "uint8", made_by(method=METHOD, side=SIDE, cxr=__version__))
_CHUNK = 32  # rows compared at a time: 32 x M x 64 bytes, flat for any number M of train images
_ONES = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)  # bits set per byte


def mean_hashes(path: Path) -> np.ndarray:
    """The two packed hashes of one file, (2, 32) uint8; raises InputFileError as every reader does."""
    gray = read_rgb(path, min_size=4 * SIDE).convert("L")
    return np.stack([_bits(gray), _bits(ImageOps.equalize(gray))])


def _bits(gray: Image.Image) -> np.ndarray:
    small = np.asarray(gray.resize((SIDE, SIDE), RESAMPLING), dtype=np.float32)
    return np.packbits((small > small.mean()).ravel())


def nearest(codes: np.ndarray, among: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``codes`` (N, 2, 32): the fewest bits it differs from any row of ``among`` by
    either hash, and that row's index (N,) each; 256 bits and index -1 where ``among`` is empty."""
    bits = np.full(len(codes), SIDE * SIDE, dtype=np.int64)
    index = np.full(len(codes), -1, dtype=np.int64)
    if not len(among):
        return bits, index
    for start in range(0, len(codes), _CHUNK):
        chunk = codes[start : start + _CHUNK]
        differing = _ONES[chunk[:, None] ^ among[None]].sum(axis=-1, dtype=np.int64).min(axis=-1)  # (n, M)
        index[start : start + _CHUNK] = differing.argmin(axis=1)
        bits[start : start + _CHUNK] = differing.min(axis=1)
    return bits, index

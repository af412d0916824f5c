"""Per-image arrays kept on disk and read memory-mapped: decoded images, or one layer's features.

A store holds one row per image content. Its folder is named by everything that shapes a row (the
layer, the weights file's digest, image size, contrast step, normalisation, cxr's version) and each
row by the SHA-256 of the image file's bytes, so a row is only ever found for exactly what made it:
an edited image, other weights or another size find nothing and are computed afresh.

Rows go to ``rows.bin`` before their digests go to ``keys.txt`` (one per line, line i naming row
i), each flushed to disk first, so a run killed part-way leaves at most rows that no key names, and
a half-written last key line is ignored. Writers hold a lock on the folder; readers need none.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxr.core.files import write_json


@dataclass(frozen=True)
class StoreSpec:
    """What one store's rows are, and everything that made them."""

    layer: str  # "image" (decoded model input) or the Keras layer whose output is stored
    shape: tuple[int, ...]
    dtype: str
    made_by: tuple[tuple[str, str], ...]  # (what, value) pairs: weights digest, image size, ...

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


class RowStore:
    """One store's folder: find rows by content digest, add rows, read them memory-mapped."""

    def __init__(self, parent: Path, spec: StoreSpec):
        self.spec = spec
        self.folder = parent / f"{spec.layer}-{spec.key}"
        self.folder.mkdir(parents=True, exist_ok=True)
        spec_file = self.folder / "spec.json"
        if not spec_file.exists():  # for people reading the cache; the folder name is the key
            write_json(spec_file, asdict(spec))
        self._rows_file = self.folder / "rows.bin"
        self._keys_file = self.folder / "keys.txt"
        self.rows: dict[str, int] = {}
        self._reload()

    def _reload(self) -> None:
        text = self._keys_file.read_text() if self._keys_file.exists() else ""
        complete = text[: text.rfind("\n") + 1]  # a key line cut short by a kill names no row
        self.rows = {key: row for row, key in enumerate(complete.splitlines())}

    def missing(self, digests: Sequence[str]) -> set[str]:
        return set(digests) - self.rows.keys()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the folder's lock (another run may be filling the same store) with the keys re-read."""
        with open(self.folder / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._reload()
            yield

    def add(self, digests: Sequence[str], values: np.ndarray) -> None:
        """Append rows for ``digests`` not stored yet (call inside ``writing()``)."""
        new, seen = [], set(self.rows)
        for i, digest in enumerate(digests):  # a batch may hold the same image twice
            if digest not in seen:
                seen.add(digest)
                new.append(i)
        if not new:
            return
        data = np.ascontiguousarray(values[new], dtype=self.spec.dtype)
        with open(self._rows_file, "ab") as rows:
            rows.truncate(len(self.rows) * self.spec.row_bytes)  # drop rows no key names
            rows.write(data.tobytes())
            rows.flush()
            os.fsync(rows.fileno())
        with open(self._keys_file, "a") as keys:
            keys.truncate(sum(len(key) + 1 for key in self.rows))  # and a key line cut short
            keys.write("".join(f"{digests[i]}\n" for i in new))
            keys.flush()
            os.fsync(keys.fileno())
        for i in new:
            self.rows[digests[i]] = len(self.rows)

    def array(self) -> np.ndarray:
        """Every named row, memory-mapped read-only: pages are read from disk as they are used."""
        shape = (len(self.rows), *self.spec.shape)
        if not self.rows:
            return np.zeros(shape, self.spec.dtype)
        return np.memmap(self._rows_file, dtype=self.spec.dtype, mode="r", shape=shape)

    def rows_of(self, digests: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.rows[digest] for digest in digests), dtype=np.int64, count=len(digests))


def made_by(**values: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, str(value)) for name, value in values.items()))

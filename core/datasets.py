"""Folder-per-class data sets (Kaggle layout): ``ROOT/<class>/<image>``, class names sorted.

A data root holds splits as such sets: ``ROOT/train/<class>/*`` and optionally ``ROOT/test/<class>/*``.
Decoding is passed in (``read``), so training and the runtime each read files their own way through
the one definition in ``cxr.runtime.imaging``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError, InputFileError
from .progress import progress
from .sources import cache_dir, download, is_kaggle

log = logging.getLogger(__name__)

Reader = Callable[[Path], np.ndarray]  # a file -> model input, raising InputFileError

MADE_TEST_SHARE = 0.2  # of each class, held out as the test split of a collection that has none
DECODERS = len(os.sched_getaffinity(0))  # threads decoding images: one per core
DECODE_BATCH = 32  # images decoded at a time


@dataclass
class LabeledImages:
    """Decoded images of one split with their class indices, and the files that could not be read."""

    images: np.ndarray  # uint8, (N, size, size, 3)
    labels: np.ndarray  # int64, (N,)
    paths: list[Path]
    skipped: list[str] = field(default_factory=list)  # "path: reason"

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DataRoot:
    """A data root's files per class: ``train`` always, ``test`` when the root has that split."""

    root: Path
    train: dict[str, list[Path]]
    test: dict[str, list[Path]]

    @property
    def class_names(self) -> list[str]:
        return sorted(self.train)


def open_root(spec: Path) -> Path:
    """The local data root for a ``--data`` value: the folder as given, or a ``kaggle:`` download,
    given train and test splits by cxr when it has none (links in cxr's cache; the download is kept
    as it is)."""
    if not is_kaggle(spec):
        return Path(spec)
    folder = download(spec)
    return folder if (folder / "train").is_dir() else _made_split(folder)


def _made_split(folder: Path) -> Path:
    """``train/`` and ``test/`` (MADE_TEST_SHARE of each class, the same draw every time) of links
    to a folder-per-class set's files, built once per download."""
    target = cache_dir() / "splits" / hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    if target.is_dir():
        return target
    building = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    rng = np.random.default_rng(0)
    for name, paths in class_folders(folder).items():
        tested = set(rng.permutation(len(paths))[: round(MADE_TEST_SHARE * len(paths))])
        for i, path in enumerate(paths):
            link = building / ("test" if i in tested else "train") / name / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    try:
        building.rename(target)  # whole or not at all; another process may have built it first
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
    log.info("%s has no train/test split: made one (%.0f%% test) in %s", folder, MADE_TEST_SHARE * 100, target)
    return target


def only_classes(files: dict[str, list[Path]], classes: Sequence[str]) -> dict[str, list[Path]]:
    """The class folders among ``classes`` (matched case aside); all of them when ``classes`` is empty."""
    wanted = {name.casefold() for name in classes}
    return {name: paths for name, paths in files.items() if not wanted or name.casefold() in wanted}


def open_sources(specs: list[Path]) -> dict[str, Path]:
    """Each ``--data`` value's local root, under the name metrics give it (see source_names)."""
    return {name: open_root(spec) for name, spec in zip(source_names(specs), specs)}


def scan_roots(roots: list[Path], classes: Sequence[str] = (), class_map: Sequence[tuple[str, str]] = ()) -> list[DataRoot]:
    """Scan several data roots (or ``kaggle:`` handles) into one set of classes.

    Folder names are matched case aside (``COVID`` is ``Covid``). ``class_map`` pairs rename a folder
    onto another class (``("Bacterial Pneumonia", "Viral Pneumonia")``) or, with an empty target, leave
    it out; ``classes``, when given, keeps only those. A root may then lack some classes and hold
    others: the model's classes (``model_classes``) are the union of what is kept, each spelt as in
    the first root that has it. A mapped or kept name that no root has is a DatasetError, and so is
    a root left with no class.
    """
    scanned = [scan_root(open_root(root)) for root in roots]
    folders = {name.casefold(): name for data in scanned for name in data.train}
    named = folders.keys() | {target.casefold() for _, target in class_map}
    for name in [source for source, _ in class_map] + list(classes):
        if name.casefold() not in named:
            raise DatasetError(f"no data root has a class folder {name!r} (they have {sorted(folders.values())})")
    mapped = [_mapped(data, class_map, classes) for data in scanned]
    canonical: dict[str, str] = {}
    for root, data, found in zip(roots, mapped, scanned):
        if not data.train:
            raise DatasetError(f"{root}: none of its class folders is kept (it has {found.class_names})")
        for name in data.train:
            canonical.setdefault(name.casefold(), name)
    if len(canonical) < 2:
        raise DatasetError(f"the data roots keep {len(canonical)} class; need at least 2")
    return [_renamed(data, canonical) for data in mapped]


def model_classes(roots: Sequence[DataRoot]) -> list[str]:
    """The classes a model trained on ``roots`` has: every root's, sorted."""
    return sorted({name for data in roots for name in data.class_names})


def _mapped(data: DataRoot, class_map: Sequence[tuple[str, str]], classes: Sequence[str]) -> DataRoot:
    """A root's folders renamed by ``class_map``, then only ``classes`` kept."""
    return DataRoot(
        data.root,
        only_classes(mapped_folders(data.train, class_map), classes),
        only_classes(mapped_folders(data.test, class_map), classes),
    )


def mapped_folders(files: dict[str, list[Path]], class_map: Sequence[tuple[str, str]]) -> dict[str, list[Path]]:
    """Class folders renamed by ``class_map``'s ``(folder, class)`` pairs, matched case aside: two
    folders onto one class are merged, a folder mapped onto "" is left out."""
    renames = {source.casefold(): target for source, target in class_map}
    spelling = {name.casefold(): name for name in files}
    result: dict[str, list[Path]] = {}
    for name, paths in files.items():
        target = renames.get(name.casefold(), name)
        if target:
            result.setdefault(spelling.get(target.casefold(), target), []).extend(paths)
    return result


def _renamed(data: DataRoot, canonical: dict[str, str]) -> DataRoot:
    def name(folder: str) -> str:
        return canonical.get(folder.casefold(), folder)

    return DataRoot(
        data.root,
        {name(n): files for n, files in data.train.items()},
        {name(n): files for n, files in data.test.items() if n.casefold() in canonical},
    )


def source_names(roots: list[Path]) -> list[str]:
    """How metrics name each data root: its folder name, numbered where two share one."""
    names = [root.name or str(root) for root in roots]
    return [name if names.count(name) == 1 else f"{name}-{i + 1}" for i, name in enumerate(names)]


def scan_root(root: Path) -> DataRoot:
    """List a data root's files, refusing a layout a model cannot be trained on (DatasetError)."""
    if not root.is_dir():
        raise DatasetError(f"{root}: no such data folder")
    train = class_folders(root / "train") if (root / "train").is_dir() else {}
    if not train:
        raise DatasetError(f"{root}: no train split (expected {root / 'train'}/<class>/<image>)")
    if len(train) < 2:
        raise DatasetError(f"{root / 'train'}: {len(train)} class folder; need at least 2")
    for name, files in train.items():
        if not files:
            raise DatasetError(f"{root / 'train' / name}: empty class folder")
    test = class_folders(root / "test") if (root / "test").is_dir() else {}
    return DataRoot(root, train, test)


def class_folders(root: Path) -> dict[str, list[Path]]:
    """Map each class folder under ``root`` to its files, both sorted; hidden entries are ignored.

    A class folder with an ``images`` folder is read from there alone: collections such as the
    COVID-19 Radiography Database keep lung masks beside the X-rays, and a mask is not an X-ray.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: no such data folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {folder.name: files_under(folder / "images" if (folder / "images").is_dir() else folder) for folder in folders}


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``, sorted; hidden files and folders (``.name``) are left out."""
    found = (p for p in folder.rglob("*") if p.is_file())
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (what the image is, wherever it lies and whatever its name)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def file_digests(paths: Sequence[Path]) -> list[str]:
    """Every file's digest, on every core (hashlib releases the GIL on large buffers). A file that
    cannot be read gets a digest of its path, so decoding reports the problem."""
    with ThreadPoolExecutor(DECODERS) as pool:
        return list(pool.map(_digest_or_path, paths))


def _digest_or_path(path: Path) -> str:
    try:
        if path.is_file():  # never open a FIFO or device: reading it could block for ever
            return file_digest(path)
    except OSError:
        pass
    return "unreadable:" + hashlib.sha256(str(path).encode()).hexdigest()


def sample_files(files: dict[str, list[Path]], limit: int) -> dict[str, list[Path]]:
    """About ``limit`` files, the first of each class in equal numbers, so that every class is in."""
    per_class = -(-limit // max(1, len(files)))
    return {name: paths[:per_class] for name, paths in files.items()}


def check_split(root: Path) -> Path:
    """The split to check a model on without touching its training: test when there is one."""
    return root / "test" if (root / "test").is_dir() else root / "train"


def labelled_files(files: dict[str, list[Path]], class_names: list[str]) -> list[tuple[Path, int]]:
    """``(file, class index)`` pairs, folder names matched to classes case aside (``COVID`` is
    ``Covid``); a class the model does not know is a DatasetError."""
    index = {name.casefold(): i for i, name in enumerate(class_names)}
    unknown = sorted(name for name in files if name.casefold() not in index)
    if unknown:
        raise DatasetError(
            f"classes {unknown} are not among the model's classes {class_names} "
            "(--class-map FOLDER=CLASS maps a folder onto one, FOLDER= leaves it out)"
        )
    return [(path, index[name.casefold()]) for name, paths in files.items() for path in paths]


def load_images(
    files: dict[str, list[Path]],
    class_names: list[str],
    read: Reader,
    strict: bool = False,
    description: str = "Reading images",
) -> LabeledImages:
    """Decode every file into one array; an unreadable one is skipped with a warning, or an error
    when ``strict``. For sets that fit in memory (a test split); training streams (decode_batches)."""
    items = labelled_files(files, class_names)
    label_of = dict(items)
    images, labels, paths, skipped = [], [], [], []
    batches = decode_batches([path for path, _ in items], read, DECODE_BATCH)
    for batch in progress(batches, description, total=-(-len(items) // DECODE_BATCH)):
        decoded, failed = readable(batch, strict)
        skipped += failed
        for path, image in decoded:
            images.append(image)
            labels.append(label_of[path])
            paths.append(path)
    stacked = np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)
    return LabeledImages(stacked, np.asarray(labels, dtype=np.int64), paths, skipped)


Decoded = tuple[Path, "np.ndarray | InputFileError"]


def decode_batches(paths: Sequence[Path], read: Reader, size: int) -> Iterator[list[Decoded]]:
    """Decode ``paths`` on every core, ``size`` at a time, in order: at most two batches are held
    (the one handed out and the next, decoding meanwhile), so memory does not grow with the data.
    ``read`` must be safe to call from several threads (cxr's readers are)."""
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    # Pillow and numpy release the GIL while they decode and resize, so threads use every core.
    pool = ThreadPoolExecutor(DECODERS)
    try:
        pending = None
        for chunk in [*chunks, None]:
            submitted = chunk and [(path, pool.submit(_attempt, read, path)) for path in chunk]
            if pending:
                yield [(path, future.result()) for path, future in pending]
            pending = submitted
    finally:
        pool.shutdown(cancel_futures=True)


def readable(batch: list[Decoded], strict: bool) -> tuple[list[tuple[Path, np.ndarray]], list[str]]:
    """A decoded batch's images, and its unreadable files as "path: reason" (logged), or a
    DatasetError for the first of them when ``strict``."""
    images, skipped = [], []
    for path, outcome in batch:
        if not isinstance(outcome, InputFileError):
            images.append((path, outcome))
            continue
        if strict:
            raise DatasetError(f"{outcome} (--strict)") from None
        log.warning("skipped %s", outcome)
        skipped.append(str(outcome))
    return images, skipped


def _attempt(read: Reader, path: Path) -> np.ndarray | InputFileError:
    try:
        return read(path)
    except InputFileError as error:
        return error


def load_folder(
    folder: Path,
    class_names: list[str],
    read: Reader,
    limit: int | None = None,
    description: str = "Reading images",
    class_map: Sequence[tuple[str, str]] = (),
) -> LabeledImages:
    """A folder-per-class set, decoded: all of it, or about ``limit`` images with every class in.
    Folders are renamed or left out by ``class_map`` (as in mapped_folders), then folders of other
    classes than ``class_names`` are left out (a collection may have more).

    Raises DatasetError when nothing in it can be read.
    """
    files = only_classes(mapped_folders(class_folders(folder), class_map), class_names)
    chosen = sample_files(files, limit) if limit else files
    images = load_images(chosen, class_names, read, description=description)
    if not len(images):
        raise DatasetError(f"{folder}: no readable images")
    return images


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held out), holding out ``fraction`` of each label, at least one.

    To stratify by source and class at once, pass one label per (source, class) pair.
    """
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        n_held = max(1, round(fraction * len(indices))) if fraction > 0 else 0
        n_held = min(n_held, len(indices) - 1)
        held.extend(indices[:n_held])
        kept.extend(indices[n_held:])
    return np.sort(np.asarray(kept, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def class_counts(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    return {name: int(np.sum(labels == i)) for i, name in enumerate(class_names)}

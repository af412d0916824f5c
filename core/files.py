"""Writing files so that a crash, a kill or a power cut never leaves one that looks complete and is not."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CxrError

# What a full, read-only or forbidden destination raises: the user's to fix, so one line, not a trace.
_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


@contextlib.contextmanager
def atomic_paths(*targets: str | Path) -> Iterator[list[Path]]:
    """Yield a temporary path beside each target; if the block succeeds, flush them to disk and rename
    each over its target, so that files written together (a model and its run record) land together.

    On any failure the temporary files are removed and the targets stay as they were. Temporary names
    start with a dot and keep the target's suffix, since some writers (Keras) check it.
    """
    paths = [Path(t) for t in targets]
    temps: list[Path] = []
    try:
        temps = [_create_beside(target) for target in paths]
        yield temps
        for tmp in temps:
            _fsync(tmp)
        for tmp, target in zip(temps, paths):
            os.replace(tmp, target)
        for folder in {target.parent for target in paths}:
            _fsync(folder)  # the renames themselves survive a power cut only once the folder is synced
    except OSError as error:
        if error.errno in _CANNOT_WRITE:
            where = error.filename or paths[0]
            raise CxrError(f"cannot write {Path(where).parent}: {error.strerror}; nothing was written") from None
        raise
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """One file's ``atomic_paths``."""
    with atomic_paths(target) as (tmp,):
        yield tmp


def _create_beside(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}{target.suffix}")
        try:
            # 0666 less the umask, applied by the kernel: the permissions a plain open() would give,
            # without reading the process-wide umask (which only setting it can do).
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def located(path: Path) -> str:
    """A path as a user can find it: a relative one names the folder it was looked for from."""
    return str(path) if path.is_absolute() else f"{path} (in {Path.cwd()})"


def dump_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_json(target: str | Path, data: Any) -> None:
    with atomic_path(target) as tmp:
        dump_json(tmp, data)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")

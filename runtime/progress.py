"""Progress bars for long loops (Rich, which Typer already brings)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import track

T = TypeVar("T")

# Bars go to stderr so that stdout stays clean for --json and pipes.
_STDERR = Console(stderr=True)


def progress(items: Sequence[T], description: str) -> Iterable[T]:
    """Iterate with a progress bar on stderr."""
    return track(items, description=description, disable=quiet(), console=_STDERR)


def quiet() -> bool:
    """``CXR_QUIET=1`` turns progress bars off (tests, scripts, logs)."""
    return os.environ.get("CXR_QUIET") == "1"

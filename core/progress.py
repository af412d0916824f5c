"""Progress on stderr for long work (Rich, which Typer already brings), so stdout stays for results.

``CXR_QUIET=1`` turns it all off (tests, scripts, logs). ``CXR_HOLD_AT=NAME`` stops a run at its
named point NAME (``checkpoint``), so that a test can kill it there whatever the machine's speed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn, track

T = TypeVar("T")

_STDERR = Console(stderr=True)


def quiet() -> bool:
    return os.environ.get("CXR_QUIET") == "1"


def progress(items: Iterable[T], description: str, total: int | None = None, show: bool = True) -> Iterable[T]:
    """Iterate with a progress bar; ``total`` for an iterator without a length, ``show=False`` for none."""
    return track(items, description=description, total=total, disable=quiet() or not show, console=_STDERR)


HOLDING = "holding at "  # the line a held run writes to stderr, then the point's name


def checkpoint(name: str) -> None:
    """A named point of a long run (reading, fitting, writing). Under ``CXR_HOLD_AT=name`` the run
    says so on stderr and waits there to be killed: the fault tests kill at each point, so every kill
    lands where it is meant to on a fast machine or a busy one."""
    if os.environ.get("CXR_HOLD_AT") == name:
        print(f"{HOLDING}{name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


@contextlib.contextmanager
def phase(description: str) -> Iterator[None]:
    """A step that cannot be counted (a conversion, a library call): a spinner and the time it takes."""
    columns = (SpinnerColumn(finished_text="[green]done[/]"), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=_STDERR, disable=quiet()) as bar:
        task = bar.add_task(description, total=None)
        yield
        bar.update(task, total=1, completed=1)


@contextlib.contextmanager
def counting(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A bar for work that finishes in chunks of any size (rows coming back from workers): the block
    gets a function that adds a count to it."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_STDERR, disable=quiet()) as bar:
        task = bar.add_task(description, total=total)
        yield lambda count: bar.update(task, advance=count)

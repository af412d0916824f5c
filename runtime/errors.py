"""The few exception types the library raises, and how the CLIs turn them into exit codes.

The library never calls sys.exit and never prints a traceback for an expected failure: it raises
one of these, and the CLI layer (``cli_errors``) prints one line and exits with the code below.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer


class CxrError(Exception):
    """Base of every expected failure; its message is one line meant for a user."""

    exit_code = 2


class InputFileError(CxrError):
    """One input image could not be read (missing, corrupt, not an image, too large)."""

    exit_code = 1


class DatasetError(CxrError):
    """The data folder is missing, empty or not laid out as folder-per-class."""


class ModelError(CxrError):
    """The model or weights file is missing, foreign, unreadable, or cannot be obtained."""


class MissingDependencyError(CxrError):
    """An optional extra is needed for this feature (for example ``pip install cxr[train]``)."""


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Map expected failures to a one-line message on stderr and the error's exit code."""
    try:
        yield
    except CxrError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None

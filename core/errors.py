"""The few exception types cxr raises for expected failures, each with the exit code it maps to.

The library never calls sys.exit and never prints a traceback for an expected failure: it raises
one of these, and the command-line boundary (``cxr.core.cli.boundary``) prints one line and exits.
"""

from __future__ import annotations


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


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception's message cut to one line for a user; its type's name when it has no message."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__

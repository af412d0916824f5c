"""The one command-line boundary every cxr command goes through.

Commands are thin Typer functions over library code. Here, once for all of them: expected failures
become one line on stderr and their exit code, a missing extra is named, ``--version`` prints the
package version, log records are one plain line, and help reads as Click writes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from . import __version__
from .errors import CxrError, MissingDependencyError


class Command(TyperCommand):
    """Help as argparse and Click write it: ``--epochs EPOCHS``, ``--contrast [none|equalize]``,
    ``INPUT...``; Typer's own layout adds ``<int range>`` and ``<list[Path]>`` labels and braces."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_name(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        params = self.get_params(ctx)
        arguments = [(_argument_name(p), p.help or "") for p in params if p.param_type_name == "argument"]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        options = [_option_record(p, ctx) for p in params if p.param_type_name == "option"]
        with formatter.section("Options"):
            formatter.write_dl([record for record in options if record])


def _argument_name(param: Any) -> str:
    return (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")


def _option_record(param: Any, ctx: Any) -> tuple[str, str] | None:
    record = param.get_help_record(ctx)
    if record is None:  # hidden
        return None
    names = " / ".join(", ".join(opts) for opts in (param.opts, param.secondary_opts) if opts)
    if not param.is_flag:
        choices = _choices(param)
        long_name = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
        names += " " + (param.metavar or (f"[{'|'.join(choices)}]" if choices else long_name))
    return names, record[1]


def _choices(param: Any) -> list[str]:
    # Typer 0.2x describes a parameter's type in ``type_descriptor``; Click in ``type``.
    described = getattr(param, "type_descriptor", None) or getattr(param, "type", None)
    return [str(choice) for choice in getattr(described, "choices", None) or ()]


def new_app(doc: str | None) -> typer.Typer:
    """A one-command Typer app with plain help (Rich's boxes cut option names at 80 columns)."""
    return typer.Typer(add_completion=False, help=doc, rich_markup_mode=None, pretty_exceptions_enable=False)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cxr {__version__}")
        raise typer.Exit()


# Every command takes it as a parameter: ``version: VersionOption = False``.
VersionOption = Annotated[
    bool,
    typer.Option("--version", callback=_print_version, is_eager=True, help="Print the cxr version and exit."),
]


# cxr-train and cxr-eval take it alike; parse_class_map turns the values into pairs.
ClassMapOption = Annotated[
    list[str],
    typer.Option(metavar="FOLDER=CLASS", help="Rename a class folder onto another class, or leave it out with FOLDER= (repeat).", show_default=False),
]


# cxr-train and cxr-eval take it alike: label corrections files (core/corrections.py).
CorrectionsOption = Annotated[
    list[Path],
    typer.Option(metavar="FILE", help="A CSV of films whose folder's label is wrong (sha256,file,finding,action,class; action drop or relabel), matched by the file's bytes wherever it lies (repeat). corrections/Covid19-dataset.csv ships with cxr.", show_default=False),
]


def parse_class_map(values: list[str]) -> tuple[tuple[str, str], ...]:
    """``FOLDER=CLASS`` values as pairs; one without ``=`` or without a folder is a CxrError."""
    pairs = tuple(tuple(part.strip() for part in value.split("=", 1)) for value in values)
    for value, pair in zip(values, pairs):
        if len(pair) != 2 or not pair[0]:
            raise CxrError(f"--class-map {value!r}: expected FOLDER=CLASS, or FOLDER= to leave the folder out")
    return pairs  # type: ignore[return-value]


@contextlib.contextmanager
def boundary() -> Iterator[None]:
    """Run a command's work: log records go to stderr as single lines, and an expected failure
    (CxrError) becomes ``error: <one line>`` on stderr and that error's exit code."""
    _log_to_stderr()
    try:
        yield
    except CxrError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None


@contextlib.contextmanager
def extra_imports(command: str, extra: str) -> Iterator[None]:
    """Imports of an optional extra: when it is missing, a one-line error that names it; native
    libraries' start-up lines (TensorFlow writes its absl and oneDNN notices to the process's stderr,
    whatever TF_CPP_MIN_LOG_LEVEL says) are kept off the user's screen unless the import fails."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # and TensorFlow's later info lines too
    try:
        with _native_stderr_held():
            yield
    except ImportError as error:
        raise MissingDependencyError(f"{command} needs the {extra} extra: pip install 'cxr[{extra}]' ({error})") from None


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """Point file descriptor 2 at a buffer for the block; replay what it caught only if the block fails."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (an embedded interpreter): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as buffer:
        sys.stderr.flush()
        os.dup2(buffer.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore_stderr(saved)
            buffer.seek(0)  # what the native side said may explain the failure
            sys.stderr.write(buffer.read().decode(errors="replace"))
            raise
        _restore_stderr(saved)


def _restore_stderr(saved: int) -> None:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().splitlines()[0] if record.getMessage() else ""
        return f"{record.levelname.lower()}: {message}" if record.levelno >= logging.WARNING else message


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_LineFormatter())

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _log_to_stderr() -> None:
    logger = logging.getLogger("cxr")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())

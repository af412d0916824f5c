"""Where an archive's files are and where its predictions go: local paths or any filesystem pyarrow
reads (``s3://``, ``gs://``, ``file://``). Only names are listed here; the bytes are read by whoever
scores a file.

Needs pyarrow (the scale extra).
"""

from __future__ import annotations

import fnmatch
import functools
import glob
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.dataset
import pyarrow.fs
import pyarrow.parquet

from cxr.core.datasets import files_under
from cxr.core.errors import CxrError, InputFileError, first_line
from cxr.core.files import atomic_path

from .imaging import ImageSource

# A file given as INPUT with one of these suffixes is a list of files, not an image.
LIST_SUFFIXES = (".txt", ".csv", ".parquet")
PATH_COLUMN = "path"  # the column of file paths in a CSV or Parquet list
_GLOB_CHARACTERS = "*?["


def is_uri(name: str) -> bool:
    return "://" in name


def list_inputs(inputs: Iterable[str]) -> list[str]:
    """The files named by ``inputs`` (folders walked, glob patterns matched, list files read), each
    once, in the order found. A local file keeps the spelling cxr-predict gives it; a remote one is a
    URI. An input that names nothing is an InputFileError."""
    found: list[str] = []
    for name in inputs:
        matched = _expand(name)
        if not matched:
            raise InputFileError(f"{name}: no such file or folder, or no file matches it")
        found += matched
    return list(dict.fromkeys(found))


def _expand(name: str) -> list[str]:
    if name.endswith(LIST_SUFFIXES):
        return _read_list(name)
    if is_uri(name):
        return _expand_uri(name)
    if any(c in name for c in _GLOB_CHARACTERS):
        return sorted(p for p in glob.glob(name, recursive=True) if Path(p).is_file())
    path = Path(name)
    if path.is_dir():
        return [str(p) for p in files_under(path)]
    return [name] if path.is_file() else []


def _expand_uri(uri: str) -> list[str]:
    scheme = uri.split("://", 1)[0]
    pattern = any(c in uri for c in _GLOB_CHARACTERS)
    # A pattern is matched against everything below its last folder without a glob character.
    base = uri[: min(uri.find(c) for c in _GLOB_CHARACTERS if c in uri)].rsplit("/", 1)[0] if pattern else uri
    filesystem, path = _filesystem(base)
    info = filesystem.get_file_info(path)
    if info.type == pa.fs.FileType.File and not pattern:
        return [uri]
    if info.type != pa.fs.FileType.Directory:
        return []
    below = filesystem.get_file_info(pa.fs.FileSelector(path, recursive=True))
    names = sorted(
        f"{scheme}://{entry.path}"
        for entry in below
        if entry.type == pa.fs.FileType.File and not any(part.startswith(".") for part in entry.path[len(path) :].split("/"))
    )
    return [n for n in names if fnmatch.fnmatchcase(n, uri)] if pattern else names


def _read_list(name: str) -> list[str]:
    """A text file (one path a line), or a CSV or Parquet file with a ``path`` column."""
    try:
        if name.endswith(".txt"):
            with _open(name) as stream:
                lines = stream.read().decode("utf-8").splitlines()
            return [line.strip() for line in lines if line.strip()]
        with _open(name) as stream:
            table = pa.csv.read_csv(stream) if name.endswith(".csv") else pa.parquet.read_table(stream)
    except FileNotFoundError:
        raise InputFileError(f"{name}: no such file") from None
    except (OSError, pa.ArrowException, UnicodeDecodeError) as error:
        raise InputFileError(f"{name}: cannot read this list of files ({first_line(error)})") from None
    if PATH_COLUMN not in table.column_names:
        raise InputFileError(f"{name}: no {PATH_COLUMN!r} column (columns: {', '.join(table.column_names)})")
    return [str(p) for p in table.column(PATH_COLUMN).to_pylist() if p]


def source_of(name: str) -> ImageSource:
    """What a worker hands the Predictor for a listed file: a local path (read as cxr-predict reads
    it), or a remote file's bytes, fetched here, on the worker."""
    if not is_uri(name):
        return Path(name)
    with _open(name) as stream:
        return stream.read()


def _open(name: str) -> pa.NativeFile:
    if not is_uri(name):
        return pa.OSFile(name, "rb")
    filesystem, path = _filesystem(name)
    return filesystem.open_input_stream(path)


def _filesystem(uri: str) -> tuple[pa.fs.FileSystem, str]:
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return pa.fs.LocalFileSystem(), rest
    root = rest.split("/", 1)[0]
    return _remote(f"{scheme}://{root}"), rest


@functools.cache
def _remote(root: str) -> pa.fs.FileSystem:
    """One filesystem object per bucket and process (making one reads credentials)."""
    try:
        return pa.fs.FileSystem.from_uri(root)[0]
    except (pa.ArrowException, OSError, ValueError) as error:
        raise CxrError(f"{root}: pyarrow cannot open this filesystem ({first_line(error)})") from None


def written_files(out: str) -> pa.Table:
    """The ``file`` and ``model_sha256`` columns of the predictions already in ``out`` (empty when
    there are none). Files starting with a dot or an underscore (parts still being written) are not
    read."""
    filesystem, path = _filesystem(out) if is_uri(out) else (pa.fs.LocalFileSystem(), str(Path(out).absolute()))
    kind = filesystem.get_file_info(path).type
    if kind == pa.fs.FileType.NotFound:
        return pa.table({"file": pa.array([], pa.string()), "model_sha256": pa.array([], pa.string())})
    if kind == pa.fs.FileType.File:
        raise CxrError(f"--out {out}: is a file; predictions go to a folder of Parquet files")
    try:
        return pa.dataset.dataset(path, filesystem=filesystem, format="parquet").to_table(columns=["file", "model_sha256"])
    except (pa.ArrowException, OSError) as error:
        raise CxrError(f"--out {out}: cannot read the predictions already there ({first_line(error)})") from None


def write_part(table: pa.Table, out: str, name: str) -> None:
    """One Parquet part file of ``out``, whole or not at all: written under a dot name and renamed
    on a local disk; an object store shows an object only once it is complete."""
    if is_uri(out) and not out.startswith("file://"):
        filesystem, path = _filesystem(out)
        with filesystem.open_output_stream(f"{path.rstrip('/')}/{name}") as stream:
            pa.parquet.write_table(table, stream)
        return
    folder = Path(out.removeprefix("file://"))
    with atomic_path(folder / name) as tmp:
        pa.parquet.write_table(table, tmp)

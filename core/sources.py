"""Kaggle dataset handles (``kaggle:OWNER/NAME``) as data sources.

A handle is fetched with kagglehub (the ``kaggle`` extra) into its cache on first use and read from
there afterwards; its data is the folder inside the download that holds more than one entry.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DatasetError, MissingDependencyError, first_line

KAGGLE = "kaggle:"


def is_kaggle(spec: str | Path) -> bool:
    return str(spec).startswith(KAGGLE)


def download(spec: str | Path) -> Path:
    """The local folder of a ``kaggle:`` handle's data, downloaded on first use."""
    handle = str(spec)[len(KAGGLE) :]
    try:
        import kagglehub
    except ImportError:
        raise MissingDependencyError(
            f"{spec}: Kaggle data sets need the kaggle extra: pip install 'cxr[kaggle]'"
        ) from None
    try:
        folder = Path(kagglehub.dataset_download(handle))
    except Exception as error:  # kagglehub raises its own and requests' types: offline, unknown, no access
        raise DatasetError(
            f"{spec}: cannot download it ({first_line(error)}); "
            f"download it yourself and pass its folder as --data PATH"
        ) from None
    return data_folder(folder)


def data_folder(folder: Path) -> Path:
    """Descend through folders that hold nothing but one folder (a download's wrapping)."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]


def cache_dir() -> Path:
    """Where cxr keeps what it derives from data (``CXR_CACHE``, default ~/.cache/cxr)."""
    return Path(os.environ.get("CXR_CACHE", Path.home() / ".cache" / "cxr"))

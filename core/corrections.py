"""Label corrections as data: films whose class folder is wrong, found by what they are, not where.

A corrections file is a CSV with the header ``sha256,file,finding,action,class``, one film a row:
the SHA-256 of the file's bytes (so a renamed or moved copy is still found), where it was seen (for
people), what it really shows, and what to do: ``drop`` (leave it out; ``class`` empty) or
``relabel`` (count it as ``class``, one of the model's classes). Lines starting with ``#`` are
comments. ``cxr-train`` and ``cxr-eval`` take such files with ``--corrections``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from .datasets import file_digests
from .errors import DatasetError

Action = Literal["drop", "relabel"]
ACTIONS: tuple[str, ...] = get_args(Action)
COLUMNS = ("sha256", "file", "finding", "action", "class")
_DONE = {"drop": "dropped", "relabel": "relabelled"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Correction:
    sha256: str
    file: str  # where the film was seen, for people: matching is by sha256 alone
    finding: str
    action: Action
    label: str  # the class a relabelled film counts as, spelt as the model spells it; "" to drop


@dataclass
class Applied:
    """What corrections did to one data set: counts per source and action, and the rows that
    matched no film there (a wrong file, or data that is not what the file was written for)."""

    files: list[str] = field(default_factory=list)  # the corrections files read
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> action -> films
    unmatched: list[Correction] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> Applied:
        """Read back what ``asdict`` wrote (the run record, the model file's metadata)."""
        return cls(list(data["files"]), dict(data["counts"]), [Correction(**row) for row in data["unmatched"]])

    @property
    def total(self) -> int:
        return sum(sum(actions.values()) for actions in self.counts.values())

    def summary(self) -> str:
        """One line: what was applied where, and what matched nothing."""
        done = "; ".join(
            f"{source}: " + ", ".join(f"{count} {_DONE[action]}" for action, count in sorted(actions.items()))
            for source, actions in self.counts.items()
        )
        missed = f"; {len(self.unmatched)} matched no film ({', '.join(c.file for c in self.unmatched[:3])}{', ...' if len(self.unmatched) > 3 else ''})" if self.unmatched else ""
        return f"corrections applied to {self.total} films ({done or 'none'}){missed}"


@dataclass(frozen=True)
class Corrected:
    """Which of a data set's films to keep and the class index each then has."""

    keep: list[int]  # indices into the films given
    labels: list[int]  # each kept film's class, corrected
    applied: Applied


def read_corrections(paths: Sequence[Path], class_names: Sequence[str]) -> list[Correction]:
    """Every row of every file, relabel targets spelt as in ``class_names``. A missing or malformed
    file, an unknown action, a class the model lacks or one film corrected two ways is a DatasetError
    naming the file and line."""
    spelling = {name.casefold(): name for name in class_names}
    seen: dict[str, Correction] = {}
    for path in paths:
        for line, row in _rows(Path(path)):
            where = f"{path}, line {line}"
            correction = _parsed(row, spelling, where)
            earlier = seen.setdefault(correction.sha256, correction)
            if (earlier.action, earlier.label) != (correction.action, correction.label):
                raise DatasetError(f"{where}: {correction.file} is corrected two ways ({earlier.action} {earlier.label}, {correction.action} {correction.label})")
    return list(seen.values())


def correct(
    digests: Sequence[str],
    labels: Sequence[int],
    sources: Sequence[str],
    corrections: Sequence[Correction],
    class_names: Sequence[str],
    files: Sequence[Path] = (),
) -> Corrected:
    """Apply ``corrections`` to films given by content digest, class index and source name."""
    by_digest = {c.sha256: c for c in corrections}
    index = {name: i for i, name in enumerate(class_names)}
    applied = Applied(files=[str(f) for f in files])
    matched: set[str] = set()
    keep, kept_labels = [], []
    for i, (digest, label, source) in enumerate(zip(digests, labels, sources)):
        correction = by_digest.get(digest)
        if correction:
            matched.add(digest)
            counts = applied.counts.setdefault(source, {})
            counts[correction.action] = counts.get(correction.action, 0) + 1
            if correction.action == "drop":
                continue
            label = index[correction.label]
        keep.append(i)
        kept_labels.append(int(label))
    applied.unmatched = [c for c in corrections if c.sha256 not in matched]
    return Corrected(keep, kept_labels, applied)


def corrected_files(items: Sequence[tuple[Path, int]], corrections: Sequence[Correction], class_names: Sequence[str]) -> list[tuple[Path, int]]:
    """Films given as (file, class index) after ``corrections``, matched by the files' content:
    dropped films left out, relabelled ones with their new class."""
    paths = [path for path, _ in items]
    done = correct(file_digests(paths), [label for _, label in items], ["films"] * len(items), corrections, class_names)
    return [(paths[i], label) for i, label in zip(done.keep, done.labels)]


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"--corrections {path}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise DatasetError(f"--corrections {path}: empty (expected the header {','.join(COLUMNS)})")
    reader = csv.reader(line for _, line in lines)
    header = [name.strip() for name in next(reader)]
    if tuple(header) != COLUMNS:
        raise DatasetError(f"--corrections {path}, line {lines[0][0]}: the header is {','.join(header)}; expected {','.join(COLUMNS)}")
    rows = []
    for (number, _), values in zip(lines[1:], reader):
        if len(values) != len(COLUMNS):
            raise DatasetError(f"--corrections {path}, line {number}: {len(values)} fields; expected {len(COLUMNS)} ({','.join(COLUMNS)})")
        rows.append((number, dict(zip(COLUMNS, (value.strip() for value in values)))))
    return rows


def _parsed(row: dict[str, str], spelling: dict[str, str], where: str) -> Correction:
    digest, action, label = row["sha256"].lower(), row["action"], row["class"]
    if not _SHA256.fullmatch(digest):
        raise DatasetError(f"--corrections {where}: {row['sha256']!r} is not a SHA-256 (64 hex digits)")
    if action not in ACTIONS:
        raise DatasetError(f"--corrections {where}: action {action!r}; expected one of {', '.join(ACTIONS)}")
    if action == "drop" and label:
        raise DatasetError(f"--corrections {where}: a dropped film takes no class (got {label!r})")
    if action == "relabel":
        if label.casefold() not in spelling:
            raise DatasetError(f"--corrections {where}: class {label!r} is not one of the model's classes {sorted(spelling.values())}")
        label = spelling[label.casefold()]
    return Correction(digest, row["file"], row["finding"], action, label)  # type: ignore[arg-type]

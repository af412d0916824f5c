"""Faults: a process killed part-way, a full disk. The previous good artifact survives, and nothing
that looks complete is not."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import onnx
import pytest

from cxr.core.files import atomic_paths

RUN_RECORD = ("model.keras", "config.json", "history.json", "metrics.json")
TRAIN_ARGS = ["--weights", "none", "--image-size", "32", "--epochs", "2", "--fine-tune", "0", "--contrast", "none", "--no-near-copies"]


def command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", f"from cxr.{module}.cli import app; app()", *args]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def killed_after(args: list[str], seconds: float) -> bool:
    """Run, SIGKILL after ``seconds``; True if it was killed (False if it finished first)."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "CXR_QUIET": "1"})
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def kill_points(args: list[str]) -> list[float]:
    """Times to kill at, spread over a whole run of ``args`` (timed once here): start-up, reading,
    fitting, writing."""
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env={**os.environ, "CXR_QUIET": "1"})
    whole = time.perf_counter() - started
    return [whole * share for share in (0.3, 0.6, 0.8, 0.9, 0.97)]


def test_written_files_follow_the_umask_and_reach_the_disk(tmp_path: Path, monkeypatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    old_mask = os.umask(0o027)
    try:
        with atomic_paths(tmp_path / "a.json", tmp_path / "b.json") as (a, b):
            a.write_text("1")
            b.write_text("2")
    finally:
        os.umask(old_mask)
    assert visible(tmp_path) == ["a.json", "b.json"] and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    # Both files' data, then the folder holding the renames.
    assert len(synced) == 3 and synced[-1] == str(tmp_path)


def test_a_killed_training_leaves_the_previous_model_and_its_own_record(trained, dataset: Path, tmp_path: Path) -> None:
    out = shutil.copytree(trained.model_path.parent, tmp_path / "artifacts")
    # A rename gives a file a new inode (a rerun may write the same bytes: its seed is the same).
    before = {name: (out / name).stat().st_ino for name in RUN_RECORD}
    args = command("train", "--data", str(dataset), "--out", str(out), *TRAIN_ARGS)
    kills = 0
    for seconds in kill_points(args):
        kills += killed_after(args, seconds)
        now = {name: (out / name).stat().st_ino for name in RUN_RECORD}
        changed = {name for name in RUN_RECORD if now[name] != before[name]}
        assert changed in (set(), set(RUN_RECORD)), f"a mixed run record after a kill at {seconds} s: {changed}"
        with zipfile.ZipFile(out / "model.keras") as archive:
            assert archive.testzip() is None
        before = now
    assert kills >= 3  # most kills landed while it ran


def test_a_killed_export_leaves_the_previous_onnx_file(exported, trained, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    shutil.copy(exported.path, out)
    previous = digest(out)
    args = command("export", "--onnx", "--model", str(trained.model_path), "--out", str(out))
    kills = sum(killed_after(args, seconds) for seconds in kill_points(args))
    # The late points may finish first: the timing run starts colder, and a busy machine's runs vary
    # (3 of 5 failed once beside a benchmark). The checks below hold after every kill either way.
    assert kills >= 2
    assert visible(tmp_path) == ["model.onnx"]
    assert digest(out) != previous  # kill_points' own run replaced it, whole
    onnx.checker.check_model(str(out))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MB tmpfs: a model (59 MB) cannot fit. Needs root (CI runs as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("tool", ["train", "export"])
def test_a_full_disk_is_one_line_exit_2_and_nothing_half_written(tool: str, small_disk: Path, trained, dataset: Path) -> None:
    previous = small_disk / ("metrics.json" if tool == "train" else "model.onnx")
    previous.write_text("the previous good file")
    if tool == "train":
        args = command("train", "--data", str(dataset), "--out", str(small_disk), *TRAIN_ARGS)
    else:
        args = command("export", "--onnx", "--model", str(trained.model_path), "--out", str(previous))
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "CXR_QUIET": "1"})
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert errors == [f"error: cannot write {small_disk}: No space left on device; nothing was written"], done.stderr
    assert "Traceback" not in done.stderr
    assert previous.read_text() == "the previous good file"
    assert [p.name for p in small_disk.iterdir()] == [previous.name]

"""Faults: a process killed part-way, a full disk. The previous good artifact survives, and nothing
that looks complete is not."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest

from cxr.core.files import atomic_paths
from cxr.core.progress import HOLDING

RUN_RECORD = ("model.keras", "config.json", "history.json", "metrics.json")
TRAIN_ARGS = ["--weights", "none", "--image-size", "32", "--epochs", "2", "--fine-tune", "0", "--contrast", "none", "--no-near-copies"]


def command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", f"from cxr.{module}.cli import app; app()", *args]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def kill_at(args: list[str], point: str) -> None:
    """Run ``args`` held at its named point (core.progress.checkpoint) and SIGKILL it there. Fails
    if the run ends without reaching the point, so every kill lands where it is meant to, on any machine."""
    env = {**os.environ, "CXR_QUIET": "1", "CXR_HOLD_AT": point}
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in process.stderr:  # ends only when the run closes stderr, that is when it ends
            if line.strip() == f"{HOLDING}{point}":
                return
        pytest.fail(f"the run ended (exit {process.wait()}) without reaching {point!r}")
    finally:
        process.kill()
        process.wait()


def run_whole(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=600, env={**os.environ, "CXR_QUIET": "1"})


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
    for point in ("features", "fitting", "writing"):
        kill_at(args, point)
        assert {name: (out / name).stat().st_ino for name in RUN_RECORD} == before, f"the run record changed after a kill while {point}"
        with zipfile.ZipFile(out / "model.keras") as archive:
            assert archive.testzip() is None
    run_whole(args)  # and a run left alone replaces the whole record
    assert all((out / name).stat().st_ino != before[name] for name in RUN_RECORD)


def test_a_killed_export_leaves_the_previous_onnx_file(exported, trained, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    shutil.copy(exported.path, out)
    previous = digest(out)
    args = command("export", "--onnx", "--model", str(trained.model_path), "--out", str(out))
    for point in ("converting", "checking"):
        kill_at(args, point)
        assert visible(tmp_path) == ["model.onnx"] and digest(out) == previous, f"the ONNX file changed after a kill while {point}"
    run_whole(args)
    assert visible(tmp_path) == ["model.onnx"]
    assert digest(out) != previous  # a run left alone replaced it, whole
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

"""What every command shares: --version, readable help, one-line errors, clean output in a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cxr.adapt.cli import app as adapt_app
from cxr.core import __version__
from cxr.demo.cli import app as demo_app
from cxr.eval.cli import app as eval_app
from cxr.export.cli import app as export_app
from cxr.runtime.batch_cli import app as batch_app
from cxr.runtime.cli import app as predict_app
from cxr.train.cli import app as train_app

APPS = {"cxr-train": train_app, "cxr-export": export_app, "cxr-predict": predict_app, "cxr-eval": eval_app, "cxr-demo": demo_app, "cxr-batch": batch_app, "cxr-adapt": adapt_app}
runner = CliRunner()


@pytest.mark.parametrize("name", APPS)
def test_version(name: str) -> None:
    result = runner.invoke(APPS[name], ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"cxr {__version__}"


@pytest.mark.parametrize("name", APPS)
def test_help_names_every_option_in_full_and_without_type_labels(name: str) -> None:
    result = runner.invoke(APPS[name], ["--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    for option in re.findall(r"--[a-z][a-z0-9-]*", result.stdout):
        assert "…" not in option
    assert not re.search(r"<(bool|list|int|float|path|str)", result.stdout), result.stdout
    assert "{" not in result.stdout.splitlines()[0]
    command = typer.main.get_command(APPS[name])
    assert [p.name for p in command.params if not p.help] == [], "parameters without help text"


def test_train_without_data_is_a_quick_usage_error() -> None:
    """--data is required, and a wrong one is refused before TensorFlow is imported."""
    script = textwrap.dedent(
        """
        import sys
        from typer.testing import CliRunner
        from cxr.train.cli import app
        missing = CliRunner().invoke(app, [])
        wrong = CliRunner().invoke(app, ["--data", "no/such/folder"])
        print(missing.exit_code, wrong.exit_code, repr(wrong.stderr))
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    codes, loaded = done.stdout.strip().splitlines()
    assert codes == "2 2 'error: no/such/folder: no such data folder\\n'"
    assert loaded == "[]"


def test_tensorflow_start_up_lines_stay_off_stderr(tmp_path: Path) -> None:
    """cxr-export imports TensorFlow before it can say the model is missing: one line, nothing else."""
    done = subprocess.run(
        ["cxr-export", "--onnx", "--model", str(tmp_path / "none.keras")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'none.keras'}: no such model file (train one with cxr-train)"]


def run_in_terminal(command: list[str], env: dict[str, str]) -> str:
    """Run with stdout and stderr on one pseudo-terminal, as a user at a shell would; its screen text."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            process.kill()
            raise TimeoutError(command)
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_prediction_table_is_clean_in_a_terminal(exported, dataset: Path) -> None:
    files = sorted((dataset / "test").rglob("*.*"))
    assert len(files) >= 10  # enough for cxr-predict to want a progress bar
    env = {k: v for k, v in os.environ.items() if k != "CXR_QUIET"}
    screen = run_in_terminal(["cxr-predict", str(dataset / "test"), "--model", str(exported.path)], env)
    lines = screen.replace("\r\n", "\n").strip("\n").split("\n")
    assert lines[0].split("\t") == ["file", "class", "Covid", "Normal", "Viral Pneumonia", "ood_score", "in_distribution"]
    row = re.compile(r"(?P<file>[^\t]+)\t(Covid|Normal|Viral Pneumonia)(\t[01]\.\d{4}){3}\t\d+\.\d\t(yes|no: unlike the training images)")
    assert [row.fullmatch(line) is not None for line in lines[1:]] == [True] * len(files), screen
    assert [row.fullmatch(line)["file"] for line in lines[1:]] == [str(p) for p in files]

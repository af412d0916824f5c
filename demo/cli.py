"""``cxr-demo``: serve the model in a Gradio web page, optionally through a public share link."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cxr.core.cli import Command, VersionOption, boundary, extra_imports, new_app
from cxr.core.errors import CxrError, DatasetError, first_line

if TYPE_CHECKING:
    import gradio as gr

app = new_app(__doc__)

DEFAULT_PORT = 7860
# As many predictions at once as there are cores, one onnxruntime thread each: the most requests/s
# under load (benchmarks/demo_load.py, docs/RESULTS.md), where one prediction at a time on every core
# leaves the cores idle while Gradio reads uploads and sends results.
DEFAULT_CONCURRENCY = len(os.sched_getaffinity(0))
DEFAULT_THREADS: int | None = 1


@dataclass
class Served:
    app: gr.Blocks
    local_url: str
    share_url: str | None
    notice: str | None  # why there is no share link, when one was asked for


def serve(
    model: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    max_file_size_mb: int = 20,
    examples: Path | None = None,
    block: bool = True,
    concurrency: int = DEFAULT_CONCURRENCY,
    threads: int | None = DEFAULT_THREADS,
) -> Served:
    """Start the app; with ``block=False`` return once it serves (tests, notebooks).

    ``concurrency`` predictions run at once, each on ``threads`` onnxruntime threads (None: its
    default, one per core).
    """
    with extra_imports("cxr-demo", "demo"):
        from .app import build_app, example_files
    from cxr.runtime.predictor import Predictor

    predictor = Predictor(model, threads=threads)  # one onnxruntime session serves every request
    if examples is not None and not examples.is_dir():
        raise DatasetError(f"--examples {examples}: no such folder")
    demo = build_app(predictor, example_files(examples) if examples else None)
    demo.queue(max_size=100, default_concurrency_limit=concurrency)
    # Gradio explains a failed share link in a dozen lines; keep them for a one-line notice instead.
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            _, local_url, share_url = demo.launch(
                server_name=host,
                server_port=port or None,  # None: Gradio takes 7860 or the next free port
                share=share,
                auth=auth,
                max_file_size=max_file_size_mb * 1024 * 1024,
                prevent_thread_lock=True,
                quiet=True,
            )
    except OSError as error:  # the port is taken, or the address is not this machine's
        raise CxrError(f"cannot serve on {host}:{port or 'a free port from 7860 on'}: {first_line(error)}") from None
    notice = None
    if share and not share_url:
        notice = (
            "no public share link: Gradio could not set up its tunnel (offline, or its tunnel "
            "program could not be downloaded); serving locally only"
        )
    served = Served(app=demo, local_url=local_url, share_url=share_url, notice=notice)
    if block:
        _report(served)
        demo.block_thread()
    return served


def _report(served: Served) -> None:
    typer.echo(f"serving on {served.local_url}")
    if served.share_url:
        typer.echo(f"public link: {served.share_url}")
    if served.notice:
        typer.echo(f"warning: {served.notice}", err=True)


@app.command(cls=Command)
def main(
    model: Annotated[Path, typer.Option(envvar="CXR_MODEL", help="Model from cxr-export.")] = Path("artifacts/model.onnx"),
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help=f"Port (0: {DEFAULT_PORT} or the next free one).")] = 0,
    share: Annotated[bool, typer.Option("--share", help="Also ask Gradio for a public *.gradio.live link.")] = False,
    auth: Annotated[str | None, typer.Option(metavar="USER:PASS", help="Credentials required to open the page.", show_default=False)] = None,
    max_file_size: Annotated[int, typer.Option(min=1, help="Largest upload in MB.")] = 20,
    examples: Annotated[Path | None, typer.Option(help="Folder-per-class set to take a few examples from.", show_default=False)] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Predictions served at once.", show_default="one per core")] = DEFAULT_CONCURRENCY,
    threads: Annotated[int, typer.Option(min=0, help="onnxruntime threads per prediction (0: one per core).")] = DEFAULT_THREADS or 0,
    version: VersionOption = False,
) -> None:
    """Serve the demo until interrupted."""
    with boundary():
        credentials = None
        if auth is not None:
            user, sep, password = auth.partition(":")
            if not sep or not user or not password:
                raise CxrError("--auth must be USER:PASS")
            credentials = (user, password)
        serve(model, host, port or None, share, credentials, max_file_size, examples, concurrency=concurrency, threads=threads or None)

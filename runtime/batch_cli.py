"""``cxr-batch``: score an archive on Ray Data, on this machine or a cluster, into a Parquet dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxr.core.cli import Command, VersionOption, boundary, extra_imports, new_app

app = new_app(__doc__)


@app.command(cls=Command)
def main(
    inputs: Annotated[list[str], typer.Argument(metavar="input", help="Folders (walked), glob patterns, files, or lists of files (.txt, or .csv/.parquet with a 'path' column); local or any URI pyarrow reads (s3://, gs://).", show_default=False)],
    out: Annotated[str, typer.Option(help="Parquet dataset (a folder, local or a URI); a rerun adds only the files it lacks.")] = "predictions.parquet",
    model: Annotated[Path, typer.Option(envvar="CXR_MODEL", help="Model from cxr-export, on this machine; it is sent to the workers.")] = Path("artifacts/model.onnx"),
    address: Annotated[str | None, typer.Option(help="Ray cluster: 'auto' or ray://HOST:10001 (default: start Ray on this machine).", show_default=False)] = None,
    workers: Annotated[int, typer.Option(min=0, help="Workers, each one onnxruntime session (0: as many as fit).")] = 0,
    cpus_per_worker: Annotated[float, typer.Option(min=0.1, help="CPUs each worker reserves (and onnxruntime threads).")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(min=0.0, help="GPUs each worker reserves; above 0 it runs on CUDA.")] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model call.")] = 32,
    rows_per_file: Annotated[int, typer.Option(min=1, help="Rows per Parquet part file (what a kill can cost to redo).")] = 1000,
    version: VersionOption = False,
) -> None:
    """Score every file that has no row in --out yet. A file that cannot be read is a row with its
    error, not a failed job."""
    with boundary():
        with extra_imports("cxr-batch", "scale"):
            from .batch import Job, score_archive
        job = Job(model, address, workers, cpus_per_worker, gpus_per_worker, batch_size, rows_per_file)
        result = score_archive(inputs, out, job)
        if not result.scored:
            typer.echo(f"all {result.listed} files already have rows in {out}; nothing to score")
            return
        typer.echo(
            f"scored {result.scored} files on {result.workers} workers in {result.seconds:.1f} s "
            f"({result.failed} could not be read: see the error column); {result.already} already had rows"
        )
        typer.echo(f"wrote {out}")


if __name__ == "__main__":  # python -m cxr.runtime.batch_cli, as the tests run it
    app()

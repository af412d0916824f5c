"""Scoring an archive on Ray Data: each worker is an actor holding one Predictor, the predictions a
Parquet dataset with one row per file.

Needs the scale extra (ray[data], pyarrow); the edge install never imports this module. Without an
address Ray starts on this machine; with one (``auto``, ``ray://HOST:10001``) the job runs on that
cluster, whose nodes need ``cxr[scale]`` installed. The model file travels to the workers through
Ray's object store, so only the driver needs it on disk.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import ray

from cxr.core.errors import CxrError, first_line
from cxr.core.files import atomic_path
from cxr.core.progress import counting

from . import archive
from .imaging import ImageSource
from .predictor import Failure, Predictor, cannot_read

# Ray restarts a lost worker and retries the batch it held this many times. Ray Data's own default
# is forever: a node that goes away is survived either way, but a file that kills its worker every
# time (a decoder crash, memory) would loop for ever instead of ending the job.
RETRIES = 3
BATCH_SIZE = 32  # images per model call in a worker
ROWS_PER_FILE = 1000  # rows per Parquet part file: at most this much is scored again after a kill


@dataclass(frozen=True)
class Job:
    """How to score: the model, where, on how many workers of what size."""

    model: Path
    address: str | None = None  # None: a local Ray on this machine
    workers: int = 0  # 0: as many as the cluster's CPUs (or GPUs) allow
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # above 0: onnxruntime's CUDA provider on the worker's GPU
    batch_size: int = BATCH_SIZE
    rows_per_file: int = ROWS_PER_FILE


@dataclass(frozen=True)
class BatchResult:
    listed: int  # distinct files the inputs name
    already: int  # of them, files that had a row before this run
    scored: int  # rows written by this run
    failed: int  # of them, rows with an error
    workers: int
    seconds: float


def score_archive(inputs: list[str], out: str, job: Job) -> BatchResult:
    """Score every listed file that has no row in ``out`` yet and add the rows to ``out``."""
    started = time.perf_counter()
    files = archive.list_inputs(inputs)
    Predictor(job.model)  # a missing or foreign model fails here, before Ray starts
    model_bytes = job.model.read_bytes()
    digest = hashlib.sha256(model_bytes).hexdigest()
    written = archive.written_files(out)
    others = set(written.column("model_sha256").to_pylist()) - {digest}
    if others:
        raise CxrError(f"--out {out}: holds predictions of another model (sha256 {sorted(others)[0][:12]}...); choose another --out")
    done = set(written.column("file").to_pylist())
    todo = [name for name in files if name not in done]
    if not todo:
        return BatchResult(len(files), len(files), 0, 0, 0, time.perf_counter() - started)

    _start_ray(job.address)
    try:
        workers = job.workers or _workers_that_fit(job)
        blocks = _blocks(len(todo), job.batch_size, workers)
        with warnings.catch_warnings():
            # Ray Data deprecates passing actor options as keyword arguments but has no other way to
            # set max_restarts yet (pyproject pins ray below the release that removes them).
            warnings.simplefilter("ignore", DeprecationWarning)
            scored = ray.data.from_items([{"file": name} for name in todo], override_num_blocks=blocks).map_batches(
                Scorer,
                fn_constructor_kwargs={
                    "model": [ray.put(model_bytes)],  # in a list, so the worker receives the reference
                    "name": job.model.name,
                    "digest": digest,
                    "threads": max(1, int(job.cpus_per_worker)),
                    "cuda": job.gpus_per_worker > 0,
                },
                batch_size=job.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=job.cpus_per_worker,
                num_gpus=job.gpus_per_worker,
                max_restarts=RETRIES,
                max_task_retries=RETRIES,
            )
        rows, failed = _write_rows(scored, out, len(todo), job.rows_per_file)
    except ray.exceptions.RayError as error:
        # A worker that failed every retry: what was written stays, and a rerun goes on from there.
        raise CxrError(f"scoring stopped: {first_line(error)}; rows already written are kept, rerun to go on") from None
    finally:
        ray.shutdown()
    return BatchResult(len(files), len(files) - len(todo), rows, failed, workers, time.perf_counter() - started)


def _start_ray(address: str | None) -> None:
    # The driver draws one bar of its own, counting files; Ray's execution notices stay in its logs
    # (/tmp/ray/session_*), and what goes wrong comes back as an exception.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"a Ray cluster at {address}" if address else "a local Ray"
        raise CxrError(f"cannot start {where} ({first_line(error)})") from None


def _workers_that_fit(job: Job) -> int:
    resources = ray.cluster_resources()
    fits = resources.get("CPU", 1) // job.cpus_per_worker
    if job.gpus_per_worker:
        fits = min(fits, resources.get("GPU", 0) // job.gpus_per_worker)
    if fits < 1:
        raise CxrError(f"no worker of {job.cpus_per_worker:g} CPUs and {job.gpus_per_worker:g} GPUs fits this Ray cluster ({resources})")
    return int(fits)


def _blocks(files: int, batch_size: int, workers: int) -> int:
    # Enough blocks that every worker has work and a lost one costs little; at most 1000, whose
    # bookkeeping stays small beside a million files.
    return max(1, min(max(math.ceil(files / batch_size), workers), 1000, files))


def _write_rows(scored: ray.data.Dataset, out: str, total: int, rows_per_file: int) -> tuple[int, int]:
    """Collect the workers' rows on the driver and write them a part file at a time, so a row
    reaches ``out`` once, whatever Ray retried."""
    run = uuid.uuid4().hex[:12]
    pending: list[pa.Table] = []
    rows = failed = parts = 0

    def flush() -> None:
        nonlocal parts
        if pending:
            archive.write_part(pa.concat_tables(pending), out, f"part-{run}-{parts:05d}.parquet")
            parts += 1
            pending.clear()

    with counting("Scoring", total) as advance:
        for table in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            pending.append(table)
            rows += table.num_rows
            failed += table.num_rows - table.column("error").null_count
            advance(table.num_rows)
            if sum(t.num_rows for t in pending) >= rows_per_file:
                flush()
        flush()
    return rows, failed


def output_schema(class_names: list[str]) -> pa.Schema:
    """One row per file: its class and each class's probability (null when the file failed), the
    gate's score and verdict, the one-line error (null when fine), and the model that scored it."""
    return pa.schema(
        [
            ("file", pa.string()),
            ("class", pa.string()),
            *((name, pa.float64()) for name in class_names),
            ("ood_score", pa.float64()),
            ("in_distribution", pa.bool_()),
            ("error", pa.string()),
            ("model", pa.string()),
            ("model_sha256", pa.string()),
        ]
    )


class Scorer:
    """A Ray Data worker: one Predictor, made once, scoring batches of file names."""

    def __init__(self, model: list[ray.ObjectRef], name: str, digest: str, threads: int, cuda: bool):
        # Workers on one node share one copy of the model on disk, named by its digest.
        path = Path(tempfile.gettempdir()) / f"cxr-{digest[:16]}-{name}"
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_bytes(ray.get(model[0]))
        self.predictor = Predictor(path, provider="cuda" if cuda else "cpu", threads=threads)
        self.model = (name, digest)

    def __call__(self, batch: pa.Table) -> pa.Table:
        names = batch.column("file").to_pylist()
        fetched = {name: _fetch(name) for name in names}
        readable = [(name, source) for name, source in fetched.items() if not isinstance(source, Failure)]
        outcomes = {outcome.file: outcome for outcome in self.predictor.predict_named(readable)}
        outcomes.update({name: source for name, source in fetched.items() if isinstance(source, Failure)})
        class_names = self.predictor.info.class_names
        rows = []
        for name in names:
            outcome = outcomes[name]
            row: dict[str, object] = {"file": name, "model": self.model[0], "model_sha256": self.model[1]}
            if isinstance(outcome, Failure):
                row["error"] = outcome.error
            else:
                row |= {"class": outcome.label, **outcome.probabilities}
                row |= {"ood_score": outcome.ood_score, "in_distribution": outcome.in_distribution}
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=output_schema(class_names))


def _fetch(name: str) -> ImageSource | Failure:
    try:
        return archive.source_of(name)
    except Exception as error:  # noqa: BLE001 - a file that cannot be fetched is its own row
        return Failure(name, cannot_read(name, error))

"""The demo under load: N concurrent gradio_client users, each way of serving measured in the same run.

    python benchmarks/demo_load.py --artifacts artifacts --images ../shared/data/Covid19-dataset/test

Each way of serving (how many predictions at once, onnxruntime threads each, Gradio batching) runs
with the FP32 and the INT8 model. Each variant is served by its own process (this script with
``--serve``), so the users' own Python work does not share its interpreter (it does share the
machine's cores, as real users' browsers would not). Every round starts each variant afresh and
runs the same requests; the table gives medians over rounds of requests/s, p50 and p95 latency, and
failures in all rounds, with ratios against FP32 one at a time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import typer

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

# name -> (predictions at once, onnxruntime threads per prediction (0: one per core), batch size)
STRATEGIES = {
    "one at a time (Gradio's default)": (1, 0, 1),
    "2 at once, 1 thread each": (2, 1, 1),
    "2 at once, 2 threads each": (2, 0, 1),
    "4 at once, 1 thread each": (4, 1, 1),
    "batched, up to 8 per model call": (1, 0, 8),
}
MODELS = {"FP32": "model.onnx", "INT8": "model.int8.onnx"}


def main(
    artifacts: Path = typer.Option(Path("artifacts")),
    images: Path = typer.Option(Path("../shared/data/Covid19-dataset/test")),
    users: int = typer.Option(20),
    requests: int = typer.Option(60, help="Requests in all, spread over the users."),
    rounds: int = typer.Option(3),
    serve: str = typer.Option("", hidden=True, help="Serve this strategy (used by the script itself)."),
    model: Path = typer.Option(Path("artifacts/model.onnx"), hidden=True),
    port: int = typer.Option(7870, hidden=True),
) -> None:
    if serve:
        _serve(model, serve, port)
        return
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    variants = [(kind, strategy) for kind in MODELS for strategy in STRATEGIES]
    results: dict[tuple[str, str], list[tuple[float, float, float, int]]] = {v: [] for v in variants}
    for round_ in range(rounds):
        for kind, strategy in variants:
            run = _measure(artifacts / MODELS[kind], strategy, port, files, users, requests)
            results[kind, strategy].append(run)
            print(f"round {round_ + 1}: {kind}, {strategy}: {run[0]:.2f} requests/s", file=sys.stderr)

    base = statistics.median(r[0] for r in results[variants[0]])
    print(f"\n{users} users, {requests} predictions of real X-rays per round, median of {rounds} rounds:\n")
    print("| model | serving | requests/s | vs FP32 one at a time | p50 s | p95 s | failures |")
    print("|---|---|---|---|---|---|---|")
    for (kind, strategy), runs in results.items():
        rate = statistics.median(r[0] for r in runs)
        p50 = statistics.median(r[1] for r in runs)
        p95 = statistics.median(r[2] for r in runs)
        print(f"| {kind} | {strategy} | {rate:.2f} | {rate / base:.2f}x | {p50:.2f} | {p95:.2f} | {sum(r[3] for r in runs)} |")


def _measure(model: Path, variant: str, port: int, files: list[Path], users: int, requests: int) -> tuple[float, float, float, int]:
    from gradio_client import Client, handle_file

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", variant, "--port", str(port), "--model", str(model)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        clients = [_connect(url) for _ in range(users)]
        jobs = [(clients[i % users], files[i % len(files)]) for i in range(requests)]
        latencies: list[float] = []
        failures = 0

        def one(job: tuple[Client, Path]) -> float | None:
            client, path = job
            started = time.perf_counter()
            try:
                client.predict(handle_file(str(path)), api_name="/predict")
            except Exception:  # noqa: BLE001 - a failure is counted, not fatal
                return None
            return time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=users) as pool:
            for seconds in pool.map(one, jobs):
                if seconds is None:
                    failures += 1
                else:
                    latencies.append(seconds)
        wall = time.perf_counter() - started
        return len(latencies) / wall, float(np.median(latencies)), float(np.percentile(latencies, 95)), failures
    finally:
        server.terminate()
        server.wait()


def _connect(url: str, timeout: float = 120.0):
    from gradio_client import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _serve(model: Path, variant: str, port: int) -> None:
    from cxr.demo.cli import serve

    concurrency, threads, batch = STRATEGIES[variant]
    if batch == 1:
        served = serve(model, port=port, concurrency=concurrency, threads=threads or None, block=False)
    else:
        served = _serve_batched(model, port, batch)
    served.app.block_thread()


def _serve_batched(model: Path, port: int, batch: int):
    """The demo's prediction as a Gradio batch function: up to ``batch`` queued uploads per model
    call. (One unreadable upload fails its whole batch, which is why the product does not do this.)"""
    import gradio as gr

    from cxr.demo.cli import Served
    from cxr.runtime.heatmaps import Heatmaps
    from cxr.runtime.predictor import Predictor

    predictor = Predictor(model)
    names = predictor.info.class_names

    def predict(paths: list[str]) -> tuple[list[dict[str, float]], list[object]]:
        inputs = np.stack([predictor.prepare(path) for path in paths])
        outputs = predictor.run_batch(inputs, maps=True)
        labels = [dict(zip(names, map(float, row))) for row in outputs.probabilities]
        return labels, [Heatmaps(pixels, dict(zip(names, m))) for pixels, m in zip(inputs, outputs.maps)]

    with gr.Blocks() as app:
        upload = gr.File(type="filepath")
        label = gr.Label()
        state = gr.State()
        upload.change(predict, upload, [label, state], api_name="predict", batch=True, max_batch_size=batch)
    app.queue(max_size=100)
    _, url, _ = app.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    return Served(app, url, None, None)


if __name__ == "__main__":
    typer.run(main)

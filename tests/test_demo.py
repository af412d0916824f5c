"""cxr-demo: the Gradio app through its API (gradio_client) and in a real headless Chromium."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from corpus import CASES, Case  # noqa: E402
from cxr.demo.cli import free_port, serve  # noqa: E402
from cxr.runtime.predictor import Predictor  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def served(exported, dataset: Path):
    result = serve(exported.path, port=free_port("127.0.0.1", 7860), examples=dataset / "test", block=False)
    yield result
    result.app.close()


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served.local_url, verbose=False)


def probabilities(label: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def test_api_returns_the_predictors_probabilities(client: Client, exported, dataset: Path) -> None:
    image = dataset / "test" / "Normal" / "0.jpeg"
    label = client.predict(handle_file(str(image)), api_name="/predict")
    expected = Predictor(exported.path).predict(image)
    assert label["label"] == expected.label == "Normal"
    got = probabilities(label)
    assert got.keys() == expected.probabilities.keys()
    assert all(abs(got[k] - expected.probabilities[k]) <= 1e-6 for k in got)
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-5)


def test_bad_upload_is_an_error_and_the_server_goes_on(client: Client, dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an X-ray")
    with pytest.raises(AppError, match="notes.png: not an image"):
        client.predict(handle_file(str(bad)), api_name="/predict")
    good = client.predict(handle_file(str(dataset / "test" / "Covid" / "0.jpeg")), api_name="/predict")
    assert good["label"] == "Covid"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_demo_answers_each_input_in_one_line(client: Client, case: Case, tmp_path: Path, capfd, caplog) -> None:
    if case.dicom:
        pytest.importorskip("pydicom", reason="the dicom extra (pydicom) is not installed")
    path = case.make(tmp_path)
    if case.refused:
        with caplog.at_level("WARNING", logger="cxr"):
            with pytest.raises(AppError, match=re.escape(case.message)):
                client.predict(handle_file(str(path)), api_name="/predict")
        # The server logs one line for an expected refusal, not Gradio's traceback.
        assert "Traceback" not in capfd.readouterr().err
        logged = [r.getMessage() for r in caplog.records if path.name in r.getMessage()]
        assert len(logged) == 1 and "\n" not in logged[0], logged
    else:
        assert client.predict(handle_file(str(path)), api_name="/predict")["label"]


def test_twenty_calls_at_once(client: Client, dataset: Path) -> None:
    images = sorted((dataset / "test").rglob("*.*"))
    jobs = [client.submit(handle_file(str(images[i % len(images)])), api_name="/predict") for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        labels = list(pool.map(lambda job: job.result(timeout=120), jobs))
    assert len(labels) == 20
    assert [label["label"] for label in labels] == [images[i % len(images)].parent.name for i in range(20)]


def test_share_offline_fails_soft(exported, dataset: Path, monkeypatch) -> None:
    import gradio.networking

    def no_tunnel(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(gradio.networking, "setup_tunnel", no_tunnel)
    result = serve(exported.path, port=free_port("127.0.0.1", 7900), share=True, block=False)
    try:
        assert result.share_url is None and "serving locally" in result.notice and "\n" not in result.notice
        image = handle_file(str(dataset / "test" / "Covid" / "0.jpeg"))
        label = Client(result.local_url, verbose=False).predict(image, api_name="/predict")
        assert label["label"] == "Covid"
    finally:
        result.app.close()


def test_a_taken_port_is_one_line(exported) -> None:
    import socket

    from typer.testing import CliRunner

    from checks import assert_one_line_error
    from cxr.demo.cli import app as demo_app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(demo_app, ["--model", str(exported.path), "--port", str(port)])
    assert_one_line_error(result, f"cannot serve on 127.0.0.1:{port}")


def test_upload_in_a_real_browser(served, dataset: Path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(served.local_url)
            page.locator("#xray-upload input[type=file]").set_input_files(str(dataset / "test" / "Viral Pneumonia" / "0.jpeg"))
            heading = page.locator("#prediction h2, #prediction .output-class").first
            heading.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => document.querySelector('#prediction')?.innerText.includes('Viral Pneumonia')",
                timeout=60_000,
            )
            text = page.locator("#prediction").inner_text()
            assert "Viral Pneumonia" in text and "%" in text
            page.locator("#model-input img").wait_for(timeout=60_000)  # what the model read, shown
            # The predicted class's heat map, then another class's when it is chosen.
            overlay = page.locator("#heatmap img")
            overlay.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => document.querySelector('#heatmap-class input:checked')?.value === 'Viral Pneumonia'",
                timeout=60_000,
            )
            first = overlay.get_attribute("src")
            page.locator("#heatmap-class label", has_text="Covid").click()
            page.wait_for_function(
                "src => document.querySelector('#heatmap img')?.getAttribute('src') !== src", arg=first, timeout=60_000
            )
            assert "cells of about" in page.locator("body").inner_text()
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000

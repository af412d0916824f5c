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
from cxr.demo.cli import serve  # noqa: E402
from cxr.runtime.predictor import Predictor  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def served(exported, dataset: Path):
    result = serve(exported.path, examples=dataset / "test", block=False)
    yield result
    result.app.close()


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served.local_url, verbose=False)


def probabilities(label: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def ask(client: Client, image: Path) -> tuple[dict | None, dict]:
    """The API's answer: the label (none for an image the gate flags) and the details."""
    return client.predict(handle_file(str(image)), api_name="/predict")


def test_api_returns_the_predictors_probabilities_and_gate(client: Client, exported, dataset: Path) -> None:
    image = dataset / "test" / "Normal" / "0.jpeg"
    label, details = ask(client, image)
    expected = Predictor(exported.path).predict(image)
    assert label["label"] == expected.label == details["class"] == "Normal"
    got = probabilities(label)
    assert got.keys() == expected.probabilities.keys()
    assert all(abs(got[k] - expected.probabilities[k]) <= 1e-6 for k in got)
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-5)
    assert details["ood_score"] == pytest.approx(expected.ood_score, rel=1e-6)
    assert details["in_distribution"] is expected.in_distribution is True


def test_a_photo_is_flagged_not_answered(client: Client, exported, photo: Path) -> None:
    label, details = ask(client, photo)
    assert details["in_distribution"] is False and not label
    assert details["ood_score"] > Predictor(exported.path).info.ood.threshold
    assert details["probabilities"].keys() == {"Covid", "Normal", "Viral Pneumonia"}  # still given


def test_bad_upload_is_an_error_and_the_server_goes_on(client: Client, dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an X-ray")
    with pytest.raises(AppError, match="notes.png: not an image"):
        client.predict(handle_file(str(bad)), api_name="/predict")
    assert ask(client, dataset / "test" / "Covid" / "0.jpeg")[0]["label"] == "Covid"


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
        assert ask(client, path)[1]["class"] in ("Covid", "Normal", "Viral Pneumonia")


def test_twenty_calls_at_once(client: Client, dataset: Path) -> None:
    images = sorted((dataset / "test").rglob("*.*"))
    jobs = [client.submit(handle_file(str(images[i % len(images)])), api_name="/predict") for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        labels = list(pool.map(lambda job: job.result(timeout=120), jobs))
    assert len(labels) == 20
    assert [details["class"] for _, details in labels] == [images[i % len(images)].parent.name for i in range(20)]


def test_share_offline_fails_soft(exported, dataset: Path, monkeypatch) -> None:
    import gradio.networking

    def no_tunnel(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(gradio.networking, "setup_tunnel", no_tunnel)
    result = serve(exported.path, share=True, block=False)
    try:
        assert result.share_url is None and "serving locally" in result.notice and "\n" not in result.notice
        assert ask(Client(result.local_url, verbose=False), dataset / "test" / "Covid" / "0.jpeg")[0]["label"] == "Covid"
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


def test_upload_in_a_real_browser(served, exported, dataset: Path, photo: Path, tmp_path: Path) -> None:
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
            # An X-ray the gate lets through (on this tiny synthetic set, not every test image is).
            predictor = Predictor(exported.path)
            xray = next(p for p in sorted((dataset / "test" / "Viral Pneumonia").iterdir()) if predictor.predict(p).in_distribution)
            page.locator("#xray-upload input[type=file]").set_input_files(str(xray))
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
            assert not page.locator("#ood-warning").is_visible()
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            # A photo, on a fresh page: the warning appears, and no class is shown as the answer.
            page.goto(served.local_url)
            page.locator("#xray-upload input[type=file]").set_input_files(str(photo))
            page.locator("#ood-warning").get_by_text("unlike the training images").wait_for(timeout=60_000)
            page.wait_for_function(
                "() => !document.querySelector('#prediction h2, #prediction .output-class')", timeout=60_000
            )
            assert "not an answer" in page.locator("body").inner_text()
        finally:
            browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_example_buttons_name_the_class_and_the_collection(dataset: Path) -> None:
    from cxr.demo.app import EXAMPLES_PER_CLASS, example_files

    examples = example_files(dataset / "test")
    assert len(examples) == 3 * EXAMPLES_PER_CLASS
    for path, label in examples:
        assert label == f"{path.parent.name}, {dataset.name} ({path.name})"
    assert {label.split(",")[0] for _, label in examples} == {"Covid", "Normal", "Viral Pneumonia"}


def test_heatmap_note_says_when_the_model_reads_through_a_lung_prior(exported) -> None:
    from dataclasses import replace

    from cxr.demo.app import heatmap_note

    info = Predictor(exported.path).info
    assert "lung prior" not in heatmap_note(info)  # trained without masks
    assert "lung prior" in heatmap_note(replace(info, recipe={**info.recipe, "lung_prior": True}))

"""Take the README's screenshots of the demo as a user sees it: an X-ray uploaded (docs/demo.png) and a
photo flagged by the out-of-distribution gate (docs/demo_ood.png), in Debian's Chromium driven by
Playwright, against ``cxr-demo`` serving on this machine.

    python docs/demo_screenshot.py --model artifacts/model.onnx \\
        --xray ../shared/data/COVID-QU-Ex-subset/test/Non-COVID/images/NAME.jpeg --photo PHOTO.png
"""

from __future__ import annotations

from pathlib import Path

import typer
from playwright.sync_api import sync_playwright

from cxr.demo.app import build_app
from cxr.runtime.predictor import Predictor

CHROMIUM = "/usr/bin/chromium"


def main(
    xray: Path = typer.Option(..., help="The X-ray to upload."),
    photo: Path = typer.Option(..., help="An image that is not a chest X-ray."),
    model: Path = typer.Option(Path("artifacts/model.onnx")),
    out: Path = typer.Option(Path("docs")),
) -> None:
    app = build_app(Predictor(model))
    _, url, _ = app.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for image, name, ready in ((xray, "demo.png", "#heatmap img"), (photo, "demo_ood.png", "#ood-warning")):
                page.goto(url)
                page.locator("#xray-upload input[type=file]").set_input_files(str(image))
                page.locator(ready).first.wait_for(timeout=120_000)
                page.wait_for_timeout(1_000)  # let the last output paint
                page.screenshot(path=str(out / name), full_page=True)
                print(f"wrote {out / name}")
            browser.close()
    finally:
        app.close()


if __name__ == "__main__":
    typer.run(main)

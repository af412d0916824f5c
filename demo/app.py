"""The Gradio app: upload an X-ray (image or DICOM), see each class's probability and the model card."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import numpy as np

from cxr.core.datasets import class_folders, sample_files
from cxr.core.errors import CxrError
from cxr.runtime.metadata import ModelInfo
from cxr.runtime.predictor import Prediction, Predictor

NOTICE = (
    "**Research demo, not a diagnosis.** The model learned from public collections of adults' and "
    "children's films: Covid means COVID-19, and (trained as the README's default) Viral Pneumonia "
    "means pneumonia that is not COVID-19, children's and adults', viral and bacterial. It can be "
    "confidently wrong on X-rays from hospitals it never saw."
)
EXAMPLES_PER_CLASS = 2

log = logging.getLogger(__name__)


def build_app(predictor: Predictor, examples: list[tuple[Path, str]] | None = None) -> gr.Blocks:
    """The Blocks app; its ``predict`` endpoint is also the API (``api_name="predict"``)."""
    names = predictor.info.class_names
    has_maps = predictor.info.heatmaps is not None
    predict, show, redraw = _handlers(predictor)

    with gr.Blocks(title="cxr: chest X-ray classifier") as app:
        gr.Markdown("# cxr: chest X-ray classifier")
        gr.Markdown(NOTICE)
        with gr.Row():
            with gr.Column():
                # No file_types: the content decides what a file is (a DICOM is often named without
                # .dcm), and the predictor says in one line what it cannot read.
                upload = gr.File(
                    label="X-ray: PNG, JPEG, BMP, TIFF or DICOM",
                    type="filepath",
                    elem_id="xray-upload",
                )
                # The model's own input: resized and, when its recipe says so, contrast-equalized.
                image = gr.Image(label="As the model reads it", type="numpy", interactive=False, height=320, elem_id="model-input")
            with gr.Column():
                warning = gr.Markdown(visible=False, elem_id="ood-warning")
                label = gr.Label(label="Prediction", num_top_classes=len(names), elem_id="prediction")
                heatmap = gr.Image(label="Heat map", type="numpy", interactive=False, height=320, visible=has_maps, elem_id="heatmap")
                shown_class = gr.Radio(names, label="Evidence for", visible=has_maps, elem_id="heatmap-class")
                gr.Markdown(heatmap_note(predictor.info), visible=has_maps)
        with gr.Accordion("Details, as the API returns them", open=False):
            answer = gr.JSON(elem_id="details")
        gr.Markdown(model_card_brief(predictor.info))
        if examples:
            gr.Examples(
                examples=[[str(path)] for path, _ in examples],
                example_labels=[label for _, label in examples],
                inputs=upload,
                label="Examples",
            )
        prediction = gr.State()  # kept out of the API: callers get the label and the details
        upload.change(predict, inputs=upload, outputs=[label, answer, prediction], api_name="predict").then(
            show, inputs=prediction, outputs=[image, shown_class, heatmap, label, warning], api_visibility="private"
        )
        shown_class.input(redraw, inputs=[prediction, shown_class], outputs=heatmap, api_visibility="private")
    return app


def _handlers(predictor: Predictor) -> tuple[Callable, Callable, Callable]:
    """The app's three event handlers: an upload's prediction, the page's view of it, and the heat
    map of another class."""
    has_maps = predictor.info.heatmaps is not None

    def predict(path: str | None) -> tuple[dict[str, float] | None, dict[str, object] | None, Prediction | None]:
        """The API's answer, the upload's probabilities (none, as no class is an answer, when the
        gate flags the image) and its details, and the prediction with its input and maps (decoded
        once) for the page."""
        if path is None:  # the upload was cleared
            return None, None, None
        try:
            # Name the file as the user knows it, not by Gradio's temporary path.
            prediction = predictor.predict(path, name=Path(path).name, heatmaps="all" if has_maps else "none")
        except CxrError as error:
            # An expected refusal: one log line, not Gradio's traceback.
            log.warning("refused an upload: %s", error)
            raise gr.Error(str(error), print_exception=False) from None
        answer = None if prediction.in_distribution is False else prediction.probabilities
        return answer, details(prediction), prediction

    def show(prediction: Prediction | None) -> tuple[np.ndarray | None, str | None, np.ndarray | None, gr.Label, gr.Markdown]:
        """The model input, the predicted class's heat map over it, and for an image the gate flags,
        the warning and the probabilities with no class heading them."""
        unlike = prediction is not None and prediction.in_distribution is False
        if unlike:
            label = gr.Label(value=prediction.probabilities, show_heading=False, label="Probabilities: not an answer for this image")
        else:
            label = gr.Label(show_heading=True, label="Prediction")
        warning = gr.Markdown(unlike_warning(prediction, predictor.info) if unlike else "", visible=unlike)
        if prediction is None or prediction.heatmaps is None:
            return None, None, None, label, warning
        return prediction.heatmaps.image, prediction.label, prediction.heatmaps.overlay(prediction.label), label, warning

    def redraw(prediction: Prediction | None, class_name: str) -> np.ndarray | None:
        return prediction.heatmaps.overlay(class_name) if prediction and prediction.heatmaps else None

    return predict, show, redraw


def details(prediction: Prediction) -> dict[str, object]:
    """What the API returns beside the probabilities: the class, and whether to trust it at all."""
    return {
        "class": prediction.label,
        "probabilities": prediction.probabilities,
        "ood_score": prediction.ood_score,
        "in_distribution": prediction.in_distribution,
    }


def unlike_warning(prediction: Prediction, info: ModelInfo) -> str:
    assert info.ood is not None  # only a model with the gate flags an image
    return (
        "### ⚠ This image is unlike the training images\n"
        "It does not look like the chest X-rays this model learned from (out-of-distribution score "
        f"{prediction.ood_score:,.0f}, above the threshold of {info.ood.threshold:,.0f}), so the model's "
        "class is no answer for it. The probabilities below are shown for reference only."
    )


def heatmap_note(info: ModelInfo) -> str:
    """What a heat map is, in a line: its cells, how coarse they are, and the lung prior if any."""
    if info.heatmaps is None:
        return ""
    rows, columns = info.heatmaps.grid
    prior = (
        " This model reads the lungs: a lung prior, measured on training films' lung masks, leaves "
        "little weight to cells that are rarely lung."
        if info.recipe.get("lung_prior")
        else ""
    )
    return (
        f"The heat map marks the regions that raised the chosen class's score. It has {rows}x{columns} "
        f"cells of about {info.cell_pixels:.0f} pixels each: where the evidence lies, not the outline of a lesion.{prior}"
    )


def model_card_brief(info: ModelInfo) -> str:
    """The model's card in a few lines, all from the ONNX file's own metadata."""
    splits = info.metrics.get("splits", {})
    trained_on = sum(splits.get(name, {}).get("count", 0) for name in ("train", "val"))
    test = splits.get("test")
    test_line = f"{test['accuracy']:.3f} on {test['count']} held-out images" if test else "not measured"
    return "\n".join(
        [
            "### Model",
            f"- Classes: {', '.join(info.class_names)}",
            *[f"- {name} also holds the training data's {', '.join(folders)} films" for name, folders in info.merged_folders.items()],
            *([f"- Label corrections: {info.corrections.total} training and test films dropped or relabelled by content (cxr-train --corrections)"] if info.corrections and info.corrections.total else []),
            f"- Trained on {trained_on} images ({info.input.height}x{info.input.width} input, contrast: {info.input.contrast})",
            f"- Test accuracy: {test_line}",
            f"- Version: cxr {info.versions.get('cxr', '?')}, created {info.created}",
            f"- Quantization: {info.quantization}",
            *([f"- {info.adaptation.summary.capitalize()} (cxr-adapt)"] if info.adaptation else []),
            *([f"- Probabilities: calibrated, temperature {info.calibration.temperature:.2f}"] if info.calibration else []),
            *(
                [f"- Out-of-distribution gate: images unlike the training images are flagged (score above {info.ood.threshold:,.0f}); "
                 "it catches photos, screenshots and other scans, not a chest X-ray of another disease"]
                if info.ood
                else []
            ),
        ]
    )


def example_files(folder: Path) -> list[tuple[Path, str]]:
    """A few examples per class from a folder-per-class set, each with the label its button shows:
    the class and the collection (``Covid19-dataset/test`` is Covid19-dataset), not a file name that
    several collections share."""
    collection = folder.parent.name if folder.name in ("train", "test", "val", "validation") else folder.name
    files = class_folders(folder)
    chosen = sample_files(files, EXAMPLES_PER_CLASS * len(files))
    return [(path, f"{name}, {collection} ({path.name})") for name, paths in chosen.items() for path in paths]

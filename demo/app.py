"""The Gradio app: upload an X-ray (image or DICOM), see each class's probability and the model card."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from PIL import Image

from cxr.runtime.dataset import class_folders, sample_files
from cxr.runtime.errors import CxrError
from cxr.runtime.imaging import load_image
from cxr.runtime.metadata import ModelInfo
from cxr.runtime.predictor import Predictor

NOTICE = (
    "**Research demo, not a diagnosis.** The model learned from a small public data set in which "
    "Normal and Viral Pneumonia patients are children and most Covid patients adults; it can be "
    "confidently wrong on X-rays from elsewhere."
)
EXAMPLES_PER_CLASS = 2


def build_app(predictor: Predictor, examples: list[Path] | None = None) -> gr.Blocks:
    """The Blocks app; its ``predict`` endpoint is also the API (``api_name="predict"``)."""

    def predict(path: str | None) -> dict[str, float] | None:
        if path is None:  # the upload was cleared
            return None
        try:
            return predictor.predict_file(path).probabilities
        except CxrError as error:
            # Name the file as the user knows it, not by Gradio's temporary path.
            raise gr.Error(str(error).replace(str(path), Path(path).name)) from None

    def preview(path: str | None) -> Image.Image | None:
        # The model's own input: resized and, when its recipe says so, contrast-equalized.
        info = predictor.info
        try:
            return Image.fromarray(load_image(path, info.image_size, info.input.contrast)) if path else None
        except CxrError:
            return None  # predict() reports the error

    with gr.Blocks(title="cxr: chest X-ray classifier") as app:
        gr.Markdown("# cxr: chest X-ray classifier")
        gr.Markdown(NOTICE)
        with gr.Row():
            with gr.Column():
                upload = gr.File(
                    label="X-ray: PNG, JPEG, BMP, TIFF or DICOM",
                    file_types=["image", ".dcm", ".dicom"],
                    type="filepath",
                    elem_id="xray-upload",
                )
                image = gr.Image(label="As the model reads it", type="pil", interactive=False, height=320)
            with gr.Column():
                label = gr.Label(label="Prediction", num_top_classes=len(predictor.info.class_names), elem_id="prediction")
                gr.Markdown(model_card_brief(predictor.info))
        if examples:
            gr.Examples(examples=[[str(p)] for p in examples], inputs=upload, label="Examples")
        upload.change(predict, inputs=upload, outputs=label, api_name="predict")
        upload.change(preview, inputs=upload, outputs=image, api_visibility="private")
    return app


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
            f"- Trained on {trained_on} images ({info.input.height}x{info.input.width} input, contrast: {info.input.contrast})",
            f"- Test accuracy: {test_line}",
            f"- Version: cxr {info.versions.get('cxr', '?')}, created {info.created}",
            f"- Quantization: {info.quantization}",
        ]
    )


def example_files(folder: Path) -> list[Path]:
    """A few examples per class from a folder-per-class set."""
    files = class_folders(folder)
    return [p for paths in sample_files(files, EXAMPLES_PER_CLASS * len(files)).values() for p in paths]

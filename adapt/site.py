"""``adapt``: a model fitted to one site's labelled films, on the edge install (onnxruntime, numpy,
and the adapt extra's onnx, scipy and scikit-learn), with the proof that it helped.

Four steps: read the site's films through the model's own Predictor; compute what the head and the
gate read; choose how far to move the head by cross-validation on the films (adapt.fit); write the
new head, temperature and gate centres into a copy of the model file, with what was done in its
metadata, only when it beat the model's own head (or when forced).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from cxr.core.datasets import LabeledImages, class_folders, file_digest, labelled_files, load_images, mapped_folders
from cxr.core.errors import DatasetError, ModelError
from cxr.core.files import atomic_path
from cxr.core.progress import progress
from cxr.runtime.metadata import Adaptation, ModelInfo
from cxr.runtime.predictor import BATCH_SIZE, Predictor

from . import fit
from .graph import GATE_INPUT, HEAD_INPUT, Head, find_head, rewritten, with_taps

MIN_FILMS = 5  # per class: fewer cannot be split into folds that each hold one
MAP_TOLERANCE = 1e-4  # the adapted maps must add up to the adapted probabilities, as export checks


@dataclass(frozen=True)
class AdaptResult:
    record: Adaptation  # what the adapted file's metadata says
    path: Path | None  # the file written; None when adapting did not help and was not forced
    seconds: float

    @property
    def helped(self) -> bool:
        return self.record.strength is not None


def adapt(
    model: Path,
    data: Path,
    out: Path | None = None,
    class_map: Sequence[tuple[str, str]] = (),
    site: str | None = None,
    force: bool = False,
    seed: int = 0,
) -> AdaptResult:
    """Fit ``model`` (an ONNX file from cxr-export, FP32 or INT8) to the films in ``data/<class>/``
    and write the result to ``out`` (default: beside the model, named for the site)."""
    started = time.perf_counter()
    predictor = Predictor(model, provider="cpu")
    graph = onnx.load(str(model))
    head = find_head(graph, predictor.info)
    films = read_site(predictor, data, class_map)
    features, whitened = tapped_outputs(graph, head, films.images)
    site_features = fit.SiteFeatures(features, films.labels, features @ head.kernel + head.bias)
    adapted = fit.adapt_head(site_features, head.kernel, head.bias, seed)
    centres = np.concatenate([head.centres, _site_centres(whitened, films.labels)])
    record = _record(predictor.info, model, site or data.name, films.labels, adapted, head.centres, centres, whitened)
    if adapted.choice.strength is None and not force:
        return AdaptResult(record, None, time.perf_counter() - started)
    target = out or model.with_name(f"{model.stem}.{_slug(record.site)}.onnx")
    new = rewritten(graph, head, adapted.kernel, adapted.bias, centres)
    info = _adapted_info(predictor.info, record, adapted.bias)
    onnx.helper.set_model_props(new, info.to_metadata())
    with atomic_path(target) as tmp:
        onnx.save(new, tmp)
        check_maps(tmp, films.images[:BATCH_SIZE])
    return AdaptResult(record, target, time.perf_counter() - started)


def read_site(predictor: Predictor, data: Path, class_map: Sequence[tuple[str, str]]) -> LabeledImages:
    """The site's films, decoded as the model reads them; folders mapped as the model's training
    mapped them, then by ``class_map``. Refuses a missing or empty folder, a class the model lacks
    and a class with fewer than MIN_FILMS readable films."""
    if not data.is_dir():
        raise DatasetError(f"{data}: no such folder (expected {data}/<class>/ folders of films)")
    files = mapped_folders(class_folders(data), (*predictor.info.class_map, *class_map))
    labelled_files(files, predictor.info.class_names)  # a folder of a class the model lacks: one line
    films = load_images(files, predictor.info.class_names, predictor.prepare, description="Reading the site's films")
    counts = {name: int(np.sum(films.labels == i)) for i, name in enumerate(predictor.info.class_names)}
    few = {name: count for name, count in counts.items() if 0 < count < MIN_FILMS or (count == 0 and name in files)}
    if not len(films):
        raise DatasetError(f"{data}: no readable films in its class folders")
    if few:
        raise DatasetError(f"{data}: too few readable films for {few}; adapting needs at least {MIN_FILMS} per class")
    if len(np.unique(films.labels)) < 2:
        raise DatasetError(f"{data}: films of one class only; adapting on them would teach the model that every film is of that class")
    return films


def tapped_outputs(graph: onnx.ModelProto, head: Head, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flattened head input (N, F) and the gate's whitened pooled map (N, channels) of ``images``."""
    session = ort.InferenceSession(with_taps(graph, head), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    features, whitened = [], []
    for start in progress(range(0, len(images), BATCH_SIZE), "Features", total=-(-len(images) // BATCH_SIZE)):
        batch = images[start : start + BATCH_SIZE].astype(np.float32)
        head_input, gate_input = session.run([HEAD_INPUT, GATE_INPUT], {name: batch})
        features.append(head_input.reshape(len(batch), -1))
        whitened.append(gate_input.reshape(len(batch), -1))
    return np.concatenate(features), np.concatenate(whitened)


def check_maps(path: Path, images: np.ndarray) -> None:
    """Refuse (ModelError, nothing written) an adapted file whose maps do not add up to its
    probabilities: the head and the maps were rewritten apart."""
    adapted = Predictor(path, provider="cpu")
    outputs = adapted.run_batch(images, maps=True)
    logits = outputs.maps.sum(axis=(2, 3)) + np.asarray(adapted.info.heatmaps.bias)
    off = float(np.abs(fit.softmax(logits) - outputs.probabilities).max())
    if off > MAP_TOLERANCE:
        raise ModelError(f"the adapted heat maps do not add up to the probabilities (off by {off:.2e}); not written")


def _site_centres(whitened: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The site's class means, whitened like the model's: its films pass the gate near their own."""
    return np.stack([whitened[labels == c].mean(axis=0) for c in np.unique(labels)])


def _record(
    info: ModelInfo, model: Path, site: str, labels: np.ndarray, adapted: fit.Adapted, before: np.ndarray, after: np.ndarray, whitened: np.ndarray
) -> Adaptation:
    """What the file will say: ``before`` and ``after`` are the gate's centres without and with the site's."""
    names = info.class_names
    choice = adapted.choice
    return Adaptation(
        site=site,
        films={names[c]: int(np.sum(labels == c)) for c in np.unique(labels)},
        base_model=file_digest(model),
        strength=choice.strength,
        strengths={f"{strength:g}": score for strength, score in choice.scores.items()},
        temperature=adapted.temperature,
        before=_recalls(choice.base, labels, names),
        after=_recalls(choice.adapted, labels, names),
        gate_pass_before=float(np.mean(_gate_scores(whitened, before) <= info.ood.threshold)),
        gate_pass_after=float(np.mean(_gate_scores(whitened, after) <= info.ood.threshold)),
    )


def _gate_scores(whitened: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((whitened[:, None, :] - centres[None]) ** 2).sum(axis=-1).min(axis=1)


def _recalls(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float]:
    right = logits.argmax(axis=1) == labels
    return {names[c]: float(right[labels == c].mean()) for c in np.unique(labels)}


def _adapted_info(info: ModelInfo, record: Adaptation, bias: np.ndarray) -> ModelInfo:
    temperature = info.calibration.temperature * record.temperature if info.calibration else record.temperature
    return dataclasses.replace(
        info,
        heatmaps=dataclasses.replace(info.heatmaps, bias=bias.tolist()),
        ood=dataclasses.replace(info.ood, score=f"{info.ood.score}; and to {record.site}'s class means (cxr-adapt)"),
        calibration=dataclasses.replace(info.calibration, temperature=temperature) if info.calibration else None,
        adaptation=record,
    )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name) or "site"

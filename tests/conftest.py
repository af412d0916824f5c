from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from synthetic import FAST, make_dataset

os.environ["CXR_QUIET"] = "1"  # no progress bars in test output
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True, scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the session's training runs, never the user's ~/.cache/cxr."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["CXR_CACHE"] = str(folder)
    return folder

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CXR_SHARED", ROOT.parent / "shared"))
# The README's default model is trained on every shared collection, bacterial films and adults'
# non-COVID infections as pneumonia, tuberculosis films left out (a disease the model has no class
# for), with the corrections of Covid19-dataset's labels that ship with cxr.
REAL_DATA = [
    SHARED / "data" / name
    for name in ("Covid19-dataset", "Covid19-radiography-subset", "Pediatric-pneumonia-subset", "NLM-tuberculosis-subset", "COVID-QU-Ex-subset")
]
REAL_CLASS_MAP = (("Bacterial Pneumonia", "Viral Pneumonia"), ("Non-COVID", "Viral Pneumonia"), ("COVID-19", "Covid"), ("Tuberculosis", ""))
REAL_CORRECTIONS = (ROOT / "corrections" / "Covid19-dataset.csv",)
WEIGHTS_TOOL = SHARED / "tools" / "vgg16-imagenet-weights"


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset: Path):
    """A model trained on the synthetic set with the fast recipe, and its run record."""
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    out = tmp_path_factory.mktemp("artifacts")
    return train(TrainConfig(data=dataset, out=out, **FAST))


@pytest.fixture(scope="session")
def exported(trained):
    from cxr.export.onnx_export import export_onnx

    return export_onnx(trained.model_path, trained.model_path.with_suffix(".onnx"))


@pytest.fixture(scope="session")
def not_xrays(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of images that are not chest X-rays (not_xrays.py)."""
    pytest.importorskip("skimage", reason="scikit-image (the dev extra) ships the sample images")
    from not_xrays import write_not_xrays

    return write_not_xrays(tmp_path_factory.mktemp("not-xrays"))


@pytest.fixture(scope="session")
def photo(not_xrays: Path) -> Path:
    """A cat (scikit-image's chelsea.png)."""
    return not_xrays / "chelsea.png"


@pytest.fixture(scope="session")
def real_weights(real_data: list[Path]) -> Path:
    """VGG16 ImageNet weights from the shared tool (Keras' download server is unreachable here)."""
    if not WEIGHTS_TOOL.is_file():
        pytest.skip(f"weights tool not found at {WEIGHTS_TOOL}")
    cached = Path.home() / ".cache" / "cxr" / "vgg16_imagenet_notop.h5"
    done = subprocess.run(
        ["bash", str(WEIGHTS_TOOL), str(cached)], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        pytest.fail(f"weights tool failed: {done.stderr[-2000:]}")
    return cached


@pytest.fixture(scope="session")
def real_data() -> list[Path]:
    """The five collections in ../shared (CI has them); without them the real tests skip and say so."""
    for root in REAL_DATA:
        if not root.is_dir():
            pytest.skip(f"real data set not found at {root}")
    return REAL_DATA

"""bfloat16 features: what --precision changes (the frozen layers' cached features) and what it
must not (the trained model, float32), and where ``auto`` picks it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthetic import FAST


def test_bfloat16_features_train_a_float32_model(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from cxr.train.config import TrainConfig
    from cxr.train.store import RowStore, StoreSpec
    from cxr.train.trainer import train

    cache = tmp_path / "cache"
    monkeypatch.setenv("CXR_CACHE", str(cache))
    options = {**FAST, "fine_tune": 1, "fine_tune_epochs": 2}
    runs = {p: train(TrainConfig(data=dataset, out=tmp_path / p, precision=p, **options)) for p in ("float32", "bfloat16")}
    for name, run in runs.items():
        assert run.precision == name
        assert json.loads((run.model_path.parent / "config.json").read_text())["precision"] == name
        model = keras.saving.load_model(run.model_path)
        assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
        assert run.splits["test"].accuracy >= 0.9

    # One store per layer and precision: bfloat16 rows never stand in for float32 ones.
    folders = sorted((cache / "features").glob("block4_pool-*"))
    assert len(folders) == 2
    stores = {}
    for folder in folders:
        written = json.loads((folder / "spec.json").read_text())
        spec = StoreSpec(written["layer"], tuple(written["shape"]), written["dtype"], tuple(map(tuple, written["made_by"])))
        store = stores[dict(spec.made_by)["precision"]] = RowStore(cache / "features", spec)
        assert store.folder == folder
    digests = sorted(stores["float32"].rows)
    exact, rounded = (np.asarray(stores[p].array()[stores[p].rows_of(digests)]) for p in ("float32", "bfloat16"))
    error = np.linalg.norm(rounded - exact) / np.linalg.norm(exact)
    assert 1e-4 < error < 0.03  # computed in bfloat16 (8 significant bits): close, not equal


def test_a_run_that_reads_images_has_no_frozen_pass_to_compute_in_bfloat16(dataset: Path, tmp_path: Path) -> None:
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    plain = train(TrainConfig(data=dataset, out=tmp_path, precision="bfloat16", fast_path=False, **{**FAST, "epochs": 1}))
    assert plain.precision == "float32"


@pytest.mark.parametrize(
    "asked, flags, expected",
    [
        ("auto", "fpu avx2 avx512f avx512_bf16", "bfloat16"),
        ("auto", "fpu avx2 amx_bf16 amx_tile", "bfloat16"),
        ("auto", "fpu avx2 avx512f avx512_vnni", "float32"),
        ("auto", None, "float32"),  # no /proc/cpuinfo (not Linux)
        ("float32", "avx512_bf16", "float32"),
        ("bfloat16", "avx2", "bfloat16"),
    ],
)
def test_auto_is_bfloat16_only_where_the_cpu_has_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked: str, flags: str | None, expected: str) -> None:
    from cxr.train import precision

    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(precision, "CPU_INFO", cpuinfo)
    assert precision.resolve(asked) == expected


@pytest.mark.parametrize("asked", ["bfloat16", "float32"])
def test_cxr_train_says_when_it_computed_in_bfloat16(dataset: Path, tmp_path: Path, asked: str) -> None:
    from typer.testing import CliRunner

    from cxr.train.cli import app

    args = ["--data", str(dataset), "--out", str(tmp_path), "--weights", "none", "--image-size", "32", "--epochs", "1", "--reference", "--no-near-copies"]
    done = CliRunner().invoke(app, [*args, "--precision", asked])
    assert done.exit_code == 0, done.output
    assert ("computed in bfloat16" in done.stdout) == (asked == "bfloat16")
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == asked


def test_an_unknown_precision_is_refused(dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxr.train.cli import app

    done = CliRunner().invoke(app, ["--data", str(dataset), "--out", str(tmp_path), "--precision", "float16"])
    assert done.exit_code == 2 and "float16" in done.output
    assert not (tmp_path / "model.keras").exists()

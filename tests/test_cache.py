"""The on-disk feature cache: reused when nothing that made it changed, never when something did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthetic import FAST, copy_dataset
from cxr.train.cli import app as train_app

runner = CliRunner()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CXR_CACHE", str(folder))
    return folder


def test_second_run_reads_the_cache_and_gets_the_same_model(dataset: Path, tmp_path: Path, cache: Path) -> None:
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    first = train(TrainConfig(data=dataset, out=tmp_path / "a", **FAST))
    second = train(TrainConfig(data=dataset, out=tmp_path / "b", **FAST))
    total = sum(split.count for split in first.splits.values())
    assert first.cached == 0 and second.cached == total
    assert second.splits["val"].loss == pytest.approx(first.splits["val"].loss, rel=1e-6)
    assert second.splits["test"].confusion == first.splits["test"].confusion
    # One store per layer the stages read, named by that layer.
    assert sorted(p.name.split("-")[0] for p in (cache / "features").iterdir()) == ["block5_pool"]


def test_an_edited_image_or_other_settings_are_computed_afresh(dataset: Path, tmp_path: Path, cache: Path) -> None:
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    data = copy_dataset(dataset, tmp_path / "data")
    train(TrainConfig(data=data, out=tmp_path / "a", **FAST))
    edited = data / "train" / "Normal" / "1.png"
    pixels = np.asarray(Image.open(edited)).copy()
    pixels[:8] = 255 - pixels[:8]
    Image.fromarray(pixels).save(edited)
    again = train(TrainConfig(data=data, out=tmp_path / "b", **FAST))
    total = sum(split.count for split in again.splits.values())
    assert again.cached == total - 1  # the edited image only
    other_size = train(TrainConfig(data=data, out=tmp_path / "c", **{**FAST, "image_size": 48}))
    assert other_size.cached == 0
    # Random weights are the seed's: another seed's features are not these.
    other_seed = train(TrainConfig(data=data, out=tmp_path / "d", **{**FAST, "seed": 1}))
    assert other_seed.cached == 0


def test_no_cache_keeps_nothing_and_says_nothing(dataset: Path, tmp_path: Path, cache: Path) -> None:
    args = ["--data", str(dataset), "--weights", "none", "--image-size", "32", "--epochs", "1", "--fine-tune", "0", "--no-near-copies"]
    first = runner.invoke(train_app, [*args, "--out", str(tmp_path / "a"), "--no-cache"])
    assert first.exit_code == 0, first.output
    assert not (cache / "features").exists() or not any((cache / "features").iterdir())
    runner.invoke(train_app, [*args, "--out", str(tmp_path / "b")])
    cached = runner.invoke(train_app, [*args, "--out", str(tmp_path / "c")])
    assert cached.exit_code == 0 and "48 images' features read from the cache" in cached.stdout, cached.output


def test_fine_tuning_caches_both_cuts_and_reuses_them(dataset: Path, tmp_path: Path, cache: Path) -> None:
    from cxr.train.config import TrainConfig
    from cxr.train.trainer import train

    options = {**FAST, "epochs": 1, "fine_tune": 1, "fine_tune_epochs": 1}
    first = train(TrainConfig(data=dataset, out=tmp_path / "a", **options))
    second = train(TrainConfig(data=dataset, out=tmp_path / "b", **options))
    assert sorted(p.name.split("-")[0] for p in (cache / "features").iterdir()) == ["block4_pool", "block5_pool"]
    assert first.cached == 0 and second.cached == sum(split.count for split in second.splits.values())
    assert second.splits["test"].loss == pytest.approx(first.splits["test"].loss, rel=1e-5)


def test_store_ignores_what_a_killed_writer_left(tmp_path: Path) -> None:
    from cxr.train.store import RowStore, StoreSpec, made_by

    spec = StoreSpec("block5_pool", (2, 3), "float32", made_by(size=32))
    store = RowStore(tmp_path, spec)
    values = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    with store.writing():
        store.add(["a", "b"], values)
    # A kill between writing rows and their keys, and one part-way through a key line.
    with open(store.folder / "rows.bin", "ab") as rows:
        rows.write(b"\x00" * spec.row_bytes * 2)
    with open(store.folder / "keys.txt", "a") as keys:
        keys.write("c")
    reopened = RowStore(tmp_path, spec)
    assert reopened.missing(["a", "b", "c"]) == {"c"}
    with reopened.writing():
        reopened.add(["c", "c", "a"], values[[1, 1, 0]] + 100)  # a repeat and a known one: one new row
    again = RowStore(tmp_path, spec)
    assert again.rows == {"a": 0, "b": 1, "c": 2}
    assert np.array_equal(again.array()[again.rows_of(["b", "c", "a"])], np.stack([values[1], values[1] + 100, values[0]]))
    assert (again.folder / "rows.bin").stat().st_size == 3 * spec.row_bytes


def test_a_different_spec_is_a_different_store(tmp_path: Path) -> None:
    from cxr.train.store import RowStore, StoreSpec, made_by

    a = RowStore(tmp_path, StoreSpec("block5_pool", (2,), "float32", made_by(weights="x", size=32)))
    b = RowStore(tmp_path, StoreSpec("block5_pool", (2,), "float32", made_by(weights="y", size=32)))
    assert a.folder != b.folder

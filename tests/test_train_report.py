"""`stemdl run`'s engine: train and evaluate both arrangements and write the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import train_fixtures as tf

from train.report import run_all


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tf.tiny_store(tmp_path_factory.getbasetemp())


def test_run_all_compares_both_arrangements(store: Path, tmp_path: Path) -> None:
    shutil.copytree(store, tmp_path / "store.zarr")  # generation then finds every shard done
    config = tf.tiny_config(epochs=2, validate_every=1000, checkpoint_every=1000)
    report = run_all(config, tmp_path)
    text = report.read_text()
    assert "| | `channels` | `scan_pixels` |" in text
    assert "| test ssim |" in text and "Lowest test MSE" in text
    for picture in ("curves.png", "predictions.png"):
        assert (tmp_path / picture).stat().st_size > 10_000
    for arrangement in ("channels", "scan_pixels"):
        assert (tmp_path / f"train-{arrangement}" / "checkpoint.pt").is_file()
    again = run_all(config, tmp_path)  # re-running resumes: both runs are already finished
    assert "resumed at step" in again.read_text()

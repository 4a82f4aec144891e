"""summarize counts what the store holds; plot_sample draws a sample without a display."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from stemdl.datasets.inspect import plot_sample, render_summary, summarize


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, synthetic_store) -> Path:
    return synthetic_store(num_samples=30, shard_size=4)


def test_summary_counts_and_sizes(store: Path) -> None:
    summary = summarize(str(store))
    assert summary["num_samples"] == 30 and summary["num_shards"] == 8
    assert summary["shards_done"] == 8 and summary["samples_ok"] == 30
    # The synthetic catalogue cycles 6 materials: 4 train, 1 validation, 1 test.
    assert summary["splits"]["train"]["samples"] == sum(1 for i in range(30) if i % 6 < 4)
    assert summary["splits"]["validation"]["materials_with_samples"] == 1
    cbed = summary["arrays"]["cbed"]
    assert cbed["bytes_uncompressed"] == 30 * 16 * 24 * 24 * 2
    assert 0 < cbed["bytes_on_disk"] < 2 * cbed["bytes_uncompressed"]
    assert summary["bytes_on_disk"] >= cbed["bytes_on_disk"]
    console = Console(record=True, width=120)
    console.print(render_summary(summary))
    text = console.export_text()
    assert "splits (by material)" in text and "record_float" in text and "atoms" in text


def test_plot_sample_writes_a_png(store: Path, tmp_path: Path) -> None:
    path = plot_sample(str(store), 7, tmp_path / "figs" / "s7.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(IndexError, match="out of range"):
        plot_sample(str(store), 30, tmp_path / "x.png")

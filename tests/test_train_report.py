"""`stemdl run`'s engine: train both arrangements, score them against baselines, write the
metrics file and the report; on one process and on two local torch.distributed ranks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stemdl.end_to_end import run_all
from stemdl.train.metrics import METRIC_NAMES


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_store) -> Path:
    return tiny_store


def _check_metrics(metrics: dict, doses: list[str]) -> None:
    assert set(metrics["models"]) == {"channels", "scan_pixels"}
    baselines = {"mean_target", "nearest_neighbour", "aligned_nearest_neighbour", "icom"}
    assert set(metrics["baselines"]) == baselines
    for group in ("models", "baselines"):
        for values in metrics[group].values():
            for key in ("noise_free", *doses):
                assert set(METRIC_NAMES) <= set(values[key]), key
                assert values[key]["samples"] == metrics["test_samples"] > 0
    assert "‖true − mean(true)‖" in metrics["definitions"]["rel_l2"]
    assert metrics["test_materials"] and set(metrics["per_material"]["channels"]) == set(
        metrics["test_materials"])
    for stage in ("simulate", "verify", "train_channels", "train_scan_pixels", "validate",
                  "score", "total"):
        assert metrics["wall_s"][stage] >= 0
    # Selection on validation: the best arrangement is the one with the higher validation r,
    # whatever the test figures say, and each model is its best.pt.
    val = metrics["validation"]
    assert set(val["models"]) == {"channels", "scan_pixels"} and set(val["baselines"]) == baselines
    assert not set(val["materials"]) & set(metrics["test_materials"])
    r = {n: v["noise_free"]["pearson_r"] for n, v in val["models"].items()}
    assert metrics["best_arrangement"] == max(r, key=r.get)
    assert metrics["selection"]["split"] == "validation"
    assert {c["file"] for c in metrics["selection"]["checkpoints"].values()} == {"best.pt"}


def test_run_all_scores_models_and_baselines(store: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str], tiny_config) -> None:
    shutil.copytree(store, tmp_path / "store.zarr")  # generation then finds every shard done
    config = tiny_config(epochs=2, validate_every=1000, checkpoint_every=1000)
    outcome = run_all(config, tmp_path, ranks=1, doses=(1e5,))
    metrics = json.loads(outcome.metrics_json.read_text())
    _check_metrics(metrics, ["dose_1e+05_e_per_a2"])
    assert metrics["training"]["channels"]["ranks"] == 1
    # best.pt is the state of the validation with the highest r (every one is in metrics.jsonl)
    from stemdl.train.checkpoint import load_checkpoint
    from stemdl.train.run_log import read_metrics

    for name in ("channels", "scan_pixels"):
        rows = read_metrics(tmp_path / f"train-{name}", "validation")
        assert len(rows) >= 2
        best_row = max(rows, key=lambda row: row["pearson_r"])
        state = load_checkpoint(tmp_path / f"train-{name}" / "best.pt")
        assert state["step"] == best_row["step"] == metrics["selection"]["checkpoints"][name][
            "step"]
        assert state["metrics"]["pearson_r"] == pytest.approx(best_row["pearson_r"])
    # Noise changes the inputs, so the scores at a dose differ from the noise-free ones.
    free = metrics["baselines"]["nearest_neighbour"]["noise_free"]
    noisy = metrics["baselines"]["nearest_neighbour"]["dose_1e+05_e_per_a2"]
    assert metrics["models"]["channels"]["noise_free"] != metrics["models"]["channels"][
        "dose_1e+05_e_per_a2"] or free != noisy
    text = outcome.report.read_text()
    assert "| baseline `nearest_neighbour` |" in text and "## Per held-out material" in text
    assert "| baseline `icom` |" in text and "## Selection, on the validation split" in text
    assert "Test metrics at 1e+05 e/Å² (Poisson noise)" in text
    for picture in ("curves.png", "materials.png"):
        assert (tmp_path / picture).stat().st_size > 10_000
    log = (tmp_path / "run.log").read_text()
    assert "stage simulate" in log and "validation at step" in log  # routine notes: the file
    assert "validation at step" not in capsys.readouterr().err  # not the console
    assert "best arrangement" in outcome.headline()
    again = run_all(config, tmp_path, ranks=1, doses=())  # resumes: both runs already finished
    assert "resumed at step" in again.report.read_text()


@pytest.mark.slow
def test_run_all_trains_on_two_local_ranks(store: Path, tmp_path: Path, tiny_config) -> None:
    shutil.copytree(store, tmp_path / "store.zarr")
    config = tiny_config(epochs=2, validate_every=1000, checkpoint_every=1000)
    outcome = run_all(config, tmp_path, ranks=2, doses=())
    metrics = json.loads(outcome.metrics_json.read_text())
    _check_metrics(metrics, [])
    assert metrics["training"]["scan_pixels"]["ranks"] == 2
    assert "2 rank(s)" in outcome.report.read_text()

"""Physical units (issue 20): V·Å maps on a training-split scale, thickness, metrics, σ.

One `tiny` model is trained for real (module fixture, ~20 s) and checked: the checkpoint holds
the scale computed independently from the store, predictions are in V·Å, the thickness head
learns, `stemdl evaluate` and `stemdl predict` label their units; an old checkpoint trained on
standardized targets still loads and says so. The metric definitions and the D4 machinery
are checked against direct NumPy computations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stemdl import pipeline
from stemdl.configs import ConfigError, config_from_dict, load_config
from stemdl.datasets.augment import apply_d4
from stemdl.datasets.physical_scale import split_indices, thickness_by_index, training_scale
from stemdl.datasets.records import read_fields
from stemdl.datasets.store import open_stemdl_store
from stemdl.train.checkpoint import load_checkpoint, save_checkpoint
from stemdl.train.evaluate import evaluate_main, load_trained_model
from stemdl.train.loop import train_main
from stemdl.train.physical_metrics import (
    physical_per_sample,
    standardize_by_truth,
    thickness_per_sample,
)
from stemdl.train.uncertainty import _invert, coverage, fit_factor, transform_cbed


@pytest.fixture(scope="module")
def trained(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory, tiny_config):  # type: ignore[no-untyped-def]
    config = tiny_config(epochs=20, validate_every=1000, checkpoint_every=1000)
    out = tmp_path_factory.mktemp("physical") / "run"
    torch.set_num_threads(1)
    result = train_main(config, str(tiny_store), out)
    return result, config


def test_the_presets_predict_physical_units() -> None:
    """tiny trains on V·Å targets with the thickness head (so CI runs that path); small and
    paper keep standardized targets until V·Å ones match them on validation r."""
    config = load_config("tiny")
    assert not config.loader.standardize_targets and config.model.thickness_head
    for preset in ("small", "paper"):
        config = load_config(preset)
        assert config.loader.standardize_targets and not config.model.thickness_head, preset
    data = load_config("tiny").to_dict()
    data["loader"]["standardize_targets"] = True
    with pytest.raises(ConfigError, match="thickness_head needs physical targets"):
        config_from_dict(data)


def test_the_scale_comes_from_the_training_split_and_round_trips(trained, tiny_store) -> None:  # type: ignore[no-untyped-def]
    result, _ = trained
    store = open_stemdl_store(str(tiny_store))
    fields = read_fields(store, ["split", "status", "thickness_a"])
    train = np.flatnonzero((np.asarray(fields["split"]) == "train") & (fields["status"] == 1))
    assert split_indices(store, "train").tolist() == train.tolist()
    maps = np.asarray(store.array("potential")[...], dtype=np.float64)[train]
    scale = training_scale(str(tiny_store))
    assert scale.potential_offset_v_a[0] == pytest.approx(maps.mean(), rel=1e-9)
    assert scale.potential_scale_v_a[0] == pytest.approx(maps.std(), rel=1e-9)
    assert scale.thickness_offset_a == pytest.approx(fields["thickness_a"][train].mean())

    state = load_checkpoint(result.checkpoint)
    weights = state["model"]
    assert float(weights["potential_offset_v_a"][0]) == pytest.approx(maps.mean(), rel=1e-6)
    assert float(weights["thickness_scale_a"]) == pytest.approx(
        fields["thickness_a"][train].std(), rel=1e-6)

    model, config = load_trained_model(result.checkpoint, torch.device("cpu"))
    assert model.physical and model.units == "V·Å"
    cbed = torch.randn(3, *config.simulation.sample_shape.input_shape)
    with torch.no_grad():
        raw = model.network(model.arrange(cbed))
        expected = raw * scale.potential_scale_v_a[0] + scale.potential_offset_v_a[0]
        torch.testing.assert_close(model(cbed), expected, rtol=1e-5, atol=1e-3)
        # the output is V·Å: of the order of the training maps, not of unit variance
        assert abs(float(model(cbed).mean()) - maps.mean()) < 3 * maps.std()


def test_the_thickness_head_learns_and_evaluate_reports_units(trained, tiny_store) -> None:  # type: ignore[no-untyped-def]
    result, _ = trained
    before, after = result.initial_validation, result.validation
    # the tiny validation split is one sample: a clear, not a large, margin (3.74 → 3.38 Å
    # when written; deterministic on the CPU)
    assert after["thickness_mae_a"] < 0.95 * before["thickness_mae_a"], (before, after)
    assert after["rel_l2_v_a"] < before["rel_l2_v_a"]
    metrics = evaluate_main(result.checkpoint, str(tiny_store), split="validation")
    assert metrics["units"] == "V·Å"
    assert metrics["thickness_mae_a"] == pytest.approx(after["thickness_mae_a"], rel=1e-4)
    assert metrics["thickness_mae_pct"] > 0 and metrics["mae_v_a"] > 0


def _scan(config, shape: tuple[int, int], seed: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Random patterns about a bright-field disk of the calibrated size (predict checks it)."""
    from stemdl.predict.trained_ranges import trained_ranges

    radius = 8 / trained_ranges(config).angular_sampling_mrad[0]
    rows, cols = np.indices((24, 24))
    disk = ((rows - 12) ** 2 + (cols - 12) ** 2 <= radius**2) * 50.0
    rng = np.random.default_rng(seed)
    return (rng.random((*shape, 24, 24)) + disk).astype(np.float32)


def _scan_options(config) -> list[str]:  # type: ignore[no-untyped-def]
    from stemdl.predict.trained_ranges import trained_ranges

    ranges = trained_ranges(config)
    return ["--energy-kev", "100", "--semiangle-mrad", "8", "--scan-step-a",
            str(ranges.scan_step_a[0]), "--angular-pixel-mrad",
            str(ranges.angular_sampling_mrad[0]), "--centre", "12", "12"]


def test_predict_writes_v_a_and_thickness_with_units(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import zarr

    result, config = trained
    np.save(tmp_path / "scan.npy", _scan(config, (6, 6), 3))
    code = pipeline.main(["predict", str(result.checkpoint), str(tmp_path / "scan.npy"),
                          "--out", str(tmp_path / "out"), "--no-progress", "--save", "hspy",
                          *_scan_options(config)])
    assert code == 0
    record = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert record["map"]["units"] == "V·Å"
    thickness = record["thickness"]
    assert thickness["units"] == "Å" and thickness["per"] == "window"
    grid = np.asarray(thickness["window_grid_a"])
    assert grid.shape == (len({s[0] for s in record["windows"]["starts"]}),
                          len({s[1] for s in record["windows"]["starts"]}))
    assert np.isfinite(grid).all() and thickness["mean_a"] == pytest.approx(grid.mean(), rel=1e-5)
    stitched = zarr.open_array(str(tmp_path / "out" / "potential.zarr"), mode="r")
    assert stitched.attrs["units"] == "V·Å" and stitched.attrs["thickness"]["units"] == "Å"
    assert record["model"]["physical_scale"]["potential_scale_v_a"][0] > 1

    import hyperspy.api as hs

    signal = hs.load(tmp_path / "out" / "potential.hspy")
    assert signal.metadata.Signal.quantity == "Projected potential (V·Å)"
    assert signal.original_metadata.stemdl.thickness_units == "Å"


def test_an_old_standardized_checkpoint_still_predicts_labelled(tmp_path: Path, tiny_store) -> None:  # type: ignore[no-untyped-def]
    """A checkpoint saved before issue 20: standardized targets, no thickness head, and a
    stored config without the new keys."""
    from stemdl.train.arrangements import build_model

    data = load_config("tiny").to_dict()
    data["loader"]["standardize_targets"] = True
    del data["model"]["thickness_head"]
    del data["train"]["thickness_loss_weight"]
    config = config_from_dict(data)
    model = build_model(config.model, config.simulation.sample_shape)
    assert not any("scale" in key for key in model.state_dict())
    checkpoint = save_checkpoint({"model": model.state_dict(), "step": 0, "epoch": 0,
                                  "batch_in_epoch": 0, "config": data}, tmp_path / "old.pt")
    loaded, _ = load_trained_model(checkpoint, torch.device("cpu"))
    assert loaded.units == "standardized" and not loaded.has_thickness
    metrics = evaluate_main(checkpoint, str(tiny_store), split="validation")
    assert metrics["units"] == "standardized" and "rel_l2_v_a" not in metrics
    np.save(tmp_path / "scan.npy", _scan(config, (4, 4), 4))
    assert pipeline.main(["predict", str(checkpoint), str(tmp_path / "scan.npy"), "--out",
                          str(tmp_path / "out"), "--no-progress", *_scan_options(config)]) == 0
    record = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert record["map"]["units"].startswith("standardized")
    assert record["thickness"]["units"] is None


def test_physical_metric_definitions() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((4, 2, 8, 8)) * 500 + 100
    pred = truth + rng.normal(0, 30, truth.shape)
    values = physical_per_sample(torch.from_numpy(pred), torch.from_numpy(truth))
    for i in range(4):
        diff = (pred[i] - truth[i]).ravel()
        assert float(values["rel_l2_v_a"][i]) == pytest.approx(
            np.linalg.norm(diff) / np.linalg.norm(truth[i]), rel=1e-5)
        assert float(values["mae_v_a"][i]) == pytest.approx(np.abs(diff).mean(), rel=1e-5)
    moved_pred, moved_truth = standardize_by_truth(torch.from_numpy(pred),
                                                   torch.from_numpy(truth))
    assert moved_truth.mean(dim=(-2, -1)).abs().max() < 1e-9
    assert torch.allclose(moved_truth.std(dim=(-2, -1), unbiased=False),
                          torch.ones(4, 2, dtype=torch.float64), atol=1e-6)
    mean, std = truth.mean(axis=(-2, -1), keepdims=True), truth.std(axis=(-2, -1), keepdims=True)
    np.testing.assert_allclose(moved_pred.numpy(), (pred - mean) / (std + 1e-6), rtol=1e-9)
    errors = thickness_per_sample(torch.tensor([44.0, 18.0]), torch.tensor([40.0, 20.0]))
    assert errors["thickness_mae_a"].tolist() == pytest.approx([4.0, 2.0])
    assert errors["thickness_mae_pct"].tolist() == pytest.approx([10.0, 10.0])


def test_calibration_of_gaussian_errors() -> None:
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.5, 2.0, 200_000)
    error = rng.normal(0.0, 3.0 * sigma)  # σ underestimates the error 3×
    factor = fit_factor(error, sigma)
    assert factor == pytest.approx(3.0 * 1.96 / 2, rel=0.02)
    assert coverage(error, sigma, factor) == pytest.approx(0.95, abs=0.002)
    assert coverage(error, sigma, 3.0) == pytest.approx(0.9545, abs=0.003)


@pytest.mark.parametrize("op", range(8))
def test_d4_of_a_batch_matches_the_augmentation_and_inverts(op: int) -> None:
    rng = np.random.default_rng(op)
    cbed = rng.random((2, 16, 5, 5)).astype(np.float32)
    maps = rng.random((2, 1, 8, 8)).astype(np.float32)
    expected_cbed, expected_map = apply_d4(cbed, maps, (4, 4), op)
    moved = transform_cbed(torch.from_numpy(cbed), (4, 4), op)
    np.testing.assert_array_equal(moved.numpy(), expected_cbed)
    np.testing.assert_array_equal(_invert(torch.from_numpy(expected_map.copy()), op).numpy(), maps)


def test_thickness_by_index_is_the_record(tiny_store: Path) -> None:
    store = open_stemdl_store(str(tiny_store))
    np.testing.assert_allclose(thickness_by_index(str(tiny_store)),
                               read_fields(store, ["thickness_a"])["thickness_a"], rtol=1e-6)

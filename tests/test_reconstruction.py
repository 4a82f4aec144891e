"""The science claim, small: a trained model beats both baselines on held-out compositions.

A fast configuration (`reconstruction_model`: 10 prototype families, 2 zone axes, drawn
thickness, defocus, C3 and semi-angle, and the scanned square moved by up to ±2.5 Å per sample
(`scan.shift_a`), so a sample's placement on the lattice is arbitrary; 192 samples of 4×4
patterns) is simulated for real once per test session, `scan_pixels` is trained with the D4
augmentation for 40 epochs, and the test split (compositions training never saw) is scored with
`train.scoring`. Measured when written (35 test samples; the run is deterministic on a given
machine): model Pearson r 0.839 / relative L2 0.476, nearest neighbour 0.06 / 1.35, mean target
0.015 / 1.00. (With every square centred the baselines reached 0.731 and 0.504: a target then
sits at the same place on each material's lattice, which a model and a lookup can both learn.)
The margins asserted are far below the measured ones, plus a floor on the model itself (r > 0.7),
so the test fails if the model stops generalizing (or a baseline starts cheating), not on small
numerical differences between machines.
"""

from __future__ import annotations

import pytest

from stemdl.end_to_end import score_run


@pytest.mark.slow
def test_trained_model_beats_both_baselines_on_held_out_materials(reconstruction_run) -> None:  # type: ignore[no-untyped-def]
    run = reconstruction_run  # simulated and trained once per session (reconstruction_model)
    metrics, _ = score_run(run.config, run.store, {"scan_pixels": run.checkpoint}, doses=())
    model = metrics["models"]["scan_pixels"]["noise_free"]
    nearest = metrics["baselines"]["nearest_neighbour"]["noise_free"]
    mean = metrics["baselines"]["mean_target"]["noise_free"]
    assert metrics["test_samples"] >= 20
    assert model["pearson_r"] > 0.7, model
    assert model["pearson_r"] > nearest["pearson_r"] + 0.08, (model, nearest)
    assert model["rel_l2"] < nearest["rel_l2"] - 0.06, (model, nearest)
    assert model["pearson_r"] > mean["pearson_r"] + 0.2, (model, mean)
    assert model["rel_l2"] < mean["rel_l2"] - 0.3, (model, mean)

"""`stemdl predict` accepts a scan step within ±25 % of the trained one, by resampling the scan
onto the trained step (`datasets/scan_resampling.py`), and refuses one beyond.

The end-to-end test simulates the same held-out material as tests/test_predict.py (GaP [001],
9 mrad, 20 Å, a detector pixel 1/3 of the training pixel, 1e5 e/Å²) three times: at the
trained 1.5 Å step (9 × 9 probes) and at 0.8× and 1.2× it, each scan placed so that its first
probe is where the reference's is, with enough probes that the resampled grid is the
reference's 9 × 9. The resampled maps must be close to the reference's map and to the truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stemdl import pipeline
from stemdl.datasets.scan_resampling import ResampledScan, plan_scan_step
from stemdl.datasets.trained_ranges import TrainedRanges
from stemdl.train.metrics import pearson_r
from stemdl.train.predict import OutsideTrainingError, check_calibration

MATERIAL = ("zincblende-GaP-5e4e17cd", (0, 0, 1))
TRAINED_STEP_A = 1.5
PROBES = 9  # at the trained step
DETECTOR_PX = 72


def test_resampling_interpolates_between_probes_and_keeps_inside_the_scan() -> None:
    rng = np.random.default_rng(0)
    n = 11
    # patterns varying linearly with position: linear interpolation is exact for them
    a, b, c = (rng.random((1, 1, 5, 5)).astype(np.float32) for _ in range(3))
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    data = (a + b * y[..., None, None] + c * x[..., None, None]).astype(np.float32)
    plan = plan_scan_step((1.2, 1.2), (1.5, 1.5), (n, n), 0.02)
    assert plan.resampled and plan.shape == (9, 9)  # 10 × 1.2 Å span holds 8 steps of 1.5 Å
    assert plan.corner_offset_a == pytest.approx((-0.15, -0.15))
    resampled = ResampledScan(data, plan)
    assert resampled.shape == (9, 9, 5, 5)
    u = np.arange(9) * 1.5 / 1.2  # file coordinates of the new probes
    expected = a + b * u[:, None, None, None] + c * u[None, :, None, None]
    np.testing.assert_allclose(resampled[0:9], expected, rtol=1e-5)
    np.testing.assert_allclose(resampled[3:5], expected[3:5], rtol=1e-5)  # by bands of rows
    # a probe that lands on a file probe is that probe's pattern
    np.testing.assert_array_equal(resampled[4:5][0, 4], data[5, 5])  # 4 × 1.5 = 5 × 1.2
    coarse = plan_scan_step((1.8, 1.8), (1.5, 1.5), (8, 8), 0.02)
    assert coarse.shape == (9, 9)  # 7 × 1.8 = 12.6 Å holds 8 steps of 1.5 Å
    same = plan_scan_step((1.51, 1.49), (1.5, 1.5), (8, 8), 0.02)
    assert not same.resampled and same.shape == (8, 8)


def test_steps_beyond_the_range_are_refused_naming_it() -> None:
    ranges = TrainedRanges(energy_ev=(1e5, 1e5), semiangle_mrad=(6.0, 12.0),
                           scan_step_a=(1.5, 1.5), angular_sampling_mrad=(0.5, 1.0),
                           window=(4, 4), pattern_px=(21, 21), pattern_centre_px=(10.0, 10.0),
                           target_px=(16, 16), target_pixel_a=(0.375, 0.375))
    calibration = {"energy_ev": 1e5, "semiangle_mrad": 9.0, "angular_sampling_mrad": (0.8, 0.8)}
    for step in (1.5 * 0.75, 1.5 * 1.25):
        check_calibration({**calibration, "scan_step_a": (step, step)}, (8, 8), ranges)
    for step in (1.5 * 0.7, 1.5 * 1.3):
        with pytest.raises(OutsideTrainingError, match="by more than predict resamples"):
            check_calibration({**calibration, "scan_step_a": (step, 1.5)}, (8, 8), ranges)
    # 5 probes at 1.25 × the step are 6 at the trained one; 4 at 0.8 × are 3: too few
    check_calibration({**calibration, "scan_step_a": (1.875, 1.875)}, (4, 4), ranges)
    with pytest.raises(OutsideTrainingError, match=r"\(3x3 at the trained step\) is smaller"):
        check_calibration({**calibration, "scan_step_a": (1.2, 1.2)}, (4, 4), ranges)


def _scan(reconstruction_run, step_a: float, probes: int, corner: tuple[float, float]):  # type: ignore[no-untyped-def]
    from measured_scan import poisson_counts, simulate_large_scan

    from stemdl.datasets.transforms import electrons_per_pattern

    scan = simulate_large_scan(reconstruction_run.config.simulation, *MATERIAL, repeat=3,
                               scan_gpts=(probes, probes), step_a=step_a,
                               pattern_px=DETECTOR_PX, target_px_per_probe=4, energy_ev=100e3,
                               semiangle_mrad=9.0, defocus_a=0.0, thickness_a=20.0,
                               corner_a=corner)
    electrons = electrons_per_pattern(1e5, np.array([0, 0, step_a, step_a]), 1)
    return scan, poisson_counts(scan.patterns, electrons, seed=0)


@pytest.mark.slow
def test_scans_at_0_8_and_1_2_times_the_step_map_like_one_at_the_trained_step(
        reconstruction_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import zarr
    from measured_scan import training_phase_corner_a

    corner = training_phase_corner_a(reconstruction_run.config.simulation, *MATERIAL, repeat=3)
    maps, records = {}, {}
    truth = None
    for factor, probes in ((1.0, PROBES), (0.8, 11), (1.2, 8)):
        step = TRAINED_STEP_A * factor
        shift = (step - TRAINED_STEP_A) / 2  # first probe where the reference's first probe is
        scan, counts = _scan(reconstruction_run, step, probes,
                             (corner[0] - shift, corner[1] - shift))
        if factor == 1.0:
            truth = scan.potential[0]
        np.save(tmp_path / f"scan{factor}.npy", counts)
        out = tmp_path / f"pred{factor}"
        code = pipeline.main(["predict", str(reconstruction_run.checkpoint),
                              str(tmp_path / f"scan{factor}.npy"), "--out", str(out),
                              "--no-progress", "--energy-kev", "100", "--semiangle-mrad", "9",
                              "--angular-pixel-mrad", f"{scan.angular_sampling_mrad[0]:.8f}",
                              "--scan-step-a", f"{step:.6f}"])
        assert code == 0
        maps[factor] = np.asarray(zarr.open_array(str(out / "potential.zarr"), mode="r")[...])[0]
        records[factor] = json.loads((out / "prediction.json").read_text())
    assert truth is not None
    assert not records[1.0]["scan_step"]["resampled"]
    r_reference = pearson_r(maps[1.0], truth)
    for factor in (0.8, 1.2):
        assert records[factor]["scan_step"]["resampled"]
        assert records[factor]["scan_step"]["resampled_shape"] == [PROBES, PROBES]
        assert maps[factor].shape == maps[1.0].shape == truth.shape
        r_truth, r_same = pearson_r(maps[factor], truth), pearson_r(maps[factor], maps[1.0])
        print(f"step ×{factor}: r to truth {r_truth:.3f} (trained step {r_reference:.3f}), "
              f"r to the trained-step map {r_same:.3f}")
        assert r_same > 0.9 and r_truth > max(0.8, r_reference - 0.07)

"""`predict_main(checkpoint, data, ...)`: a trained model applied to a measured 4D-STEM scan.

In: a checkpoint (its `config` says what the model was trained on) and a scan read by
`predict.microscope_files.read_scan` with its calibration. Out: one projected-potential map of
the scanned area (`PredictionResult`), written by `predict.outputs`.

Steps, in order:
1. The trained ranges (`predict.trained_ranges`) come from the stored config alone: beam energy and
   semi-angle ranges as configured; the scan step, which every training sample shares
   (scan side / probe grid, `simulate/geometry.py`); and the range of angular pixel sizes the
   training patterns had. A pattern pixel is 1e3·λ·binning / extent mrad and the extent is
   whole base cells of each material, so the range is computed over the training split of the
   config's (deterministic) catalogue, at the lowest and highest energy.
2. Refusals (`check_calibration`, `OutsideTrainingError`, every problem listed at once): beam
   energy or semi-angle outside the trained range, a scan step outside 0.75–1.25 × the trained
   one (`predict.scan_resampling.SCAN_STEP_RANGE`), patterns coarser than the coarsest
   training pattern, a scan smaller than the model's probe grid (at the trained step); each
   with `RELATIVE_TOLERANCE` (2 %) for calibration uncertainty. A step within the range but
   not the trained one is resampled onto it (`predict.scan_resampling`: linear
   interpolation between probe positions, a band of rows at a time); the map then has the
   trained pixel. Then the file against itself (`predict.scan_checks`): not empty, finite,
   and a bright-field disk in the mean pattern whose radius is semi-angle ÷ angular pixel
   within 10 %.
3. Resampling (`predict.pattern_resampling`, area-weighted rebinning about the direct beam):
   a pixel finer than the model's training pixel (`TrainedRanges.typical_angular_sampling_mrad`:
   `detector.pixel_mrad` where the config sets it, else the median of the native pixels)
   is binned onto it, by a whole factor (exact where the centre allows) when one lands within
   `RELATIVE_TOLERANCE` and the pixel is not a fixed one, else by the fractional ratio; one at or coarser than it (and within
   the trained range) is kept. One target pixel, not any in the trained range: the training
   patterns of each material have their own pixel (λ / whole cells), the model learns where a
   structure's disks fall in pixels, and a scan put on another pixel of the range mapped by
   chance (GaP: r 0.55–0.94 over the range; benchmarks/RESULTS.md, "pattern pixel"). Then the
   model's pattern size is cut (or zero-padded) about the centre, which lands on the model's
   zero-frequency pixel.
4. Normalization: `datasets.transforms.normalize_inputs` with the checkpoint's loader config,
   the very function the training loader calls.
   Steps 3 and 4 run a band of scan rows at a time as windows ask for them
   (`predict.scan_inputs.ScanModelInputs`), and the direct beam is found on the mean pattern
   summed band by band: the file is read lazily and never held whole, so a scan larger than
   memory is predicted in the memory of a few rows of it.
5. Windows (`plan_windows`): the scan is cut into overlapping windows of the model's probe grid
   (gy × gx), half a window apart by default, the last ones flush with the scan's edge; each
   window's patterns are stacked row-major, as the store holds them, so both arrangements
   (`channels`, `scan_pixels`) get exactly the input they were trained on.
6. Stitching (`stitch`): a window of probes covers the same square as its predicted map
   (target pixel = scan side / target_px), so window (r, c) lands at pixel offset
   (r·H'/gy, c·W'/gx). Overlaps are blended with the separable weight
   w(i) = 10⁻³ + sin²(π(i + ½)/n) per window axis (small at window edges, where a prediction
   sees the least context): map = Σ w·prediction / Σ w.
7. Thickness (a model with `model.thickness_head`): one value in Å per window, from the same
   forward pass, kept as a (window rows, window columns) grid with the windows' centres; not
   blended into a per-pixel map, because the model learnt one thickness per window.
The map is in the model's output units: V·Å for a model trained on physical targets
(`loader.standardize_targets: false`, as `tiny`), the same dataset-level scale in every window,
so overlapping windows agree in scale and the blend is a weighted mean of V·Å values. A model
trained on standardized targets (`small`, `paper`, and every checkpoint made before issue 20)
still predicts; each window's map is then standardized (zero mean, unit variance) and the
outputs say so. With a thickness head, each
window's thickness (Å) is recorded as a grid over the windows (7.).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemdl.configs import StemdlConfig
from stemdl.configs.json_values import to_json_value
from stemdl.predict.calibration import RELATIVE_TOLERANCE, OutsideTrainingError, check_calibration
from stemdl.predict.microscope_files import read_scan, resolve_calibration
from stemdl.predict.pattern_resampling import find_centre, plan_resampling
from stemdl.predict.scan_checks import check_disk_calibration, check_readable_file
from stemdl.predict.scan_inputs import ScanModelInputs, mean_pattern
from stemdl.predict.scan_resampling import ResampledScan, plan_scan_step
from stemdl.predict.stitching import plan_windows, stitch
from stemdl.predict.trained_ranges import TrainedRanges, trained_ranges
from stemdl.train.evaluate import load_trained_model

log = logging.getLogger(__name__)


@dataclass
class PredictionResult:
    """The stitched map and everything needed to write and explain it."""

    potential: np.ndarray  # (C, H, W) float32
    pixel_a: tuple[float, float]  # (y, x)
    mean_pattern: np.ndarray  # of the scan as read (before resampling)
    mean_pattern_mrad: tuple[float, float]
    mean_pattern_centre_px: tuple[float, float]
    units: str
    record: dict[str, Any]  # → prediction.json
    # (rows, cols) thickness in Å of each window (`record["thickness"]` says where they sit),
    # or None for a model without a thickness head
    thickness_a: np.ndarray | None = None


def predict_main(checkpoint: Path, data: str | Path, *, calibration_options: dict[str, Any],
                 sample: int | None = None, scan_shape: tuple[int, int] | None = None,
                 centre: tuple[float, float] | None = None, stride: tuple[int, int] | None = None,
                 batch_size: int = 16, device: str | None = None, progress: bool = True
                 ) -> PredictionResult:
    """Read, check, resample, normalize, tile, predict and stitch (module docstring)."""
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_trained_model(Path(checkpoint), torch_device)
    ranges = trained_ranges(config)
    problem = config.simulation.stitching_problem()
    if problem:
        raise OutsideTrainingError(f"{checkpoint}: this model's maps cannot be stitched: "
                                   f"{problem}")
    check_readable_file(data)
    scan = read_scan(data, scan_shape=scan_shape, sample=sample)
    calibration, sources = resolve_calibration(scan, calibration_options)
    ratio = check_calibration(calibration, scan.scan_shape, ranges)
    mean = mean_pattern(scan.data, progress, scan.path)
    calibration["measured_disk_radius_px"] = check_disk_calibration(mean, calibration)
    if centre is None:
        centre = find_centre(mean)
        sources["centre_px"] = "found: centre of mass of the bright-field disk (half pixels)"
    else:
        sources["centre_px"] = "option"
    resampling, matrices = plan_resampling(scan.pattern_shape, centre, ratio, ranges.pattern_px,
                                           ranges.pattern_centre_px)
    if resampling.padded_fraction > 0:
        log.warning("%.0f%% of the model's pattern lies beyond the recorded detector and is "
                    "padded with zeros", 100 * resampling.padded_fraction)
    step_plan = plan_scan_step(tuple(calibration["scan_step_a"]), ranges.scan_step_a,
                               scan.scan_shape, RELATIVE_TOLERANCE)
    if step_plan.resampled:
        log.info("scan step %s Å resampled onto the trained %s Å: %dx%d probes",
                 calibration["scan_step_a"], ranges.scan_step_a, *step_plan.shape)
    probes = ResampledScan(scan.data, step_plan) if step_plan.resampled else scan.data
    inputs = ScanModelInputs(probes, matrices, config.loader.input_transform,
                             config.loader.standardize_inputs, scan.path)
    gy, gx = ranges.window
    stride = stride or (max(1, gy // 2), max(1, gx // 2))
    starts = plan_windows(step_plan.shape, ranges.window, stride)
    window_thickness: list[float] = []
    potential, counts = stitch(model, inputs, ranges, starts, torch_device, batch_size,
                               progress, thickness_out=window_thickness)
    units = ("standardized (each window zero mean, unit variance), not V·Å"
             if config.loader.standardize_targets else "V·Å")
    trained_a = (config.simulation.thickness_a.min, config.simulation.thickness_a.max)
    thickness_grid, thickness_record = _thickness_record(window_thickness, starts, ranges,
                                                         trained_a)
    state_info = _checkpoint_info(Path(checkpoint), config)
    record = {
        "data": {"path": scan.path, "format": scan.format, "scan_shape": list(scan.scan_shape),
                 "pattern_shape": list(scan.pattern_shape), "notes": scan.notes},
        "calibration": {name: to_json_value(value) for name, value in calibration.items()},
        "calibration_sources": sources,
        "trained_ranges": to_json_value(asdict(ranges)),
        "relative_tolerance": RELATIVE_TOLERANCE,
        "resampling": {**to_json_value(asdict(resampling)), "centre_px": list(centre),
                       "method": "area-weighted rebinning about the direct beam, then crop/pad "
                       "to the model's pattern (predict/pattern_resampling.py)",
                       "model_angular_sampling_mrad": [
                           p * r for p, r in zip(calibration["angular_sampling_mrad"], ratio,
                                                 strict=True)]},
        "scan_step": step_plan.as_dict(),
        "normalization": {"input_transform": config.loader.input_transform,
                          "standardize_inputs": config.loader.standardize_inputs},
        "windows": {"window_probes": list(ranges.window), "stride_probes": list(stride),
                    "count": len(starts), "starts": [list(s) for s in starts],
                    "min_windows_per_pixel": int(counts.min()),
                    "max_windows_per_pixel": int(counts.max()),
                    "blend": "separable 1e-3 + sin²(π(i+½)/n) per window axis"},
        "map": {"shape": list(potential.shape), "pixel_a": list(ranges.target_pixel_a),
                "units": units,
                "origin": "corner of the scanned area: probe (0, 0) sits at half a scan step"
                          + ("; the resampled scan's corner lies corner_offset_a (y, x) from "
                             "the file's (scan_step)" if step_plan.resampled else ""),
                "corner_offset_a": list(step_plan.corner_offset_a)},
        "model": {**state_info, "physical_scale": model.scale_dict()  # type: ignore[operator]
                  if hasattr(model, "scale_dict") else {}},
        "thickness": thickness_record,
    }
    return PredictionResult(potential, ranges.target_pixel_a, mean.astype(np.float32),
                            tuple(calibration["angular_sampling_mrad"]), tuple(centre), units,
                            record, thickness_grid)


def _thickness_record(values: list[float], starts: list[tuple[int, int]],
                      ranges: TrainedRanges, trained_a: tuple[float, float]
                      ) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The windows' thickness as a (rows, cols) grid in Å and its JSON record.

    Per window, not per pixel: the model was trained on specimens of one thickness per
    sample, so one window gives one thickness (see the README, "Targets")."""
    if not values:
        return None, {"units": None, "note": "the model predicts no thickness (trained "
                      "before the thickness head, or without it)"}
    rows = sorted({r for r, _ in starts})
    cols = sorted({c for _, c in starts})
    grid = np.full((len(rows), len(cols)), np.nan, dtype=np.float32)
    for (r, c), value in zip(starts, values, strict=True):
        grid[rows.index(r), cols.index(c)] = value
    centre_a = [[(r + ranges.window[0] / 2) * ranges.scan_step_a[0] for r in rows],
                [(c + ranges.window[1] / 2) * ranges.scan_step_a[1] for c in cols]]
    return grid, {"units": "Å", "per": "window", "mean_a": float(np.nanmean(grid)),
                  "std_a": float(np.nanstd(grid)), "min_a": float(np.nanmin(grid)),
                  "max_a": float(np.nanmax(grid)), "window_grid_a": grid.tolist(),
                  "window_centres_a": centre_a,
                  "trained_range_a": list(trained_a),
                  "note": "window centres are in Å from the corner of the scanned area"}


def _checkpoint_info(checkpoint: Path, config: StemdlConfig) -> dict[str, Any]:
    from stemdl.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    return {"checkpoint": str(checkpoint), "config_name": config.name,
            "arrangement": config.model.arrangement, "step": int(state["step"]),
            "epoch": int(state["epoch"]), "ema_weights": bool(state.get("ema")),
            "validation_metrics": state.get("metrics", {})}

"""`predict_main(checkpoint, data, out_dir, ...)`: a trained model applied to a measured 4D-STEM scan.

In: a checkpoint (its `config` says what the model was trained on) and a scan read by
`datasets.microscope_files.read_scan` with its calibration. Out: one projected-potential map of
the scanned area (`PredictionResult`), written by `train.predict_outputs`.

Steps, in order:
1. The trained ranges (`datasets.trained_ranges`) come from the stored config alone: beam energy and
   semi-angle ranges as configured; the scan step, which every training sample shares
   (scan side / probe grid, `simulate/geometry.py`); and the range of angular pixel sizes the
   training patterns had. A pattern pixel is 1e3·λ·binning / extent mrad and the extent is
   whole base cells of each material, so the range is computed over the training split of the
   config's (deterministic) catalogue, at the lowest and highest energy.
2. Refusals (`check_calibration`, `OutsideTrainingError`, every problem listed at once): beam
   energy or semi-angle outside the trained range, a scan step outside 0.75–1.25 × the trained
   one (`datasets.scan_resampling.SCAN_STEP_RANGE`), patterns coarser than the coarsest
   training pattern, a scan smaller than the model's probe grid (at the trained step); each
   with `RELATIVE_TOLERANCE` (2 %) for calibration uncertainty. A step within the range but
   not the trained one is resampled onto it (`datasets.scan_resampling`: linear
   interpolation between probe positions, a band of rows at a time); the map then has the
   trained pixel. Then the file against itself (`datasets.scan_checks`): not empty, finite,
   and a bright-field disk in the mean pattern whose radius is semi-angle ÷ angular pixel
   within 10 %.
3. Resampling (`datasets.pattern_resampling`, area-weighted rebinning about the direct beam):
   a pixel finer than the median training pixel (`TrainedRanges.typical_angular_sampling_mrad`)
   is binned onto it, by a whole factor (exact where the centre allows) when one lands within
   `RELATIVE_TOLERANCE`, else by the fractional ratio; one at or coarser than it (and within
   the trained range) is kept. One target pixel, not any in the trained range: the training
   patterns of each material have their own pixel (λ / whole cells), the model learns where a
   structure's disks fall in pixels, and a scan put on another pixel of the range mapped by
   chance (GaP: r 0.55–0.94 over the range; benchmarks/RESULTS.md, "pattern pixel"). Then the
   model's pattern size is cut (or zero-padded) about the centre, which lands on the model's
   zero-frequency pixel.
4. Normalization: `datasets.transforms.normalize_inputs` with the checkpoint's loader config,
   the very function the training loader calls.
   Steps 3 and 4 run a band of scan rows at a time as windows ask for them
   (`datasets.scan_inputs.ScanModelInputs`), and the direct beam is found on the mean pattern
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
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stemdl.configs import StemdlConfig, StemdlError
from stemdl.configs.units import wavelength_a
from stemdl.datasets.microscope_files import (
    CalibrationError,
    Scan4D,
    read_scan,
    resolve_calibration,
)
from stemdl.datasets.pattern_resampling import find_centre, plan_resampling
from stemdl.datasets.scan_checks import check_disk_calibration, check_readable_file
from stemdl.datasets.scan_inputs import ScanModelInputs, mean_pattern
from stemdl.datasets.scan_resampling import SCAN_STEP_RANGE, ResampledScan, plan_scan_step
from stemdl.datasets.trained_ranges import TrainedRanges, trained_ranges
from stemdl.train.evaluate import load_trained_model

log = logging.getLogger(__name__)

RELATIVE_TOLERANCE = 0.02
_WEIGHT_FLOOR = 1e-3


class OutsideTrainingError(StemdlError, ValueError):
    """Data the model was not trained for (energy, semi-angle, scan step, pattern sampling)."""


def _within(value: float, low: float, high: float) -> bool:
    return low * (1 - RELATIVE_TOLERANCE) <= value <= high * (1 + RELATIVE_TOLERANCE)


def _ratio_for(pixel_mrad: float, finest: float, coarsest: float,
               typical: float | None = None) -> float:
    """Output pixel / input pixel: onto the `typical` training pixel where the recorded one is
    finer (a whole factor where one lands within `RELATIVE_TOLERANCE` of it, so the rebinning
    can be exact), else kept; without a typical pixel (a hand-made `TrainedRanges`), the
    smallest whole factor into [finest, coarsest]."""
    if typical is not None:
        if pixel_mrad >= typical * (1 - RELATIVE_TOLERANCE):
            return 1.0
        ratio = typical / pixel_mrad
        whole = round(ratio)
        return float(whole) if abs(whole - ratio) <= RELATIVE_TOLERANCE * ratio else ratio
    if _within(pixel_mrad, finest, coarsest):
        return 1.0
    whole = math.ceil(finest * (1 - RELATIVE_TOLERANCE) / pixel_mrad)
    if whole * pixel_mrad <= coarsest * (1 + RELATIVE_TOLERANCE):
        return float(whole)
    return finest / pixel_mrad


def check_calibration(calibration: dict[str, Any], scan_shape: tuple[int, int],
                      ranges: TrainedRanges) -> tuple[float, float]:
    """The resampling ratio (ky, kx), or `OutsideTrainingError` listing every refusal."""
    problems = []
    energy = calibration["energy_ev"]
    if not _within(energy, *ranges.energy_ev):
        problems.append(f"beam energy {energy / 1e3:.4g} keV is outside the trained "
                        f"{_span(ranges.energy_ev, 1e-3)} keV")
    if ranges.semiangle_mrad is not None and not _within(calibration["semiangle_mrad"],
                                                         *ranges.semiangle_mrad):
        problems.append(f"convergence semi-angle {calibration['semiangle_mrad']:.4g} mrad is "
                        f"outside the trained {_span(ranges.semiangle_mrad)} mrad")
    low, high = SCAN_STEP_RANGE
    for axis, step, trained in zip("yx", calibration["scan_step_a"], ranges.scan_step_a,
                                   strict=True):
        if not _within(step, low * trained, high * trained):
            problems.append(f"scan step {step:.4g} Å along {axis} differs from the trained "
                            f"{trained:.4g} Å by more than predict resamples ({low:g}–{high:g} "
                            f"× it: {low * trained:.4g}–{high * trained:.4g} Å; every training "
                            "sample had the trained step)")
        elif not math.isclose(step, trained, rel_tol=RELATIVE_TOLERANCE):
            limit = nyquist_step_a(energy, calibration["semiangle_mrad"])
            if max(step, trained) > limit * (1 + RELATIVE_TOLERANCE):
                problems.append(
                    f"scan step {step:.4g} Å along {axis} differs from the trained "
                    f"{trained:.4g} Å, and predict resamples a step only where both sample "
                    f"the 4D data finely enough to interpolate between probes (at most "
                    f"λ/(4α) = {limit:.3g} Å at this energy and semi-angle); scan at the "
                    "trained step or use a model trained at this one")
    finest, coarsest = ranges.angular_sampling_mrad
    ratios = []
    for axis, pixel in zip(("ky", "kx"), calibration["angular_sampling_mrad"], strict=True):
        if pixel > coarsest * (1 + RELATIVE_TOLERANCE):
            problems.append(f"angular pixel {pixel:.4g} mrad/px along {axis} is coarser than "
                            f"any training pattern ({finest:.4g}–{coarsest:.4g} mrad/px at the "
                            "calibrated energy); finer patterns are binned, coarser ones are "
                            "not made up")
        ratios.append(_ratio_for(pixel, finest, coarsest,
                                 ranges.typical_angular_sampling_mrad(energy)))
    gy, gx = ranges.window
    if not problems:  # the probe grid once resampled onto the trained step
        plan = plan_scan_step(tuple(calibration["scan_step_a"]), ranges.scan_step_a,
                              scan_shape, RELATIVE_TOLERANCE)
        if plan.shape[0] < gy or plan.shape[1] < gx:
            resampled = (f" ({plan.shape[0]}x{plan.shape[1]} at the trained step)"
                         if plan.resampled else "")
            problems.append(f"the scan of {scan_shape[0]}x{scan_shape[1]} probes{resampled} "
                            f"is smaller than the model's {gy}x{gx} probe grid")
    if problems:
        raise OutsideTrainingError("refused: the model was not trained for this data: "
                                   + "; ".join(problems) + ". Check the calibration options "
                                   "(--energy-kev, --semiangle-mrad, --scan-step-a, "
                                   "--angular-pixel-mrad) or use a model trained for it.")
    return ratios[0], ratios[1]


def nyquist_step_a(energy_ev: float, semiangle_mrad: float) -> float:
    """The coarsest scan step that samples the 4D data without aliasing: the intensity at a
    detector pixel, as a function of probe position, holds spatial frequencies up to 2α/λ
    (the probe's intensity has twice its aperture's band), so the step must be ≤ λ/(4α).
    Between probes of a coarser scan the patterns are not an interpolation of their
    neighbours' (benchmarks/RESULTS.md, "predict_measured": r 0.28–0.77 at 1.2 × a 1.5 Å
    step at 9 mrad, where λ/(4α) = 1.03 Å)."""
    return wavelength_a(energy_ev) / (4e-3 * semiangle_mrad)


def _span(values: tuple[float, float], scale: float = 1.0) -> str:
    low, high = values[0] * scale, values[1] * scale
    return f"{low:.4g}" if low == high else f"{low:.4g}–{high:.4g}"


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start indices of windows of `window` covering [0, size), `stride` apart, the last flush
    with the end."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def plan_windows(scan_shape: tuple[int, int], window: tuple[int, int],
                 stride: tuple[int, int]) -> list[tuple[int, int]]:
    rows = window_starts(scan_shape[0], window[0], stride[0])
    cols = window_starts(scan_shape[1], window[1], stride[1])
    return [(r, c) for r in rows for c in cols]


def blend_weight(n: int) -> np.ndarray:
    return _WEIGHT_FLOOR + np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2


@torch.no_grad()
def stitch(model: nn.Module, inputs: np.ndarray | ScanModelInputs, ranges: TrainedRanges,
           starts: list[tuple[int, int]], device: torch.device, batch_size: int = 16,
           progress: bool = True, thickness_out: list[float] | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(C, Ny·H'/gy, Nx·W'/gx) blended map and the number of windows covering each pixel.

    `inputs` (scan_y, scan_x, H, W) model input: an array, or `ScanModelInputs`, which computes
    rows as windows ask for them (`starts` in row-major order, as `plan_windows` gives them).
    With `thickness_out` (a list) and a model with a thickness head, each window's predicted
    thickness (Å) is appended to it, in the order of `starts`."""
    from tqdm.auto import tqdm

    gy, gx = ranges.window
    th, tw = ranges.target_px
    fy, fx = th // gy, tw // gx
    ny, nx = inputs.shape[:2]
    weight = np.outer(blend_weight(th), blend_weight(tw))
    total = None
    weights = np.zeros((ny * fy, nx * fx))
    counts = np.zeros((ny * fy, nx * fx), dtype=np.int32)
    bar = tqdm(total=len(starts), desc="windows", unit="window", disable=not progress)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        stack = np.stack([np.asarray(inputs[r:r + gy, c:c + gx], dtype=np.float32)
                          .reshape(gy * gx, *inputs.shape[2:]) for r, c in chunk])
        batch = torch.from_numpy(stack).to(device)
        if thickness_out is not None and getattr(model, "has_thickness", False):
            out, depth = model.forward_both(batch)  # type: ignore[operator]
            thickness_out.extend(depth.float().cpu().tolist())
        else:
            out = model(batch)
        predicted = out.float().cpu().numpy()
        if total is None:
            total = np.zeros((predicted.shape[1], ny * fy, nx * fx))
        for (r, c), window_map in zip(chunk, predicted, strict=True):
            rows, cols = slice(r * fy, r * fy + th), slice(c * fx, c * fx + tw)
            total[:, rows, cols] += weight * window_map
            weights[rows, cols] += weight
            counts[rows, cols] += 1
        bar.update(len(chunk))
    bar.close()
    assert total is not None
    return (total / weights).astype(np.float32), counts


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
    th, tw = ranges.target_px
    if th % gy or tw % gx:
        raise OutsideTrainingError(f"the model's {th}x{tw} target is not a whole number of "
                                   f"pixels per probe of its {gy}x{gx} grid; cannot stitch")
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
        "calibration": {name: _jsonable(value) for name, value in calibration.items()},
        "calibration_sources": sources,
        "trained_ranges": _jsonable(asdict(ranges)),
        "relative_tolerance": RELATIVE_TOLERANCE,
        "resampling": {**_jsonable(asdict(resampling)), "centre_px": list(centre),
                       "method": "area-weighted rebinning about the direct beam, then crop/pad "
                       "to the model's pattern (datasets/pattern_resampling.py)",
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = ["CalibrationError", "OutsideTrainingError", "PredictionResult", "Scan4D",
           "TrainedRanges", "check_calibration", "plan_windows", "predict_main", "stitch",
           "trained_ranges"]

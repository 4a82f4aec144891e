"""Checks of a measured scan against itself before `stemdl predict` uses it.

Why: the calibration (`microscope_files.resolve_calibration`) comes from file metadata or
options, and nothing else in predict can tell a wrong number from a right one: a semi-angle
typed for another aperture, or an angular pixel of another camera length, passes the trained
ranges and gives a confident map of the wrong thing. The pattern itself says how big the
bright-field disk is, so it is measured and compared:

* `check_readable_file`: a file of 0 bytes is named as such (before a reader fails on it with
  an unhelpful end-of-file error);
* `check_mean_pattern`: the mean pattern must be finite (one NaN or inf pattern poisons every
  window it is in) and not all zero;
* `measure_disk_radius_px`: the radius of the bright-field disk of the mean pattern, from its
  area. Threshold at half the disk's plateau (the median of the pixels above half the
  maximum) about a background (the median of a ring outside the disk), then each pixel within
  two pixels of the thresholded disk counts with its covered fraction
  clip((I − background) / (plateau − background), 0, 1), so an edge pixel half lit counts half:
  radius = √(area / π). For an ellipse (different pixel sizes per axis) this is √(ry·rx).
  Sub-pixel: a 3 px disk is measured to a few percent (tests/datasets/test_scan_checks.py, on
  abTEM patterns of vacuum and of crystals).
* `check_disk_calibration`: the measured radius against semi-angle ÷ angular pixel
  (√ of the product of the two axes' pixels); beyond `DISK_TOLERANCE` (10 %) of the
  calibrated one (at least `DISK_TOLERANCE_FLOOR_PX`, which matters below 2.5 px only),
  `DiskCalibrationError` names both numbers and what to check. Measured on the `small`
  preset's stored crystals (67 samples, radii 2.8–4.2 px): −3.5 % ± 1.4 %, −6.4 % to +2.6 %.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stemdl.predict.microscope_files import CalibrationError, MicroscopeFileError

DISK_TOLERANCE = 0.10
# A floor under the tolerance, in pixels: the edge of a disk a few pixels across is not
# measured better than this (abTEM's own vacuum disks measure 0.1–0.2 px small at every
# radius: −9 % at 2 px, −4 % at 3–4 px, −1.5 % at 11 px), so 10 % of a 2 px disk is no test.
DISK_TOLERANCE_FLOOR_PX = 0.25


class DiskCalibrationError(CalibrationError):
    """The bright-field disk of the scan is not the size its calibration says."""


def check_readable_file(data: str | Path) -> None:
    """`MicroscopeFileError` for a local file of 0 bytes (URLs and folders are left alone)."""
    if isinstance(data, str) and "://" in data:
        return
    path = Path(data)
    if path.is_file() and path.stat().st_size == 0:
        raise MicroscopeFileError(f"{path} is empty (0 bytes): nothing to predict")


def check_mean_pattern(mean: np.ndarray) -> None:
    """`MicroscopeFileError` unless the mean pattern is finite and somewhere positive."""
    mean = np.asarray(mean)
    if mean.size == 0:
        raise MicroscopeFileError("the scan holds no pattern pixels")
    if not np.all(np.isfinite(mean)):
        raise MicroscopeFileError("the scan holds NaN or infinite values (its mean pattern is "
                                  "not finite); a map of it would be NaN")
    if not mean.max() > 0:
        raise MicroscopeFileError("every pattern of the scan is zero (or negative): there is "
                                  "no bright-field disk")


def measure_disk_radius_px(mean: np.ndarray) -> float:
    """Radius in pixels of the bright-field disk of `mean` (module docstring)."""
    pattern = np.asarray(mean, dtype=np.float64)
    rough = pattern >= 0.5 * pattern.max()
    plateau = float(np.median(pattern[rough]))
    rows, cols = np.indices(pattern.shape)
    weights = np.where(rough, pattern, 0.0)
    cy, cx = (rows * weights).sum() / weights.sum(), (cols * weights).sum() / weights.sum()
    distance = np.hypot(rows - cy, cols - cx)
    radius0 = float(np.sqrt(rough.sum() / np.pi))
    ring = (distance >= radius0 + 2) & (distance < radius0 + 4)
    background = float(np.median(pattern[ring])) if ring.any() else 0.0
    background = min(background, 0.5 * plateau)
    cover = np.clip((pattern - background) / (plateau - background), 0.0, 1.0)
    area = cover[distance <= radius0 + 2].sum()
    return float(np.sqrt(area / np.pi))


def expected_disk_radius_px(calibration: dict[str, Any]) -> float:
    """Semi-angle ÷ angular pixel (geometric mean of the two axes' pixels), in pixels."""
    pixel_y, pixel_x = calibration["angular_sampling_mrad"]
    return float(calibration["semiangle_mrad"] / np.sqrt(pixel_y * pixel_x))


def check_disk_calibration(mean: np.ndarray, calibration: dict[str, Any]) -> float:
    """The measured disk radius (px) after `check_mean_pattern`; `DiskCalibrationError` when it
    differs from the calibrated one by more than `DISK_TOLERANCE`."""
    check_mean_pattern(mean)
    measured = measure_disk_radius_px(mean)
    expected = expected_disk_radius_px(calibration)
    if abs(measured - expected) > max(DISK_TOLERANCE * expected, DISK_TOLERANCE_FLOOR_PX):
        pixel = calibration["angular_sampling_mrad"]
        raise DiskCalibrationError(
            f"the bright-field disk of the mean pattern has a radius of {measured:.3g} px, but "
            f"the calibration says {expected:.3g} px (semi-angle "
            f"{calibration['semiangle_mrad']:.4g} mrad ÷ angular pixel "
            f"{pixel[0]:.4g} × {pixel[1]:.4g} mrad/px), {abs(measured / expected - 1):.0%} "
            f"apart (more than {DISK_TOLERANCE:.0%}): check --semiangle-mrad and "
            "--angular-pixel-mrad (or the file's calibration)")
    return measured

"""Patterns onto a model's angular grid: find the direct beam, rebin, crop or pad.

Resampling (`resample_patterns`): area-weighted rebinning about the direct-beam centre. Each
output pixel is the sum of the input pixels it covers, a pixel cut by its edge counting with
the covered fraction of its area (the detector pixels are treated as uniform squares; the
operator of `simulate.detector_pixels`, with which the simulator puts training patterns on a
fixed pixel when `detector.pixel_mrad` is set). With
an integer ratio whose output pixel grid lines up with the input pixels about the centre (an
odd ratio with the centre on a pixel centre, an even one with the centre on a pixel corner)
this is exactly the sum of whole detector pixels, i.e. what a detector binned by that factor
records. Output pixels beyond the recorded pattern are padded with zeros (and reported).
Ratios below 1 (making pixels smaller) are refused here: they would invent detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stemdl.predict.microscope_files import CalibrationError, MicroscopeFileError
from stemdl.simulate.detector_pixels import overlap_matrix


def find_centre(mean_pattern: np.ndarray) -> tuple[float, float]:
    """(ky, kx) pixel of the direct beam: centre of mass of the bright-field disk (pixels above
    half the maximum of the mean pattern), rounded to the nearest half pixel."""
    pattern = np.asarray(mean_pattern, dtype=np.float64)
    disk = np.where(pattern >= 0.5 * pattern.max(), pattern, 0.0)
    total = disk.sum()
    if not total > 0:
        raise MicroscopeFileError("the mean pattern is empty or negative; cannot find the "
                                  "direct beam (pass --centre KY KX)")
    rows, cols = np.indices(pattern.shape)
    centre = ((rows * disk).sum() / total, (cols * disk).sum() / total)
    return (round(2 * centre[0]) / 2, round(2 * centre[1]) / 2)


@dataclass(frozen=True)
class Resampling:
    """How patterns go from the file's grid to the model's (for the record of a prediction)."""

    ratio: tuple[float, float]  # output pixel / input pixel, per axis (ky, kx)
    centre_in_px: tuple[float, float]
    centre_out_px: tuple[float, float]
    out_px: tuple[int, int]
    exact: bool  # only whole input pixels summed
    padded_fraction: float  # of the output pixels, the fraction with no recorded data


def plan_resampling(pattern_shape: tuple[int, int], centre_in: tuple[float, float],
                    ratio: tuple[float, float], out_px: tuple[int, int],
                    centre_out: tuple[float, float]) -> tuple[Resampling, list[np.ndarray]]:
    """The `Resampling` and the two overlap matrices (ky, kx) of `resample_patterns`."""
    if min(ratio) < 1 - 1e-9:
        raise CalibrationError(f"resampling ratio {ratio} below 1: the recorded pixels are "
                               "coarser than the model's; stemdl does not invent detail")
    matrices = [overlap_matrix(n_in, c_in, n_out, c_out, r) for n_in, c_in, n_out, c_out, r
                in zip(pattern_shape, centre_in, out_px, centre_out, ratio, strict=True)]
    exact = all(np.all((m == 0) | (m == 1)) for m in matrices)
    coverage = [m.sum(axis=1) / r for m, r in zip(matrices, ratio, strict=True)]
    covered = np.outer(coverage[0], coverage[1])
    padded = float(np.mean(covered < 1 - 1e-9))
    return Resampling(tuple(ratio), tuple(centre_in), tuple(centre_out), tuple(out_px), exact,
                      padded), matrices


def resample_patterns(patterns: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """(..., H, W) → (..., H', W') float32 with the overlap matrices of `plan_resampling`."""
    rows, cols = matrices
    x = np.asarray(patterns, dtype=np.float32)
    return np.einsum("ih,...hw,jw->...ij", rows.astype(np.float32), x, cols.astype(np.float32),
                     optimize=True).astype(np.float32)


def pattern_centre_px(pattern_px: tuple[int, int], binning: int) -> tuple[float, float]:
    """(ky, kx) of zero frequency in a stored pattern, in its pixel coordinates: the window of
    pattern_px·binning pixels has zero frequency at index (pattern_px·binning) // 2
    (`simulate.physics.central_crop`), then `binning` pixels are summed into one."""
    return tuple((n * binning // 2 + 0.5) / binning - 0.5 for n in pattern_px)  # type: ignore[return-value]

"""`check_calibration`: what the model was trained for, checked against a scan's calibration.

Step 2 of `predict_main` (`predict/scan_prediction.py`): every refusal is listed at once, so a
user fixes the calibration options in one go. Beam energy and semi-angle must lie in the trained
ranges; the scan step within `SCAN_STEP_RANGE` of the trained one, and resampled only where
both steps sample the 4D data finely enough (`nyquist_step_a`); patterns no coarser than the
coarsest training pattern (finer ones are binned onto the median training pixel, `_ratio_for`); the scan at least one probe
grid. `RELATIVE_TOLERANCE` (2 %) allows for calibration uncertainty.
"""

from __future__ import annotations

import math
from typing import Any

from stemdl.configs import StemdlError
from stemdl.configs.units import wavelength_a
from stemdl.predict.scan_resampling import SCAN_STEP_RANGE, plan_scan_step
from stemdl.predict.trained_ranges import TrainedRanges

RELATIVE_TOLERANCE = 0.02


class OutsideTrainingError(StemdlError, ValueError):
    """Data the model was not trained for (energy, semi-angle, scan step, pattern sampling)."""


def _within(value: float, low: float, high: float) -> bool:
    return low * (1 - RELATIVE_TOLERANCE) <= value <= high * (1 + RELATIVE_TOLERANCE)


def _ratio_for(pixel_mrad: float, finest: float, coarsest: float,
               typical: float | None = None, whole_factor: bool = True) -> float:
    """Output pixel / input pixel: onto the `typical` training pixel where the recorded one is
    finer (with `whole_factor`, a whole factor where one lands within `RELATIVE_TOLERANCE` of
    it, so the rebinning can be exact), else kept; without a typical pixel (a hand-made
    `TrainedRanges`), the smallest whole factor into [finest, coarsest].

    `whole_factor` is off for a model trained on one fixed pixel (`detector.pixel_mrad`): its
    training patterns were integrated onto exactly that pixel by the same area-weighted
    operator, so a whole factor 2 % off it would only move every disk edge by 2 %."""
    if typical is not None:
        if pixel_mrad >= typical * (1 - RELATIVE_TOLERANCE):
            return 1.0
        ratio = typical / pixel_mrad
        whole = round(ratio)
        if whole_factor and abs(whole - ratio) <= RELATIVE_TOLERANCE * ratio:
            return float(whole)
        return ratio
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
                                 ranges.typical_angular_sampling_mrad(energy),
                                 whole_factor=ranges.fixed_pixel_mrad is None))
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

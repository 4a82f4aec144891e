"""Scoring in physical units for `stemdl run`: per-sample scores, thickness, calibration.

`run.score_run` calls three things from here, so its loop stays what it was:

* `sample_scores(prediction, target, physical, thickness_pred_a, thickness_true_a)`: every
  shape metric (`train.metrics`; on maps moved by the truth's z-score when `physical`, see
  `train.physical_metrics`) and, when physical, `rel_l2_v_a`, `mae_v_a` and the thickness
  errors, per sample, so `scoring.summarize` and `scoring.by_material` average them as any
  other metric (per dose and per material);
* `thickness_predictions(models, cbed)`: the thickness (Å) of each model with a head;
* `calibration(models, validation, test, scan_gpts)`: the D4 uncertainty of
  `train.uncertainty`, its factor fitted on the validation split, coverage on the test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from stemdl.train.physical_metrics import (
    DEFINITIONS,
    physical_per_sample,
    standardize_by_truth,
    thickness_per_sample,
)
from stemdl.train.scoring import SplitArrays, predict, sample_metrics
from stemdl.train.uncertainty import TARGET_COVERAGE, coverage, d4_spread, fit_factor

__all__ = ["DEFINITIONS", "calibration", "sample_scores", "thickness_predictions"]


def sample_scores(prediction: torch.Tensor, target: torch.Tensor, physical: bool,
                  thickness_pred_a: torch.Tensor | None = None,
                  thickness_true_a: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Every metric for every sample (float64 arrays); see the module docstring."""
    if not physical:
        return sample_metrics(prediction, target)
    scores = sample_metrics(*standardize_by_truth(prediction.float(), target.float()))
    values = physical_per_sample(prediction, target)
    if thickness_pred_a is not None and thickness_true_a is not None:
        values.update(thickness_per_sample(thickness_pred_a, thickness_true_a))
    scores.update({name: v.double().numpy() for name, v in values.items()})
    return scores


@torch.no_grad()
def _thickness(model: nn.Module, cbed: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    model.eval()
    return torch.cat([model.forward_both(cbed[i:i + batch_size])[1].float()  # type: ignore[operator]
                      for i in range(0, cbed.shape[0], batch_size)])


def thickness_predictions(models: dict[str, nn.Module], cbed: torch.Tensor
                          ) -> dict[str, torch.Tensor]:
    """Predicted thickness (Å) per sample of each model that has a thickness head."""
    return {name: _thickness(model, cbed) for name, model in models.items()
            if getattr(model, "has_thickness", False)}


def _errors(model: nn.Module, split: SplitArrays, scan_gpts: tuple[int, int],
            thickness_a: np.ndarray | None) -> dict[str, np.ndarray]:
    prediction = predict(model, split.cbed)
    sigma, thickness_sigma = d4_spread(model, split.cbed, scan_gpts)
    out = {"error": (prediction - split.potential).numpy(), "sigma": sigma.numpy()}
    if thickness_sigma is not None and thickness_a is not None:
        predicted = _thickness(model, split.cbed).numpy()
        out["thickness_error"] = predicted - thickness_a[split.index]
        out["thickness_sigma"] = thickness_sigma.numpy()
    return out


def calibration(models: dict[str, nn.Module], validation: SplitArrays, test: SplitArrays,
                scan_gpts: tuple[int, int], thickness_a: np.ndarray | None) -> dict[str, Any]:
    """Per model: the factor k fitted on validation, and the test coverage of 2·k·σ (noise-free)
    for the map pixels and, with a thickness head, the windows' thickness."""
    result: dict[str, Any] = {}
    for name, model in models.items():
        fit = _errors(model, validation, scan_gpts, thickness_a)
        held = _errors(model, test, scan_gpts, thickness_a)
        factor = fit_factor(fit["error"], fit["sigma"])
        entry: dict[str, Any] = {
            "sigma_factor": factor,
            "validation_coverage_2sigma": coverage(fit["error"], fit["sigma"], factor),
            "test_coverage_2sigma": coverage(held["error"], held["sigma"], factor),
            "test_coverage_2sigma_raw": coverage(held["error"], held["sigma"], 1.0),
            "test_mean_sigma": float(factor * held["sigma"].mean()),
            "test_pixels": int(held["error"].size),
        }
        if "thickness_error" in fit and "thickness_error" in held:
            t_factor = fit_factor(fit["thickness_error"], fit["thickness_sigma"])
            entry.update({
                "thickness_sigma_factor": t_factor,
                "thickness_test_coverage_2sigma": coverage(
                    held["thickness_error"], held["thickness_sigma"], t_factor),
                "thickness_test_mean_sigma_a": float(t_factor * held["thickness_sigma"].mean()),
            })
        result[name] = entry
    result["definition"] = (
        "σ: standard deviation over the 8 symmetries of the square of the moved-back "
        "predictions (train/uncertainty.py), per pixel (maps) or per sample (thickness), "
        "scaled by a factor k fitted on the validation split so that 95 % of validation "
        "errors lie within 2·k·σ; test_coverage_2sigma is the fraction of test pixels (or "
        f"samples) with |error| ≤ 2·k·σ, goal ≈ {TARGET_COVERAGE:.0%}; *_raw is with k = 1")
    return result

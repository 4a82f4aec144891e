"""A per-pixel uncertainty from the spread over the 8 symmetries of the square, calibrated.

Why the D4 spread: the 8 operations of the square map a sample onto the sample of the
transformed specimen exactly (`datasets/augment.py`), and the model was trained on all of
them (`loader.augment: d4`), so it should give the same map for each, moved back. Where the
8 moved-back maps disagree, the model is unsure. σ is their standard deviation per pixel (and
per window for the thickness): eight forward passes, no extra training. The spread of a
model's own symmetries underestimates its error (they share every weight), so σ is scaled
by one factor k fitted on the VALIDATION split: the smallest k for which |error| ≤ 2·k·σ
holds for 95 % of validation pixels (`fit_factor`). The coverage on the test split, the
fraction of test pixels with |error| ≤ 2·k·σ, then says whether the calibration holds on
materials neither training nor the fit saw (`coverage`).

The prediction scored elsewhere is the plain one (operation 0); σ only describes it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stemdl.datasets.augment import D4_SIZE

TARGET_COVERAGE = 0.95


def _apply(array: torch.Tensor, op: int, axis_y: int, axis_x: int) -> torch.Tensor:
    """`datasets.augment._apply_to_axes` for torch tensors (transpose first, then flips)."""
    if op & 4:
        array = array.transpose(axis_y, axis_x)
    flips = [axis for bit, axis in ((1, axis_x), (2, axis_y)) if op & bit]
    return array.flip(flips) if flips else array


def _invert(array: torch.Tensor, op: int) -> torch.Tensor:
    """Undo operation `op` on (..., H, W) maps: flips first, then the transpose."""
    flips = [axis for bit, axis in ((1, -1), (2, -2)) if op & bit]
    if flips:
        array = array.flip(flips)
    return array.transpose(-2, -1) if op & 4 else array


def transform_cbed(cbed: torch.Tensor, scan_gpts: tuple[int, int], op: int) -> torch.Tensor:
    """(B, P, H, W) stacks of the specimen moved by `op` (as `datasets.augment.apply_d4`)."""
    batch, patterns, height, width = cbed.shape
    gy, gx = scan_gpts
    grid = cbed.reshape(batch, gy, gx, height, width)
    grid = _apply(grid, op, -4, -3)
    grid = _apply(grid, op, -2, -1)
    return grid.reshape(batch, patterns, height, width)


@torch.no_grad()
def d4_spread(model: nn.Module, cbed: torch.Tensor, scan_gpts: tuple[int, int],
              batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-pixel σ (B, C, H', W') of the 8 moved-back maps, and per-sample σ of the thickness
    (B,) when the model has a thickness head (else None)."""
    model.eval()
    thickness = bool(getattr(model, "has_thickness", False))
    maps_sd, thickness_sd = [], []
    for start in range(0, cbed.shape[0], batch_size):
        chunk = cbed[start:start + batch_size]
        maps, depths = [], []
        for op in range(D4_SIZE):
            moved = transform_cbed(chunk, scan_gpts, op)
            if thickness:
                out, depth = model.forward_both(moved)  # type: ignore[operator]
                depths.append(depth.float())
            else:
                out = model(moved)
            maps.append(_invert(out.float(), op))
        maps_sd.append(torch.stack(maps).std(dim=0, unbiased=True))
        if thickness:
            thickness_sd.append(torch.stack(depths).std(dim=0, unbiased=True))
    return torch.cat(maps_sd), (torch.cat(thickness_sd) if thickness else None)


def fit_factor(error: np.ndarray, sigma: np.ndarray, coverage: float = TARGET_COVERAGE
               ) -> float:
    """The smallest k with |error| ≤ 2·k·σ for a fraction `coverage` of the entries."""
    ratio = np.abs(np.asarray(error, np.float64)) / (2 * np.maximum(np.asarray(sigma,
                                                                                 np.float64),
                                                                      1e-12))
    return float(np.quantile(ratio.ravel(), coverage))


def coverage(error: np.ndarray, sigma: np.ndarray, factor: float) -> float:
    """Fraction of entries with |error| ≤ 2·factor·σ."""
    error, sigma = np.asarray(error, np.float64), np.asarray(sigma, np.float64)
    return float(np.mean(np.abs(error) <= 2 * factor * sigma))

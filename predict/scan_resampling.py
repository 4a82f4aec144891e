"""A measured scan resampled onto the trained scan step, for `stemdl predict`.

Why resampling in predict, not training over a range of steps: every training sample of a
config is scanned with one step (the square and the probe grid are fixed, so that the target
pixel never varies), and the model's map pixel is tied to it (target_px per probe). A scan at
another step is brought to that step by interpolating between probe positions, and the map
then has the trained pixel over the same area. This costs nothing in training and works for
any checkpoint; what it cannot do is add detail: between probes a coarser scan's patterns are
linear mixtures of their neighbours', which a real pattern at that position is not quite (the
pattern changes non-linearly with position within a column). So the accepted range is
limited, `SCAN_STEP_RANGE` (0.75–1.25 × the trained step, plus the calibration tolerance);
`tests/test_predict.py` checks that scans at 0.8× and 1.2× map close to one at the trained step.

Geometry: the file's probe i (per axis) sits at i·s from its first probe; the resampled probe
j at j·t, j = 0 … floor((n − 1)·s/t), so that every new probe lies inside the measured grid
(no extrapolation: a coarser scan loses up to one trained step at its far edges). Probe j's
pattern is (1 − w)·P[i] + w·P[i + 1] with i = floor(j·t/s), w = j·t/s − i, along y then x.
The resampled scan's corner (half a trained step before its first probe) lies at
(s − t)/2 from the file's corner, which `prediction.json` records with the map.

`ResampledScan` is array-like like the file's lazily read data: slicing rows reads only the
file rows they need, so predict still holds a few rows of the scan, not all of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

SCAN_STEP_RANGE = (0.75, 1.25)  # measured step / trained step that predict resamples


@dataclass(frozen=True)
class ScanStepPlan:
    """How a scan of `scan_shape` probes at `step_a` is brought to `trained_step_a`."""

    step_a: tuple[float, float]  # (y, x) of the file
    trained_step_a: tuple[float, float]
    ratio: tuple[float, float]  # file step / trained step
    scan_shape: tuple[int, int]  # of the file
    shape: tuple[int, int]  # resampled probe grid
    resampled: bool
    corner_offset_a: tuple[float, float]  # (y, x) resampled corner − file corner

    def as_dict(self) -> dict[str, Any]:
        return {"step_a": list(self.step_a), "trained_step_a": list(self.trained_step_a),
                "ratio": list(self.ratio), "scan_shape": list(self.scan_shape),
                "resampled_shape": list(self.shape), "resampled": self.resampled,
                "corner_offset_a": list(self.corner_offset_a),
                "method": "linear interpolation between probe positions onto the trained step "
                          "(predict/scan_resampling.py)" if self.resampled else "none"}


def resampled_length(size: int, ratio: float) -> int:
    """Probes of the trained step inside `size` probes at `ratio` × the trained step."""
    return math.floor((size - 1) * ratio + 1e-9) + 1


def plan_scan_step(step_a: tuple[float, float], trained_step_a: tuple[float, float],
                   scan_shape: tuple[int, int], tolerance: float) -> ScanStepPlan:
    """The plan (module docstring); no resampling where the steps agree within `tolerance`."""
    ratio = (step_a[0] / trained_step_a[0], step_a[1] / trained_step_a[1])
    resampled = any(not math.isclose(r, 1.0, rel_tol=tolerance) for r in ratio)
    if not resampled:
        return ScanStepPlan(tuple(step_a), tuple(trained_step_a), (1.0, 1.0),  # type: ignore[arg-type]
                            tuple(scan_shape), tuple(scan_shape), False, (0.0, 0.0))  # type: ignore[arg-type]
    shape = (resampled_length(scan_shape[0], ratio[0]), resampled_length(scan_shape[1], ratio[1]))
    offset = ((step_a[0] - trained_step_a[0]) / 2, (step_a[1] - trained_step_a[1]) / 2)
    return ScanStepPlan(tuple(step_a), tuple(trained_step_a), ratio, tuple(scan_shape),  # type: ignore[arg-type]
                        shape, True, offset)


def _weights(count: int, ratio: float, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower file index, upper file index and weight of the upper one, per resampled probe
    (`ratio` = file step / trained step, so probe j sits at file coordinate j / ratio)."""
    u = np.arange(count) / ratio
    low = np.minimum(np.floor(u + 1e-9).astype(int), size - 1)
    weight = np.clip(u - low, 0.0, 1.0)
    high = np.minimum(low + 1, size - 1)
    return low, high, weight


class ResampledScan:
    """The file's (scan_y, scan_x, ky, kx) data on the trained step, computed by rows."""

    def __init__(self, data: Any, plan: ScanStepPlan) -> None:
        self._data = data
        self.plan = plan
        self.shape = (*plan.shape, *(int(n) for n in data.shape[2:]))
        self.ndim = 4
        self.dtype = np.dtype(np.float32)
        self._rows = _weights(plan.shape[0], plan.ratio[0], plan.scan_shape[0])
        self._cols = _weights(plan.shape[1], plan.ratio[1], plan.scan_shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise IndexError("ResampledScan takes a slice of rows")
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise IndexError("ResampledScan takes contiguous row ranges only")
        if stop <= start:
            return np.zeros((0, *self.shape[1:]), np.float32)
        low, high, weight = (a[start:stop] for a in self._rows)
        first, last = int(low.min()), int(high.max())
        band = np.asarray(self._data[first:last + 1], dtype=np.float32)
        w = weight.astype(np.float32)[:, None, None, None]
        rows = band[low - first] * (1 - w) + band[high - first] * w
        c_low, c_high, c_weight = self._cols
        cw = c_weight.astype(np.float32)[None, :, None, None]
        return rows[:, c_low] * (1 - cw) + rows[:, c_high] * cw

"""Windows over a scan and their stitched map (steps 5 and 6 of `predict_main`).

`plan_windows` cuts the scan into overlapping windows of the model's probe grid, the last ones
flush with the scan's edge. `stitch` predicts each window and blends the overlaps with the
separable weight w(i) = 10⁻³ + sin²(π(i + ½)/n) per window axis: small at a window's edge,
where a prediction sees the least context, and never zero, so every pixel has a weight.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stemdl.predict.scan_inputs import ScanModelInputs
from stemdl.predict.trained_ranges import TrainedRanges

_WEIGHT_FLOOR = 1e-3


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

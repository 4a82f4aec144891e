"""Reconstruction metrics (MSE, PSNR, SSIM, relative L2, Pearson r), summed across ranks.

Why sums: every rank sees different validation samples and possibly a different number of them;
a per-rank mean of means would weight ranks unequally. Each rank adds per-sample values into
`MetricSums`, one allreduce of the sums gives the exact means over all samples of the split.

Per sample (a (C, H', W') map): the data range L is the target's max − min, so PSNR and SSIM do
not depend on the arbitrary offset of a standardized target.

- MSE: mean over every element of every sample (the loss, without regularization).
- PSNR: 10·log10(L² / MSE_sample), averaged over samples.
- SSIM: Wang et al. (2004) with an 11-pixel Gaussian window (σ = 1.5; smaller, odd, for maps
  under 11 px), K1 = 0.01, K2 = 0.03, over valid windows, averaged over channels and samples.
- relative L2: ‖prediction − target‖ / ‖target‖ per sample, averaged.
- Pearson r: correlation of prediction and target over a sample's elements, averaged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

METRIC_NAMES = ("mse", "psnr_db", "ssim", "rel_l2", "pearson_r")
_EPS = 1e-12


def gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """Normalized (1, 1, size, size) Gaussian kernel."""
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_per_sample(pred: torch.Tensor, target: torch.Tensor, data_range: torch.Tensor
                    ) -> torch.Tensor:
    """SSIM of each sample of (B, C, H, W) maps, averaged over channels and valid windows."""
    batch, channels, height, width = target.shape
    size = min(11, height, width)
    size -= 1 - size % 2  # odd
    window = gaussian_window(size, 1.5 * size / 11, target.device)
    x = pred.reshape(batch * channels, 1, height, width)
    y = target.reshape(batch * channels, 1, height, width)
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    c1 = (0.01 * data_range).repeat_interleave(channels)[:, None, None, None] ** 2
    c2 = (0.03 * data_range).repeat_interleave(channels)[:, None, None, None] ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(batch, -1).mean(dim=1)


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over all values of two maps of one shape, in float64: for one map (a stitched
    prediction of a whole scan) against another, outside a batch."""
    a = np.asarray(a, dtype=np.float64).ravel() - np.mean(a)
    b = np.asarray(b, dtype=np.float64).ravel() - np.mean(b)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def per_sample_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each metric for each sample of a (B, C, H, W) batch (float32)."""
    pred, target = pred.float(), target.float()
    batch = target.shape[0]
    diff = (pred - target).reshape(batch, -1)
    t, p = target.reshape(batch, -1), pred.reshape(batch, -1)
    mse = diff.square().mean(dim=1)
    data_range = (t.max(dim=1).values - t.min(dim=1).values).clamp_min(_EPS)
    pc, tc = p - p.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True)
    pearson = (pc * tc).sum(dim=1) / (pc.norm(dim=1) * tc.norm(dim=1)).clamp_min(_EPS)
    return {
        "mse": mse,
        "psnr_db": 10 * torch.log10(data_range**2 / mse.clamp_min(_EPS)),
        "ssim": ssim_per_sample(pred, target, data_range),
        "rel_l2": diff.norm(dim=1) / t.norm(dim=1).clamp_min(_EPS),
        "pearson_r": pearson,
    }


class MetricSums:
    """Running per-sample sums of every metric on one rank; `reduce()` makes them global."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(METRIC_NAMES) + 1, dtype=torch.float64, device=device)

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        values = per_sample_metrics(pred, target)
        batch = torch.stack([values[name].double().sum() for name in METRIC_NAMES])
        self.sums[:-1] += batch
        self.sums[-1] += target.shape[0]

    def reduce(self, group: dist.ProcessGroup | None = None) -> None:
        """Sum over ranks (no-op without a process group)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.sums, op=dist.ReduceOp.SUM, group=group)

    def means(self) -> dict[str, float]:
        """Mean of each metric over the samples added (and reduced); `samples` is the count."""
        values = self.sums.tolist()
        count = values[-1]
        result = {name: (v / count if count else float("nan"))
                  for name, v in zip(METRIC_NAMES, values[:-1], strict=True)}
        result["samples"] = count
        return result

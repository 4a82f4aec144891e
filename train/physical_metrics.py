"""Metrics in physical units (V·Å, Å) beside the shape metrics of `train.metrics`.

A model trained on physical targets (`loader.standardize_targets: false`) predicts the
projected potential in V·Å and, with `model.thickness_head`, the specimen thickness in Å.
Per sample (a (C, H', W') map in V·Å):

- `rel_l2_v_a`: ‖pred − true‖ / ‖true‖, both in V·Å (no mean removed: the offset is part of
  the physics), averaged over samples;
- `mae_v_a`: mean |pred − true| over the sample's pixels, V·Å, averaged over samples;
- `thickness_mae_a`: |predicted − true thickness| in Å, averaged over samples (windows);
- `thickness_mae_pct`: 100·|predicted − true| / true, averaged over samples.

The shape metrics of such a model (MSE, PSNR, SSIM, relative L2, Pearson r) are computed as
before on standardized maps: both maps are moved by the *truth's* per-sample, per-channel
z-score, (x − mean(true)) / std(true) (`standardize_by_truth`), so they keep the meaning they
have for a model trained on standardized targets (the truth is zero mean, unit variance), and
a wrong scale or offset still costs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

PHYSICAL_NAMES = ("rel_l2_v_a", "mae_v_a")
THICKNESS_NAMES = ("thickness_mae_a", "thickness_mae_pct")
_EPS = 1e-12

DEFINITIONS = {
    "rel_l2_v_a": "‖pred − true‖ / ‖true‖ per sample, maps in V·Å (no mean removed), "
                  "averaged over samples",
    "mae_v_a": "mean |pred − true| over a sample's pixels in V·Å, averaged over samples",
    "thickness_mae_a": "|predicted − true specimen thickness| in Å per sample (one window), "
                       "averaged over samples",
    "thickness_mae_pct": "100·|predicted − true thickness| / true thickness per sample, "
                         "averaged over samples",
    "shape_metrics_of_physical_models": "mse, psnr_db, ssim, rel_l2 and pearson_r of a model "
                                        "in V·Å are computed after moving prediction and truth "
                                        "by the truth's per-sample z-score",
}


def standardize_by_truth(pred: torch.Tensor, target: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) maps moved by the target's per-sample, per-channel mean and (population)
    standard deviation: the target becomes zero mean, unit variance, as standardized targets."""
    mean = target.mean(dim=(-2, -1), keepdim=True)
    std = target.std(dim=(-2, -1), keepdim=True, unbiased=False) + 1e-6
    return (pred - mean) / std, (target - mean) / std


def shape_amplitude_parts(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, C, H, W) maps as (standardized shape, (B, C) mean, (B, C) log standard deviation),
    per sample and channel: map = mean + exp(log std) · shape."""
    mean = maps.mean(dim=(-2, -1))
    std = maps.std(dim=(-2, -1), unbiased=False) + 1e-6
    return (maps - mean[..., None, None]) / std[..., None, None], mean, std.log()


def physical_per_sample(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """`rel_l2_v_a` and `mae_v_a` of each sample of (B, C, H, W) maps in V·Å."""
    batch = target.shape[0]
    diff = (pred.float() - target.float()).reshape(batch, -1)
    truth = target.float().reshape(batch, -1)
    return {"rel_l2_v_a": diff.norm(dim=1) / truth.norm(dim=1).clamp_min(_EPS),
            "mae_v_a": diff.abs().mean(dim=1)}


def thickness_per_sample(pred_a: torch.Tensor, true_a: torch.Tensor) -> dict[str, torch.Tensor]:
    """`thickness_mae_a` and `thickness_mae_pct` of each sample (before averaging)."""
    error = (pred_a.float() - true_a.float()).abs()
    return {"thickness_mae_a": error,
            "thickness_mae_pct": 100 * error / true_a.float().abs().clamp_min(_EPS)}


class PhysicalSums:
    """Running per-sample sums of the physical metrics on one rank (as `MetricSums`)."""

    def __init__(self, device: torch.device, thickness: bool) -> None:
        self.names = PHYSICAL_NAMES + (THICKNESS_NAMES if thickness else ())
        self.sums = torch.zeros(len(self.names) + 1, dtype=torch.float64, device=device)

    def add(self, pred: torch.Tensor, target: torch.Tensor,
            thickness_pred_a: torch.Tensor | None = None,
            thickness_true_a: torch.Tensor | None = None) -> None:
        values = physical_per_sample(pred, target)
        if thickness_pred_a is not None and thickness_true_a is not None:
            values.update(thickness_per_sample(thickness_pred_a, thickness_true_a))
        batch = torch.stack([values[name].double().sum() for name in self.names])
        self.sums[:-1] += batch
        self.sums[-1] += target.shape[0]

    def reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.sums, op=dist.ReduceOp.SUM)

    def means(self) -> dict[str, float]:
        values = self.sums.tolist()
        count = values[-1]
        return {name: (v / count if count else float("nan"))
                for name, v in zip(self.names, values[:-1], strict=True)}

"""Optimizers of the training loop: SGD+momentum or AdamW, optional LARC, optional EMA.

LARC (layer-wise adaptive rate clipping, You et al. 2017, as in NVIDIA apex and the paper):
each parameter tensor's step is scaled by min(1, trust·‖w‖ / (lr·(‖g‖ + wd·‖w‖))), so no layer
moves by more than a `trust` fraction of its own norm per step. That is what kept the paper's
very large global batch stable; it is applied to the gradients just before `optimizer.step()`,
so it works with either optimizer and needs no state in a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from stemdl.configs.training import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW; weight decay on weights, not on biases/norms."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


@torch.no_grad()
def apply_larc(optimizer: torch.optim.Optimizer, trust: float, eps: float = 1e-8) -> None:
    """Scale every gradient by its LARC factor (clip mode); folds weight decay in, as apex does.

    Weight decay is added to the gradient here and switched off for the following
    `optimizer.step()` by `LarcWeightDecay`, so it is applied once and scaled like the gradient.
    """
    for group in optimizer.param_groups:
        lr, weight_decay = group["lr"], group["weight_decay"]
        for param in group["params"]:
            if param.grad is None:
                continue
            weight_norm = torch.linalg.vector_norm(param)
            grad_norm = torch.linalg.vector_norm(param.grad)
            adaptive = trust * weight_norm / (grad_norm + weight_decay * weight_norm + eps)
            factor = torch.clamp(adaptive / lr, max=1.0)
            usable = (weight_norm > 0) & (grad_norm > 0)
            if weight_decay:
                param.grad.add_(param, alpha=weight_decay)
            param.grad.mul_(torch.where(usable, factor, torch.ones_like(factor)))


class LarcWeightDecay:
    """Context: weight decay off in the optimizer while LARC has folded it into the gradient."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.saved: list[float] = []

    def __enter__(self) -> None:
        self.saved = [group["weight_decay"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["weight_decay"] = 0.0

    def __exit__(self, *exc: object) -> None:
        for group, value in zip(self.optimizer.param_groups, self.saved, strict=True):
            group["weight_decay"] = value


class ExponentialMovingAverage:
    """Shadow weights w̄ ← d·w̄ + (1−d)·w after every step (running statistics too; integer
    buffers such as BatchNorm's step count are copied).

    Validation and `stemdl evaluate` use the shadow when it exists: it is usually the better
    model late in training, at the cost of one copy of the weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {name: t.detach().clone() for name, t in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, tensor in model.state_dict().items():
            shadow = self.shadow[name]
            if tensor.is_floating_point():
                shadow.lerp_(tensor.detach(), 1.0 - self.decay)
            else:
                shadow.copy_(tensor)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:5]}")
        for name, tensor in state.items():
            self.shadow[name].copy_(tensor)

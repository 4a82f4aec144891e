"""Learning-rate schedule: linear warm-up, then cosine, step (halving) or constant.

Why warm-up: large global batches (the paper's ran to 27,600 ranks) diverge if the full rate is
applied to a freshly initialized network; ramping it over the first steps avoids that. The
factor is a pure function of the step, so a resumed run continues on exactly the same curve,
and the schedule needs no state of its own in a checkpoint beyond the step.
"""

from __future__ import annotations

import math

import torch

from stemdl.configs.training import TrainConfig


def lr_factor(step: int, total_steps: int, config: TrainConfig) -> float:
    """Multiplier of `config.lr` for optimizer step `step` (0-based) of `total_steps`."""
    warmup = config.warmup_steps
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if config.decay == "none":
        return 1.0
    if config.decay == "step":
        return 0.5 ** ((step - warmup) // config.decay_step_every)
    span = max(total_steps - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                   config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor`; call `.step()` after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config)
    )

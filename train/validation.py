"""Validation and evaluation passes: metrics of a model over one split, summed across ranks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from stemdl.train.metrics import MetricSums
from stemdl.train.optim import ExponentialMovingAverage
from stemdl.train.precision import Precision


@contextlib.contextmanager
def evaluation_weights(model: nn.Module, ema: ExponentialMovingAverage | None) -> Iterator[None]:
    """Evaluate with the EMA weights when there are any, and put the trained ones back after."""
    if ema is None:
        yield
        return
    trained = {name: t.detach().clone() for name, t in model.state_dict().items()}
    model.load_state_dict(ema.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(trained)


@torch.no_grad()
def evaluate_split(model: nn.Module, batches: Iterable[dict], device: torch.device,
                   precision: Precision | None = None) -> dict[str, float]:
    """Mean metrics over every sample of `batches` on every rank (one allreduce at the end)."""
    was_training = model.training
    model.eval()
    sums = MetricSums(device)
    try:
        for batch in batches:
            cbed = batch["cbed"].to(device, non_blocking=True)
            target = batch["potential"].to(device, non_blocking=True)
            with precision.autocast() if precision else contextlib.nullcontext():
                prediction = model(cbed)
            sums.add(prediction.float(), target)
    finally:
        model.train(was_training)
    sums.reduce()
    return sums.means()

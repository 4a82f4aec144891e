"""Validation and evaluation passes: metrics of a model over one split, summed across ranks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from stemdl.train.metrics import MetricSums
from stemdl.train.optim import ExponentialMovingAverage
from stemdl.train.physical_metrics import PhysicalSums, standardize_by_truth
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
                   precision: Precision | None = None,
                   thickness_by_index: torch.Tensor | None = None) -> dict[str, float]:
    """Mean metrics over every sample of `batches` on every rank (one allreduce at the end).

    A physical model (V·Å, `CBEDToPotential.physical`) gets the shape metrics on maps moved by
    the truth's z-score and the metrics of `train.physical_metrics` beside them; with a
    thickness head and `thickness_by_index` (thickness by global sample index), the thickness
    errors too."""
    was_training = model.training
    model.eval()
    sums = MetricSums(device)
    physical = bool(getattr(model, "physical", False))
    thickness = physical and bool(getattr(model, "has_thickness", False)) \
        and thickness_by_index is not None
    physical_sums = PhysicalSums(device, thickness) if physical else None
    try:
        for batch in batches:
            cbed = batch["cbed"].to(device, non_blocking=True)
            target = batch["potential"].to(device, non_blocking=True)
            with precision.autocast() if precision else contextlib.nullcontext():
                if thickness:
                    prediction, thickness_a = model.forward_both(cbed)  # type: ignore[operator]
                else:
                    prediction, thickness_a = model(cbed), None
            prediction = prediction.float()
            if physical_sums is None:
                sums.add(prediction, target)
                continue
            sums.add(*standardize_by_truth(prediction, target))
            true_a = None
            if thickness_a is not None:
                assert thickness_by_index is not None
                true_a = thickness_by_index[batch["index"].long().cpu()].to(device)
            physical_sums.add(prediction, target, thickness_a, true_a)
    finally:
        model.train(was_training)
    sums.reduce()
    if physical_sums is None:
        return sums.means()
    physical_sums.reduce()
    return {**sums.means(), **physical_sums.means()}

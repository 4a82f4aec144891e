"""The few collectives the training loop makes besides the gradient reduction.

Each one is a decision every rank must take identically (how many steps an epoch has, whether
to resume) or a statistic every rank contributes to. All are no-ops in a single process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    """Where collective tensors live: the GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_min(value: int) -> int:
    """The smallest `value` over ranks (e.g. steps per epoch: ranks hold unequal data)."""
    if not _distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def all_agree(flag: bool) -> tuple[bool, bool]:
    """(any rank says True, every rank says True)."""
    if not _distributed():
        return flag, flag
    # One MIN over [not flag, flag]: the first is 0 iff some rank is True.
    tensor = torch.tensor([int(not flag), int(flag)], dtype=torch.int64, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    none_true, all_true = tensor.tolist()
    return not none_true, bool(all_true)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over ranks, in place; returns `values`."""
    if _distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


@torch.no_grad()
def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks.

    Gradients are averaged every step, buffers are not: each rank's BatchNorm tracks its own
    batches. Averaging before validation and checkpoints makes every rank evaluate, and rank 0
    save, the statistics of all the data.
    """
    if not _distributed():
        return
    world = dist.get_world_size()
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world)

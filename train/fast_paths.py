"""Faster kernels for the same training step: channels_last on CUDA, `torch.compile` on request.

* channels_last (`train.channels_last`, default: on CUDA only). cuDNN's tensor-core
  convolutions work in NHWC; with NCHW weights and activations every convolution is bracketed
  by layout transposes. The model's weights are converted once and each batch is converted as
  it arrives, so the convolutions run in NHWC throughout. On the CPU it is off by default:
  the exact-resume guarantee (bit-identical steps) is tested there in the default layout.
* `train.compile` (default off): the forward pass through `torch.compile`, which fuses the
  element-wise work (normalization, activation, concatenation copies) into fewer kernels; the
  backward is compiled with it (AOTAutograd). The compiled module shares the model's
  parameters, so the optimizer, the grouped allreduce's gradient hooks, checkpoints and
  validation (eager) all see the same tensors. The first steps pay the compilation.
"""

from __future__ import annotations

import torch
from torch import nn


def use_channels_last(setting: bool | None, device: torch.device) -> bool:
    """`train.channels_last`: None means on CUDA only."""
    return device.type == "cuda" if setting is None else bool(setting)


def to_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """The model with its 4-D weights in NHWC when `channels_last` (in place)."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


def batch_to(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D input batch in the memory format the model's weights are in."""
    if channels_last and batch.dim() == 4:
        return batch.contiguous(memory_format=torch.channels_last)
    return batch


def training_forward(model: nn.Module, compile_model: bool) -> nn.Module:
    """What the training step calls: the model itself, or its `torch.compile`d wrapper."""
    return torch.compile(model) if compile_model else model

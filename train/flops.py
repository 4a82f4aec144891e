"""Parameters and FLOPs per sample, counted analytically (for FLOP/s logging and sizing runs).

Why analytic: a profiler counts what one device ran; the achieved FLOP/s of a run is the model's
cost per sample times samples per second, and the cost must be known before anything runs (to
size the paper preset without materializing 512×512×1024 inputs). Shapes come from one forward
pass on the `meta` device, which allocates nothing and computes nothing.

Counted: multiply-adds of convolutions, transposed convolutions and linear layers, as 2 FLOPs
each (the convention of `torch.utils.flop_counter`):

    conv:            2 · kh·kw · C_in/groups · C_out · H_out·W_out
    transposed conv: 2 · kh·kw · C_in · C_out/groups · H_in·W_in
    linear:          2 · in · out (per row)

Training costs three times the forward (forward, gradient of the input, gradient of the weight),
less the input gradient of layers whose input needs none (the first convolution): exact, not
the usual "×3" rule of thumb. Normalization, activations, pooling and resizing are O(size) and
left out, as `FlopCounterMode` leaves them out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from math import prod

import torch
from torch import nn


@dataclass(frozen=True)
class ModelCost:
    """Size and per-sample cost of a model."""

    parameters: int
    forward_flops: int  # per sample
    training_flops: int  # per sample: forward + backward

    def summary(self) -> str:
        return (
            f"{self.parameters / 1e6:.3f} M parameters, {self.forward_flops / 1e9:.3f} GFLOP "
            f"forward, {self.training_flops / 1e9:.3f} GFLOP per training sample"
        )


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _layer_flops(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """FLOPs of one layer for the whole batch of `x`."""
    if isinstance(module, nn.ConvTranspose2d | nn.ConvTranspose1d | nn.ConvTranspose3d):
        c_in, c_out_per_group, *kernel = module.weight.shape
        return 2 * prod(kernel) * c_in * c_out_per_group * x.shape[0] * prod(x.shape[2:])
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        c_out, c_in_per_group, *kernel = module.weight.shape
        return 2 * prod(kernel) * c_in_per_group * c_out * out.shape[0] * prod(out.shape[2:])
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features * prod(x.shape[:-1])
    return 0


_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
            nn.ConvTranspose3d, nn.Linear)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> ModelCost:
    """Cost per sample of `model` on one input of `input_shape` (no batch axis).

    The model is copied to the meta device in eval mode (dropout off, norms unchanged), so the
    caller's model is untouched and nothing is allocated.
    """
    shadow = copy.deepcopy(model).to("meta").eval()
    forward = 0
    no_input_grad = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal forward, no_input_grad
        flops = _layer_flops(module, inputs[0], out)
        forward += flops
        if not inputs[0].requires_grad:
            no_input_grad += flops

    handles = [m.register_forward_hook(hook) for m in shadow.modules() if isinstance(m, _COUNTED)]
    try:
        with torch.enable_grad():
            shadow(torch.zeros((1, *input_shape), device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return ModelCost(
        parameters=count_parameters(model),
        forward_flops=forward,
        training_flops=3 * forward - no_input_grad,
    )

"""Mixed precision: which dtype the forward runs in, and whether the loss is scaled.

- fp32: no autocast (the CPU default: CPU autocast buys little and costs accuracy).
- bf16: autocast to bfloat16; same exponent range as fp32, so no loss scaling (the GPU default).
- fp16: autocast to float16 with dynamic loss scaling (`torch.amp.GradScaler`): the loss is
  multiplied by a large factor so small gradients survive fp16, steps whose gradients overflow
  are skipped and the factor shrinks. This is the paper's fp16 with fp32 master weights: the
  parameters and the optimizer stay fp32 throughout.

The loss itself is always computed in fp32 from the (cast) prediction.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from stemdl.configs import ConfigError


@dataclass
class Precision:
    name: str  # "fp32" | "bf16" | "fp16"
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    device_type: str

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """'auto' is bf16 on a GPU and fp32 on the CPU."""
    name = setting
    if setting == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {setting!r}")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision bf16 needs a GPU with bfloat16 support (Ampere or newer); "
                         "use fp16 on this GPU")
    scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
    return Precision(name, dtypes[name], scaler, device.type)

"""Gradient compression plug-ins for `GroupedAllreduce` (the role of DDP's comm hooks).

A plug-in decides what goes on the wire for one fused group and how the reduced wire tensor
becomes the averaged gradient; the reducer's core loop never branches on compression. Write
your own by implementing `GradientCompression` and pass the object as `compression=`.

The built-in half-precision plug-ins divide by the world size *before* casting (so a sum of W
ranks cannot overflow fp16's 65504) and decompress into the fp32 group buffer, so gradients,
their average and the optimizer stay fp32: the wire, and the partial sums inside the
collective, are 16-bit; everything the optimizer sees is accumulated in fp32.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class GradientCompression(Protocol):
    """What one fused group becomes on the wire (`compress`) and back (`decompress`)."""

    name: str

    def compress(self, flat: torch.Tensor, world_size: int) -> torch.Tensor:
        """Tensor to all-reduce with SUM; may be `flat` itself (then it is reduced in place)."""
        ...

    def decompress(self, reduced: torch.Tensor, flat: torch.Tensor, world_size: int) -> None:
        """Write the average over ranks into `flat`, given the summed wire tensor."""
        ...


class NoCompression:
    """Reduce the group buffer in place in its own dtype; divide by the world size after."""

    name = "none"

    def compress(self, flat: torch.Tensor, world_size: int) -> torch.Tensor:
        return flat

    def decompress(self, reduced: torch.Tensor, flat: torch.Tensor, world_size: int) -> None:
        if reduced.data_ptr() != flat.data_ptr():
            flat.copy_(reduced)
        flat.div_(world_size)


class HalfPrecisionCompression:
    """fp16 or bf16 on the wire, fp32 gradients: half the bytes of an fp32 allreduce."""

    def __init__(self, dtype: torch.dtype) -> None:
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"half-precision compression needs float16 or bfloat16, got {dtype}")
        self.dtype = dtype
        self.name = "fp16" if dtype == torch.float16 else "bf16"

    def compress(self, flat: torch.Tensor, world_size: int) -> torch.Tensor:
        if not flat.is_floating_point() or flat.element_size() <= 2:
            return flat
        return (flat / world_size).to(self.dtype)

    def decompress(self, reduced: torch.Tensor, flat: torch.Tensor, world_size: int) -> None:
        if reduced.data_ptr() == flat.data_ptr():
            flat.div_(world_size)  # not compressed (already 16-bit or integer): plain average
        else:
            flat.copy_(reduced)


def get_compression(spec: str | GradientCompression | None) -> GradientCompression:
    """`None`/"none", "fp16", "bf16", or a plug-in object."""
    if spec is None or spec == "none":
        return NoCompression()
    if spec == "fp16":
        return HalfPrecisionCompression(torch.float16)
    if spec == "bf16":
        return HalfPrecisionCompression(torch.bfloat16)
    if isinstance(spec, GradientCompression):
        return spec
    raise ValueError(f"compression must be None, 'none', 'fp16', 'bf16' or a plug-in, got {spec!r}")

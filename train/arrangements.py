"""How a CBED stack (P, H, W) is presented to the FC-DenseNet, and `build_model`.

Two arrangements, compared by the evaluation:

- `channels` (the paper): the P patterns are the P input channels of an H×W image; the network
  sees diffraction space and must learn where each probe position sits in real space.
- `scan_pixels`: each probe position becomes one pixel of a gy×gx real-space image whose
  channels are that position's pattern, average-pooled by `scan_pixel_pool` to (H/s)·(W/s)
  channels; the image is bilinearly upsampled to the target grid (H', W'), so the network works
  in real space from the start, like a ptychographic reconstruction does.

The probe positions are stored row-major over the scan grid (`SampleRecord.probe_positions_a`),
so pattern p sits at grid cell (p // gx, p % gx), the same axis order as the target map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stemdl.configs import ConfigError, ModelConfig, SampleShape, StemdlConfig
from stemdl.train.model import FCDenseNet


class ScanPixelArrangement(nn.Module):
    """(B, gy·gx, H, W) → (B, (H/s)·(W/s), H', W'): patterns become the pixels of a scan image."""

    def __init__(self, scan_gpts: tuple[int, int], pool: int, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.scan_gpts = scan_gpts
        self.pool = pool
        self.output_size = output_size

    def forward(self, cbed: torch.Tensor) -> torch.Tensor:
        batch, patterns, height, width = cbed.shape
        gy, gx = self.scan_gpts
        if patterns != gy * gx:
            raise ValueError(
                f"scan_pixels arrangement expects {gy}x{gx}={gy * gx} patterns, got {patterns}"
            )
        pooled = F.avg_pool2d(cbed.reshape(batch * patterns, 1, height, width), self.pool)
        features = pooled.shape[-2] * pooled.shape[-1]
        # (B·P, 1, h, w) → (B, gy, gx, h·w) → (B, h·w, gy, gx): channels are the pattern pixels.
        image = pooled.reshape(batch, gy, gx, features).permute(0, 3, 1, 2)
        return F.interpolate(image, size=self.output_size, mode="bilinear", align_corners=False)

    @staticmethod
    def channels_for(pattern_px: tuple[int, int], pool: int) -> int:
        return (pattern_px[0] // pool) * (pattern_px[1] // pool)


class CBEDToPotential(nn.Module):
    """The model trained and evaluated: arrangement, then the FC-DenseNet.

    With `physical` (targets in V·Å, `loader.standardize_targets: false`) the network's output
    y is converted to V·Å as offset + scale·y, one offset and scale per channel held as buffers
    (so they are saved in, and loaded from, every checkpoint; `set_scale` fixes them from the
    training split before training). The thickness head's output goes to Å the same way.
    Without `physical` the model has no buffers, exactly as models trained on standardized
    targets were saved, so their checkpoints load unchanged.
    """

    def __init__(self, arrange: nn.Module, network: FCDenseNet, physical: bool = False,
                 out_channels: int = 1) -> None:
        super().__init__()
        self.arrange = arrange
        self.network = network
        self.physical = physical
        self.has_thickness = network.thickness_head is not None
        if physical:
            self.register_buffer("potential_offset_v_a", torch.zeros(out_channels))
            self.register_buffer("potential_scale_v_a", torch.ones(out_channels))
            self.register_buffer("thickness_offset_a", torch.zeros(()))
            self.register_buffer("thickness_scale_a", torch.ones(()))

    @property
    def units(self) -> str:
        return "V·Å" if self.physical else "standardized"

    def set_scale(self, potential_offset_v_a: Sequence[float],
                  potential_scale_v_a: Sequence[float], thickness_offset_a: float,
                  thickness_scale_a: float) -> None:
        """Fix the physical scale (from `datasets.physical_scale.training_scale`)."""
        if not self.physical:
            raise ValueError("set_scale needs a physical model")
        with torch.no_grad():
            self.potential_offset_v_a.copy_(torch.as_tensor(potential_offset_v_a))
            self.potential_scale_v_a.copy_(torch.as_tensor(potential_scale_v_a))
            self.thickness_offset_a.fill_(float(thickness_offset_a))
            self.thickness_scale_a.fill_(float(thickness_scale_a))

    def scale_dict(self) -> dict[str, object]:
        """The physical scale as plain numbers (for JSON records), or {} when standardized."""
        if not self.physical:
            return {}
        return {"potential_offset_v_a": self.potential_offset_v_a.tolist(),
                "potential_scale_v_a": self.potential_scale_v_a.tolist(),
                "thickness_offset_a": float(self.thickness_offset_a),
                "thickness_scale_a": float(self.thickness_scale_a)}

    def to_network_units(self, potential: torch.Tensor) -> torch.Tensor:
        """(B, C, H', W') V·Å → what the network learns (identity when standardized)."""
        if not self.physical:
            return potential
        return ((potential - self.potential_offset_v_a[:, None, None])
                / self.potential_scale_v_a[:, None, None])

    def thickness_to_network_units(self, thickness_a: torch.Tensor) -> torch.Tensor:
        return (thickness_a - self.thickness_offset_a) / self.thickness_scale_a

    def _to_physical(self, raw: torch.Tensor) -> torch.Tensor:
        if not self.physical:
            return raw
        return (raw.float() * self.potential_scale_v_a[:, None, None]
                + self.potential_offset_v_a[:, None, None])

    def forward(self, cbed: torch.Tensor) -> torch.Tensor:
        """The map, in V·Å for a physical model (standardized otherwise)."""
        return self._to_physical(self.network(self.arrange(cbed)))

    def forward_both(self, cbed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The map (as `forward`) and the (B,) thickness in Å, from one pass."""
        raw, thickness = self.network(self.arrange(cbed), with_thickness=True)
        return (self._to_physical(raw),
                thickness.float() * self.thickness_scale_a + self.thickness_offset_a)


def build_model(model: ModelConfig, shape: SampleShape, physical: bool = False
                ) -> CBEDToPotential:
    """The network for `model` on samples of `shape`; output (B, C, H', W') either way;
    `physical`: targets in V·Å (`not loader.standardize_targets`), see `CBEDToPotential`."""
    if model.arrangement == "channels":
        network = FCDenseNet(shape.num_patterns, shape.out_channels, model, shape.target_px)
        return CBEDToPotential(nn.Identity(), network, physical, shape.out_channels)
    if model.arrangement == "scan_pixels":
        if min(shape.pattern_px) < model.scan_pixel_pool:
            raise ConfigError(
                f"scan_pixel_pool={model.scan_pixel_pool} is larger than the pattern "
                f"{shape.pattern_px[0]}x{shape.pattern_px[1]} px"
            )
        channels = ScanPixelArrangement.channels_for(shape.pattern_px, model.scan_pixel_pool)
        arrange = ScanPixelArrangement(shape.scan_gpts, model.scan_pixel_pool, shape.target_px)
        network = FCDenseNet(channels, shape.out_channels, model, shape.target_px)
        return CBEDToPotential(arrange, network, physical, shape.out_channels)
    raise ValueError(f"unknown arrangement {model.arrangement!r}")


def build_model_from_config(config: StemdlConfig) -> CBEDToPotential:
    """`build_model` with the sizes taken from the `simulation:` section."""
    return build_model(config.model, config.simulation.sample_shape,
                       physical=not config.loader.standardize_targets)

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
    """The model trained and evaluated: arrangement, then the FC-DenseNet."""

    def __init__(self, arrange: nn.Module, network: FCDenseNet) -> None:
        super().__init__()
        self.arrange = arrange
        self.network = network

    def forward(self, cbed: torch.Tensor) -> torch.Tensor:
        return self.network(self.arrange(cbed))


def build_model(model: ModelConfig, shape: SampleShape) -> CBEDToPotential:
    """The network for `model` on samples of `shape`; output (B, C, H', W') either way."""
    if model.arrangement == "channels":
        network = FCDenseNet(shape.num_patterns, shape.out_channels, model, shape.target_px)
        return CBEDToPotential(nn.Identity(), network)
    if model.arrangement == "scan_pixels":
        if min(shape.pattern_px) < model.scan_pixel_pool:
            raise ConfigError(
                f"scan_pixel_pool={model.scan_pixel_pool} is larger than the pattern "
                f"{shape.pattern_px[0]}x{shape.pattern_px[1]} px"
            )
        channels = ScanPixelArrangement.channels_for(shape.pattern_px, model.scan_pixel_pool)
        arrange = ScanPixelArrangement(shape.scan_gpts, model.scan_pixel_pool, shape.target_px)
        network = FCDenseNet(channels, shape.out_channels, model, shape.target_px)
        return CBEDToPotential(arrange, network)
    raise ValueError(f"unknown arrangement {model.arrangement!r}")


def build_model_from_config(config: StemdlConfig) -> CBEDToPotential:
    """`build_model` with the sizes taken from the `simulation:` section."""
    return build_model(config.model, config.simulation.sample_shape)

"""The FC-DenseNet family ("The One Hundred Layers Tiramisu", Jégou et al. 2017).

Why this network: it is the one Laanait et al. (2019) trained at scale, and it is fully
convolutional, so one definition covers every preset from `tiny` to `paper` (kernel 5, growth
128, 3 pools, layers [2, 2, 3, 4, 3, 2, 2], 1024 input channels of 512×512).

Shape of the network (all convolutions keep the map size, pools halve it):

    x (P, H, W) ─ conv k×k ─▶ m0 channels
      n_pool × [ dense block (+L·g channels) ─▶ skip ─▶ transition down (1×1 conv, max-pool 2) ]
      bottleneck dense block ─▶ only its L·g new maps go up (keeps the width in check)
      n_pool × [ transition up (3×3 transposed conv, stride 2) ─▶ concat skip ─▶ dense block ]
      1×1 conv ─▶ C channels ─▶ bilinear resize to the target size (H', W') if it differs
      (`thickness_head`) bottleneck maps ─▶ global mean ⊕ max pool ─▶ MLP ─▶ one number
      (`amplitude_head`) the same pooled maps ─▶ MLP ─▶ a mean and a log std per channel; the
      map is standardized over the window, then mean + exp(log std) · map

The thickness head sees the bottleneck, the most pooled view of the whole input, and gives one
number per input (a window of the scan): the specimen is simulated as one slab of constant
thickness, so a window carries one thickness, and CBED encodes it in the intensity of the
disks (the Kossel–Möllenstedt fringes) over the whole stack, not at any one target pixel.

The amplitude head exists for maps in V·Å: their amplitude spans the light elements to the
heaviest, and one network asked for both shape and amplitude learnt the shape of weak
scatterers worse than one trained on standardized targets (benchmarks/RESULTS.md, "Physical
units"). Split, the map keeps the standardized shape, and the amplitude of a window, like its
thickness, is one number read off the whole stack.

A dense layer is norm → ReLU → k×k conv (g maps) → dropout, and a dense block concatenates every
layer's output to its input, so layer j of a block sees the input plus all j earlier outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stemdl.configs.training import ModelConfig

NormKind = str  # "batch" | "group"


def group_count(channels: int, max_groups: int = 8) -> int:
    """Number of GroupNorm groups: the largest power of two <= max_groups dividing `channels`.

    Why not a fixed 32: dense blocks produce channel counts such as 8 + 3·4 = 20, and GroupNorm
    needs a divisor; small powers of two keep several channels per group at every width.
    """
    groups = max_groups
    while groups > 1 and channels % groups:
        groups //= 2
    return groups


def make_norm(kind: NormKind, channels: int) -> nn.Module:
    """BatchNorm (the paper) or GroupNorm (independent of the per-rank batch size)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class DenseLayer(nn.Sequential):
    """norm → ReLU → k×k conv to `growth_rate` maps → dropout."""

    def __init__(self, in_channels: int, growth_rate: int, kernel_size: int, dropout: float,
                 norm: NormKind) -> None:
        super().__init__(
            make_norm(norm, in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, growth_rate, kernel_size, padding=kernel_size // 2),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        )


class DenseBlock(nn.Module):
    """`num_layers` dense layers; returns input ⊕ new maps, or only the new maps.

    `out_channels` is what forward returns, so the caller can size what follows.
    """

    def __init__(self, in_channels: int, num_layers: int, growth_rate: int, kernel_size: int,
                 dropout: float, norm: NormKind, *, keep_input: bool) -> None:
        super().__init__()
        self.keep_input = keep_input
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, kernel_size, dropout, norm)
            for i in range(num_layers)
        )
        new = num_layers * growth_rate
        self.out_channels = in_channels + new if keep_input else new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new_maps: list[torch.Tensor] = []
        stack = x
        for layer in self.layers:
            out = layer(stack)
            new_maps.append(out)
            stack = torch.cat([stack, out], dim=1)
        return stack if self.keep_input else torch.cat(new_maps, dim=1)


class TransitionDown(nn.Sequential):
    """norm → ReLU → 1×1 conv → dropout → 2×2 max-pool: halves the map, keeps the width."""

    def __init__(self, channels: int, dropout: float, norm: NormKind) -> None:
        super().__init__(
            make_norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.MaxPool2d(2),
        )


class TransitionUp(nn.Module):
    """3×3 transposed conv (stride 2) of the maps coming up, then concatenation with the skip.

    Odd map sizes (e.g. 25 → 12 on the way down) come back one pixel short or long; the upsampled
    maps are padded or cropped to the skip's size so any input size works.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.upsample(x)
        dh, dw = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
        if dh or dw:
            up = F.pad(up, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return torch.cat([up, skip], dim=1)


def with_amplitude(out: torch.Tensor, amplitude: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) maps standardized per window and channel, then mean + exp(log std) · map,
    with (B, 2C) `amplitude` = (means, log stds), all in network units."""
    channels = out.shape[1]
    shape = out.float()
    shape = (shape - shape.mean(dim=(-2, -1), keepdim=True)) / (
        shape.std(dim=(-2, -1), keepdim=True, unbiased=False) + 1e-6)
    mean, log_std = amplitude.float().split(channels, dim=1)
    return (mean[..., None, None] + log_std.clamp(-12, 12).exp()[..., None, None] * shape
            ).to(out.dtype)


class FCDenseNet(nn.Module):
    """(B, in_channels, H, W) → (B, out_channels, *output_size); see the module docstring."""

    def __init__(self, in_channels: int, out_channels: int, config: ModelConfig,
                 output_size: Sequence[int] | None = None) -> None:
        super().__init__()
        n_pool, layers, g = config.n_pool, config.layers_per_block, config.growth_rate
        k, p, norm = config.kernel_size, config.dropout, config.norm
        self.output_size = tuple(output_size) if output_size is not None else None

        self.first_conv = nn.Conv2d(in_channels, config.initial_features, k, padding=k // 2)
        width = config.initial_features
        self.down_blocks = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        skip_widths: list[int] = []
        for i in range(n_pool):
            block = DenseBlock(width, layers[i], g, k, p, norm, keep_input=True)
            self.down_blocks.append(block)
            width = block.out_channels
            skip_widths.append(width)
            self.transitions_down.append(TransitionDown(width, p, norm))

        # Only the bottleneck's new maps go up (unless there is no up path at all).
        self.bottleneck = DenseBlock(width, layers[n_pool], g, k, p, norm, keep_input=n_pool == 0)
        coming_up = self.bottleneck.out_channels

        self.transitions_up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(n_pool):
            self.transitions_up.append(TransitionUp(coming_up, coming_up))
            width = coming_up + skip_widths[n_pool - 1 - i]
            last = i == n_pool - 1
            block = DenseBlock(width, layers[n_pool + 1 + i], g, k, p, norm, keep_input=last)
            self.up_blocks.append(block)
            coming_up = block.out_channels
        self.final_conv = nn.Conv2d(coming_up, out_channels, 1)
        self.thickness_head: nn.Module | None = None
        pooled_width = 2 * self.bottleneck.out_channels
        if config.thickness_head:
            self.thickness_head = nn.Sequential(
                nn.Linear(pooled_width, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))
        self.amplitude_head: nn.Module | None = None
        if config.amplitude_head:
            self.amplitude_head = nn.Sequential(
                nn.Linear(pooled_width, 64), nn.ReLU(inplace=True),
                nn.Linear(64, 2 * out_channels))

    def forward(self, x: torch.Tensor, with_thickness: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The (B, C, H', W') map; with `with_thickness`, also the (B,) thickness output
        (in network units; `CBEDToPotential` converts both)."""
        stack = self.first_conv(x)
        skips: list[torch.Tensor] = []
        for block, down in zip(self.down_blocks, self.transitions_down, strict=True):
            stack = block(stack)
            skips.append(stack)
            stack = down(stack)
        stack = self.bottleneck(stack)
        thickness = None
        pooled = None
        if with_thickness or self.amplitude_head is not None:
            pooled = torch.cat([stack.mean(dim=(-2, -1)), stack.amax(dim=(-2, -1))], dim=1)
        if with_thickness:
            if self.thickness_head is None:
                raise ValueError("this network has no thickness head (model.thickness_head)")
            thickness = self.thickness_head(pooled)[:, 0]
        for up, block in zip(self.transitions_up, self.up_blocks, strict=True):
            stack = block(up(stack, skips.pop()))
        out = self.final_conv(stack)
        if self.output_size is not None and tuple(out.shape[-2:]) != self.output_size:
            out = F.interpolate(out, size=self.output_size, mode="bilinear", align_corners=False)
        if self.amplitude_head is not None:
            assert pooled is not None
            out = with_amplitude(out, self.amplitude_head(pooled))
        if with_thickness:
            assert thickness is not None
            return out, thickness
        return out

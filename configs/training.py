"""Typed configuration of the network (`model:`) and of training (`train:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stemdl.configs.base import StrictModel


class ModelConfig(StrictModel):
    """FC-DenseNet: n_pool down blocks, a bottleneck, n_pool up blocks (2·n_pool+1 blocks)."""

    arrangement: Literal["channels", "scan_pixels"] = Field(
        "channels",
        description="'channels': the P patterns are the input channels (the paper). "
        "'scan_pixels': each probe position is one pixel of a gy×gx image whose channels are "
        "its pooled pattern, upsampled to the target grid.",
    )
    initial_features: int = Field(16, ge=1, le=4096)
    growth_rate: int = Field(8, ge=1, le=1024)
    kernel_size: int = Field(3, ge=1, le=11)
    n_pool: int = Field(2, ge=0, le=6)
    layers_per_block: list[int] = Field(default_factory=lambda: [2, 2, 2, 2, 2])
    dropout: float = Field(0.0, ge=0, lt=1)
    norm: Literal["batch", "group"] = "batch"
    scan_pixel_pool: int = Field(
        4, ge=1, le=64, description="'scan_pixels': average-pool each pattern by this factor."
    )
    thickness_head: bool = Field(
        False, description="Also predict the specimen thickness (Å) of each input window from "
        "the pooled bottleneck (needs physical targets: loader.standardize_targets false). Off "
        "when absent, so configs and checkpoints made before it keep their network.",
    )
    amplitude_head: bool = Field(
        False, description="Physical targets: make the map a standardized shape times an "
        "amplitude. The network's map is standardized over each window (zero mean, unit "
        "variance per channel) and a head on the pooled bottleneck gives the window's mean and "
        "log standard deviation, so the shape is learnt as with standardized targets and the "
        "V·Å scale by the head (needs loader.standardize_targets false).",
    )

    @model_validator(mode="after")
    def _blocks(self) -> ModelConfig:
        if len(self.layers_per_block) != 2 * self.n_pool + 1:
            raise ValueError(
                f"layers_per_block has {len(self.layers_per_block)} entries; n_pool={self.n_pool} "
                f"needs 2*n_pool+1 = {2 * self.n_pool + 1} (down blocks, bottleneck, up blocks)"
            )
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the map size, got {self.kernel_size}")
        if any(n < 1 for n in self.layers_per_block):
            raise ValueError("layers_per_block entries must be >= 1")
        return self


class TrainConfig(StrictModel):
    """Optimisation, precision, checkpoints, communication."""

    seed: int = Field(0, ge=0)
    batch_size: int = Field(4, ge=1, le=65536, description="Per rank.")
    epochs: int = Field(4, ge=1, le=100_000)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    larc: bool = Field(False, description="Layer-wise adaptive rate clipping (the paper).")
    larc_trust: float = Field(0.002, gt=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    decay: Literal["cosine", "step", "none"] = "cosine"
    decay_step_every: int = Field(100, ge=1, description="'step' decay: halve every N steps.")
    grad_clip_norm: float | None = Field(1.0, gt=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="'auto': bf16 on GPU, fp32 on CPU."
    )
    loss: Literal["mse", "l1"] = "mse"
    shape_loss_weight: float = Field(
        1.0, ge=0, le=100, description="Physical targets: weight of a second map term, the "
        "loss of prediction and truth both moved by the truth's per-sample z-score (what "
        "training on standardized targets minimized), beside the loss on the dataset scale; "
        "it weighs a weakly scattering sample as much as a strong one.",
    )
    map_loss: Literal["network_units", "shape_amplitude"] = Field(
        "network_units", description="Physical targets: 'network_units' takes the map's loss "
        "in (V·Å − offset) / scale (plus the shape term above); 'shape_amplitude' splits it into "
        "the loss of the shape (prediction and truth each standardized per window: a "
        "correlation loss, each sample weighted alike, as standardized targets weigh them) "
        "and `amplitude_loss_weight` × the loss of each window's mean and log standard "
        "deviation, so strong scatterers do not dominate the shape's gradient; "
        "shape_loss_weight is then unused. Meant with model.amplitude_head.",
    )
    amplitude_loss_weight: float = Field(
        1.0, ge=0, le=100, description="map_loss 'shape_amplitude': weight of the amplitude "
        "terms (per-window mean and log standard deviation, in network units).",
    )
    thickness_loss_weight: float = Field(
        0.5, ge=0, le=100, description="Weight of the thickness term (the loss of the scaled "
        "thickness, same kind as `loss`) beside the map's, with model.thickness_head.",
    )
    checkpoint_every: int = Field(50, ge=1, description="Steps between checkpoints.")
    validate_every: int = Field(50, ge=1, description="Steps between validations.")
    validate_at_start: bool = Field(
        True, description="Validate the untrained model too (the first point of the curve)."
    )
    log_every: int = Field(10, ge=1)
    group_bytes: int = Field(8 * 2**20, ge=1024, description="Bytes per allreduce group.")
    num_groups: int | None = Field(None, ge=1, description="Instead of group_bytes: N groups.")
    compression: Literal["none", "fp16", "bf16"] = "none"
    channels_last: bool | None = Field(
        None, description="NHWC weights and batches; None: on CUDA only (train/fast_paths.py).")
    compile: bool = Field(
        False, description="Train through torch.compile (fused kernels; compiles at the start).")

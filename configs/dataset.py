"""Typed configuration of the store (`dataset:`) and of the streaming loader (`loader:`).

The `dataset:` section, together with `simulation:`, determines the bytes of a store: a store
records both and refuses to be extended under a different one. The `loader:` section only
changes how stored samples are decoded for training, so it may differ between runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stemdl.configs.base import StrictModel


class ArrayStorage(StrictModel):
    """How one array is stored: dtype and compression."""

    dtype: Literal["float16", "float32"] = "float16"
    codec: Literal["zstd", "blosc-zstd", "blosc-lz4", "none"] = "zstd"
    level: int = Field(3, ge=0, le=22)


class DatasetConfig(StrictModel):
    """Size and layout of a store: N samples in shards of S samples, one chunk per sample."""

    num_samples: int = Field(64, ge=1, le=100_000_000)
    shard_size: int = Field(
        8, ge=1, le=100_000, description="Samples per shard file (Zarr v3 sharding codec)."
    )
    cbed: ArrayStorage = Field(default_factory=ArrayStorage)
    potential: ArrayStorage = Field(default_factory=lambda: ArrayStorage(dtype="float32"))

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)


class LoaderConfig(StrictModel):
    """Decoding of stored samples into network inputs, shuffling, prefetching, augmentation."""

    input_transform: Literal["sqrt_min", "none"] = Field(
        "sqrt_min", description="sqrt(x - min(x)) per pattern before standardizing (the paper)."
    )
    standardize_inputs: bool = Field(True, description="Z-score each pattern.")
    standardize_targets: bool = Field(
        True, description="true: z-score each target map (shape only; no units). false: the "
        "projected potential in V·Å, scaled for the network by one offset and scale per "
        "channel fixed from the training split and stored in the model "
        "(datasets/physical_scale.py). True when absent, so configs and checkpoints made "
        "before it keep their meaning; every preset sets false.",
    )
    shuffle_buffer: int = Field(16, ge=0, le=100_000)
    num_workers: int = Field(1, ge=0, le=64)
    decode_threads: int = Field(
        0, ge=0, le=64, description="Threads that read and decode whole shards ahead inside "
        "the process that iterates the dataset (0: decode inline), for where worker processes "
        "cannot be used; each holds a shard in memory. Worker processes keep up with the raw "
        "read + decompress rate, decode threads do not quite (benchmarks/RESULTS.md, "
        "'Loader throughput').",
    )
    prefetch_factor: int = Field(2, ge=1, le=64)
    pin_memory: bool = True
    dose_e_per_a2: float | None = Field(
        None, gt=0, description="If set, Poisson noise at this electron dose (augmentation)."
    )
    noise: Literal["train_only", "always"] = "train_only"
    augment: Literal["none", "d4"] = Field(
        "none", description="'d4': each training sample is moved by one of the 8 symmetries of "
        "the square, drawn per sample and epoch, applied to the scan grid, every pattern and "
        "the target together (exact for square, odd-sized patterns; see datasets/augment.py).",
    )

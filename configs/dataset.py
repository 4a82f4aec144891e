"""Typed configuration of the store (`dataset:`) and of the streaming loader (`loader:`).

The `dataset:` section, together with `simulation:`, determines the bytes of a store: a store
records both and refuses to be extended under a different one. The `loader:` section only
changes how stored samples are decoded for training, so it may differ between runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stemdl.configs.base import StrictModel
from stemdl.configs.simulation import Range


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


class NuisanceConfig(StrictModel):
    """Measurement nuisances the loader applies to stored patterns (`datasets/nuisances.py`).

    Each is drawn per sample and epoch from a stream seeded by (seed, epoch, sample index,
    nuisance), so a sample gets the same values whatever the batching, and the test split
    gets them the same way when scoring asks for them (`apply: always`, or
    `train.scoring.load_split(..., nuisances=True)`). All are off by default. Why in the
    loader: each is a linear operation on, or noise added to, the recorded intensity, which
    costs a fraction of re-simulating; beam tilt changes the multislice and is not here.
    """

    apply: Literal["train_only", "always"] = Field(
        "train_only", description="'train_only': training split only; 'always': every split.")
    dose_e_per_a2: Range | None = Field(
        None, description="Electron dose over the scanned region, drawn log-uniformly in "
        "[min, max] per sample (e.g. [1e4, 1e6]); Poisson noise at it. Replaces "
        "loader.dose_e_per_a2, which must then be unset.")
    psf: Literal["none", "gaussian", "lorentzian"] = Field(
        "none", description="Detector point-spread function: a Gaussian of standard deviation "
        "`psf_width_px`, or a 2-D Lorentzian (Cauchy) 1/(1 + r²/γ²)^(3/2) of half-width γ = "
        "`psf_width_px`, in stored detector pixels; applied to the expected intensity.")
    psf_width_px: Range = Field(default_factory=lambda: Range(min=0.0, max=0.0))
    source_sigma_a: Range | None = Field(
        None, description="Partial spatial coherence: standard deviation (Å) of the Gaussian "
        "image of the source, drawn uniformly; the 4D data are blurred over the scan positions "
        "by sigma / scan step (edges mirrored, so intensity over the scan is kept).")
    gain_counts_per_electron: Range | None = Field(
        None, description="Detector gain, drawn uniformly per sample (needs a dose).")
    dark_counts: Range | None = Field(
        None, description="Dark level added to every pixel, counts, drawn per sample "
        "(needs a dose).")
    read_noise_counts: float = Field(
        0.0, ge=0, description="Gaussian read noise per pixel, counts (needs a dose).")

    @model_validator(mode="after")
    def _consistent(self) -> NuisanceConfig:
        problems = []
        if self.dose_e_per_a2 is not None and self.dose_e_per_a2.min <= 0:
            problems.append("dose_e_per_a2 must be > 0")
        if self.psf_width_px.min < 0:
            problems.append("psf_width_px must be >= 0")
        if self.psf != "none" and self.psf_width_px.max <= 0:
            problems.append(f"psf {self.psf!r} needs psf_width_px > 0")
        if self.source_sigma_a is not None and self.source_sigma_a.min < 0:
            problems.append("source_sigma_a must be >= 0")
        if self.gain_counts_per_electron is not None and self.gain_counts_per_electron.min <= 0:
            problems.append("gain_counts_per_electron must be > 0")
        counted = (self.gain_counts_per_electron is not None or self.dark_counts is not None
                   or self.read_noise_counts > 0)
        if counted and self.dose_e_per_a2 is None:
            problems.append("gain, dark level and read noise are in detector counts and need "
                            "nuisances.dose_e_per_a2")
        if problems:
            raise ValueError("loader.nuisances: " + "; ".join(problems))
        return self

    @property
    def active(self) -> bool:
        return (self.dose_e_per_a2 is not None or self.psf != "none"
                or self.source_sigma_a is not None or self.gain_counts_per_electron is not None
                or self.dark_counts is not None or self.read_noise_counts > 0)


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
    nuisances: NuisanceConfig = Field(
        default_factory=NuisanceConfig, description="Measurement nuisances (detector PSF, dose "
        "range, gain and dark level, source size), drawn per sample; off by default.")

    @model_validator(mode="after")
    def _one_dose(self) -> LoaderConfig:
        if self.dose_e_per_a2 is not None and self.nuisances.dose_e_per_a2 is not None:
            raise ValueError("set either loader.dose_e_per_a2 (one dose) or "
                             "loader.nuisances.dose_e_per_a2 (a drawn range), not both")
        return self

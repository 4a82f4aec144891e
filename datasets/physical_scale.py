"""The dataset-level scale of the physical targets, fixed from the training split.

Why a dataset-level scale, not a per-sample z-score: a per-sample z-score throws away how
strongly a specimen scatters (every map comes out zero mean, unit variance), so two materials
or two thicknesses cannot be compared. The stored `potential` is the projected potential in
V·Å; the network still works best on numbers of order one, so it learns
(potential − offset) / scale with one offset and scale per target channel (depth section),
the mean and standard deviation over every pixel of every training sample. The thickness
(Å, the per-sample record `thickness_a`) is scaled the same way. The numbers come from the
training split only (the validation and test splits stay unseen) and travel inside the
model (`train.arrangements.CBEDToPotential` buffers, so in every checkpoint), so a prediction
is converted back to V·Å and Å wherever the model is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stemdl.datasets.partition import available_shards, shard_rows
from stemdl.datasets.records import read_fields
from stemdl.datasets.storage import StoreError
from stemdl.datasets.store import StemdlStore, open_stemdl_store


class NoTrainingSamplesError(StoreError):
    """The store holds no usable training sample (in the shards that are done) to fix the
    physical scale from."""


@dataclass(frozen=True)
class PhysicalScale:
    """Offset and scale per target channel (V·Å) and of the thickness (Å)."""

    potential_offset_v_a: tuple[float, ...]
    potential_scale_v_a: tuple[float, ...]
    thickness_offset_a: float
    thickness_scale_a: float
    samples: int


def split_indices(store: StemdlStore, split: str) -> np.ndarray:
    """Global indices of the successfully simulated samples of `split` (sorted)."""
    shards = available_shards(store)
    rows = shard_rows(store, shards, split)
    parts = [store.shard_range(shard)[0] + rows[shard]
             for shard in shards if rows[shard].size]
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def training_scale(store_url: str) -> PhysicalScale:
    """Mean and standard deviation of the training targets, per channel, and of thickness."""
    store = open_stemdl_store(store_url)
    indices = split_indices(store, "train")
    if indices.size == 0:
        raise NoTrainingSamplesError(
            f"{store_url} has no training samples (in the shards that are done) to fix the "
            "physical scale from; finish the store with the same `stemdl simulate` command (it "
            "resumes), or check its `splits` attribute (`stemdl inspect`)")
    array = store.array("potential")
    channels = int(array.shape[1])
    total = np.zeros(channels)
    squares = np.zeros(channels)
    pixels = 0
    for start in range(0, indices.size, 256):  # bounded memory for a large store
        block = np.asarray(array[indices[start:start + 256]], dtype=np.float64)
        total += block.sum(axis=(0, 2, 3))
        squares += np.square(block).sum(axis=(0, 2, 3))
        pixels += block.shape[0] * block.shape[2] * block.shape[3]
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    thickness = read_fields(store, ["thickness_a"], indices)["thickness_a"].astype(np.float64)
    return PhysicalScale(
        potential_offset_v_a=tuple(float(v) for v in mean),
        potential_scale_v_a=tuple(float(max(v, 1e-6)) for v in std),
        thickness_offset_a=float(thickness.mean()),
        thickness_scale_a=float(max(thickness.std(), 1e-6)),
        samples=int(indices.size),
    )


def thickness_by_index(store_url: str) -> np.ndarray:
    """`thickness_a` of every sample of the store, indexed by global sample index (float32)."""
    store = open_stemdl_store(store_url)
    return read_fields(store, ["thickness_a"])["thickness_a"].astype(np.float32)

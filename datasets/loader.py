"""Streaming a (staged or shared) store into PyTorch: `ShardStream` and `make_dataloader`.

`ShardStream` is an `IterableDataset` that reads whole shards (one read per array per shard),
decodes them in the DataLoader worker processes (`datasets/transforms.py`), and yields
`{"cbed": float32 (P, H, W), "potential": float32 (C, H', W'), "index": int}` for the samples
of one split that were simulated successfully.

Partitioning, per-epoch shard order and worker assignment follow `datasets/partition.py`: by
shard, without overlap, deterministic from (seed, epoch, rank). A shuffle buffer of
`loader.shuffle_buffer` samples mixes samples across the shards a worker reads.

Epochs: call `dataset.set_epoch(epoch)` (or `loader.dataset.set_epoch`) before iterating. The
epoch lives in a shared-memory tensor, so persistent DataLoader workers see the new value when
the next iteration starts.

Why it keeps up with a trainer: reads and decoding happen in `num_workers` processes, each
shard is fetched as one object per array and decompressed by Zarr in one call, and the
DataLoader prefetches `prefetch_factor` batches per worker (see
`benchmarks/loader_throughput.py` for the measured rate against raw read + decompress).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datasets.config import LoaderConfig
from datasets.partition import (
    available_shards,
    check_split,
    count_samples,
    epoch_order,
    rank_shards,
    selected_rows,
    worker_shards,
)
from datasets.plan import StoreInfo, open_stemdl_store
from datasets.schema import shard_range
from datasets.transforms import (
    electrons_per_pattern,
    normalize_inputs,
    normalize_targets,
    poisson_noise,
)

Item = dict[str, Any]


@functools.lru_cache(maxsize=8)
def _open(store_url: str) -> StoreInfo:
    """One opened store per worker process (opening reads every array's metadata)."""
    return open_stemdl_store(store_url)


def shuffle_buffer(items: Iterable[Item], size: int, rng: np.random.Generator) -> Iterator[Item]:
    """Yield `items` in a random order using a buffer of `size` (0 or 1: unchanged order)."""
    if size <= 1:
        yield from items
        return
    buffer: list[Item] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = int(rng.integers(size))
        buffer[slot], item = item, buffer[slot]
        yield item
    rng.shuffle(buffer)  # type: ignore[arg-type]
    yield from buffer


class ShardStream(IterableDataset):
    """The samples of one split of a store, for rank `rank` of `world_size` readers."""

    def __init__(self, store_url: str, loader_cfg: LoaderConfig | None = None, *,
                 split: str | None = "train", rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True) -> None:
        super().__init__()
        check_split(split)
        info = open_stemdl_store(store_url)
        self.store_url = info.url
        self.cfg = loader_cfg or LoaderConfig()
        self.split = split
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.shards = rank_shards(available_shards(info), rank, world_size)
        self.num_patterns = info.schema["cbed"].shape[0]
        self.noisy = self.cfg.dose_e_per_a2 is not None and (
            self.cfg.noise == "always" or split == "train")
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Select the shard order and noise of `epoch` (seen by persistent workers too)."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def num_samples(self) -> int:
        """Samples this rank yields per epoch (the same every epoch)."""
        return count_samples(self.store_url, self.split, self.rank, self.world_size)

    def _read_shard(self, info: StoreInfo, shard: int) -> dict[str, np.ndarray]:
        start, stop = shard_range(shard, info.shard_size, info.num_samples)
        names = ["status", "cbed", "potential"] + (["split"] if self.split else [])
        names += ["target_region_a"] if self.noisy else []
        return {name: np.asarray(info.array(name)[start:stop]) for name in names} | {
            "index": np.arange(start, stop)}

    def _samples(self, info: StoreInfo, shards: list[int], epoch: int,
                 rng: np.random.Generator) -> Iterator[Item]:
        for shard in shards:
            block = self._read_shard(info, shard)
            rows = selected_rows(block.get("split", block["status"]), block["status"], self.split)
            if self.shuffle:
                rows = rng.permutation(rows)
            for row in rows:
                yield self._decode(block, int(row), epoch)

    def _decode(self, block: dict[str, np.ndarray], row: int, epoch: int) -> Item:
        index = int(block["index"][row])
        cbed = block["cbed"][row]
        if self.noisy:
            electrons = electrons_per_pattern(self.cfg.dose_e_per_a2,  # type: ignore[arg-type]
                                              block["target_region_a"][row], self.num_patterns)
            cbed = poisson_noise(cbed, electrons, np.random.default_rng([self.seed, epoch, index, 2]))
        inputs = normalize_inputs(cbed, self.cfg.input_transform, self.cfg.standardize_inputs)
        targets = normalize_targets(block["potential"][row], self.cfg.standardize_targets)
        return {"cbed": torch.from_numpy(inputs), "potential": torch.from_numpy(targets),
                "index": index}

    def __iter__(self) -> Iterator[Item]:
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        epoch = self.epoch
        order = epoch_order(self.shards, seed=self.seed, epoch=epoch, rank=self.rank,
                            shuffle=self.shuffle)
        mine = worker_shards(order, worker_id, num_workers)
        if not mine:
            return iter(())
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker_id, 1])
        samples = self._samples(_open(self.store_url), mine, epoch, rng)
        size = self.cfg.shuffle_buffer if self.shuffle else 0
        return shuffle_buffer(samples, size, rng)


def make_dataloader(store_url: str, loader_cfg: LoaderConfig | None = None, *,
                    split: str | None, batch_size: int, rank: int = 0, world_size: int = 1,
                    seed: int = 0, shuffle: bool = True, drop_last: bool = True) -> DataLoader:
    """A DataLoader over `ShardStream`: worker processes, prefetch, persistent workers, and
    pinned memory when CUDA is available and `loader_cfg.pin_memory` is set."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = loader_cfg or LoaderConfig()
    dataset = ShardStream(store_url, cfg, split=split, rank=rank, world_size=world_size,
                          seed=seed, shuffle=shuffle)
    workers = cfg.num_workers
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": cfg.prefetch_factor}
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, drop_last=drop_last,
                      pin_memory=cfg.pin_memory and torch.cuda.is_available(), **extra)

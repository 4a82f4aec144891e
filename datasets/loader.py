"""Streaming a (staged or shared) store into PyTorch: `ShardStream` and `make_dataloader`.

`ShardStream` is an `IterableDataset` that reads whole shard files (one read per array per
shard, decoded by `datasets/shard_files.py`, checksums verified), normalizes them in the
DataLoader worker processes (`datasets/transforms.py`), and yields
`{"cbed": float32 (P, H, W), "potential": float32 (C, H', W'), "index": int}` for the samples
of one split that were simulated successfully.

Partitioning, per-epoch shard order and worker assignment follow `datasets/partition.py`: by
shard, without overlap, deterministic from (seed, epoch, rank). A shuffle buffer of
`loader.shuffle_buffer` samples mixes samples across the shards a worker reads.

Epochs: call `dataset.set_epoch(epoch)` (or `loader.dataset.set_epoch`) before iterating. The
epoch lives in a shared-memory tensor, so persistent DataLoader workers see the new value when
the next iteration starts.

Why it keeps up with a trainer: reads and decoding happen in `num_workers` processes, each
shard is fetched as one object per array and its chunks decompressed in a plain loop, the
normalization is vectorized over the shard's samples, and the DataLoader prefetches `prefetch_factor` batches per worker (see
`benchmarks/loader_throughput.py` for the measured rate against raw read + decompress).
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datasets.config import LoaderConfig
from datasets.partition import (
    available_shards,
    check_split,
    epoch_order,
    rank_shards,
    sample_indices,
    selected_rows,
    worker_shards,
)
from datasets.plan import StoreInfo, open_stemdl_store
from datasets.records import read_fields
from datasets.schema import shard_range
from datasets.shard_files import ShardFileDecoder
from datasets.storage import file_url, filesystem, shard_key
from datasets.transforms import (
    electrons_per_pattern,
    normalize_inputs,
    normalize_targets,
    poisson_noise,
    to_float32,
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


class _ShardReader:
    """Reads the selected rows of one shard's `cbed` and `potential` in a worker process."""

    def __init__(self, info: StoreInfo) -> None:
        self.info = info
        self.fs, _ = filesystem(info.url)
        self.decoders = {name: ShardFileDecoder(info.array(name)) for name in ("cbed", "potential")}

    def read(self, name: str, shard: int, rows: np.ndarray) -> np.ndarray:
        array = self.info.array(name)
        decoder = self.decoders[name]
        if not decoder.supported:
            start, stop = shard_range(shard, self.info.shard_size, self.info.num_samples)
            return np.asarray(array[start:stop])[rows]
        path = file_url(self.info.url, shard_key(array, shard))
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:  # never written: all fill values, as Zarr would read it
            return np.full((len(rows), *array.shape[1:]), array.fill_value, dtype=array.dtype)
        return decoder.decode(data, rows, path)


class ShardStream(IterableDataset):
    """The samples of one split of a store, for rank `rank` of `world_size` readers.

    Which rows of each shard to yield (status ok, requested split) is read once, in the
    constructor, from the small `status`/`split` columns of this rank's shards; workers then
    read only `cbed` and `potential`, one shard file each.
    """

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
        self.shard_size, self.num_samples_in_store = info.shard_size, info.num_samples
        self.noisy = self.cfg.dose_e_per_a2 is not None and (
            self.cfg.noise == "always" or split == "train")
        self._rows, self._regions = self._plan_rows(info)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def _plan_rows(self, info: StoreInfo) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        indices = sample_indices(info, self.shards)
        rows: dict[int, np.ndarray] = {}
        regions: dict[int, np.ndarray] = {}
        if indices.size == 0:
            return rows, regions
        names = ["status"] + (["split"] if self.split else []) + (
            ["target_region_a"] if self.noisy else [])
        values = read_fields(info, names, indices)
        status = values["status"]
        splits = values.get("split", status)
        region = values.get("target_region_a")
        offset = 0
        for shard in self.shards:
            start, stop = shard_range(shard, info.shard_size, info.num_samples)
            span = slice(offset, offset + stop - start)
            rows[shard] = selected_rows(splits[span], status[span], self.split)
            if region is not None:
                regions[shard] = region[span]
            offset += stop - start
        return rows, regions

    def set_epoch(self, epoch: int) -> None:
        """Select the shard order and noise of `epoch` (seen by persistent workers too)."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def num_samples(self) -> int:
        """Samples this rank yields per epoch (the same every epoch)."""
        return int(sum(len(rows) for rows in self._rows.values()))

    def _decode_shard(self, reader: _ShardReader, shard: int, rows: np.ndarray,
                      epoch: int) -> list[Item]:
        start, _ = shard_range(shard, reader.info.shard_size, reader.info.num_samples)
        cbed = self._noisy(to_float32(reader.read("cbed", shard, rows)), shard, rows, epoch)
        cbed = normalize_inputs(cbed, self.cfg.input_transform, self.cfg.standardize_inputs,
                                inplace=True)
        potential = normalize_targets(to_float32(reader.read("potential", shard, rows)),
                                      self.cfg.standardize_targets, inplace=True)
        inputs, targets = torch.from_numpy(cbed), torch.from_numpy(potential)
        return [{"cbed": inputs[slot], "potential": targets[slot], "index": start + int(row)}
                for slot, row in enumerate(rows)]

    def _noisy(self, cbed: np.ndarray, shard: int, rows: np.ndarray, epoch: int) -> np.ndarray:
        """Poisson noise per sample (seeded by seed, epoch, global index), if configured."""
        if not self.noisy:
            return cbed
        start, _ = shard_range(shard, self.shard_size, self.num_samples_in_store)
        for slot, row in enumerate(rows):
            electrons = electrons_per_pattern(self.cfg.dose_e_per_a2,  # type: ignore[arg-type]
                                              self._regions[shard][row], self.num_patterns)
            rng = np.random.default_rng([self.seed, epoch, start + int(row), 2])
            cbed[slot] = poisson_noise(cbed[slot], electrons, rng)
        return cbed

    def _samples(self, shards: list[int], epoch: int, rng: np.random.Generator) -> Iterator[Item]:
        """Decoded samples of `shards` in order; with `decode_threads`, shards are read and
        decoded ahead in a thread pool (zstd, NumPy and torch release the GIL)."""
        reader = _ShardReader(_open(self.store_url))
        jobs = []
        for shard in shards:
            rows = self._rows[shard]
            if rows.size:
                jobs.append((shard, rng.permutation(rows) if self.shuffle else rows))
        threads = self.cfg.decode_threads
        if threads <= 0:
            for shard, rows in jobs:
                yield from self._decode_shard(reader, shard, rows, epoch)
            return
        queue = iter(jobs)
        with ThreadPoolExecutor(threads, thread_name_prefix="stemdl-decode") as pool:
            pending: deque[Future[list[Item]]] = deque(
                pool.submit(self._decode_shard, reader, shard, rows, epoch)
                for shard, rows in itertools.islice(queue, threads * self.cfg.prefetch_factor))
            try:
                while pending:
                    items = pending.popleft().result()
                    for shard, rows in itertools.islice(queue, 1):
                        pending.append(pool.submit(self._decode_shard, reader, shard, rows, epoch))
                    yield from items
            finally:
                for future in pending:
                    future.cancel()

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
        samples = self._samples(mine, epoch, rng)
        size = self.cfg.shuffle_buffer if self.shuffle else 0
        return shuffle_buffer(samples, size, rng)


def collate_samples(items: list[Item]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch with NumPy, not `torch.stack`.

    Why: torch's copy runs on its intra-op thread pool, which collapses when the cores are
    busy (on a loaded 2-core VM `default_collate` fell from ~700 to ~100 batches of samples
    per second); NumPy's copy is single-threaded and predictable. In a worker process the batch
    is written straight into shared memory, as `default_collate` does, so it is not copied
    again on its way to the trainer.
    """
    in_worker = get_worker_info() is not None
    batch: dict[str, torch.Tensor] = {}
    for key in ("cbed", "potential"):
        first = items[0][key]
        out = torch.empty((len(items), *first.shape), dtype=first.dtype)
        if in_worker:
            out.share_memory_()
        np.stack([item[key].numpy() for item in items], out=out.numpy())
        batch[key] = out
    batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.int64)
    return batch


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
                      collate_fn=collate_samples,
                      pin_memory=cfg.pin_memory and torch.cuda.is_available(), **extra)

"""Streaming a (staged or shared) store into PyTorch: `ShardStream` and `make_dataloader`.

`ShardStream` is an `IterableDataset` that reads shard files (a small one in one request, a
large one sample by sample; decoded by `datasets/shard_files.py`, checksums verified) in the
DataLoader worker processes, and yields, normalized as `datasets/transforms.py` says,
`{"cbed": float32 (P, H, W), "potential": float32 (C, H', W'), "index": int}` for the samples
of one split that were simulated successfully; with `batch_size` it yields batches of them
(`make_dataloader` does this, with `DataLoader(batch_size=None)`).

Partitioning, per-epoch shard order and worker assignment follow `datasets/partition.py`: by
shard, without overlap, deterministic from (seed, epoch, rank). A shuffle buffer of
`loader.shuffle_buffer` samples mixes samples across the shards a worker reads.

Epochs: call `dataset.set_epoch(epoch)` (or `loader.dataset.set_epoch`) before iterating. The
epoch lives in a shared-memory tensor, so persistent DataLoader workers see the new value when
the next iteration starts.

Why it keeps up with a trainer: reads and decoding happen in `num_workers` processes, a
small shard is fetched as one object per array, chunks are decompressed straight into their
sample's array, samples wait in the shuffle buffer in their stored dtype, and each one is
written once, widened to float32 by torch's vectorized copy and then normalized in place
by a fused kernel, straight into its place in the batch: a slot of the worker's shared-memory
batch ring (`datasets/batch_ring.py`, which owns the slots' life-cycle), handed to the trainer
as a slot number. The DataLoader prefetches `prefetch_factor` batches per worker (see
`benchmarks/loader_throughput.py` for the measured rate against raw read + decompress).
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from stemdl.configs.dataset import LoaderConfig
from stemdl.datasets.augment import D4_SIZE, apply_d4_inplace, check_d4
from stemdl.datasets.batch_ring import SLOT_KEY, BatchRing, RingLoader
from stemdl.datasets.checksum import sample_crc32c
from stemdl.datasets.integrity import partial_note, require_complete, require_files
from stemdl.datasets.nuisances import DrawnNuisances, apply_nuisances, draw_nuisances
from stemdl.datasets.partition import (
    available_shards,
    check_split,
    epoch_order,
    rank_shards,
    sample_indices,
    shard_rows,
    worker_shards,
)
from stemdl.datasets.records import read_fields
from stemdl.datasets.shard_files import (
    WHOLE_FILE_BYTES,
    ShardDecodeError,
    ShardFileDecoder,
    ShardFileReader,
)
from stemdl.datasets.storage import file_url, filesystem, shard_key
from stemdl.datasets.store import StemdlStore, open_stemdl_store
from stemdl.datasets.transforms import (
    electrons_per_pattern,
    normalize_inputs,
    normalize_targets,
    poisson_noise,
    to_float32,
)

Item = dict[str, Any]
ELECTRONS_KEY = "_electrons"  # per stored sample, when Poisson noise is configured


@functools.lru_cache(maxsize=8)
def _open(store_url: str) -> StemdlStore:
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
    """Opens one shard's `cbed` or `potential` for reading samples one at a time, in a worker
    process (`ShardFileReader`; through Zarr for a layout it does not handle, or when
    `zarr_reads`: Zarr's own reads, which `benchmarks/loader_throughput.py` times against
    the hand decoder)."""

    def __init__(self, store: StemdlStore, zarr_reads: bool = False) -> None:
        self.store = store
        self.fs, _ = filesystem(store.url)
        self.decoders = {name: ShardFileDecoder(store.array(name))
                         for name in ("cbed", "potential")}
        self.zarr_reads = zarr_reads

    def open(self, name: str, shard: int) -> Callable[[int], np.ndarray]:
        """`sample(row)`: row `row` of the shard, decoded, in the stored dtype."""
        array = self.store.array(name)
        decoder = self.decoders[name]
        if self.zarr_reads and decoder.supported and decoder.samples_bytes <= WHOLE_FILE_BYTES:
            # Zarr's best case for a small shard: the whole shard in one read, as the hand
            # decoder fetches it.
            start, stop = self.store.shard_range(shard)
            block = np.asarray(array[start:stop])
            return lambda row: block[int(row)]
        if self.zarr_reads or not decoder.supported:
            start, _ = self.store.shard_range(shard)
            return lambda row: np.asarray(array[start + int(row)])
        return ShardFileReader(decoder, self.fs,
                               file_url(self.store.url, shard_key(array, shard))).sample


class ShardStream(IterableDataset):
    """The samples of one split of a store, for rank `rank` of `world_size` readers.

    Which rows of each shard to yield (status ok, requested split) is read once, in the
    constructor, from the small `status`/`split` columns of this rank's shards; workers then
    read only `cbed` and `potential`, one shard file each.
    """

    # Read samples through Zarr (`array[start:stop]`) instead of `datasets/shard_files.py`;
    # only `benchmarks/loader_throughput.py` sets it, to time one against the other.
    zarr_reads: bool = False

    def __init__(self, store_url: str, loader_cfg: LoaderConfig | None = None, *,
                 split: str | None = "train", rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, batch_size: int | None = None,
                 drop_last: bool = False, allow_partial: bool = False) -> None:
        super().__init__()
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_split(split)
        store = open_stemdl_store(store_url)
        # Trust nothing: an unfinished store is refused (unless allowed, and then said), and
        # so is a done shard whose file is gone (Zarr would read it as zeros).
        missing = require_complete(store, allow_partial=allow_partial)
        self.partial_note = partial_note(store, missing) if missing else None
        self.store_url = store.url
        self.loader_cfg = loader_cfg or LoaderConfig()
        self.split = split
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.shards = rank_shards(available_shards(store), rank, world_size)
        self.num_patterns = store.schema["cbed"].shape[0]
        self.shard_size, self.num_samples_in_store = store.shard_size, store.num_samples
        self.noisy = self.loader_cfg.dose_e_per_a2 is not None and (
            self.loader_cfg.noise == "always" or split == "train")
        self.augment = self.loader_cfg.augment == "d4" and split == "train"
        nuisances = self.loader_cfg.nuisances
        self.nuisances_on = nuisances.active and (nuisances.apply == "always"
                                                  or split == "train")
        sim = store.config.simulation
        self.scan_gpts = tuple(sim.scan.gpts)
        side = sim.scan.side_a(sim.cell_xy_a)
        self.scan_step_a = (side / self.scan_gpts[0], side / self.scan_gpts[1])
        if self.augment:
            check_d4(self.scan_gpts, tuple(sim.detector.pattern_px), sim.detector.binning,
                     tuple(sim.target.target_px))
        self._rows = shard_rows(store, self.shards, split)
        require_files(store, [shard for shard, rows in self._rows.items() if rows.size])
        self._crc = self._checksums(store)
        self._regions = self._target_regions(store)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.batch_size, self.drop_last = batch_size, drop_last
        # Per-sample shapes, from the store's config by the one route a model is sized by too.
        shape = sim.sample_shape
        self.sample_shapes = {"cbed": shape.input_shape, "potential": shape.target_shape}
        # Batches from worker processes travel through this ring (`datasets/batch_ring.py`).
        self.ring = BatchRing(self.loader_cfg.num_workers, batch_size, self.sample_shapes)

    def _target_regions(self, store: StemdlStore) -> dict[int, np.ndarray]:
        """`target_region_a` by global sample index, for the dose of Poisson noise."""
        needs = self.noisy or (self.nuisances_on and self.loader_cfg.nuisances.dose_e_per_a2 is not None)
        if not needs or not self.shards:
            return {}
        indices = sample_indices(store, self.shards)
        regions = read_fields(store, ["target_region_a"], indices)["target_region_a"]
        return {int(index): region for index, region in zip(indices, regions, strict=True)}

    def _checksums(self, store: StemdlStore) -> dict[str, dict[int, int]]:
        """The recorded CRC-32C of `cbed` and `potential` by global sample index, for the
        samples this rank reads: every decoded sample is checked against them, so lost or
        overwritten data stops the run instead of being trained on."""
        indices = sample_indices(store, self.shards)
        if indices.size == 0:
            return {"cbed": {}, "potential": {}}
        values = read_fields(store, ["cbed_crc32c", "potential_crc32c"], indices)
        return {name: dict(zip(indices.tolist(), values[f"{name}_crc32c"].tolist(), strict=True))
                for name in ("cbed", "potential")}

    def _checked(self, name: str, index: int, sample: np.ndarray, path: str) -> np.ndarray:
        if sample_crc32c(sample) != self._crc[name][index]:
            raise ShardDecodeError(f"{path}: sample {index} of {name} does not match its recorded "
                                   "CRC-32C (lost or overwritten); run `stemdl verify --repair`")
        return sample

    def set_epoch(self, epoch: int) -> None:
        """Select the shard order and noise of `epoch` (seen by persistent workers too)."""
        self._epoch[0] = int(epoch)

    def nuisances(self, index: int, epoch: int | None = None) -> DrawnNuisances | None:
        """The nuisances sample `index` gets in `epoch` (default: the current one), or None
        where this split gets none: what the loader applied, recomputed from the seeds."""
        if not self.nuisances_on:
            return None
        return draw_nuisances(self.loader_cfg.nuisances, self.seed,
                              self.epoch if epoch is None else epoch, int(index))

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def num_samples(self) -> int:
        """Samples this rank yields per epoch (the same every epoch)."""
        return int(sum(len(rows) for rows in self._rows.values()))

    def batches_per_epoch(self, epoch: int) -> int:
        """Batches this rank yields in `epoch` (needs `batch_size`), computed without reading.

        Why not samples // batch_size: each DataLoader worker batches the shards it reads
        (as a DataLoader does for an iterable dataset), so with `drop_last` every worker drops
        its own short batch, and which shards a worker gets changes with the epoch's order. A
        trainer that must take the same number of steps on every rank asks this instead."""
        if self.batch_size is None:
            raise ValueError("batches_per_epoch needs a batch_size")
        order = epoch_order(self.shards, seed=self.seed, epoch=epoch, rank=self.rank,
                            shuffle=self.shuffle)
        workers = max(self.loader_cfg.num_workers, 1)
        batches = 0
        for worker in range(workers):
            samples = sum(len(self._rows[shard]) for shard in worker_shards(order, worker, workers))
            batches += (samples // self.batch_size if self.drop_last
                        else -(-samples // self.batch_size))
        return batches

    def _decode_shard(self, reader: _ShardReader, shard: int, rows: np.ndarray) -> Iterator[Item]:
        """The samples at `rows` of `shard` as stored (dtype and values), decoded one at a
        time as they are asked for (a large shard is never in memory whole); `_finalize`
        makes network inputs of them when they are batched."""
        start, _ = reader.store.shard_range(shard)
        cbed, potential = reader.open("cbed", shard), reader.open("potential", shard)
        where = {name: file_url(reader.store.url, shard_key(reader.store.array(name), shard))
                 for name in ("cbed", "potential")}
        for row in rows:
            index = start + int(row)
            item = {"cbed": self._checked("cbed", index, cbed(row), where["cbed"]),
                    "potential": self._checked("potential", index, potential(row),
                                               where["potential"]),
                    "index": index}
            if self.noisy:
                item[ELECTRONS_KEY] = electrons_per_pattern(
                    self.loader_cfg.dose_e_per_a2,  # type: ignore[arg-type]
                    self._regions[item["index"]], self.num_patterns)
            yield item

    def _finalize(self, item: Item, cbed: np.ndarray, potential: np.ndarray, epoch: int) -> None:
        """Write the network input and target of stored `item` into `cbed` and `potential`
        (C-contiguous float32, e.g. its place in a batch): float32, then Poisson noise (if
        configured: seeded by seed, epoch and the sample's global index, so the same whatever
        the batching), or the measurement nuisances of `loader.nuisances`
        (`datasets/nuisances.py`, drawn the same way), then the input and target
        normalization, in place, then (training, with `augment: d4`) one symmetry of the
        square, drawn the same way."""
        to_float32(item["cbed"], out=cbed)
        if self.nuisances_on:
            index = int(item["index"])
            cbed[...] = apply_nuisances(
                cbed, draw_nuisances(self.loader_cfg.nuisances, self.seed, epoch, index),
                scan_gpts=self.scan_gpts, step_a=self.scan_step_a,
                target_region_a=self._regions.get(index), seed=self.seed, epoch=epoch,
                index=index)
        electrons = item.get(ELECTRONS_KEY)
        if electrons is not None:
            rng = np.random.default_rng([self.seed, epoch, int(item["index"]), 2])
            cbed[...] = poisson_noise(cbed, electrons, rng)
        normalize_inputs(cbed, self.loader_cfg.input_transform, self.loader_cfg.standardize_inputs,
                         inplace=True)
        to_float32(item["potential"], out=potential)
        normalize_targets(potential, self.loader_cfg.standardize_targets, inplace=True)
        if self.augment:
            op = int(np.random.default_rng([self.seed, epoch, int(item["index"]), 3])
                     .integers(D4_SIZE))
            apply_d4_inplace(cbed, potential, self.scan_gpts, op)

    def _finalized(self, items: list[Item], epoch: int,
                   out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The batch of stored `items`, finalized into `out` (or new tensors) one sample at a
        time: each sample is written once, where the trainer will read it."""
        if out is None:
            out = {key: torch.empty((len(items), *self.sample_shapes[key]), dtype=torch.float32)
                   for key in ("cbed", "potential")}
        cbed, potential = out["cbed"].numpy(), out["potential"].numpy()
        for slot, item in enumerate(items):
            self._finalize(item, cbed[slot], potential[slot], epoch)
        return {"cbed": out["cbed"], "potential": out["potential"],
                "index": torch.tensor([int(item["index"]) for item in items], dtype=torch.int64)}

    def _samples(self, shards: list[int], rng: np.random.Generator) -> Iterator[Item]:
        """Stored samples of `shards` in order; with `decode_threads`, whole shards are read
        and decompressed ahead in a thread pool (file reads and zstd release the GIL)."""
        reader = _ShardReader(_open(self.store_url), self.zarr_reads)
        jobs = []
        for shard in shards:
            rows = self._rows[shard]
            if rows.size:
                jobs.append((shard, rng.permutation(rows) if self.shuffle else rows))
        threads = self.loader_cfg.decode_threads
        if threads <= 0:
            for shard, rows in jobs:
                yield from self._decode_shard(reader, shard, rows)
            return

        def decode(shard: int, rows: np.ndarray) -> list[Item]:
            return list(self._decode_shard(reader, shard, rows))

        queue = iter(jobs)
        with ThreadPoolExecutor(threads, thread_name_prefix="stemdl-decode") as pool:
            pending: deque[Future[list[Item]]] = deque(
                pool.submit(decode, shard, rows)
                for shard, rows in itertools.islice(queue, threads * self.loader_cfg.prefetch_factor))
            try:
                while pending:
                    items = pending.popleft().result()
                    for shard, rows in itertools.islice(queue, 1):
                        pending.append(pool.submit(decode, shard, rows))
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
        samples = self._samples(mine, rng)
        size = self.loader_cfg.shuffle_buffer if self.shuffle else 0
        samples = shuffle_buffer(samples, size, rng)
        if self.batch_size is None:
            return self._single(samples, epoch)
        generation = int(self.ring.generation[0])  # read once: a reset iteration keeps its own
        return self._batches(samples, epoch, worker_id if worker else None, generation)

    def _single(self, samples: Iterator[Item], epoch: int) -> Iterator[Item]:
        """Finalized samples one at a time (no `batch_size`)."""
        for item in samples:
            batch = self._finalized([item], epoch)
            yield {"cbed": batch["cbed"][0], "potential": batch["potential"][0],
                   "index": int(item["index"])}

    def _batches(self, samples: Iterator[Item], epoch: int, worker_id: int | None,
                 generation: int) -> Iterator[Item]:
        """Batches of `batch_size` samples (the last short one unless `drop_last`): in a
        worker process written into a reused shared-memory buffer, so a sample costs no
        copy beyond its finalization and no fresh pages (see `datasets/batch_ring.py`); in the
        iterating process into new tensors."""
        while True:
            items = list(itertools.islice(samples, self.batch_size))
            if not items or (self.drop_last and len(items) < self.batch_size):  # type: ignore[operator]
                return
            if worker_id is None:
                yield self._finalized(items, epoch)
                continue
            slot, out = self.ring.acquire(worker_id, len(items), generation)
            batch = self._finalized(items, epoch, out)
            if slot >= 0 and self.ring.shared:
                # The main process already maps this slot: send only its number, no shared
                # storage (each costs a handshake with this process, which waits for our GIL).
                yield self.ring.message(slot, batch)
                continue
            batch[SLOT_KEY] = slot
            yield batch


def make_dataloader(store_url: str, loader_cfg: LoaderConfig | None = None, *,
                    split: str | None, batch_size: int, rank: int = 0, world_size: int = 1,
                    seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                    allow_partial: bool = False) -> DataLoader:
    """A DataLoader over `ShardStream`: worker processes, prefetch, persistent workers, and
    pinned memory when CUDA is available and `loader_cfg.pin_memory` is set. An incomplete
    store is refused unless `allow_partial` (then `loader.dataset.partial_note` says so)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = loader_cfg or LoaderConfig()
    dataset = ShardStream(store_url, cfg, split=split, rank=rank, world_size=world_size,
                          seed=seed, shuffle=shuffle, batch_size=batch_size, drop_last=drop_last,
                          allow_partial=allow_partial)
    workers = cfg.num_workers
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": cfg.prefetch_factor}
    # batch_size=None: the dataset batches (per worker, as a DataLoader does for an iterable
    # dataset, so drop_last and the partitioning are unchanged) into its shared-memory ring.
    return RingLoader(dataset, batch_size=None, num_workers=workers,
                       pin_memory=cfg.pin_memory and torch.cuda.is_available(), **extra)

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
by a fused kernel, straight into its place in the batch: a ring of reused shared-memory
buffers per worker (`_RingLoader`: fresh shared memory per batch costs a page fault per
4 KiB), handed to the trainer as a slot number. The DataLoader prefetches `prefetch_factor`
batches per worker (see `benchmarks/loader_throughput.py` for the measured rate against raw
read + decompress).
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
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from stemdl.configs.dataset import LoaderConfig
from stemdl.datasets.augment import D4_SIZE, apply_d4_inplace, check_d4
from stemdl.datasets.checksum import sample_crc32c
from stemdl.datasets.integrity import partial_note, require_complete, require_files
from stemdl.datasets.partition import (
    available_shards,
    check_split,
    epoch_order,
    rank_shards,
    sample_indices,
    shard_rows,
    worker_shards,
)
from stemdl.datasets.plan import StoreInfo, open_stemdl_store
from stemdl.datasets.records import read_fields
from stemdl.datasets.schema import shard_range
from stemdl.datasets.shard_files import ShardDecodeError, ShardFileDecoder, ShardFileReader
from stemdl.datasets.storage import file_url, filesystem, shard_key
from stemdl.datasets.transforms import (
    electrons_per_pattern,
    normalize_inputs,
    normalize_targets,
    poisson_noise,
    to_float32,
)

Item = dict[str, Any]
# Shared-memory batch buffers per worker process, each allocated on first use: prefetch_factor
# batches may wait in the queue, one is with the trainer, one is being filled, so about
# prefetch_factor + 2 get allocated; the rest is slack for a trainer that keeps batches longer
# (beyond that the worker falls back to fresh memory, never waits).
RING_SLOTS = 8
SLOT_KEY = "_ring_slot"
SIZE_KEY = "_ring_size"
ELECTRONS_KEY = "_electrons"  # per stored sample, when Poisson noise is configured


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
    """Opens one shard's `cbed` or `potential` for reading samples one at a time, in a worker
    process (`ShardFileReader`; through Zarr for a layout it does not handle)."""

    def __init__(self, info: StoreInfo) -> None:
        self.info = info
        self.fs, _ = filesystem(info.url)
        self.decoders = {name: ShardFileDecoder(info.array(name)) for name in ("cbed", "potential")}

    def open(self, name: str, shard: int) -> Callable[[int], np.ndarray]:
        """`sample(row)`: row `row` of the shard, decoded, in the stored dtype."""
        array = self.info.array(name)
        decoder = self.decoders[name]
        if not decoder.supported:
            start, _ = shard_range(shard, self.info.shard_size, self.info.num_samples)
            return lambda row: np.asarray(array[start + int(row)])
        return ShardFileReader(decoder, self.fs, file_url(self.info.url, shard_key(array, shard))).sample


class ShardStream(IterableDataset):
    """The samples of one split of a store, for rank `rank` of `world_size` readers.

    Which rows of each shard to yield (status ok, requested split) is read once, in the
    constructor, from the small `status`/`split` columns of this rank's shards; workers then
    read only `cbed` and `potential`, one shard file each.
    """

    def __init__(self, store_url: str, loader_cfg: LoaderConfig | None = None, *,
                 split: str | None = "train", rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, batch_size: int | None = None,
                 drop_last: bool = False, allow_partial: bool = False) -> None:
        super().__init__()
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_split(split)
        info = open_stemdl_store(store_url)
        # Trust nothing: an unfinished store is refused (unless allowed, and then said), and
        # so is a done shard whose file is gone (Zarr would read it as zeros).
        missing = require_complete(info, allow_partial=allow_partial)
        self.partial_note = partial_note(info, missing) if missing else None
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
        self.augment = self.cfg.augment == "d4" and split == "train"
        sim = info.config.simulation
        self.scan_gpts = tuple(sim.scan.gpts)
        if self.augment:
            check_d4(self.scan_gpts, tuple(sim.detector.pattern_px), sim.detector.binning,
                     tuple(sim.target.target_px))
        self._rows = shard_rows(info, self.shards, split)
        require_files(info, [shard for shard, rows in self._rows.items() if rows.size])
        self._crc = self._checksums(info)
        self._regions = self._target_regions(info)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.batch_size, self.drop_last = batch_size, drop_last
        # Batches from worker processes travel in a ring of RING_SLOTS shared-memory buffers
        # per worker; busy[worker * RING_SLOTS + slot] is 1 from when the worker fills a slot
        # until the main process has dropped every reference to the batch (`_release`).
        self._busy = torch.zeros(max(self.cfg.num_workers, 1) * RING_SLOTS,
                                 dtype=torch.int8).share_memory_()
        self._ring: list[dict[str, torch.Tensor]] | None = None  # per worker, made lazily
        # The ring made by the main process before the workers start (`_share_ring`), as
        # (cbed, potential) shared tensors per slot; the main process also keeps NumPy views.
        self._shared_ring: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._shared_views: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._sample_shapes = {"cbed": tuple(info.schema["cbed"].shape),
                               "potential": tuple(info.schema["potential"].shape)}
        self._generation = torch.ones(1, dtype=torch.int8).share_memory_()

    def _target_regions(self, info: StoreInfo) -> dict[int, np.ndarray]:
        """`target_region_a` by global sample index, for the dose of Poisson noise."""
        if not self.noisy or not self.shards:
            return {}
        indices = sample_indices(info, self.shards)
        regions = read_fields(info, ["target_region_a"], indices)["target_region_a"]
        return {int(index): region for index, region in zip(indices, regions, strict=True)}

    def _checksums(self, info: StoreInfo) -> dict[str, dict[int, int]]:
        """The recorded CRC-32C of `cbed` and `potential` by global sample index, for the
        samples this rank reads: every decoded sample is checked against them, so lost or
        overwritten data stops the run instead of being trained on."""
        indices = sample_indices(info, self.shards)
        if indices.size == 0:
            return {"cbed": {}, "potential": {}}
        values = read_fields(info, ["cbed_crc32c", "potential_crc32c"], indices)
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
        workers = max(self.cfg.num_workers, 1)
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
        start, _ = shard_range(shard, reader.info.shard_size, reader.info.num_samples)
        cbed, potential = reader.open("cbed", shard), reader.open("potential", shard)
        where = {name: file_url(reader.info.url, shard_key(reader.info.array(name), shard))
                 for name in ("cbed", "potential")}
        for row in rows:
            index = start + int(row)
            item = {"cbed": self._checked("cbed", index, cbed(row), where["cbed"]),
                    "potential": self._checked("potential", index, potential(row),
                                               where["potential"]),
                    "index": index}
            if self.noisy:
                item[ELECTRONS_KEY] = electrons_per_pattern(
                    self.cfg.dose_e_per_a2,  # type: ignore[arg-type]
                    self._regions[item["index"]], self.num_patterns)
            yield item

    def _finalize(self, item: Item, cbed: np.ndarray, potential: np.ndarray, epoch: int) -> None:
        """Write the network input and target of stored `item` into `cbed` and `potential`
        (C-contiguous float32, e.g. its place in a batch): float32, then Poisson noise (if
        configured: seeded by seed, epoch and the sample's global index, so the same whatever
        the batching), then the input and target normalization, in place, then (training, with
        `augment: d4`) one symmetry of the square, drawn the same way."""
        to_float32(item["cbed"], out=cbed)
        electrons = item.get(ELECTRONS_KEY)
        if electrons is not None:
            rng = np.random.default_rng([self.seed, epoch, int(item["index"]), 2])
            cbed[...] = poisson_noise(cbed, electrons, rng)
        normalize_inputs(cbed, self.cfg.input_transform, self.cfg.standardize_inputs,
                         inplace=True)
        to_float32(item["potential"], out=potential)
        normalize_targets(potential, self.cfg.standardize_targets, inplace=True)
        if self.augment:
            op = int(np.random.default_rng([self.seed, epoch, int(item["index"]), 3])
                     .integers(D4_SIZE))
            apply_d4_inplace(cbed, potential, self.scan_gpts, op)

    def _finalized(self, items: list[Item], epoch: int,
                   out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The batch of stored `items`, finalized into `out` (or new tensors) one sample at a
        time: each sample is written once, where the trainer will read it."""
        if out is None:
            out = {key: torch.empty((len(items), *self._sample_shapes[key]), dtype=torch.float32)
                   for key in ("cbed", "potential")}
        cbed, potential = out["cbed"].numpy(), out["potential"].numpy()
        for slot, item in enumerate(items):
            self._finalize(item, cbed[slot], potential[slot], epoch)
        return {"cbed": out["cbed"], "potential": out["potential"],
                "index": torch.tensor([int(item["index"]) for item in items], dtype=torch.int64)}

    def _samples(self, shards: list[int], rng: np.random.Generator) -> Iterator[Item]:
        """Stored samples of `shards` in order; with `decode_threads`, whole shards are read
        and decompressed ahead in a thread pool (file reads and zstd release the GIL)."""
        reader = _ShardReader(_open(self.store_url))
        jobs = []
        for shard in shards:
            rows = self._rows[shard]
            if rows.size:
                jobs.append((shard, rng.permutation(rows) if self.shuffle else rows))
        threads = self.cfg.decode_threads
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
                for shard, rows in itertools.islice(queue, threads * self.cfg.prefetch_factor))
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
        size = self.cfg.shuffle_buffer if self.shuffle else 0
        samples = shuffle_buffer(samples, size, rng)
        if self.batch_size is None:
            return self._single(samples, epoch)
        generation = int(self._generation[0])  # read once: a reset iteration keeps its own
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
        copy beyond its finalization and no fresh pages (see `_RingLoader`); in the iterating
        process into new tensors."""
        while True:
            items = list(itertools.islice(samples, self.batch_size))
            if not items or (self.drop_last and len(items) < self.batch_size):  # type: ignore[operator]
                return
            if worker_id is None:
                yield self._finalized(items, epoch)
                continue
            slot, out = self._ring_slot(worker_id, len(items), generation)
            batch = self._finalized(items, epoch, out)
            if slot >= 0 and self._shared_ring is not None:
                # The main process already maps this slot: send only its number, the batch
                # size and the indices (a list: the DataLoader's default_convert would turn
                # NumPy into a tensor), no shared storage: each costs a resource-sharer
                # connection and handshake with this process, which waits for our GIL.
                yield {SLOT_KEY: slot, SIZE_KEY: len(items), "index": batch["index"].tolist()}
                continue
            batch[SLOT_KEY] = slot
            yield batch

    def _ring_slot(self, worker_id: int, size: int,
                   generation: int) -> tuple[int, dict[str, torch.Tensor]]:
        """A free ring buffer of this worker (views of `size` samples), or, when the trainer
        still holds every one, fresh shared memory (slot -1): never waits. The buffers are
        the main process's (`_share_ring`) under `_RingLoader`, else this worker's own."""
        busy = self._busy.numpy()
        for k in range(RING_SLOTS):
            slot = worker_id * RING_SLOTS + k
            if busy[slot] != 0:
                continue
            busy[slot] = generation
            if self._shared_ring is None:
                if self._ring is None:
                    self._ring = [self._batch_buffers(self.batch_size)  # type: ignore[arg-type]
                                  for _ in range(RING_SLOTS)]
                buffers = self._ring[k]
            else:
                buffers = dict(zip(("cbed", "potential"), self._shared_ring[slot], strict=True))
            return slot, {key: buffers[key][:size] for key in ("cbed", "potential")}
        return -1, self._batch_buffers(size)

    def _batch_buffers(self, size: int) -> dict[str, torch.Tensor]:
        """Shared-memory float32 tensors for a batch of `size` samples."""
        return {key: torch.empty((size, *self._sample_shapes[key]),
                                 dtype=torch.float32).share_memory_()
                for key in ("cbed", "potential")}

    def _reclaim(self, pending_slots: set[int]) -> None:
        """Main process, after the workers were reset: free the slots of discarded batches."""
        current = int(self._generation[0])
        busy = self._busy.numpy()
        for slot in np.flatnonzero((busy != 0) & (busy != current)):
            if int(slot) not in pending_slots:
                busy[slot] = 0

    def _release(self, pending: list[tuple[int, list[StorageWeakRef]]]) -> None:
        """Main process: mark the ring slots whose batches nobody references any more free."""
        still = []
        busy = self._busy.numpy()
        for slot, refs in pending:
            if all(ref.expired() for ref in refs):
                busy[slot] = 0
            else:
                still.append((slot, refs))
        pending[:] = still

    def _share_ring(self) -> None:
        """Main process, before the workers start: allocate every worker's ring slots in
        shared memory (pages are only committed when a worker first fills a slot), so that
        workers inherit them and a batch travels as a slot number (`_RingLoader`)."""
        if self._shared_ring is not None or self.batch_size is None or self.cfg.num_workers < 1:
            return
        ring, views = [], []
        for _ in range(self._busy.numel()):
            buffers = self._batch_buffers(self.batch_size)
            pair = (buffers["cbed"], buffers["potential"])
            ring.append(pair)
            views.append(tuple(tensor.numpy() for tensor in pair))
        self._shared_ring, self._shared_views = ring, views  # type: ignore[assignment]

    def _ring_batch(self, batch: Item) -> Item:
        """Main process: the batch a worker left in shared slot `batch[SLOT_KEY]`, as tensors
        with storages of their own (over the slot's memory), so that when the trainer has
        dropped all of them the slot can be reused (`_release`)."""
        cbed, potential = self._shared_views[batch[SLOT_KEY]]  # type: ignore[index]
        size = int(batch.pop(SIZE_KEY))
        return {"cbed": torch.from_numpy(cbed[:size]),
                "potential": torch.from_numpy(potential[:size]),
                "index": torch.tensor(batch["index"], dtype=torch.int64),
                SLOT_KEY: batch[SLOT_KEY]}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shared_views"] = None  # NumPy views: the workers use the tensors
        return state


class _RingLoader(DataLoader):
    """A DataLoader over a batching `ShardStream` that hands ring slots back to the workers.

    Why a ring: a worker process passes a batch to the trainer as shared memory. Fresh shared
    memory for every batch costs a page fault per 4 KiB page on first touch, and on this VM
    that alone capped the hand-off at ~750 samples/s of 1 MiB (one copy into a reused buffer:
    ~3,400/s; `benchmarks/loader_throughput.py`). So each worker reuses `RING_SLOTS` buffers,
    and this loader marks a slot free again once every tensor of its batch is gone
    (`StorageWeakRef`): a batch the trainer keeps is never overwritten, and a worker whose
    slots are all held allocates fresh memory instead of waiting.

    The slots are allocated here, before the persistent workers start (`_share_ring`), so a
    worker sends only a slot number, a size and the indices; passing the slot's tensors instead
    cost a resource-sharer socket handshake per storage with a worker busy holding its GIL
    (2 workers: 0.56 -> 0.86 of the raw read + decompress rate, benchmarks/loader_throughput.py).
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        dataset: ShardStream = self.dataset  # type: ignore[assignment]
        if not hasattr(self, "_pending"):
            self._pending: list[tuple[int, list[StorageWeakRef]]] = []
        # A new generation before the workers start this iteration: slots still marked with
        # an older one and not handed to the trainer held batches that an abandoned iteration
        # prefetched and the DataLoader discarded when it reset its workers.
        dataset._generation[0] = int(dataset._generation[0]) % 126 + 1
        if self.num_workers > 0 and getattr(self, "_iterator", None) is None:
            dataset._share_ring()  # before the (persistent) workers are started
        pin = self.pin_memory
        batches = super().__iter__()
        dataset._reclaim({slot for slot, _ in self._pending})
        for batch in batches:
            dataset._release(self._pending)
            if SIZE_KEY in batch:
                batch = dataset._ring_batch(batch)
                if pin:
                    batch = {key: value.pin_memory() if isinstance(value, torch.Tensor) else value
                             for key, value in batch.items()}
            slot = batch.pop(SLOT_KEY, -1)
            if slot >= 0:
                self._pending.append((int(slot), [StorageWeakRef(batch[key].untyped_storage())
                                                  for key in ("cbed", "potential")]))
            yield batch
            del batch
        dataset._release(self._pending)


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
    return _RingLoader(dataset, batch_size=None, num_workers=workers,
                       pin_memory=cfg.pin_memory and torch.cuda.is_available(), **extra)

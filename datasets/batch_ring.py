"""The shared-memory batch ring: how a DataLoader worker hands a batch to the trainer.

Why a ring: a worker process passes a batch to the trainer as shared memory. Fresh shared
memory for every batch costs a page fault per 4 KiB page on first touch, which capped the
hand-off far below one copy into a reused buffer (figures in benchmarks/RESULTS.md, "Loader").
So each worker reuses `RING_SLOTS` buffers, and the trainer's side marks a slot free again
once every tensor of its batch is gone (`StorageWeakRef`): a batch the trainer keeps is never
overwritten, and a worker whose slots are all held allocates fresh memory instead of waiting.

`BatchRing` owns the whole life-cycle of a slot, on both sides of the process boundary:

* main process, before the workers start: `share` allocates every worker's slots in shared
  memory (pages are only committed when a worker first fills one), so workers inherit them and
  a batch travels as a slot number, its size and the indices (`message`), not as tensors:
  each shared storage sent costs a resource-sharer handshake with a worker busy holding its GIL;
* worker: `acquire` takes a free slot (marking it busy with the current generation) or, when
  the trainer holds every one, fresh shared memory (slot -1);
* main process: `receive` turns a message back into tensors over the slot's memory, `release`
  frees the slots whose batches nobody references any more, and `reclaim` frees, after the
  DataLoader reset its workers, the slots of batches an abandoned iteration prefetched (they
  carry an older generation, see `new_generation`).

`RingLoader` is the DataLoader that does the main process's part.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import DataLoader

# Shared-memory batch buffers per worker process, each allocated on first use: prefetch_factor
# batches may wait in the queue, one is with the trainer, one is being filled, so about
# prefetch_factor + 2 get allocated; the rest is slack for a trainer that keeps batches longer
# (beyond that the worker falls back to fresh memory, never waits).
RING_SLOTS = 8
SLOT_KEY = "_ring_slot"
SIZE_KEY = "_ring_size"
KEYS = ("cbed", "potential")

Batch = dict[str, Any]
Pending = list[tuple[int, list[StorageWeakRef]]]


class BatchRing:
    """`RING_SLOTS` reusable shared-memory batches per worker, with their busy flags."""

    def __init__(self, num_workers: int, batch_size: int | None,
                 sample_shapes: dict[str, tuple[int, ...]]) -> None:
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.sample_shapes = dict(sample_shapes)
        # busy[worker * RING_SLOTS + slot] holds the generation of the iteration that filled
        # the slot, from when the worker fills it until the main process has dropped every
        # reference to the batch (`release`); 0 is free.
        self.busy = torch.zeros(max(num_workers, 1) * RING_SLOTS, dtype=torch.int8).share_memory_()
        self.generation = torch.ones(1, dtype=torch.int8).share_memory_()
        self._own: list[dict[str, torch.Tensor]] | None = None  # a worker's, made lazily
        # Made by the main process before the workers start (`share`): (cbed, potential)
        # shared tensors per slot; the main process also keeps NumPy views of them.
        self._shared: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._views: list[tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def shared(self) -> bool:
        """Whether the main process owns the slots (a batch then travels as a `message`)."""
        return self._shared is not None

    def fresh(self, size: int) -> dict[str, torch.Tensor]:
        """Shared-memory float32 tensors for a batch of `size` samples."""
        return {key: torch.empty((size, *self.sample_shapes[key]), dtype=torch.float32)
                .share_memory_() for key in KEYS}

    # ----------------------------------------------------------------- worker side

    def acquire(self, worker_id: int, size: int, generation: int
                ) -> tuple[int, dict[str, torch.Tensor]]:
        """A free slot of this worker (views of `size` samples), or, when the trainer still
        holds every one, fresh shared memory (slot -1): never waits."""
        busy = self.busy.numpy()
        for k in range(RING_SLOTS):
            slot = worker_id * RING_SLOTS + k
            if busy[slot] != 0:
                continue
            busy[slot] = generation
            if self._shared is None:
                if self._own is None:
                    self._own = [self.fresh(self.batch_size)  # type: ignore[arg-type]
                                 for _ in range(RING_SLOTS)]
                buffers = self._own[k]
            else:
                buffers = dict(zip(KEYS, self._shared[slot], strict=True))
            return slot, {key: buffers[key][:size] for key in KEYS}
        return -1, self.fresh(size)

    @staticmethod
    def message(slot: int, batch: Batch) -> Batch:
        """What a worker sends for a batch it wrote into a shared slot: the slot's number,
        the batch size and the indices (a list: the DataLoader's default_convert would turn
        NumPy into a tensor)."""
        return {SLOT_KEY: slot, SIZE_KEY: len(batch["index"]), "index": batch["index"].tolist()}

    # ----------------------------------------------------------------- main process

    def share(self) -> None:
        """Before the workers start: allocate every worker's slots in shared memory."""
        if self._shared is not None or self.batch_size is None or self.num_workers < 1:
            return
        ring, views = [], []
        for _ in range(self.busy.numel()):
            buffers = self.fresh(self.batch_size)
            pair = (buffers["cbed"], buffers["potential"])
            ring.append(pair)
            views.append((pair[0].numpy(), pair[1].numpy()))
        self._shared, self._views = ring, views

    def new_generation(self) -> None:
        """Before the workers start an iteration: slots still marked with an older generation
        and not handed to the trainer held batches of an abandoned iteration."""
        self.generation[0] = int(self.generation[0]) % 126 + 1

    def receive(self, batch: Batch) -> Batch:
        """The batch a worker left in shared slot `batch[SLOT_KEY]`, as tensors with storages
        of their own (over the slot's memory), so that when the trainer has dropped all of them
        the slot can be reused (`release`)."""
        cbed, potential = self._views[batch[SLOT_KEY]]  # type: ignore[index]
        size = int(batch.pop(SIZE_KEY))
        return {"cbed": torch.from_numpy(cbed[:size]),
                "potential": torch.from_numpy(potential[:size]),
                "index": torch.tensor(batch["index"], dtype=torch.int64),
                SLOT_KEY: batch[SLOT_KEY]}

    def release(self, pending: Pending) -> None:
        """Mark the slots whose batches nobody references any more free."""
        still = []
        busy = self.busy.numpy()
        for slot, refs in pending:
            if all(ref.expired() for ref in refs):
                busy[slot] = 0
            else:
                still.append((slot, refs))
        pending[:] = still

    def reclaim(self, pending_slots: set[int]) -> None:
        """After the workers were reset: free the slots of discarded batches."""
        current = int(self.generation[0])
        busy = self.busy.numpy()
        for slot in np.flatnonzero((busy != 0) & (busy != current)):
            if int(slot) not in pending_slots:
                busy[slot] = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_views"] = None  # NumPy views: the workers use the tensors
        return state


class RingLoader(DataLoader):
    """A DataLoader over a dataset that batches into a `BatchRing` (its `ring` attribute) and
    hands ring slots back to the workers once the trainer is done with a batch."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ring: BatchRing = self.dataset.ring  # type: ignore[attr-defined]
        if not hasattr(self, "_pending"):
            self._pending: Pending = []
        ring.new_generation()
        if self.num_workers > 0 and getattr(self, "_iterator", None) is None:
            ring.share()  # before the (persistent) workers are started
        pin = self.pin_memory
        batches = super().__iter__()
        ring.reclaim({slot for slot, _ in self._pending})
        for batch in batches:
            ring.release(self._pending)
            if SIZE_KEY in batch:
                batch = ring.receive(batch)
                if pin:
                    batch = {key: value.pin_memory() if isinstance(value, torch.Tensor) else value
                             for key, value in batch.items()}
            slot = batch.pop(SLOT_KEY, -1)
            if slot >= 0:
                self._pending.append((int(slot), [StorageWeakRef(batch[key].untyped_storage())
                                                  for key in KEYS]))
            yield batch
            del batch
        ring.release(self._pending)

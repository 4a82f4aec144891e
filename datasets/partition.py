"""Who reads which shard: nodes, ranks, DataLoader workers, epochs. Whole shards, never samples.

Why by shard: a shard is one file per array, read in one go; splitting samples of one shard
between readers would read it twice. The rules, all deterministic:

* node k of N stages shards k, k + N, k + 2N, ... (`shards_for_node`, used by staging);
* available shards = those marked done in this store (a staged store marks only its own);
* rank r of W takes available[r::W] (a static assignment, so a rank's sample count is the same
  every epoch, and ranks differ by at most one shard);
* each epoch the rank's shards are permuted by (seed, epoch, rank) when shuffling;
* DataLoader worker w of K takes every K-th shard of that order.

`rank`/`world_size` are among the processes that read *this* store: for a node-local staged
store, pass the local rank and the number of ranks on the node.
"""

from __future__ import annotations

import numpy as np

from stemdl.configs import UsageError
from stemdl.datasets.records import read_fields
from stemdl.datasets.schema import STATUS_OK
from stemdl.datasets.store import StemdlStore, open_stemdl_store
from stemdl.simulate.sample import SPLITS


def check_rank(rank: int, world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")


def check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")


def shards_for_node(num_shards: int, node: int, nodes: int) -> list[int]:
    """Round-robin assignment: shard i belongs to node i % nodes."""
    if nodes < 1:
        raise UsageError(f"nodes must be >= 1, got {nodes}")
    if not 0 <= node < nodes:
        raise UsageError(f"node must be in [0, {nodes}), got {node}")
    return list(range(node, num_shards, nodes))


def available_shards(store: StemdlStore) -> list[int]:
    """Shards marked done here (for a staged store: its local shards)."""
    return [int(k) for k in np.flatnonzero(store.done_mask())]


def rank_shards(shards: list[int], rank: int, world_size: int) -> list[int]:
    check_rank(rank, world_size)
    return sorted(shards)[rank::world_size]


def epoch_order(shards: list[int], *, seed: int, epoch: int, rank: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(shards)
    rng = np.random.default_rng([seed, epoch, rank, 0])
    return [shards[i] for i in rng.permutation(len(shards))]


def worker_shards(order: list[int], worker_id: int, num_workers: int) -> list[int]:
    return order[worker_id::num_workers]


def selected_rows(split_values: np.ndarray, status: np.ndarray, split: str | None) -> np.ndarray:
    """Rows that hold a sample of `split` (or any split) that was simulated successfully."""
    keep = status == STATUS_OK
    if split is not None:
        keep &= np.asarray(split_values) == split
    return np.flatnonzero(keep)


def sample_indices(store: StemdlStore, shards: list[int]) -> np.ndarray:
    ranges = [np.arange(*store.shard_range(k)) for k in shards]
    return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)


def shard_rows(store: StemdlStore, shards: list[int], split: str | None) -> dict[int, np.ndarray]:
    """Per shard of `shards`, the rows (positions inside it) that hold a successfully simulated
    sample of `split` (or of any split), read from the small `status`/`split` columns only."""
    check_split(split)
    indices = sample_indices(store, shards)
    if indices.size == 0:
        return {}
    values = read_fields(store, ["status", "split"] if split else ["status"], indices)
    status = values["status"]
    splits = values.get("split", status)
    rows: dict[int, np.ndarray] = {}
    offset = 0
    for shard in shards:
        start, stop = store.shard_range(shard)
        span = slice(offset, offset + stop - start)
        rows[shard] = selected_rows(splits[span], status[span], split)
        offset += stop - start
    return rows


def count_samples(store_url: str, split: str | None, rank: int = 0, world_size: int = 1) -> int:
    """Samples of `split` that rank `rank` of `world_size` yields per epoch (cheap: reads
    only the `split` and `status` columns of this rank's shards)."""
    check_split(split)
    store = open_stemdl_store(store_url)
    shards = rank_shards(available_shards(store), rank, world_size)
    return int(sum(rows.size for rows in shard_rows(store, shards, split).values()))

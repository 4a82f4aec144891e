"""What a reader demands of a store before it uses it: complete, and every file of it present.

Why a module of its own: every reader (the loader, `evaluate`, `inspect`, `stage`, `verify`)
must refuse the same things with the same words, and a missing file is the damage that
decodes silently: Zarr reads an absent shard file as fill values, so without these checks a
deleted `cbed/c/1/0/0/0` became four all-zero training samples. A shard marked done has every
array's shard file, and every chunk in it (stores are written with `write_empty_chunks`), so
an absent one is never "not written yet": it is data that was lost.

* `missing_shards(store)`: shards this store should hold (all, or a staged store's own) that are
  not marked done, i.e. generation (or staging) did not finish;
* `require_complete(store, allow_partial=...)`: refuse such a store (`IncompleteStoreError`,
  naming the shards) unless the caller explicitly allows a partial one;
* `missing_files(store, shards)` / `require_files(store, shards)`: shard files of done shards
  that do not exist (`MissingDataError`, naming the files).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from stemdl.datasets.schema import sharded_arrays
from stemdl.datasets.storage import StoreError, file_url, filesystem, is_local, shard_key
from stemdl.datasets.store import StemdlStore

SHOWN = 8  # names listed in a message before "… and N more"


class IncompleteStoreError(StoreError):
    """A store whose generation (or staging) did not finish; the message names the shards."""


class MissingDataError(StoreError):
    """A shard marked done whose file is missing: the data was lost, never read as zeros."""


def listing(values: Iterable[object], shown: int = SHOWN) -> str:
    """`a, b, c … and N more`: a message names what is wrong without flooding the terminal."""
    values = [str(v) for v in values]
    more = f" … and {len(values) - shown} more" if len(values) > shown else ""
    return ", ".join(values[:shown]) + more


def expected_shards(store: StemdlStore) -> list[int]:
    """The shards this store should hold: all of them, or a staged store's own."""
    staged = store.attrs.get("staged")
    if staged:
        return sorted(int(k) for k in staged["shards"])
    return list(range(store.num_shards))


def missing_shards(store: StemdlStore) -> list[int]:
    """Shards this store should hold that are not marked done."""
    done = store.done_mask()
    return [k for k in expected_shards(store) if not done[k]]


def require_complete(store: StemdlStore, *, allow_partial: bool = False) -> list[int]:
    """The missing shards (empty for a complete store); `IncompleteStoreError` when there are
    any and `allow_partial` is not set. The message says how to finish or what to pass."""
    missing = missing_shards(store)
    if missing and not allow_partial:
        expected = len(expected_shards(store))
        fix = ("stage again once the source store is complete" if store.attrs.get("staged")
               else "finish it with the same `stemdl simulate` command (it resumes), or "
                    "`stemdl verify --repair`")
        raise IncompleteStoreError(
            f"{store.url} is incomplete: {len(missing)} of {expected} shards are not done "
            f"(shards {listing(missing)}); {fix}, or pass --allow-partial to use only the "
            "shards that are done")
    return missing


def partial_note(store: StemdlStore, missing: list[int]) -> str:
    """The line a run prints when it was allowed to use a partial store."""
    return (f"using a PARTIAL store {store.url}: {len(missing)} of "
            f"{len(expected_shards(store))} shards are not done and are left out "
            f"(shards {listing(missing)})")


def shard_file(store: StemdlStore, name: str, shard: int) -> str:
    """Path or URL of array `name`'s file for `shard`."""
    return file_url(store.url, shard_key(store.array(name), shard))


def missing_files(store: StemdlStore, shards: Iterable[int],
                  arrays: Iterable[str] | None = None) -> list[str]:
    """Shard files of `shards` (of `arrays`, default every per-sample array) that do not exist."""
    fs, _ = filesystem(store.url)
    # os.path.exists on a local store: fsspec's costs ~8 µs a file, 10⁶ files at 10⁷ samples
    exists = os.path.exists if is_local(store.url) else fs.exists
    names = list(arrays) if arrays is not None else [s.name for s in sharded_arrays(store.schema)]
    return [path for shard in shards for name in names
            if not exists(path := shard_file(store, name, shard))]


def require_files(store: StemdlStore, shards: Iterable[int],
                  arrays: Iterable[str] | None = None) -> None:
    """`MissingDataError` naming the files of done `shards` that are missing."""
    missing = missing_files(store, shards, arrays)
    if missing:
        raise MissingDataError(
            f"{store.url} is damaged: {len(missing)} shard file(s) of shards marked done are "
            f"missing: {listing(missing, 4)}; `stemdl verify {store.url} --repair` re-simulates "
            "them")

"""The handle of an opened stemdl store: `open_stemdl_store(store_url) -> StemdlStore`.

Every reader and writer (generation, verification, staging, the loader) works through a
`StemdlStore`: the normalized URL, the root Zarr group, the config recorded in the store and
the schema it implies, and each array opened once. Opening refuses anything that is not a
fully planned stemdl store of this schema version; creating one is `datasets/plan.py`.

The handle also owns the shard bookkeeping every reader needs: which samples a shard holds
(`shard_range`) and which shards are done (`done_mask`, `shard_is_done`, `set_done`). So a
reader (inspect, verify, stage, the loader's partition) never imports the generation task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from stemdl.configs import StemdlConfig, config_from_dict
from stemdl.datasets.done_mask import read_done_flags
from stemdl.datasets.schema import SCHEMA_VERSION, ArraySpec, shard_range, store_schema
from stemdl.datasets.storage import (
    UNREADABLE_CHUNK,
    UNREADABLE_METADATA,
    StoreError,
    file_url,
    normalize_store_url,
    open_group,
)


class ArrayMetadataError(StoreError):
    """An array's `zarr.json` is missing or cannot be parsed; the message names the file."""


@dataclass(frozen=True)
class StemdlStore:
    """An opened stemdl store: its URL, root group, config and schema."""

    url: str
    group: zarr.Group
    config: StemdlConfig
    schema: dict[str, ArraySpec]
    _arrays: dict[str, zarr.Array] = field(default_factory=dict, compare=False, repr=False)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def num_samples(self) -> int:
        return self.config.dataset.num_samples

    @property
    def shard_size(self) -> int:
        return self.config.dataset.shard_size

    @property
    def num_shards(self) -> int:
        return self.config.dataset.num_shards

    def array(self, name: str) -> zarr.Array:
        """The array `name`, opened once (opening reads its zarr.json); a missing or unreadable
        `zarr.json` is a `StoreError` naming that file (`verify --repair` rebuilds it)."""
        if name not in self._arrays:
            try:
                self._arrays[name] = self.group[name]  # type: ignore[assignment]
            except UNREADABLE_METADATA as error:
                path = file_url(self.url, f"{name}/zarr.json")
                reason = ("missing" if isinstance(error, KeyError)
                          else f"unreadable ({type(error).__name__}: {error})")
                raise ArrayMetadataError(
                    f"{path}: metadata of array {name!r} {reason}; `stemdl verify {self.url} "
                    "--repair` rebuilds it from the config in the store's attributes") from None
        return self._arrays[name]

    def forget_array(self, name: str) -> None:
        """Drop the opened array `name`, so the next `array(name)` reads its zarr.json again
        (after `verify --repair` rewrote it)."""
        self._arrays.pop(name, None)

    def shard_range(self, shard_index: int) -> tuple[int, int]:
        """Global sample indices [start, stop) of shard `shard_index`; the last may be short."""
        return shard_range(shard_index, self.shard_size, self.num_samples)

    def done_mask(self) -> np.ndarray:
        """`shard_done` as a bool array; a chunk that cannot be decoded counts as not done.
        Read file by file without Zarr where the codecs are stemdl's own
        (`datasets/done_mask.py`; benchmarks/RESULTS.md, "Metadata at scale"), through Zarr
        otherwise."""
        done = self.array("shard_done")
        flags = read_done_flags(done, self.url)
        if flags is not None:
            return flags
        try:
            return np.asarray(done[:]) == 1
        except UNREADABLE_CHUNK:  # a damaged chunk: read the flags one by one
            return np.array([self.shard_is_done(k) for k in range(done.shape[0])], dtype=bool)

    def shard_is_done(self, shard_index: int) -> bool:
        """One shard's completion flag (one small file); unreadable counts as not done."""
        try:
            return int(self.array("shard_done")[shard_index]) == 1
        except UNREADABLE_CHUNK:
            return False

    def set_done(self, shard_index: int, done: bool) -> None:
        """Mark a shard done (only after every one of its files is written) or not done."""
        self.array("shard_done")[shard_index] = 1 if done else 0


def as_config(config: StemdlConfig | dict[str, Any]) -> StemdlConfig:
    """A `StemdlConfig` from a model or its JSON-safe dict (what Dask tasks are given)."""
    if isinstance(config, StemdlConfig):
        return config
    return config_from_dict(config, "<store or task config>")


def open_stemdl_store(store_url: str, *, mode: str = "r") -> StemdlStore:
    """Open an existing stemdl store, refusing anything that is not one (or not fully planned)."""
    url = normalize_store_url(store_url)
    group = open_group(url, mode=mode)
    attrs = dict(group.attrs)
    if "schema_version" not in attrs or "config" not in attrs:
        raise StoreError(f"{url!r} is a Zarr group but not a stemdl store (no schema_version/config)")
    if attrs["schema_version"] != SCHEMA_VERSION:
        raise StoreError(
            f"{url!r} has stemdl schema version {attrs['schema_version']}, this code reads "
            f"version {SCHEMA_VERSION} (version 3 records each sample's mistilt, "
            "`tilt_mrad`); regenerate the store with this version of stemdl"
        )
    if not attrs.get("planning_complete"):
        raise StoreError(f"{url!r}: planning of this store did not complete; run generate again")
    config = as_config(attrs["config"])
    return StemdlStore(url, group, config, store_schema(config))

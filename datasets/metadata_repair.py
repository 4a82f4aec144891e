"""Rebuild an array's `zarr.json` from the config recorded in the store's root attributes.

Why it is safe: an array's metadata document is a pure function of the config (shape, chunks,
shards, codecs, dimension names, attributes: `datasets/schema.py` + `datasets/storage.py`),
and the config is in the root group's attributes. So a damaged or deleted `zarr.json` of an
array is recreated byte for byte by planning that one array again in memory and copying its
document, without touching a data file; the data files are then verified as usual (and
re-simulated if they are bad). The root `zarr.json` holds the config itself: if that is lost
there is nothing to rebuild from.

Only zarr's public API is used: a `MemoryStore` over a dict we own (its documented
`store_dict` argument), from which the planned document is read as bytes.
"""

from __future__ import annotations

from typing import Any

import zarr
from zarr.storage import MemoryStore

from stemdl.datasets.storage import create_array, filesystem
from stemdl.datasets.store import StemdlStore


def rebuild_array_metadata(store: StemdlStore, names: list[str]) -> list[str]:
    """Write the `zarr.json` of arrays `names` as planning would; returns the paths written."""
    ds = store.config.dataset
    documents: dict[str, Any] = {}
    scratch = zarr.open_group(store=MemoryStore(store_dict=documents), mode="w", zarr_format=3)
    fs, root = filesystem(store.url)
    written = []
    for name in names:
        spec = store.schema[name]
        storage = getattr(ds, spec.name) if spec.role == "data" else None
        create_array(scratch, spec, length=spec.length(ds), shard_size=ds.shard_size,
                     storage=storage)
        path = f"{root}/{name}/zarr.json"
        fs.makedirs(f"{root}/{name}", exist_ok=True)
        fs.pipe_file(path, documents[f"{name}/zarr.json"].to_bytes())
        store.forget_array(name)
        written.append(path)
    return written

"""Rebuild an array's `zarr.json` from the config recorded in the store's root attributes.

Why it is safe: an array's metadata document is a pure function of the config (shape, chunks,
shards, codecs, dimension names, attributes: `datasets/schema.py` + `datasets/storage.py`),
and the config is in the root group's attributes. So a damaged or deleted `zarr.json` of an
array is recreated byte for byte by planning that one array again in memory and copying its
document, without touching a data file; the data files are then verified as usual (and
re-simulated if they are bad). The root `zarr.json` holds the config itself: if that is lost
there is nothing to rebuild from.
"""

from __future__ import annotations

import zarr
from zarr.storage import MemoryStore

from stemdl.datasets.storage import create_array, filesystem
from stemdl.datasets.store import StemdlStore


def rebuild_array_metadata(store: StemdlStore, names: list[str]) -> list[str]:
    """Write the `zarr.json` of arrays `names` as planning would; returns the paths written."""
    ds = store.config.dataset
    scratch = zarr.open_group(store=MemoryStore(), mode="w", zarr_format=3)
    fs, root = filesystem(store.url)
    written = []
    for name in names:
        spec = store.schema[name]
        storage = getattr(ds, spec.name) if spec.role == "data" else None
        length = {"shard": ds.num_shards, "sample": ds.num_samples}.get(spec.per, 0)
        create_array(scratch, spec, length=length, shard_size=ds.shard_size, storage=storage)
        document = scratch.store._store_dict[f"{name}/zarr.json"].to_bytes()  # type: ignore[attr-defined]
        path = f"{root}/{name}/zarr.json"
        fs.makedirs(f"{root}/{name}", exist_ok=True)
        fs.pipe_file(path, document)
        store._arrays.pop(name, None)
        written.append(path)
    return written

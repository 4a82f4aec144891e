"""datasets/: samples in, a self-describing sharded Zarr v3 store out, and back to tensors.

In: `Sample`s from simulate/. Out: one Zarr v3 store (local path or fsspec URL) with `cbed`,
`potential`, per-sample metadata, completion mask and checksums; node-local staged copies; a
PyTorch streaming loader. Owns the schema, Dask generation, verification, staging, loading.
Imports configs/ and simulate/ only. Installed as `stemdl.datasets` (never as a top-level
`datasets`, which is Hugging Face's name).

Public API (imported lazily, so `import stemdl.datasets` stays cheap):

* `stemdl.datasets.generate.generate(config, store_url, *, scheduler_address=None,
  scheduler_file=None, n_workers=None, cpu_workers=None, progress=True, retries=2,
  simulator=None)
  -> GenerationReport` (import it from its module: the package attribute `generate` is that
  module) and the task `simulate_shard(config, store_url, shard_index) -> ShardResult`;
* `verify_store(store_url, repair=False) -> VerifyReport`;
* `summarize(store_url) -> dict`, `render_summary(summary)`, `plot_sample(store_url, index,
  png_path)`, `read_sample(store_url, index)`;
* `stage_node(store_url, local_dir, node, nodes) -> StageReport`;
* `ShardStream`, `make_dataloader(store_url, loader_cfg, *, split, batch_size, rank=0,
  world_size=1, seed=0, shuffle=True, drop_last=True)`, `count_samples(store_url, split, rank,
  world_size)`;
* `read_field(store, name, rows=None)`, `read_fields(store, names, rows=None)`,
  `read_record(store, index) -> SampleRecord` (with `store = open_stemdl_store(url)` of
  `datasets.store`, a `StemdlStore`): the
  one way to read per-sample metadata, independent of how it is packed into arrays;
* `storage_estimate(config) -> StorageEstimate`;
Reading measured scans, and exporting a stored sample as one, is `stemdl.predict` (a layer
above train/).

Modules, one concept each: `schema` (what arrays and attributes a store has), `storage`
(URLs, Zarr stores, codecs, sharding, shard file names), `store` (the handle of an opened
store), `checksum`, `records` (SampleRecord ↔ columns ↔ the packed metadata arrays, and the
field accessor), `plan` (creating/checking a store against its config, the split table),
`shard` (the generation task), `generate` (Dask), `worker_plan` (its local workers, GPUs), `verify`, `inspect`, `stage`, `partition`
(which node, rank and worker reads which shard), `shard_files` (decoding whole shard files),
`transforms` (normalization, noise), `loader` (streaming), `batch_ring` (the shared-memory
batch hand-off), `estimate`.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "GenerationReport": "stemdl.datasets.generate",
    "simulate_shard": "stemdl.datasets.shard",
    "ShardResult": "stemdl.datasets.shard",
    "verify_store": "stemdl.datasets.verify",
    "VerifyReport": "stemdl.datasets.verify",
    "summarize": "stemdl.datasets.inspect",
    "render_summary": "stemdl.datasets.inspect",
    "plot_sample": "stemdl.datasets.inspect",
    "read_sample": "stemdl.datasets.inspect",
    "stage_node": "stemdl.datasets.stage",
    "StageReport": "stemdl.datasets.stage",
    "ShardStream": "stemdl.datasets.loader",
    "make_dataloader": "stemdl.datasets.loader",
    "count_samples": "stemdl.datasets.partition",
    "storage_estimate": "stemdl.datasets.estimate",
    "read_field": "stemdl.datasets.records",
    "read_fields": "stemdl.datasets.records",
    "read_record": "stemdl.datasets.records",
    "StorageEstimate": "stemdl.datasets.estimate",
    "StoreError": "stemdl.datasets.storage",
    "ConfigMismatchError": "stemdl.datasets.plan",
    "StemdlStore": "stemdl.datasets.store",
    "open_stemdl_store": "stemdl.datasets.store",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stemdl.datasets' has no attribute {name!r}")

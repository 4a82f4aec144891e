"""datasets/: samples in, a self-describing sharded Zarr v3 store out, and back to tensors.

In: `Sample`s from simulate/. Out: one Zarr v3 store (local path or fsspec URL) with `cbed`,
`potential`, per-sample metadata, completion mask and checksums; node-local staged copies; a
PyTorch streaming loader. Owns the schema, Dask generation, verification, staging, loading.
Note: this top-level package shadows Hugging Face's `datasets`; stemdl does not use that one.

Public API (imported lazily, so `import datasets` stays cheap and `configs` can import
`datasets.config` without a cycle):

* `datasets.generate.generate(config, store_url, *, scheduler_address=None,
  scheduler_file=None, n_workers=None, progress=True, retries=2) -> GenerationReport` (import
  it from its module: the package attribute `datasets.generate` is that module) and the task
  `simulate_shard(config, store_url, shard_index) -> ShardResult`;
* `verify_store(store_url, repair=False) -> VerifyReport`;
* `summarize(store_url) -> dict`, `render_summary(summary)`, `plot_sample(store_url, index,
  png_path)`, `read_sample(store_url, index)`;
* `stage_node(store_url, local_dir, node, nodes) -> StageReport`;
* `ShardStream`, `make_dataloader(store_url, loader_cfg, *, split, batch_size, rank=0,
  world_size=1, seed=0, shuffle=True, drop_last=True)`, `count_samples(store_url, split, rank,
  world_size)`;
* `read_field(info, name, rows=None)`, `read_fields(info, names, rows=None)`,
  `read_record(info, index) -> SampleRecord` (with `info = plan.open_stemdl_store(url)`): the
  one way to read per-sample metadata, independent of how it is packed into arrays;
* `storage_estimate(config) -> StorageEstimate`.

Modules, one concept each: `schema` (what arrays and attributes a store has), `storage`
(URLs, Zarr stores, codecs, sharding, shard file names), `checksum`, `records` (SampleRecord ↔
columns ↔ the packed metadata arrays, and the field accessor), `plan` (creating/checking a
store against its config), `shard` (the generation task), `generate` (Dask), `verify`,
`inspect`, `stage`, `partition` (who reads which shard), `shard_files` (decoding whole shard
files), `transforms` (normalization, noise), `loader`, `estimate`.
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
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stemdl.datasets' has no attribute {name!r}")

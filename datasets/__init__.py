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
* `storage_estimate(config) -> StorageEstimate`;
* `microscope_files.read_scan(path, scan_shape=None, sample=None) -> Scan4D` (a 4D-STEM scan
  from a rosettasciio format, .npy or a store) and `resolve_calibration`;
  `pattern_resampling.plan_resampling` / `resample_patterns`; `export.export_sample(store_url,
  index, fmt, out)`.

Modules, one concept each: `schema` (what arrays and attributes a store has), `storage`
(URLs, Zarr stores, codecs, sharding, shard file names), `checksum`, `records` (SampleRecord ↔
columns ↔ the packed metadata arrays, and the field accessor), `plan` (creating/checking a
store against its config), `shard` (the generation task), `generate` (Dask), `verify`,
`inspect`, `stage`, `partition` (who reads which shard), `shard_files` (decoding whole shard
files), `transforms` (normalization, noise), `loader`, `estimate`, `microscope_files`
(reading scans and their calibration, writing signals), `pattern_resampling`, `export`.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "GenerationReport": "datasets.generate",
    "simulate_shard": "datasets.shard",
    "ShardResult": "datasets.shard",
    "verify_store": "datasets.verify",
    "VerifyReport": "datasets.verify",
    "summarize": "datasets.inspect",
    "render_summary": "datasets.inspect",
    "plot_sample": "datasets.inspect",
    "read_sample": "datasets.inspect",
    "stage_node": "datasets.stage",
    "StageReport": "datasets.stage",
    "ShardStream": "datasets.loader",
    "make_dataloader": "datasets.loader",
    "count_samples": "datasets.partition",
    "storage_estimate": "datasets.estimate",
    "read_field": "datasets.records",
    "read_fields": "datasets.records",
    "read_record": "datasets.records",
    "StorageEstimate": "datasets.estimate",
    "StoreError": "datasets.storage",
    "ConfigMismatchError": "datasets.plan",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")

"""datasets/: samples in, a self-describing sharded Zarr v3 store out, and back to tensors.

In: `Sample`s from simulate/. Out: one Zarr v3 store (local path or fsspec URL) with `cbed`,
`potential`, per-sample metadata, completion mask and checksums; node-local staged copies; a
PyTorch streaming loader. Owns the schema, Dask generation, verification, staging, loading.
Note: this top-level package shadows Hugging Face's `datasets`; stemdl does not use that one.
"""

"""stemdl: simulate CBED of crystals, store it as a sharded Zarr v3 dataset, train an FCN on it.

The repository's top-level folders are installed under this one import name, so that stemdl
never overwrites or shadows another distribution's top-level package (Hugging Face's
`datasets` above all): `stemdl.configs` (the typed config, the bottom layer), `stemdl.simulate`,
`stemdl.datasets`, `stemdl.train`, `stemdl.predict` (a model applied to measured scans), and on
top `stemdl.end_to_end` (what `stemdl run` does) and `stemdl.pipeline` (the command line);
`stemdl.testing` holds the helpers of the tests and benchmarks. `pyproject.toml` maps them with `package-dir`; this file
is the package's `__init__` and imports nothing, so `import stemdl.configs` stays cheap.
"""

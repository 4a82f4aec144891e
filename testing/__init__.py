"""testing/: helpers that the test suite and the benchmarks share (`stemdl.testing`).

Not used by stemdl itself (tests/test_layers.py keeps it that way); installed with it, like
`numpy.testing`, so tests, benchmarks and Dask workers started by either import the same
helpers by one name, with no `sys.path` edits.

* `abtem_reference`: abTEM's whole far field of a sample's record, by abTEM calls alone;
* `measured_scan`: 4D-STEM scans simulated with abTEM directly (not through stemdl's sample
  builder), with the nuisances of a real microscope, and written as microscope files;
* `reconstruction_model`: the small reconstruction model (simulated and trained once, cached);
* `h5_layouts`: Dectris ARINA and py4DSTEM EMD files written in their real layouts;
* `checkpoints`: an untrained model's checkpoint, saved as training saves one;
* `synthetic_simulator`: seeded random samples in place of physics, and simulators that fail
  or kill their worker on purpose, for generation's resume and failure tests.
"""

"""predict/: a trained model applied to a measured 4D-STEM scan, and the files it reads and writes.

In: a checkpoint (train/) and a scan in a microscopist's format. Out: a stitched map of the
projected potential (V·Å, or standardized for older models), with the thickness per window, as
`potential.zarr`, `.hspy`/`.tif`, `prediction.png` and `prediction.json`. A layer above train/:
it imports configs/, datasets/ (the loader's input transform) and train/ (loading a model), and
nothing below imports it.

Public API:

* `predict.scan_prediction.predict_main(checkpoint, data, calibration_options=...)
  -> PredictionResult`, written by `predict.outputs.write_outputs(result, out_dir, formats)`;
* `predict.microscope_files.read_scan(path, scan_shape=None, sample=None) -> Scan4D` (a scan
  from a rosettasciio format, an HDF5 file routed by content, .npy or a stemdl store) and
  `resolve_calibration`;
* `predict.export.export_sample(store_url, index, fmt, out)`: a stored sample written as a
  microscope file (`stemdl export`), the round trip the tests use.

Modules, one concept each, in the order `predict_main` uses them: `trained_ranges` (what a
checkpoint was trained for, from its config alone), `microscope_files` (reading scans and
their calibration, writing signals), `hdf5_scans` (EMD, Dectris ARINA and HyperSpy files told
apart by content), `file_checks` (a file against its own header), `scan_checks` (not empty,
finite, a bright-field disk of the calibrated size), `calibration` (the refusals),
`scan_resampling` (another scan step onto the trained one), `pattern_resampling` (the
detector pixel onto the trained one), `scan_inputs` (a band of scan rows at a time as model
input), `stitching` (windows and their blend), `outputs`. `export` sits here, not with the
store, because it writes through `microscope_files`, the one writer of microscope formats.
"""

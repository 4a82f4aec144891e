"""`export_sample(store, index, fmt, out)`: one stored sample as a calibrated 4D-STEM dataset.

In: a stemdl Zarr store and a sample index. Out: a file that HyperSpy (and other 4D-STEM
software reading rosettasciio's formats) opens as (scan_y, scan_x | ky, kx) with the sample
record's calibrations:

* scan axes y, x in Å: scale = the scan step (scanned square / probe grid), offset = the first
  probe position in the simulated cell (`SampleRecord.probe_positions_a[0]`);
* diffraction axes ky, kx in mrad: scale = `SampleRecord.angular_sampling_mrad` (stored (x, y),
  written (ky, kx)), offset such that zero frequency (the direct beam) is at 0 mrad;
* HyperSpy metadata `Acquisition_instrument.TEM.beam_energy` (keV) and `convergence_angle`
  (mrad), and the whole record under `original_metadata.stemdl`.

Formats: `hspy` (HyperSpy's HDF5), `emd` (Berkeley NCEM EMD, rosettasciio's writer), `npy`
(the array, with the axes and record in a JSON file beside it, `PATH.json`: a .npy cannot hold
calibrations). Intensities are the stored ones: fractions of the incident beam per pixel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stemdl.configs import UsageError
from stemdl.predict.microscope_files import (
    calibrated_axes,
    record_calibration,
    signal_dict,
    stored_scan,
    write_signal,
)
from stemdl.predict.pattern_resampling import pattern_centre_px
from stemdl.simulate.sample import SampleRecord

EXPORT_FORMATS = ("hspy", "npy", "emd")


def record_axes(record: SampleRecord, pattern_shape: tuple[int, int]) -> list[dict[str, Any]]:
    """The calibrated axes of a stored sample (module docstring)."""
    rows, cols = record.scan_gpts
    calibration = record_calibration(record)
    first_x, first_y = (float(v) for v in np.asarray(record.probe_positions_a)[0])
    pattern_px = tuple(int(n) for n in pattern_shape)
    return calibrated_axes(
        (rows, cols, *pattern_px),
        scan_step_a=calibration["scan_step_a"],
        angular_sampling_mrad=calibration["angular_sampling_mrad"],
        centre_px=pattern_centre_px(pattern_px, 1),  # stored pixels: binning already applied
        scan_offset_a=(first_y, first_x),
    )


def _record_json(record: SampleRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SampleRecord.field_names():
        value = getattr(record, name)
        out[name] = value.tolist() if isinstance(value, np.ndarray) else value
    return json.loads(json.dumps(out, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def export_sample(store_url: str, index: int, fmt: str, out: str | Path) -> Path:
    """Write sample `index` of the store as `fmt` to `out`; returns the path written."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    record, data = stored_scan(store_url, index)
    axes = record_axes(record, data.shape[2:])
    out = Path(out)
    out = out if out.suffix.lower() == f".{fmt}" else out.with_name(out.name + f".{fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"stemdl sample {index} ({record.material_id})"
    if fmt == "npy":
        np.save(out, data)
        sidecar = out.with_name(out.name + ".json")
        sidecar.write_text(json.dumps({"axes": axes, "title": title,
                                       "record": _record_json(record)}, indent=2,
                                      ensure_ascii=False) + "\n")
        return out
    signal = signal_dict(data, axes, title, energy_ev=record.energy_ev,
                         semiangle_mrad=record.semiangle_mrad,
                         extra={"record": _record_json(record)})
    return write_signal(out, signal)

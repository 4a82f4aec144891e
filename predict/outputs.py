"""What `stemdl predict` leaves in its output directory (`write_outputs`).

* `potential.zarr`: the stitched map (C, y, x) float32, Zarr v3, with `dimension_names`
  (channel, y, x) and attributes `units` ('V·Å', or 'standardized …' for a model trained
  before physical targets), `axes` (name, units, scale, offset per axis; y and x in Å,
  offset = centre of the first pixel, origin at the corner of the scanned area), and
  `thickness` (Å per window, `PredictionResult.record["thickness"]`);
* `potential.hspy` / `potential.tif` when asked (`formats`), written by rosettasciio with the
  same axes;
* `prediction.png`: the map with a colour bar in its units (V·Å) and the mean thickness in
  the title, beside the mean diffraction pattern (log scale, axes in mrad);
* `prediction.json`: what was done (`PredictionResult.record`: calibrations and where each
  came from, trained ranges, resampling, windows, model and checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stemdl.configs import UsageError
from stemdl.predict.microscope_files import signal_dict, write_signal
from stemdl.predict.scan_prediction import PredictionResult

MAP_FORMATS = ("hspy", "tiff")


def map_axes(result: PredictionResult) -> list[dict[str, Any]]:
    """rosettasciio axes of the (C, y, x) map."""
    channels, height, width = result.potential.shape
    py, px = result.pixel_a
    return [
        {"name": "channel", "units": "", "scale": 1.0, "offset": 0.0, "size": channels,
         "navigate": True, "index_in_array": 0},
        {"name": "y", "units": "Å", "scale": py, "offset": py / 2, "size": height,
         "navigate": False, "index_in_array": 1},
        {"name": "x", "units": "Å", "scale": px, "offset": px / 2, "size": width,
         "navigate": False, "index_in_array": 2},
    ]


def write_outputs(result: PredictionResult, out_dir: Path,
                  formats: tuple[str, ...] = ()) -> list[Path]:
    """Write every output of the module docstring; returns the paths written.

    Everything is written into a hidden folder in `out_dir` first and moved into place once
    all of it is written, so that a failure (a full disk, an interrupted run) leaves no
    half-written potential.zarr beside a stale prediction.json."""
    for fmt in formats:
        if fmt not in MAP_FORMATS:
            raise UsageError(f"unknown map format {fmt!r}; choose from {', '.join(MAP_FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".stemdl-predict-", dir=out_dir))
    try:
        names = [p.name for p in _write_all(result, staging, formats)]
        for name in names:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name in names]


def _write_all(result: PredictionResult, out_dir: Path, formats: tuple[str, ...]) -> list[Path]:
    written = [_write_zarr(result, out_dir / "potential.zarr")]
    for fmt in formats:
        suffix = {"hspy": ".hspy", "tiff": ".tif"}[fmt]
        ascii_only = fmt == "tiff"  # TIFF strings must be 7-bit ASCII
        signal = signal_dict(result.potential, map_axes(result), "stemdl projected potential",
                             signal_type="", extra=_signal_extra(result, ascii_only))
        # HyperSpy shows the quantity and its units beside the data (its colour bar label)
        signal["metadata"]["Signal"]["quantity"] = _text(
            f"Projected potential ({result.units})", ascii_only)
        written.append(write_signal(out_dir / f"potential{suffix}", signal))
    written.append(_write_png(result, out_dir / "prediction.png"))
    record = {**result.record, "outputs": [p.name for p in written] + ["prediction.json"]}
    path = out_dir / "prediction.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    written.append(path)
    return written


def _text(value: str, ascii_only: bool) -> str:
    """`value`, with V·Å and Å spelt in ASCII when the format needs it (TIFF)."""
    return value.replace("·", " ").replace("Å", "Angstrom") if ascii_only else value


def _signal_extra(result: PredictionResult, ascii_only: bool = False) -> dict[str, Any]:
    """Flat, HDF5-safe numbers for the .hspy `original_metadata.stemdl` (no None)."""
    extra: dict[str, Any] = {"units": _text(result.units, ascii_only)}
    if result.thickness_a is not None:
        thickness = result.record["thickness"]
        extra.update({"thickness_units": _text("Å", ascii_only), "thickness_per": "window",
                      "thickness_mean_a": thickness["mean_a"],
                      "thickness_std_a": thickness["std_a"],
                      "thickness_windows_a": np.asarray(result.thickness_a, dtype=np.float64)})
    return extra


def _write_zarr(result: PredictionResult, path: Path) -> Path:
    import zarr

    array = zarr.create_array(store=str(path), shape=result.potential.shape, dtype="float32",
                              chunks=result.potential.shape, dimension_names=("channel", "y", "x"),
                              overwrite=True)
    array[...] = result.potential
    array.attrs.update({"units": result.units, "axes": map_axes(result),
                        "long_name": "projected potential predicted by stemdl",
                        "thickness": result.record.get("thickness")})
    return path


def _write_png(result: PredictionResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, height, width = result.potential.shape
    py, px = result.pixel_a
    pattern = result.mean_pattern
    ky, kx = result.mean_pattern_mrad
    cy, cx = result.mean_pattern_centre_px
    rows, cols = pattern.shape
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6))
    image = left.imshow(result.potential[0], cmap="magma", origin="upper",
                        extent=(0, width * px, height * py, 0))
    title = "predicted projected potential"
    thickness = result.record.get("thickness") or {}
    if thickness.get("units") == "Å":
        title += f"\nthickness {thickness['mean_a']:.1f} ± {thickness['std_a']:.1f} Å (windows)"
    left.set_title(title)
    left.set_xlabel("x (Å)")
    left.set_ylabel("y (Å)")
    figure.colorbar(image, ax=left, label=result.units.split(" (")[0], shrink=0.8)
    positive = pattern[pattern > 0]
    floor = positive.min() if positive.size else 1.0
    right.imshow(np.log10(np.maximum(pattern, floor)), cmap="gray", origin="upper",
                 extent=((-cx - 0.5) * kx, (cols - cx - 0.5) * kx,
                         (rows - cy - 0.5) * ky, (-cy - 0.5) * ky))
    right.set_title("mean diffraction pattern (log)")
    right.set_xlabel("kx (mrad)")
    right.set_ylabel("ky (mrad)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

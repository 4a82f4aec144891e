"""HDF5 files laid out as the programs that write them do, written with h5py for the tests.

* `write_py4dstem`: a py4DSTEM 0.14 DataCube saved with `py4DSTEM.save` (the `emdfile` EMD 1.0
  writer): root attributes `emd_group_type` 'file', `version_major` 1, `version_minor` 0,
  `UUID`, `authoring_program`, `authoring_user`; a root group `py4DSTEM_root`
  (`emd_group_type` 'root') whose `metadatabundle/calibration` group (`emd_group_type`
  'metadata', `python_class` 'Calibration') holds one scalar dataset per calibration
  (`R_pixel_size`, `Q_pixel_size`, `R_pixel_units`, `Q_pixel_units` as UTF-8 bytes, each with
  a `type` attribute); and the array group `py4DSTEM_root/datacube` (`emd_group_type` 'array',
  `python_class` 'DataCube') with `data` (Rx, Ry, Qx, Qy) and the dim vectors `dim0`..`dim3`
  (two values where linear, attributes `name` Rx/Ry/Qx/Qy and `units`). Layout from emdfile's
  `Node.to_h5`, `Array.to_h5`, `Metadata._save_item` and `_write_header`, and py4DSTEM's
  `DataCube.calibrate` / `Calibration.__init__`.
* `write_arina`: a Dectris ARINA acquisition: `NAME_master.h5` with `/entry/data/data_000001`,
  ... as external links to `NAME_data_000001.h5:/entry/data/data`, each a (frames, H, W) stack
  in (1, H, W) chunks compressed with bitshuffle + LZ4 (HDF5 filter 32008, `hdf5plugin`), and
  NeXus `/entry/instrument` datasets: `beam/incident_wavelength` (Å), `detector/x_pixel_size`,
  `y_pixel_size`, `detector_distance` (m), `beam_center_x/y` (px), `bit_depth_image`,
  `detectorSpecific/nimages`.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np


def _save_metadata_item(group: h5py.Group, key: str, value: object) -> None:
    """One calibration value as emdfile's `Metadata._save_item` writes it."""
    if isinstance(value, str):
        dataset = group.create_dataset(key, data=value.encode("utf-8"))
        dataset.attrs["type"] = b"string"
    else:
        dataset = group.create_dataset(key, data=value, dtype=type(value))
        dataset.attrs["type"] = b"number"


def write_py4dstem(path: Path, data: np.ndarray, *, r_pixel_size: float, r_pixel_units: str,
                   q_pixel_size: float, q_pixel_units: str,
                   origin: tuple[float, float] | None = None) -> Path:
    """`data` (Rx, Ry, Qx, Qy) as py4DSTEM 0.14 saves a calibrated DataCube (module docstring)."""
    with h5py.File(path, "w") as f:
        f.attrs.create("emd_group_type", "file")
        f.attrs.create("version_major", 1)
        f.attrs.create("version_minor", 0)
        f.attrs.create("UUID", str(uuid.uuid4()))
        f.attrs.create("authoring_program", "py4DSTEM")
        f.attrs.create("authoring_user", "")
        root = f.create_group("py4DSTEM_root")
        root.attrs.create("emd_group_type", "root")
        root.attrs.create("python_class", "Root")
        bundle = root.create_group("metadatabundle")
        bundle.attrs.create("emd_group_type", "metadatabundle")
        calibration = bundle.create_group("calibration")
        calibration.attrs.create("emd_group_type", "metadata")
        calibration.attrs.create("python_class", "Calibration")
        values: dict[str, object] = {"Q_pixel_size": q_pixel_size, "R_pixel_size": r_pixel_size,
                                     "Q_pixel_units": q_pixel_units,
                                     "R_pixel_units": r_pixel_units}
        if origin is not None:
            values.update(qx0_mean=float(origin[0]), qy0_mean=float(origin[1]))
        for key, value in values.items():
            _save_metadata_item(calibration, key, value)
        cube = root.create_group("datacube")
        cube.attrs.create("emd_group_type", "array")
        cube.attrs.create("python_class", "DataCube")
        dataset = cube.create_dataset("data", shape=data.shape, data=data)
        dataset.attrs.create("units", "pixel intensity")
        qx0, qy0 = origin if origin is not None else (0.0, 0.0)
        dims = [([0.0, r_pixel_size], "Rx", r_pixel_units),
                ([0.0, r_pixel_size], "Ry", r_pixel_units),
                ([-qx0, -qx0 + q_pixel_size], "Qx", q_pixel_units),
                ([-qy0, -qy0 + q_pixel_size], "Qy", q_pixel_units)]
        for n, (vector, name, units) in enumerate(dims):
            dim = cube.create_dataset(f"dim{n}", data=np.asarray(vector))
            dim.attrs.create("name", name)
            dim.attrs.create("units", units)
    return path


def write_arina(master: Path, frames: np.ndarray, *, frames_per_file: int,
                wavelength_a: float | None, pixel_size_m: float | None,
                detector_distance_m: float | None) -> list[Path]:
    """`frames` (N, H, W) as an ARINA acquisition (module docstring): the master and its
    data files, `frames_per_file` frames each; returns [master, data files...]."""
    assert master.name.endswith("_master.h5"), master
    stem = master.name.removesuffix("_master.h5")
    written = [master]
    with h5py.File(master, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        data_group = entry.create_group("data")
        data_group.attrs["NX_class"] = "NXdata"
        for number, first in enumerate(range(0, len(frames), frames_per_file), start=1):
            name = f"{stem}_data_{number:06d}.h5"
            block = frames[first:first + frames_per_file]
            with h5py.File(master.parent / name, "w") as d:
                dataset = d.create_group("entry").create_group("data").create_dataset(
                    "data", data=block, chunks=(1, *block.shape[1:]),
                    **hdf5plugin.Bitshuffle(cname="lz4"))
                dataset.attrs["image_nr_low"] = first + 1
                dataset.attrs["image_nr_high"] = first + len(block)
            data_group[f"data_{number:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
            written.append(master.parent / name)
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        beam = instrument.create_group("beam")
        if wavelength_a is not None:
            beam.create_dataset("incident_wavelength", data=wavelength_a).attrs["units"] = "angstrom"
        detector = instrument.create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        if pixel_size_m is not None:
            for axis in "xy":
                detector.create_dataset(f"{axis}_pixel_size", data=pixel_size_m).attrs["units"] = "m"
        if detector_distance_m is not None:
            detector.create_dataset("detector_distance", data=detector_distance_m).attrs["units"] = "m"
        for axis, size in zip("xy", frames.shape[:0:-1], strict=True):
            detector.create_dataset(f"beam_center_{axis}", data=size / 2).attrs["units"] = "pixel"
        detector.create_dataset("bit_depth_image", data=8 * frames.dtype.itemsize)
        detector.create_dataset("description", data=b"Dectris ARINA Si 192x192")
        specific = detector.create_group("detectorSpecific")
        specific.create_dataset("nimages", data=len(frames))
        specific.create_dataset("ntrigger", data=1)
    return written

"""HDF5 4D-STEM files told apart by what they hold, and the Dectris ARINA reader.

Why: `.h5` is written by many programs with different layouts, so the extension says nothing.
`hdf5_kind` looks inside (h5py, the file is only opened):

* an EMD 1.0 file (root attributes `emd_group_type` and `version_major`, as py4DSTEM's
  `emdfile` and Prismatic write), an older Berkeley EMD (`version_major` < 1) or a Velox EMD
  (`Version` dataset) → "emd", read by rosettasciio's EMD reader (it reads py4DSTEM's
  datacube lazily, with its dim vectors as axes); `py4dstem_calibration` reads the py4DSTEM
  `Calibration` (R_pixel_size, Q_pixel_size and their units) so that prediction.json can say
  where each value came from;
* a Dectris ARINA master file (`/entry/data/data_000001`, an external link to a data file)
  → "arina", read here (`read_arina`), not by rosettasciio's ARINA reader: that one reads the
  whole scan into memory (no lazy mode), and a scan is read a band of rows at a time
  (`predict.scan_inputs`); here `ArinaFrames` reads only the frames of the rows asked for,
  through h5py and the bitshuffle/LZ4 filter of `hdf5plugin`, and the calibration comes from
  the NeXus `/entry/instrument` fields Dectris writes (beam energy or wavelength, pixel size
  and detector distance → angular pixel = pixel size / distance);
* a HyperSpy file (root attribute `file_format` "HyperSpy") → "hspy";
* anything else is refused, naming what was looked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from stemdl.configs.units import energy_ev_for_wavelength_a

# What `hdf5_kind` looks for, in the words of the refusal.
LOOKED_FOR = ("an EMD file (root attributes 'emd_group_type' and 'version_major', as py4DSTEM "
              "and Prismatic write, or a Velox 'Version'), a Dectris ARINA master file "
              "(/entry/data/data_000001 linking to its data files) or a HyperSpy file (root "
              "attribute file_format 'HyperSpy')")

_LENGTH_TO_M = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6,
                "nm": 1e-9, "angstrom": 1e-10, "a": 1e-10, "å": 1e-10}
_ENERGY_TO_EV = {"ev": 1.0, "kev": 1e3, "mev": 1e6}


def _error(message: str) -> Exception:
    from stemdl.predict.microscope_files import MicroscopeFileError

    return MicroscopeFileError(message)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def hdf5_kind(path: Path) -> str:
    """"emd", "arina" or "hspy" for the HDF5 file at `path` (module docstring), or a
    `MicroscopeFileError` saying what it is not."""
    import h5py

    if not h5py.is_hdf5(path):
        raise _error(f"{path}: not an HDF5 file (no HDF5 signature), though its name ends in "
                     f"{path.suffix}; stemdl reads {path.suffix} files that are {LOOKED_FOR}")
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            if _text(attrs.get("file_format", "")) == "HyperSpy":
                return "hspy"
            if "version_major" in attrs or "emd_group_type" in attrs or "Version" in f:
                return "emd"
            data = f.get("entry/data")
            if data is not None and "data_000001" in data:
                return "arina"
            if isinstance(data, h5py.Group) and isinstance(data.get("data"), h5py.Dataset):
                raise _error(f"{path}: a Dectris data file (frames in /entry/data/data, no "
                             "calibration): pass its master file, NAME_master.h5, which "
                             "links every data file of the acquisition")
            top = ", ".join(sorted(f.keys())[:8]) or "nothing"
    except OSError as error:
        raise _error(f"{path}: HDF5 could not open it, the file is damaged or truncated "
                     f"({error})") from None
    raise _error(f"{path}: an HDF5 file, but not one stemdl reads: looked for {LOOKED_FOR}; "
                 f"its top level holds {top}")


# --- py4DSTEM (EMD 1.0) -----------------------------------------------------------------------


def py4dstem_calibration(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Scan step (Å) and angular (mrad/px) or reciprocal (Å⁻¹/px) pixel from the first
    py4DSTEM `Calibration` in an EMD 1.0 file (`<root>/metadatabundle/calibration`), with
    their sources; units 'pixels' (py4DSTEM's default, uncalibrated) give nothing."""
    import h5py

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    with h5py.File(path, "r") as f:
        group = next((g["metadatabundle/calibration"] for g in f.values()
                      if isinstance(g, h5py.Group) and "metadatabundle/calibration" in g), None)
        if group is None:
            return values, sources
        where = f"py4DSTEM calibration ({group.name})"

        def read(key: str) -> Any:
            return group[key][()] if key in group and isinstance(group[key], h5py.Dataset) else None

        r_size, r_units = read("R_pixel_size"), read("R_pixel_units")
        q_size, q_units = read("Q_pixel_size"), read("Q_pixel_units")
        semiangle = read("probe_convergence_semiangle_mrad")
    if r_size is not None and r_units is not None:
        factor = {"a": 1.0, "å": 1.0, "nm": 10.0}.get(_text(r_units).strip().lower())
        if factor is not None:
            step = float(r_size) * factor
            values["scan_step_a"] = (step, step)
            sources["scan_step_a"] = f"{where}: R_pixel_size {float(r_size):.6g} {_text(r_units)}"
    if q_size is not None and q_units is not None:
        units = _text(q_units).strip()
        label = f"{where}: Q_pixel_size {float(q_size):.6g} {units}"
        if units == "mrad":
            values["angular_sampling_mrad"] = (float(q_size), float(q_size))
            sources["angular_sampling_mrad"] = label
        elif units == "A^-1":
            values["reciprocal_sampling_inv_a"] = (float(q_size), float(q_size))
            sources["reciprocal_sampling_inv_a"] = label
    if semiangle is not None and np.ndim(semiangle) == 0 and float(semiangle) > 0:
        values["semiangle_mrad"] = float(semiangle)
        sources["semiangle_mrad"] = f"{where}: probe_convergence_semiangle_mrad"
    return values, sources


# --- Dectris ARINA ----------------------------------------------------------------------------


class ArinaFrames:
    """The frames of an ARINA acquisition as a (rows, cols, H, W) array-like, read lazily.

    Slicing whole scan rows (`frames[r0:r1]`, what `predict.scan_inputs` does) reads only
    the frames of those rows from the data files; a frame that cannot be decoded raises a
    `MicroscopeFileError` naming its data file, frame and scan row. Pixels the detector's
    `pixel_mask` marks as bad (dead, hot, gaps) are set to 0."""

    def __init__(self, master: Path, scan_shape: tuple[int, int],
                 blocks: list[tuple[str, int]], frame_shape: tuple[int, int], dtype: np.dtype,
                 mask: np.ndarray | None) -> None:
        self._master = master
        self._blocks = blocks  # (link name in /entry/data, frames in it), in order
        self._mask = mask
        self.shape = (*scan_shape, *frame_shape)
        self.dtype = dtype
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[0:self.shape[0]]
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, int | np.integer):
            start = int(key) + (self.shape[0] if key < 0 else 0)
            return self._rows(start, start + 1)[0][rest] if rest else self._rows(start, start + 1)[0]
        start, stop, step = key.indices(self.shape[0])
        rows = self._rows(start, stop)[::step] if stop > start else self._rows(start, start)
        return rows[(slice(None), *rest)] if rest else rows

    def _rows(self, start: int, stop: int) -> np.ndarray:
        import h5py

        cols = self.shape[1]
        first, last = start * cols, stop * cols
        out = np.empty((last - first, *self.shape[2:]), dtype=self.dtype)
        with h5py.File(self._master, "r") as f:
            offset = 0
            for name, count in self._blocks:
                lo, hi = max(first, offset), min(last, offset + count)
                if lo < hi:
                    dataset = f["entry/data"][name]
                    try:
                        out[lo - first:hi - first] = dataset[lo - offset:hi - offset]
                    except (OSError, ValueError, RuntimeError):
                        self._damaged_frame(dataset, name, lo - offset, hi - offset, offset)
                offset += count
        if self._mask is not None:
            out[:, self._mask] = 0
        return out.reshape(stop - start, cols, *self.shape[2:])

    def _damaged_frame(self, dataset: Any, name: str, lo: int, hi: int, offset: int) -> None:
        """Find the first frame in [lo, hi) of `dataset` that cannot be read, and say which."""
        for index in range(lo, hi):
            try:
                dataset[index]
            except (OSError, ValueError, RuntimeError) as error:
                frame = offset + index
                row, col = divmod(frame, self.shape[1])
                raise _error(f"{self._master}: frame {frame} (scan row {row}, column {col}) "
                             f"cannot be read from {name} ({dataset.file.filename}, frame "
                             f"{index}): the data file is damaged or truncated "
                             f"({_first_line(error)})") from None
        raise _error(f"{self._master}: frames {offset + lo}–{offset + hi - 1} of {name} cannot "
                     "be read, though each can alone")


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else "no message"


def _with_units(dataset: Any, table: dict[str, float], default: str) -> float | None:
    value = np.asarray(dataset[()], dtype=float)
    if value.size != 1 or not np.isfinite(value).all():
        return None
    units = _text(dataset.attrs.get("units", default)).strip().lower()
    factor = table.get(units)
    return None if factor is None else float(value.reshape(())) * factor


def read_arina(master: Path, scan_shape: tuple[int, int] | None
               ) -> tuple[ArinaFrames, dict[str, Any], dict[str, str], list[str]]:
    """The frames of an ARINA master file (lazily), its calibration and sources, and notes."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filter Dectris writes with)

    notes: list[str] = []
    with h5py.File(master, "r") as f:
        group = f["entry/data"]
        names = sorted(n for n in group if n.startswith("data_"))
        blocks = []
        frame_shape = dtype = None
        for name in names:
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                target = master.parent / link.filename
                if not target.exists():
                    raise _error(f"{master}: the ARINA master links {name} to {link.filename}, "
                                 f"which is not beside it ({target} missing): copy every "
                                 f"{master.name.removesuffix('_master.h5')}_data_*.h5 file "
                                 "with the master")
            try:
                dataset = group[name]
            except (OSError, KeyError) as error:
                raise _error(f"{master}: {name} of the ARINA master cannot be opened, its data "
                             f"file is damaged or truncated ({_first_line(error)})") from None
            if dataset.ndim != 3:
                raise _error(f"{master}: {name} holds an array of shape {dataset.shape}, not a "
                             "stack of frames (frames, height, width)")
            if frame_shape is None:
                frame_shape, dtype = tuple(dataset.shape[1:]), dataset.dtype
            elif tuple(dataset.shape[1:]) != frame_shape:
                raise _error(f"{master}: {name} holds {dataset.shape[1]}x{dataset.shape[2]} "
                             f"frames, {names[0]} {frame_shape[0]}x{frame_shape[1]}")
            blocks.append((name, int(dataset.shape[0])))
        calibration, sources = _arina_calibration(f)
        mask = None
        specific = f.get("entry/instrument/detector/detectorSpecific")
        if specific is not None and "pixel_mask" in specific:
            pixel_mask = np.asarray(specific["pixel_mask"][()]) != 0
            if pixel_mask.shape == frame_shape and pixel_mask.any():
                mask = pixel_mask
                notes.append(f"{int(pixel_mask.sum())} pixels marked in the detector's "
                             "pixel_mask are set to 0")
    assert frame_shape is not None and dtype is not None  # "data_000001" is in the group
    total = sum(count for _, count in blocks)
    if scan_shape is None:
        side = math.isqrt(total)
        if side * side != total:
            raise _error(f"{master}: {total} frames, and an ARINA master does not record the "
                         "scan shape: pass --scan-shape ROWS COLS")
        scan_shape = (side, side)
        notes.append(f"the ARINA master does not record the scan shape: read its {total} "
                     f"frames as a square {side}x{side} scan (pass --scan-shape otherwise)")
    elif scan_shape[0] * scan_shape[1] != total:
        raise _error(f"{master}: {total} frames do not make a scan of --scan-shape "
                     f"{scan_shape[0]} {scan_shape[1]} ({scan_shape[0] * scan_shape[1]} frames)")
    notes.append(f"ARINA data files: {', '.join(f'{n} ({c} frames)' for n, c in blocks)}")
    frames = ArinaFrames(master, scan_shape, blocks, frame_shape, np.dtype(dtype), mask)
    return frames, calibration, sources, notes


def _arina_calibration(f: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Beam energy and angular pixel from the NeXus fields of an ARINA master, where present."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    beam = f.get("entry/instrument/beam")
    if beam is not None and "incident_energy" in beam:
        energy = _with_units(beam["incident_energy"], _ENERGY_TO_EV, "eV")
        if energy:
            values["energy_ev"] = energy
            sources["energy_ev"] = "ARINA master: /entry/instrument/beam/incident_energy"
    if "energy_ev" not in values and beam is not None and "incident_wavelength" in beam:
        wavelength_m = _with_units(beam["incident_wavelength"], _LENGTH_TO_M, "angstrom")
        if wavelength_m:
            values["energy_ev"] = energy_ev_for_wavelength_a(wavelength_m * 1e10)
            sources["energy_ev"] = (f"ARINA master: /entry/instrument/beam/incident_wavelength "
                                    f"{wavelength_m * 1e10:.6g} Å")
    detector = f.get("entry/instrument/detector")
    if detector is not None and "detector_distance" in detector:
        distance = _with_units(detector["detector_distance"], _LENGTH_TO_M, "m")
        pixels = [_with_units(detector[k], _LENGTH_TO_M, "m") if k in detector else None
                  for k in ("y_pixel_size", "x_pixel_size")]
        if distance and all(pixels):
            values["angular_sampling_mrad"] = tuple(1e3 * p / distance for p in pixels)  # type: ignore[operator]
            sources["angular_sampling_mrad"] = (
                f"ARINA master: /entry/instrument/detector x_pixel_size {pixels[1]:.6g} m / "
                f"detector_distance {distance:.6g} m")
    return values, sources

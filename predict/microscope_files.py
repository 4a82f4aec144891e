"""4D-STEM scans from microscope files: read them, know their calibration, write signals.

In: a file written by acquisition or analysis software (.hspy, .mib, .emd, .dm4, .blo, ... read
through HyperSpy's rosettasciio; a Dectris ARINA master through h5py, lazily), a `.npy` array,
or one sample of a stemdl Zarr store. An .h5/.hdf5/.emd goes to the reader its content calls
for (EMD, ARINA, HyperSpy: `predict.hdf5_scans`); a .mib, .blo or .npy is first checked
against its own header (`predict.file_checks`), so a damaged file is refused in its own
terms. Out: a `Scan4D`, the patterns as (scan_y, scan_x, ky, kx) and the calibrations the
file holds; and the other way, `signal_dict` / `write_signal` (rosettasciio's writers, used
by `export` and for the predicted map). Putting patterns on a model's angular grid is
`predict.pattern_resampling`.

Calibrations (`CALIBRATION_FIELDS`): beam energy (eV), convergence semi-angle (mrad), angular
pixel size (mrad/px, or Å⁻¹/px, converted with the electron wavelength), scan step (Å). A file
gives what its format records (hspy/emd/dm axes scales and units, HyperSpy's
`Acquisition_instrument.TEM` metadata, py4DSTEM's Calibration, an ARINA master's NeXus
instrument fields; a .mib or .npy gives none), the command line overrides
it, and `resolve_calibration` says where each value came from. A value that is missing is an
error naming the option that supplies it, never a default.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stemdl.configs import StemdlError
from stemdl.configs.units import wavelength_a
from stemdl.predict.file_checks import check_blockfile, check_mib, check_npy
from stemdl.predict.hdf5_scans import hdf5_kind, py4dstem_calibration, read_arina

CALIBRATION_FIELDS = ("energy_ev", "semiangle_mrad", "angular_sampling_mrad", "scan_step_a")
# The command-line option that supplies each calibration (for error messages).
CALIBRATION_OPTIONS = {
    "energy_ev": "--energy-kev (or --energy-ev)",
    "semiangle_mrad": "--semiangle-mrad",
    "angular_sampling_mrad": "--angular-pixel-mrad (or --angular-pixel-inv-a)",
    "scan_step_a": "--scan-step-a",
}

# rosettasciio plugin per extension where several plugins claim one (mrc, xml, ...); an
# .h5/.hdf5/.emd is routed by its content (`predict.hdf5_scans.hdf5_kind`), the writers
# use this table.
_HDF5_SUFFIXES = (".h5", ".hdf5", ".emd")
_PREFERRED_PLUGIN = {
    ".hspy": "rsciio.hspy", ".hdf5": "rsciio.hspy",
    ".mib": "rsciio.quantumdetector", ".emd": "rsciio.emd", ".dm3": "rsciio.digitalmicrograph",
    ".dm4": "rsciio.digitalmicrograph", ".blo": "rsciio.blockfile", ".mrc": "rsciio.mrc",
    ".h5": "rsciio.hspy", ".xml": "rsciio.empad", ".tvips": "rsciio.tvips",
    ".ser": "rsciio.tia", ".emi": "rsciio.tia", ".tif": "rsciio.tiff", ".tiff": "rsciio.tiff",
}

# Length units → Å; angular units → (mrad factor) or reciprocal units → (Å⁻¹ factor).
_LENGTH_TO_A = {"å": 1.0, "a": 1.0, "angstrom": 1.0, "ang": 1.0, "nm": 10.0, "pm": 0.01,
                "µm": 1e4, "um": 1e4, "μm": 1e4}
_ANGLE_TO_MRAD = {"mrad": 1.0, "rad": 1e3, "µrad": 1e-3, "urad": 1e-3}
_RECIPROCAL_TO_INV_A = {"1/å": 1.0, "1/a": 1.0, "å^-1": 1.0, "a^-1": 1.0, "å⁻¹": 1.0,
                        "1/angstrom": 1.0, "1/nm": 0.1, "nm^-1": 0.1, "nm⁻¹": 0.1,
                        "1 / nm": 0.1, "1 / å": 1.0, "1/pm": 100.0}


class MicroscopeFileError(StemdlError, ValueError):
    """A file that cannot be read as a 4D-STEM scan; the message says what was found."""


class CalibrationError(StemdlError, ValueError):
    """A calibration that is missing or inconsistent; the message names the option to pass."""


@dataclass
class Scan4D:
    """A 4D-STEM scan: patterns (scan_y, scan_x, ky, kx) and what the file says about them."""

    data: Any  # a NumPy array or memory map, or rosettasciio's lazy Dask array: slice it
    path: str
    format: str  # "hspy", "quantumdetector", "npy", "stemdl-store", ...
    calibration: dict[str, Any] = field(default_factory=dict)  # values found in the file
    calibration_sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def scan_shape(self) -> tuple[int, int]:
        return int(self.data.shape[0]), int(self.data.shape[1])

    @property
    def pattern_shape(self) -> tuple[int, int]:
        return int(self.data.shape[2]), int(self.data.shape[3])


def read_scan(path: str | Path, *, scan_shape: tuple[int, int] | None = None,
              sample: int | None = None) -> Scan4D:
    """The scan in `path` (see the module docstring); `scan_shape` (rows, cols) reshapes a
    stack of frames (a .mib without its .hdr, a 3-D .npy); `sample` picks one stored sample of
    a stemdl Zarr store."""
    if "://" in str(path):  # an fsspec URL (s3://, gs://, file://, ...): only stores are
        # read remotely; Path() would also fold its '//' into a wrong local path
        if sample is None:
            raise MicroscopeFileError(f"{path}: a URL is read as a stemdl Zarr store; pass "
                                      "--sample I (which stored sample to predict)")
        return _read_store_sample(str(path), sample)
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise MicroscopeFileError(f"no file or directory at {path}")
    if path.is_dir() or suffix == ".zarr":
        return _read_store_sample(path, sample)
    if sample is not None:
        raise MicroscopeFileError(f"--sample is for a stemdl Zarr store; {path} is a file")
    if suffix == ".npy":
        check_npy(path)
        data = np.load(path, mmap_mode="r")  # read as sliced, never whole
        return Scan4D(_as_4d(data, scan_shape, path), str(path), "npy",
                      notes=["a .npy holds no calibration: all of it comes from the options"])
    if suffix in _HDF5_SUFFIXES:  # by content: the extension is shared by many layouts
        kind = hdf5_kind(path)
        if kind == "arina":
            return _read_arina(path, scan_shape)
        return _read_with_rosettasciio(path, suffix, scan_shape, f"rsciio.{kind}")
    if suffix == ".mib":
        check_mib(path, scan_shape)
    elif suffix == ".blo":
        check_blockfile(path)
    return _read_with_rosettasciio(path, suffix, scan_shape)


def _read_arina(path: Path, scan_shape: tuple[int, int] | None) -> Scan4D:
    frames, calibration, sources, notes = read_arina(path, scan_shape)
    return Scan4D(frames, str(path), "arina", calibration, sources,
                  notes=[*notes, "the ARINA master records no scan step or convergence "
                         "semi-angle: they come from the options"])


def _as_4d(data: np.ndarray, scan_shape: tuple[int, int] | None, path: Path) -> np.ndarray:
    if data.ndim == 3 and scan_shape is not None:
        rows, cols = scan_shape
        if rows * cols != data.shape[0]:
            raise MicroscopeFileError(f"{path}: {data.shape[0]} frames do not make a scan of "
                                      f"--scan-shape {rows} {cols} ({rows * cols} frames)")
        return data.reshape(rows, cols, *data.shape[1:])
    if data.ndim != 4:
        hint = " (pass --scan-shape ROWS COLS)" if data.ndim == 3 else ""
        raise MicroscopeFileError(f"{path}: expected a 4D-STEM scan (scan_y, scan_x, ky, kx), "
                                  f"got an array of shape {tuple(data.shape)}{hint}")
    if scan_shape is not None and tuple(data.shape[:2]) != tuple(scan_shape):
        raise MicroscopeFileError(f"{path}: the scan is {data.shape[0]}x{data.shape[1]}, not "
                                  f"--scan-shape {scan_shape[0]} {scan_shape[1]}")
    return data


def _plugin_for(suffix: str) -> str:
    from rsciio import IO_PLUGINS

    if suffix in _PREFERRED_PLUGIN:
        return _PREFERRED_PLUGIN[suffix]
    for plugin in IO_PLUGINS:
        if suffix.lstrip(".") in [e.lower() for e in plugin["file_extensions"]]:
            return str(plugin["api"])
    known = sorted({e.lower() for p in IO_PLUGINS for e in p["file_extensions"]})
    raise MicroscopeFileError(f"no reader for '{suffix}' files: stemdl reads .npy, a stemdl "
                              f"Zarr store, and through rosettasciio {', '.join(known)}")


def _read_with_rosettasciio(path: Path, suffix: str, scan_shape: tuple[int, int] | None,
                            module: str | None = None) -> Scan4D:
    module = module or _plugin_for(suffix)
    try:
        reader = importlib.import_module(module)
    except ImportError as error:  # an optional dependency of that reader
        raise MicroscopeFileError(f"{path}: reading '{suffix}' needs {error.name or error}, "
                                  f"which {module} imports; install it (pip install "
                                  f"'rosettasciio[...]', see rosettasciio's docs)") from None
    # Lazily (a Dask array over the file), where the reader can: a scan is read by slicing it,
    # a band of rows at a time (`predict.scan_inputs`), and may be larger than memory.
    kwargs: dict[str, Any] = {"lazy": True} if _reads_lazily(reader) else {}
    if module == "rsciio.quantumdetector" and scan_shape is not None:
        kwargs["navigation_shape"] = (scan_shape[1], scan_shape[0])  # rsciio: (x, y)
    try:
        with warnings.catch_warnings():  # what they warn of is checked here, or said below
            warnings.simplefilter("ignore")
            signals = reader.file_reader(str(path), **kwargs)
    except Exception as error:  # a reader's own error, whatever its type: say it in words
        raise MicroscopeFileError(f"{path}: {module} could not read it as a {suffix} scan, "
                                  f"the file is damaged or not of this kind "
                                  f"({_reader_words(error)})") from None
    shapes = [tuple(np.shape(s["data"])) for s in signals]
    chosen = next((s for s in signals if np.ndim(s["data"]) == 4), None)
    if chosen is None:
        chosen = next((s for s in signals if np.ndim(s["data"]) == 3), None)
    if chosen is None:
        raise MicroscopeFileError(f"{path}: no 4D-STEM scan in the file (signals of shapes "
                                  f"{shapes})")
    data = _as_4d(chosen["data"], scan_shape, path)
    scan = Scan4D(data, str(path), module.removeprefix("rsciio."))
    if len(signals) > 1:
        scan.notes.append(f"the file holds {len(signals)} signals {shapes}; read the first "
                          f"4-D one {tuple(data.shape)}")
    if np.ndim(chosen["data"]) == 4:
        _calibration_from_axes(chosen["axes"], scan)
    _calibration_from_metadata(chosen.get("metadata", {}), scan)
    if module == "rsciio.emd" and suffix in _HDF5_SUFFIXES:
        values, sources = py4dstem_calibration(path)  # its own record wins over the dims
        scan.calibration.update(values)
        scan.calibration_sources.update(sources)
        if values:
            scan.notes.append("a py4DSTEM (EMD 1.0) file: calibration from its Calibration "
                              f"({', '.join(sorted(values))})")
    return scan


def _reader_words(error: BaseException) -> str:
    """A reader's exception as words: its message, or what it is when it has none (never
    the class name alone)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, ZeroDivisionError) or not text:
        return "the reader found no complete data in it"
    return text


def _reads_lazily(reader: Any) -> bool:
    return "lazy" in inspect.signature(reader.file_reader).parameters


def _unit_key(units: Any) -> str:
    return str(units or "").strip().lower().replace(" ", "").replace("**", "^")


def _calibration_from_axes(axes: list[dict[str, Any]], scan: Scan4D) -> None:
    """Scan step (Å) from the navigation axes and the angular pixel from the signal axes,
    where their units say what they are (axes in pixels, or without units, say nothing)."""
    ordered = sorted(axes, key=lambda a: a.get("index_in_array", axes.index(a)))
    scan_axes, pattern_axes = ordered[:2], ordered[2:]
    steps = []
    for axis in scan_axes:
        factor = _LENGTH_TO_A.get(_unit_key(axis.get("units")))
        steps.append(None if factor is None else float(axis["scale"]) * factor)
    if all(s is not None for s in steps):
        scan.calibration["scan_step_a"] = (steps[0], steps[1])
        scan.calibration_sources["scan_step_a"] = f"file axes ({scan_axes[0].get('units')})"
    mrad, inv_a = [], []
    for axis in pattern_axes:
        key = _unit_key(axis.get("units"))
        if key in _ANGLE_TO_MRAD:
            mrad.append(float(axis["scale"]) * _ANGLE_TO_MRAD[key])
        elif key.replace(" ", "") in _RECIPROCAL_TO_INV_A:
            inv_a.append(float(axis["scale"]) * _RECIPROCAL_TO_INV_A[key])
    if len(mrad) == 2:
        scan.calibration["angular_sampling_mrad"] = (mrad[0], mrad[1])
        scan.calibration_sources["angular_sampling_mrad"] = "file axes (mrad)"
    elif len(inv_a) == 2:
        scan.calibration["reciprocal_sampling_inv_a"] = (inv_a[0], inv_a[1])
        scan.calibration_sources["reciprocal_sampling_inv_a"] = (
            f"file axes ({pattern_axes[0].get('units')})")


def _calibration_from_metadata(metadata: dict[str, Any], scan: Scan4D) -> None:
    tem = metadata.get("Acquisition_instrument", {}).get("TEM", {})
    if tem.get("beam_energy"):
        scan.calibration["energy_ev"] = float(tem["beam_energy"]) * 1e3  # HyperSpy: keV
        scan.calibration_sources["energy_ev"] = "file metadata (Acquisition_instrument.TEM.beam_energy, keV)"
    if tem.get("convergence_angle"):
        scan.calibration["semiangle_mrad"] = float(tem["convergence_angle"])
        scan.calibration_sources["semiangle_mrad"] = (
            "file metadata (Acquisition_instrument.TEM.convergence_angle, mrad)")


def stored_scan(store_url: str, index: int) -> tuple[Any, np.ndarray]:
    """A stored sample as (its record, its patterns as a (scan_y, scan_x, ky, kx) float32
    scan); a sample stored as failed is refused with its reason."""
    from stemdl.datasets.inspect import read_sample

    stored = read_sample(store_url, index)
    record = stored["record"]
    if record is None:
        raise MicroscopeFileError(f"{store_url}: sample {index} failed to simulate "
                                  f"({stored['failure_reason']})")
    rows, cols = record.scan_gpts
    cbed = np.asarray(stored["cbed"], dtype=np.float32)
    return record, cbed.reshape(rows, cols, *cbed.shape[1:])


def record_calibration(record: Any) -> dict[str, Any]:
    """The four calibrations of a stored sample, from its record, (y, x) where per axis."""
    rows, cols = record.scan_gpts
    x0, y0, x1, y1 = record.target_region_a
    return {
        "energy_ev": record.energy_ev,
        "semiangle_mrad": record.semiangle_mrad,
        "angular_sampling_mrad": (record.angular_sampling_mrad[1], record.angular_sampling_mrad[0]),
        "scan_step_a": ((y1 - y0) / rows, (x1 - x0) / cols),
    }


def _read_store_sample(path: Path | str, sample: int | None) -> Scan4D:
    if sample is None:
        raise MicroscopeFileError(f"{path} is a directory: for a stemdl Zarr store pass "
                                  "--sample I (which stored sample to predict)")
    record, data = stored_scan(str(path), sample)
    source = f"store record of sample {sample}"
    calibration = record_calibration(record)
    return Scan4D(data, str(path), "stemdl-store", calibration,
                  dict.fromkeys(calibration, source),
                  notes=[f"stored sample {sample} ({record.material_id}, split {record.split})"])


def resolve_calibration(scan: Scan4D, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Every field of `CALIBRATION_FIELDS` and where it came from: an option (not None) wins
    over the file; a reciprocal pixel size (Å⁻¹/px, from either) becomes mrad/px with the
    wavelength of the energy used. `CalibrationError` names every missing option."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in (*CALIBRATION_FIELDS, "reciprocal_sampling_inv_a"):
        if options.get(name) is not None:
            values[name], sources[name] = options[name], "option"
        elif name in scan.calibration:
            values[name], sources[name] = scan.calibration[name], scan.calibration_sources[name]
    for name in ("angular_sampling_mrad", "scan_step_a", "reciprocal_sampling_inv_a"):
        if name in values:  # one number: square pixels / steps; two: (y, x)
            numbers = [float(v) for v in np.atleast_1d(np.asarray(values[name], dtype=float))]
            if len(numbers) not in (1, 2):
                raise CalibrationError(f"{name} takes one value or two (y, x), got {numbers}")
            values[name] = (numbers[0], numbers[-1])
    reciprocal = values.pop("reciprocal_sampling_inv_a", None)
    reciprocal_source = sources.pop("reciprocal_sampling_inv_a", None)
    use_reciprocal = reciprocal is not None and (
        "angular_sampling_mrad" not in values
        or (reciprocal_source == "option" and sources["angular_sampling_mrad"] != "option"))
    if use_reciprocal and "energy_ev" in values:
        lam = wavelength_a(float(values["energy_ev"]))
        values["angular_sampling_mrad"] = tuple(1e3 * lam * float(k) for k in reciprocal)
        sources["angular_sampling_mrad"] = (f"{reciprocal_source}: {reciprocal[0]:.6g} Å⁻¹/px "
                                            f"× λ = {lam:.5f} Å")
    missing = [name for name in CALIBRATION_FIELDS if name not in values]
    if missing:
        wanted = "; ".join(f"{n} ({CALIBRATION_OPTIONS[n]})" for n in missing)
        raise CalibrationError(f"{scan.path} ({scan.format}) does not record {wanted}: pass "
                               f"{'it' if len(missing) == 1 else 'them'} on the command line")
    for name in ("energy_ev", "semiangle_mrad", "angular_sampling_mrad", "scan_step_a"):
        numbers = np.atleast_1d(np.asarray(values[name], dtype=float))
        if not (np.all(np.isfinite(numbers)) and np.all(numbers > 0)):
            raise CalibrationError(f"{name} must be positive and finite, got {values[name]} "
                                   f"(from {sources[name]})")
    values["energy_ev"] = float(values["energy_ev"])
    values["semiangle_mrad"] = float(values["semiangle_mrad"])
    return values, sources


def calibrated_axes(shape: tuple[int, ...], scan_step_a: tuple[float, float],
                    angular_sampling_mrad: tuple[float, float], centre_px: tuple[float, float],
                    scan_offset_a: tuple[float, float] = (0.0, 0.0)) -> list[dict[str, Any]]:
    """rosettasciio axes of a (scan_y, scan_x, ky, kx) array: scan in Å, k in mrad with zero
    at the direct beam (pixel `centre_px`)."""
    names = ("y", "x", "ky", "kx")
    scales = (*scan_step_a, *angular_sampling_mrad)
    offsets = (*scan_offset_a, -centre_px[0] * angular_sampling_mrad[0],
               -centre_px[1] * angular_sampling_mrad[1])
    units = ("Å", "Å", "mrad", "mrad")
    return [{"name": n, "units": u, "scale": float(s), "offset": float(o), "size": int(size),
             "navigate": i < 2, "index_in_array": i}
            for i, (n, u, s, o, size) in enumerate(zip(names, units, scales, offsets, shape,
                                                       strict=True))]


def signal_dict(data: np.ndarray, axes: list[dict[str, Any]], title: str,
                energy_ev: float | None = None, semiangle_mrad: float | None = None,
                signal_type: str = "electron_diffraction",
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A rosettasciio signal dictionary (what its writers take and its readers return)."""
    tem: dict[str, Any] = {}
    if energy_ev is not None:
        tem["beam_energy"] = energy_ev / 1e3
    if semiangle_mrad is not None:
        tem["convergence_angle"] = semiangle_mrad
    metadata: dict[str, Any] = {"General": {"title": title},
                                "Signal": {"signal_type": signal_type}}
    if tem:
        metadata["Acquisition_instrument"] = {"TEM": tem}
    # The keys HyperSpy's own `Signal._to_dictionary` gives the hspy writer (it reads them all).
    return {"data": data, "axes": axes, "metadata": metadata,
            "original_metadata": {"stemdl": extra or {}}, "attributes": {"_lazy": False},
            "tmp_parameters": {}, "learning_results": {}, "models": {},
            "package_info": {"package": "stemdl", "package_version": ""}}


def write_signal(path: str | Path, signal: dict[str, Any]) -> Path:
    """Write a signal dictionary with the rosettasciio writer of `path`'s extension."""
    path = Path(path)
    module = _plugin_for(path.suffix.lower())
    writer = importlib.import_module(module)
    kwargs = {"show_progressbar": False} if module == "rsciio.hspy" else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.file_writer(str(path), signal, **kwargs)
    return path

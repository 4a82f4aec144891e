"""`stemdl predict` on the HDF5 layouts real programs write, and on damaged files.

One 16 × 16 scan of 48 × 48 px detector counts (a bright-field disk of the calibrated
semi-angle with Poisson noise, at half the finest training pixel of `tiny`, so it is binned 2×) is written as HyperSpy .hspy (the
reference, calibrated in its axes and metadata), as a py4DSTEM 0.14 EMD 1.0 file and as a
Dectris ARINA master + data files (bitshuffle/LZ4 chunks), laid out as those programs write
them (`h5_layouts`). An untrained `tiny` model predicts each through the command line: every
map must equal the .hspy one, because the same counts and the same calibration (read from each
file's own fields, or options where the format records none) make the same model input.
Then damaged and foreign files, each refused with one line (exit 2, no traceback) that says
what is wrong, and no output directory left behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from stemdl import pipeline
from stemdl.configs.units import wavelength_a

SCAN = 16
DETECTOR = 48
ENERGY_EV = 100e3
SEMIANGLE_MRAD = 8.0


@pytest.fixture(scope="module")
def setting(tiny_config, tmp_path_factory):  # type: ignore[no-untyped-def]
    """An untrained tiny checkpoint, the scan's counts and its calibration."""
    from stemdl.predict.trained_ranges import trained_ranges
    from stemdl.testing.checkpoints import untrained_checkpoint

    config = tiny_config()
    root = tmp_path_factory.mktemp("files")
    ranges = trained_ranges(config)
    rng = np.random.default_rng(11)
    rows, cols = np.indices((DETECTOR, DETECTOR))
    pixel_mrad = ranges.angular_sampling_mrad[0] / 2
    radius_px = SEMIANGLE_MRAD / pixel_mrad  # the disk the calibration says (predict checks it)
    disk = ((rows - 24) ** 2 + (cols - 24) ** 2 < radius_px**2) * 400.0 + 5.0
    texture = rng.random((SCAN, SCAN, 1, 1)) * 0.5 + 0.75  # a different pattern per probe
    counts = rng.poisson(disk * texture).astype(np.uint16)
    return {"checkpoint": untrained_checkpoint(config, root / "checkpoint.pt"),
            "counts": counts, "root": root, "pixel_mrad": pixel_mrad,
            "step_a": ranges.scan_step_a[0]}


def _predict(setting, data: Path, out: Path, *options: str) -> int:  # type: ignore[no-untyped-def]
    return pipeline.main(["predict", str(setting["checkpoint"]), str(data), "--out", str(out),
                          "--no-progress", *options])


def _write_hspy(path: Path, counts: np.ndarray, step_a: float, pixel_mrad: float) -> Path:
    from stemdl.predict.microscope_files import calibrated_axes, signal_dict, write_signal

    axes = calibrated_axes(counts.shape, (step_a, step_a), (pixel_mrad, pixel_mrad),
                           (24.0, 24.0))
    return write_signal(path, signal_dict(counts, axes, "reference", energy_ev=ENERGY_EV,
                                          semiangle_mrad=SEMIANGLE_MRAD))


def _write_arina(setting, folder: Path, counts: np.ndarray | None = None,  # type: ignore[no-untyped-def]
                 mask: np.ndarray | None = None) -> list[Path]:
    from stemdl.testing.h5_layouts import write_arina

    folder.mkdir(parents=True, exist_ok=True)
    counts = setting["counts"] if counts is None else counts
    pixel_m = 75e-6  # with a distance that gives the scan's angular pixel
    written = write_arina(folder / "scan_master.h5", counts.reshape(-1, DETECTOR, DETECTOR),
                          frames_per_file=100, wavelength_a=wavelength_a(ENERGY_EV),
                          pixel_size_m=pixel_m,
                          detector_distance_m=pixel_m / (setting["pixel_mrad"] * 1e-3))
    if mask is not None:
        with h5py.File(written[0], "r+") as f:
            f["entry/instrument/detector/detectorSpecific"].create_dataset(
                "pixel_mask", data=mask.astype(np.uint32))
    return written


def _map(out: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(out / "potential.zarr"), mode="r")[...])


def test_arina_and_py4dstem_scans_predict_as_their_hspy(setting, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The three layouts of the same counts give the same map; each calibration comes from
    the file's own fields, and prediction.json says which."""
    from stemdl.testing.h5_layouts import write_py4dstem

    counts, step, pixel = setting["counts"], setting["step_a"], setting["pixel_mrad"]
    hspy = _write_hspy(tmp_path / "scan.hspy", counts, step, pixel)
    assert _predict(setting, hspy, tmp_path / "hspy") == 0
    reference = _map(tmp_path / "hspy")
    assert reference.shape == (1, 4 * SCAN, 4 * SCAN)

    # py4DSTEM: R in Å and Q in Å⁻¹ (its usual calibration), energy and semi-angle as options
    inv_a = pixel * 1e-3 / wavelength_a(ENERGY_EV)
    py4dstem = write_py4dstem(tmp_path / "py4dstem.h5", counts, r_pixel_size=step,
                              r_pixel_units="A", q_pixel_size=inv_a, q_pixel_units="A^-1")
    assert _predict(setting, py4dstem, tmp_path / "py4dstem", "--energy-kev", "100",
                    "--semiangle-mrad", str(SEMIANGLE_MRAD)) == 0
    np.testing.assert_allclose(_map(tmp_path / "py4dstem"), reference, rtol=0, atol=1e-6)
    record = json.loads((tmp_path / "py4dstem" / "prediction.json").read_text())
    sources = record["calibration_sources"]
    assert record["data"]["format"] == "emd"
    assert sources["scan_step_a"].startswith("py4DSTEM calibration"), sources
    assert "R_pixel_size 1.5 A" in sources["scan_step_a"], sources
    assert "Q_pixel_size" in sources["angular_sampling_mrad"], sources
    assert record["calibration"]["angular_sampling_mrad"] == pytest.approx([pixel, pixel])

    # ARINA, with a hot pixel the detector's pixel_mask marks: it reads as 0
    hot = counts.copy()
    hot[..., 3, 40] = 65535
    mask = np.zeros((DETECTOR, DETECTOR), dtype=bool)
    mask[3, 40] = True
    master = _write_arina(setting, tmp_path / "arina", hot, mask)[0]
    zeroed = counts.copy()
    zeroed[..., 3, 40] = 0
    _write_hspy(tmp_path / "zeroed.hspy", zeroed, step, pixel)
    assert _predict(setting, tmp_path / "zeroed.hspy", tmp_path / "zeroed") == 0
    assert _predict(setting, master, tmp_path / "arina_out", "--semiangle-mrad",
                    str(SEMIANGLE_MRAD), "--scan-step-a", str(step)) == 0
    np.testing.assert_allclose(_map(tmp_path / "arina_out"), _map(tmp_path / "zeroed"),
                               rtol=0, atol=1e-6)
    record = json.loads((tmp_path / "arina_out" / "prediction.json").read_text())
    sources = record["calibration_sources"]
    assert record["data"]["format"] == "arina"
    assert "incident_wavelength" in sources["energy_ev"], sources
    assert "detector_distance" in sources["angular_sampling_mrad"], sources
    assert sources["scan_step_a"] == "option" and sources["semiangle_mrad"] == "option"
    assert record["calibration"]["energy_ev"] == pytest.approx(ENERGY_EV, rel=1e-9)
    assert any("pixel_mask" in note for note in record["data"]["notes"]), record["data"]
    assert any("square 16x16" in note for note in record["data"]["notes"]), record["data"]


def test_arina_frames_are_read_a_band_of_rows_at_a_time(setting, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The ARINA reader is lazy: a band of rows reads the frames of those rows, across the
    boundary between two data files, and a scan shape is taken from --scan-shape."""
    from stemdl.predict.hdf5_scans import ArinaFrames
    from stemdl.predict.microscope_files import read_scan

    master = _write_arina(setting, tmp_path)[0]
    scan = read_scan(master, scan_shape=(32, 8))
    assert isinstance(scan.data, ArinaFrames) and scan.data.shape == (32, 8, DETECTOR, DETECTOR)
    frames = setting["counts"].reshape(32, 8, DETECTOR, DETECTOR)
    np.testing.assert_array_equal(scan.data[12:14], frames[12:14])  # frames 96–111: two files
    np.testing.assert_array_equal(np.asarray(scan.data), frames)


def test_hdf5_kind_is_read_from_the_content(setting, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An .hdf5 HyperSpy file, an .emd written by rosettasciio and an ARINA master renamed
    .hdf5 are each sent to their reader, whatever the extension."""
    from stemdl.predict.hdf5_scans import hdf5_kind

    counts = setting["counts"][:4, :4]
    hspy = _write_hspy(tmp_path / "scan.hspy", counts, 1.5, 1.0)
    shutil.copy(hspy, tmp_path / "scan.hdf5")
    assert hdf5_kind(tmp_path / "scan.hdf5") == "hspy"
    from stemdl.predict.microscope_files import calibrated_axes, signal_dict, write_signal

    write_signal(tmp_path / "scan.emd", signal_dict(counts, calibrated_axes(
        counts.shape, (1.5, 1.5), (1.0, 1.0), (24.0, 24.0)), "emd"))
    assert hdf5_kind(tmp_path / "scan.emd") == "emd"
    master = _write_arina(setting, tmp_path / "arina")[0]
    assert hdf5_kind(master) == "arina"


def test_py4dstem_calibration_units_and_lazy_reading(setting, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """py4DSTEM's R in nm and Q in mrad are converted; its default 'pixels' (uncalibrated)
    gives nothing; the datacube is read lazily (rosettasciio's Dask array over the file)."""
    from stemdl.predict.microscope_files import read_scan
    from stemdl.testing.h5_layouts import write_py4dstem

    counts = setting["counts"][:4, :6]
    path = write_py4dstem(tmp_path / "nm.h5", counts, r_pixel_size=0.15, r_pixel_units="nm",
                          q_pixel_size=0.9, q_pixel_units="mrad", origin=(24.0, 24.0))
    scan = read_scan(path)
    assert type(scan.data).__module__.startswith("dask"), type(scan.data)
    np.testing.assert_array_equal(np.asarray(scan.data[1:3]), counts[1:3])
    assert scan.calibration == {"scan_step_a": (pytest.approx(1.5), pytest.approx(1.5)),
                                "angular_sampling_mrad": (0.9, 0.9)}
    assert "R_pixel_size 0.15 nm" in scan.calibration_sources["scan_step_a"]
    path = write_py4dstem(tmp_path / "px.h5", counts, r_pixel_size=1, r_pixel_units="pixels",
                          q_pixel_size=1, q_pixel_units="pixels")
    assert read_scan(path).calibration == {}


# --- damaged and foreign files: one line, exit 2, nothing written ----------------------------


def _refused(setting, capsys, data: Path, out: Path, *needles: str, options=()) -> str:  # type: ignore[no-untyped-def]
    code = _predict(setting, data, out, "--energy-kev", "100", "--semiangle-mrad", "8",
                    "--scan-step-a", str(setting["step_a"]),
                    "--angular-pixel-mrad", str(setting["pixel_mrad"]), *options)
    error = capsys.readouterr().err.strip()
    assert code == pipeline.EXIT_USAGE, error
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    for needle in needles:
        assert needle in error, (needle, error)
    assert "Error:" not in error, error  # no exception class as the message
    assert not out.exists(), list(out.iterdir())
    return error


@pytest.fixture
def mib(setting, tmp_path: Path) -> Path:
    from stemdl.testing.measured_scan import write_mib

    return write_mib(tmp_path / "scan.mib", setting["counts"])


def test_a_mib_cut_short_names_frame_and_file_size(setting, mib: Path, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    frame = 384 + DETECTOR * DETECTOR * 2
    size = SCAN * SCAN * frame - 1000
    with open(mib, "r+b") as handle:
        handle.truncate(size)
    _refused(setting, capsys, mib, tmp_path / "out", f"{size} bytes is not a whole number of "
             f"frames of {frame} bytes", f"{DETECTOR}x{DETECTOR} U16", "truncated")


def test_a_mib_without_its_header_file_or_all_its_frames(setting, mib: Path, tmp_path, capsys  # type: ignore[no-untyped-def]
                                                         ) -> None:
    frame = 384 + DETECTOR * DETECTOR * 2
    with open(mib, "r+b") as handle:  # the last frame lost whole: the .hdr tells
        handle.truncate((SCAN * SCAN - 1) * frame)
    _refused(setting, capsys, mib, tmp_path / "out", "scan.hdr records 256 frames, the file "
             "holds 255")
    mib.with_suffix(".hdr").unlink()
    _refused(setting, capsys, mib, tmp_path / "out", "no scan.hdr beside it", "--scan-shape")


def test_damaged_blockfiles(setting, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from stemdl.predict.microscope_files import calibrated_axes, signal_dict, write_signal

    counts = (setting["counts"] // 8).astype(np.uint8)
    axes = calibrated_axes(counts.shape, (1.5, 1.5), (1.0, 1.0), (24.0, 24.0))
    with pytest.warns(UserWarning, match="cm units"):
        blo = write_signal(tmp_path / "scan.blo", signal_dict(counts, axes, "blo"))
    size = blo.stat().st_size
    with open(blo, "r+b") as handle:
        handle.truncate(size - 3000)
    _refused(setting, capsys, blo, tmp_path / "out", "the header records 16x16 frames of "
             "48x48 px", f"the file holds {size - 3000}: truncated")
    blo.write_bytes(b"\x00" * 4096)
    _refused(setting, capsys, blo, tmp_path / "out", "no blockfile header")


def test_an_arina_data_file_given_cut_short_or_missing(setting, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    written = _write_arina(setting, tmp_path / "arina")
    _refused(setting, capsys, written[1], tmp_path / "out", "a Dectris data file",
             "pass its master file")
    with open(written[3], "r+b") as handle:  # the last data file cut in half
        handle.truncate(written[3].stat().st_size // 2)
    _refused(setting, capsys, written[0], tmp_path / "out", "data_000003 of the ARINA master "
             "cannot be opened", "truncated file")
    written[2].unlink()
    _refused(setting, capsys, written[0], tmp_path / "out", "links data_000002 to "
             "scan_data_000002.h5, which is not beside it")


def test_a_damaged_frame_is_found_while_reading_its_rows(setting, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A chunk of an ARINA data file overwritten (frame 170 = row 10, column 10: the file
    opens, the frame does not decode), and an .hspy whose chunk of row 9 is overwritten:
    each found when the band holding it is read, and named by its scan row."""
    written = _write_arina(setting, tmp_path / "arina")
    with h5py.File(written[2], "r") as f:  # frames 100–199
        info = f["entry/data/data"].id.get_chunk_info_by_coord((70, 0, 0))
    with open(written[2], "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(b"\xff" * 16)
    _refused(setting, capsys, written[0], tmp_path / "out", "frame 170 (scan row 10, column 10)",
             "data_000002", "damaged or truncated")

    from rsciio.hspy import file_writer

    from stemdl.predict.microscope_files import calibrated_axes, signal_dict

    path = tmp_path / "scan.hspy"
    signal = signal_dict(setting["counts"], calibrated_axes(
        setting["counts"].shape, (1.5, 1.5), (1.0, 1.0), (24.0, 24.0)), "chunks")
    file_writer(str(path), signal, chunks=(1, SCAN, DETECTOR, DETECTOR), compression="gzip",
                show_progressbar=False)
    with h5py.File(path, "r") as f:
        name = next(k for k in f["Experiments"])
        info = f[f"Experiments/{name}/data"].id.get_chunk_info_by_coord((9, 0, 0, 0))
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(b"\xff" * 64)
    _refused(setting, capsys, path, tmp_path / "out", "scan row 9 cannot be read",
             "damaged or truncated")


def test_foreign_and_truncated_files(setting, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("images", data=np.zeros((4, 8, 8)))
    _refused(setting, capsys, foreign, tmp_path / "out", "not one stemdl reads: looked for",
             "EMD", "ARINA", "HyperSpy", "holds images")
    (tmp_path / "text.h5").write_text("not HDF5 at all")
    _refused(setting, capsys, tmp_path / "text.h5", tmp_path / "out", "not an HDF5 file")
    np.save(tmp_path / "scan.npy", setting["counts"])
    size = (tmp_path / "scan.npy").stat().st_size
    with open(tmp_path / "scan.npy", "r+b") as handle:
        handle.truncate(size - 500)
    _refused(setting, capsys, tmp_path / "scan.npy", tmp_path / "out",
             "(16, 16, 48, 48) uint16", "truncated")


def test_no_half_written_outputs(setting, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A failure while the outputs are written (here the picture) leaves none of them, not
    even the map written before it, and no staging folder."""
    from stemdl.predict import outputs as predict_outputs
    from stemdl.predict.scan_prediction import predict_main

    hspy = _write_hspy(tmp_path / "scan.hspy", setting["counts"], setting["step_a"],
                       setting["pixel_mrad"])
    result = predict_main(setting["checkpoint"], hspy, calibration_options={}, device="cpu",
                          progress=False)

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("No space left on device")

    monkeypatch.setattr(predict_outputs, "_write_png", fail)
    with pytest.raises(OSError, match="No space"):
        predict_outputs.write_outputs(result, tmp_path / "out", ("hspy",))
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.undo()
    written = predict_outputs.write_outputs(result, tmp_path / "out", ("hspy",))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)

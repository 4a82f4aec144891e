"""`stemdl predict` on measured-like data, its refusals, and the parts it is built from.

The end-to-end tests use the session's small reconstruction model (`reconstruction_model`,
`scan_pixels`, trained on 4×4-probe windows at a 1.5 Å step, 21×21-px patterns, 100 keV,
semi-angles 6–12 mrad). The data it is given are simulated honestly for a held-out material
(`measured_scan`): GaP [001] (a test-split composition, chosen before looking at any result;
it turned out the weakest of ten held-out materials for stitched maps, benchmarks/RESULTS.md),
8×8 probes at the trained 1.5 Å step (four windows' worth of area), 9 mrad, 20 Å thick, on a
72×72 detector whose pixel is 1/3 of the training pixel of that material (a supercell 3× wider;
predict bins it onto the median training pixel, 3.13×),
with Poisson noise at a dose of 1e5 e/Å² (2.25e5 electrons per probe position), written as
HyperSpy .hspy (calibrated: scan axes in nm, k axes in 1/nm, energy and semi-angle in the
metadata) and as a Merlin .mib (no calibration: given as options).

The model was trained on squares placed anywhere on the lattice (`scan.shift_a` 2.5 Å), so
every window of the scan must be mapped well, not only one placed like a centred training
sample (a model trained on centred squares only mapped that one: benchmarks/RESULTS.md,
"stemdl predict").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stemdl import pipeline
from stemdl.configs.units import wavelength_a
from stemdl.predict.microscope_files import CalibrationError
from stemdl.predict.pattern_resampling import find_centre, plan_resampling, resample_patterns
from stemdl.predict.stitching import blend_weight, plan_windows, stitch
from stemdl.predict.trained_ranges import TrainedRanges
from stemdl.testing.checkpoints import untrained_checkpoint
from stemdl.train.metrics import pearson_r

MATERIAL = ("zincblende-GaP-5e4e17cd", (0, 0, 1))
DOSE_E_PER_A2 = 1e5
STEP_A = 1.5
SCAN = 8
DETECTOR_PX = 72
# Thresholds (Pearson r against the true projected potential of the area), justified from the
# model's test figures: its mean per-sample r on the 35 held-out test samples (one 4×4 window
# each at a random placement, noise-free) was 0.839 (tests/test_reconstruction.py), the
# baselines 0.06 (nearest neighbour) and 0.015 (mean target). Every non-overlapping window of
# the measured-like scan (with the dose noise) must reach r > 0.75 (measured 0.789–0.828 since
# predict bins onto the median training pixel; 0.834–0.878 on GaP's own training pixel), and
# the stitched map of the whole scan r > 0.80 (measured 0.854; 0.891) and no worse than its windows'
# mean (blending and placement right: a window put one probe off would pull it below).
MIN_R_WINDOW = 0.75
MIN_R_STITCHED = 0.80


@pytest.fixture(scope="module")
def measured(reconstruction_run, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The measured-like scan as .hspy and .mib (module docstring), and its truth."""
    from stemdl.datasets.transforms import electrons_per_pattern
    from stemdl.predict.microscope_files import signal_dict, write_signal
    from stemdl.testing.measured_scan import (
        poisson_counts,
        simulate_large_scan,
        training_phase_corner_a,
        write_mib,
    )

    sim = reconstruction_run.config.simulation
    corner = training_phase_corner_a(sim, *MATERIAL, repeat=3)
    scan = simulate_large_scan(sim, *MATERIAL, repeat=3, scan_gpts=(SCAN, SCAN), step_a=STEP_A,
                               pattern_px=DETECTOR_PX, target_px_per_probe=4, energy_ev=100e3,
                               semiangle_mrad=9.0, defocus_a=0.0, thickness_a=20.0,
                               corner_a=corner)
    electrons = electrons_per_pattern(DOSE_E_PER_A2, np.array([0, 0, STEP_A, STEP_A]), 1)
    counts = poisson_counts(scan.patterns, electrons, seed=0)
    root = tmp_path_factory.mktemp("measured")
    ky, kx = scan.reciprocal_sampling_inv_a
    axes = [  # as HyperSpy users often have them: nm and 1/nm
        {"name": "y", "units": "nm", "scale": STEP_A / 10, "offset": 0.0, "size": SCAN,
         "navigate": True},
        {"name": "x", "units": "nm", "scale": STEP_A / 10, "offset": 0.0, "size": SCAN,
         "navigate": True},
        {"name": "ky", "units": "1/nm", "scale": 10 * ky, "offset": -36 * 10 * ky,
         "size": DETECTOR_PX, "navigate": False},
        {"name": "kx", "units": "1/nm", "scale": 10 * kx, "offset": -36 * 10 * kx,
         "size": DETECTOR_PX, "navigate": False},
    ]
    hspy = write_signal(root / "scan.hspy", signal_dict(counts, axes, "GaP [001]",
                                                        energy_ev=100e3, semiangle_mrad=9.0))
    mib = write_mib(root / "scan.mib", counts)
    return {"scan": scan, "counts": counts, "hspy": hspy, "mib": mib, "root": root}


def _predict(checkpoint: Path, data: Path, out: Path, *options: str) -> int:
    return pipeline.main(["predict", str(checkpoint), str(data), "--out", str(out),
                          "--no-progress", *options])


def _mib_options(scan) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--energy-kev", "100", "--semiangle-mrad", "9",
            "--angular-pixel-mrad", f"{scan.angular_sampling_mrad[0]:.6f}",
            "--scan-step-a", str(STEP_A)]


@pytest.mark.slow
def test_predict_stitches_a_held_out_scan_from_hspy_and_mib(reconstruction_run, measured,
                                                             tmp_path: Path) -> None:
    import zarr

    checkpoint, scan = reconstruction_run.checkpoint, measured["scan"]
    assert _predict(checkpoint, measured["hspy"], tmp_path / "hspy", "--save", "hspy",
                    "--save", "tiff") == 0
    assert _predict(checkpoint, measured["mib"], tmp_path / "mib", *_mib_options(scan)) == 0
    assert _predict(checkpoint, measured["mib"], tmp_path / "apart", *_mib_options(scan),
                    "--stride", "4", "4") == 0  # non-overlapping: each window's own map

    maps = {}
    for name, windows in (("hspy", 9), ("mib", 9), ("apart", 4)):
        out = tmp_path / name
        array = zarr.open_array(str(out / "potential.zarr"), mode="r")
        maps[name] = np.asarray(array[...])
        assert maps[name].shape == (1, 4 * SCAN, 4 * SCAN) == scan.potential.shape
        assert array.attrs["axes"][1]["units"] == "Å"
        assert array.attrs["axes"][1]["scale"] == pytest.approx(0.375)
        assert (out / "prediction.png").stat().st_size > 10_000
        record = json.loads((out / "prediction.json").read_text())
        # binned onto the median training pixel (train/predict.py, step 3), 3.13× this detector's
        typical = record["trained_ranges"]["typical_pixel_inv_a"] * 1e3 * wavelength_a(100e3)
        assert record["resampling"]["model_angular_sampling_mrad"] == pytest.approx([typical] * 2)
        assert record["resampling"]["centre_px"] == [36.0, 36.0]
        assert record["windows"]["count"] == windows
        sources = record["calibration_sources"]
        expected = "file" if name == "hspy" else "option"
        assert all(sources[k].startswith(expected) for k in
                   ("energy_ev", "semiangle_mrad", "angular_sampling_mrad", "scan_step_a")), sources
    # the same counts through two formats (and two calibration routes) → the same map, to the
    # precision of the pixel option (6 decimals, which the fractional rebinning ratio carries)
    np.testing.assert_allclose(maps["hspy"], maps["mib"], atol=1e-4)

    truth = scan.potential[0]
    windows = {(r, c): pearson_r(maps["apart"][0, r:r + 16, c:c + 16], truth[r:r + 16, c:c + 16])
               for r in (0, 16) for c in (0, 16)}
    stitched = pearson_r(maps["hspy"][0], truth)
    print(f"{scan.material_id}: windows r {np.round(list(windows.values()), 3)}; "
          f"stitched r {stitched:.3f}")
    assert min(windows.values()) > MIN_R_WINDOW, windows
    assert stitched > MIN_R_STITCHED, stitched
    assert stitched >= np.mean(list(windows.values())), (stitched, windows)

    from rsciio.hspy import file_reader

    written = file_reader(str(tmp_path / "hspy" / "potential.hspy"))[0]
    np.testing.assert_array_equal(written["data"], maps["hspy"])
    assert written["axes"][2]["units"] == "Å"
    assert (tmp_path / "hspy" / "potential.tif").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("change", "message"), [
    (["--energy-kev", "200"], "beam energy 200 keV is outside the trained 100 keV"),
    (["--scan-step-a", "3.0"], "scan step 3 Å along y differs from the trained 1.5 Å"),
    (["--semiangle-mrad", "20"], "semi-angle 20 mrad is outside the trained 6–12 mrad"),
])
def test_a_wrong_calibration_is_refused_not_predicted(reconstruction_run, measured, tmp_path,
                                                      capsys, change, message) -> None:  # type: ignore[no-untyped-def]
    options = _mib_options(measured["scan"])
    flag = options.index(change[0])
    options[flag:flag + 2] = change
    code = _predict(reconstruction_run.checkpoint, measured["mib"], tmp_path / "out", *options)
    error = capsys.readouterr().err
    assert code == pipeline.EXIT_USAGE
    assert "refused" in error and message in error, error
    assert not (tmp_path / "out" / "potential.zarr").exists()


@pytest.mark.slow
def test_missing_calibration_names_the_option(reconstruction_run, measured, tmp_path, capsys
                                              ) -> None:  # type: ignore[no-untyped-def]
    code = _predict(reconstruction_run.checkpoint, measured["mib"], tmp_path / "out",
                    "--energy-kev", "100", "--semiangle-mrad", "9")
    error = capsys.readouterr().err
    assert code == pipeline.EXIT_USAGE
    assert "--angular-pixel-mrad" in error and "--scan-step-a" in error, error


# --- the parts, without a trained model -------------------------------------------------------


def test_whole_ratio_rebinning_is_the_sum_of_whole_detector_pixels() -> None:
    rng = np.random.default_rng(0)
    fine = rng.random((2, 63, 63)).astype(np.float32)  # centre on pixel 31 (a pixel centre)
    plan, matrices = plan_resampling((63, 63), (31.0, 31.0), (3.0, 3.0), (21, 21), (10.0, 10.0))
    assert plan.exact and plan.padded_fraction == 0
    expected = fine.reshape(2, 21, 3, 21, 3).sum(axis=(2, 4))
    np.testing.assert_allclose(resample_patterns(fine, matrices), expected, rtol=1e-6)
    # an even ratio about a pixel corner is exact too; beyond the detector it pads zeros
    plan, matrices = plan_resampling((8, 8), (3.5, 3.5), (2.0, 2.0), (6, 6), (2.5, 2.5))
    out = resample_patterns(np.ones((8, 8)), matrices)
    assert plan.exact and plan.padded_fraction > 0
    np.testing.assert_array_equal(out[1:5, 1:5], 4.0)
    assert out[0, 0] == 0.0


def test_rebinning_refuses_to_invent_detail() -> None:
    with pytest.raises(CalibrationError, match="coarser than the model"):
        plan_resampling((21, 21), (10.0, 10.0), (0.5, 0.5), (21, 21), (10.0, 10.0))


def test_centre_is_the_bright_field_disk_to_half_a_pixel() -> None:
    rows, cols = np.indices((40, 40))
    disk = ((rows - 22) ** 2 + (cols - 17.5) ** 2 < 36).astype(float) + 0.01
    assert find_centre(disk) == (22.0, 17.5)


def test_windows_cover_the_scan_and_stitching_places_them_in_angstrom() -> None:
    starts = plan_windows((10, 7), (4, 4), (2, 2))
    assert sorted({r for r, _ in starts}) == [0, 2, 4, 6] and sorted({c for _, c in starts}) == [0, 2, 3]
    ranges = TrainedRanges((1e5, 1e5), (6.0, 12.0), (1.5, 1.5), (1.0, 2.0), (4, 4), (5, 5),
                           (2.0, 2.0), (8, 8), (0.75, 0.75))
    truth = np.random.default_rng(1).random((20, 14)).astype(np.float32)

    class Oracle(torch.nn.Module):
        """Predicts the true map under each window, which it finds from its first pattern."""

        def forward(self, cbed: torch.Tensor) -> torch.Tensor:
            maps = []
            for window in cbed:
                row, col = 2 * int(window[0, 0, 0]), 2 * int(window[0, 0, 1])  # 2 px a probe
                maps.append(torch.from_numpy(truth[row:row + 8, col:col + 8])[None])
            return torch.stack(maps)

    inputs = np.zeros((10, 7, 5, 5), dtype=np.float32)
    inputs[..., 0, 0] = np.arange(10)[:, None]  # each probe's pattern holds its scan position
    inputs[..., 0, 1] = np.arange(7)[None, :]
    stitched, counts = stitch(Oracle(), inputs, ranges, starts, torch.device("cpu"),
                              batch_size=3, progress=False)
    assert stitched.shape == (1, 20, 14) and counts.min() >= 1
    np.testing.assert_allclose(stitched[0], truth, rtol=1e-5)
    assert blend_weight(8).min() > 0 and blend_weight(8)[0] < 0.05 < blend_weight(8)[4]


# --- export ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_round_trip_keeps_the_record_calibrations(reconstruction_run, tmp_path: Path
                                                         ) -> None:
    """HyperSpy (hspy) and rosettasciio (emd, and the npy sidecar) read the exported sample
    with the scan step and first probe position (Å), angular pixel (mrad, zero at the direct
    beam), energy and semi-angle of the store's record; predicting the exported file (its
    calibration read from the file) gives the map predicting the stored sample gives."""
    import hyperspy.api as hs
    import zarr
    from rsciio.emd import file_reader as read_emd

    from stemdl.datasets.inspect import read_sample

    store, index = reconstruction_run.store, 5
    stored = read_sample(store, index)
    record = stored["record"]
    rows, cols = record.scan_gpts
    x0, y0, x1, y1 = record.target_region_a
    first_x, first_y = record.probe_positions_a[0]
    ky, kx = record.angular_sampling_mrad[1], record.angular_sampling_mrad[0]
    height, width = stored["cbed"].shape[1:]
    expected = [("Å", (y1 - y0) / rows, first_y), ("Å", (x1 - x0) / cols, first_x),
                ("mrad", ky, -(height // 2) * ky), ("mrad", kx, -(width // 2) * kx)]
    data = np.asarray(stored["cbed"], dtype=np.float32).reshape(rows, cols, height, width)

    paths = {}
    for fmt in ("hspy", "emd", "npy"):
        paths[fmt] = tmp_path / f"sample.{fmt}"
        assert pipeline.main(["export", store, "--sample", str(index), "--format", fmt,
                              "--out", str(paths[fmt])]) == 0

    signal = hs.load(paths["hspy"])
    axes = [*signal.axes_manager.navigation_axes[::-1], *signal.axes_manager.signal_axes[::-1]]
    assert signal.data.shape == data.shape
    np.testing.assert_array_equal(signal.data, data)
    for axis, (units, scale, offset) in zip(axes, expected, strict=True):
        assert (axis.units, axis.scale, axis.offset) == (units, pytest.approx(scale),
                                                         pytest.approx(offset)), axis
    tem = signal.metadata.Acquisition_instrument.TEM
    assert tem.beam_energy == pytest.approx(record.energy_ev / 1e3)
    assert tem.convergence_angle == pytest.approx(record.semiangle_mrad)

    emd = read_emd(str(paths["emd"]))[0]
    np.testing.assert_array_equal(emd["data"], data)
    for axis, (units, scale, offset) in zip(emd["axes"], expected, strict=True):
        assert (axis["units"], axis["scale"], axis["offset"]) == (
            units, pytest.approx(scale), pytest.approx(offset)), axis

    np.testing.assert_array_equal(np.load(paths["npy"]), data)
    sidecar = json.loads(Path(f"{paths['npy']}.json").read_text())
    for axis, (units, scale, offset) in zip(sidecar["axes"], expected, strict=True):
        assert (axis["units"], axis["scale"], axis["offset"]) == (
            units, pytest.approx(scale), pytest.approx(offset)), axis

    checkpoint = reconstruction_run.checkpoint
    assert pipeline.main(["predict", str(checkpoint), store, "--sample", str(index), "--out",
                          str(tmp_path / "from-store"), "--no-progress"]) == 0
    assert pipeline.main(["predict", str(checkpoint), f"file://{store}", "--sample", str(index),
                          "--out", str(tmp_path / "from-url"), "--no-progress"]) == 0
    assert _predict(checkpoint, paths["hspy"], tmp_path / "from-hspy") == 0
    # NCEM EMD keeps the axes but not HyperSpy's microscope metadata: energy and semi-angle
    # come from the options (and the axes from the file)
    assert _predict(checkpoint, paths["emd"], tmp_path / "from-emd", "--energy-ev",
                    str(record.energy_ev), "--semiangle-mrad", str(record.semiangle_mrad)) == 0
    sources = json.loads((tmp_path / "from-emd" / "prediction.json").read_text())[
        "calibration_sources"]
    assert sources["scan_step_a"].startswith("file") and sources["energy_ev"] == "option"
    maps = [np.asarray(zarr.open_array(str(tmp_path / d / "potential.zarr"), mode="r")[...])
            for d in ("from-store", "from-hspy", "from-emd", "from-url")]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-5)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-5)
    np.testing.assert_array_equal(maps[0], maps[3])  # the store through an fsspec URL


def test_read_scan_formats_and_what_they_record(tmp_path: Path) -> None:
    """ASTAR .blo through rosettasciio (it keeps the scan step, converting Å to its nm), a 3-D
    .npy with --scan-shape, an extension nobody reads, refused by name, a URL without
    --sample, and an MRC stack of frames with --scan-shape."""
    from stemdl.predict.microscope_files import (
        MicroscopeFileError,
        calibrated_axes,
        read_scan,
        signal_dict,
        write_signal,
    )

    data = (np.random.default_rng(0).random((3, 4, 16, 16)) * 200).astype(np.uint8)
    axes = calibrated_axes(data.shape, (1.5, 1.5), (0.8, 0.8), (8.0, 8.0))
    with pytest.warns(UserWarning, match="cm units"):  # .blo stores no angular calibration
        write_signal(tmp_path / "scan.blo", signal_dict(data, axes, "blo"))
    scan = read_scan(tmp_path / "scan.blo")
    np.testing.assert_array_equal(scan.data, data)
    assert scan.calibration == {"scan_step_a": (pytest.approx(1.5), pytest.approx(1.5))}

    np.save(tmp_path / "frames.npy", data.reshape(12, 16, 16))
    assert read_scan(tmp_path / "frames.npy", scan_shape=(3, 4)).data.shape == (3, 4, 16, 16)
    with pytest.raises(MicroscopeFileError, match="--scan-shape"):
        read_scan(tmp_path / "frames.npy")
    (tmp_path / "scan.xyz").write_text("")
    with pytest.raises(MicroscopeFileError, match=r"no reader for '\.xyz'"):
        read_scan(tmp_path / "scan.xyz")
    with pytest.raises(MicroscopeFileError, match="a URL is read as a stemdl Zarr store"):
        read_scan("s3://bucket/scan.zarr")  # without --sample

    import mrcfile  # a stack of frames as direct-electron cameras write it, read by rosettasciio

    with mrcfile.new(tmp_path / "frames.mrc") as mrc:
        mrc.set_data(data.reshape(12, 16, 16).astype(np.float32))
    scan = read_scan(tmp_path / "frames.mrc", scan_shape=(3, 4))
    assert scan.format == "mrc" and scan.calibration == {}
    np.testing.assert_array_equal(np.asarray(scan.data), data.astype(np.float32))


def test_a_channels_model_predicts_a_larger_scan(tmp_path: Path, tiny_config) -> None:  # type: ignore[no-untyped-def]
    """The paper's arrangement (patterns as channels) through the CLI: an untrained `tiny`
    model on a 6×7 scan of random patterns about a bright-field disk of the calibrated size
    (8 mrad ÷ the angular pixel) gives a map of the whole scanned area."""
    import zarr

    from stemdl.predict.trained_ranges import trained_ranges

    config = tiny_config({"arrangement": "channels"})
    checkpoint = untrained_checkpoint(config, tmp_path / "checkpoint.pt")
    ranges = trained_ranges(config)
    rng = np.random.default_rng(2)
    rows, cols = np.indices((24, 24))
    pixel_mrad = ranges.typical_angular_sampling_mrad(100e3)  # kept as it is (ratio 1)
    radius = 8 / pixel_mrad
    disk = ((rows - 12) ** 2 + (cols - 12) ** 2 <= radius**2) * 50.0
    np.save(tmp_path / "scan.npy", (rng.random((6, 7, 24, 24)) + disk).astype(np.float32))
    code = _predict(checkpoint, tmp_path / "scan.npy", tmp_path / "out", "--energy-kev", "100",
                    "--semiangle-mrad", "8", "--scan-step-a", str(ranges.scan_step_a[0]),
                    "--angular-pixel-mrad", str(pixel_mrad),
                    "--centre", "12", "12")
    assert code == 0
    record = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert record["model"]["arrangement"] == "channels"
    assert record["resampling"]["ratio"] == [1.0, 1.0] and record["resampling"]["exact"]
    stitched = zarr.open_array(str(tmp_path / "out" / "potential.zarr"), mode="r")
    assert stitched.shape == (1, 6 * 4, 7 * 4)  # 16×16 target px per 4×4 probes
    assert np.isfinite(stitched[...]).all()


# --- a scan larger than memory --------------------------------------------------------------


def test_predict_holds_a_few_rows_of_the_scan_not_all_of_it(tmp_path: Path, tiny_config,
                                                            monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A 30×26 scan of 72×72 px (16 MiB as float32), binned 3× to the model's patterns, is
    predicted band by band: the NumPy memory traced while `predict_main` runs stays under a
    quarter of the scan, each scan row is read and resampled once, and the map is the one
    computed from the whole scan in memory (resampled, normalized and stitched at once)."""
    import tracemalloc

    from stemdl.datasets.transforms import normalize_inputs
    from stemdl.predict import scan_inputs
    from stemdl.predict.scan_inputs import ScanModelInputs
    from stemdl.predict.scan_prediction import predict_main
    from stemdl.predict.trained_ranges import trained_ranges
    from stemdl.train.evaluate import load_trained_model

    config = tiny_config()
    checkpoint = untrained_checkpoint(config, tmp_path / "checkpoint.pt")
    ranges = trained_ranges(config)
    rng = np.random.default_rng(5)
    rows, cols = np.indices((72, 72))
    disk = ((rows - 36) ** 2 + (cols - 36) ** 2 < 100) * 50.0
    scan = (rng.random((30, 26, 72, 72)) + disk).astype(np.float32)
    np.save(tmp_path / "scan.npy", scan)
    pixel_mrad = ranges.typical_angular_sampling_mrad(100e3) / 3
    options = {"energy_ev": 100e3, "semiangle_mrad": 10 * pixel_mrad,  # the disk's 10 px
               "scan_step_a": ranges.scan_step_a, "angular_sampling_mrad": pixel_mrad}
    row_bytes = scan[0].nbytes
    monkeypatch.setattr(scan_inputs, "BAND_BYTES", 4 * row_bytes)

    def predict():  # type: ignore[no-untyped-def]
        return predict_main(checkpoint, tmp_path / "scan.npy", calibration_options=options,
                            device="cpu", progress=False)

    predict()  # imports, the catalogue of the trained ranges and the compiled kernels: once
    tracemalloc.start()
    try:
        result = predict()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.record["resampling"]["ratio"] == [3.0, 3.0]
    assert result.record["resampling"]["centre_px"] == [36.0, 36.0]
    assert peak < scan.nbytes / 4, f"peak {peak / 2**20:.1f} MiB of a {scan.nbytes / 2**20:.1f} MiB scan"

    model, _ = load_trained_model(checkpoint, torch.device("cpu"))
    _, matrices = plan_resampling((72, 72), (36.0, 36.0), (3.0, 3.0), ranges.pattern_px,
                                  ranges.pattern_centre_px)
    whole = normalize_inputs(resample_patterns(scan, matrices), config.loader.input_transform,
                             config.loader.standardize_inputs)
    starts = plan_windows((30, 26), ranges.window, (2, 2))
    expected, _ = stitch(model, whole, ranges, starts, torch.device("cpu"), progress=False)
    np.testing.assert_allclose(result.potential, expected, rtol=1e-5, atol=1e-6)

    banded = ScanModelInputs(np.load(tmp_path / "scan.npy", mmap_mode="r"), matrices,
                             config.loader.input_transform, config.loader.standardize_inputs)
    again, _ = stitch(model, banded, ranges, starts, torch.device("cpu"), progress=False)
    np.testing.assert_array_equal(again, result.potential)
    assert banded.rows_computed == 30  # every row once, though windows overlap by half
    with pytest.raises(IndexError, match="row-major"):
        banded[0:4, 0:4]  # released: a window above the last ones would be recomputed silently


def test_microscope_files_are_opened_lazily(tmp_path: Path) -> None:
    """rosettasciio's readers are asked for a lazy (Dask) array, and the mean pattern summed
    band by band is the mean of the whole scan."""
    from stemdl.predict.microscope_files import (
        calibrated_axes,
        read_scan,
        signal_dict,
        write_signal,
    )
    from stemdl.predict.scan_inputs import mean_pattern

    data = np.random.default_rng(3).random((5, 6, 16, 16)).astype(np.float32)
    axes = calibrated_axes(data.shape, (1.5, 1.5), (0.8, 0.8), (8.0, 8.0))
    scan = read_scan(write_signal(tmp_path / "scan.hspy", signal_dict(data, axes, "lazy")))
    assert type(scan.data).__module__.startswith("dask"), type(scan.data)
    np.testing.assert_array_equal(np.asarray(scan.data[2:4]), data[2:4])
    np.testing.assert_allclose(mean_pattern(scan.data), data.mean(axis=(0, 1), dtype=np.float64),
                               rtol=1e-12)

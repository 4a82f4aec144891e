"""`detector.pixel_mrad`: every stored pattern integrated onto one angular pixel.

The samples are checked against abTEM called directly (its whole far field, fftshifted) and
integrated onto the fixed pixel by a route of this file's own: the cumulative integral of the
native pixels, linear within each pixel, differenced at the output pixel edges in mrad. The
operator's symmetries (flips, transpose: what keeps the D4 augmentation exact), its exact
cases (ratio 1: a crop; an odd whole ratio: sums of whole pixels) and the config's refusals
are checked on arrays; the disk radius in the stored patterns is checked against the
semi-angle, a physical law that does not depend on the pixel.
"""

from __future__ import annotations

import numpy as np
import pytest

from stemdl.configs import ConfigError, config_from_dict, load_config
from stemdl.predict.scan_checks import measure_disk_radius_px
from stemdl.predict.trained_ranges import trained_ranges
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.detector_pixels import rebin, rebin_matrices
from stemdl.testing.abtem_reference import abtem_far_field

PIXEL_MRAD = 3.3  # tiny: 100 kV, cell_xy_a 12 Å, so the coarsest native pixel is 3.08 mrad


def _integrate_axis(values: np.ndarray, axis: int, native_mrad: float, pixel_mrad: float,
                    out_px: int) -> np.ndarray:
    """Integrate `values` along `axis` (native pixels of `native_mrad`, zero frequency at
    n // 2) over `out_px` pixels of `pixel_mrad` (zero frequency in pixel out_px // 2)."""
    values = np.moveaxis(values, axis, -1)
    n = values.shape[-1]
    native_edges = (np.arange(n + 1) - n // 2 - 0.5) * native_mrad
    cumulative = np.concatenate([np.zeros((*values.shape[:-1], 1)), np.cumsum(values, -1)], -1)
    out_edges = (np.arange(out_px + 1) - out_px // 2 - 0.5) * pixel_mrad
    flat = cumulative.reshape(-1, n + 1)
    at_edges = np.stack([np.interp(out_edges, native_edges, row) for row in flat])
    result = np.diff(at_edges, axis=-1).reshape(*values.shape[:-1], out_px)
    return np.moveaxis(result, -1, axis)


@pytest.fixture(scope="module")
def fixed_pixel_config():
    data = load_config("tiny").to_dict()
    data["simulation"]["detector"] = {"pattern_px": [23, 23], "binning": 1,
                                      "pixel_mrad": PIXEL_MRAD}
    data["simulation"]["structures"]["families"] = ["rocksalt", "zincblende", "perovskite",
                                                    "fluorite", "bcc"]

    return config_from_dict(data, source="test_detector_pixels")


def test_samples_equal_abtem_integrated_onto_the_pixel(fixed_pixel_config, relative_error) -> None:
    sim = fixed_pixel_config.simulation
    catalogue = build_catalogue(sim)
    natives = set()
    for index in range(3):
        sample = simulate_sample(sim, index, catalogue)
        record = sample.record
        native = (1e3 * record.wavelength_a / record.extent_a[1],
                  1e3 * record.wavelength_a / record.extent_a[0])  # (ky, kx)
        natives.add(round(native[0], 4))
        full = abtem_far_field(record)
        reference = _integrate_axis(full, 1, native[0], PIXEL_MRAD, 23)
        reference = _integrate_axis(reference, 2, native[1], PIXEL_MRAD, 23)
        assert sample.cbed.shape == (16, 23, 23)
        assert relative_error(sample.cbed, reference) <= 1e-4, index
        assert record.angular_sampling_mrad == pytest.approx((PIXEL_MRAD, PIXEL_MRAD))
        assert record.reciprocal_sampling_inv_a == pytest.approx(
            (PIXEL_MRAD / (1e3 * record.wavelength_a),) * 2)
        assert record.extra["detector_ratio_y"] == pytest.approx(PIXEL_MRAD / native[0])
        # the disk is where the semi-angle puts it on the fixed pixel, whatever the native one
        radius = measure_disk_radius_px(sample.cbed.mean(axis=0))
        assert radius * PIXEL_MRAD == pytest.approx(record.semiangle_mrad, rel=0.08), index
    assert len(natives) >= 2, "the samples must have different native pixels to test anything"


def test_trained_ranges_report_the_fixed_pixel(fixed_pixel_config) -> None:
    ranges = trained_ranges(fixed_pixel_config)
    assert ranges.angular_sampling_mrad == (PIXEL_MRAD, PIXEL_MRAD)
    assert ranges.typical_angular_sampling_mrad(100e3) == PIXEL_MRAD
    assert ranges.typical_angular_sampling_mrad(200e3) == PIXEL_MRAD  # mrad, at any energy


@pytest.mark.parametrize("ratios", [(1.0, 1.0), (1.37, 1.21), (3.0, 3.0), (2.5, 1.6)])
def test_rebin_commutes_with_flips_and_the_transpose(ratios: tuple[float, float]) -> None:
    rng = np.random.default_rng(3)
    native = (PIXEL_MRAD / ratios[0], PIXEL_MRAD / ratios[1])
    window, matrices = rebin_matrices(native, PIXEL_MRAD, (15, 15))
    patterns = rng.random((2, *window))
    out = rebin(patterns, matrices)
    np.testing.assert_allclose(rebin(patterns[..., ::-1], matrices), out[..., ::-1], rtol=1e-6)
    np.testing.assert_allclose(rebin(patterns[..., ::-1, :], matrices), out[..., ::-1, :],
                               rtol=1e-6)
    window_t, matrices_t = rebin_matrices(native[::-1], PIXEL_MRAD, (15, 15))
    assert window_t == window[::-1]
    np.testing.assert_allclose(rebin(np.swapaxes(patterns, -1, -2), matrices_t),
                               np.swapaxes(out, -1, -2), rtol=1e-6)


def test_rebin_exact_cases_and_conservation() -> None:
    rng = np.random.default_rng(5)
    window, matrices = rebin_matrices((PIXEL_MRAD, PIXEL_MRAD), PIXEL_MRAD, (9, 9))
    patterns = rng.random((9, 9))
    assert window == (9, 9)
    np.testing.assert_array_equal(rebin(patterns, matrices), patterns.astype(np.float32))
    window, matrices = rebin_matrices((PIXEL_MRAD / 3, PIXEL_MRAD / 3), PIXEL_MRAD, (5, 5))
    assert window == (15, 15)
    patterns = rng.random((15, 15))
    blocks = patterns.reshape(5, 3, 5, 3).sum(axis=(1, 3))
    np.testing.assert_allclose(rebin(patterns, matrices), blocks, rtol=1e-6)
    # a fractional ratio: nothing is created or lost inside the covered window
    window, matrices = rebin_matrices((PIXEL_MRAD / 1.37, PIXEL_MRAD / 1.37), PIXEL_MRAD, (7, 7))
    patterns = np.zeros(window)
    patterns[window[0] // 2 - 3: window[0] // 2 + 4, window[1] // 2 - 3: window[1] // 2 + 4] = 1
    assert rebin(patterns, matrices).sum() == pytest.approx(49.0, rel=1e-6)
    with pytest.raises(ValueError, match="finer than this sample's native pattern pixel"):
        rebin_matrices((PIXEL_MRAD * 1.1, PIXEL_MRAD), PIXEL_MRAD, (5, 5))


@pytest.mark.parametrize(("detector", "message"), [
    ({"pattern_px": [23, 23], "binning": 2, "pixel_mrad": 4.0}, "use one"),
    ({"pattern_px": [23, 23], "binning": 1, "pixel_mrad": 2.0}, r"finer than the coarsest native"),
    ({"pattern_px": [51, 51], "binning": 1, "pixel_mrad": 3.3}, r"allowed pattern_px up to"),
])
def test_config_refuses_a_pixel_it_cannot_make(detector: dict, message: str) -> None:

    data = load_config("tiny").to_dict()
    data["simulation"]["detector"] = detector
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, source="test")


def test_predict_bins_onto_the_fixed_pixel_exactly_not_onto_a_near_whole_factor() -> None:
    """A detector pixel of 3.1 / 2.98 mrad is a whole factor 3 within 1 % of the trained pixel:
    a model of native pixels bins it ×3 (exact whole-pixel sums), a model trained on one fixed
    pixel onto that pixel itself (its training patterns were integrated onto exactly it)."""
    from stemdl.predict.calibration import check_calibration
    from stemdl.predict.trained_ranges import TrainedRanges

    common = dict(energy_ev=(1e5, 1e5), semiangle_mrad=(6.0, 12.0), scan_step_a=(1.5, 1.5),
                  angular_sampling_mrad=(PIXEL_MRAD, PIXEL_MRAD), window=(4, 4),
                  pattern_px=(21, 21), pattern_centre_px=(10.0, 10.0), target_px=(16, 16),
                  target_pixel_a=(0.375, 0.375), typical_pixel_inv_a=PIXEL_MRAD / 37.014)
    pixel = PIXEL_MRAD / 2.98
    calibration = {"energy_ev": 1e5, "semiangle_mrad": 9.0, "scan_step_a": (1.5, 1.5),
                   "angular_sampling_mrad": (pixel, pixel)}
    native = TrainedRanges(**common)  # type: ignore[arg-type]
    fixed = TrainedRanges(**common, fixed_pixel_mrad=PIXEL_MRAD)  # type: ignore[arg-type]
    assert check_calibration(calibration, (8, 8), native) == (3.0, 3.0)
    assert check_calibration(calibration, (8, 8), fixed) == pytest.approx((2.98, 2.98))

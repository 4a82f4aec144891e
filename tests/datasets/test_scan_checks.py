"""The bright-field disk measured in a mean pattern (`predict.scan_checks`), on patterns
simulated by abTEM directly (vacuum) and on the crystals of the real `tiny` store."""

from __future__ import annotations

import numpy as np
import pytest

from stemdl.predict.microscope_files import MicroscopeFileError, record_calibration, stored_scan
from stemdl.predict.scan_checks import (
    DiskCalibrationError,
    check_disk_calibration,
    check_mean_pattern,
    expected_disk_radius_px,
    measure_disk_radius_px,
)


@pytest.mark.parametrize(("semiangle_mrad", "extent_a"), [(8.0, 12.8), (12.0, 20.0), (25.0, 16.0)])
def test_the_disk_of_an_abtem_probe_is_semiangle_over_pixel(semiangle_mrad: float,
                                                            extent_a: float) -> None:
    import abtem

    probe = abtem.Probe(energy=200e3, semiangle_cutoff=semiangle_mrad, extent=extent_a,
                        gpts=int(extent_a / 0.1))
    pattern = np.asarray(probe.build().diffraction_patterns(max_angle=None).compute().array)
    pixel_mrad = 1e3 * probe.wavelength / extent_a
    expected = semiangle_mrad / pixel_mrad
    assert measure_disk_radius_px(pattern) == pytest.approx(expected, rel=0.05)
    calibration = {"semiangle_mrad": semiangle_mrad, "angular_sampling_mrad": (pixel_mrad,) * 2}
    assert expected_disk_radius_px(calibration) == pytest.approx(expected)
    check_disk_calibration(pattern, calibration)
    wrong = {**calibration, "semiangle_mrad": semiangle_mrad * 1.2}
    with pytest.raises(DiskCalibrationError, match=f"{expected * 1.2:.3g} px") as refused:
        check_disk_calibration(pattern, wrong)
    assert f"{measure_disk_radius_px(pattern):.3g} px" in str(refused.value)


def test_every_crystal_of_the_tiny_store_passes_and_a_wrong_pixel_does_not(tiny_store) -> None:
    """The stored samples (crystals, thickness, defocus and C3 drawn) are calibrated by their
    records: none is refused. Claiming a pixel 40 % larger (a disk 29 % smaller) is refused
    for every one (their disks are 2–4.5 px: a 0.25 px floor keeps 25 % from being a test)."""
    url = str(tiny_store)
    for index in range(24):
        record, data = stored_scan(url, index)
        mean = data.reshape(-1, *data.shape[-2:]).mean(axis=0)
        calibration = record_calibration(record)
        measured = check_disk_calibration(mean, calibration)
        assert measured == pytest.approx(expected_disk_radius_px(calibration), rel=0.10)
        pixel = calibration["angular_sampling_mrad"]
        with pytest.raises(DiskCalibrationError):
            check_disk_calibration(mean, {**calibration, "angular_sampling_mrad":
                                          (pixel[0] * 1.4, pixel[1] * 1.4)})


def test_a_mean_pattern_must_be_finite_and_lit() -> None:
    pattern = np.ones((9, 9))
    check_mean_pattern(pattern)
    pattern[3, 4] = np.nan
    with pytest.raises(MicroscopeFileError, match="NaN or infinite"):
        check_mean_pattern(pattern)
    with pytest.raises(MicroscopeFileError, match="zero"):
        check_mean_pattern(np.zeros((9, 9)))

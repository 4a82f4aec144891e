"""Target resampling against closed forms, and the specimen/grid geometry rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stemdl.simulate.geometry import fast_fft_size, plan_geometry, scan_grid, slicing
from stemdl.simulate.physics import central_crop, sum_pool
from stemdl.simulate.target import resample_region

EXTENT = (12.0, 9.0)  # x, y (Å)
GPTS = (48, 36)  # x, y
MODES = [
    (1, 0, 0.7),
    (0, 2, -0.4),
    (3, 1, 0.25),
    (2, 3, 0.1),
]  # (m, n, amplitude): cos(2π(m x/X + n y/Y))


def _field(phase: float = 0.3) -> np.ndarray:
    """A periodic, band-limited test map (C=1, ny, nx) sampled on the grid."""
    x = np.arange(GPTS[0]) * EXTENT[0] / GPTS[0]
    y = np.arange(GPTS[1]) * EXTENT[1] / GPTS[1]
    yy, xx = np.meshgrid(y, x, indexing="ij")
    total = 5.0 + sum(
        a * np.cos(2 * np.pi * (m * xx / EXTENT[0] + n * yy / EXTENT[1]) + phase)
        for m, n, a in MODES
    )
    return total[None]


def _box_average_cos(k: float, start: float, stop: float) -> complex:
    """Mean of exp(2πi k t) over t ∈ [start, stop] (closed form)."""
    if k == 0:
        return 1.0
    return (np.exp(2j * np.pi * k * stop) - np.exp(2j * np.pi * k * start)) / (
        2j * np.pi * k * (stop - start)
    )


def _expected(
    region: tuple[float, float, float, float],
    shape: tuple[int, int],
    sigma_px: float,
    phase: float = 0.3,
) -> np.ndarray:
    x0, y0, x1, y1 = region
    height, width = shape
    px, py = (x1 - x0) / width, (y1 - y0) / height
    out = np.full(shape, 5.0)
    for i in range(height):
        for j in range(width):
            for m, n, a in MODES:
                kx, ky = m / EXTENT[0], n / EXTENT[1]
                mean = (
                    _box_average_cos(kx, x0 + j * px, x0 + (j + 1) * px)
                    * _box_average_cos(ky, y0 + i * py, y0 + (i + 1) * py)
                    * np.exp(1j * phase)
                )
                damping = math.exp(
                    -2 * math.pi**2 * ((sigma_px * px * kx) ** 2 + (sigma_px * py * ky) ** 2)
                )
                out[i, j] += a * damping * mean.real
    return out


@pytest.mark.parametrize("sigma_px", [0.0, 1.2])
@pytest.mark.parametrize(
    ("region", "shape"), [((3.0, 2.25, 9.0, 6.75), (8, 8)), ((1.1, 0.7, 10.3, 8.1), (5, 7))]
)
def test_pixel_average_and_smoothing_are_exact(
    region: tuple, shape: tuple, sigma_px: float
) -> None:
    sampling = (EXTENT[0] / GPTS[0], EXTENT[1] / GPTS[1])
    result = resample_region(_field(), sampling, region, shape, sigma_px)[0]
    assert np.allclose(result, _expected(region, shape, sigma_px), rtol=0, atol=1e-10)


def test_resampling_keeps_the_mean_and_a_constant() -> None:
    sampling = (EXTENT[0] / GPTS[0], EXTENT[1] / GPTS[1])
    constant = np.full((2, GPTS[1], GPTS[0]), 3.5)
    assert np.allclose(resample_region(constant, sampling, (0, 0, *EXTENT), (6, 5), 1.2), 3.5)
    whole = resample_region(_field(), sampling, (0.0, 0.0, *EXTENT), (9, 12))
    assert whole.mean() == pytest.approx(_field().mean(), abs=1e-12)


def test_fast_fft_sizes() -> None:
    assert [fast_fft_size(n) for n in (1, 7, 81, 97, 128, 161, 201, 251, 1001)] == [
        2,
        8,
        90,
        100,
        128,
        162,
        216,
        270,
        1080,
    ]
    assert fast_fft_size(250) == 250 and fast_fft_size(255) == 270  # 256 is skipped


def test_scan_grid_is_row_major_and_centred() -> None:
    positions, region = scan_grid((20.0, 12.0), 8.0, (2, 4))  # 2 rows (y) x 4 columns (x)
    assert region == (6.0, 2.0, 14.0, 10.0)  # a square of 8 Å centred in the extent
    assert positions.shape == (8, 2)
    assert np.allclose(positions[:4, 1], 4.0) and np.allclose(positions[4:, 1], 8.0)
    assert np.allclose(positions[:4, 0], [7.0, 9.0, 11.0, 13.0])
    assert np.allclose(positions.mean(axis=0), (10.0, 6.0))
    with pytest.raises(ValueError, match="does not fit"):
        scan_grid((20.0, 12.0), 13.0, (2, 2))


def test_scan_grid_shift_moves_square_and_probes_together() -> None:
    """The per-sample shift (`scan.shift_a`) moves the square and every probe by the same
    (dx, dy), and a shift that would leave the extent is refused."""
    centred_positions, centred_region = scan_grid((20.0, 12.0), 8.0, (2, 4))
    positions, region = scan_grid((20.0, 12.0), 8.0, (2, 4), (1.5, -0.75))
    np.testing.assert_allclose(positions, centred_positions + np.array([1.5, -0.75]))
    np.testing.assert_allclose(region, np.add(centred_region, [1.5, -0.75, 1.5, -0.75]))
    scan_grid((20.0, 12.0), 8.0, (2, 2), (6.0, 2.0))  # flush with the edges: still inside
    with pytest.raises(ValueError, match="leaves the extent"):
        scan_grid((20.0, 12.0), 8.0, (2, 2), (0.0, 2.5))


def test_slicing_rules() -> None:
    assert slicing(10.86, 5.43, "d_hkl", 4) == pytest.approx((1.3575, 8))
    thickness, count = slicing(10.0, 5.0, 3.0, 1)
    assert count == 4 and thickness == pytest.approx(2.5)
    assert slicing(6.0, 3.0, 2.0, 1)[1] == 3  # an exact multiple is not rounded up


def test_geometry_tiles_at_least_the_cell_and_rounds_thickness(simulation_config) -> None:
    config = simulation_config("small", cell_xy_a=24.0)  # sampling 0.12 Å
    geometry = plan_geometry(config, (5.43, 7.68, 7.68), thickness_a=35.0, planes_per_period=2)
    assert geometry.repetitions == (5, 4, 5)
    assert geometry.extent_a == pytest.approx((27.15, 30.72))
    assert geometry.thickness_a == pytest.approx(38.4)
    assert all(s <= config.sampling_a for s in geometry.sampling_a)
    assert geometry.gpts == (fast_fft_size(227), fast_fft_size(256))
    assert geometry.num_slices == 20  # numeric 2 Å: ceil(38.4 / 2)


def test_crop_and_binning_keep_zero_frequency_in_pixel_h_over_2() -> None:
    n = 12
    for m, binning in [(6, 1), (3, 2), (4, 3), (5, 2), (3, 3)]:
        pattern = np.zeros((1, n, n))
        pattern[0, n // 2, n // 2] = 1.0  # zero frequency of an fftshifted axis of n
        window = central_crop(n, m * binning)
        pooled = sum_pool(pattern[:, window, window], binning)
        assert pooled.shape == (1, m, m) and pooled[0, m // 2, m // 2] == 1.0
    with pytest.raises(ValueError, match="cannot crop"):
        central_crop(4, 6)

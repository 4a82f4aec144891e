"""The simulated specimen and grid of one sample: supercell, thickness, slices, grid, probe scan.

Choices (all recorded in the `SampleRecord`):
* Lateral size: the oriented base cell is repeated `ceil(cell_xy_a / L)` times along x and y, so
  the specimen is at least `cell_xy_a` wide and exactly periodic; it is *not* strained to
  `cell_xy_a` (that would change the lattice constant by up to L / cell_xy_a). The simulated
  extent (`extent_a`) is therefore between cell_xy_a and cell_xy_a + L, and not square in general.
* Grid: `gpts` = the smallest FFT-friendly size (`fast_fft_size`) ≥ extent / sampling_a per axis,
  so the grid spacing is at most `sampling_a` and every antialiasing check of the config (done
  at `sampling_a`) still holds. A pattern pixel is λ / extent rad.
* Thickness: the drawn thickness rounded to whole base-cell periods along z (at least one).
* Slices: `slice_thickness_a: d_hkl` slices each base period into l* equal slices, l* being the
  order of the first allowed (0 0 l) reflection, so the slice is the interplanar spacing along
  the beam; a number gives ceil(thickness / value) equal slices. Slices are passed to abTEM as
  an explicit tuple so abTEM does not re-derive (and possibly round differently) the count.
* Scan: `scan.gpts` = (rows, cols) = (n_y, n_x) probe positions at the centres of an n_y × n_x
  grid of cells tiling the square [x0, x1] × [y0, y1] of side `scan.fraction` × `cell_xy_a`,
  centred in the extent and moved by the sample's drawn shift (`scan.shift_a`, see `draws`);
  position p = row · n_x + col, stored as (x, y). The target covers the same square. Why a side in Å and not a fraction of each sample's extent: the extent varies
  from sample to sample (whole base cells, up to twice `cell_xy_a`), and a scan step and target
  pixel that varied with it would show the network the same crystal at different scales; a
  fixed square gives every sample the same scan step and target pixel size, like a microscope
  scan does. The square fits: the extent is at least `cell_xy_a` along both axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from stemdl.configs.simulation import SimulationConfig
from stemdl.configs.units import ANTIALIAS_FRACTION

_ROUNDING = 1e-9  # a length within this many Å of a whole multiple counts as that multiple


@dataclass(frozen=True)
class Geometry:
    repetitions: tuple[int, int, int]
    extent_a: tuple[float, float]  # (x, y)
    thickness_a: float
    gpts: tuple[int, int]  # (x, y)
    sampling_a: tuple[float, float]  # (x, y)
    slice_thickness_a: float
    num_slices: int
    probe_positions_a: np.ndarray  # (P, 2), (x, y)
    target_region_a: tuple[float, float, float, float]  # x0, y0, x1, y1


def fast_fft_size(n: int) -> int:
    """The smallest FFT-friendly grid size ≥ n: even, only prime factors 2, 3 and 5.

    Powers of two from 256 up are skipped: abTEM's batched, in-place FFTW transforms with
    `FFTW_ESTIMATE` run several times slower per point on them than on neighbouring sizes
    (cache-set aliasing of the power-of-two strides); odd sizes and factors of 7 are slower
    than these too (figures in benchmarks/RESULTS.md, "Multislice engine").
    """
    candidate = max(int(n), 2)
    while True:
        rest = candidate
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        power_of_two = candidate & (candidate - 1) == 0
        if rest == 1 and candidate % 2 == 0 and not (power_of_two and candidate >= 256):
            return candidate
        candidate += 1


def lateral_repetitions(base_length_a: float, cell_xy_a: float) -> int:
    return max(1, math.ceil(cell_xy_a / base_length_a - _ROUNDING))


def depth_repetitions(base_period_a: float, thickness_a: float) -> int:
    return max(1, round(thickness_a / base_period_a))


def slicing(
    thickness_a: float, base_period_a: float, slice_setting: float | str, planes_per_period: int
) -> tuple[float, int]:
    """(slice thickness, number of slices) for a specimen of whole base periods."""
    if slice_setting == "d_hkl":
        repetitions = round(thickness_a / base_period_a)
        return base_period_a / planes_per_period, repetitions * planes_per_period
    num_slices = max(1, math.ceil(thickness_a / float(slice_setting) - _ROUNDING))
    return thickness_a / num_slices, num_slices


def scan_grid(
    extent_a: tuple[float, float], side_a: float, scan_gpts: tuple[int, int],
    shift_a: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Probe positions (P, 2) in (x, y) and the scanned square (x0, y0, x1, y1) of side
    `side_a`, centred in the extent and then moved by `shift_a` (dx, dy)."""
    if not 0 < side_a <= min(extent_a) + _ROUNDING:
        raise ValueError(f"a scanned square of {side_a} Å does not fit an extent of {extent_a} Å")
    dx, dy = shift_a
    if any(abs(d) > (e - side_a) / 2 + _ROUNDING for d, e in zip(shift_a, extent_a, strict=True)):
        raise ValueError(f"a {side_a} Å square shifted by {shift_a} Å leaves the extent "
                         f"{extent_a} Å")
    rows, cols = scan_gpts
    x0, x1 = (extent_a[0] - side_a) / 2 + dx, (extent_a[0] + side_a) / 2 + dx
    y0, y1 = (extent_a[1] - side_a) / 2 + dy, (extent_a[1] + side_a) / 2 + dy
    xs = x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols
    ys = y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")  # (rows, cols)
    positions = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    return positions, (x0, y0, x1, y1)


def plan_geometry(
    config: SimulationConfig,
    base_lengths_a: tuple[float, float, float],
    thickness_a: float,
    planes_per_period: int,
    scan_shift_a: tuple[float, float] = (0.0, 0.0),
) -> Geometry:
    """Everything about the specimen and grid of one sample (see the module docstring)."""
    length_x, length_y, period = base_lengths_a
    reps = (
        lateral_repetitions(length_x, config.cell_xy_a),
        lateral_repetitions(length_y, config.cell_xy_a),
        depth_repetitions(period, thickness_a),
    )
    extent = (reps[0] * length_x, reps[1] * length_y)
    thickness = reps[2] * period
    gpts = (
        fast_fft_size(math.ceil(extent[0] / config.sampling_a - _ROUNDING)),
        fast_fft_size(math.ceil(extent[1] / config.sampling_a - _ROUNDING)),
    )
    sampling = (extent[0] / gpts[0], extent[1] / gpts[1])
    slice_thickness, num_slices = slicing(
        thickness, period, config.slice_thickness_a, planes_per_period
    )
    positions, region = scan_grid(extent, config.scan.side_a(config.cell_xy_a), config.scan.gpts,
                                  scan_shift_a)
    return Geometry(
        reps, extent, thickness, gpts, sampling, slice_thickness, num_slices, positions, region
    )


def reduced_gpts(
    gpts: tuple[int, int],
    extent_a: tuple[float, float],
    window_px: tuple[int, int],
    aperture_inv_a: float,
    margin: float,
) -> tuple[int, int]:
    """The multislice grid of `simulation.reduced_grid_margin` (never finer than `gpts`).

    A pattern pixel is 1/extent Å⁻¹ whatever the grid, so the stored window (`window_px`, x and
    y, binning included) reaches (window/2)/extent; abTEM keeps frequencies below
    ANTIALIAS_FRACTION·n/(2·extent). The grid per axis is the smallest FFT-friendly n whose band
    reaches `margin` times the larger of the window's edge and the probe aperture
    (`aperture_inv_a` = α/λ), so scattering up to `margin` × the stored angles is simulated and
    everything beyond it is cut, as the antialiasing aperture cuts beyond the full grid's band.
    """
    reduced = []
    for n, extent, window in zip(gpts, extent_a, window_px, strict=True):
        needed = margin * max(window / 2 / extent, aperture_inv_a)  # Å⁻¹
        size = fast_fft_size(math.ceil(2 * needed * extent / ANTIALIAS_FRACTION - _ROUNDING))
        reduced.append(min(n, size))
    return reduced[0], reduced[1]


def centre_planes_in_slices(
    positions_a: np.ndarray, period_a: float, slice_thickness_a: float
) -> np.ndarray:
    """Base-cell positions shifted by half a slice along z (wrapped into the period).

    With d_hkl slices the atomic planes sit at multiples of the slice thickness, exactly on
    slice boundaries: frozen-phonon displacements would then put about half of each plane's
    atoms in the slice above and half in the slice below. Shifted by half a slice, every plane
    sits mid-slice, d/2 from either boundary. The record stores the shifted positions, so a
    reader rebuilds exactly what was simulated.
    """
    shifted = np.array(positions_a, dtype=np.float64, copy=True)
    shifted[:, 2] = np.mod(shifted[:, 2] + slice_thickness_a / 2, period_a)
    shifted[np.isclose(shifted[:, 2], period_a, rtol=0, atol=_ROUNDING), 2] = 0.0
    return shifted


def specimen_atoms(
    cell_a: np.ndarray,
    atomic_numbers: np.ndarray,
    positions_a: np.ndarray,
    repetitions: tuple[int, int, int],
) -> Atoms:
    """The simulated specimen: the base cell repeated; exactly what a record reader rebuilds."""
    base = Atoms(numbers=atomic_numbers, positions=positions_a, cell=cell_a, pbc=True)
    return base * repetitions

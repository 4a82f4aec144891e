"""The regression target: the projected potential of the scanned region on the target grid.

Definition. For depth section c (a sum of consecutive slices, see `physics`), the target pixel
(i, j) of a `target_px` = (H, W) grid over the scanned square [x0, x1] × [y0, y1] holds

    target[c, i, j] = mean of (G_σ ∗ V_c) over the pixel's area,
                      pixel i spans y0 + [i, i+1)·(y1−y0)/H, pixel j spans x0 + [j, j+1)·(x1−x0)/W,

with V_c the projected potential on abTEM's periodic grid, read as its trigonometric
(band-limited) interpolant, and G_σ a Gaussian of σ = `smoothing_px` target pixels (σ = 0: no
smoothing). The pixel average is what a detector pixel of that size would integrate, so a
coarser target does not alias sharp atomic peaks; the Gaussian is the paper's smoothing
(σ ≈ 1.2 px).

Computation. Everything is a convolution of a periodic function, so it is exact in Fourier
space: V̂(k) is multiplied by sinc(k_x·p_x)·sinc(k_y·p_y) (the pixel box) and exp(−2π²σ²k²)
(the Gaussian), and the result is evaluated at the pixel centres by a direct (separable) Fourier
sum. The real part of that sum is the symmetric interpolant, so the Nyquist term of an even grid
is handled correctly. `tests/simulate/test_physics_target.py` checks it against closed-form averages
of cosines.
"""

from __future__ import annotations

import numpy as np


def pixel_centres(start: float, stop: float, count: int) -> np.ndarray:
    """Centres of `count` equal pixels tiling [start, stop)."""
    return start + (np.arange(count) + 0.5) * (stop - start) / count


def _fourier_matrix(frequencies: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.exp(2j * np.pi * points[:, None] * frequencies[None, :])


def resample_region(
    maps_yx: np.ndarray,
    sampling_xy_a: tuple[float, float],
    region_a: tuple[float, float, float, float],
    target_px: tuple[int, int],
    smoothing_px: float = 0.0,
) -> np.ndarray:
    """(C, H, W) pixel-averaged, optionally smoothed maps of the region (see module docstring).

    `maps_yx` is (C, ny, nx) on a periodic grid with grid point (i, j) at (x, y) =
    (j·Δx, i·Δy); `region_a` is (x0, y0, x1, y1) in Å; `target_px` is (H, W).
    """
    maps = np.asarray(maps_yx, dtype=np.float64)
    _, ny, nx = maps.shape
    dx, dy = sampling_xy_a
    x0, y0, x1, y1 = region_a
    height, width = target_px
    pixel_x, pixel_y = (x1 - x0) / width, (y1 - y0) / height
    kx = np.fft.fftfreq(nx, d=dx)
    ky = np.fft.fftfreq(ny, d=dy)
    sigma_x, sigma_y = smoothing_px * pixel_x, smoothing_px * pixel_y
    filter_x = np.sinc(kx * pixel_x) * np.exp(-2 * np.pi**2 * sigma_x**2 * kx**2)
    filter_y = np.sinc(ky * pixel_y) * np.exp(-2 * np.pi**2 * sigma_y**2 * ky**2)
    spectrum = np.fft.fft2(maps, axes=(-2, -1)) * filter_y[:, None] * filter_x[None, :]
    rows = _fourier_matrix(ky, pixel_centres(y0, y1, height))  # (H, ny)
    cols = _fourier_matrix(kx, pixel_centres(x0, x1, width))  # (W, nx)
    values = np.einsum("hy,cyx,wx->chw", rows, spectrum, cols, optimize=True)
    return values.real / (nx * ny)

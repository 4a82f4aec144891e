"""Area-weighted rebinning of diffraction patterns onto a fixed angular pixel.

Why: a periodic supercell of whole base cells, L wide, samples the far field at λ / L radians
a pixel, so without this every material has its own pattern pixel (12.8–25.4 Å-equivalent in
`small`) and its Bragg disks always fall on whole multiples of its number of cells. A model
trained on such patterns learns where a structure's disks fall in pixels, not in mrad, and a
measured scan, whose detector pixel has nothing to do with the lattice, maps well or badly by
chance (benchmarks/RESULTS.md, "pattern pixel"). With `simulation.detector.pixel_mrad` every
pattern is integrated onto one angular pixel, as a detector of that pixel size records it.

The operator: each output pixel is the sum of the input pixels it covers, a pixel cut by its
edge counting with the covered fraction of its area (input pixels treated as uniform squares,
the piecewise-constant integral of the sampled intensity). Only ratios ≥ 1 (output pixels no
smaller than the input's) are accepted: a smaller pixel would invent detail. The grids are
centred on zero frequency (output pixel n // 2 and input pixel m // 2 of an odd input window),
and the operator is the same along both axes up to the ratio, so it commutes with the flips
and the transpose of the D4 augmentation. `predict` bins measured scans with the same
operator (`predict.pattern_resampling`).
"""

from __future__ import annotations

import numpy as np

from stemdl.configs.units import native_window_px

_TOLERANCE = 1e-9


def overlap_matrix(n_in: int, centre_in: float, n_out: int, centre_out: float,
                   ratio: float) -> np.ndarray:
    """(n_out, n_in): how much of input pixel i lies in output pixel j (fraction of its area).

    Input pixel i spans [i − ½, i + ½) in pixel-centre coordinates; output pixel j spans
    centre_in + (j − centre_out)·ratio ± ratio/2 in the same coordinates."""
    lo_in = np.arange(n_in) - 0.5
    hi_in = lo_in + 1.0
    centres = centre_in + (np.arange(n_out) - centre_out) * ratio
    lo_out, hi_out = centres - ratio / 2, centres + ratio / 2
    overlap = np.minimum(hi_out[:, None], hi_in[None, :]) - np.maximum(lo_out[:, None], lo_in[None, :])
    overlap = np.clip(overlap, 0.0, None)
    overlap[np.abs(overlap) < _TOLERANCE] = 0.0
    overlap[np.abs(overlap - 1.0) < _TOLERANCE] = 1.0
    return overlap


def rebin_matrices(native_pixel_mrad: tuple[float, float], pixel_mrad: float,
                   pattern_px: tuple[int, int]) -> tuple[tuple[int, int], list[np.ndarray]]:
    """The native window (rows, cols) to simulate and the two overlap matrices (ky, kx) that
    take it onto `pattern_px` pixels of `pixel_mrad`. `native_pixel_mrad` is (ky, kx)."""
    ratios = [pixel_mrad / native for native in native_pixel_mrad]
    if min(ratios) < 1 - _TOLERANCE:
        raise ValueError(
            f"detector.pixel_mrad {pixel_mrad} is finer than this sample's native pattern pixel "
            f"{max(native_pixel_mrad):.4f} mrad (λ / supercell extent); rebinning onto it would "
            "interpolate, not integrate")
    ratios = [max(r, 1.0) if abs(r - 1.0) < _TOLERANCE else r for r in ratios]
    window = tuple(native_window_px(n, r) for n, r in zip(pattern_px, ratios, strict=True))
    matrices = [overlap_matrix(n_in, n_in // 2, n_out, n_out // 2, r)
                for n_in, n_out, r in zip(window, pattern_px, ratios, strict=True)]
    return window, matrices  # type: ignore[return-value]


def rebin(patterns: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """(..., H, W) → (..., H', W') float32 with the overlap matrices (ky, kx) of
    `rebin_matrices`, summed in float64 so that the fractions of the beam add up exactly."""
    rows, cols = matrices
    out = np.einsum("ih,...hw,jw->...ij", rows, np.asarray(patterns, dtype=np.float64), cols,
                    optimize=True)
    return np.ascontiguousarray(out, dtype=np.float32)

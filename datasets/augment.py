"""Symmetry augmentation: the 8 operations of the square applied to a whole sample at once.

Why this is physics, not just image flipping. Mirror the specimen about the centre of the
scanned square (x → x0 + x1 − x), or swap its x and y axes. The probe (defocus, C3: round
aberrations, a round aperture) and abTEM's antialiasing aperture are unchanged by either, the
probe positions map onto probe positions (they sit at the centres of a square grid of cells,
symmetric about the centre), and the target pixels map onto target pixels. So the sample
simulated from the transformed specimen is the stored sample with

* the scan grid (gy, gx) of patterns moved by the same operation as real space,
* every pattern transformed by the same operation in reciprocal space (a mirror x → −x is
  kx → −kx; a swap of x and y is a swap of kx and ky),
* the target map moved by the operation.

This holds exactly only if the stored angular window is symmetric about zero frequency: a
window of an odd number of pixels centred on zero frequency (`detector.pattern_px` × `binning`
odd); an even window keeps frequency −n/2 but not +n/2, so a mirror would put wrong values in
its first row. Transposes also need a square scan grid, pattern and target. `check_d4` refuses
other shapes, naming the field. `tests/datasets/test_augment.py` simulates a mirrored and a transposed
specimen with abTEM and compares them with `apply_d4` of the original sample.

An operation is a number 0..7: bit 2 transposes (swaps the two axes) first, then bit 0 flips
columns (x) and bit 1 flips rows (y). 0 is the identity; 3 is the 180° rotation.
"""

from __future__ import annotations

import numpy as np

from stemdl.configs import ConfigError

D4_SIZE = 8


def check_d4(scan_gpts: tuple[int, int], pattern_px: tuple[int, int], binning: int,
             target_px: tuple[int, int]) -> None:
    """Raise ValueError, naming the config field, if D4 augmentation would not be exact."""
    problems = []
    if scan_gpts[0] != scan_gpts[1]:
        problems.append(f"simulation.scan.gpts {list(scan_gpts)} must be square")
    if pattern_px[0] != pattern_px[1]:
        problems.append(f"simulation.detector.pattern_px {list(pattern_px)} must be square")
    if (pattern_px[0] * binning) % 2 == 0:
        problems.append(f"simulation.detector.pattern_px × binning = {pattern_px[0] * binning} "
                        "must be odd (a window symmetric about zero frequency)")
    if target_px[0] != target_px[1]:
        problems.append(f"simulation.target.target_px {list(target_px)} must be square")
    if problems:
        raise ConfigError("loader.augment: d4 is exact only for symmetric samples: "
                         + "; ".join(problems))


def _apply_to_axes(array: np.ndarray, op: int, axis_y: int, axis_x: int) -> np.ndarray:
    if op & 4:
        array = np.swapaxes(array, axis_y, axis_x)
    if op & 1:
        array = np.flip(array, axis_x)
    if op & 2:
        array = np.flip(array, axis_y)
    return array


def apply_d4(cbed: np.ndarray, potential: np.ndarray, scan_gpts: tuple[int, int],
             op: int) -> tuple[np.ndarray, np.ndarray]:
    """The sample of the transformed specimen: `cbed` (P, H, W), `potential` (C, H', W').

    Returns views where possible; copy them (or use `apply_d4_inplace`) before writing."""
    if not 0 <= op < D4_SIZE:
        raise ValueError(f"a D4 operation is 0..7, got {op}")
    patterns, height, width = cbed.shape[-3:]
    gy, gx = scan_gpts
    if patterns != gy * gx:
        raise ValueError(f"{patterns} patterns do not form the {gy}x{gx} scan grid")
    grid = cbed.reshape(*cbed.shape[:-3], gy, gx, height, width)
    grid = _apply_to_axes(grid, op, -4, -3)  # real space: the scan grid
    grid = _apply_to_axes(grid, op, -2, -1)  # reciprocal space: every pattern
    out_cbed = grid.reshape(cbed.shape)
    out_potential = _apply_to_axes(potential, op, -2, -1)
    return out_cbed, out_potential


def apply_d4_inplace(cbed: np.ndarray, potential: np.ndarray, scan_gpts: tuple[int, int],
                     op: int) -> None:
    """`apply_d4`, written back into `cbed` and `potential` (e.g. a sample's batch slot)."""
    if op == 0:
        return
    new_cbed, new_potential = apply_d4(cbed, potential, scan_gpts, op)
    new_cbed, new_potential = new_cbed.copy(), new_potential.copy()
    cbed[...] = new_cbed
    potential[...] = new_potential

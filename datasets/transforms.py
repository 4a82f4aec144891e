"""Decoding stored samples into network inputs and targets (`LoaderConfig`), in NumPy.

Input, per pattern (the paper's recipe):
  1. optional Poisson noise (augmentation, below);
  2. `input_transform: sqrt_min`: x ← sqrt(x − min(x)), min over the pattern's pixels;
  3. `standardize_inputs`: x ← (x − mean(x)) / (std(x) + ε), per pattern.
Target: `standardize_targets`: per sample and channel, (t − mean) / (std + ε).

Noise convention (`dose_e_per_a2`, electrons per Å²): the dose is spread uniformly over the
scanned region, so each of the P probe positions receives
  N_e = dose_e_per_a2 · area(target_region_a) / P  electrons.
A stored pattern is the fraction of the incident beam per detector pixel, so the noisy pattern
is Poisson(N_e · x) / N_e: counts rescaled back to the stored units. (`target_region_a` is the
scanned region of the sample's record, x0, y0, x1, y1 in Å.)
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-6


def electrons_per_pattern(dose_e_per_a2: float, target_region_a: np.ndarray,
                          num_patterns: int) -> float:
    """N_e: electrons per probe position for a dose spread over the scanned region."""
    x0, y0, x1, y1 = (float(v) for v in target_region_a)
    area_a2 = abs(x1 - x0) * abs(y1 - y0)
    if not area_a2 > 0:
        raise ValueError(f"target_region_a {target_region_a} has no area; cannot apply a dose")
    return dose_e_per_a2 * area_a2 / num_patterns


def poisson_noise(cbed: np.ndarray, electrons: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise at `electrons` per pattern, in the stored units (fraction of the beam)."""
    expected = np.clip(cbed, 0, None).astype(np.float64) * electrons
    return (rng.poisson(expected) / electrons).astype(np.float32)


def normalize_inputs(cbed: np.ndarray, input_transform: str, standardize: bool) -> np.ndarray:
    """(P, H, W) stored patterns → float32 network input, per pattern."""
    x = np.asarray(cbed, dtype=np.float32)
    if input_transform == "sqrt_min":
        x = np.sqrt(x - x.min(axis=(-2, -1), keepdims=True))
    elif input_transform != "none":
        raise ValueError(f"unknown input_transform {input_transform!r}")
    if standardize:
        mean = x.mean(axis=(-2, -1), keepdims=True)
        std = x.std(axis=(-2, -1), keepdims=True)
        x = (x - mean) / (std + EPSILON)
    return np.ascontiguousarray(x, dtype=np.float32)


def normalize_targets(potential: np.ndarray, standardize: bool) -> np.ndarray:
    """(C, H', W') stored potential → float32 target, per channel."""
    t = np.asarray(potential, dtype=np.float32)
    if standardize:
        mean = t.mean(axis=(-2, -1), keepdims=True)
        std = t.std(axis=(-2, -1), keepdims=True)
        t = (t - mean) / (std + EPSILON)
    return np.ascontiguousarray(t, dtype=np.float32)

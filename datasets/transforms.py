"""Decoding stored samples into network inputs and targets (`LoaderConfig`).

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


def normalize_inputs(cbed: np.ndarray, input_transform: str, standardize: bool, *,
                     inplace: bool = False) -> np.ndarray:
    """(..., P, H, W) stored patterns → float32 network input, per pattern.

    NumPy, not torch: NumPy kernels are single-threaded and release the GIL, so the loader's
    decode threads run them in parallel without fighting over torch's intra-op thread pool.
    With `inplace` (and float32 input) the array is overwritten: the loader normalizes a
    freshly decoded block and so saves a copy of every sample.
    """
    x = np.asarray(cbed)
    x = x if (inplace and x.dtype == np.float32) else x.astype(np.float32)
    if input_transform == "sqrt_min":
        x -= x.min(axis=(-2, -1), keepdims=True)
        np.sqrt(x, out=x)
    elif input_transform != "none":
        raise ValueError(f"unknown input_transform {input_transform!r}")
    if standardize:
        _standardize(x)
    return x


def normalize_targets(potential: np.ndarray, standardize: bool, *,
                      inplace: bool = False) -> np.ndarray:
    """(..., C, H', W') stored potential → float32 target, per channel."""
    t = np.asarray(potential)
    t = t if (inplace and t.dtype == np.float32) else t.astype(np.float32)
    if standardize:
        _standardize(t)
    return t


def _standardize(x: np.ndarray) -> None:
    """In place: x ← (x − mean) / (std + ε) over the last two axes (population std)."""
    x -= x.mean(axis=(-2, -1), keepdims=True)
    pixels = x.shape[-1] * x.shape[-2]
    variance = np.einsum("...ij,...ij->...", x, x) / pixels
    x /= (np.sqrt(variance) + EPSILON)[..., None, None]


# Elements per torch copy: at most ATen's grain size (32,768), so a conversion never goes to
# torch's intra-op thread pool, whatever `torch.get_num_threads()` the trainer set.
_TORCH_GRAIN = 1 << 15


def to_float32(values: np.ndarray) -> np.ndarray:
    """Stored values as a new float32 array.

    float16 is converted by torch's vectorized (F16C) copy, in pieces below its parallel grain
    size: ~0.05 ms per 64×64×64 sample on one core, against ~0.8 ms for a 65,536-entry table
    and ~1.6 ms for NumPy's `astype` (NumPy 2.4 converts float16 in software). The pieces keep
    it on the calling thread: torch's intra-op pool collapses when the cores are busy with
    training, and a loader worker must not compete for it."""
    import torch  # the loader imports torch anyway; `transforms` stays importable without it

    if values.dtype != np.float16:
        return np.array(values, dtype=np.float32)
    src = np.ascontiguousarray(values)
    out = np.empty(values.shape, dtype=np.float32)
    flat_in, flat_out = torch.from_numpy(src.reshape(-1)), torch.from_numpy(out.reshape(-1))
    for start in range(0, flat_in.numel(), _TORCH_GRAIN):
        flat_out[start:start + _TORCH_GRAIN].copy_(flat_in[start:start + _TORCH_GRAIN])
    return out

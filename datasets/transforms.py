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

    With sqrt_min and standardize, a fused numba kernel (`_fused_kernel`) when numba is
    importable, else NumPy. NumPy, not torch: NumPy kernels are single-threaded and release the GIL, so the loader's
    decode threads run them in parallel without fighting over torch's intra-op thread pool.
    With `inplace` (and float32 input) the array is overwritten: the loader normalizes a
    freshly decoded block and so saves a copy of every sample.
    """
    x = np.asarray(cbed)
    x = x if (inplace and x.dtype == np.float32) else x.astype(np.float32)
    if input_transform not in ("sqrt_min", "none"):
        raise ValueError(f"unknown input_transform {input_transform!r}")
    if input_transform == "sqrt_min" and standardize and x.ndim >= 2 and x.size:
        kernel = _fused_kernel()
        if kernel is not None:
            flat = np.ascontiguousarray(x).reshape(-1, x.shape[-2] * x.shape[-1])
            lows = flat.min(axis=1)  # NumPy's SIMD reduction beats a compiled scalar loop
            if np.isfinite(lows).all():  # NaN / -inf: the NumPy path's IEEE semantics
                kernel(flat, lows, EPSILON)
                return flat.reshape(x.shape)
    return _normalize_inputs_numpy(x, input_transform, standardize)


def _normalize_inputs_numpy(x: np.ndarray, input_transform: str, standardize: bool) -> np.ndarray:
    """The NumPy path of `normalize_inputs` (in place on float32 `x`); the reference that the
    fused kernel is tested against."""
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


_KERNEL: list = []  # [kernel or None], compiled on first use


def _fused_kernel():  # type: ignore[no-untyped-def]
    """sqrt_min + standardize fused per pattern (numba), or None without numba.

    Why: the NumPy path makes about seven passes over each sample (min, subtract, sqrt, mean,
    subtract, einsum, divide); here the per-pattern min is NumPy's SIMD reduction, then the
    kernel makes two passes over one pattern at a time while it is in L1 cache:
    s = sqrt(x − min) with the sum and sum of squares in float64, then (s − mean) / (std + ε)
    as a multiply, about four times faster (benchmarks/RESULTS.md, "Loader throughput").
    Same numbers as the NumPy path to float32 rounding
    (tests/datasets/test_loader_transforms.py); a constant pattern gives zeros in both.
    `STEMDL_NO_NUMBA=1` forces the NumPy path."""
    if not _KERNEL:
        _KERNEL.append(_compile_kernel())
    return _KERNEL[0]


def _compile_kernel():  # type: ignore[no-untyped-def]
    import os

    if os.environ.get("STEMDL_NO_NUMBA"):
        return None
    try:
        import numba
    except ImportError:
        return None

    # reassoc lets LLVM vectorize the sums; no nnan/ninf, so NaN and inf stay IEEE
    @numba.njit(cache=True, nogil=True,
                fastmath={"reassoc", "nsz", "arcp", "contract"})
    def sqrt_min_standardize(x, lows, eps):  # pragma: no cover - compiled
        rows, n = x.shape
        for r in range(rows):
            row = x[r]
            lo = lows[r]
            total = 0.0
            squares = 0.0
            for i in range(n):
                v = np.float32(np.sqrt(row[i] - lo))
                row[i] = v
                total += v
                squares += np.float64(v) * v
            mean = total / n
            variance = max(squares / n - mean * mean, 0.0)
            scale = np.float32(1.0 / (np.sqrt(variance) + eps))
            shift = np.float32(mean)
            for i in range(n):
                row[i] = (row[i] - shift) * scale

    return sqrt_min_standardize


# Elements per torch copy: at most ATen's grain size (32,768), so a conversion never goes to
# torch's intra-op thread pool, whatever `torch.get_num_threads()` the trainer set.
_TORCH_GRAIN = 1 << 15


def to_float32(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values as float32: into `out` (a C-contiguous float32 array of the same shape)
    if given, else a new array.

    float16 is converted by torch's vectorized (F16C) copy, in pieces below its parallel grain
    size: an order of magnitude faster than a 65,536-entry table, and more than NumPy's
    `astype` (NumPy 2.4 converts float16 in software; figures in benchmarks/RESULTS.md,
    "Loader throughput"). The pieces keep
    it on the calling thread: torch's intra-op pool collapses when the cores are busy with
    training, and a loader worker must not compete for it."""
    import torch  # the loader imports torch anyway; `transforms` stays importable without it

    if out is None:
        out = np.empty(values.shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != values.shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 of shape {values.shape}, "
                         f"got {out.dtype} {out.shape}")
    if values.dtype != np.float16:
        np.copyto(out, values, casting="unsafe")
        return out
    src = np.ascontiguousarray(values)
    flat_in, flat_out = torch.from_numpy(src.reshape(-1)), torch.from_numpy(out.reshape(-1))
    for start in range(0, flat_in.numel(), _TORCH_GRAIN):
        flat_out[start:start + _TORCH_GRAIN].copy_(flat_in[start:start + _TORCH_GRAIN])
    return out

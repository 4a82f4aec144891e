"""Measurement nuisances applied to stored patterns in the loader (`loader.nuisances`).

A stored sample is what an ideal instrument records: a coherent point source, a detector that
counts every electron in the pixel it lands in, no noise. A measured scan is not, and a model
that never saw the difference maps it worse. These are the parts of the difference that are
linear operations on, or noise added to, the recorded intensity, so they cost a fraction of
re-simulation and belong in the loader (beam tilt changes the multislice and belongs there):

1. **Source size** (partial spatial coherence): an extended incoherent source is a Gaussian
   distribution of probe positions, so the measured 4D data are the coherent ones convolved
   over the scan positions with the source's image, of standard deviation `sigma_a / step`
   probe steps. The scan's edges are mirrored (half-sample symmetric), which keeps the total
   intensity over the scan (the blur matrix is symmetric with unit row sums). With a scan
   step comparable to the blur, this sampled Gaussian is an approximation of the continuous
   convolution; at sigma < ~0.3 steps it barely changes anything.
2. **Detector PSF**: each pattern is convolved with a Gaussian (sigma) or a 2-D Lorentzian
   1/(1 + r²/γ²)^(3/2) (Cauchy; the long tails of scintillator-coupled cameras) kernel of a
   drawn width in stored pixels, normalized to sum 1 and truncated at the pattern size, with
   the pattern's edges mirrored so that total counts are kept. Applied to the expected
   intensity, before shot noise (the MTF of a counting detector); with a dose the noise is
   then white, as on a hybrid pixel detector.
3. **Dose**: drawn log-uniformly from `dose_e_per_a2` (electrons per Å² over the scanned
   region, as `transforms.electrons_per_pattern` spreads it); Poisson noise at it.
4. **Gain, dark level, read noise**: counts = gain · electrons + dark + N(0, read_noise);
   returned in counts per incident electron (÷ electrons per pattern), like stored units up to
   the gain. The loader's normalization, sqrt(x − min) then standardization per pattern,
   removes a uniform gain and dark level exactly: sqrt(g·x + d − min(g·x + d)) =
   √g · sqrt(x − min x), and the standardization divides √g out. What remains is the read
   noise (and, through the min, its effect on the offset); `tests/datasets/test_nuisances.py`
   checks both.

Every value is drawn from its own stream, `default_rng([seed, epoch, index, 4, k])` with k
per nuisance, so switching one nuisance on does not change another's draws, and the values
of a sample are reproducible from (seed, epoch, index) alone (`draw_nuisances`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import fftconvolve

from stemdl.configs.dataset import NuisanceConfig
from stemdl.configs.simulation import Range
from stemdl.datasets.transforms import electrons_per_pattern, poisson_noise

_STREAM = 4  # after the loader's streams 1 (order), 2 (Poisson dose), 3 (D4)
_DOSE, _PSF, _SOURCE, _GAIN, _DARK, _POISSON, _READ = range(7)


@dataclass(frozen=True)
class DrawnNuisances:
    """The nuisances one sample got in one epoch (None: that nuisance is off)."""

    dose_e_per_a2: float | None
    psf: str
    psf_width_px: float
    source_sigma_a: float | None
    gain_counts_per_electron: float | None
    dark_counts: float | None
    read_noise_counts: float

    def as_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


def _rng(seed: int, epoch: int, index: int, what: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index, _STREAM, what])


def _uniform(value: Range | None, rng: np.random.Generator) -> float | None:
    if value is None:
        return None
    return float(value.min if value.is_fixed else rng.uniform(value.min, value.max))


def draw_nuisances(cfg: NuisanceConfig, seed: int, epoch: int, index: int) -> DrawnNuisances:
    """The values sample `index` gets in `epoch` (module docstring)."""
    dose = None
    if cfg.dose_e_per_a2 is not None:
        low, high = cfg.dose_e_per_a2.min, cfg.dose_e_per_a2.max
        dose = low if low == high else float(math.exp(
            _rng(seed, epoch, index, _DOSE).uniform(math.log(low), math.log(high))))
    return DrawnNuisances(
        dose_e_per_a2=dose,
        psf=cfg.psf,
        psf_width_px=(0.0 if cfg.psf == "none"
                      else float(_uniform(cfg.psf_width_px, _rng(seed, epoch, index, _PSF)))),
        source_sigma_a=_uniform(cfg.source_sigma_a, _rng(seed, epoch, index, _SOURCE)),
        gain_counts_per_electron=_uniform(cfg.gain_counts_per_electron,
                                          _rng(seed, epoch, index, _GAIN)),
        dark_counts=_uniform(cfg.dark_counts, _rng(seed, epoch, index, _DARK)),
        read_noise_counts=cfg.read_noise_counts,
    )


def psf_kernel(kind: str, width_px: float, size: int) -> np.ndarray:
    """(2R + 1)² kernel summing to 1, R = size − 1 at most (the pattern's reach)."""
    if kind == "gaussian":
        radius = min(size - 1, max(1, math.ceil(4 * width_px)))
    elif kind == "lorentzian":
        radius = size - 1  # the tails are the point of it
    else:
        raise ValueError(f"unknown psf {kind!r}")
    r = np.arange(-radius, radius + 1, dtype=np.float64)
    r2 = r[:, None] ** 2 + r[None, :] ** 2
    if kind == "gaussian":
        kernel = np.exp(-r2 / (2 * width_px ** 2))
    else:
        kernel = (1 + r2 / width_px ** 2) ** -1.5
    return kernel / kernel.sum()


def apply_psf(patterns: np.ndarray, kind: str, width_px: float) -> np.ndarray:
    """(..., H, W) patterns convolved with the PSF, edges mirrored (total counts kept)."""
    if kind == "none" or width_px <= 0:
        return patterns
    kernel = psf_kernel(kind, width_px, min(patterns.shape[-2:]))
    radius = kernel.shape[0] // 2
    pad = [(0, 0)] * (patterns.ndim - 2) + [(radius, radius)] * 2
    padded = np.pad(patterns.astype(np.float64), pad, mode="symmetric")
    lead = (1,) * (patterns.ndim - 2)
    out = fftconvolve(padded, kernel.reshape(*lead, *kernel.shape), mode="valid",
                      axes=(-2, -1))
    return np.clip(out, 0, None).astype(np.float32)  # FFT round-off below zero


def apply_source_size(patterns: np.ndarray, scan_gpts: tuple[int, int], sigma_a: float,
                      step_a: tuple[float, float]) -> np.ndarray:
    """(P, H, W) patterns of a gy × gx scan blurred over the scan positions by a Gaussian of
    `sigma_a` (scan edges mirrored: total intensity over the scan kept)."""
    if sigma_a <= 0:
        return patterns
    gy, gx = scan_gpts
    grid = patterns.reshape(gy, gx, *patterns.shape[-2:]).astype(np.float64)
    for axis, step in ((0, step_a[0]), (1, step_a[1])):
        grid = gaussian_filter1d(grid, sigma_a / step, axis=axis, mode="reflect")
    return grid.reshape(patterns.shape).astype(np.float32)


def apply_nuisances(cbed: np.ndarray, drawn: DrawnNuisances, *, scan_gpts: tuple[int, int],
                    step_a: tuple[float, float], target_region_a: np.ndarray | None,
                    seed: int, epoch: int, index: int) -> np.ndarray:
    """(P, H, W) stored patterns as a measurement with `drawn` nuisances (module docstring),
    in counts per incident electron (stored units when no gain is drawn)."""
    x = np.asarray(cbed, dtype=np.float32)
    if drawn.source_sigma_a:
        x = apply_source_size(x, scan_gpts, drawn.source_sigma_a, step_a)
    x = apply_psf(x, drawn.psf, drawn.psf_width_px)
    if drawn.dose_e_per_a2 is None:
        return x
    if target_region_a is None:
        raise ValueError("a dose needs the sample's target_region_a")
    electrons = electrons_per_pattern(drawn.dose_e_per_a2, target_region_a, x.shape[0])
    x = poisson_noise(x, electrons, _rng(seed, epoch, index, _POISSON))
    gain, dark = drawn.gain_counts_per_electron, drawn.dark_counts
    if gain is None and dark is None and drawn.read_noise_counts == 0:
        return x
    counts = x.astype(np.float64) * electrons * (1.0 if gain is None else gain)
    if dark:
        counts += dark
    if drawn.read_noise_counts > 0:
        counts += _rng(seed, epoch, index, _READ).normal(0, drawn.read_noise_counts, counts.shape)
    return (counts / electrons).astype(np.float32)

"""Many samples of one grid in one propagation: the probes of all of them in one FFT batch.

A `small` sample (160×144 grid, 64 probes) is a cuFFT batch of 64 small transforms per
slice: far too little work to fill a GPU, so the GPU waits on kernel launches and Python
(issue 24: 83× its FFT floor). `diffraction_windows` propagates B such samples at once:

* one in-place FFT plan of (ΣP_b, nx, ny) (`simulate.fft_plans`), so every slice is one
  forward and one inverse transform of all B·P probes;
* each sample keeps its own physics, computed by `simulate.multislice` exactly as the
  per-sample engine computes it: its probe (`ProbeWaves.fill` into its rows of the buffer),
  its transmission functions (`transmission_functions`), its propagators (`propagators`,
  one per slice thickness) and its last propagator's window. The element-wise products are
  done per sample on its rows of the buffer (views, no copies);
* samples may have different numbers of slices (thicknesses): sample b's far field is taken
  after its own last slice's forward FFT (the per-sample engine's last step), and its rows are
  then zeroed, so the transforms the longer samples still need leave them zero (no overflow
  of the unnormalized transform pairs, no effect on the others: an FFT batch is B·P
  independent transforms).

What must be the same across a batch: the multislice grid (gpts and extent), the energy (the
propagators' wavelength) and the number of frozen-phonon configurations (looped over, as
in the per-sample engine; the intensities of each are averaged). The results are the
per-sample engine's (`multislice.diffraction_window`) to float32 rounding of the batched
transforms (tests/simulate/test_batched_multislice.py holds them to ≤ 1e-6 of the pattern
maximum; on the CPU they are usually bit-identical).

The caller chooses B: the buffer holds ΣP_b·nx·ny complex64 values (`batch_samples` picks as
many samples as fit `multislice.CHUNK_BYTES[device]`). On a CPU the per-sample engine's
cache-sized chunks are faster; batching is for the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stemdl.simulate.fft_plans import array_module, plan
from stemdl.simulate.multislice import (
    CHUNK_BYTES,
    ProbeWaves,
    _configurations,
    _intensity_scale,
    propagators,
    transmission_functions,
    window_indices,
)

if TYPE_CHECKING:
    from abtem.potentials.iam import PotentialArray


def batch_samples(num_probes: int, grid_points: int, device: str) -> int:
    """Samples of `num_probes` probes each that fit one batch of `CHUNK_BYTES[device]` (≥ 1)."""
    per_sample = num_probes * grid_points * np.dtype(np.complex64).itemsize
    return max(1, CHUNK_BYTES[device] // per_sample)


def _check_batch(samples: Sequence[tuple[ProbeWaves, PotentialArray]]) -> tuple[int, int]:
    """(nx, ny) of a batch whose samples share grid, extent, energy and configuration count."""
    if not samples:
        raise ValueError("a batch needs at least one sample")
    first_waves = samples[0][0].waves
    first_configs = len(_configurations(samples[0][1]))
    for b, (probes, potential) in enumerate(samples):
        waves = probes.waves
        if tuple(waves.gpts) != tuple(first_waves.gpts):
            raise ValueError(f"sample {b} of the batch has grid {waves.gpts}, sample 0 "
                             f"{first_waves.gpts}: a batch is one grid")
        if not np.allclose(waves.extent, first_waves.extent, rtol=1e-9, atol=0):
            raise ValueError(f"sample {b} has extent {waves.extent}, sample 0 {first_waves.extent}")
        if not np.allclose(waves.extent, potential.extent, rtol=1e-9, atol=0):
            raise ValueError(f"sample {b}: probe extent {waves.extent} differs from the "
                             f"potential's {potential.extent}")
        if waves.energy != first_waves.energy:
            raise ValueError(f"sample {b} has energy {waves.energy} eV, sample 0 "
                             f"{first_waves.energy} eV: one batch, one wavelength")
        if len(_configurations(potential)) != first_configs:
            raise ValueError(f"sample {b} has {len(_configurations(potential))} frozen-phonon "
                             f"configurations, sample 0 {first_configs}")
    nx, ny = first_waves.gpts
    return int(nx), int(ny)


def diffraction_windows(samples: Sequence[tuple[ProbeWaves, PotentialArray]],
                        window_xy: tuple[int, int], device: str) -> list[Any]:
    """For each (probes, potential) of the batch, what `multislice.diffraction_window` returns:
    (P_b, mx, my) float32 far-field intensities of the central window (module docstring)."""
    xp = array_module(device)
    nx, ny = _check_batch(samples)
    energy = samples[0][0].waves.energy
    counts = [probes.num_probes for probes, _ in samples]
    offsets = [0, *np.cumsum(counts).tolist()]
    rows = [slice(offsets[b], offsets[b + 1]) for b in range(len(samples))]
    thicknesses = [tuple(float(t) for t in potential.slice_thickness) for _, potential in samples]
    slices = [len(t) for t in thicknesses]
    ix = xp.asarray(window_indices(nx, window_xy[0]))[:, None]
    iy = xp.asarray(window_indices(ny, window_xy[1]))[None, :]
    scaled, last = [], []
    for (probes, _), thick in zip(samples, thicknesses, strict=True):
        kernels = propagators(probes.waves, thick)
        scaled.append({t: kernel / np.float32(nx * ny) for t, kernel in kernels.items()})
        last.append(kernels[thick[-1]][ix, iy])
    configurations = [_configurations(potential) for _, potential in samples]
    outs = [xp.zeros((count, *window_xy), dtype=np.float32) for count in counts]
    fft = plan((offsets[-1], nx, ny), device)
    psi = fft.buffer
    for c in range(len(configurations[0])):
        transmissions = [transmission_functions(configs[c], energy, (nx, ny), device)
                         for configs in configurations]
        for (probes, _), row in zip(samples, rows, strict=True):
            probes.fill(psi[row], 0, probes.num_probes)
        fft.backward()  # every sample's probes in real space
        for k in range(max(slices)):
            for b, row in enumerate(rows):
                if k < slices[b]:
                    xp.multiply(psi[row], transmissions[b][k], out=psi[row])
            fft.forward()
            for b, row in enumerate(rows):
                if k == slices[b] - 1:  # its last IFFT and the diffraction FFT cancel
                    far = psi[row][:, ix, iy] * last[b]
                    outs[b] += far.real**2 + far.imag**2
                    psi[row] = 0  # stays zero through the transforms the others still need
            if k == max(slices) - 1:
                break
            for b, row in enumerate(rows):
                if k < slices[b] - 1:
                    xp.multiply(psi[row], scaled[b][thicknesses[b][k]], out=psi[row])
            fft.backward()
    for (probes, _), out in zip(samples, outs, strict=True):
        out *= np.float32(_intensity_scale(probes.waves) / len(configurations[0]))
    return outs


def batches(num_samples: int, per_batch: int) -> list[range]:
    """Sample positions 0 … num_samples − 1 in consecutive batches of at most `per_batch`,
    split evenly (a last batch of one sample would waste a batched propagation)."""
    if num_samples <= 0:
        return []
    count = math.ceil(num_samples / max(1, per_batch))
    base, longer = divmod(num_samples, count)  # the first `longer` batches hold one more
    starts = [b * base + min(b, longer) for b in range(count + 1)]
    return [range(starts[b], starts[b + 1]) for b in range(count)]

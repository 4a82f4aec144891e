"""The S-matrix (PRISM at interpolation 1): one propagation per plane wave in the aperture.

Multislice is linear in the incident wave. The probe at scan position r₀ is, in the engine's
terms (`multislice.ProbeWaves`), the unnormalized inverse FFT of Φ(k; r₀) = Ψ₀(k)·e^{−2πik·r₀}:
a sum of plane waves e_k(r) = e^{2πik·r} over the frequencies k where Ψ₀ ≠ 0, i.e. inside the
probe-forming aperture. So with S_k the far field of e_k after the specimen (the engine's slice
loop, `multislice.diffraction_window`, run on e_k instead of a probe), the far field of every
probe is

    Ψ_exit(q; r₀) = Σ_k Ψ₀(k) e^{−2πik·r₀} S_k(q),

a (P × K) · (K × window) complex matrix product. That is K propagations instead of P, plus the
product: a win when the aperture holds fewer plane waves than there are probes (`paper`: a
touching-disk aperture on a 100 Å cell holds a few hundred against 1024 probes; `small`, 64
probes, does not win). It is exact (no interpolation, no approximation beyond float32 rounding
of the sum), as abTEM's `SMatrix` and Prismatic are at interpolation factor 1; only the window
of each S_k is kept. Frequencies where |Ψ₀| is below `APERTURE_CUTOFF` of its maximum (float32
rounding of the probe's FFT outside the aperture) are left out; the tests compare the patterns
with the per-sample multislice (`tests/simulate/test_smatrix.py`).

Frozen phonons: one S-matrix per configuration, the intensities averaged, as the engine does.
The same array-module code runs on NumPy and CuPy (`fft_plans.array_module`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from stemdl.simulate.fft_plans import array_module, plan
from stemdl.simulate.multislice import (
    ProbeWaves,
    _configurations,
    _intensity_scale,
    chunk_probes,
    propagators,
    transmission_functions,
    window_indices,
)

if TYPE_CHECKING:
    from abtem.potentials.iam import PotentialArray

APERTURE_CUTOFF = 1e-6  # plane waves with |Ψ₀(k)| below this × max |Ψ₀| are left out


def aperture_frequencies(probes: ProbeWaves) -> tuple[Any, Any]:
    """(kx, ky) indices of the unshifted FFT grid where the probe's spectrum is not ~zero."""
    xp = array_module(probes.waves.device)
    magnitude = xp.abs(probes.spectrum)
    kx, ky = xp.nonzero(magnitude > APERTURE_CUTOFF * magnitude.max())
    return kx, ky


def plane_wave_count(probes: ProbeWaves) -> int:
    """K: the propagations the S-matrix needs for this probe (against P for multislice)."""
    return int(aperture_frequencies(probes)[0].shape[0])


def _coefficients(probes: ProbeWaves, kx: Any, ky: Any) -> Any:
    """(P, K) complex64 Ψ₀(k)·e^{−2πik·r₀}: abTEM's phase ramp (`fft_shift_kernel`) at the
    aperture's frequencies only, one factor per axis as abTEM computes it."""
    xp = array_module(probes.waves.device)
    nx, ny = probes.waves.gpts
    fx = xp.asarray(np.fft.fftfreq(nx).astype(np.float32))[kx]
    fy = xp.asarray(np.fft.fftfreq(ny).astype(np.float32))[ky]
    x0 = probes.positions_px[:, 0:1]
    y0 = probes.positions_px[:, 1:2]
    ramp_x = xp.exp(-2j * np.pi * fx[None, :] * x0).astype(np.complex64)
    ramp_y = xp.exp(-2j * np.pi * fy[None, :] * y0).astype(np.complex64)
    return (ramp_x * ramp_y) * probes.spectrum[kx, ky][None, :]


def smatrix_windows(probes: ProbeWaves, transmission: Any, thicknesses: tuple[float, ...],
                    kernels: dict[float, Any], kx: Any, ky: Any,
                    window_xy: tuple[int, int], device: str) -> Any:
    """(K, mx·my) complex64: each plane wave's far field in the window, the last propagator
    applied: the engine's slice loop run on plane waves, chunk by chunk."""
    xp = array_module(device)
    nx, ny = probes.waves.gpts
    scaled = {t: kernel / np.float32(nx * ny) for t, kernel in kernels.items()}
    ix = xp.asarray(window_indices(nx, window_xy[0]))[:, None]
    iy = xp.asarray(window_indices(ny, window_xy[1]))[None, :]
    last = kernels[thicknesses[-1]][ix, iy]
    count = int(kx.shape[0])
    smatrix = xp.empty((count, window_xy[0] * window_xy[1]), dtype=np.complex64)
    chunk = chunk_probes(count, nx * ny, device)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        fft = plan((stop - start, nx, ny), device)
        psi = fft.buffer
        psi[...] = 0
        psi[xp.arange(stop - start), kx[start:stop], ky[start:stop]] = 1
        fft.backward()  # e^{2πik·r}: the unnormalized inverse of a unit coefficient
        for k, thickness in enumerate(thicknesses):
            xp.multiply(psi, transmission[k], out=psi)
            fft.forward()
            if k == len(thicknesses) - 1:
                break
            xp.multiply(psi, scaled[thickness], out=psi)
            fft.backward()
        smatrix[start:stop] = (psi[:, ix, iy] * last).reshape(stop - start, -1)
    return smatrix


def diffraction_window_smatrix(probes: ProbeWaves, potential: PotentialArray,
                               window_xy: tuple[int, int], device: str) -> Any:
    """What `multislice.diffraction_window` returns, (P, mx, my) float32, by the S-matrix."""
    xp = array_module(device)
    waves = probes.waves
    nx, ny = waves.gpts
    if not np.allclose(waves.extent, potential.extent, rtol=1e-9, atol=0):
        raise ValueError(f"probe extent {waves.extent} differs from the potential's {potential.extent}")
    thicknesses = tuple(float(t) for t in potential.slice_thickness)
    kernels = propagators(waves, thicknesses)
    kx, ky = aperture_frequencies(probes)
    coefficients = _coefficients(probes, kx, ky)
    configurations = _configurations(potential)
    out = xp.zeros((probes.num_probes, window_xy[0] * window_xy[1]), dtype=np.float32)
    for configuration in configurations:
        transmission = transmission_functions(configuration, waves.energy, (nx, ny), device)
        smatrix = smatrix_windows(probes, transmission, thicknesses, kernels, kx, ky,
                                  window_xy, device)
        far = coefficients @ smatrix
        out += far.real**2 + far.imag**2
    out *= np.float32(_intensity_scale(waves) / len(configurations))
    return out.reshape(probes.num_probes, *window_xy)

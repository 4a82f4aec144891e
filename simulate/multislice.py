"""stemdl's multislice engine: abTEM's physics, propagated at the FFT floor.

abTEM defines every physical array here; this module only runs the propagation loop:

* transmission functions t_k = exp(iσV_k): `PotentialArray.transmission_function(energy)`,
  band-limited by abTEM's antialiasing aperture (`AntialiasAperture.get_array`), as abTEM's
  `conventional_multislice_step` does;
* the probe: abTEM's `Probe.build` at the origin (aperture, aberrations, normalization), moved
  to each scan position by abTEM's own phase ramp (`fft_shift_kernel`, exactly as
  `CustomScan` does), chunk by chunk, so the P probes are never built all at once
  (`ProbeWaves`);
* the Fresnel propagator of each slice thickness, with the antialiasing aperture folded in:
  `FresnelPropagator.get_array(waves, thickness)`, times, with a mistilt θ, abTEM's tilt phase
  exp(−2πi dz (kx tan θx + ky tan θy)) (`tilt_phase`: the formula of abTEM's
  `_apply_tilt_to_fresnel_propagator_array`, written here because that function is private).

The loop is abTEM's (`multislice.conventional_multislice_step`, transmit then propagate), for
each slice k = 0 … S−1:  ψ ← ψ·t_k;  Ψ ← FFT(ψ);  Ψ ← Ψ·P_k;  ψ ← IFFT(Ψ),  and then the
far field is FFT(ψ) and the pattern |FFT(ψ)|², fftshifted. What stemdl does differently, and
why it gives the same numbers to float32 rounding (≤ 1e-5 of the pattern maximum; the tests in
`tests/simulate/test_multislice_engine.py` hold it to that for every prototype family):

* FFTs are in place on a buffer owned by a cached plan (`simulate.fft_plans`): no allocation
  per slice, no planning per sample. The inverse FFT is unnormalized and the 1/N it lacks is
  folded into the propagator array once.
* The last slice's IFFT and the diffraction FFT cancel (FFT(IFFT(X)) = X), so the far field
  is Ψ·P_{S−1} directly: one transform pair fewer per probe.
* Only the stored window is taken: the central `window_xy` frequencies (the same pixels as
  cropping the fftshifted pattern at n//2 − m//2) are gathered before |·|², and multiplied by
  the window of the last propagator only.
* Probes go through in chunks (`chunk_probes`): on a CPU a chunk fits in the cache, so the
  elementwise products and the FFTs of a slice run from cache instead of main memory; on a
  GPU a chunk is as many probes as fit a memory budget (all of them, usually), one cuFFT batch.
* Frozen-phonon configurations are looped over (outer loop), each with its own transmission
  functions, and their intensities averaged (incoherent sum), as abTEM's ensemble mean.
  Only one configuration's transmission functions are held at a time: batching
  configurations into one FFT batch would multiply that memory by the number of
  configurations and gives nothing on a CPU, where the chunk is cache-sized anyway.

The arrays stay in abTEM's (x, y) grid order; `physics.cbed_patterns` turns them into images.
NumPy/pyFFTW on CPU and CuPy/cuFFT on GPU run this same code (`fft_plans.array_module`); the
GPU path has not been run yet (no GPU on the machines this was written on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stemdl.simulate.fft_plans import array_module, plan

if TYPE_CHECKING:
    from abtem import Probe, Waves
    from abtem.potentials.iam import PotentialArray

# Bytes of one chunk of probe waves: ~1 MiB keeps a chunk (and the transmission slice it is
# multiplied by) in a CPU core's L2/L3 cache (benchmarks/RESULTS.md measures the choice); on
# a GPU, a batch large enough to fill the device.
CHUNK_BYTES = {"cpu": 1 << 20, "gpu": 4 << 30}


def chunk_probes(num_probes: int, grid_points: int, device: str) -> int:
    """Probes per FFT batch: as many as fit `CHUNK_BYTES[device]`, at least one, split evenly."""
    fit = max(1, CHUNK_BYTES[device] // (grid_points * np.dtype(np.complex64).itemsize))
    chunks = math.ceil(num_probes / min(fit, num_probes))
    return math.ceil(num_probes / chunks)


def window_indices(n: int, m: int) -> np.ndarray:
    """Unshifted FFT indices of the m central frequencies of an axis of n, in fftshifted order.

    abTEM's fftshift puts zero frequency at index n // 2; cropping m pixels from n // 2 − m // 2
    keeps frequencies −m//2 … m − m//2 − 1, which sit at these indices of the unshifted FFT.
    """
    if not 0 < m <= n:
        raise ValueError(f"cannot take a window of {m} frequencies from an axis of {n}")
    return (np.arange(m) - m // 2) % n


@dataclass(frozen=True)
class ProbeWaves:
    """abTEM's probe at every scan position, in the form the engine builds it chunk by chunk.

    The probe at position r is IFFT(Ψ₀ · exp(−2πi k·r)), Ψ₀ the Fourier coefficients of
    abTEM's probe at the origin; `spectrum` holds Ψ₀ / N, so the engine's unnormalized
    inverse FFT gives the probe directly.
    """

    waves: Waves  # abTEM's probe at the origin (1, nx, ny), real space: grid, energy, metadata
    spectrum: Any  # (nx, ny) complex64, Ψ₀ / N
    positions_px: Any  # (P, 2) float32, (x, y) in grid units, as CustomScan passes them

    @property
    def num_probes(self) -> int:
        return int(self.positions_px.shape[0])

    def fill(self, buffer: Any, start: int, stop: int) -> None:
        """Write the real-space probes `start:stop` into `buffer` (stop − start, nx, ny)."""
        from abtem.core.fft import fft_shift_kernel

        xp = array_module(self.waves.device)
        ramps = fft_shift_kernel(self.positions_px[start:stop], shape=buffer.shape[-2:])
        xp.multiply(ramps, self.spectrum, out=buffer)


def probe_waves(probe: Probe, positions_xy_a: np.ndarray, device: str) -> ProbeWaves:
    """`ProbeWaves` of an abTEM `Probe` (grid already matched to the potential) at the positions."""
    import abtem

    xp = array_module(device)
    origin = probe.build(scan=abtem.CustomScan(np.zeros((1, 2))), lazy=False)
    if origin.reciprocal_space:
        raise ValueError("abTEM built the probe in reciprocal space; expected real space")
    nx, ny = origin.gpts
    spectrum = xp.fft.fft2(origin.array[0].astype(np.complex128)) / (nx * ny)
    # CustomScan's kernel takes positions in grid units, computed in float32 (abTEM's precision).
    positions = xp.asarray(np.asarray(positions_xy_a, dtype=np.float64) / np.asarray(origin.sampling))
    return ProbeWaves(origin, spectrum.astype(np.complex64), positions.astype(np.float32))


def _intensity_scale(waves: Waves) -> float:
    """abTEM's `diffraction_patterns` divides waves normalized as "values" by N before the FFT."""
    normalization = waves.metadata.get("normalization", "reciprocal_space")
    if normalization == "values":
        return 1.0 / float(np.prod(waves.gpts)) ** 2
    if normalization == "reciprocal_space":
        return 1.0
    raise ValueError(f"probe waves with abTEM normalization {normalization!r} are not supported")


def _configurations(potential: PotentialArray) -> list[PotentialArray]:
    """One PotentialArray (slices, nx, ny) per frozen-phonon configuration."""
    if potential.array.ndim == 3:
        return [potential]
    if potential.array.ndim != 4:
        raise ValueError(f"expected a potential of (configs,) slices, nx, ny; got {potential.array.shape}")
    return [potential[i] for i in range(potential.array.shape[0])]


def transmission_functions(
    configuration: PotentialArray, energy_ev: float, gpts: tuple[int, int], device: str
) -> Any:
    """(S, *gpts) complex64 band-limited transmission functions of one configuration.

    `gpts` is the multislice grid: the potential's own, or a coarser grid of the same extent
    (`simulation.reduced_grid_margin`), onto which the transmission functions, computed and
    band-limited on the potential's grid, are resampled by keeping their Fourier coefficients
    below the coarse grid's Nyquist frequency (exact for every frequency the coarse grid holds).
    """
    from abtem.antialias import AntialiasAperture

    xp = array_module(device)
    transmission = configuration.transmission_function(energy=energy_ev)
    aperture = AntialiasAperture().get_array(transmission)  # what abTEM's bandlimit applies
    raw = transmission.array
    slices, nx, ny = raw.shape
    fft = plan((slices, nx, ny), device)
    fft.buffer[...] = raw
    fft.forward()
    xp.multiply(fft.buffer, (aperture / (nx * ny)).astype(np.complex64), out=fft.buffer)
    if tuple(gpts) == (nx, ny):
        fft.backward()
        return fft.buffer.copy()
    coarse = plan((slices, *gpts), device)
    coarse.buffer[...] = 0
    for old_x, new_x in kept_frequencies(nx, gpts[0]):
        for old_y, new_y in kept_frequencies(ny, gpts[1]):
            coarse.buffer[:, new_x, new_y] = fft.buffer[:, old_x, old_y]
    coarse.backward()
    return coarse.buffer.copy()


def kept_frequencies(n: int, m: int) -> list[tuple[slice, slice]]:
    """(old, new) index slices of the frequencies |f| < m/2 of an FFT axis of n resampled to m ≤ n."""
    if m > n:
        raise ValueError(f"cannot resample an axis of {n} onto a finer one of {m}")
    positive = (m + 1) // 2  # f = 0 … ceil(m/2) − 1
    negative = (m - 1) // 2  # f = −1 … −floor((m−1)/2)
    pairs = [(slice(0, positive), slice(0, positive))]
    if negative:
        pairs.append((slice(n - negative, n), slice(m - negative, m)))
    return pairs


def tilt_phase(gpts: tuple[int, int], sampling_a: tuple[float, float], thickness_a: float,
               tilt_mrad: tuple[float, float]) -> np.ndarray:
    """(nx, ny) complex128 phase that tilts a slice's Fresnel propagator by (θx, θy) mrad.

    exp(−2πi dz (kx tan θx + ky tan θy)), k the unshifted FFT frequencies of the (x, y) grid:
    after a slice of thickness dz the wave is moved by dz·tan θ relative to the specimen, as
    abTEM's `Probe(tilt=...)` does through its propagator.
    """
    kx = np.fft.fftfreq(gpts[0], d=sampling_a[0])[:, None]
    ky = np.fft.fftfreq(gpts[1], d=sampling_a[1])[None, :]
    shift_x = np.tan(tilt_mrad[0] * 1e-3) * thickness_a
    shift_y = np.tan(tilt_mrad[1] * 1e-3) * thickness_a
    return np.exp(-2j * np.pi * (kx * shift_x + ky * shift_y))


def propagators(waves: Waves, thicknesses_a: tuple[float, ...],
                tilt_mrad: tuple[float, float] = (0.0, 0.0)) -> dict[float, Any]:
    """abTEM's Fresnel propagator (antialiasing aperture included) of each distinct thickness,
    tilted by `tilt_mrad` (see `tilt_phase`)."""
    from abtem.multislice import FresnelPropagator

    if waves.base_tilt != (0.0, 0.0):
        raise ValueError("the probe waves carry abTEM's own tilt; pass it as tilt_mrad instead "
                         "(otherwise it would be applied twice)")
    xp = array_module(waves.device)
    kernels = {}
    for t in set(thicknesses_a):
        kernel = FresnelPropagator().get_array(waves, t)
        if tuple(tilt_mrad) != (0.0, 0.0):
            phase = tilt_phase(waves.gpts, waves.sampling, t, tilt_mrad)
            kernel = kernel * xp.asarray(phase)
        kernels[t] = kernel.astype(np.complex64)
    return kernels


def diffraction_window(
    probes: ProbeWaves, potential: PotentialArray, window_xy: tuple[int, int], device: str,
    tilt_mrad: tuple[float, float] = (0.0, 0.0),
) -> Any:
    """(P, mx, my) float32 far-field intensities of the central window (x, y), fftshifted order.

    `probes` is abTEM's probe on the multislice grid: the grid of `potential`, or a coarser one
    of the same extent (see `transmission_functions`); with frozen phonons the configurations'
    intensities are averaged. `tilt_mrad`: the mistilt, in every slice's propagator.
    """
    xp = array_module(device)
    waves = probes.waves
    nx, ny = waves.gpts
    if not np.allclose(waves.extent, potential.extent, rtol=1e-9, atol=0):
        raise ValueError(f"probe extent {waves.extent} differs from the potential's {potential.extent}")
    num_probes = probes.num_probes
    thicknesses = tuple(float(t) for t in potential.slice_thickness)
    kernels = propagators(waves, thicknesses, tilt_mrad)
    scaled = {t: kernel / np.float32(nx * ny) for t, kernel in kernels.items()}
    ix = xp.asarray(window_indices(nx, window_xy[0]))[:, None]
    iy = xp.asarray(window_indices(ny, window_xy[1]))[None, :]
    last = kernels[thicknesses[-1]][ix, iy]
    configurations = _configurations(potential)
    chunk = chunk_probes(num_probes, nx * ny, device)
    out = xp.zeros((num_probes, *window_xy), dtype=np.float32)
    for configuration in configurations:
        transmission = transmission_functions(configuration, waves.energy, (nx, ny), device)
        for start in range(0, num_probes, chunk):
            stop = min(start + chunk, num_probes)
            fft = plan((stop - start, nx, ny), device)
            psi = fft.buffer
            probes.fill(psi, start, stop)
            fft.backward()  # the probes in real space
            for k, thickness in enumerate(thicknesses):
                xp.multiply(psi, transmission[k], out=psi)
                fft.forward()
                if k == len(thicknesses) - 1:
                    break  # the last IFFT and the diffraction FFT cancel
                xp.multiply(psi, scaled[thickness], out=psi)
                fft.backward()
            far = psi[:, ix, iy] * last
            out[start:stop] += far.real**2 + far.imag**2
    out *= np.float32(_intensity_scale(waves) / len(configurations))
    return out

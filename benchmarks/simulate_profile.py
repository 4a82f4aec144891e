"""Where a sample's simulation time goes, stage by stage (issue 24, item 1).

Usage: python -m benchmarks.simulate_profile [--preset paper] [--device auto|cpu|gpu]

One sample of the preset (index 0), computed stage by stage with the functions the stemdl
engine calls (`simulate.physics`, `simulate.multislice`), each stage timed on the device: CUDA
events around it on a GPU (device time, no host synchronization inside the loop), a
`perf_counter` on the CPU. The slice loop is the engine's (`multislice.diffraction_window`)
written out so that its element-wise products and its FFTs are timed apart; its sum is the
engine's loop time plus the events' overhead. Stages: the potential (abTEM's `Potential.build`),
transmission functions (with their band limit), propagators, probes (the phase ramps and the
inverse FFT into real space), per slice the transmission product, the forward FFT, the
propagator product and the inverse FFT, then the window crop and |·|², the copy to the host,
and the binning and float16 cast of the stored patterns. Printed as a Markdown table of
milliseconds and shares, with the cuFFT/FFTW floor (2 × slices transforms of the probe batch)
for comparison. One probe chunk is profiled as one batch (all probes, as on a GPU).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from stemdl.configs import load_config
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.device import configure_abtem, resolve_device, to_numpy
from stemdl.simulate.fft_plans import array_module, plan
from stemdl.simulate.multislice import (
    _configurations,
    probe_waves,
    propagators,
    transmission_functions,
    window_indices,
)


class StageTimer:
    """Milliseconds per named stage, summed: CUDA events on a GPU, perf_counter on a CPU."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.pending: list[tuple[str, Any, Any]] = []
        self.ms: dict[str, float] = defaultdict(float)

    def time(self, name: str, run: Callable[[], Any]) -> Any:
        if self.device == "gpu":
            import cupy

            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            result = run()
            stop.record()
            self.pending.append((name, start, stop))
            return result
        began = time.perf_counter()
        result = run()
        self.ms[name] += 1e3 * (time.perf_counter() - began)
        return result

    def totals(self) -> dict[str, float]:
        if self.pending:
            import cupy

            self.pending[-1][2].synchronize()
            for name, start, stop in self.pending:
                self.ms[name] += cupy.cuda.get_elapsed_time(start, stop)
            self.pending.clear()
        return dict(self.ms)


def profile(preset: str, device: str) -> tuple[dict[str, float], float, str]:
    """(ms per stage, FFT floor ms, description) of sample 0 of `preset` on `device`."""
    import abtem

    from benchmarks.simulate_speed import _atoms
    from stemdl.simulate.physics import PotentialSettings, build_potential, sum_pool

    config = load_config(preset).simulation
    config = config.model_copy(update={"device": device, "structures": config.structures.model_copy(
        update={"materials_per_family": min(2, config.structures.materials_per_family)})})
    on = resolve_device(config.device)
    xp = array_module(on)
    sample = simulate_sample(config, 0, build_catalogue(config))  # also warms up the device
    r = sample.record
    configure_abtem()
    timer = StageTimer(on)
    settings = PotentialSettings(r.gpts, (r.slice_thickness_a,) * r.num_slices, r.parametrization,
                                 r.projection, r.num_phonon_configs, r.phonon_sigma_a, r.seed)
    potential = timer.time("potential build", lambda: build_potential(_atoms(sample), settings, on))
    probe = abtem.Probe(energy=r.energy_ev, semiangle_cutoff=r.semiangle_mrad,
                        defocus=r.defocus_a, Cs=r.c30_a, device=on)
    probe.grid.match(potential)
    probes = timer.time("probe at the origin", lambda: probe_waves(probe, r.probe_positions_a, on))
    waves = probes.waves
    nx, ny = waves.gpts
    height, width = (n * r.detector_binning for n in sample.cbed.shape[1:])
    thicknesses = tuple(float(t) for t in potential.slice_thickness)
    kernels = timer.time("propagators", lambda: propagators(waves, thicknesses))
    scaled = {t: k / np.float32(nx * ny) for t, k in kernels.items()}
    ix = xp.asarray(window_indices(nx, width))[:, None]
    iy = xp.asarray(window_indices(ny, height))[None, :]
    last = kernels[thicknesses[-1]][ix, iy]
    fft = plan((probes.num_probes, nx, ny), on)
    psi = fft.buffer
    out = xp.zeros((probes.num_probes, width, height), dtype=np.float32)
    configurations = _configurations(potential)
    for configuration in configurations:
        transmission = timer.time("transmission functions", lambda c=configuration:
                                  transmission_functions(c, waves.energy, (nx, ny), on))
        timer.time("probes: phase ramps", lambda: probes.fill(psi, 0, probes.num_probes))
        timer.time("probes: inverse FFT", fft.backward)
        for k, thickness in enumerate(thicknesses):
            timer.time("slices: × transmission",
                       lambda k=k, t=transmission: xp.multiply(psi, t[k], out=psi))
            timer.time("slices: forward FFT", fft.forward)
            if k == len(thicknesses) - 1:
                break
            timer.time("slices: × propagator", lambda t=thickness: xp.multiply(psi, scaled[t],
                                                                               out=psi))
            timer.time("slices: inverse FFT", fft.backward)

        def intensities() -> None:
            far = psi[:, ix, iy] * last
            out[...] += far.real**2 + far.imag**2

        timer.time("window crop and |·|²", intensities)
    host = timer.time("copy to the host", lambda: np.asarray(to_numpy(out), dtype=np.float32))
    timer.time("binning and float16 cast", lambda: sum_pool(np.swapaxes(host, -1, -2),
                                                            r.detector_binning)
               .astype(np.float16))
    stages = timer.totals()

    floor_timer = StageTimer(on)
    for _ in range(len(configurations) * len(thicknesses)):
        floor_timer.time("floor", fft.forward)
        floor_timer.time("floor", fft.backward)
    floor = floor_timer.totals()["floor"]
    shape = (f"{nx}×{ny}, {len(thicknesses)} slices, {probes.num_probes} probes, "
             f"{len(configurations)} configuration(s)")
    return stages, floor, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    args = parser.parse_args()
    on = resolve_device(args.device)
    stages, floor, shape = profile(args.preset, on)
    total = sum(stages.values())
    clock = "CUDA events" if on == "gpu" else "perf_counter"
    print(f"{args.preset} sample 0 on {on} ({clock}): {shape}")
    print("| stage | ms | share |")
    print("|---|---:|---:|")
    for name, ms in stages.items():
        print(f"| {name} | {ms:.1f} | {ms / total:.1%} |")
    print(f"| **total** | {total:.1f} | |")
    print(f"| FFT floor (2 × slices transforms of the probe batch) | {floor:.1f} | "
          f"{floor / total:.1%} of total |")


if __name__ == "__main__":
    main()

"""Multislice throughput of many samples in one batch against one sample at a time (issue 24.2).

Usage: python -m benchmarks.batched_multislice [--preset small] [--device auto|cpu|gpu]
       [--batches 1 4 16 64] [--rounds 3]

One sample of the preset is simulated (`simulate_sample`), its potential built again on the
device and its probes made (`multislice.probe_waves`), as the stemdl engine does. Then, for
each batch size B: B copies of it propagated one at a time (`multislice.diffraction_window`)
and all at once (`batched_multislice.diffraction_windows`), the device synchronized, best of
`--rounds`. The work does not depend on the values, so B copies time what B different samples
of that grid cost. Printed: samples/s of each, their ratio, and the largest difference of the
batched patterns from the one-at-a-time ones (÷ the pattern maximum).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from stemdl.configs import load_config
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.batched_multislice import diffraction_windows
from stemdl.simulate.device import configure_abtem, resolve_device, to_numpy
from stemdl.simulate.multislice import diffraction_window, probe_waves


def _synchronize(device: str) -> None:
    if device == "gpu":
        import cupy

        cupy.cuda.Device().synchronize()


def _best_s(run: Callable[[], Any], device: str, rounds: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        _synchronize(device)
        began = time.perf_counter()
        result = run()
        _synchronize(device)
        best = min(best, time.perf_counter() - began)
    return best, result


def prepared_sample(preset: str, device: str) -> tuple[Any, Any, tuple[int, int], str]:
    """(probes, potential, window_xy, description) of sample 0 of `preset` on `device`."""
    import abtem

    from benchmarks.simulate_speed import _atoms
    from stemdl.simulate.physics import PotentialSettings, build_potential

    config = load_config(preset).simulation.model_copy(update={"device": device})
    on = resolve_device(config.device)
    sample = simulate_sample(config, 0, build_catalogue(config))
    r = sample.record
    configure_abtem()
    settings = PotentialSettings(r.gpts, (r.slice_thickness_a,) * r.num_slices, r.parametrization,
                                 r.projection, r.num_phonon_configs, r.phonon_sigma_a, r.seed)
    potential = build_potential(_atoms(sample), settings, on)
    probe = abtem.Probe(energy=r.energy_ev, semiangle_cutoff=r.semiangle_mrad,
                        defocus=r.defocus_a, Cs=r.c30_a, device=on)
    probe.grid.match(potential)
    probes = probe_waves(probe, r.probe_positions_a, on)
    height, width = (n * r.detector_binning for n in sample.cbed.shape[1:])
    shape = f"{r.gpts[0]}×{r.gpts[1]}, {r.num_slices} slices, {probes.num_probes} probes"
    return probes, potential, (width, height), shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    on = resolve_device(args.device)
    probes, potential, window, shape = prepared_sample(args.preset, on)
    diffraction_window(probes, potential, window, on)  # plans, first-call costs
    print(f"{args.preset} sample 0 on {on}: {shape}")
    print("| samples B | one at a time, samples/s | batched, samples/s | batched ÷ one at a time "
          "| max difference |")
    print("|---:|---:|---:|---:|---:|")
    for count in args.batches:
        batch = [(probes, potential)] * count
        diffraction_windows(batch, window, on)  # the batch's plan, once
        alone_s, alone = _best_s(lambda b=batch: [diffraction_window(p, v, window, on)
                                                  for p, v in b], on, args.rounds)
        batched_s, together = _best_s(lambda b=batch: diffraction_windows(b, window, on), on,
                                      args.rounds)
        reference = np.asarray(to_numpy(alone[0]), np.float64)
        difference = max(float(np.max(np.abs(np.asarray(to_numpy(t), np.float64) - reference)))
                         for t in together) / float(np.max(reference))
        print(f"| {count} | {count / alone_s:.2f} | {count / batched_s:.2f} | "
              f"{alone_s / batched_s:.2f} | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()

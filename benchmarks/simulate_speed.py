"""Simulation speed: stemdl's multislice engine against the FFT floor and abTEM, side by side.

Usage (from the repository root, so that this checkout's packages are imported):

    taskset -c 1 python -m benchmarks.simulate_speed [--samples 4] [--rounds 3] [--chunks]
    python -m benchmarks.simulate_speed --presets tiny small   # the older per-preset table
    python -m benchmarks.simulate_speed --engines-on gpu --presets small --samples 4

Default table (issue 12): on the same `--samples` samples of the `small` preset, in one
process, single-threaded FFTs, each variant timed once per round with the variants interleaved
within a round, `--rounds` rounds, best round reported (the machine is shared; the minimum is
the least disturbed). Rows:

* FFT floor: per sample, slices × 2 in-place complex64 FFTW transforms of the whole batch of
  P probes (one plan made before timing), FFTW_ESTIMATE, and the same with FFTW_MEASURE;
* naive abTEM script: `Potential`, `Probe.multislice` over a `CustomScan`,
  `diffraction_patterns`, with abTEM's default settings (FFTW_MEASURE, one FFT thread), timed
  two ways: *cold*, the first call on a sample, FFTW_MEASURE planning included (the FFTW
  wisdom is forgotten before it, as `simulate_sample`'s settings forget it), which is what a
  script that simulates each sample once pays; and *warm*, the same sample again right after,
  its plans cached as wisdom (what a script pays once its shapes repeat). Both are quoted;
  the ratio that a claim of speed rests on is the warm one;
* `simulate_sample` with `engine: abtem` and with `engine: stemdl` (potential, probe,
  multislice, target, record: everything);
* the stemdl engine alone (`physics.cbed_patterns` on a built potential), with its default
  CPU FFTs (pocketfft), with FFTW_ESTIMATE plans (deterministic too) and, for the cost of
  determinism, with FFTW_MEASURE plans;
* with `simulation.reduced_grid_margin` set: `simulate_sample` on the reduced grid, and its
  error against the full computation.

Errors are max |x − reference| / max(reference) over the stored patterns, the reference being
the naive abTEM script's patterns cropped to the stored window. `--chunks` adds a table of the
engine's time against its probe-chunk size (`multislice.CHUNK_BYTES`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from stemdl.configs import load_config
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.device import configure_abtem, cuda_device_count
from stemdl.simulate.sample import Sample


def _devices() -> list[str]:
    return ["cpu", "gpu"] if cuda_device_count() > 0 else ["cpu"]


def measure_preset(preset: str, device: str, samples: int) -> dict[str, float]:
    config = load_config(preset).simulation.model_copy(update={"device": device})
    start = time.perf_counter()
    catalogue = build_catalogue(config)
    catalogue_s = time.perf_counter() - start
    simulate_sample(config, samples, catalogue)  # warm-up, not timed
    seconds, grid_points = [], []
    for index in range(samples):
        start = time.perf_counter()
        sample = simulate_sample(config, index, catalogue)
        seconds.append(time.perf_counter() - start)
        grid_points.append(sample.record.gpts[0] * sample.record.gpts[1])
    per_sample = statistics.mean(seconds)
    return {
        "catalogue_s": catalogue_s,
        "per_sample_s": per_sample,
        "per_pattern_ms": 1e3 * per_sample / config.num_patterns,
        "patterns": config.num_patterns,
        "mean_grid": statistics.mean(grid_points) ** 0.5,
    }


def preset_table(presets: list[str], samples: int) -> None:
    print("| preset | device | patterns/sample | mean grid (px) | s/sample | ms/pattern | catalogue build (s) |")
    print("|---|---|---|---|---|---|---|")
    for preset in presets:
        for device in _devices():
            m = measure_preset(preset, device, samples)
            print(
                f"| {preset} | {device} | {m['patterns']} | {m['mean_grid']:.0f}² | "
                f"{m['per_sample_s']:.3f} | {m['per_pattern_ms']:.2f} | {m['catalogue_s']:.2f} |"
            )


# --- the issue-12 comparison -------------------------------------------------------------


def _atoms(sample: Sample) -> Any:
    from stemdl.simulate.geometry import specimen_atoms

    r = sample.record
    return specimen_atoms(r.cell_a, r.atomic_numbers, r.positions_a, r.repetitions)


def naive_abtem(sample: Sample, device: str = "cpu") -> np.ndarray:
    """The obvious abTEM script for the sample's record; (P, ky, kx) cropped like stemdl's.
    On `device` "gpu", abTEM runs on CuPy (the naive abTEM-on-CuPy script of issue 12)."""
    import abtem

    from stemdl.simulate.device import to_numpy

    r = sample.record
    potential = abtem.Potential(
        _atoms(sample), gpts=r.gpts, slice_thickness=(r.slice_thickness_a,) * r.num_slices,
        parametrization=r.parametrization, projection=r.projection, device=device,
    )
    probe = abtem.Probe(energy=r.energy_ev, semiangle_cutoff=r.semiangle_mrad,
                        defocus=r.defocus_a, Cs=r.c30_a, device=device)
    waves = probe.multislice(potential, scan=abtem.CustomScan(r.probe_positions_a))
    full = to_numpy(waves.diffraction_patterns(max_angle=None).compute().array)
    height, width = sample.cbed.shape[1:]
    nx, ny = full.shape[-2:]
    crop = full[:, nx // 2 - width // 2: nx // 2 - width // 2 + width,
                ny // 2 - height // 2: ny // 2 - height // 2 + height]
    return np.swapaxes(crop, 1, 2)


def fft_floor(sample: Sample, effort: str) -> Callable[[], None]:
    """A timed closure: slices × (forward + backward) in-place FFTW of the P-probe batch."""
    import pyfftw

    r = sample.record
    shape = (len(r.probe_positions_a), r.gpts[0], r.gpts[1])
    buffer = pyfftw.empty_aligned(shape, dtype=np.complex64)
    buffer[...] = 1e-3
    flags = (effort, "FFTW_DESTROY_INPUT")
    forward = pyfftw.FFTW(buffer, buffer, axes=(-2, -1), flags=flags, threads=1)
    backward = pyfftw.FFTW(buffer, buffer, axes=(-2, -1), direction="FFTW_BACKWARD",
                           flags=flags, threads=1, normalise_idft=False)

    def run() -> None:
        for _ in range(r.num_slices):
            forward.execute()
            backward.execute()

    return run


def cufft_floor(sample: Sample) -> Callable[[], None]:
    """A timed closure: slices × (forward + backward) in-place cuFFT of the P-probe batch,
    one plan made beforehand, synchronized at the end (the device's FFT-bound time)."""
    import cupy as cp
    import cupyx.scipy.fft as cufft
    from cupyx.scipy.fftpack import get_fft_plan

    r = sample.record
    shape = (len(r.probe_positions_a), r.gpts[0], r.gpts[1])
    buffer = cp.full(shape, 1e-3, dtype=cp.complex64)
    fft_plan = get_fft_plan(buffer, axes=(-2, -1), value_type="C2C")

    def run() -> None:
        data = buffer
        for _ in range(r.num_slices):  # in place where cuFFT can: reassign, as CuPy asks
            data = cufft.fft2(data, overwrite_x=True, plan=fft_plan)
            data = cufft.ifft2(data, overwrite_x=True, plan=fft_plan)
        cp.cuda.Device().synchronize()

    return run


def engine_only(sample: Sample, config: Any) -> Callable[[], np.ndarray]:
    """A timed closure: the stemdl engine on a potential built beforehand (not timed)."""
    from stemdl.simulate.device import resolve_device
    from stemdl.simulate.physics import (
        PotentialSettings,
        ProbeSettings,
        build_potential,
        cbed_patterns,
    )

    r = sample.record
    device = resolve_device(config.device)
    settings = PotentialSettings(r.gpts, (r.slice_thickness_a,) * r.num_slices, r.parametrization,
                                 r.projection, r.num_phonon_configs, r.phonon_sigma_a, r.seed)
    potential = build_potential(_atoms(sample), settings, device)
    probe = ProbeSettings(r.energy_ev, r.semiangle_mrad, r.defocus_a, r.c30_a)

    def run() -> np.ndarray:
        return cbed_patterns(potential, probe, r.probe_positions_a, sample.cbed.shape[1:],
                             r.detector_binning, device, "stemdl")

    return run


def _error(values: np.ndarray, reference: np.ndarray) -> float:
    values, reference = np.asarray(values, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(values - reference)) / np.max(reference))


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def _with_fftw_flags(flags: tuple[str, ...], run: Callable[[], Any]) -> Callable[[], Any]:
    from stemdl.simulate import fft_plans

    def wrapped() -> Any:
        saved = fft_plans.FFTW_FLAGS, fft_plans.CPU_FFT_LIBRARY
        fft_plans.FFTW_FLAGS, fft_plans.CPU_FFT_LIBRARY = flags, "fftw"
        fft_plans.clear_plans()
        try:
            run()  # plans made (MEASURE: timed by FFTW) outside the timing
            return _timed(run)
        finally:
            fft_plans.FFTW_FLAGS, fft_plans.CPU_FFT_LIBRARY = saved
            fft_plans.clear_plans()

    return wrapped


def engine_table(samples: int, rounds: int, margins: list[float]) -> None:
    import abtem

    config = load_config("small").simulation
    reference_config = config.model_copy(update={"engine": "abtem"})
    catalogue = build_catalogue(config)
    indices = list(range(samples))
    simulate_sample(config, samples, catalogue)  # warm-up: imports, plans
    base = {i: simulate_sample(config, i, catalogue) for i in indices}
    reference = {}
    with abtem.config.set({"fftw.planning_effort": "FFTW_MEASURE"}):
        for i in indices:  # (configure_abtem below forgets the wisdom these plans made)
            reference[i] = naive_abtem(base[i])
    configure_abtem()
    floors = {(i, e): fft_floor(base[i], e) for i in indices for e in ("FFTW_ESTIMATE", "FFTW_MEASURE")}
    engines = {i: engine_only(base[i], config) for i in indices}
    reduced = {m: config.model_copy(update={"reduced_grid_margin": m}) for m in margins}

    variants: dict[str, Callable[[int], tuple[float, Any]]] = {
        "FFT floor (FFTW_ESTIMATE)": lambda i: _timed(floors[i, "FFTW_ESTIMATE"]),
        "FFT floor (FFTW_MEASURE)": lambda i: _timed(floors[i, "FFTW_MEASURE"]),
        "naive abTEM script, cold (FFTW_MEASURE planning included)": lambda i: _naive_timed(base[i]),
        "naive abTEM script, warm (the same sample again, plans cached)":
            lambda i: _naive_warm_timed(base[i]),
        "simulate_sample, engine=abtem": lambda i: _sample_timed(reference_config, i, catalogue),
        "simulate_sample, engine=stemdl": lambda i: _sample_timed(config, i, catalogue),
        "stemdl engine only (pocketfft, the default)": lambda i: _timed(engines[i]),
        "stemdl engine only (FFTW_ESTIMATE)": lambda i: _with_fftw_flags(
            ("FFTW_ESTIMATE", "FFTW_DESTROY_INPUT"), engines[i])(),
        "stemdl engine only (FFTW_MEASURE, not deterministic)": lambda i: _with_fftw_flags(
            ("FFTW_MEASURE", "FFTW_DESTROY_INPUT"), engines[i])(),
    }
    for margin, reduced_config in reduced.items():
        variants[f"simulate_sample, stemdl, reduced_grid_margin={margin}"] = (
            lambda i, c=reduced_config: _sample_timed(c, i, catalogue))
    totals: dict[str, list[float]] = {name: [] for name in variants}
    errors: dict[str, float] = {}
    loads = [os.getloadavg()]
    for _ in range(rounds):
        for name, variant in variants.items():
            seconds = 0.0
            for i in indices:
                elapsed, result = variant(i)
                seconds += elapsed
                patterns = getattr(result, "cbed", result)
                if isinstance(patterns, np.ndarray) and patterns.ndim == 3:
                    errors[name] = max(errors.get(name, 0.0), _error(patterns, reference[i]))
            totals[name].append(seconds)
        loads.append(os.getloadavg())
    floor = min(totals["FFT floor (FFTW_ESTIMATE)"])
    naive = min(totals["naive abTEM script, cold (FFTW_MEASURE planning included)"])
    warm = min(totals["naive abTEM script, warm (the same sample again, plans cached)"])
    grids = ", ".join(f"{base[i].record.gpts[0]}×{base[i].record.gpts[1]}/{base[i].record.num_slices}"
                      for i in indices)
    print(f"<!-- {platform.node()} {platform.machine()}, affinity {sorted(os.sched_getaffinity(0))}, "
          f"abTEM {abtem.__version__}; samples (grid/slices): {grids}; 64 probes each -->")
    print("<!-- load average (1/5/15 min) before and after each round: "
          + "; ".join("/".join(f"{x:.2f}" for x in load) for load in loads) + " -->")
    print(f"| variant ({samples} `small` samples) | s (best of {rounds}) | median s | × floor | "
          "naive abTEM cold ÷ this | naive abTEM warm ÷ this | max error vs abTEM |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, values in totals.items():
        best = min(values)
        error = f"{errors[name]:.1e}" if name in errors else "–"
        print(f"| {name} | {best:.2f} | {statistics.median(values):.2f} | {best / floor:.2f} | "
              f"{naive / best:.2f} | {warm / best:.2f} | {error} |")


def _naive_timed(sample: Sample, device: str = "cpu") -> tuple[float, np.ndarray]:
    """The naive script timed with abTEM's own defaults (FFTW_MEASURE on a CPU)."""
    import abtem

    with abtem.config.set({"fftw.planning_effort": "FFTW_MEASURE"}):
        result = _timed(lambda: naive_abtem(sample, device))
    configure_abtem()  # simulate_sample's settings back, as a worker would have them
    return result


def _naive_warm_timed(sample: Sample, device: str = "cpu") -> tuple[float, np.ndarray]:
    """The naive script on the same sample twice in a row, the second call timed: its FFTW
    plans come from the wisdom the first call made, so no planning is timed."""
    import abtem

    with abtem.config.set({"fftw.planning_effort": "FFTW_MEASURE"}):
        naive_abtem(sample, device)  # plans (FFTW_MEASURE) made here, untimed
        result = _timed(lambda: naive_abtem(sample, device))
    configure_abtem()  # wisdom forgotten again: the next cold call is cold
    return result


def _sample_timed(config: Any, index: int, catalogue: Any) -> tuple[float, Sample]:
    return _timed(lambda: simulate_sample(config, index, catalogue))


def chunk_table(samples: int, rounds: int) -> None:
    from stemdl.simulate import fft_plans, multislice

    config = load_config("small").simulation
    catalogue = build_catalogue(config)
    base = {i: simulate_sample(config, i, catalogue) for i in range(samples)}
    engines = {i: engine_only(base[i], config) for i in range(samples)}
    budgets = {"256 KiB": 1 << 18, "1 MiB": 1 << 20, "2 MiB": 1 << 21, "4 MiB": 1 << 22,
               "all 64 probes": 1 << 40}
    saved = dict(multislice.CHUNK_BYTES)
    totals: dict[str, list[float]] = {name: [] for name in budgets}
    try:
        for _ in range(rounds):  # interleaved: every budget once a round
            for name, budget in budgets.items():
                multislice.CHUNK_BYTES["cpu"] = budget
                fft_plans.clear_plans()
                for i in range(samples):
                    engines[i]()  # plans
                totals[name].append(sum(_timed(engines[i])[0] for i in range(samples)))
    finally:
        multislice.CHUNK_BYTES.update(saved)
    print(f"| probe chunk (CHUNK_BYTES['cpu']) | engine s (best of {rounds}) | × 1 MiB |")
    print("|---|---:|---:|")
    for name, values in totals.items():
        print(f"| {name} | {min(values):.2f} | {min(values) / min(totals['1 MiB']):.2f} |")


def device_engines(presets: list[str], device: str, samples: int) -> None:
    """Issue 12's GPU comparison on `device`, per sample: the naive abTEM script (abTEM on
    CuPy on a GPU), stemdl's `simulate_sample` (engine stemdl: cuFFT), and the device's FFT
    floor (slices × 2 batched transforms of all P probes: cuFFT on a GPU, FFTW_ESTIMATE on a
    CPU, so that the table can be checked on a machine without one).

    The catalogue is cut to two materials a family: the samples keep the preset's size. Goals:
    naive ÷ stemdl ≥ 5, stemdl ÷ floor ≤ 1.5 (the floor excludes the potential build, probes
    and target that `simulate_sample` also does).
    """
    from stemdl.simulate.device import resolve_device

    print(f"| preset ({device}) | samples | grid/slices/probes of the first | naive abTEM s/sample | "
          "stemdl s/sample | FFT floor s/sample | naive ÷ stemdl | stemdl ÷ floor | "
          "max error vs naive |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for preset in presets:
        config = load_config(preset).simulation.model_copy(update={"device": device})
        config = config.model_copy(update={"structures": config.structures.model_copy(
            update={"materials_per_family": min(2, config.structures.materials_per_family)})})
        on = resolve_device(config.device)
        catalogue = build_catalogue(config)
        if preset != "paper":  # warm-up (CUDA context, plans); a paper sample is too dear
            warm = simulate_sample(config, samples, catalogue)
            _naive_timed(warm, on)
        seconds = {"naive": 0.0, "stemdl": 0.0, "floor": 0.0}
        error, first = 0.0, ""
        for index in range(samples):
            elapsed_stemdl, ours = _sample_timed(config, index, catalogue)
            elapsed_naive, theirs = _naive_timed(ours, on)
            floor = cufft_floor(ours) if on == "gpu" else fft_floor(ours, "FFTW_ESTIMATE")
            floor()  # plans, first-call costs
            seconds["floor"] += _timed(floor)[0]
            seconds["naive"] += elapsed_naive
            seconds["stemdl"] += elapsed_stemdl
            error = max(error, _error(ours.cbed, theirs))
            r = ours.record
            first = first or f"{r.gpts[0]}×{r.gpts[1]}/{r.num_slices}/{len(r.probe_positions_a)}"
        print(f"| {preset} | {samples} | {first} | {seconds['naive'] / samples:.3f} | "
              f"{seconds['stemdl'] / samples:.3f} | {seconds['floor'] / samples:.3f} | "
              f"{seconds['naive'] / seconds['stemdl']:.2f} | "
              f"{seconds['stemdl'] / seconds['floor']:.2f} | {error:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", help="print the per-preset table instead")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--margins", type=float, nargs="*", default=[1.5, 2.0],
                        help="reduced_grid_margin values to time and score")
    parser.add_argument("--chunks", action="store_true", help="add the probe-chunk table")
    parser.add_argument("--engines-on", choices=["cpu", "gpu"],
                        help="time both engines' simulate_sample on this device for --presets")
    args = parser.parse_args()
    start = time.perf_counter()
    import abtem  # noqa: F401  - imported once per process; not part of any timing below

    print(f"<!-- import abtem: {time.perf_counter() - start:.1f} s -->")
    if args.engines_on:
        device_engines(args.presets or ["small"], args.engines_on, args.samples)
        return
    if args.presets:
        preset_table(args.presets, args.samples)
        return
    engine_table(args.samples, args.rounds, args.margins)
    if args.chunks:
        print()
        chunk_table(args.samples, max(1, args.rounds - 1))


if __name__ == "__main__":
    main()

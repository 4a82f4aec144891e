"""Seconds per CBED pattern of `simulate_sample` for the tiny and small presets on each device.

Usage: python benchmarks/simulate_speed.py [--presets tiny small] [--samples 8]

Runs in one process, single-threaded FFTs (as in a Dask worker task), after one warm-up sample
per preset and device (imports, FFT plans, CUDA context). Prints a Markdown table: one row per
(preset, device), with the mean over `--samples` consecutive sample indices.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from configs import load_config
from simulate import build_catalogue, simulate_sample
from simulate.device import cuda_device_count


def _devices() -> list[str]:
    return ["cpu", "gpu"] if cuda_device_count() > 0 else ["cpu"]


def measure(preset: str, device: str, samples: int) -> dict[str, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    start = time.perf_counter()
    import abtem  # noqa: F401  - imported once per process; not part of any timing below

    print(f"<!-- import abtem: {time.perf_counter() - start:.1f} s -->")
    print(f"<!-- {platform.node()} {platform.processor() or platform.machine()} -->")
    print(
        "| preset | device | patterns/sample | mean grid (px) | s/sample | ms/pattern | catalogue build (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for device in _devices():
            m = measure(preset, device, args.samples)
            print(
                f"| {preset} | {device} | {m['patterns']} | {m['mean_grid']:.0f}² | "
                f"{m['per_sample_s']:.3f} | {m['per_pattern_ms']:.2f} | {m['catalogue_s']:.2f} |"
            )


if __name__ == "__main__":
    main()

"""Simulation cost of a sample of each preset, relative to `small`, to size a preset's run.

Usage (repository root; under the machine's CPU lock when it is shared):

    python -m benchmarks.preset_cost [--samples 6] [--presets small 200kv 300kv] [--train]

For each preset: the catalogue is built once, one warm-up sample is simulated (imports, numba
kernels, FFT plans), then samples 1 … n are simulated in this process, one after the other,
and timed. Prints seconds a sample (mean over the n, and the spread), the ratio to `small`,
and what the preset's `dataset.num_samples` would then take to simulate if `small`'s 1536
take `--small-simulate-s` (its `stemdl run` figure on the same machine). An estimate: samples
differ in thickness and material, so a few samples give the ratio to ±20 % or so. `--train`
adds the seconds of one training step of each arrangement (random inputs of the preset's
shape, one thread), against `small`'s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from stemdl.configs import load_config
from stemdl.simulate import build_catalogue, simulate_sample


def sample_seconds(preset: str, samples: int) -> list[float]:
    config = load_config(preset)
    catalogue = build_catalogue(config.simulation)
    simulate_sample(config.simulation, 0, catalogue)  # warm-up
    times = []
    for index in range(1, samples + 1):
        began = time.perf_counter()
        simulate_sample(config.simulation, index, catalogue)
        times.append(time.perf_counter() - began)
    return times


def train_step_seconds(preset: str, arrangement: str, steps: int = 6) -> float:
    """Seconds of one training step (forward, backward, AdamW) of the preset's model on random
    inputs of its sample shape, batch `train.batch_size`, one thread (a rank of `stemdl run`)."""
    import torch

    from stemdl.train.arrangements import build_model

    config = load_config(preset)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model(config.model.model_copy(update={"arrangement": arrangement}),
                        config.simulation.sample_shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    shape = config.simulation.sample_shape
    batch = config.train.batch_size
    cbed, target = torch.randn(batch, *shape.input_shape), torch.randn(batch, *shape.target_shape)
    times = []
    for _ in range(steps + 1):
        began = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(cbed), target).backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--presets", nargs="+", default=["small", "200kv", "300kv"])
    parser.add_argument("--small-simulate-s", type=float, default=288.0,
                        help="simulate stage of `stemdl run small` on this machine (s)")
    parser.add_argument("--train", action="store_true",
                        help="also time a training step of each arrangement")
    args = parser.parse_args()
    results = {}
    for preset in args.presets:
        times = sample_seconds(preset, args.samples)
        results[preset] = {"mean_s": statistics.mean(times), "min_s": min(times),
                           "max_s": max(times), "num_samples": load_config(preset).dataset.num_samples}
        if args.train:
            for arrangement in ("channels", "scan_pixels"):
                results[preset][f"train_step_s_{arrangement}"] = train_step_seconds(preset, arrangement)
    small = results.get("small")
    print(f"machine: {platform.node()} {platform.processor()}; {args.samples} samples a preset")
    for preset, row in results.items():
        line = (f"{preset:>6}: {row['mean_s']:.3f} s a sample (min {row['min_s']:.3f}, "
                f"max {row['max_s']:.3f})")
        if small:
            ratio = row["mean_s"] / small["mean_s"]
            projected = args.small_simulate_s * ratio * row["num_samples"] / small["num_samples"]
            row.update(ratio_to_small=ratio, projected_simulate_s=projected)
            line += (f", {ratio:.2f}x small; {row['num_samples']} samples ≈ {projected:.0f} s "
                     "to simulate (2 workers, scaled from small)")
        print(line)
        if args.train:
            config = load_config(preset)
            epochs_steps = config.train.epochs * row["num_samples"] * 0.8 / (2 * config.train.batch_size)
            for arrangement in ("channels", "scan_pixels"):
                step = row[f"train_step_s_{arrangement}"]
                line = f"        train step {arrangement}: {step:.3f} s"
                if small:
                    ratio = step / small[f"train_step_s_{arrangement}"]
                    line += f" ({ratio:.2f}x small a step)"
                print(line + f"; ~{epochs_steps:.0f} steps a rank (80 % train, 2 ranks)")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

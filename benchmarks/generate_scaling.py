"""Dask generation vs the plain in-process loop, per worker (issues 12 and 21: the Dask path).

Usage: python -m benchmarks.generate_scaling [--config small] [--samples 96] [--rounds 3]

Every path runs as a fresh process, the way a user runs it, on the same first `--samples`
samples of the config, one after the other:

1. the plain loop script, pinned to one core: import stemdl, build the catalogue, then
   `simulate_sample` one after another (arrays kept in memory, nothing written). It reports
   its whole wall time and, separately, its steady state (the samples after the first, which
   pays numba's compilation): the per-worker ideal with no start-up at all;
2. `stemdl simulate --workers 1` into a fresh store (cluster start, catalogue, scatter, Dask
   tasks, checksums, writes and the store's completion flags all included);
3. the same with `--workers 2`;
4. the machine's own two-core ceiling: two loop scripts at once, one per core, each on half
   the samples (two cores share the memory bus and caches; on the VM this was written on, two
   busy cores do not simulate twice as fast as one).

Goals (issue 21, at 96 samples): one worker within 10 % of the plain loop (ratio ≤ 1.10), two
workers ≥ 1.8× the samples/s of one. The paths run `--rounds` times, interleaved (round 1: all
four, then round 2 ...), so that a slow spell of the machine shows as a spread and not as a
difference between paths; every round's ratios are printed, then the median of each path.
The fixed costs (start-up, catalogue, first sample) are printed too, and the two-worker
ceiling they leave: with F seconds that no second worker can share and W seconds of one
worker's simulation, two workers reach at most (F + W) / (F + W / 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOP_SCRIPT = """
import json, sys, time
began = time.perf_counter()
from stemdl.configs import load_config
from stemdl.simulate import build_catalogue, simulate_sample
simulation = load_config(sys.argv[1]).simulation
catalogue = build_catalogue(simulation)
ready = time.perf_counter()
start, stop = int(sys.argv[2]), int(sys.argv[3])
simulate_sample(simulation, start, catalogue)
first = time.perf_counter()
for index in range(start + 1, stop):
    simulate_sample(simulation, index, catalogue)
done = time.perf_counter()
print(json.dumps({"start_up_s": ready - began, "first_sample_s": first - ready,
                  "steady_s_per_sample": (done - first) / max(stop - start - 1, 1)}))
"""


def _config_file(config: str, samples: int, directory: Path) -> Path:
    """The config with `num_samples` = `samples`, as a YAML file both paths read."""
    import yaml

    from stemdl.configs import load_config

    data = load_config(config).to_dict()
    data["dataset"]["num_samples"] = samples
    path = directory / f"{config}-{samples}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _timed(*commands: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run `commands` at once; the wall time until the last ends, and the first's output."""
    began = time.perf_counter()
    running = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for command in commands]
    outputs = [process.communicate() for process in running]
    elapsed = time.perf_counter() - began
    for command, process, (_, stderr) in zip(commands, running, outputs, strict=True):
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n"
                             f"{stderr[-3000:]}")
    return elapsed, outputs[0][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load average before: {os.getloadavg()}")
    names = ["plain loop script, 1 core (baseline)", "`stemdl simulate --workers 1`",
             "`stemdl simulate --workers 2`", "two loop scripts at once, 1 core each"]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    parts: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = _config_file(args.config, args.samples, Path(tmp))
        cores = sorted(os.sched_getaffinity(0))

        def loop(core: int, start: int, stop: int) -> list[str]:
            return ["taskset", "-c", str(core), sys.executable, "-c", LOOP_SCRIPT, str(config),
                    str(start), str(stop)]

        def simulate(workers: int, run: int) -> list[str]:
            return [sys.executable, "-m", "stemdl.pipeline", "simulate", str(config), "--out",
                    str(Path(tmp) / f"w{workers}-{run}.zarr"), "--workers", str(workers),
                    "--no-progress"]

        half = args.samples // 2
        for run in range(args.rounds):
            elapsed, out = _timed(loop(cores[0], 0, args.samples), env=env)
            seconds[names[0]].append(elapsed)
            parts.append(json.loads(out.strip().splitlines()[-1]))
            seconds[names[1]].append(_timed(simulate(1, run), env=env)[0])
            seconds[names[2]].append(_timed(simulate(2, run), env=env)[0])
            seconds[names[3]].append(_timed(loop(cores[0], 0, half),
                                            loop(cores[-1], half, args.samples), env=env)[0])
            print(f"round {run + 1}: " + ", ".join(f"{seconds[n][-1]:.1f} s" for n in names),
                  flush=True)
    print(f"load average after: {os.getloadavg()}")
    loop_s, one_s, two_s, pair_s = (seconds[n] for n in names)
    print(f"\n{args.samples} samples of `{args.config}`, {args.rounds} rounds\n")
    print("| round | loop script s | `--workers 1` s (÷ loop) | `--workers 2` s | 2 workers vs 1 |"
          " two loop scripts s (÷ one) |")
    print("|---|---:|---:|---:|---:|---:|")
    for run in range(args.rounds):
        print(f"| {run + 1} | {loop_s[run]:.1f} | {one_s[run]:.1f} ({one_s[run] / loop_s[run]:.2f}) "
              f"| {two_s[run]:.1f} | {one_s[run] / two_s[run]:.2f}× | {pair_s[run]:.1f} "
              f"({loop_s[run] / pair_s[run]:.2f}×) |")
    med = {n: statistics.median(v) for n, v in seconds.items()}
    print(f"| median | {med[names[0]]:.1f} | {med[names[1]]:.1f} "
          f"({med[names[1]] / med[names[0]]:.2f}) | {med[names[2]]:.1f} | "
          f"{med[names[1]] / med[names[2]]:.2f}× | {med[names[3]]:.1f} "
          f"({med[names[0]] / med[names[3]]:.2f}×) |")
    start_up = statistics.median(p["start_up_s"] for p in parts)
    first = statistics.median(p["first_sample_s"] for p in parts)
    steady = statistics.median(p["steady_s_per_sample"] for p in parts)
    work = steady * args.samples
    fixed = med[names[0]] - work
    print(f"\nThe loop script (medians): {start_up:.1f} s on imports and the catalogue, "
          f"{first:.2f} s on its first sample (abTEM's import and numba compilation), then "
          f"{steady:.3f} s a sample: {work:.1f} s of simulation for {args.samples} samples, "
          f"F = {fixed:.1f} s of fixed cost. Two workers with that fixed cost unshared reach at "
          f"most (F + W) / (F + W / 2) = {(fixed + work) / (fixed + work / 2):.2f}× one; with "
          f"the slowdown two busy cores showed here (two loop scripts: "
          f"{2 * med[names[3]] / med[names[0]]:.2f}× one script's time for the same work, "
          f"fixed costs included) lower still.")


if __name__ == "__main__":
    main()

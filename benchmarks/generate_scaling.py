"""Dask generation vs the plain in-process loop, per worker (issue 12's Dask-path goals).

Usage: python -m benchmarks.generate_scaling [--config small] [--samples 256]

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

Goals (issue 12): one worker within 10 % of the plain loop (ratio ≤ 1.10), two workers
≥ 1.8× the samples/s of one. Why 256 samples by default: the issue measured 32 samples when a
`small` sample took 2.15 s (69 s of loop work); the engine now takes ~0.27 s, so 256 samples
are the same amount of work. The fixed costs (start-up, catalogue) are printed too, so a
reader can work out the ratios at any other size.
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        config = _config_file(args.config, args.samples, Path(tmp))
        cores = sorted(os.sched_getaffinity(0))

        def loop(core: int, start: int, stop: int) -> list[str]:
            return ["taskset", "-c", str(core), sys.executable, "-c", LOOP_SCRIPT, str(config),
                    str(start), str(stop)]

        loop_s, out = _timed(loop(cores[0], 0, args.samples), env=env)
        parts = json.loads(out.strip().splitlines()[-1])
        steady_s = parts["steady_s_per_sample"] * args.samples
        half = args.samples // 2
        pair_s, _ = _timed(loop(cores[0], 0, half), loop(cores[-1], half, args.samples), env=env)
        rows = [("plain loop script, 1 core (baseline)", loop_s, 1)]
        for workers in (1, 2):
            seconds, _ = _timed([sys.executable, "-m", "stemdl.pipeline", "simulate", str(config),
                                 "--out", str(Path(tmp) / f"w{workers}.zarr"),
                                 "--workers", str(workers), "--no-progress"], env=env)
            rows.append((f"`stemdl simulate --workers {workers}`", seconds, workers))
    print(f"load average after: {os.getloadavg()}")
    one_worker = rows[1][1]
    print(f"\n{args.samples} samples of `{args.config}`; the loop script spent "
          f"{parts['start_up_s']:.1f} s on imports and the catalogue, "
          f"{parts['first_sample_s']:.2f} s on its first sample, then "
          f"{parts['steady_s_per_sample']:.3f} s a sample ({steady_s:.1f} s for "
          f"{args.samples} in the steady state)\n")
    print("| path | seconds | samples/s | per worker ÷ loop script | per worker ÷ steady "
          "state | vs 1 worker |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, workers in rows:
        print(f"| {name} | {seconds:.1f} | {args.samples / seconds:.2f} | "
              f"{seconds * workers / loop_s:.2f} | {seconds * workers / steady_s:.2f} | "
              f"{one_worker / seconds:.2f}× |")
    print(f"\nThe machine's own two-core ceiling: two loop scripts at once, one per core, half "
          f"the samples each, took {pair_s:.1f} s ({loop_s / pair_s:.2f}× one loop script); "
          f"`--workers 2` took {rows[2][1] / pair_s:.2f}× that.")


if __name__ == "__main__":
    main()

"""Dask generation vs the plain in-process loop, per worker (issue 12's Dask-path goals).

Usage: python benchmarks/generate_scaling.py [--config small] [--samples 96]

Times, in one run on the same first `--samples` samples of the config:
1. the in-process loop: `simulate_sample` one after another in this process, pinned to one
   core, catalogue built before timing (the per-worker ideal);
2. `datasets.generate` (exactly what `stemdl simulate` runs) with a LocalCluster of 1 worker;
3. the same with 2 workers;
each into a fresh store, wall time from the call to the finished store (cluster start-up,
catalogue builds in the workers and writing included). Goals: 1 worker within 10 % of the loop
(ratio ≤ 1.10), 2 workers ≥ 1.8× the samples/s of 1 worker.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from stemdl.configs import config_from_dict, load_config
from stemdl.datasets.generate import generate
from stemdl.simulate import build_catalogue, simulate_sample


def in_process(config, samples: int) -> float:  # type: ignore[no-untyped-def]
    catalogue = build_catalogue(config.simulation)
    simulate_sample(config.simulation, samples, catalogue)  # warm-up (plans, imports)
    began = time.perf_counter()
    for index in range(samples):
        simulate_sample(config.simulation, index, catalogue)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--samples", type=int, default=96)
    args = parser.parse_args()
    data = load_config(args.config).to_dict()
    data["dataset"]["num_samples"] = args.samples
    config = config_from_dict(data, source=f"{args.config}, {args.samples} samples")
    print(f"load average before: {os.getloadavg()}")
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    loop_s = in_process(config, args.samples)
    os.sched_setaffinity(0, affinity)
    rows = [("in-process loop, 1 core (baseline)", loop_s, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            began = time.perf_counter()
            report = generate(config, str(Path(tmp) / f"w{workers}.zarr"), n_workers=workers,
                              progress=False)
            assert report.complete, report.summary()
            rows.append((f"`stemdl simulate --workers {workers}`", time.perf_counter() - began,
                         workers))
    print(f"load average after: {os.getloadavg()}")
    one_worker = rows[1][1]
    print(f"\n{args.samples} samples of `{args.config}`\n")
    print("| path | seconds | samples/s | per worker ÷ loop | vs 1 worker |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, workers in rows:
        print(f"| {name} | {seconds:.1f} | {args.samples / seconds:.2f} | "
              f"{seconds * workers / loop_s:.2f} | {one_worker / seconds:.2f}× |")


if __name__ == "__main__":
    main()

"""What Dask's default worker settings cost a simulation task, and what stemdl's remove.

Usage: python -m benchmarks.worker_settings [--config small] [--samples 24]

The same samples are simulated (catalogue built and one warm-up sample first, not timed):
1. in this process, pinned to one core (the reference);
2. in the worker of a one-worker LocalCluster with Dask's defaults (the nanny sets
   `MALLOC_TRIM_THRESHOLD_=65536`; the statistical profiler samples the task thread);
3. the same with stemdl's `LOCAL_WORKER_CONFIG` (`datasets/generate.py`): that variable
   removed, the profiler off.
Each row is the best of `--rounds` passes, as a ratio to the reference.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import dask
from distributed import Client, LocalCluster

from stemdl.configs import load_config
from stemdl.datasets.generate import LOCAL_WORKER_CONFIG


def simulate_loop(config_name: str, samples: int, rounds: int) -> list[float]:
    """Seconds per pass over `samples` samples (after a catalogue build and a warm-up sample)."""
    from stemdl.simulate import build_catalogue, simulate_sample

    simulation = load_config(config_name).simulation
    catalogue = build_catalogue(simulation)
    simulate_sample(simulation, samples, catalogue)
    passes = []
    for _ in range(rounds):
        began = time.perf_counter()
        for index in range(samples):
            simulate_sample(simulation, index, catalogue)
        passes.append(time.perf_counter() - began)
    return passes


def in_worker(settings: dict[str, object], config_name: str, samples: int,
              rounds: int) -> list[float]:
    with dask.config.set(settings), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                         dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        return client.submit(simulate_loop, config_name, samples, rounds, pure=False).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    reference = min(simulate_loop(args.config, args.samples, args.rounds))
    os.sched_setaffinity(0, affinity)
    rows = [("in-process loop, 1 core (reference)", reference)]
    rows.append(("Dask worker, Dask's defaults",
                 min(in_worker({}, args.config, args.samples, args.rounds))))
    rows.append(("Dask worker, stemdl's LOCAL_WORKER_CONFIG",
                 min(in_worker(LOCAL_WORKER_CONFIG, args.config, args.samples, args.rounds))))
    print(f"load average after: {os.getloadavg()}")
    print(f"\n{args.samples} samples of `{args.config}`, best of {args.rounds}\n")
    print("| where | seconds | s/sample | ÷ reference |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / args.samples:.3f} | "
              f"{seconds / reference:.2f} |")


if __name__ == "__main__":
    main()

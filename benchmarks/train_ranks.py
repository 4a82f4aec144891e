"""Training throughput of `stemdl run` on 1 process vs N local gloo ranks (chooses `--ranks`).

Usage: python -m benchmarks.train_ranks STORE [--config small] [--steps 150] [--ranks 1 2]

Trains each arrangement of the config for `--steps` optimizer steps on the given store (made
with the same config, e.g. a finished `stemdl run` folder's store.zarr), once per rank count,
through the same function `stemdl run` uses (`stemdl.end_to_end.train_arrangement`): 1 rank
trains in this process with torch's default threads, N ranks train in N spawned processes with
cores / N threads each, the gradients reduced by the grouped allreduce. Prints training
samples/s (the trainer's median over its log windows) and wall seconds per run. The global
batch grows with the ranks (batch_size is per rank), so samples/s, not steps/s, is the figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from stemdl.configs import config_from_dict, load_config
from stemdl.end_to_end import ARRANGEMENTS, train_arrangement, with_arrangement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("--config", default="small")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    base = load_config(args.config).to_dict()
    base["train"].update(max_steps=args.steps, validate_every=10**6, checkpoint_every=10**6,
                         validate_at_start=False, log_every=10)
    config = config_from_dict(base, source=f"{args.config} ({args.steps} steps)")
    print(f"load average before: {os.getloadavg()}")
    print("| arrangement | ranks | samples/s | wall s |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for arrangement in ARRANGEMENTS:
            for ranks in args.ranks:
                run_dir = Path(tmp) / f"{arrangement}-{ranks}"
                began = time.perf_counter()
                result = train_arrangement(with_arrangement(config, arrangement), args.store,
                                           run_dir, ranks, Path(tmp) / "log.txt")
                wall = time.perf_counter() - began
                print(f"| {arrangement} | {ranks} | {result.samples_per_s:.1f} | {wall:.1f} |",
                      flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

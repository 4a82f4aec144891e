"""Start local Dask workers forked from one process that has imported abTEM, not each from scratch.

Why: a local generation cluster used to spawn every worker as a fresh interpreter (Dask's
default `multiprocessing-method: spawn`), and each then imported distributed, NumPy, ASE and
abTEM on its own: ~3.5 s of CPU a worker before its first sample, spent while the client
builds the catalogue on the same cores (profiled at 96 `small` samples on 2 cores: the first
task started 7.0 s into a 2-worker run, 5.1 s into a 1-worker one). With `forkserver`, Python
starts one server process that imports `datasets/worker_preload.py` once; every worker is
then a `fork` of it with those modules loaded, and leaves with `os._exit` (no interpreter
teardown at shutdown). Each worker still compiles the config's numba kernels in
`shard.warm_worker`: they depend on the config. Cost: the fork server stays resident (one
process with abTEM imported) until the client exits.

Environment: a forked worker inherits the fork server's environment, taken when the server
started (with the first worker of the client process), not the client's environment of the
moment, as a spawned worker would. `worker_env()` therefore hands the client's current
environment to every worker (Dask's nanny sets it in the worker before anything runs there),
so variables read lazily (`AWS_*` for an S3 store, `STEMDL_DEVICE`) are the client's of now.
GPU workers are still spawned (`generate.local_cluster`): CUDA and fork do not mix.
"""

from __future__ import annotations

import multiprocessing
import os

import dask

# What the fork server imports before it forks any worker (the second imports the rest).
PRELOAD = ["distributed", "stemdl.datasets.worker_preload"]

FORKSERVER_CONFIG = {"distributed.worker.multiprocessing-method": "forkserver"}


def use_forkserver() -> None:
    """Make this process's fork server (started with the first worker) preload `PRELOAD`.

    Call it inside `dask.config.set(FORKSERVER_CONFIG)`. Dask sets the fork server's preload
    list itself the first time it asks for the multiprocessing context; asking first and then
    replacing the list keeps ours. A fork server already running (an earlier cluster of this
    process) keeps the list it started with; its workers are forked all the same.
    """
    from distributed.utils import get_mp_context

    if dask.config.get("distributed.worker.multiprocessing-method") != "forkserver":
        raise RuntimeError("use_forkserver() needs dask.config.set(FORKSERVER_CONFIG)")
    get_mp_context()  # Dask's own preload list, set once per process ...
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)  # ... replaced


def worker_env() -> dict[str, str]:
    """The client's environment now, for a forked worker (module docstring); the variables
    Dask's nanny sets before a worker starts (`pre-spawn-environ`: thread caps) are left to it."""
    pre_spawn = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    return {name: value for name, value in os.environ.items() if name not in pre_spawn}

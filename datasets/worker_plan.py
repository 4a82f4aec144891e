"""Which Dask workers a local generation cluster starts: one per GPU, CPU workers when asked.

Without a GPU (or with `simulation.device: cpu`) a LocalCluster of one single-threaded worker
per core, as before. With GPUs, one worker per GPU, each pinned to its GPU by
`CUDA_VISIBLE_DEVICES` (so every worker's CuPy sees one device, its own, as device 0), instead
of one worker per core that would all open GPU 0. `n_workers` then counts GPU workers,
assigned to the GPUs in turn (two per GPU keep two samples in flight on it). CPU workers join
only when asked (`cpu_workers`); they are started with `CUDA_VISIBLE_DEVICES=""`, so
`device: auto` computes on their CPU. (The GPU and CPU paths agree to ≤ 1e-4 but not bit for
bit: a store made by both holds samples of both.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from stemdl.configs import UsageError


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: its name and the environment it is started with."""

    name: str
    env: dict[str, str]

    @property
    def gpu(self) -> bool:
        return self.env.get("CUDA_VISIBLE_DEVICES", "") != ""


def worker_plan(gpus: int, device: str, n_workers: int | None = None,
                cpu_workers: int | None = None, cores: int | None = None) -> list[WorkerSpec]:
    """The workers of a local cluster on a machine with `gpus` CUDA devices (module docstring).

    `device` is `simulation.device` ("auto", "gpu", "cpu"); `cores` defaults to this machine's.
    ("gpu" without a GPU plans CPU workers, whose samples then refuse, saying why.)
    """
    cores = cores or os.cpu_count() or 1
    if n_workers is not None and n_workers < 1:
        raise UsageError(f"n_workers must be >= 1, got {n_workers}")
    if cpu_workers is not None and cpu_workers < 0:
        raise UsageError(f"cpu_workers must be >= 0, got {cpu_workers}")
    if gpus == 0 or device == "cpu":
        if cpu_workers is not None and n_workers is not None:
            raise UsageError("without GPU workers, give n_workers or cpu_workers, not both")
        count = n_workers or cpu_workers or cores
        return [WorkerSpec(f"cpu-{i}", {}) for i in range(count)]
    gpu_count = n_workers or gpus
    plan = [WorkerSpec(f"gpu-{i}", {"CUDA_VISIBLE_DEVICES": str(i % gpus)})
            for i in range(gpu_count)]
    plan += [WorkerSpec(f"cpu-{i}", {"CUDA_VISIBLE_DEVICES": ""})
             for i in range(cpu_workers or 0)]
    return plan

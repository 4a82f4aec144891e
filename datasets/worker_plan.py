"""Which Dask workers a local generation cluster starts: one per GPU, CPU workers when asked.

Without a GPU (or with `simulation.device: cpu`) a LocalCluster of one single-threaded worker
per core, as before. With GPUs, GPU workers each pinned to one GPU by `CUDA_VISIBLE_DEVICES`
(so a worker's CuPy sees one device, its own, as device 0), assigned to the GPUs in turn,
instead of workers that all open GPU 0. How many a GPU gets (`workers_per_gpu`): one keeps
one sample in flight on it, which leaves a GPU idle on small samples (a `small` sample took
0.127 s alone on an H200, while 16 workers sharing it simulated the 1536 samples in 43 s,
issue 24), so by default the cores are shared out over the GPUs (cores // GPUs workers per GPU,
at least one), until batched generation (`simulate/batched_multislice.py`) fills a GPU from
one worker. `n_workers` sets the number of GPU workers instead. CPU workers join only when
asked (`cpu_workers`); they are started with `CUDA_VISIBLE_DEVICES=""` and `STEMDL_DEVICE=cpu`,
so they compute on their CPU whatever `simulation.device` says (with `device: gpu` they used to
refuse every sample). (The GPU and CPU paths agree to ≤ 1e-4 but not bit for bit: a store
made by both holds samples of both.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from stemdl.configs import UsageError
from stemdl.simulate.device import DEVICE_ENV, GpuUnavailableError, no_gpu_message


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: its name and the environment it is started with."""

    name: str
    env: dict[str, str]

    @property
    def gpu(self) -> bool:
        return self.env.get("CUDA_VISIBLE_DEVICES", "") != ""


def worker_plan(gpus: int, device: str, n_workers: int | None = None,
                cpu_workers: int | None = None, cores: int | None = None,
                workers_per_gpu: int | None = None) -> list[WorkerSpec]:
    """The workers of a local cluster on a machine with `gpus` CUDA devices (module docstring).

    `device` is `simulation.device` ("auto", "gpu", "cpu"); `cores` defaults to this machine's.
    "gpu" without a GPU is refused (`GpuUnavailableError`) before any worker starts: these
    workers run on this machine, so none of them could use one either.
    """
    cores = cores or os.cpu_count() or 1
    if n_workers is not None and n_workers < 1:
        raise UsageError(f"n_workers must be >= 1, got {n_workers}")
    if cpu_workers is not None and cpu_workers < 0:
        raise UsageError(f"cpu_workers must be >= 0, got {cpu_workers}")
    if gpus == 0 and device == "gpu":
        raise GpuUnavailableError(no_gpu_message())
    if gpus == 0 or device == "cpu":
        if cpu_workers is not None and n_workers is not None:
            raise UsageError("without GPU workers, give n_workers or cpu_workers, not both")
        count = n_workers or cpu_workers or cores
        return [WorkerSpec(f"cpu-{i}", {}) for i in range(count)]
    if workers_per_gpu is not None and workers_per_gpu < 1:
        raise UsageError(f"workers_per_gpu must be >= 1, got {workers_per_gpu}")
    per_gpu = workers_per_gpu or max(1, cores // gpus)
    gpu_count = n_workers or gpus * per_gpu
    plan = [WorkerSpec(f"gpu-{i}", {"CUDA_VISIBLE_DEVICES": str(i % gpus)})
            for i in range(gpu_count)]
    plan += [WorkerSpec(f"cpu-{i}", {"CUDA_VISIBLE_DEVICES": "", DEVICE_ENV: "cpu"})
             for i in range(cpu_workers or 0)]
    return plan

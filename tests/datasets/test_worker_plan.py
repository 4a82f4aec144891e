"""The local generation cluster on a GPU machine: workers pinned to GPUs; CPU workers when asked.

The plan is a pure function of the device and core counts; the last test starts the cluster that
`generate` starts, with the device count faked to 2, and asks every real worker process for
its `CUDA_VISIBLE_DEVICES`.
"""

from __future__ import annotations

import os

import pytest

import stemdl.datasets.generate as generate_module
from stemdl.configs import UsageError
from stemdl.datasets.generate import dask_client
from stemdl.datasets.worker_plan import worker_plan


def _pins(plan) -> list[str | None]:
    return [spec.env.get("CUDA_VISIBLE_DEVICES") for spec in plan]


def test_without_a_gpu_one_cpu_worker_per_core() -> None:
    plan = worker_plan(0, "auto", cores=16)
    assert len(plan) == 16 and not any(spec.gpu for spec in plan)
    assert _pins(plan) == [None] * 16  # the environment is left as it is
    assert len(worker_plan(0, "auto", n_workers=3, cores=16)) == 3
    assert len(worker_plan(0, "auto", cpu_workers=5, cores=16)) == 5
    with pytest.raises(UsageError, match="not both"):
        worker_plan(0, "auto", n_workers=2, cpu_workers=2)


def test_pinned_gpu_workers_and_cpu_workers_only_when_asked() -> None:
    plan = worker_plan(4, "auto", cores=4)
    assert _pins(plan) == ["0", "1", "2", "3"] and all(spec.gpu for spec in plan)
    plan = worker_plan(4, "auto", cores=8)  # the cores shared out: two in flight a GPU
    assert _pins(plan) == ["0", "1", "2", "3", "0", "1", "2", "3"]
    assert _pins(worker_plan(8, "auto", cores=4)) == [str(i) for i in range(8)]  # ≥ 1 a GPU
    assert _pins(worker_plan(2, "auto", cores=16, workers_per_gpu=1)) == ["0", "1"]
    plan = worker_plan(2, "gpu", cpu_workers=3, cores=2)
    assert _pins(plan) == ["0", "1", "", "", ""]
    assert [spec.gpu for spec in plan] == [True, True, False, False, False]
    assert _pins(worker_plan(2, "auto", n_workers=4)) == ["0", "1", "0", "1"]  # two in flight each
    assert len({spec.name for spec in worker_plan(2, "auto", n_workers=4, cpu_workers=2)}) == 6


def test_device_cpu_ignores_the_gpus() -> None:
    plan = worker_plan(8, "cpu", cores=6)
    assert len(plan) == 6 and not any(spec.gpu for spec in plan)


def test_refusals() -> None:
    with pytest.raises(UsageError, match="n_workers must be >= 1"):
        worker_plan(1, "auto", n_workers=0)
    with pytest.raises(UsageError, match="cpu_workers must be >= 0"):
        worker_plan(1, "auto", cpu_workers=-1)
    with pytest.raises(UsageError, match="workers_per_gpu must be >= 1"):
        worker_plan(1, "auto", workers_per_gpu=0)


def _visible_devices() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_the_cluster_pins_each_worker_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate_module, "cuda_device_count", lambda: 2)
    with dask_client(n_workers=2, cpu_workers=1) as client:
        client.wait_for_workers(3, timeout=120)
        seen = client.run(_visible_devices)
        names = {info["name"]: address for address, info in
                 client.scheduler_info(n_workers=-1)["workers"].items()}
    assert {name: seen[address] for name, address in names.items()} == {
        "gpu-0": "0", "gpu-1": "1", "cpu-0": ""}

"""GPU and CPU Dask workers on one store: each worker's device is its own, and every sample
records where it was computed.

A worker's `STEMDL_DEVICE` (auto, cpu, gpu) overrides `simulation.device` in that process
(`simulate/device.py`); `worker_plan` starts the CPU workers of a GPU machine with
`STEMDL_DEVICE=cpu`. These tests run real worker processes. On a machine without CUDA a worker
forced to the GPU must refuse, naming the variable; with CUDA the same tests check that it
computes on the GPU (within 1e-4 of the CPU sample) and records "gpu".
"""

from __future__ import annotations

import logging

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster

import stemdl.datasets.generate as generate_module
from stemdl.datasets.generate import generate
from stemdl.datasets.records import read_field
from stemdl.datasets.store import open_stemdl_store
from stemdl.datasets.verify import verify_store
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.device import DEVICE_ENV, cuda_device_count, resolve_device

HAS_CUDA = cuda_device_count() > 0


def _sample(simulation, index: int):  # type: ignore[no-untyped-def]
    """In a worker: the sample's arrays and recorded device."""
    sample = simulate_sample(simulation, index, build_catalogue(simulation))
    return sample.cbed, sample.potential, sample.record.device


def test_the_environment_overrides_the_config_in_this_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device("gpu") == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(ValueError, match="STEMDL_DEVICE='tpu'"):
        resolve_device("auto")
    monkeypatch.delenv(DEVICE_ENV)
    assert resolve_device("cpu") == "cpu"


def test_two_workers_forced_to_different_devices(simulation_config) -> None:  # type: ignore[no-untyped-def]
    """Two real worker processes of one cluster, one started with STEMDL_DEVICE=cpu and one
    with STEMDL_DEVICE=gpu, the config saying `auto`: each computes where its own variable says
    and records it; the CPU worker's sample is bit for bit the in-process one."""
    simulation = simulation_config("tiny", device="auto")
    reference = simulate_sample(simulation.model_copy(update={"device": "cpu"}), 3,
                                build_catalogue(simulation))
    # Dask's 30 s connect and TCP timeouts guard against hangs, not against wrong answers; on a
    # loaded 2-core machine two worker processes that import abTEM can need longer to answer
    # (a TimeoutError from the Client's loop, seen once in a fresh-clone run), so give them 120 s.
    with dask.config.set({"distributed.comm.timeouts.connect": "120s",
                          "distributed.comm.timeouts.tcp": "120s"}), \
            LocalCluster(n_workers=0, processes=True, dashboard_address=":0",
                         silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        for device in ("cpu", "gpu"):
            cluster.worker_spec[device] = {"cls": "distributed.Nanny", "options": {
                "nthreads": 1, "env": {DEVICE_ENV: device}, "silence_logs": logging.ERROR}}
        cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        address = {info["name"]: addr for addr, info in
                   client.scheduler_info(n_workers=-1)["workers"].items()}
        seen = client.run(lambda: __import__("os").environ.get(DEVICE_ENV))
        assert {name: seen[addr] for name, addr in address.items()} == {"cpu": "cpu", "gpu": "gpu"}
        cbed, potential, device = client.submit(_sample, simulation, 3, workers=[address["cpu"]],
                                                pure=False).result()
        assert device == "cpu"
        np.testing.assert_array_equal(cbed, reference.cbed)
        np.testing.assert_array_equal(potential, reference.potential)
        on_gpu = client.submit(_sample, simulation, 3, workers=[address["gpu"]], pure=False)
        if HAS_CUDA:
            cbed, _, device = on_gpu.result()
            assert device == "gpu"
            np.testing.assert_allclose(cbed, reference.cbed, atol=1e-4 * reference.cbed.max())
        else:
            with pytest.raises(RuntimeError, match=r"STEMDL_DEVICE of this process .* is 'gpu' "
                                                   r"but (CuPy is not installed|CUDA reports)"):
                on_gpu.result()


def test_a_mixed_cluster_records_each_samples_device(
        tmp_path, small_config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """`generate` with the plan of a one-GPU machine: a GPU worker and a CPU worker
    (`--cpu-workers 1`, started with STEMDL_DEVICE=cpu); the device column of the store's
    records agrees with the report's count by device. With CUDA the config says `gpu` (without
    the variable the CPU worker refused every sample) and both devices appear. Without CUDA the
    plan is faked and the config says `auto` (the worker pinned to "GPU 0" finds none and
    computes on its CPU: every sample is "cpu"; with `gpu` its shards would fail and be retried
    wherever Dask puts them, which no test can pin down)."""
    from stemdl.configs import config_from_dict

    if not HAS_CUDA:
        monkeypatch.setattr(generate_module, "cuda_device_count", lambda: 1)
    data = small_config(num_samples=6, shard_size=2).to_dict()
    data["simulation"]["device"] = "gpu" if HAS_CUDA else "auto"
    store_url = str(tmp_path / "mixed.zarr")
    report = generate(config_from_dict(data), store_url, n_workers=1, cpu_workers=1,
                      progress=False)
    assert report.complete and not report.failed_samples, report.summary()
    assert verify_store(store_url).complete
    devices = [str(d) for d in read_field(open_stemdl_store(store_url), "device")]
    counts = {device: devices.count(device) for device in set(devices)}
    assert counts == report.samples_by_device and sum(counts.values()) == 6
    assert set(counts) == ({"cpu", "gpu"} if HAS_CUDA else {"cpu"})

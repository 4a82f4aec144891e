"""Device choice: CPU without CUDA (never importing CuPy), GPU with it, the same numbers on both."""

from __future__ import annotations

import hashlib
import importlib.abc
import subprocess
import sys
import time

import numpy as np
import pytest

from stemdl.simulate import device as device_module
from stemdl.simulate.device import cuda_device_count, cupy_installed, resolve_device

HAS_CUDA = cuda_device_count() > 0  # does not import CuPy when it is not installed


class _RefuseCupy(importlib.abc.MetaPathFinder):
    """A finder that fails the test if anything tries to import CuPy."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.split(".")[0] == "cupy":
            self.attempts.append(fullname)
        return None


def test_auto_without_cupy_is_cpu_and_never_imports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = device_module.importlib.util.find_spec
    monkeypatch.setattr(
        device_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "cupy" else real_find_spec(name, *a),
    )
    refuse = _RefuseCupy()
    sys.meta_path.insert(0, refuse)
    try:
        assert resolve_device("auto") == "cpu"
        assert cuda_device_count() == 0
    finally:
        sys.meta_path.remove(refuse)
    assert refuse.attempts == []


def test_explicit_gpu_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "cuda_device_count", lambda: 0)
    with pytest.raises(RuntimeError, match=r"simulation\.device is 'gpu' but"):
        resolve_device("gpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")


def _digest(cbed: np.ndarray, potential: np.ndarray) -> str:
    return hashlib.sha256(cbed.tobytes() + potential.tobytes()).hexdigest()


def test_a_fresh_cpu_process_gives_the_same_bits_and_imports_no_cupy(simulation_config) -> None:
    """A new interpreter plans its FFTs afresh: the sample must still be bit-identical.

    Without CuPy installed, the run must not import it either (with CuPy installed abTEM imports
    it at import time, which is abTEM's behaviour and not checked here).
    """
    code = (
        "import hashlib, sys\n"
        "from stemdl.configs import load_config\n"
        "from stemdl.simulate import simulate_sample\n"
        "config = load_config('tiny').simulation.model_copy(update={'device': 'cpu'})\n"
        "sample = simulate_sample(config, 1)\n"
        "assert sample.record.device == 'cpu'\n"
        "print(hashlib.sha256(sample.cbed.tobytes() + sample.potential.tobytes()).hexdigest())\n"
        "print('cupy' in sys.modules)\n"
    )
    config = simulation_config("tiny", device="cpu")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    digest, cupy_imported = result.stdout.split()[-2:]
    from stemdl.simulate import simulate_sample

    here = simulate_sample(config, 1)
    assert digest == _digest(here.cbed, here.potential)
    if not cupy_installed():
        assert cupy_imported == "False"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA and CuPy")
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_gpu_matches_cpu_and_reports_speed(preset: str, relative_error, simulation_config) -> None:
    from stemdl.simulate import build_catalogue, simulate_sample

    cpu = simulation_config(preset, device="cpu")
    gpu = simulation_config(preset, device="gpu")
    catalogue = build_catalogue(cpu)
    simulate_sample(gpu, 0, catalogue)  # warm-up: CUDA context, cuFFT plans
    timings = {"cpu": 0.0, "gpu": 0.0}
    for index in range(3):
        start = time.perf_counter()
        on_cpu = simulate_sample(cpu, index, catalogue)
        timings["cpu"] += time.perf_counter() - start
        start = time.perf_counter()
        on_gpu = simulate_sample(gpu, index, catalogue)
        timings["gpu"] += time.perf_counter() - start
        assert on_gpu.record.device == "gpu" and on_cpu.record.device == "cpu"
        assert relative_error(on_gpu.cbed, on_cpu.cbed) <= 1e-4
        assert relative_error(on_gpu.potential, on_cpu.potential) <= 1e-4
        again = simulate_sample(gpu, index, catalogue)
        assert np.array_equal(again.cbed, on_gpu.cbed)  # deterministic on the GPU too
    patterns = 3 * cpu.num_patterns
    print(
        f"\n{preset}: cpu {timings['cpu'] / patterns * 1e3:.2f} ms/pattern, "
        f"gpu {timings['gpu'] / patterns * 1e3:.2f} ms/pattern"
    )

"""Where a sample is computed (NumPy on CPU, CuPy on GPU) and the abTEM settings that make it exact.

One code path: the physics passes `device` to abTEM, which picks NumPy or CuPy arrays; nothing
else in simulate/ branches on the device.

`device="auto"` means GPU when CuPy is installed *and* CUDA reports a device. The check looks for
CuPy with `importlib.util.find_spec` first, so a machine without CuPy never imports it (abTEM
itself imports CuPy at import time when it is installed; that is abTEM's choice, not ours).

`abtem_settings` is the context every sample is computed in:
* FFTW with `FFTW_ESTIMATE` planning: abTEM's default, `FFTW_MEASURE`, times candidate
  algorithms at run time and may pick a different one in the next process, which changes the
  last bits of the result; ESTIMATE picks by a fixed heuristic, so the same input gives the
  same bits. (If other code in the same process has planned the same transform with MEASURE,
  FFTW reuses that wisdom; stemdl never does.)
* float32 precision, no progress bars (samples run inside Dask worker tasks).
The caller computes with `scheduler="synchronous"`: no nested Dask parallelism inside a task.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

Device = Literal["cpu", "gpu"]


def cupy_installed() -> bool:
    return importlib.util.find_spec("cupy") is not None


def cuda_device_count() -> int:
    """Number of CUDA devices CuPy can use; 0 without CuPy (which is then not imported)."""
    if not cupy_installed():
        return 0
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # CuPy present but no driver, no device, or a broken CUDA install
        return 0


def resolve_device(requested: str) -> Device:
    """Map the config's "auto" / "cpu" / "gpu" to where abTEM will actually compute."""
    if requested == "cpu":
        return "cpu"
    if requested == "gpu":
        if cuda_device_count() == 0:
            reason = "CuPy is not installed" if not cupy_installed() else "CUDA reports no device"
            raise RuntimeError(f"simulation.device is 'gpu' but {reason}; use 'auto' or 'cpu'")
        return "gpu"
    if requested == "auto":
        return "gpu" if cuda_device_count() > 0 else "cpu"
    raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {requested!r}")


@contextmanager
def abtem_settings(device: Device) -> Iterator[None]:
    """abTEM configuration for deterministic, single-task computation on `device`."""
    import abtem

    settings = {
        "device": device,
        "precision": "float32",
        "fft": "fftw",
        "fftw.planning_effort": "FFTW_ESTIMATE",
        "fftw.threads": 1,
        "diagnostics.progress_bar": False,
    }
    with abtem.config.set(settings):
        yield


def to_numpy(array: Any) -> Any:
    """Copy a CuPy array to the host; return NumPy arrays unchanged."""
    if hasattr(array, "get") and type(array).__module__.startswith("cupy"):
        return array.get()
    return array

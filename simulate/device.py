"""Where a sample is computed (NumPy on CPU, CuPy on GPU) and the abTEM settings that make it exact.

One code path: the physics passes `device` to abTEM, which picks NumPy or CuPy arrays; nothing
else in simulate/ branches on the device.

`device="auto"` means GPU when CuPy is installed *and* CUDA reports a device. The check looks for
CuPy with `importlib.util.find_spec` first, so a machine without CuPy never imports it (abTEM
itself imports CuPy at import time when it is installed; that is abTEM's choice, not ours).

`configure_abtem` sets, process-wide, what every sample is computed with:
* FFTW with `FFTW_ESTIMATE` planning: abTEM's default, `FFTW_MEASURE`, times candidate
  algorithms at run time and may pick a different one in the next process, which changes the
  last bits of the result; ESTIMATE picks by a fixed heuristic, so the same input gives the
  same bits. FFTW would also reuse wisdom from a MEASURE plan of the same transform made
  anywhere in the process (a notebook, a test using abTEM's defaults), so every call forgets
  FFTW's wisdom first; ESTIMATE planning is cheap (milliseconds a plan), and the overhead was
  within timing noise for the tiny and small presets.
* float32 precision, no progress bars (samples run inside Dask worker tasks).
The caller computes with `scheduler="synchronous"`: no nested Dask parallelism inside a task.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from stemdl.configs.base import StemdlError

Device = Literal["cpu", "gpu"]


class GpuUnavailableError(StemdlError, RuntimeError):
    """`simulation.device: gpu` on a machine where CuPy sees no CUDA device."""


def no_gpu_message() -> str:
    """Why 'gpu' cannot be used here, and what to set instead."""
    reason = "CuPy is not installed" if not cupy_installed() else "CUDA reports no device"
    return (f"simulation.device is 'gpu' but {reason}; set simulation.device to 'auto' or "
            "'cpu', or run on a machine with a GPU and CuPy")


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
            raise GpuUnavailableError(no_gpu_message())
        return "gpu"
    if requested == "auto":
        return "gpu" if cuda_device_count() > 0 else "cpu"
    raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {requested!r}")


DETERMINISTIC_ABTEM_SETTINGS: dict[str, object] = {
    "precision": "float32",
    "fft": "fftw",
    "fftw.planning_effort": "FFTW_ESTIMATE",
    "fftw.threads": 1,
    "diagnostics.progress_bar": False,
}


def configure_abtem() -> None:
    """Apply `DETERMINISTIC_ABTEM_SETTINGS` to abTEM, process-wide (see the module docstring).

    Why not a `with abtem.config.set(...)` block around each sample: abTEM's config is one
    process-global object, and a Dask worker may simulate samples in several threads at once;
    one thread leaving its block would restore FFTW_MEASURE under another thread's running
    FFTs. Every sample needs the same settings, so they are set once and left set. The device
    is not a global setting: it is passed to every abTEM object explicitly.
    """
    import abtem

    abtem.config.set(DETERMINISTIC_ABTEM_SETTINGS)
    try:
        import pyfftw
    except ImportError:  # abTEM then refuses "fftw" with its own message
        return
    pyfftw.forget_wisdom()  # no FFTW_MEASURE plan made elsewhere in the process may be reused


def to_numpy(array: Any) -> Any:
    """Copy a CuPy array to the host; return NumPy arrays unchanged."""
    if hasattr(array, "get") and type(array).__module__.startswith("cupy"):
        return array.get()
    return array

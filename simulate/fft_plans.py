"""Batched, in-place 2D FFTs with plans made once per shape and reused: pocketfft or FFTW on CPU, cuFFT on GPU.

Why a module of our own: stemdl's multislice (`simulate/multislice.py`) spends nearly all of
its time in FFTs of one fixed batch shape, thousands of times a sample. Planning once per
shape, transforming a buffer the plan owns in place, and not normalizing the inverse (the
engine folds 1/N into its propagator) removes every per-call allocation and check.

* `array_module(device)` is the one NumPy/CuPy switch of the engine (abTEM's own
  `get_array_module`), so the propagation code never branches on the device.
* `plan(shape, device)` returns a cached `FFTPlan`: `plan.buffer` is the array to fill,
  `plan.forward()` / `plan.backward()` transform it in place over its last two axes;
  `backward` is unnormalized (the sum without 1/N).
* Determinism, and the CPU library (`CPU_FFT_LIBRARY`): the same input must give the same
  bits in every process. FFTW_MEASURE (abTEM's default) times candidate algorithms at run
  time and may pick another one in another process, which changes the last bits; FFTW_ESTIMATE
  picks by a fixed heuristic (deterministic, with wisdom forgotten before planning so that no
  MEASURE plan made elsewhere in the process steers it) but picks slowly-running algorithms
  for these grids. pocketfft (`scipy.fft`, one worker) has no planner at all: its algorithm is
  a fixed function of the shape. On the engine's own work pocketfft is faster than
  FFTW_ESTIMATE and close to FFTW_MEASURE (`benchmarks/RESULTS.md`, "Multislice engine"), so
  pocketfft is the default; "fftw" (ESTIMATE) stays available.
  cuFFT picks its algorithm from the shape and the device, so a GPU gives the same bits for
  the same (shape, device) run after run.
* The cache is small (`MAX_PLANS` plans and `MAX_PLAN_BYTES` of buffers per device, least
  recently used out first): a sample needs three or four shapes (probe chunks, their
  remainder, the slices of its transmission functions), and samples of one material share
  them; a paper-scale GPU buffer is gigabytes, so the byte cap is what binds there.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from types import ModuleType
from typing import Any, Protocol

import numpy as np

MAX_PLANS = 8
CPU_FFT_LIBRARY = "pocketfft"  # or "fftw"; see the module docstring
MAX_PLAN_BYTES = {"cpu": 1 << 30, "gpu": 16 << 30}
FFTW_FLAGS = ("FFTW_ESTIMATE", "FFTW_DESTROY_INPUT")


def array_module(device: str) -> ModuleType:
    """NumPy for "cpu", CuPy for "gpu" (abTEM's switch; CuPy is imported only for "gpu")."""
    from abtem.core.backend import get_array_module

    return get_array_module(device)


class FFTPlan(Protocol):
    buffer: Any  # complex64 array of the plan's shape, on the plan's device

    def forward(self) -> None: ...

    def backward(self) -> None: ...


class _FFTWPlan:
    """pyFFTW plans of one in-place transform pair over the last two axes of `buffer`."""

    def __init__(self, shape: tuple[int, ...], threads: int) -> None:
        import pyfftw

        self.buffer = pyfftw.empty_aligned(shape, dtype=np.complex64)
        pyfftw.forget_wisdom()  # another caller's MEASURE wisdom must not pick our algorithm
        self._forward = pyfftw.FFTW(
            self.buffer, self.buffer, axes=(-2, -1), direction="FFTW_FORWARD",
            flags=FFTW_FLAGS, threads=threads,
        )
        self._backward = pyfftw.FFTW(
            self.buffer, self.buffer, axes=(-2, -1), direction="FFTW_BACKWARD",
            flags=FFTW_FLAGS, threads=threads, normalise_idft=False,
        )

    def forward(self) -> None:
        self._forward.execute()

    def backward(self) -> None:
        self._backward.execute()


class _PocketFFTPlan:
    """scipy.fft (pocketfft) transforms of the last two axes of `buffer`, in place, one worker.

    pocketfft has no planner: its algorithm is a fixed function of the shape, so it is
    deterministic with nothing to forget or to fix.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        import scipy.fft

        self._fft = scipy.fft
        self.buffer = np.empty(shape, dtype=np.complex64)
        _check_pocketfft_in_place()

    def forward(self) -> None:
        self._fft.fft2(self.buffer, overwrite_x=True, workers=1)

    def backward(self) -> None:  # norm="forward" leaves the inverse unnormalized
        self._fft.ifft2(self.buffer, overwrite_x=True, workers=1, norm="forward")


@functools.cache
def _check_pocketfft_in_place() -> None:
    """The engine relies on `overwrite_x=True` transforming a C-contiguous complex64 buffer in place."""
    import scipy.fft

    probe = np.ones((2, 6, 10), dtype=np.complex64)
    if not np.shares_memory(scipy.fft.fft2(probe, overwrite_x=True, workers=1), probe):
        raise RuntimeError("scipy.fft did not transform in place; set CPU_FFT_LIBRARY = 'fftw'")


class _CuFFTPlan:
    """A cuFFT plan of the last two axes of `buffer`, run in place (not verified on a GPU)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        import cupy
        import cupyx.scipy.fft as cufft_scipy
        from cupy.cuda import cufft

        self.buffer = cupy.zeros(shape, dtype=cupy.complex64)
        self._plan = cufft_scipy.get_fft_plan(self.buffer, axes=(-2, -1), value_type="C2C")
        self._forward_flag = cufft.CUFFT_FORWARD
        self._backward_flag = cufft.CUFFT_INVERSE

    def forward(self) -> None:
        self._plan.fft(self.buffer, self.buffer, self._forward_flag)

    def backward(self) -> None:  # cuFFT's inverse is unnormalized
        self._plan.fft(self.buffer, self.buffer, self._backward_flag)


_PLANS: OrderedDict[tuple[Any, ...], FFTPlan] = OrderedDict()
_LOCK = threading.Lock()


def plan(shape: tuple[int, ...], device: str, threads: int = 1) -> FFTPlan:
    """The cached in-place plan for complex64 arrays of `shape` on `device`.

    A plan owns its buffer, so two threads must not use one plan at once: the key includes
    the thread, and a Dask worker running samples in several threads gets a plan per thread.
    """
    key = (tuple(int(n) for n in shape), device, threads, CPU_FFT_LIBRARY, threading.get_ident())
    with _LOCK:
        found = _PLANS.get(key)
        if found is not None:
            _PLANS.move_to_end(key)
            return found
        made: FFTPlan
        if device == "gpu":
            made = _CuFFTPlan(key[0])
        elif CPU_FFT_LIBRARY == "fftw":
            made = _FFTWPlan(key[0], threads)
        else:
            made = _PocketFFTPlan(key[0])
        _PLANS[key] = made
        while len(_PLANS) > 1 and (
            len(_PLANS) > MAX_PLANS or _cached_bytes(device) > MAX_PLAN_BYTES[device]
        ):
            _PLANS.popitem(last=False)
        return made


def _cached_bytes(device: str) -> int:
    return sum(int(p.buffer.nbytes) for k, p in _PLANS.items() if k[1] == device)


def clear_plans() -> None:
    """Forget every cached plan (tests use it to plan afresh)."""
    with _LOCK:
        _PLANS.clear()

"""A measured 4D-STEM scan as model input, read a band of scan rows at a time.

Why: a microscope's scan does not fit in memory as float32 once it is large (256 × 256 probes
of 256 × 256 px are 17 GiB; 512² scans are common), and nothing in `stemdl predict` needs it
whole: the direct beam comes from the mean pattern, which is a running sum, and every later
step (rebinning, normalization) works on one pattern at a time. So the file is opened lazily
(`read_scan` gives a NumPy memory map or rosettasciio's lazy Dask array) and only bands of rows
are ever materialized:

* `mean_pattern(data)` sums bands of at most `BAND_BYTES` of the file's patterns;
* `ScanModelInputs` is the whole scan on the model's pattern grid, normalized, as an array-like
  that windows are sliced from (`inputs[r:r + gy, c:c + gx]`, what `predict.stitching.stitch`
  does). A slice computes the rows it lacks from the file (rebinned by
  `pattern_resampling.resample_patterns`, then `transforms.normalize_inputs`, the training
  loader's own function) and keeps them until a slice asks for rows below them. Windows come
  in row-major order, so each scan row is read and resampled once and at most the rows of one
  window (plus one band read from the file) are held.

Because every step is per pattern, the result is the same as processing the scan at once (the
test compares the two).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stemdl.configs import StemdlError
from stemdl.datasets.transforms import normalize_inputs
from stemdl.predict.pattern_resampling import resample_patterns

# Bytes of the file's patterns read at once for the mean pattern (a band of whole rows).
BAND_BYTES = 256 << 20


def rows_per_band(data: Any) -> int:
    """Whole scan rows of `data` (scan_y, scan_x, ky, kx) in `BAND_BYTES`, at least one."""
    row_bytes = int(np.prod(data.shape[1:])) * np.dtype(data.dtype).itemsize
    return max(1, BAND_BYTES // max(1, row_bytes))


def read_rows(data: Any, start: int, stop: int, source: str = "the scan") -> np.ndarray:
    """Rows [start, stop) of a NumPy array, memory map or Dask array, in memory.

    A file found damaged or truncated while reading (the reader fails on some rows, or a
    memory map ends early) is a `MicroscopeFileError` naming the first scan row that cannot
    be read, found by reading the band row by row: nothing is predicted from a partial scan."""
    try:
        band = np.asarray(data[start:stop])
    except StemdlError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, EOFError) as error:
        _raise_damaged_row(data, start, stop, source, error)
    if band.shape[0] != stop - start:
        raise _damaged(f"{source}: scan rows {start}–{stop - 1} read as {band.shape[0]} rows: "
                       "the file ends early (truncated)")
    return band


def _raise_damaged_row(data: Any, start: int, stop: int, source: str,
                       error: BaseException) -> None:
    for row in range(start, stop):
        try:
            np.asarray(data[row:row + 1])
        except StemdlError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, EOFError) as row_error:
            raise _damaged(f"{source}: scan row {row} cannot be read, the file is damaged or "
                           f"truncated there ({_first_line(row_error)})") from None
    raise _damaged(f"{source}: scan rows {start}–{stop - 1} cannot be read together, though "
                   f"each row can ({_first_line(error)})")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message from the reader"


def _damaged(message: str) -> Exception:
    from stemdl.predict.microscope_files import MicroscopeFileError

    return MicroscopeFileError(message)


def mean_pattern(data: Any, progress: bool = False, source: str = "the scan") -> np.ndarray:
    """(ky, kx) float64 mean of every pattern of `data`, summed band by band (with a progress
    bar of scan rows: on a large file this pass reads all of it, minutes from a slow disk)."""
    from tqdm.auto import tqdm

    total = np.zeros(data.shape[2:], dtype=np.float64)
    step = rows_per_band(data)
    with tqdm(total=data.shape[0], desc="mean pattern", unit="row", disable=not progress) as bar:
        for start in range(0, data.shape[0], step):
            band = read_rows(data, start, min(start + step, data.shape[0]), source)
            total += band.sum(axis=(0, 1), dtype=np.float64)
            bar.update(len(band))
    return total / (data.shape[0] * data.shape[1])


class ScanModelInputs:
    """The scan on the model's pattern grid, normalized, computed a band of rows at a time.

    `matrices` are `plan_resampling`'s overlap matrices; `input_transform` and `standardize`
    are the checkpoint's loader settings. Only `shape` and slicing `[rows, cols]` with rows at
    or after the lowest row still held are supported (what row-major windows need).
    """

    def __init__(self, data: Any, matrices: list[np.ndarray], input_transform: str,
                 standardize: bool, source: str = "the scan") -> None:
        self._data = data
        self._source = source  # the file, for the message when a row cannot be read
        self._matrices = matrices
        self._transform = input_transform
        self._standardize = standardize
        self._rows: dict[int, np.ndarray] = {}
        self.rows_computed = 0  # how many scan rows were read and resampled (each once)
        self.shape = (int(data.shape[0]), int(data.shape[1]),
                      matrices[0].shape[0], matrices[1].shape[0])

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("ScanModelInputs takes contiguous row ranges only")
        if self._rows and start < min(self._rows):
            raise IndexError(f"row {start} was released; windows must come in row-major order")
        for row in [r for r in self._rows if r < start]:
            del self._rows[row]  # windows are row-major: no later window needs these
        missing = [r for r in range(start, stop) if r not in self._rows]
        if missing:
            self._compute(missing[0], missing[-1] + 1)
        return np.stack([self._rows[r][cols] for r in range(start, stop)])

    def _compute(self, start: int, stop: int) -> None:
        band = resample_patterns(read_rows(self._data, start, stop, self._source), self._matrices)
        band = normalize_inputs(band, self._transform, self._standardize, inplace=True)
        for offset, row in enumerate(band):
            self._rows[start + offset] = row
        self.rows_computed += stop - start

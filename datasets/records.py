"""`SampleRecord` ↔ per-sample metadata columns (one NumPy column per record array).

Why columns: every record field becomes a Zarr array along the sample axis, so a reader can
select samples by energy or material with plain array indexing. Ragged atoms are padded to the
schema's `atom` dimension (atomic number 0, position NaN) with `num_atoms` saying how many are
real; `extra` (a free dict) is stored as a JSON object string with sorted keys.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from datasets.schema import ArraySpec, record_arrays
from simulate.sample import SPLITS, SampleRecord


class RecordError(ValueError):
    """A SampleRecord that does not fit the store's schema (wrong shape, too many atoms, …)."""


def empty_columns(schema: dict[str, ArraySpec], rows: int) -> dict[str, np.ndarray]:
    """Fill-valued record columns for `rows` samples (what a failed sample keeps)."""
    columns: dict[str, np.ndarray] = {}
    for spec in record_arrays(schema):
        if spec.dtype == "string":
            columns[spec.name] = np.full((rows, *spec.shape), spec.fill_value, dtype=object)
        else:
            columns[spec.name] = np.full((rows, *spec.shape), spec.fill_value, dtype=spec.dtype)
    return columns


def _field_value(record: SampleRecord, name: str) -> Any:
    if name == "num_atoms":
        return len(np.asarray(record.atomic_numbers))
    if name == "extra":
        return json.dumps({str(k): float(v) for k, v in record.extra.items()}, sort_keys=True)
    return getattr(record, name)


def put_record(columns: dict[str, np.ndarray], row: int, record: SampleRecord,
               schema: dict[str, ArraySpec]) -> None:
    """Write one record into row `row` of `columns`, checking it fits the schema."""
    if record.split not in SPLITS:
        raise RecordError(f"sample {record.index}: split {record.split!r} is not one of {SPLITS}")
    for spec in record_arrays(schema):
        value = _field_value(record, spec.name)
        if spec.dtype == "string":
            if not isinstance(value, str):
                raise RecordError(f"sample {record.index}: field {spec.name} must be a string, "
                                  f"got {type(value).__name__}")
            columns[spec.name][row] = value
            continue
        array = np.asarray(value)
        if "atom" in spec.dims:
            max_atoms = spec.shape[0]
            if array.shape[0] > max_atoms:
                raise RecordError(
                    f"sample {record.index}: {array.shape[0]} atoms exceed the store's "
                    f"{max_atoms} (simulation.structures.max_base_atoms)"
                )
            columns[spec.name][row, : array.shape[0]] = array
            continue
        if array.shape != spec.shape:
            raise RecordError(f"sample {record.index}: field {spec.name} has shape {array.shape}, "
                              f"the schema expects {spec.shape}")
        if np.issubdtype(np.dtype(spec.dtype), np.integer) and not np.all(array == np.round(array)):
            raise RecordError(f"sample {record.index}: field {spec.name} must be integer, got {value!r}")
        columns[spec.name][row] = array


def _python(value: np.ndarray) -> Any:
    return tuple(v.item() for v in value) if value.ndim == 1 else value.item()


def record_from_columns(columns: dict[str, np.ndarray], row: int) -> SampleRecord:
    """Rebuild the `SampleRecord` of row `row` (inverse of `put_record`)."""
    n = int(columns["num_atoms"][row])
    values: dict[str, Any] = {}
    for name in SampleRecord.field_names():
        column = columns[name]
        if name == "extra":
            values[name] = json.loads(column[row]) if column[row] else {}
        elif name in ("atomic_numbers", "positions_a"):
            values[name] = np.array(column[row][:n])
        elif name in ("cell_a", "probe_positions_a"):
            values[name] = np.array(column[row])
        elif column.dtype == object or column.dtype.kind in "UT":
            values[name] = str(column[row])
        else:
            values[name] = _python(np.asarray(column[row]))
    values["atomic_numbers"] = values["atomic_numbers"].astype(np.int64)
    return SampleRecord(**values)

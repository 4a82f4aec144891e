"""Per-sample values ↔ the packed metadata arrays, and the one way to read them.

Two views of a block of rows:

* *columns* (logical): one NumPy array per name in `schema.FIELDS` (every `SampleRecord` field
  plus `status`, `num_atoms`, the checksums, `failure_reason`), shaped (rows, *field shape*);
  `atomic_numbers`/`positions_a` padded to `max_base_atoms` (0 / NaN), `extra` a JSON string;
* *arrays* (physical): `record_int`, `record_float`, `record_str`, `atoms`,
  `probe_positions_a`, as stored (see `datasets/schema.py`).

`pack`/`unpack` convert between them; `read_fields`/`read_field`/`read_record` read from a
store. Why one accessor: consumers (verify, inspect, partition, loader, stage, tests) then never
depend on which column of which array holds a value, and a reader asking for `split` and
`status` of every row reads each table's shard files once, not once per field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from stemdl.configs import StemdlError
from stemdl.datasets.schema import (
    FIELDS,
    TABLES,
    ArraySpec,
    FieldLayout,
    column_index,
)
from stemdl.simulate.sample import SPLITS, SampleRecord

Columns = dict[str, np.ndarray]
_MAX_INT = 2**63 - 1


class RecordError(StemdlError, ValueError):
    """A SampleRecord that does not fit the store's schema (wrong shape, too many atoms, …)."""


def _column_shape(layout: FieldLayout, schema: dict[str, ArraySpec]) -> tuple[int, ...]:
    if layout.array == "atoms":
        return (schema["atoms"].shape[0], *layout.shape)
    if layout.array == "probe_positions_a":
        return schema["probe_positions_a"].shape
    return layout.shape


def _column_dtype(layout: FieldLayout) -> Any:
    if layout.name == "atomic_numbers":
        return np.int64
    if layout.array in TABLES:
        dtype = TABLES[layout.array][0]
        return object if dtype == "string" else np.dtype(dtype)
    return np.float64


def _fill(dtype: Any) -> Any:
    if dtype is object:
        return ""
    return float("nan") if np.dtype(dtype).kind == "f" else 0


def empty_columns(schema: dict[str, ArraySpec], rows: int) -> Columns:
    """Fill-valued logical columns for `rows` samples (what an unwritten sample holds)."""
    columns: Columns = {}
    for name, layout in FIELDS.items():
        dtype = _column_dtype(layout)
        columns[name] = np.full((rows, *_column_shape(layout, schema)), _fill(dtype), dtype=dtype)
    return columns


def _field_value(record: SampleRecord, name: str) -> Any:
    if name == "num_atoms":
        return len(np.asarray(record.atomic_numbers))
    if name == "extra":
        return json.dumps({str(k): float(v) for k, v in record.extra.items()}, sort_keys=True)
    return getattr(record, name)


def put_record(columns: Columns, row: int, record: SampleRecord,
               schema: dict[str, ArraySpec]) -> None:
    """Write one record into row `row` of logical `columns`, checking it fits the schema."""
    if record.split not in SPLITS:
        raise RecordError(f"sample {record.index}: split {record.split!r} is not one of {SPLITS}")
    for name, layout in FIELDS.items():
        if layout.bookkeeping and name != "num_atoms":
            continue
        value = _field_value(record, name)
        if columns[name].dtype == object:
            if not isinstance(value, str):
                raise RecordError(f"sample {record.index}: field {name} must be a string, "
                                  f"got {type(value).__name__}")
            columns[name][row] = value
            continue
        array = np.asarray(value)
        expected = _column_shape(layout, schema)
        if layout.array == "atoms":
            if array.shape[0] > expected[0]:
                raise RecordError(
                    f"sample {record.index}: {array.shape[0]} atoms exceed the store's "
                    f"{expected[0]} (simulation.structures.max_base_atoms)")
            expected = (array.shape[0], *layout.shape)
        if array.shape != expected:
            raise RecordError(f"sample {record.index}: field {name} has shape {array.shape}, "
                              f"the schema expects {expected}")
        if columns[name].dtype.kind == "i":
            if not np.all(array == np.round(array)):
                raise RecordError(f"sample {record.index}: field {name} must be integer, got {value!r}")
            if np.any(np.abs(array.astype(np.float64)) > _MAX_INT):
                raise RecordError(f"sample {record.index}: field {name} exceeds int64: {value!r}")
        if layout.array == "atoms":
            columns[name][row, : array.shape[0]] = array
        else:
            columns[name][row] = array


def pack(columns: Columns, schema: dict[str, ArraySpec]) -> Columns:
    """Logical columns → the physical per-sample metadata arrays (a block of rows)."""
    rows = len(columns["index"])
    out: Columns = {}
    for table, (dtype, _) in TABLES.items():
        names = [n for n, layout in FIELDS.items() if layout.array == table]
        parts = [np.asarray(columns[n]).reshape(rows, -1) for n in names]
        out[table] = np.concatenate(parts, axis=1).astype(object if dtype == "string" else dtype)
    atoms = np.full((rows, *schema["atoms"].shape), np.nan, dtype=np.float64)
    n_atoms = np.asarray(columns["num_atoms"])
    for row in range(rows):
        n = int(n_atoms[row])
        atoms[row, :n, 0] = columns["atomic_numbers"][row, :n]
        atoms[row, :n, 1:] = columns["positions_a"][row, :n]
    out["atoms"] = atoms
    out["probe_positions_a"] = np.asarray(columns["probe_positions_a"], dtype=np.float64)
    return out


def _assemble(layout: FieldLayout, table: np.ndarray, index: dict[str, int]) -> np.ndarray:
    """One logical column out of a block of a packed table (all of its columns or some)."""
    rows = table.shape[0]
    picked = table[:, [index[c] for c in layout.columns]]
    if TABLES[layout.array][0] == "string":
        picked = np.array([str(v) for v in picked.reshape(-1)], dtype=object).reshape(picked.shape)
    return picked.reshape(rows, *layout.shape)


def _from_atoms(name: str, atoms: np.ndarray) -> np.ndarray:
    if name == "atomic_numbers":
        z = atoms[..., 0]
        return np.where(np.isnan(z), 0, z).astype(np.int64)
    return atoms[..., 1:]


def unpack(arrays: Columns, names: Iterable[str] | None = None) -> Columns:
    """Physical arrays (whichever are given) → the logical columns `names` (default: every
    field they hold)."""
    wanted = list(FIELDS) if names is None else list(names)
    out: Columns = {}
    for name in wanted:
        layout = FIELDS[name]
        if layout.array not in arrays:
            if names is None:
                continue
            raise KeyError(f"{name} lives in array {layout.array}, which was not read")
        data = np.asarray(arrays[layout.array])
        if layout.array in TABLES:
            out[name] = _assemble(layout, data, column_index(layout.array))
        elif layout.array == "atoms":
            out[name] = _from_atoms(name, data)
        else:
            out[name] = data
    return out


def _python(value: np.ndarray) -> Any:
    return tuple(v.item() for v in value) if value.ndim == 1 else value.item()


def record_from_columns(columns: Columns, row: int) -> SampleRecord:
    """Rebuild the `SampleRecord` of row `row` of logical columns (inverse of `put_record`)."""
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


def read_fields(store: Any, names: Iterable[str], rows: np.ndarray | slice | None = None
                ) -> Columns:
    """Logical columns `names` of `store` (a `StemdlStore`) at `rows` (global sample
    indices, a slice, or None for all). Reads each packed table once, only the needed
    columns of it."""
    names = list(names)
    for name in names:
        if name not in FIELDS:
            raise KeyError(f"no per-sample field {name!r}; known: {sorted(FIELDS)}")
    selection: Any = slice(None) if rows is None else rows
    arrays: Columns = {}
    for array_name in dict.fromkeys(FIELDS[n].array for n in names):
        array = store.array(array_name)
        if array_name in TABLES:
            index = column_index(array_name)
            needed = sorted({index[c] for n in names if FIELDS[n].array == array_name
                             for c in FIELDS[n].columns})
            block = _read(array, selection, needed)
            full = np.empty((block.shape[0], len(index)), dtype=block.dtype)
            full[:, needed] = block
            arrays[array_name] = full
        else:
            arrays[array_name] = _read(array, selection, None)
    return unpack(arrays, names)


def _read(array: Any, selection: Any, columns: list[int] | None) -> np.ndarray:
    if isinstance(selection, slice):
        return np.asarray(array[selection] if columns is None else array[selection, columns])
    selection = np.asarray(selection, dtype=np.int64)
    if selection.size == 0:
        width = array.shape[1:] if columns is None else (len(columns),)
        kind = np.dtype(array.dtype).kind
        return np.zeros((0, *width), dtype=object if kind in "OTU" else array.dtype)
    return np.asarray(array.oindex[selection] if columns is None
                      else array.oindex[selection, columns])


def read_field(store: Any, name: str, rows: np.ndarray | slice | None = None) -> np.ndarray:
    """One logical column (see `read_fields`)."""
    return read_fields(store, [name], rows)[name]


def read_record(store: Any, index: int) -> SampleRecord:
    """The `SampleRecord` of sample `index` of `store`."""
    names = [*SampleRecord.field_names(), "num_atoms"]
    return record_from_columns(read_fields(store, names, slice(index, index + 1)), 0)


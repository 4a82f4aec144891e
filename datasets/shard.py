"""One generation task: simulate the S samples of one shard, write the shard, mark it done.

`simulate_shard(config, store_url, shard_index)` is a plain function of its inputs, so Dask can
run it on any worker and run it again after a failure. It owns exactly one file of every
per-sample array (the shard's) and one chunk of `shard_done`; no two tasks share a file, so
there are no locks. The order of writes is what makes a crash harmless:

1. simulate all S samples in memory (cast to the storage dtype, checksummed);
2. write every array's shard file (each file write is atomic on local stores);
3. write `shard_done[shard] = 1` last.

A shard that is not marked done is simply simulated and written again; the result is the same
bytes, because a sample is a pure function of (config, index).

A sample whose simulation raises makes the task raise (`SampleSimulationError`), so Dask
retries it. When the retries are used up, generation runs the task once more with
`record_failures=True`: the failing samples are then stored as failed (zero arrays,
`status = 2`, `failure_reason`), the shard is completed and the run goes on. Dask runs the
task as `simulate_shard_task`, which returns a failure that no retry can fix (disk full,
permission denied, an unusable store) instead of raising it, so it is neither retried nor
logged by every worker. Generation hands every task the catalogue the client planned the
store with; a task run without one builds its own and checks it against the store's
(`datasets/fingerprint.py`): a worker that sees another CIF directory refuses to write.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stemdl import simulate
from stemdl.configs import SimulationConfig, StemdlConfig
from stemdl.datasets.checksum import block_crc32c, stored_bytes
from stemdl.datasets.fingerprint import ATTRIBUTE, catalogue_fingerprint, check_catalogue
from stemdl.datasets.plan import config_differences, split_table
from stemdl.datasets.records import empty_columns, pack, put_record
from stemdl.datasets.schema import STATUS_FAILED, STATUS_OK, sharded_arrays
from stemdl.datasets.storage import StoreError, delete_objects, set_storage_options, shard_key
from stemdl.datasets.store import StemdlStore, as_config, open_stemdl_store

log = logging.getLogger(__name__)

_MAX_REASON = 1000


class Simulator(Protocol):
    """What generation needs of simulate/: `stemdl.simulate` itself (the default, `None`), or
    a stand-in with the same two functions (the tests use seeded random samples). It travels
    to the Dask workers with the task, so it must pickle."""

    def build_catalogue(self, simulation: SimulationConfig) -> Any: ...

    def simulate_sample(self, simulation: SimulationConfig, index: int, catalogue: Any) -> Any: ...


def _simulator(simulator: Simulator | None) -> Simulator:
    return simulate if simulator is None else simulator  # type: ignore[return-value]


class SampleSimulationError(RuntimeError):
    """A sample's simulation raised; the message names the sample, the shard and the cause."""


@dataclass
class ShardResult:
    """What one `simulate_shard` call did."""

    shard_index: int
    start: int
    stop: int
    already_done: bool = False
    failures: list[tuple[int, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    host: str = ""
    pid: int = 0
    fatal: str | None = None  # a failure that running the task again cannot fix (see below)
    devices: dict[str, int] = field(default_factory=dict)  # samples by record.device

    @property
    def num_samples(self) -> int:
        return self.stop - self.start


@functools.lru_cache(maxsize=4)
def _catalogue(simulator: Simulator | None, simulation_json: str) -> Any:
    """Build the catalogue once per worker process and config (it is deterministic)."""
    simulation = SimulationConfig.model_validate(json.loads(simulation_json))
    return _simulator(simulator).build_catalogue(simulation)


def warm_worker(simulator: Simulator | None = None, simulation_json: str | None = None) -> None:
    """Load the simulator in this process, and run its `warm_up(simulation)` when it has one
    (stemdl's imports abTEM and compiles the config's potential kernels: seconds), so that
    generation can do it while the client still builds the catalogue instead of in every
    worker's first task."""
    warm_up = getattr(_simulator(simulator), "warm_up", None)
    if not callable(warm_up):
        return
    try:
        warm_up(None if simulation_json is None
                else SimulationConfig.model_validate(json.loads(simulation_json)))
    except Exception as error:  # only a head start: the tasks meet the same cause and report it
        log.warning("warming up the simulator failed (%s: %s); the first task will pay for it",
                    type(error).__name__, error)


def catalogue_for(config: StemdlConfig, simulator: Simulator | None = None) -> Any:
    return _catalogue(simulator, config.simulation.model_dump_json())


@functools.lru_cache(maxsize=4)
def _fingerprint(simulator: Simulator | None,
                 simulation_json: str) -> tuple[str, dict[str, list[str]]]:
    catalogue = _catalogue(simulator, simulation_json)
    return catalogue_fingerprint(catalogue), split_table(catalogue)


def check_worker_catalogue(store: StemdlStore, config: StemdlConfig,
                           simulator: Simulator | None) -> None:
    """This worker's catalogue must be the store's (a worker elsewhere may see another CIF
    directory than the client that planned the store)."""
    fingerprint, table = _fingerprint(simulator, config.simulation.model_dump_json())
    if store.attrs.get(ATTRIBUTE) not in (None, fingerprint):
        check_catalogue(store.attrs, catalogue_for(config, simulator), table, store.url)


def _reason(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _check_sample(sample: Any, store: StemdlStore) -> None:
    for name in ("cbed", "potential"):
        expected = store.schema[name].shape
        actual = np.shape(getattr(sample, name))
        if actual != expected:
            raise ValueError(f"{name} has shape {actual}, the store expects {expected}")


def simulate_block(store: StemdlStore, start: int, stop: int, *, record_failures: bool,
                   simulator: Simulator | None = None, catalogue: Any = None,
                   devices: dict[str, int] | None = None
                   ) -> tuple[dict[str, np.ndarray], list[tuple[int, str]]]:
    """Simulate samples [start, stop) into one in-memory block of every per-sample array
    (the physical arrays: `cbed`, `potential` and the packed metadata, see `records.pack`).
    `catalogue`: the one the store was planned with, or None to build it here. `devices`,
    when given, counts the simulated samples by the device their record names."""
    config, schema = store.config, store.schema
    module = _simulator(simulator)
    if catalogue is None:
        catalogue = catalogue_for(config, simulator)
    rows = stop - start
    columns = empty_columns(schema, rows)
    data = {name: np.zeros((rows, *schema[name].shape), dtype=schema[name].dtype)
            for name in ("cbed", "potential")}
    columns["status"][:] = STATUS_OK
    failures: list[tuple[int, str]] = []
    for row, index in enumerate(range(start, stop)):
        try:
            sample = module.simulate_sample(config.simulation, index, catalogue)
            _check_sample(sample, store)
            cbed = stored_bytes(sample.cbed, schema["cbed"].dtype)
            potential = stored_bytes(sample.potential, schema["potential"].dtype)
            for name, values in (("cbed", cbed), ("potential", potential)):
                if not np.isfinite(values).all():
                    raise ValueError(f"{name} has non-finite values in storage dtype {values.dtype}")
            if sample.record.index != index:
                raise ValueError(f"record.index is {sample.record.index}, expected {index}")
            row_columns = empty_columns(schema, 1)
            put_record(row_columns, 0, sample.record, schema)
        except Exception as error:  # broad: abTEM/ASE on untrusted structures may raise anything
            if not record_failures:
                raise SampleSimulationError(
                    f"sample {index} (shard {start // store.shard_size}) failed: {_reason(error)}"
                ) from error
            failures.append((index, _reason(error)))
            columns["status"][row] = STATUS_FAILED
            columns["failure_reason"][row] = _reason(error)
            columns["index"][row] = index
            continue
        data["cbed"][row], data["potential"][row] = cbed, potential
        if devices is not None:
            devices[sample.record.device] = devices.get(sample.record.device, 0) + 1
        for name, column in row_columns.items():
            if name not in ("status", "failure_reason"):
                columns[name][row] = column[0]
    columns["cbed_crc32c"][:] = block_crc32c(data["cbed"])
    columns["potential_crc32c"][:] = block_crc32c(data["potential"])
    return {**data, **pack(columns, schema)}, failures


def write_block(store: StemdlStore, start: int, block: dict[str, np.ndarray]) -> None:
    """Write one whole shard of every per-sample array (never `shard_done`).

    The shard's existing files (from an interrupted attempt, or corrupted) are deleted first:
    they belong to this shard alone, and zarr would otherwise read and merge them.
    """
    shard = start // store.shard_size
    stop = start + len(block["cbed"])
    arrays = [store.array(spec.name) for spec in sharded_arrays(store.schema)]
    delete_objects(store.url, [shard_key(array, shard) for array in arrays])
    for spec in sharded_arrays(store.schema):
        store.array(spec.name)[start:stop] = block[spec.name]


class TaskConfigError(StoreError):
    """A task was given another config than the store's (deterministic: never retried)."""


def _check_task_config(store: StemdlStore, config: StemdlConfig) -> None:
    differences = config_differences(store.attrs["config"], config.to_dict())
    if differences:
        raise TaskConfigError(f"store {store.url!r} was made with another config: "
                              f"{differences[:5]}")


# errno values of failures that are the same on every attempt: the disk is full, the store is
# not writable. Retrying them only simulates the shard again (minutes at scale) to fail again.
DETERMINISTIC_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
                                  errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EFBIG})


def deterministic_failure(error: BaseException) -> str | None:
    """A one-line description if `error` (or an error it was raised from) is one that a
    retry cannot fix: a full disk, a permission or read-only error, a store that cannot be
    used (`StoreError`: another config or catalogue, not a stemdl store); None otherwise."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DETERMINISTIC_ERRNOS:
            where = f": {current.filename}" if current.filename else ""
            return f"{type(current).__name__}: [Errno {current.errno}] {current.strerror}{where}"
        if isinstance(current, StoreError):
            return f"{type(current).__name__}: {current}"
        current = current.__cause__ or current.__context__
    return None


def simulate_shard_task(config: StemdlConfig | dict[str, Any], store_url: str,
                        shard_index: int, *, record_failures: bool = False,
                        simulator: Simulator | None = None, catalogue: Any = None,
                        storage_options: dict[str, Any] | None = None) -> ShardResult:
    """`simulate_shard` as Dask runs it: a failure that a retry cannot fix
    (`deterministic_failure`: disk full, permission denied, a store that cannot be used) is
    returned as `ShardResult.fatal` instead of raised, so that Dask does not retry it (each
    retry would simulate the shard again, only to fail again) and no worker logs a traceback
    for it; the client reports it once. Anything else raises and is retried.
    `storage_options`: the client's `--storage-options`, used by this worker process too."""
    try:
        if storage_options is not None:
            set_storage_options(storage_options)
        return simulate_shard(config, store_url, shard_index, record_failures=record_failures,
                              simulator=simulator, catalogue=catalogue)
    except Exception as error:  # broad: classified below, anything not deterministic re-raised
        fatal = deterministic_failure(error)
        if fatal is None:
            raise
        return ShardResult(shard_index, 0, 0, host=socket.gethostname(), pid=os.getpid(),
                           fatal=fatal)


def simulate_shard(config: StemdlConfig | dict[str, Any], store_url: str, shard_index: int, *,
                   record_failures: bool = False,
                   simulator: Simulator | None = None, catalogue: Any = None) -> ShardResult:
    """Simulate, write and mark done one shard of a planned store (idempotent, retryable).

    `config` is a `StemdlConfig` or its `to_dict()`; `simulator` is `stemdl.simulate` unless
    given (see `Simulator`). `catalogue`: the catalogue the client planned the store with
    (generation sends it to the workers, so no worker spends seconds rebuilding it, nor needs
    the CIF directory); None builds it here and checks it against the store's fingerprint.
    """
    began = time.perf_counter()
    config = as_config(config)
    store = open_stemdl_store(store_url, mode="r+")
    _check_task_config(store, config)
    if catalogue is None:
        check_worker_catalogue(store, config, simulator)
    start, stop = store.shard_range(shard_index)
    result = ShardResult(shard_index, start, stop, host=socket.gethostname(), pid=os.getpid())
    if store.shard_is_done(shard_index):
        result.already_done = True
        return result
    block, result.failures = simulate_block(store, start, stop, record_failures=record_failures,
                                            simulator=simulator, catalogue=catalogue,
                                            devices=result.devices)
    write_block(store, start, block)
    store.set_done(shard_index, True)
    result.elapsed_s = time.perf_counter() - began
    return result

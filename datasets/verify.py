"""Check a store and say, per shard and per file, what is wrong; optionally re-simulate it.

`verify_store(store_url)` checks, in order:

* schema: the group is a stemdl store of this schema version, and every array the recorded
  config calls for exists with the right shape, dtype, chunks, shards and dimension names;
* completion: which shards are marked done (in a staged store, only its local shards count);
* per done shard: every array's shard file decodes (Zarr's crc32c codec locates flipped bytes;
  the message names the shard file), the per-sample CRC-32C of `cbed` and `potential` matches,
  no NaN/inf, CBED within [0, 1], indices and statuses consistent, splits agree with the
  material → split table in the group attributes, atom counts within the padding.

`repair=True` marks each bad shard not done, re-simulates it from the config recorded in the
store (deterministic, so the bytes are what they should have been) and verifies it again; it
also simulates shards not yet generated (in a staged store: its local shards only). An
array whose `zarr.json` is missing or unreadable is named; `repair=True` rebuilds it from the
config in the root attributes (`datasets/metadata_repair.py`) and then checks the data files.
A done shard whose file is missing is reported as missing (Zarr would read fill values). Repair runs
in this process; to finish a large incomplete store, run `generate` again instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import zarr

from stemdl.datasets.checksum import sample_crc32c
from stemdl.datasets.integrity import missing_files, shard_file
from stemdl.datasets.metadata_repair import rebuild_array_metadata
from stemdl.datasets.plan import split_by_material
from stemdl.datasets.records import unpack
from stemdl.datasets.schema import (
    FIELDS,
    STATUS_FAILED,
    STATUS_MISSING,
    STATUS_OK,
    ArraySpec,
    sharded_arrays,
)
from stemdl.datasets.shard import Simulator, simulate_shard
from stemdl.datasets.storage import (
    UNREADABLE_CHUNK,
    StoreAccessError,
    StoreError,
    file_url,
    normalize_store_url,
    shard_key,
    zarr_dtype,
)
from stemdl.datasets.store import ArrayMetadataError, StemdlStore, open_stemdl_store
from stemdl.datasets.store_lock import store_lock

CBED_RANGE_TOLERANCE = 1e-2
METADATA_PREFIX = "metadata of array"  # float16 rounding of values near the bounds


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one shard (or with the store, when `shard` is None)."""

    shard: int | None
    array: str | None
    path: str | None
    message: str

    def __str__(self) -> str:
        where = f"shard {self.shard}" if self.shard is not None else "store"
        if self.array:
            where += f", array {self.array}"
        if self.path:
            where += f" ({self.path})"
        return f"{where}: {self.message}"


@dataclass
class VerifyReport:
    """Result of `verify_store`; `ok` means no problems (incomplete shards are listed apart)."""

    store_url: str
    num_shards: int = 0
    shards_done: list[int] = field(default_factory=list)
    shards_incomplete: list[int] = field(default_factory=list)
    shards_not_local: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    failed_samples: list[tuple[int, str]] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)
    metadata_rebuilt: list[str] = field(default_factory=list)

    @property
    def bad_shards(self) -> list[int]:
        return sorted({p.shard for p in self.problems if p.shard is not None})

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def complete(self) -> bool:
        return self.ok and not self.shards_incomplete

    def summary(self) -> str:
        lines = [f"store {self.store_url}: {len(self.shards_done)}/{self.num_shards} shards done"
                 + (f" ({len(self.shards_not_local)} not local: staged store)"
                    if self.shards_not_local else "")]
        if self.shards_incomplete:
            lines.append(f"  not yet generated: shards {_ranges(self.shards_incomplete)}")
        lines += [f"  PROBLEM {p}" for p in self.problems]
        lines += [f"  failed sample {i}: {r}" for i, r in self.failed_samples]
        if self.metadata_rebuilt:
            lines.append(f"  rebuilt array metadata {', '.join(self.metadata_rebuilt)}")
        if self.repaired:
            lines.append(f"  repaired shards {_ranges(self.repaired)}")
        lines.append("  OK" if self.ok else f"  {len(self.bad_shards)} bad shard(s)")
        return "\n".join(lines)


def _ranges(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:50]) + (" …" if len(values) > 50 else "")


def _check_schema(store: StemdlStore) -> list[Problem]:
    problems = []
    ds = store.config.dataset
    for spec in store.schema.values():
        try:
            array = store.array(spec.name)
        except ArrayMetadataError as error:
            path, _, message = str(error).partition(": ")
            problems.append(Problem(None, spec.name, path, message.split(";")[0]))
            continue
        if spec.per == "coordinate":
            problems += _check_coordinate(spec, array)
            continue
        expected_shape = (spec.length(ds), *spec.shape)
        expected_dtype = np.dtype(zarr_dtype(spec)) if spec.dtype != "string" else None
        checks = [
            ("shape", tuple(array.shape), expected_shape),
            ("dimension_names", tuple(array.metadata.dimension_names or ()), spec.all_dims),
        ]
        if spec.per == "sample":
            checks += [("chunks", tuple(array.chunks), (1, *spec.shape)),
                       ("shards", tuple(array.shards or ()), (ds.shard_size, *spec.shape))]
        if expected_dtype is not None:
            checks.append(("dtype", array.dtype, expected_dtype))
        for what, actual, expected in checks:
            if actual != expected:
                problems.append(Problem(None, spec.name, None,
                                        f"{what} is {actual}, the schema expects {expected}"))
    return problems


def _check_coordinate(spec: ArraySpec, array: zarr.Array) -> list[Problem]:
    """A column-name coordinate must hold exactly the schema's names, in order: the packed
    arrays are read by these positions."""
    try:
        values = tuple(str(v) for v in np.asarray(array[:]))
    except UNREADABLE_CHUNK as error:
        return [Problem(None, spec.name, None, f"cannot read ({type(error).__name__}: {error})")]
    if values != spec.values:
        return [Problem(None, spec.name, None,
                        f"holds {list(values)[:8]}…, the schema expects {list(spec.values or ())[:8]}…")]
    return []


# Arrays checked one sample at a time: a `paper` shard holds 32 GiB of `cbed`, so verify
# (and stage, which verifies every copy) never reads one whole.
SAMPLE_ARRAYS = ("cbed", "potential")


MISSING_FILE = "shard file missing (deleted or lost; the shard is marked done)"


def _read_shard(store: StemdlStore, shard: int) -> tuple[dict[str, np.ndarray], list[Problem]]:
    """The shard's record arrays (small), read whole through Zarr; a missing file is reported
    as missing (Zarr would read it as fill values) and not read."""
    start, stop = store.shard_range(shard)
    block, problems = {}, []
    missing = set(missing_files(store, [shard]))
    for spec in sharded_arrays(store.schema):
        path = shard_file(store, spec.name, shard)
        if path in missing:
            problems.append(Problem(shard, spec.name, path, MISSING_FILE))
            continue
        if spec.name in SAMPLE_ARRAYS:
            continue
        array = store.array(spec.name)
        try:
            block[spec.name] = np.asarray(array[start:stop])
        except UNREADABLE_CHUNK as error:
            problems.append(_undecodable(store, spec.name, shard, error))
    return block, problems


def _undecodable(store: StemdlStore, name: str, shard: int, error: Exception,
                 sample: int | None = None) -> Problem:
    path = file_url(store.url, shard_key(store.array(name), shard))
    where = f"sample {sample} of " if sample is not None else ""
    return Problem(shard, name, path,
                   f"cannot decode {where}the shard file ({type(error).__name__}: {error})")


def _check_samples(store: StemdlStore, shard: int, records: dict[str, np.ndarray],
                   problem: Callable[[str, str], None], missing: set[str]) -> list[Problem]:
    """Per sample of `cbed` and `potential`, read through Zarr one at a time: decodes, its
    CRC-32C equals the recorded one, finite (if simulated), and `cbed` within [0, 1]."""
    start, stop = store.shard_range(shard)
    status = records.get("status")
    ok = status == STATUS_OK if status is not None else np.zeros(stop - start, dtype=bool)
    undecodable: list[Problem] = []
    low, high = np.inf, -np.inf
    for name in SAMPLE_ARRAYS:
        if name in missing:  # reported by _read_shard
            continue
        array = store.array(name)
        stored = records.get(f"{name}_crc32c")
        for row in range(stop - start):
            try:
                sample = np.asarray(array[start + row])
            except UNREADABLE_CHUNK as error:
                undecodable.append(_undecodable(store, name, shard, error, start + row))
                break  # one damaged file is reported once
            if stored is not None and (computed := sample_crc32c(sample)) != stored[row]:
                problem(name, f"sample {start + row}: CRC-32C {computed:#010x} != stored "
                              f"{stored[row]:#010x} (file corrupted or overwritten)")
            if not ok[row]:
                continue
            if not np.isfinite(sample).all():
                problem(name, f"sample {start + row} has NaN or inf values")
            elif name == "cbed":
                values = sample.astype(np.float32)
                low, high = min(low, float(values.min())), max(high, float(values.max()))
    if low < -CBED_RANGE_TOLERANCE or high > 1 + CBED_RANGE_TOLERANCE:
        problem("cbed", f"values outside [0, 1] (fraction of the beam): min {low}, max {high}")
    return undecodable


def _check_values(store: StemdlStore, shard: int, arrays: dict[str, np.ndarray],
                  material_split: dict[str, str], missing: set[str] | None = None
                  ) -> tuple[list[Problem], list[tuple[int, str]]]:
    start, stop = store.shard_range(shard)
    problems: list[Problem] = []
    failed: list[tuple[int, str]] = []
    block = unpack(arrays)

    def problem(name: str, message: str) -> None:
        """Report against the array (and shard file) that holds the value `name`."""
        array = FIELDS[name].array if name in FIELDS else name
        path = file_url(store.url, shard_key(store.array(array), shard))
        if name != array:
            message = f"{name}: {message}"
        problems.append(Problem(shard, array, path, message))

    problems += _check_samples(store, shard, block, problem, missing or set())
    if "index" in block and not np.array_equal(block["index"], np.arange(start, stop)):
        problem("index", f"index holds {block['index'].tolist()}, expected {start}..{stop - 1}")
    status = block.get("status")
    if status is None:
        return problems, failed
    for row in np.flatnonzero(status == STATUS_MISSING):
        problem("status", f"sample {start + row} is in a shard marked done but was never written")
    for row in np.flatnonzero(~np.isin(status, (STATUS_MISSING, STATUS_OK, STATUS_FAILED))):
        problem("status", f"sample {start + row} has unknown status {status[row]}")
    for row in np.flatnonzero(status == STATUS_FAILED):
        reason = str(block.get("failure_reason", [""] * len(status))[row])
        failed.append((start + int(row), reason or "(no reason recorded)"))
    ok = status == STATUS_OK
    if "split" in block and "material_id" in block:
        for row in np.flatnonzero(ok):
            material, split = str(block["material_id"][row]), str(block["split"][row])
            expected = material_split.get(material)
            if expected != split:
                problem("split", f"sample {start + row}: material {material!r} has split "
                                 f"{split!r} but the store's split table says {expected!r}")
    if "num_atoms" in block:
        max_atoms = store.schema["atoms"].shape[0]
        bad = ok & ((block["num_atoms"] < 1) | (block["num_atoms"] > max_atoms))
        for row in np.flatnonzero(bad):
            problem("num_atoms", f"sample {start + row} has num_atoms {block['num_atoms'][row]}")
    return problems, failed


def local_shards(store: StemdlStore) -> list[int] | None:
    """The shards a staged store holds (None for a full store)."""
    staged = store.attrs.get("staged")
    return None if not staged else sorted(int(k) for k in staged["shards"])


def verify_shard(store: StemdlStore, shard: int, material_split: dict[str, str]
                 ) -> tuple[list[Problem], list[tuple[int, str]]]:
    block, problems = _read_shard(store, shard)
    missing = {p.array for p in problems if p.message == MISSING_FILE}
    if missing & {"record_int", "record_str"}:  # no status or checksums to check against
        return problems, []
    value_problems, failed = _check_values(store, shard, block, material_split, missing)
    return problems + value_problems, failed


def verify_store(store_url: str, repair: bool = False, *,
                 simulator: Simulator | None = None) -> VerifyReport:
    """Check the store at `store_url`; with `repair`, re-simulate its bad shards.

    A repair writes (array metadata, done flags, shards), so it holds the store's lock, the
    one `generate` holds (`datasets/store_lock.py`): a repair while a client is generating
    into the store, or a second repair, would re-simulate the same shards as the other and
    flip done flags under it; it is refused at once with `StoreLockedError` naming the
    holder. A plain check only reads and takes no lock.
    """
    try:
        url = normalize_store_url(store_url)
    except StoreError:  # reported by `_verify` as the store's problem, like a missing store
        return _verify(store_url, repair, simulator)
    if not repair:
        return _verify(url, False, simulator)
    with store_lock(url, "repairing"):
        return _verify(url, True, simulator)


def _verify(store_url: str, repair: bool, simulator: Simulator | None) -> VerifyReport:
    try:
        store = open_stemdl_store(store_url, mode="r+" if repair else "r")
    except StoreAccessError:  # the endpoint, credentials or bucket: nothing to say of a store
        raise
    except StoreError as error:
        report = VerifyReport(str(store_url))
        report.problems.append(Problem(None, None, None, str(error)))
        return report
    report = VerifyReport(store.url, num_shards=store.num_shards)
    report.problems += _check_schema(store)
    if report.problems and repair and all(p.message.startswith(METADATA_PREFIX)
                                          for p in report.problems):
        # Array metadata is a pure function of the stored config: rebuild it, then verify the
        # data files as usual (bad ones are re-simulated below).
        names = [p.array for p in report.problems if p.array]
        report.metadata_rebuilt = rebuild_array_metadata(store, names)
        store = open_stemdl_store(store.url, mode="r+")
        report.problems = _check_schema(store)
    if report.problems:
        return report
    split_of = plan_verification(store, report)
    for shard in report.shards_done:
        problems, failed = verify_shard(store, shard, split_of)
        report.problems += problems
        report.failed_samples += failed
    if repair and (report.bad_shards or report.shards_incomplete):
        _repair(store, report, split_of, simulator)
    return report


def plan_verification(store: StemdlStore, report: VerifyReport) -> dict[str, str]:
    """The plan of a verification, before any shard file is read: which shards are done
    (to be checked), not yet generated, or not local (a staged store), into `report`; returns
    the material → split table the checks compare against. Reads the group attributes and
    the done mask only (`benchmarks/metadata_scale.py` times it at 10⁷ samples)."""
    attrs = store.attrs
    split_of = split_by_material(attrs)
    if len(split_of) != sum(len(v) for v in attrs.get("splits", {}).values()):
        report.problems.append(Problem(None, None, None, "a material is listed in two splits"))
    done = store.done_mask()
    local = local_shards(store)
    expected = np.arange(store.num_shards) if local is None else np.asarray(local, dtype=np.int64)
    if local is not None:
        report.shards_not_local = np.setdiff1d(np.arange(store.num_shards), expected).tolist()
    report.shards_done = expected[done[expected]].tolist()
    report.shards_incomplete = expected[~done[expected]].tolist()
    return split_of


def _repair(store: StemdlStore, report: VerifyReport, split_of: dict[str, str],
            simulator: Simulator | None) -> None:
    config = store.config.to_dict()
    for shard in sorted(set(report.bad_shards) | set(report.shards_incomplete)):
        store.set_done(shard, False)
        simulate_shard(config, store.url, shard, simulator=simulator, record_failures=True)
        problems, _ = verify_shard(store, shard, split_of)
        if problems:
            report.problems += [Problem(shard, p.array, p.path, f"after repair: {p.message}")
                                for p in problems]
        else:
            report.repaired.append(shard)
            report.problems = [p for p in report.problems if p.shard != shard]
            if shard in report.shards_incomplete:
                report.shards_incomplete.remove(shard)
                report.shards_done = sorted([*report.shards_done, shard])

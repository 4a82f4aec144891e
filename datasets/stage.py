"""Node-local staging: copy this node's shards of a shared store to local disk, once per node.

Why: a parallel file system serves thousands of readers badly; the paper copied each rank's
data to the node-local NVMe before training. `stage_node(store_url, local_dir, node, nodes)`
copies the shards assigned to `node` (`datasets.partition.shards_for_node`: round-robin, shard
i → node i % nodes, so nodes differ by at most one shard) into `local_dir`, which becomes a valid stemdl store of its own:

* same schema and array metadata (the `zarr.json` documents and the column-name coordinates
  are copied byte for byte), same global sample indices, so sample i is sample i everywhere;
* only its shards exist; the group attribute `staged` records the source, (node, nodes), the
  assigned shards and their sample ranges; `shard_done` is set only for shards copied here, so
  `verify_store` and the loader see exactly the local shards;
* every shard is verified after copying (decoded through Zarr's crc32c codecs, and the
  per-sample CRC-32C of `cbed` and `potential` recomputed) before it is marked done.

Shard files are copied as bytes (no decode/re-encode) and each lands atomically (temp file +
rename). Re-running skips shards already marked done. Local ranks of one node may all call
`stage_node`: a `filelock` next to `local_dir` lets the first do the copying while the others
wait, then find everything present.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from stemdl.configs import StemdlError
from stemdl.datasets.integrity import IncompleteStoreError, listing
from stemdl.datasets.partition import shards_for_node
from stemdl.datasets.plan import config_differences, split_by_material
from stemdl.datasets.schema import coordinate_arrays, sharded_arrays
from stemdl.datasets.storage import (
    StoreError,
    filesystem,
    is_local,
    normalize_store_url,
    shard_key,
)
from stemdl.datasets.store import StemdlStore, open_stemdl_store
from stemdl.datasets.verify import verify_shard


class StageError(StemdlError, RuntimeError):
    """Staging could not produce a verified copy; the message names the shard and file."""


@dataclass
class StageReport:
    """What `stage_node` did on this call."""

    source_url: str
    local_dir: str
    node: int
    nodes: int
    shards_assigned: list[int] = field(default_factory=list)
    shards_copied: list[int] = field(default_factory=list)
    shards_already_present: list[int] = field(default_factory=list)
    shards_missing_in_source: list[int] = field(default_factory=list)
    bytes_copied: int = 0
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.shards_missing_in_source

    def summary(self) -> str:
        return (
            f"node {self.node}/{self.nodes}: {len(self.shards_assigned)} shards assigned, "
            f"{len(self.shards_copied)} copied ({self.bytes_copied / 2**20:.1f} MiB), "
            f"{len(self.shards_already_present)} already present, "
            f"{len(self.shards_missing_in_source)} not done in the source, "
            f"{self.elapsed_s:.1f} s → {self.local_dir}"
            + (f"\nPARTIAL: shards {listing(self.shards_missing_in_source)} are not done in the "
               "source and were left out" if self.shards_missing_in_source else "")
        )


COPY_BLOCK_BYTES = 16 * 2**20


def _copy_object(src_fs, src_path: str, dst_path: Path) -> int:  # type: ignore[no-untyped-def]
    """Copy one object into a temporary file, then rename it into place: a crash never
    leaves a partial file under the real name. Streamed in blocks (a `paper` shard file is
    32 GiB); returns the bytes copied."""
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst_path.with_name(f".{dst_path.name}.{os.getpid()}.tmp")
    try:
        with src_fs.open(src_path, "rb") as source, open(tmp, "wb") as target:
            shutil.copyfileobj(source, target, COPY_BLOCK_BYTES)
            copied = target.tell()
        os.replace(tmp, dst_path)
    finally:
        tmp.unlink(missing_ok=True)
    return copied


def _create_local_store(source: StemdlStore, local: Path, node: int, nodes: int,
                        assigned: list[int]) -> None:
    """Copy the array metadata, then write the group document (last: it marks the store)."""
    fs, root = filesystem(source.url)
    for name in source.schema:
        _copy_object(fs, f"{root}/{name}/zarr.json", local / name / "zarr.json")
    for spec in coordinate_arrays(source.schema):  # column names: one small chunk each
        key = shard_key(source.array(spec.name), 0)
        _copy_object(fs, f"{root}/{key}", local.joinpath(*key.split("/")))
    group_doc = json.loads(fs.cat_file(f"{root}/zarr.json"))
    group_doc["attributes"]["staged"] = {
        "source": source.url,
        "node": node,
        "nodes": nodes,
        "assignment": "round-robin: shard i belongs to node i % nodes",
        "shards": assigned,
        "sample_ranges": [list(source.shard_range(k))
                          for k in assigned],
    }
    tmp = local / ".zarr.json.tmp"
    tmp.write_text(json.dumps(group_doc, indent=2))
    os.replace(tmp, local / "zarr.json")


def _open_or_create(source: StemdlStore, local: Path, node: int, nodes: int,
                    assigned: list[int]) -> StemdlStore:
    if (local / "zarr.json").exists():
        store = open_stemdl_store(str(local), mode="r+")
        staged = store.attrs.get("staged") or {}
        if (staged.get("node"), staged.get("nodes")) != (node, nodes):
            raise StoreError(
                f"{local} holds node {staged.get('node')}/{staged.get('nodes')} of a staged "
                f"store; refusing to stage node {node}/{nodes} into it"
            )
        differences = config_differences(store.attrs["config"], source.attrs["config"])
        if differences:
            raise StoreError(f"{local} was staged from a store with another config: "
                             f"{differences[:5]}; remove it or stage elsewhere")
        return store
    if local.exists() and any(local.iterdir()):
        raise StoreError(f"{local} exists, is not empty and is not a stemdl store")
    local.mkdir(parents=True, exist_ok=True)
    _create_local_store(source, local, node, nodes, assigned)
    return open_stemdl_store(str(local), mode="r+")


def _copy_shard(source: StemdlStore, local: StemdlStore, shard: int) -> int:
    """Copy every array's shard file; an absent file (all fill values: Zarr skips writing
    those) stays absent locally too. Returns the bytes copied."""
    fs, root = filesystem(source.url)
    copied = 0
    for spec in sharded_arrays(source.schema):
        key = shard_key(source.array(spec.name), shard)
        destination = Path(local.url, *key.split("/"))
        try:
            copied += _copy_object(fs, f"{root}/{key}", destination)
        except FileNotFoundError:
            destination.unlink(missing_ok=True)
    return copied


def stage_node(store_url: str, local_dir: str | os.PathLike[str], node: int, nodes: int, *,
               allow_partial: bool = False) -> StageReport:
    """Copy node `node`'s shards (of `nodes`) of the store at `store_url` into `local_dir`.

    Shards of this node that are not done in the source are refused (`IncompleteStoreError`,
    naming them) before anything is copied, unless `allow_partial`: then they are left out
    and listed in the report."""
    began = time.perf_counter()
    source = open_stemdl_store(store_url, mode="r")
    assigned, not_done = node_plan(source, node, nodes)
    if not_done and not allow_partial:
        raise IncompleteStoreError(
            f"{source.url} is incomplete: shards {listing(not_done)} of node {node}/{nodes} are "
            "not done; finish it with the same `stemdl simulate` command (it resumes), or pass "
            "--allow-partial to stage only the shards that are done")
    local_url = normalize_store_url(str(local_dir))
    if not is_local(local_url):
        raise StoreError(f"local_dir must be a local path, got {local_dir!r}")
    local_path = Path(local_url)
    report = StageReport(source.url, local_url, node, nodes, shards_assigned=assigned)
    local_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(local_path) + ".lock"):
        local = _open_or_create(source, local_path, node, nodes, assigned)
        source_done, local_done = source.done_mask(), local.done_mask()
        split_of = split_by_material(source.attrs)
        for shard in assigned:
            if not source_done[shard]:
                report.shards_missing_in_source.append(shard)
            elif local_done[shard]:
                report.shards_already_present.append(shard)
            else:
                report.bytes_copied += _copy_verified(source, local, shard, split_of)
                report.shards_copied.append(shard)
    report.elapsed_s = time.perf_counter() - began
    return report


def node_plan(source: StemdlStore, node: int, nodes: int) -> tuple[list[int], list[int]]:
    """The shards of node `node` of `nodes` and those of them not done in `source`, before
    anything is copied: reads the done mask only (`benchmarks/metadata_scale.py` times it at
    10⁷ samples)."""
    if source.attrs.get("staged"):
        raise StoreError(f"{source.url} is itself a staged store; stage from the full store")
    assigned = shards_for_node(source.num_shards, node, nodes)
    done = source.done_mask()
    return assigned, [k for k in assigned if not done[k]]


def _copy_verified(source: StemdlStore, local: StemdlStore, shard: int,
                   split_of: dict[str, str]) -> int:
    """Copy one shard, verify it, retry once, and only then mark it done locally."""
    problems: list[object] = []
    for _attempt in range(2):
        copied = _copy_shard(source, local, shard)
        problems, _ = verify_shard(local, shard, split_of)
        if not problems:
            local.set_done(shard, True)
            return copied
    raise StageError(f"shard {shard} does not verify after copying twice from {source.url}: "
                     + "; ".join(str(p) for p in problems[:3]))

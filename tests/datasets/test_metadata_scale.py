"""The core of `benchmarks/metadata_scale.py` at small N: the metadata of a store built without
simulating is what the real code reads, every timed operation gives the right answer on it
(absent and done), and none grows faster than linearly in memory or far faster in time.

The figures at 10⁵–10⁷ samples come from the benchmark itself (benchmarks/RESULTS.md); here
two sizes 10× apart, in this process, with tracemalloc for memory.
"""

from __future__ import annotations

import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from benchmarks import metadata_scale
from stemdl.datasets.inspect import summarize
from stemdl.datasets.partition import shards_for_node
from stemdl.datasets.record_scan import scan_fields
from stemdl.datasets.records import read_fields
from stemdl.datasets.storage import shard_key
from stemdl.datasets.store import open_stemdl_store

SIZES = (2_000, 20_000)
SHARD = 64


REPEATS = 3


def _timed(op: str, url: str) -> tuple[dict, float, int]:
    """The answer, the fastest of REPEATS untraced runs and the peak memory of a traced one.

    The fastest run, not one run: a single timing on a busy 2-core machine once read 16 s for
    an operation that takes 0.2 s (another job had the cores), which no growth law explains.
    Timing without tracemalloc, whose hooks slow allocation-heavy code unevenly."""
    seconds = []
    for _ in range(REPEATS):
        began = time.perf_counter()
        result = metadata_scale.run_op(op, url)
        seconds.append(time.perf_counter() - began)
    tracemalloc.start()
    metadata_scale.run_op(op, url)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, min(seconds), peak


@pytest.fixture(scope="module")
def measured(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    source = open_stemdl_store(str(tiny_store))
    work = tmp_path_factory.mktemp("metadata-scale")
    out: dict = {}
    for n in SIZES:
        url = str(work / f"scale-{n}.zarr")
        store = metadata_scale.plan_scaled(source, url, n, SHARD)
        for state in ("absent", "done"):
            if state == "done":
                metadata_scale.fill_done(store, source)
            for op in (*metadata_scale.OPS, metadata_scale.BASELINE):
                metadata_scale.run_op("open", url)
                out[n, state, op] = _timed(op, url)
        out[n, "url"] = url
    return out


def test_built_store_reads_as_written(measured: dict, tiny_store: Path) -> None:
    """Templates and hard-linked shards read back as the source's records, in order."""
    n = SIZES[0]
    store = open_stemdl_store(measured[n, "url"])
    source = open_stemdl_store(str(tiny_store))
    assert store.num_samples == n and store.num_shards == -(-n // SHARD)
    assert store.done_mask().all()
    got = read_fields(store, ["material_id", "status", "cbed_crc32c", "index"])
    want = read_fields(source, ["material_id", "status", "cbed_crc32c"])
    # Shard k is template k mod T (the last shard is written, not linked); a template's
    # samples are the source's, round-robin from its first global index.
    templates, last = -(-source.num_samples // SHARD), store.num_shards - 1
    shard = np.arange(n) // SHARD
    template = np.where(shard == last, shard, shard % templates)
    written_index = template * SHARD + np.arange(n) % SHARD
    for name in ("material_id", "status", "cbed_crc32c"):
        assert np.array_equal(got[name], want[name][written_index % source.num_samples]), name
    assert np.array_equal(got["index"], written_index)


def test_operations_answer_right(measured: dict) -> None:
    for n in SIZES:
        shards = -(-n // SHARD)
        node = len(shards_for_node(shards, metadata_scale.STAGE_NODE, metadata_scale.STAGE_NODES))
        inspect, _, _ = measured[n, "done", "inspect"]
        summary = summarize(measured[n, "url"])
        assert inspect["samples_ok"] == summary["samples_ok"] == n
        assert sum(inspect["per_split"].values()) == n and inspect["shards_done"] == shards
        assert measured[n, "done", "verify plan"][0] == {"to_check": shards, "incomplete": 0,
                                                         "problems": []}
        assert measured[n, "absent", "verify plan"][0]["incomplete"] == shards
        assert measured[n, "done", "stage plan"][0] == {"assigned": node, "not_done": 0}
        assert measured[n, "absent", "stage plan"][0] == {"assigned": node, "not_done": node}
        assert measured[n, "absent", "inspect"][0]["shards_done"] == 0
        partition = measured[n, "done", "loader partition"][0]
        assert partition["rank_shards"] == 1 and sum(partition["worker_shards"]) == 1
        assert partition["rank_samples"] > 0  # rank 0's shard holds training samples
        assert measured[n, "absent", "loader partition"][0]["rank_shards"] == 0
        assert measured[n, "done", metadata_scale.BASELINE][0] == {"done": shards}


def test_growth_is_at_most_linear(measured: dict) -> None:
    """Memory grows at most as N (plus a constant), time not far faster than N, and nothing
    is near the 10 s / 2 GiB the benchmark holds at 10⁷ samples."""
    small, large = SIZES
    factor = large / small
    for state in ("absent", "done"):
        for op in (*metadata_scale.OPS, metadata_scale.BASELINE):
            _, t_small, m_small = measured[small, state, op]
            _, t_large, m_large = measured[large, state, op]
            assert m_large <= factor * m_small + 8 * 2**20, (state, op, m_small, m_large)
            assert t_large <= 3 * factor * t_small + 1.0, (state, op, t_small, t_large)
            assert t_large < metadata_scale.LIMIT_S and m_large < metadata_scale.LIMIT_BYTES / 8


def test_fast_readers_agree_with_zarr(measured: dict, tmp_path: Path) -> None:
    """The done mask read without Zarr and the shard-at-a-time record scan give what Zarr
    gives; a flag set to 0 (Zarr deletes the chunk) or a damaged flag file is not done."""
    url = tmp_path / "copy.zarr"
    shutil.copytree(measured[SIZES[0], "url"], url)
    store = open_stemdl_store(str(url), mode="r+")
    done = store.array("shard_done")
    done[3] = 0
    (url / shard_key(done, 5)).write_bytes(b"damaged")
    flags = store.done_mask()
    assert flags.sum() == store.num_shards - 2 and not flags[3] and not flags[5]
    names = ["status", "split", "material_id", "cbed_crc32c", "index", "zone_axis"]
    shards = [0, 7, store.num_shards - 1]
    scanned = dict(scan_fields(store, names, shards))
    assert list(scanned) == shards
    for shard in shards:
        start, stop = store.shard_range(shard)
        want = read_fields(store, names, slice(start, stop))
        for name in names:
            assert np.array_equal(scanned[shard][name], want[name]), (shard, name)

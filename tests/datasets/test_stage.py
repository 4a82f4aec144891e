"""Node-local staging: balanced assignment, valid verified stores, once per node, re-runs skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from stemdl.datasets.inspect import read_sample
from stemdl.datasets.partition import count_samples, shards_for_node
from stemdl.datasets.plan import plan_store
from stemdl.datasets.stage import StageError, stage_node
from stemdl.datasets.storage import StoreError
from stemdl.datasets.store import open_stemdl_store
from stemdl.datasets.verify import verify_store

REPO = Path(__file__).resolve().parents[2]

_STAGE_SCRIPT = """
import dataclasses, json, os, sys, time
from stemdl.datasets.stage import stage_node
open(sys.argv[6], "w").close()  # imported and ready
while not os.path.exists(sys.argv[5]):  # start together: both ranks race for the node
    time.sleep(0.005)
report = stage_node(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
print(json.dumps(dataclasses.asdict(report)))
"""


@pytest.fixture
def source(tmp_path_factory: pytest.TempPathFactory, synthetic_store) -> Path:
    return synthetic_store(num_samples=30, shard_size=4)


@pytest.mark.parametrize(("num_shards", "nodes"), [(8, 3), (3, 5), (100, 7), (1, 1)])
def test_assignment_is_a_balanced_partition(num_shards: int, nodes: int) -> None:
    parts = [shards_for_node(num_shards, node, nodes) for node in range(nodes)]
    assert sorted(k for part in parts for k in part) == list(range(num_shards))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == [shards_for_node(num_shards, node, nodes) for node in range(nodes)]


def test_staged_store_is_valid_and_holds_only_its_shards(source: Path, tmp_path: Path, synthetic) -> None:
    local = tmp_path / "node1"
    report = stage_node(str(source), str(local), 1, 3)
    assert report.shards_assigned == [1, 4, 7] and report.shards_copied == [1, 4, 7]
    assert report.bytes_copied > 0

    check = verify_store(str(local))
    assert check.complete, check.summary()
    assert check.shards_done == [1, 4, 7] and check.shards_not_local == [0, 2, 3, 5, 6]
    staged = dict(zarr.open_group(str(local), mode="r").attrs)["staged"]
    assert staged["node"] == 1 and staged["nodes"] == 3 and staged["shards"] == [1, 4, 7]
    assert staged["sample_ranges"] == [[4, 8], [16, 20], [28, 30]]
    assert not (local / "cbed" / "c" / "0").exists()  # unassigned shards are absent
    for index in (5, 29):  # same global indices, same bytes
        a, b = read_sample(str(local), index), read_sample(str(source), index)
        np.testing.assert_array_equal(a["cbed"], b["cbed"])
        assert a["record"].material_id == b["record"].material_id
    assert sum(count_samples(str(local), None, r, 2) for r in range(2)) == 10

    again = stage_node(str(source), str(local), 1, 3)
    assert again.shards_copied == [] and again.shards_already_present == [1, 4, 7]
    with pytest.raises(StoreError, match="refusing to stage node 0/3"):
        stage_node(str(source), str(local), 0, 3)
    with pytest.raises(ValueError, match="node must be in"):
        stage_node(str(source), str(tmp_path / "x"), 3, 3)
    with pytest.raises(StoreError, match="local path"):
        stage_node(str(source), "memory://x/y", 0, 3)
    config = open_stemdl_store(str(source)).config
    with pytest.raises(StoreError, match="staged copy"):
        plan_store(config, str(local), synthetic.build_catalogue(config.simulation))


def test_two_local_ranks_stage_once(source: Path, tmp_path: Path) -> None:
    local = tmp_path / "node0"
    go = tmp_path / "go"
    env = dict(os.environ)
    ready = [tmp_path / f"ready{rank}" for rank in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _STAGE_SCRIPT, str(source), str(local),
                               "0", "2", str(go), str(ready[rank])], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both have imported stemdl: release them together
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    copied = sorted(k for r in reports for k in r["shards_copied"])
    assert copied == [0, 2, 4, 6]  # every shard copied exactly once across both ranks
    assert sorted(len(r["shards_copied"]) for r in reports) == [0, 4]
    assert verify_store(str(local)).complete


def test_damaged_source_is_not_staged_as_good(source: Path, tmp_path: Path, flip_byte) -> None:
    import shutil

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(source, damaged)
    flip_byte(damaged / "cbed" / "c" / "2" / "0" / "0" / "0", 200)
    local = tmp_path / "node2"
    with pytest.raises(StageError, match=r"shard 2 does not verify.*cbed/c/2/0/0/0"):
        stage_node(str(damaged), str(local), 0, 2)
    report = verify_store(str(local))
    assert 2 not in report.shards_done  # never marked done locally

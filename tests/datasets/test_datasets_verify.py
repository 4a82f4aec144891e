"""verify_store finds and names what is wrong; repair re-simulates it bit-identically."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from stemdl.datasets.checksum import sample_crc32c
from stemdl.datasets.schema import column_index
from stemdl.datasets.storage import file_url, shard_key
from stemdl.datasets.store import open_stemdl_store
from stemdl.datasets.verify import verify_store


@pytest.fixture
def store(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, synthetic_store) -> Path:
    """A private copy of a complete synthetic store (10 samples, shards of 4)."""
    source = synthetic_store(num_samples=10, shard_size=4)
    copy = tmp_path / "store.zarr"
    shutil.copytree(source, copy)
    return copy


def test_clean_store_verifies(store: Path) -> None:
    report = verify_store(str(store))
    assert report.complete and report.ok, report.summary()
    assert report.shards_done == [0, 1, 2]


@pytest.mark.parametrize(("array", "where"), [("cbed", "chunk"), ("cbed", "index"),
                                              ("record_float", "chunk"), ("record_str", "chunk"),
                                              ("atoms", "index")])
def test_flipped_byte_is_named_and_repaired(store: Path, array: str, where: str, flip_byte, store_files, synthetic) -> None:
    original = store_files(store)
    stemdl_store = open_stemdl_store(str(store))
    shard_file = Path(file_url(stemdl_store.url, shard_key(stemdl_store.array(array), 1)))
    assert shard_file.is_file()
    size = shard_file.stat().st_size
    flip_byte(shard_file, size // 3 if where == "chunk" else size - 10)

    report = verify_store(str(store))
    assert not report.ok
    assert report.bad_shards == [1]
    assert str(shard_file) in {p.path for p in report.problems}, report.summary()
    assert str(shard_file) in report.summary()

    repaired = verify_store(str(store), repair=True, simulator=synthetic)
    assert repaired.repaired == [1] and repaired.ok, repaired.summary()
    assert verify_store(str(store)).complete
    assert store_files(store) == original  # bit-identical to before the damage


def test_checksum_mismatch_and_bad_values_are_reported(store: Path) -> None:
    group = zarr.open_group(str(store), mode="r+")
    # A sample overwritten behind the store's back: decodes fine, checksum no longer matches.
    cbed = group["cbed"][:4]
    cbed[2, 0, 0, 0] += np.float16(0.25)
    group["cbed"][:4] = cbed
    # A NaN written together with a matching checksum (a writer bug): caught by value checks.
    potential = group["potential"][4:8]
    potential[1, 0, 3, 3] = np.nan
    group["potential"][4:8] = potential
    ints = group["record_int"][4:8]
    ints[1, column_index("record_int")["potential_crc32c"]] = sample_crc32c(potential[1])
    group["record_int"][4:8] = ints
    # A sample whose split disagrees with its material's split.
    column = column_index("record_str")["split"]
    strings = group["record_str"][8:10]
    strings[0, column] = "test" if strings[0, column] != "test" else "train"
    group["record_str"][8:10] = strings

    report = verify_store(str(store))
    messages = [str(p) for p in report.problems]
    assert any("sample 2: CRC-32C" in m and "cbed/c/0/0/0/0" in m for m in messages), messages
    assert any("sample 5 has NaN or inf" in m for m in messages), messages
    assert any("sample 8: material" in m and "split table" in m and "record_str/c/2/0" in m
               for m in messages), messages
    assert report.bad_shards == [0, 1, 2]


def test_incomplete_and_broken_schema_are_reported(store: Path, synthetic) -> None:
    zarr.open_group(str(store), mode="r+")["shard_done"][2] = 0
    report = verify_store(str(store))
    assert report.ok and not report.complete and report.shards_incomplete == [2]
    assert verify_store(str(store), repair=True, simulator=synthetic).complete

    # Column names out of order would make every packed read wrong: refused, named.
    group = zarr.open_group(str(store), mode="r+")
    names = group["record_float_field"][:]
    group["record_float_field"][:] = np.concatenate([names[1:], names[:1]])
    report = verify_store(str(store))
    assert any(p.array == "record_float_field" for p in report.problems), report.summary()

    shutil.rmtree(store / "record_float")
    report = verify_store(str(store))
    assert any(p.array == "record_float" and "missing" in p.message for p in report.problems)


def test_not_a_store_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    report = verify_store(str(tmp_path / "nothing-here"))
    assert not report.ok and "no store" in report.summary()


def test_repair_with_the_real_simulator_restores_the_reference(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, flip_byte, store_files, tiny_store) -> None:
    reference = tiny_store
    store = tmp_path / "real.zarr"
    shutil.copytree(reference, store)
    shard_file = store / "cbed" / "c" / "3" / "0" / "0" / "0"
    flip_byte(shard_file, shard_file.stat().st_size // 2)
    report = verify_store(str(store))
    assert report.bad_shards == [3] and str(shard_file) in report.summary()
    repaired = verify_store(str(store), repair=True)  # config from the store's attributes
    assert repaired.repaired == [3] and repaired.complete, repaired.summary()
    assert store_files(store) == store_files(reference)


@pytest.mark.parametrize("damage", ["garbage", "deleted"])
def test_array_metadata_is_named_and_rebuilt_from_the_stored_config(store: Path,
                                                                     damage: str, run_python, store_files) -> None:
    original = store_files(store)
    document = store / "cbed" / "zarr.json"
    if damage == "garbage":
        document.write_text('{"zarr_format": 3, "node_type": "arr')
    else:
        document.unlink()
    result = run_python(["-m", "stemdl.pipeline", "verify", str(store)])
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"array cbed ({document}): metadata of array 'cbed'" in result.stdout, result.stdout
    repaired = run_python(["-m", "stemdl.pipeline", "verify", str(store), "--repair"])
    assert repaired.returncode == 0, (repaired.stdout, repaired.stderr[-3000:])
    assert f"rebuilt array metadata {document}" in repaired.stdout, repaired.stdout
    assert store_files(store) == original  # the same bytes: no data file was touched


def test_repair_is_refused_while_another_client_holds_the_store(store: Path, flip_byte,
                                                                store_files, run_python) -> None:
    """A repair writes, so it takes the lock `generate` takes: while this process holds it (as a
    generating client would), `verify --repair` exits naming the holder and writes nothing; a
    plain check still runs (it only reads)."""
    import os

    from stemdl.datasets.store_lock import store_lock

    stemdl_store = open_stemdl_store(str(store))
    shard_file = Path(file_url(stemdl_store.url, shard_key(stemdl_store.array("cbed"), 1)))
    flip_byte(shard_file, shard_file.stat().st_size // 3)
    damaged = store_files(store)
    with store_lock(str(store), "generating"):
        refused = run_python(["-m", "stemdl.pipeline", "verify", str(store), "--repair"])
        checked = run_python(["-m", "stemdl.pipeline", "verify", str(store)])
    assert refused.returncode == 2, (refused.stdout, refused.stderr[-3000:])
    assert f"{store} is locked: generating by pid {os.getpid()}" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert store_files(store) == damaged  # nothing written, the damage still there to repair
    assert checked.returncode == 1 and str(shard_file) in checked.stdout, checked.stdout

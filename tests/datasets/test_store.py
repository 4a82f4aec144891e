"""The store: round trip of samples, self-description, config refusal, untrusted URLs, sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from stemdl.configs import config_from_dict, load_config
from stemdl.datasets.checksum import sample_crc32c
from stemdl.datasets.estimate import storage_estimate
from stemdl.datasets.inspect import read_sample
from stemdl.datasets.plan import ConfigMismatchError, plan_store
from stemdl.datasets.records import read_field, read_fields, read_record
from stemdl.datasets.schema import FIELDS, SCHEMA_VERSION, STATUS_OK, store_schema
from stemdl.datasets.shard import simulate_shard
from stemdl.datasets.storage import StoreError
from stemdl.datasets.store import open_stemdl_store
from stemdl.datasets.verify import verify_store
from stemdl.simulate.sample import SampleRecord


def _fill(synthetic, config, url: str) -> None:
    plan_store(config, url, synthetic.build_catalogue(config.simulation))
    for shard in range(config.dataset.num_shards):
        simulate_shard(config, url, shard, simulator=synthetic)


@pytest.mark.parametrize("cbed_dtype", ["float16", "float32"])
def test_round_trip_values_dtypes_and_every_record_field(tmp_path: Path, cbed_dtype: str, assert_records_equal, small_config, synthetic) -> None:
    config = small_config(num_samples=7, shard_size=3,
                             cbed={"dtype": cbed_dtype, "codec": "blosc-zstd", "level": 5})
    url = str(tmp_path / "store.zarr")
    _fill(synthetic, config, url)
    for index in range(7):
        expected = synthetic.simulate_sample(config.simulation, index)
        stored = read_sample(url, index)
        assert stored["status"] == STATUS_OK
        assert stored["cbed"].dtype == np.dtype(cbed_dtype)
        assert stored["potential"].dtype == np.float32
        np.testing.assert_array_equal(stored["cbed"], expected.cbed.astype(cbed_dtype))
        np.testing.assert_array_equal(stored["potential"], expected.potential)
        assert_records_equal(stored["record"], expected.record)
    group = zarr.open_group(url, mode="r")
    assert group["cbed"].shards == (3, 16, 24, 24) and group["cbed"].chunks == (1, 16, 24, 24)
    assert list(group["shard_done"][:]) == [1, 1, 1]
    # The stored checksum is the CRC-32C of the stored bytes, recomputable by any reader.
    store = open_stemdl_store(url)
    assert int(read_field(store, "cbed_crc32c", [4])[0]) == sample_crc32c(group["cbed"][4])
    assert verify_store(url).complete
    # The accessor reads any field of any rows, in the field's own shape.
    np.testing.assert_array_equal(read_field(store, "index"), np.arange(7))
    assert read_field(store, "cell_a", [1, 2]).shape == (2, 3, 3)
    assert list(read_field(store, "split", slice(0, 3))) == [
        synthetic.simulate_sample(config.simulation, i).record.split for i in range(3)]
    assert_records_equal(read_record(store, 5),
                         synthetic.simulate_sample(config.simulation, 5).record)
    empty = read_fields(store, ["status", "split"], np.zeros(0, dtype=np.int64))
    assert empty["status"].shape == (0,) and empty["split"].shape == (0,)
    with pytest.raises(KeyError, match="no per-sample field 'energy'"):
        read_field(store, "energy")


def test_store_is_self_describing(tmp_path: Path, small_config, synthetic) -> None:
    config = small_config(num_samples=4, shard_size=2)
    url = str(tmp_path / "store.zarr")
    _fill(synthetic, config, url)
    group = zarr.open_group(url, mode="r")
    attrs = dict(group.attrs)
    assert attrs["schema_version"] == SCHEMA_VERSION
    assert config_from_dict(attrs["config"]) == config
    assert set(attrs["software"]) >= {"zarr", "abtem", "numpy", "python"}
    assert attrs["created_utc"].endswith("+00:00")
    assert attrs["units"]["energy_ev"] == "eV" and attrs["units"]["cbed"] == "1"
    assert "CRC-32C" in attrs["checksum"]
    assert set(attrs["splits"]) == {"train", "validation", "test"}
    ds = xr.open_zarr(url, consolidated=False)
    assert ds["cbed"].dims == ("sample", "pattern", "ky", "kx")
    assert ds["potential"].dims == ("sample", "depth_section", "y", "x")
    assert ds["atoms"].dims == ("sample", "atom", "atom_component")
    assert list(ds["atom_component"].values) == ["Z", "x", "y", "z"]
    assert ds["record_float"].dims == ("sample", "record_float_field")
    assert ds["shard_done"].dims == ("shard",)
    assert "long_name" in ds["cbed"].attrs
    # Packed columns are labelled: select by name, units per column.
    floats = list(ds["record_float_field"].values)
    assert floats == ds["record_float"].attrs["columns"]
    assert ds["record_float"].attrs["column_units"][floats.index("semiangle_mrad")] == "mrad"
    np.testing.assert_array_equal(ds["record_int"].sel(record_int_field="index").values,
                                  np.arange(4))
    assert ds["record_float"].sel(record_float_field="extent_a_x").values[0] == 12.0
    assert ds["record_str"].sel(record_str_field="split").values[0] == "train"
    # Every array the schema promises is in the store, and every SampleRecord field is a
    # labelled column (or the atoms / probe positions array).
    assert set(store_schema(config)) == set(group.array_keys())
    labels = {str(v) for coord in ("record_int_field", "record_float_field", "record_str_field")
              for v in ds[coord].values}
    for name in SampleRecord.field_names():
        layout = FIELDS[name]
        assert layout.array in group.array_keys()
        assert set(layout.columns) <= labels, name
    # A full store is exactly the files the estimate counts: (arrays + 1) per shard + the rest.
    files = [p for p in Path(url).rglob("*") if p.is_file()]
    assert len(files) == storage_estimate(config).total_files


def test_another_simulation_config_is_refused_and_store_untouched(tmp_path: Path, small_config, synthetic) -> None:
    config = small_config(num_samples=4, shard_size=2)
    url = str(tmp_path / "store.zarr")
    _fill(synthetic, config, url)
    before = {p: p.read_bytes() for p in Path(url).rglob("*") if p.is_file()}
    data = config.to_dict()
    data["simulation"]["energy_ev"] = {"min": 120000.0, "max": 120000.0}
    other = config_from_dict(data)
    with pytest.raises(ConfigMismatchError, match=r"simulation\.energy_ev\.max: store has 100000"):
        plan_store(other, url, synthetic.build_catalogue(other.simulation))
    with pytest.raises(ValueError, match="another config"):
        simulate_shard(other, url, 0, simulator=synthetic)
    after = {p: p.read_bytes() for p in Path(url).rglob("*") if p.is_file()}
    assert after == before
    # Loader/model/train sections may differ.
    data = config.to_dict()
    data["train"]["lr"] = 0.5
    data["loader"]["shuffle_buffer"] = 3
    plan_store(config_from_dict(data), url, synthetic.build_catalogue(config.simulation))


def test_bad_store_urls_get_clear_errors(tmp_path: Path, small_config, synthetic) -> None:
    config = small_config(num_samples=2, shard_size=1)
    catalogue = synthetic.build_catalogue(config.simulation)
    with pytest.raises(StoreError, match="protocol 'nosuchproto'"):
        plan_store(config, "nosuchproto://bucket/x.zarr", catalogue)
    with pytest.raises(StoreError, match="empty"):
        plan_store(config, "  ", catalogue)
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    with pytest.raises(StoreError, match=r"not a directory|not empty"):
        plan_store(config, str(a_file), catalogue)
    assert a_file.read_text() == "keep me"
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(StoreError, match="not empty and is not a Zarr store"):
        plan_store(config, str(other), catalogue)
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"]
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w").attrs["owner"] = "someone else"
    with pytest.raises(StoreError, match="not a stemdl store"):
        plan_store(config, str(foreign), catalogue)
    with pytest.raises(StoreError, match=r"no store at|no Zarr"):
        open_stemdl_store(str(tmp_path / "missing.zarr"))


def test_fsspec_url_store(tmp_path: Path, small_config, synthetic) -> None:
    """Any fsspec URL works: here memory:// (in-process) and file://."""
    config = small_config(num_samples=5, shard_size=2)
    for url in ("memory://stemdl-test/store.zarr", f"file://{tmp_path}/store.zarr"):
        _fill(synthetic, config, url)
        report = verify_store(url)
        assert report.complete, report.summary()
        np.testing.assert_array_equal(read_sample(url, 3)["potential"],
                                      synthetic.simulate_sample(config.simulation, 3).potential)


def test_interrupted_planning_is_planned_again(tmp_path: Path, small_config, synthetic) -> None:
    config = small_config(num_samples=4, shard_size=2)
    url = tmp_path / "store.zarr"
    plan_store(config, str(url), synthetic.build_catalogue(config.simulation))
    doc = json.loads((url / "zarr.json").read_text())
    doc["attributes"]["planning_complete"] = False
    (url / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="planning of this store did not complete"):
        open_stemdl_store(str(url))
    _fill(synthetic, config, str(url))
    assert verify_store(str(url)).complete


def test_paper_storage_estimate() -> None:
    """The issue's target: a 10⁶-sample paper store is on the order of 10⁵ files, not 10⁹."""
    estimate = storage_estimate(load_config("paper"))
    assert estimate.num_shards == 15_625
    assert 10_000 <= estimate.total_files < 200_000, estimate.describe()
    assert estimate.num_sharded_arrays <= 8
    assert estimate.cbed_shard_file_bytes == pytest.approx(64 * 512 * 2**20, rel=1e-6)
    assert estimate.data_files == (estimate.num_sharded_arrays + 1) * 15_625 + 4
    assert 0.5e15 < estimate.total_bytes < 0.6e15
    assert "15,625 shards" in estimate.describe()


def test_store_of_another_schema_version_is_refused(tmp_path: Path, small_config, synthetic) -> None:
    config = small_config(num_samples=2, shard_size=1)
    url = tmp_path / "store.zarr"
    _fill(synthetic, config, str(url))
    doc = json.loads((url / "zarr.json").read_text())
    doc["attributes"]["schema_version"] = 1
    (url / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=rf"schema version 1, this code reads version {SCHEMA_VERSION}.*regenerate"):
        open_stemdl_store(str(url))
    with pytest.raises(StoreError, match="schema version 1"):
        plan_store(config, str(url), synthetic.build_catalogue(config.simulation))
    report = verify_store(str(url))
    assert not report.ok and "schema version 1" in report.summary()

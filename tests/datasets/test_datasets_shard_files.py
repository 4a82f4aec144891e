"""The loader's direct shard-file reader agrees with Zarr for every configured codec, whether
it fetches a file whole or by byte ranges, and refuses damaged bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from stemdl.datasets import shard_files
from stemdl.datasets.plan import plan_store
from stemdl.datasets.shard import simulate_shard
from stemdl.datasets.shard_files import ShardDecodeError, ShardFileDecoder, ShardFileReader
from stemdl.datasets.storage import file_url, filesystem, shard_key
from stemdl.datasets.store import open_stemdl_store


@pytest.mark.parametrize(("dtype", "codec", "level"), [
    ("float16", "zstd", 3), ("float32", "zstd", 1), ("float16", "blosc-zstd", 5),
    ("float32", "blosc-lz4", 9), ("float16", "none", 0)])
@pytest.mark.parametrize("whole_file_bytes", [shard_files.WHOLE_FILE_BYTES, 0])
def test_direct_decode_matches_zarr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str,
                                    codec: str, level: int, whole_file_bytes: int, small_config, synthetic) -> None:
    """whole_file_bytes 0: every file is read as its index, then a byte range per sample."""
    monkeypatch.setattr(shard_files, "WHOLE_FILE_BYTES", whole_file_bytes)
    config = small_config(num_samples=7, shard_size=3,
                             cbed={"dtype": dtype, "codec": codec, "level": level},
                             potential={"dtype": dtype, "codec": codec, "level": level})
    url = str(tmp_path / "store.zarr")
    plan_store(config, url, synthetic.build_catalogue(config.simulation))
    for shard in range(3):
        simulate_shard(config, url, shard, simulator=synthetic)
    store = open_stemdl_store(url)
    fs, _ = filesystem(url)
    for name in ("cbed", "potential"):
        array = store.array(name)
        decoder = ShardFileDecoder(array)
        assert decoder.supported
        for shard, (start, stop) in enumerate([(0, 3), (3, 6), (6, 7)]):
            reader = ShardFileReader(decoder, fs, file_url(url, shard_key(array, shard)))
            assert (reader._data is None) == (whole_file_bytes == 0)
            for row in reversed(range(stop - start)):
                decoded = reader.sample(row)
                np.testing.assert_array_equal(decoded, np.asarray(array[start + row]))
                assert decoded.dtype == np.dtype(dtype)
    # A missing shard file is lost data (a reader opens only done shards), never fill values.
    nowhere = str(tmp_path / "nowhere" / "c" / "9")
    with pytest.raises(ShardDecodeError, match=rf"{nowhere}: shard file missing"):
        ShardFileReader(decoder, fs, nowhere)


@pytest.mark.parametrize("whole_file_bytes", [shard_files.WHOLE_FILE_BYTES, 0])
def test_damaged_bytes_raise_instead_of_returning_numbers(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, whole_file_bytes: int, synthetic_store) -> None:
    monkeypatch.setattr(shard_files, "WHOLE_FILE_BYTES", whole_file_bytes)
    store = tmp_path / "store.zarr"  # a private copy: the session's store is shared
    shutil.copytree(synthetic_store(num_samples=10,
                                       shard_size=4), store)
    stemdl_store = open_stemdl_store(str(store))
    array = stemdl_store.array("cbed")
    path = Path(file_url(stemdl_store.url, shard_key(array, 1)))
    data = path.read_bytes()
    decoder = ShardFileDecoder(array)
    fs, _ = filesystem(stemdl_store.url)
    for offset in (100, len(data) // 2, len(data) - 8):  # chunk bytes and the index
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(ShardDecodeError, match="checksum mismatch") as error:
            reader = ShardFileReader(decoder, fs, str(path))
            for row in range(4):
                reader.sample(row)
        assert str(path) in str(error.value)
    path.write_bytes(data[: len(data) // 2])  # truncated: the index is gone
    with pytest.raises(ShardDecodeError, match="checksum mismatch"):
        ShardFileReader(decoder, fs, str(path))

"""The loader's direct shard-file decoder agrees with Zarr for every configured codec."""

from __future__ import annotations

from pathlib import Path

import datasets_fixtures as fx
import numpy as np
import pytest

from datasets.plan import open_stemdl_store, plan_store
from datasets.shard import simulate_shard
from datasets.shard_files import ShardDecodeError, ShardFileDecoder
from datasets.storage import file_url, shard_key


@pytest.mark.parametrize(("dtype", "codec", "level"), [
    ("float16", "zstd", 3), ("float32", "zstd", 1), ("float16", "blosc-zstd", 5),
    ("float32", "blosc-lz4", 9), ("float16", "none", 0)])
def test_direct_decode_matches_zarr(tmp_path: Path, dtype: str, codec: str, level: int) -> None:
    config = fx.small_config(num_samples=7, shard_size=3,
                             cbed={"dtype": dtype, "codec": codec, "level": level},
                             potential={"dtype": dtype, "codec": codec, "level": level})
    url = str(tmp_path / "store.zarr")
    plan_store(config, url, fx.build_catalogue(config.simulation))
    for shard in range(3):
        simulate_shard(config, url, shard, simulator="datasets_fixtures")
    info = open_stemdl_store(url)
    for name in ("cbed", "potential"):
        array = info.array(name)
        decoder = ShardFileDecoder(array)
        assert decoder.supported
        for shard, (start, stop) in enumerate([(0, 3), (3, 6), (6, 7)]):
            path = file_url(url, shard_key(array, shard))
            data = Path(path).read_bytes()
            rows = np.arange(stop - start)[::-1]
            decoded = decoder.decode(data, rows, path)
            np.testing.assert_array_equal(decoded, np.asarray(array[start:stop])[rows])
            assert decoded.dtype == np.dtype(dtype)


def test_damaged_bytes_raise_instead_of_returning_numbers(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    store = fx.synthetic_store(tmp_path_factory.getbasetemp(), num_samples=10, shard_size=4)
    info = open_stemdl_store(str(store))
    array = info.array("cbed")
    path = file_url(info.url, shard_key(array, 1))
    data = bytearray(Path(path).read_bytes())
    decoder = ShardFileDecoder(array)
    for offset in (100, len(data) // 2, len(data) - 8):  # chunk bytes and the index
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        with pytest.raises(ShardDecodeError, match="checksum mismatch"):
            decoder.decode(bytes(damaged), np.arange(4), path)

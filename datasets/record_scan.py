"""Per-sample record columns of many shards, a shard at a time, decoded without Zarr.

Why: the record tables (`record_int`, `record_str`, …) have one chunk per sample, and Zarr's
async codec pipeline costs ~0.2 ms a chunk whatever the selection: reading `status`,
`split` and `material_id` of 10⁶ samples took ~400 s (`benchmarks/metadata_scale.py`). Here
each shard file is fetched in one request and its chunks are decoded in a plain loop (crc32c
checked, zstd decompressed; strings by numcodecs' VLenUTF8, the codec Zarr itself uses), about
ten times faster, and a caller that aggregates (`datasets/inspect.summarize`) holds one shard's
columns at a time. The layouts handled are the ones `datasets/storage.create_array` writes
(sharding codec, index at the end with crc32c, chunks of one sample: bytes or vlen-utf8, then
zstd, then crc32c); any other, or a shard the decoder cannot read, is read through Zarr
(`datasets.records.read_fields`), which raises as it always did on a damaged file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import crc32c
import numpy as np
import zarr
from numcodecs import VLenUTF8
from numcodecs.zstd import decompress
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, VLenUTF8Codec, ZstdCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

from stemdl.datasets.records import Columns, read_fields, unpack
from stemdl.datasets.schema import FIELDS, TABLES
from stemdl.datasets.storage import file_url, filesystem, shard_key
from stemdl.datasets.store import StemdlStore

_CRC = 4
_EMPTY = 2**64 - 1


class _Undecodable(Exception):
    """This shard is left to Zarr (which names the damage)."""


def _layout(array: zarr.Array) -> str | None:
    """'bytes' or 'vlen-utf8' when `array` is a record table this module decodes."""
    codecs = array.metadata.codecs
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sharding = codecs[0]
    inner, index = list(sharding.codecs), list(sharding.index_codecs)
    if (sharding.index_location != ShardingCodecIndexLocation.end or len(index) != 2
            or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec)
            or tuple(sharding.chunk_shape) != (1, *array.shape[1:]) or len(inner) != 3
            or not isinstance(inner[1], ZstdCodec) or not isinstance(inner[2], Crc32cCodec)):
        return None
    if isinstance(inner[0], VLenUTF8Codec):
        return "vlen-utf8"
    little = getattr(getattr(inner[0], "endian", None), "value", None) in ("little", None)
    if isinstance(inner[0], BytesCodec) and little and np.dtype(array.dtype).kind in "iuf":
        return "bytes"
    return None


def _checked(data: memoryview) -> memoryview:
    if len(data) < _CRC or crc32c.crc32c(data[:-_CRC]) != int.from_bytes(data[-_CRC:], "little"):
        raise _Undecodable
    return data[:-_CRC]


class _TableReader:
    """Decodes whole shard files of one record table."""

    def __init__(self, store: StemdlStore, name: str) -> None:
        self.store, self.name = store, name
        self.array = store.array(name)
        self.layout = _layout(self.array)
        self.fs, _ = filesystem(store.url)
        self.width = int(np.prod(self.array.shape[1:]))
        self.dtype = np.dtype(self.array.dtype).newbyteorder("<") if self.layout == "bytes" else None
        self.vlen = VLenUTF8()

    def read(self, shard: int, rows: int) -> np.ndarray:
        """The first `rows` samples of the shard, shaped like the array's rows."""
        data = memoryview(self.fs.cat_file(file_url(self.store.url, shard_key(self.array, shard))))
        entries = self.store.shard_size
        tail = _checked(data[-(16 * entries + _CRC):]) if len(data) >= 16 * entries + _CRC \
            else None
        if tail is None:
            raise _Undecodable
        index = np.frombuffer(tail, dtype="<u8").reshape(entries, 2)[:rows]
        if (index[:, 0] == _EMPTY).any():
            raise _Undecodable
        chunks = [data[int(offset): int(offset) + int(length)] for offset, length in index]
        if self.layout == "bytes":
            payload = b"".join(bytes(decompress(_checked(chunk))) for chunk in chunks)
            values = np.frombuffer(payload, dtype=self.dtype)
            if values.size != rows * self.width:
                raise _Undecodable
            return values.reshape(rows, *self.array.shape[1:])
        out = np.empty((rows, self.width), dtype=object)
        for row, chunk in enumerate(chunks):
            strings = self.vlen.decode(bytes(decompress(_checked(chunk))))
            if len(strings) != self.width:
                raise _Undecodable
            out[row] = strings
        return out.reshape(rows, *self.array.shape[1:])


def scan_fields(store: StemdlStore, names: Iterable[str], shards: Iterable[int]
                ) -> Iterator[tuple[int, Columns]]:
    """Per shard of `shards`, in order, the logical columns `names` of its samples (what
    `read_fields(store, names, slice(start, stop))` returns for the shard)."""
    names = list(names)
    tables = list(dict.fromkeys(FIELDS[n].array for n in names))
    readers = {t: _TableReader(store, t) for t in tables}
    for shard in shards:
        start, stop = store.shard_range(shard)
        if not all(readers[t].layout for t in tables) or any(t not in TABLES for t in tables):
            yield shard, read_fields(store, names, slice(start, stop))
            continue
        try:
            arrays: dict[str, Any] = {t: readers[t].read(shard, stop - start) for t in tables}
        except (_Undecodable, ValueError, RuntimeError):
            yield shard, read_fields(store, names, slice(start, stop))
            continue
        yield shard, unpack(arrays, names)

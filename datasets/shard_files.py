"""Decode a whole shard file in one read: the loader's fast path for `cbed` and `potential`.

Why not `array[start:stop]`: zarr-python 3.1 routes every read through its async codec
pipeline, which costs about a millisecond per call and, for our one-sample chunks, roughly
twice the time of decompressing the same bytes in a plain loop (see
`benchmarks/loader_throughput.py`). A training loader reads each shard file exactly once, so it
fetches the file's bytes with one request and decodes the chunks it needs itself.

Scope, checked before use (`ShardFileDecoder.supports`): the sharding codec as written by
`datasets/storage.py`: index at the end, index codecs `bytes(little) + crc32c`, chunk codecs
`bytes(little)`, then zstd or blosc or nothing, then `crc32c`. This is the Zarr v3 sharding
format (ZEP 2): the index is (offset, nbytes) uint64 pairs per chunk in C order, followed by
its CRC-32C; an empty chunk is (2⁶⁴−1, 2⁶⁴−1). Every index and chunk checksum is verified, so
a damaged file raises `ShardDecodeError` naming it, never returns wrong numbers. Any other
layout falls back to Zarr.
"""

from __future__ import annotations

import crc32c
import numpy as np
import zarr
from numcodecs import Blosc, Zstd
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

_EMPTY = np.uint64(2**64 - 1)
_CRC = 4


class ShardDecodeError(ValueError):
    """A shard file whose index or chunk checksum does not match (the file is damaged)."""


def _little(codec: object) -> bool:
    return isinstance(codec, BytesCodec) and getattr(codec.endian, "value", codec.endian) in (
        "little", None)


class ShardFileDecoder:
    """Decodes shard files of one array (one sample per chunk) from their raw bytes."""

    def __init__(self, array: zarr.Array) -> None:
        self.supported = self.supports(array)
        if not self.supported:
            return
        sharding = array.metadata.codecs[0]
        self.chunks_per_shard = array.shards[0]
        self.sample_shape = tuple(array.shape[1:])
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill_value = array.metadata.fill_value
        inner = sharding.codecs[1]
        self._decompress = (Zstd().decode if isinstance(inner, ZstdCodec)
                            else Blosc().decode if isinstance(inner, BloscCodec) else _copy)

    @staticmethod
    def supports(array: zarr.Array) -> bool:
        codecs = array.metadata.codecs
        if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            return False
        sharding = codecs[0]
        inner, index = list(sharding.codecs), list(sharding.index_codecs)
        if sharding.index_location != ShardingCodecIndexLocation.end:
            return False
        if len(index) != 2 or not _little(index[0]) or not isinstance(index[1], Crc32cCodec):
            return False
        if tuple(sharding.chunk_shape) != (1, *array.shape[1:]):
            return False
        if not inner or not _little(inner[0]) or not isinstance(inner[-1], Crc32cCodec):
            return False
        middle = inner[1:-1]
        return len(middle) == 0 or (len(middle) == 1 and isinstance(middle[0], ZstdCodec | BloscCodec))

    def decode(self, data: bytes, rows: np.ndarray, where: str) -> np.ndarray:
        """The samples at `rows` (positions inside the shard) as an (len(rows), ...) array."""
        n = self.chunks_per_shard
        data = memoryview(data)
        index_bytes = data[-(16 * n + _CRC):]
        if len(data) < 16 * n + _CRC or crc32c.crc32c(index_bytes[:-_CRC]) != int.from_bytes(
                index_bytes[-_CRC:], "little"):
            raise ShardDecodeError(f"{where}: shard index checksum mismatch (damaged file)")
        index = np.frombuffer(index_bytes[:-_CRC], dtype="<u8").reshape(n, 2)
        out = np.empty((len(rows), *self.sample_shape), dtype=self.dtype)
        for slot, row in enumerate(rows):
            offset, length = index[row]
            if offset == _EMPTY:
                out[slot] = self.fill_value
                continue
            chunk = data[int(offset): int(offset + length)]
            if len(chunk) != length or crc32c.crc32c(chunk[:-_CRC]) != int.from_bytes(
                    chunk[-_CRC:], "little"):
                raise ShardDecodeError(f"{where}: chunk {row} checksum mismatch (damaged file)")
            try:  # straight into the output block: no intermediate bytes object, no copy
                self._decompress(chunk[:-_CRC], out=out[slot].reshape(-1))
            except (ValueError, RuntimeError) as error:
                raise ShardDecodeError(f"{where}: chunk {row} does not decode to one sample "
                                       f"({error})") from error
        return out


def _copy(buf: memoryview, out: np.ndarray) -> np.ndarray:
    """The 'no compression' decoder: the chunk's bytes are the sample."""
    view = out.view(np.uint8)
    if len(buf) != view.size:
        raise ValueError(f"{len(buf)} bytes for a {view.size}-byte sample")
    view[...] = np.frombuffer(buf, dtype=np.uint8)
    return out

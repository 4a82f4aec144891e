"""Read a shard file's samples one at a time: the loader's fast path for `cbed` and `potential`.

Why not `array[start:stop]`: zarr-python 3.1 routes every read through its async codec
pipeline, which costs about a millisecond per call and, for our one-sample chunks, roughly
twice the time of decompressing the same bytes in a plain loop (see
`benchmarks/loader_throughput.py`). A training loader reads each shard file exactly once, so
it fetches the bytes itself and decodes the chunks it needs (`ShardFileReader`): a small shard
file (at most `WHOLE_FILE_BYTES` of samples) in one request, a large one (the `paper` preset's
are 32 GiB: 64 samples of 512 MiB) as its index and then one byte-range request per sample,
so that a reader never holds more than the sample it decodes.

Scope, checked before use (`ShardFileDecoder.supports`): the sharding codec as written by
`datasets/storage.py`: index at the end, index codecs `bytes(little) + crc32c`, chunk codecs
`bytes(little)`, then zstd or blosc or nothing, then `crc32c`. This is the Zarr v3 sharding
format (ZEP 2): the index is (offset, nbytes) uint64 pairs per chunk in C order, followed by
its CRC-32C; an empty chunk is (2⁶⁴−1, 2⁶⁴−1). Every index and chunk checksum is verified, so
a damaged file raises `ShardDecodeError` naming it, never returns wrong numbers. A missing file
or an empty chunk raises too: stores are written with `write_empty_chunks`, so a reader only
opens files of shards marked done, and there an absent byte is lost data, not fill values.
Any other layout falls back to Zarr.
"""

from __future__ import annotations

from typing import Any

import crc32c
import numpy as np
import zarr
from numcodecs import Blosc, Zstd
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

from stemdl.configs import StemdlError

_EMPTY = np.uint64(2**64 - 1)
_CRC = 4
# A shard file whose samples take at most this many bytes (uncompressed) is fetched whole.
WHOLE_FILE_BYTES = 64 * 2**20


class ShardDecodeError(StemdlError, ValueError):
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

    @property
    def index_bytes(self) -> int:
        """Size of the shard index at the end of a file: (offset, nbytes) per chunk + CRC."""
        return 16 * self.chunks_per_shard + _CRC

    @property
    def samples_bytes(self) -> int:
        """Uncompressed bytes of a full shard's samples."""
        return self.chunks_per_shard * int(np.prod(self.sample_shape)) * self.dtype.itemsize

    def read_index(self, tail: bytes | memoryview, where: str) -> np.ndarray:
        """The (chunks, 2) offset/length table from a file's last `index_bytes` bytes."""
        tail = memoryview(tail)
        if len(tail) != self.index_bytes or crc32c.crc32c(tail[:-_CRC]) != int.from_bytes(
                tail[-_CRC:], "little"):
            raise ShardDecodeError(f"{where}: shard index checksum mismatch (damaged file)")
        return np.frombuffer(tail[:-_CRC], dtype="<u8").reshape(self.chunks_per_shard, 2)

    def decode_chunk(self, chunk: bytes | memoryview | None, row: int, where: str) -> np.ndarray:
        """One sample from its chunk's bytes (checksum verified); None: an empty chunk."""
        out = np.empty(self.sample_shape, dtype=self.dtype)
        if chunk is None:
            out[...] = self.fill_value
            return out
        chunk = memoryview(chunk)
        if len(chunk) < _CRC or crc32c.crc32c(chunk[:-_CRC]) != int.from_bytes(
                chunk[-_CRC:], "little"):
            raise ShardDecodeError(f"{where}: chunk {row} checksum mismatch (damaged file)")
        try:  # straight into the output array: no intermediate bytes object, no copy
            self._decompress(chunk[:-_CRC], out=out.reshape(-1))
        except (ValueError, RuntimeError) as error:
            raise ShardDecodeError(f"{where}: chunk {row} does not decode to one sample "
                                   f"({error})") from error
        return out


class ShardFileReader:
    """The samples of one shard file, decoded one at a time by `sample(row)`.

    A file of at most `WHOLE_FILE_BYTES` of samples is fetched in one request when opened;
    a larger one as its index now and one byte-range request per sample later, so memory
    stays at one sample whatever the shard size. A file that does not exist raises
    `ShardDecodeError` saying it is missing (Zarr would read it as fill values: four all-zero
    samples that train silently)."""

    def __init__(self, decoder: ShardFileDecoder, fs: Any, path: str) -> None:
        self.decoder, self.fs, self.path = decoder, fs, path
        self._data: memoryview | None = None
        try:
            if decoder.samples_bytes <= WHOLE_FILE_BYTES:
                self._data = memoryview(fs.cat_file(path))
                tail = self._data[-decoder.index_bytes:]  # short if truncated: read_index refuses
            else:
                tail = memoryview(fs.cat_file(path, start=-decoder.index_bytes))
        except FileNotFoundError:
            raise ShardDecodeError(f"{path}: shard file missing (deleted or lost; its shard is "
                                   "marked done)") from None
        self.index = decoder.read_index(tail, path)

    def sample(self, row: int) -> np.ndarray:
        return self.decoder.decode_chunk(self._chunk(row), row, self.path)

    def _chunk(self, row: int) -> bytes | memoryview:
        """Chunk `row`'s stored bytes (from memory or a byte-range read)."""
        if self.index[row][0] == _EMPTY:
            raise ShardDecodeError(f"{self.path}: chunk {row} missing from the shard index "
                                   "(every chunk of a done shard is written)")
        offset, length = (int(v) for v in self.index[row])
        chunk = (self._data[offset: offset + length] if self._data is not None
                 else self.fs.cat_file(self.path, start=offset, end=offset + length))
        if len(chunk) != length:
            raise ShardDecodeError(f"{self.path}: chunk {row} checksum mismatch (damaged file)")
        return chunk


def _copy(buf: memoryview, out: np.ndarray) -> np.ndarray:
    """The 'no compression' decoder: the chunk's bytes are the sample."""
    view = out.view(np.uint8)
    if len(buf) != view.size:
        raise ValueError(f"{len(buf)} bytes for a {view.size}-byte sample")
    view[...] = np.frombuffer(buf, dtype=np.uint8)
    return out

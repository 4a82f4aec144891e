"""Reading the per-shard done mask of a large store: its chunk files as bytes, decoded here.

Why: `shard_done` has one chunk per shard (one small file each, so that every generation task
writes only its own), and reading it through Zarr costs ~0.3 ms a chunk in Zarr's async
codec pipeline: 50 s for the 156,250 shards of 10⁷ samples, paid by every `verify`, `stage`,
`inspect` and every loader rank. Here a local store's chunk directory is listed once (a shard
never written has no file: not done, no read), each existing file is read with one plain
`open` and compared with the bytes Zarr writes for 1; any other content has its codecs
undone by hand (crc32c checked, zstd decompressed, the byte compared with 1;
`benchmarks/metadata_scale.py`). A remote store's files are fetched with one
`fs.cat` of every path (concurrent on s3fs). A file that does not decode counts as not done,
as before. Any other codec chain of `shard_done` returns None, and the caller reads through
Zarr.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import crc32c
import numpy as np
import zarr
from numcodecs.zstd import compress, decompress
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

from stemdl.datasets.storage import filesystem, is_local

_CRC = 4


def _supported(array: zarr.Array) -> bool:
    codecs = list(array.metadata.codecs)
    return (array.ndim == 1 and tuple(array.chunks) == (1,) and array.shards is None
            and np.dtype(array.dtype) == np.uint8 and len(codecs) == 3
            and isinstance(codecs[0], BytesCodec) and isinstance(codecs[1], ZstdCodec)
            and isinstance(codecs[2], Crc32cCodec))


def _encoded_one(level: int) -> bytes:
    """The bytes of a chunk holding 1, as Zarr writes it (zstd frame, then its crc32c): a
    done file equal to them needs no decoding (the usual case: ~3× faster)."""
    body = compress(b"\x01", level)
    return body + crc32c.crc32c(body).to_bytes(_CRC, "little")


def _is_one(data: bytes | Any, one: bytes = b"") -> bool:
    """The chunk holds 1 (crc32c verified); anything damaged is not done."""
    if not isinstance(data, bytes | bytearray) or len(data) <= _CRC:
        return False
    if data == one:
        return True
    body = memoryview(data)[:-_CRC]
    if crc32c.crc32c(body) != int.from_bytes(data[-_CRC:], "little"):
        return False
    try:
        value = bytes(decompress(body))
    except (ValueError, RuntimeError):
        return False
    return value == b"\x01"


def _existing_local(paths: list[str]) -> set[str]:
    """Which of `paths` exist, by listing each parent directory once."""
    by_parent: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_parent[os.path.dirname(path)].append(path)
    found: set[str] = set()
    for parent in by_parent:
        try:
            found.update(entry.path for entry in os.scandir(parent) if entry.is_file())
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def read_done_flags(array: zarr.Array, store_url: str) -> np.ndarray | None:
    """`shard_done == 1` as a bool array, read file by file without Zarr; None when the
    array's codecs are not the ones `datasets/storage.create_array` writes."""
    if not _supported(array):
        return None
    count = array.shape[0]
    fs, root = filesystem(store_url)
    keys = [f"{array.path}/{array.metadata.encode_chunk_key((k,))}" for k in range(count)]
    done = np.zeros(count, dtype=bool)
    one = _encoded_one(array.metadata.codecs[1].level)
    if is_local(store_url):
        paths = [os.path.join(root, *key.split("/")) for key in keys]
        existing = _existing_local(paths)
        for k, path in enumerate(paths):
            if path not in existing:
                continue
            try:
                with open(path, "rb") as handle:
                    done[k] = _is_one(handle.read(), one)
            except OSError:
                done[k] = False
        return done
    paths = [f"{root}/{key}" for key in keys]
    fetched = fs.cat(paths, on_error="return")
    for k, path in enumerate(paths):
        done[k] = _is_one(fetched.get(path), one)
    return done

"""The per-sample checksum: CRC-32C of a sample's array bytes as stored.

Why of the stored bytes and not of the encoded chunk: the value then survives re-compression,
re-sharding and staging, any reader (xarray, plain zarr) can recompute it, and it checks the
whole path from the simulator's output (after the cast to the storage dtype) to what a reader
decodes. Corruption inside a file is additionally caught, and located, by the crc32c codec that
closes every chunk's and every shard index's codec chain (see `datasets/storage.py`).
"""

from __future__ import annotations

import crc32c
import numpy as np


def stored_bytes(values: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """`values` cast to the storage dtype, little-endian, C-contiguous: the bytes we checksum."""
    return np.ascontiguousarray(np.asarray(values).astype(np.dtype(dtype).newbyteorder("<")))


def sample_crc32c(values: np.ndarray) -> int:
    """CRC-32C of one sample's array, which must already be in its stored dtype."""
    array = np.ascontiguousarray(values)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return crc32c.crc32c(array.view(np.uint8).reshape(-1).data)


def block_crc32c(block: np.ndarray) -> np.ndarray:
    """Per-sample CRC-32C of a (n, ...) block of samples, as uint32."""
    return np.array([sample_crc32c(sample) for sample in block], dtype=np.uint32)

"""How a stemdl store is stored: URLs, Zarr stores, codecs, sharding, and shard file names.

The schema (which arrays exist, their shapes and meaning) is `datasets/schema.py`; this module
turns it into Zarr v3 arrays and knows where their bytes live. Store URLs are untrusted input:
a local path or an fsspec URL (`file://`, `s3://`, `memory://`, …); anything else is refused
with a `StoreError` that names the URL and what is wrong with it.

Every per-sample array is chunked (1, …) and sharded (S, …) with the sharding codec, so one
shard of samples is one file per array, `<array>/c/<shard>/0/…`; the tiny coordinate arrays
(column names) are one unsharded chunk each. The codec chain of every
chunk and of every shard index ends in `crc32c`, so a flipped byte anywhere in a shard file
fails decoding with a checksum error instead of producing wrong numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.storage import FsspecStore, LocalStore

from stemdl.configs import StemdlError
from stemdl.configs.dataset import ArrayStorage
from stemdl.datasets.schema import ArraySpec

METADATA_CODEC = ArrayStorage(dtype="float32", codec="zstd", level=3)  # dtype unused for records


class StoreError(StemdlError, ValueError):
    """A store URL or store that cannot be used as asked; the message names it and why."""


def normalize_store_url(store_url: object) -> str:
    """Validate a store URL: an absolute local path, or an fsspec URL with a known protocol."""
    if isinstance(store_url, Path):
        store_url = str(store_url)
    if not isinstance(store_url, str):
        raise StoreError(f"store URL must be a string or path, got {type(store_url).__name__}")
    url = store_url.strip()
    if not url:
        raise StoreError("store URL is empty")
    if "\x00" in url:
        raise StoreError(f"store URL {store_url!r} contains a NUL byte")
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" not in url:
        return str(Path(url).expanduser().absolute())
    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as error:
        raise StoreError(
            f"store URL {store_url!r}: fsspec cannot open protocol {protocol!r} ({error})"
        ) from None
    return url.rstrip("/")


def is_local(url: str) -> bool:
    return "://" not in url


def open_store(url: str, *, read_only: bool) -> Store:
    """A Zarr store object for a normalized URL."""
    if is_local(url):
        path = Path(url)
        if path.exists() and not path.is_dir():
            raise StoreError(f"store path {url!r} exists and is not a directory")
        if read_only and not path.exists():
            raise StoreError(f"no store at {url!r}: the directory does not exist")
        return LocalStore(path, read_only=read_only)
    return FsspecStore.from_url(url, read_only=read_only)


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """A synchronous fsspec filesystem and the root path inside it, for raw file access."""
    if is_local(url):
        return fsspec.filesystem("file"), url
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def file_url(store_url: str, key: str) -> str:
    """Where the object `key` of a store lives: a local path or a URL."""
    if is_local(store_url):
        return os.path.join(store_url, *key.split("/"))
    return f"{store_url}/{key}"


def _compressors(storage: ArrayStorage, itemsize: int) -> list[Any]:
    if storage.codec == "none":
        chain: list[Any] = []
    elif storage.codec == "zstd":
        chain = [ZstdCodec(level=storage.level)]
    else:
        if storage.level > 9:
            raise StoreError(f"{storage.codec} levels are 0..9, got {storage.level}")
        cname = storage.codec.split("-", 1)[1]
        chain = [BloscCodec(cname=cname, clevel=storage.level, shuffle="shuffle", typesize=itemsize)]
    return [*chain, Crc32cCodec()]


def zarr_dtype(spec: ArraySpec) -> Any:
    return str if spec.dtype == "string" else np.dtype(spec.dtype)


def create_array(
    group: zarr.Group, spec: ArraySpec, *, length: int, shard_size: int,
    storage: ArrayStorage | None,
) -> zarr.Array:
    """Create (overwriting) one array: chunk = one sample, shard = `shard_size` samples.

    A coordinate array (column names) is one small unsharded chunk, written here, once."""
    storage = storage or METADATA_CODEC
    itemsize = 8 if spec.dtype == "string" else np.dtype(spec.dtype).itemsize
    if spec.per == "coordinate":
        array = group.create_array(
            spec.name, shape=spec.shape, chunks=spec.shape, dtype=zarr_dtype(spec),
            fill_value=spec.fill_value, compressors=_compressors(storage, itemsize),
            dimension_names=spec.all_dims, attributes=spec.attributes(), overwrite=True)
        array[:] = np.array(spec.values, dtype=object)
        return array
    if spec.per == "shard":
        chunks, shards = (1,), None
    else:
        chunks, shards = (1, *spec.shape), (shard_size, *spec.shape)
    return group.create_array(
        spec.name,
        shape=(length, *spec.shape),
        chunks=chunks,
        shards=shards,
        dtype=zarr_dtype(spec),
        fill_value=spec.fill_value,
        compressors=_compressors(storage, itemsize),
        dimension_names=spec.all_dims,
        attributes=spec.attributes(),
        config={"write_empty_chunks": True},
        overwrite=True,
    )


def shard_key(array: zarr.Array, shard_index: int) -> str:
    """The store key of shard `shard_index` of a per-sample array (or of a per-shard chunk;
    for a coordinate array, its one chunk is shard 0)."""
    coords = (shard_index,) + (0,) * (array.ndim - 1)
    return f"{array.path}/{array.metadata.encode_chunk_key(coords)}"


def delete_objects(url: str, keys: list[str]) -> None:
    """Delete store objects that exist (missing ones are fine).

    Why: zarr-python 3.1 writes a shard by read-modify-write, even when every chunk of it is
    written, so a stale or corrupted shard file must go before its shard is written again.
    """
    fs, root = filesystem(url)
    for key in keys:
        path = f"{root}/{key}"
        if fs.exists(path):
            fs.rm_file(path)


def open_group(url: str, *, mode: str = "r") -> zarr.Group:
    """Open the root group of an existing store, with a StoreError if there is none."""
    store = open_store(url, read_only=(mode == "r"))
    try:
        return zarr.open_group(store=store, mode="r" if mode == "r" else "r+", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError) as error:
        raise StoreError(f"no Zarr v3 group at {url!r}: {file_url(url, 'zarr.json')} is missing "
                         f"or unreadable ({type(error).__name__}: {error})") from None


def store_has_content(url: str) -> bool:
    """True if anything at all exists at the store location."""
    fs, root = filesystem(url)
    try:
        return bool(fs.exists(root) and fs.ls(root, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return False


def group_exists(url: str) -> bool:
    fs, root = filesystem(url)
    return bool(fs.exists(f"{root}/zarr.json"))

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

Object stores (`s3://bucket/store.zarr`, through s3fs): the endpoint and credentials come from
the standard AWS variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_PROFILE`, …), or from fsspec storage options that the command line takes as
`--storage-options JSON` (`set_storage_options`; they win over the variables). Why bounded
retries by default: botocore retries a refused connection for ~10 s, so a wrong endpoint
looked like a hang; here a request is tried at most 3 times, with a 5 s connect timeout.
Before a store on S3 is first used in a process its bucket is checked once (`HeadBucket`), so
that a wrong endpoint, missing credentials or a missing bucket is one `StoreAccessError`
saying which, before anything is planned or written.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
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

# What zarr and numcodecs raise for a chunk or shard file that does not decode: a CRC-32C
# mismatch (ValueError), a codec's own error (RuntimeError: "Zstd decompression error"), a file
# that cannot be read (OSError). Readers that report damage catch exactly these.
UNREADABLE_CHUNK: tuple[type[Exception], ...] = (ValueError, RuntimeError, OSError)
# ... and for an array's zarr.json that is missing or damaged: no such key (KeyError), JSON that
# does not parse or a document zarr rejects (ValueError, its MetadataValidationError; KeyError
# or TypeError for a field that is absent or of the wrong type), a file that cannot be read.
UNREADABLE_METADATA: tuple[type[Exception], ...] = (KeyError, ValueError, TypeError, OSError)


class StoreError(StemdlError, ValueError):
    """A store URL or store that cannot be used as asked; the message names it and why."""


class StoreAccessError(StoreError):
    """The place a store lives cannot be reached (an object store's endpoint, credentials or
    bucket): nothing about the store itself can be said, so no reader reports it as a
    problem of the store; the message says what to fix."""


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
        hint = '; `pip install "stemdl[s3]"` adds s3fs' if protocol in S3_PROTOCOLS else ""
        raise StoreError(
            f"store URL {store_url!r}: fsspec cannot open protocol {protocol!r} ({error}){hint}"
        ) from None
    return url.rstrip("/")


def is_local(url: str) -> bool:
    return "://" not in url


S3_PROTOCOLS = ("s3", "s3a")
# s3fs options for every s3:// store unless the user's options say otherwise: bounded retries
# and timeouts (see the module docstring): botocore's standard mode, 3 attempts in all with
# jittered backoff. (s3fs's own retry loop only repeats timeouts and broken reads.)
S3_DEFAULT_OPTIONS: dict[str, Any] = {
    "config_kwargs": {"retries": {"max_attempts": 3, "mode": "standard"},
                      "connect_timeout": 5, "read_timeout": 60},
}

_user_options: dict[str, Any] = {}


def parse_storage_options(text: str) -> dict[str, Any]:
    """The `--storage-options` JSON: an object of fsspec options (for s3://, s3fs's:
    `endpoint_url`, `key`, `secret`, `client_kwargs`, `config_kwargs`, …)."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise StoreError(f"--storage-options is not valid JSON ({error}): {text!r}") from None
    if not isinstance(options, dict):
        raise StoreError(f"--storage-options must be a JSON object of fsspec options, e.g. "
                         f'\'{{"endpoint_url": "http://host:9000"}}\', got {text!r}')
    return options


def set_storage_options(options: Mapping[str, Any] | None) -> None:
    """Use these fsspec options for every non-local store this process opens (the command
    line's `--storage-options`); generation hands them on to its Dask tasks. None clears."""
    _user_options.clear()
    _user_options.update(copy.deepcopy(dict(options or {})))


def user_storage_options() -> dict[str, Any]:
    """The options given to `set_storage_options` (what generation sends to its workers)."""
    return copy.deepcopy(_user_options)


def storage_options(url: str) -> dict[str, Any]:
    """The fsspec options a non-local URL is opened with: the protocol's defaults, then the
    user's (nested `config_kwargs` merged key by key)."""
    protocol = url.split("://", 1)[0]
    options = copy.deepcopy(S3_DEFAULT_OPTIONS) if protocol in S3_PROTOCOLS else {}
    for key, value in _user_options.items():
        if isinstance(value, dict) and isinstance(options.get(key), dict):
            options[key] = {**options[key], **copy.deepcopy(value)}
        else:
            options[key] = copy.deepcopy(value)
    return options


def _endpoint(fs: Any, options: Mapping[str, Any]) -> str:
    """The endpoint an s3fs filesystem talks to, for messages."""
    try:
        with_client = fs.s3.meta.endpoint_url
    except Exception:  # no client could be made: say what was configured
        with_client = None
    return str(with_client or options.get("endpoint_url")
               or (options.get("client_kwargs") or {}).get("endpoint_url")
               or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
               or "AWS's default endpoint")


def _check_s3_bucket(url: str, fs: Any, options: Mapping[str, Any]) -> None:
    """One `HeadBucket` call; any failure is a `StoreError` that says what to fix."""
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    bucket = url.split("://", 1)[1].split("/", 1)[0]
    try:
        fs.call_s3("head_bucket", Bucket=bucket)
        return
    except (NoCredentialsError, PartialCredentialsError) as error:
        raise StoreAccessError(
            f"{url}: no S3 credentials ({error}): set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass them as --storage-options "
            '\'{"key": "...", "secret": "..."}\'') from None
    except (EndpointConnectionError, ConnectTimeoutError) as error:
        raise StoreAccessError(
            f"{url}: cannot reach the S3 endpoint {_endpoint(fs, options)} ({error}); check "
            "AWS_ENDPOINT_URL or endpoint_url in --storage-options") from None
    except FileNotFoundError:
        raise StoreAccessError(
            f"{url}: bucket {bucket!r} does not exist at {_endpoint(fs, options)}; create it "
            "first (stemdl writes into a bucket, it does not create one)") from None
    except PermissionError as error:
        raise StoreAccessError(
            f"{url}: access to bucket {bucket!r} at {_endpoint(fs, options)} was refused "
            f"({error}); check the credentials and the bucket's policy") from None
    except Exception as error:  # broad: botocore's connection/credential errors share no base
        raise StoreAccessError(
            f"{url}: bucket {bucket!r} at {_endpoint(fs, options)} cannot be used "
            f"({type(error).__name__}: {error})") from None


_checked: set[tuple[str, str]] = set()  # (bucket URL, options) found usable in this process


def check_remote(url: str) -> None:
    """Fail early and clearly (`StoreAccessError`) when the bucket of an s3:// URL cannot be
    used (see the module docstring); checked once per process, bucket and options (a failure
    is not remembered). Other protocols are left to the first read or write."""
    protocol, rest = url.split("://", 1)
    if protocol not in S3_PROTOCOLS:
        return
    options = storage_options(url)
    bucket_url = f"{protocol}://{rest.split('/', 1)[0]}"
    key = (bucket_url, json.dumps(options, sort_keys=True, default=str))
    if key in _checked:
        return
    fs, _ = fsspec.core.url_to_fs(bucket_url, **options)
    _check_s3_bucket(url, fs, options)
    _checked.add(key)


def open_store(url: str, *, read_only: bool) -> Store:
    """A Zarr store object for a normalized URL."""
    if is_local(url):
        path = Path(url)
        if path.exists() and not path.is_dir():
            raise StoreError(f"store path {url!r} exists and is not a directory")
        if read_only and not path.exists():
            raise StoreError(f"no store at {url!r}: the directory does not exist")
        return LocalStore(path, read_only=read_only)
    check_remote(url)
    return FsspecStore.from_url(url, read_only=read_only, storage_options=storage_options(url))


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """A synchronous fsspec filesystem and the root path inside it, for raw file access."""
    if is_local(url):
        return fsspec.filesystem("file"), url
    check_remote(url)
    fs, root = fsspec.core.url_to_fs(url, **storage_options(url))
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

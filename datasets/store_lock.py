"""One writing client per store: an advisory lock, and who holds it.

Why: two `stemdl simulate` clients on one store both found every shard not done and both
simulated everything (each write is safe, so the result was right, but the work was doubled
and both reported the other's shards as their own). `generate` therefore holds
`<store>.lock`, a `filelock` next to a local store, for its whole run; a second client finds
it held and exits at once, naming the holder (host, pid, start time, from `<store>.lock.json`).
`verify --repair` writes too (done flags, shards, array metadata) and holds the same lock.

Non-local URLs (s3://, gs://, …): object stores have no atomic lock that fsspec exposes, so
no lock is taken and a warning says so; run one client per store there (every write is still
whole-shard and idempotent, so a second client wastes work but corrupts nothing). A lock on a
shared file system (NFS, Lustre, GPFS) is only as good as that file system's `flock`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from stemdl.datasets.storage import StoreError, is_local

log = logging.getLogger(__name__)


class StoreLockedError(StoreError):
    """Another client is generating into the store; the message names it."""


def lock_paths(url: str) -> tuple[Path, Path]:
    """The lock file and the file that says who holds it, next to a local store."""
    return Path(f"{url}.lock"), Path(f"{url}.lock.json")


@contextlib.contextmanager
def store_lock(url: str, what: str = "generating") -> Iterator[None]:
    """Hold the store's lock for the block; `StoreLockedError` at once if another holds it."""
    if not is_local(url):
        log.warning("%s: no lock is taken on a non-local store (fsspec has no atomic lock); "
                    "make sure only one client generates into it", url)
        yield
        return
    lock_file, holder_file = lock_paths(url)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = json.loads(holder_file.read_text())
            who = (f"{holder.get('what', 'a client')} by pid {holder.get('pid')} on host "
                   f"{holder.get('host')} since {holder.get('since')}")
        except (OSError, ValueError):
            who = "another client (who, is not recorded)"
        raise StoreLockedError(
            f"{url} is locked: {who}. Wait for it to finish (then run the same command: it "
            f"resumes), or, if that process is gone, its lock is released with it ({lock_file})"
        ) from None
    try:
        with contextlib.suppress(OSError):  # who holds it is a courtesy (a full disk, say)
            holder_file.write_text(json.dumps({
                "what": what, "pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}))
        yield
    finally:
        holder_file.unlink(missing_ok=True)
        lock.release()

"""Loader throughput against the floor of reading and decompressing the same shard files.

    python benchmarks/loader_throughput.py [--store PATH] [--config small] [--workers 2]

Baseline ("raw"): a plain single-process loop that reads every `cbed` and `potential` shard
file's bytes, splits them with the shard index, and zstd-decompresses each chunk into a NumPy
array: no checksums, no dtype conversion, no normalization, no batching.

Loader: `make_dataloader` over the same store (all splits, batch size 8, the store's loader
config), decoded samples as float32 tensors with the configured normalization, in three modes:
`--workers` DataLoader worker processes (persistent); `--workers` decode threads in the
iterating process (no worker processes); and inline; plus threads and inline with the
normalization switched off (decode to float32 only: the loader's own overhead). After one warm-up epoch each, raw and
loader epochs are interleaved `--epochs` times (the machine may be shared); reported are the
median rates and the median of the per-round loader/raw ratios.

Why threads: a worker process must hand each decoded float32 sample to the trainer through
shared memory, and on a 2-core VM that copy alone caps at about 1,250 samples/s of 1 MiB
(measured with pre-made tensors), while zstd, NumPy and torch release the GIL, so threads
decode in parallel with no copy.

If `--store` (default `benchmarks/cache/small-v<schema version>.zarr`) does not exist it is
generated first with the real simulator for `--config`
(the `small` preset by default: 96 samples of 64 × 64 × 64 float16 patterns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numcodecs import Zstd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import load_config  # noqa: E402
from datasets.loader import make_dataloader  # noqa: E402
from datasets.partition import available_shards  # noqa: E402
from datasets.plan import open_stemdl_store  # noqa: E402
from datasets.schema import SCHEMA_VERSION, shard_range  # noqa: E402
from datasets.storage import file_url, shard_key  # noqa: E402

INDEX_ENTRY = 16  # uint64 offset + uint64 length per chunk
CRC = 4


def raw_pass(store: str) -> tuple[int, float]:
    """Read + decompress every cbed/potential chunk of every done shard; (samples, seconds)."""
    info = open_stemdl_store(store)
    codecs = {name: (Zstd(), np.dtype(info.schema[name].dtype)) for name in ("cbed", "potential")}
    shards = available_shards(info)
    began = time.perf_counter()
    samples = 0
    for shard in shards:
        start, stop = shard_range(shard, info.shard_size, info.num_samples)
        for name, (zstd, dtype) in codecs.items():
            with open(file_url(info.url, shard_key(info.array(name), shard)), "rb") as handle:
                data = handle.read()
            index = np.frombuffer(data[-(INDEX_ENTRY * info.shard_size + CRC):-CRC],
                                  dtype="<u8").reshape(-1, 2)
            for offset, length in index[: stop - start]:
                chunk = data[offset: offset + length - CRC]  # the chunk's trailing crc32c
                np.frombuffer(zstd.decode(chunk), dtype=dtype)
        samples += stop - start
    return samples, time.perf_counter() - began


def loader_pass(loader) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    samples = sum(int(batch["index"].shape[0]) for batch in loader)
    return samples, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # The cached store's name carries the schema version: a store of an older layout is
    # refused by open_stemdl_store, so a new version generates a fresh cache.
    parser.add_argument("--store", default=str(
        REPO / "benchmarks" / "cache" / f"small-v{SCHEMA_VERSION}.zarr"))
    parser.add_argument("--config", default="small")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=7)
    args = parser.parse_args()

    if not Path(args.store, "zarr.json").exists():
        from datasets.generate import generate

        print(f"generating {args.store} with the {args.config} preset …", flush=True)
        report = generate(load_config(args.config), args.store, progress=False)
        print(report.summary(), flush=True)
    info = open_stemdl_store(args.store)
    cbed = info.array("cbed")
    print(f"store {info.url}: {len(available_shards(info))} shards of {info.shard_size}, "
          f"cbed {cbed.shape} {cbed.dtype}, codec {info.config.dataset.cbed.codec}")
    print(f"machine: {os.cpu_count()} cores")

    plain = {"input_transform": "none", "standardize_inputs": False, "standardize_targets": False}
    modes = {
        f"{args.workers} worker processes": {"num_workers": args.workers, "decode_threads": 0},
        f"{args.workers} decode threads": {"num_workers": 0, "decode_threads": args.workers},
        "inline (no workers, no threads)": {"num_workers": 0, "decode_threads": 0},
        f"{args.workers} decode threads, no normalization": {
            "num_workers": 0, "decode_threads": args.workers, **plain},
        "inline, no normalization": {"num_workers": 0, "decode_threads": 0, **plain},
    }
    loaders = {}
    for label, update in modes.items():
        cfg = info.config.loader.model_copy(update=update)
        loaders[label] = make_dataloader(args.store, cfg, split=None,
                                         batch_size=args.batch_size, drop_last=False)
        loaders[label].dataset.set_epoch(0)
        loader_pass(loaders[label])  # start-up: worker processes, page cache, imports
    # Interleave the measurements so that every mode sees the same machine load (the VM is
    # shared); report medians over rounds and the median of the per-round ratios.
    raw_rates: list[float] = []
    rates: dict[str, list[float]] = {label: [] for label in modes}
    for epoch in range(1, args.epochs + 1):
        n, seconds = raw_pass(args.store)
        raw_rates.append(n / seconds)
        for label, loader in loaders.items():
            loader.dataset.set_epoch(epoch)
            n, seconds = loader_pass(loader)
            rates[label].append(n / seconds)
    raw = statistics.median(raw_rates)
    print(f"raw read + zstd decompress (1 process): {raw:8.1f} samples/s "
          f"({raw * cbed.nbytes / cbed.shape[0] / 2**20:.0f} MiB/s of cbed)")
    for label, values in rates.items():
        ratio = statistics.median(v / r for v, r in zip(values, raw_rates, strict=True))
        print(f"loader, {label:42s} {statistics.median(values):8.1f} samples/s, "
              f"ratio to raw {ratio:.2f} (goal >= 0.80)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loader throughput against the floor of reading and decompressing the same shard files.

    python -m benchmarks.loader_throughput [--store PATH] [--config small] [--rounds 5]

Baseline ("raw"): a plain single-process loop that reads every `cbed` and `potential` shard
file's bytes, splits them with the shard index, and zstd-decompresses each chunk into a NumPy
array: no checksums, no dtype conversion, no normalization, no batching.

Loader: `make_dataloader` over the same store (all splits, batch size 8, the store's loader
config, so the full input normalization: sqrt(x - min) and per-pattern standardization),
decoded samples as float32 tensors, in the modes: inline (`num_workers=0`), 1 and 2 DataLoader
worker processes, and `--threads` decode threads in the iterating process. After one warm-up
epoch each, `--epochs-per-round` raw passes and as many epochs of every mode alternate for
`--rounds` rounds (the machine may be shared). The same loader modes (inline and 2 workers)
also run with Zarr's own reads (`ShardStream.zarr_reads`: a small shard as `array[start:stop]`
in one call) instead of the hand decoder of `datasets/shard_files.py`, and two plain
one-process passes decode every sample by each of the two readers alone; reported are the median rates, the median of
the per-round loader/raw ratios, and the load average before and after (`os.getloadavg()`),
as a markdown block for benchmarks/RESULTS.md, followed by where one process's time goes:
the loader's steps timed one by one over all shards (single-threaded, milliseconds/sample).

If `--store` (default `benchmarks/cache/small-v<schema version>.zarr`) does not exist it is
generated first with the real simulator for `--config`
(the `small` preset by default; the figures in RESULTS.md were measured on the earlier `small`: 96 samples of 64 × 64 × 64 float16 patterns).
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

from stemdl.configs import load_config
from stemdl.datasets.loader import make_dataloader
from stemdl.datasets.partition import available_shards
from stemdl.datasets.schema import SCHEMA_VERSION
from stemdl.datasets.storage import file_url, shard_key
from stemdl.datasets.store import open_stemdl_store

REPO = Path(__file__).resolve().parents[1]

INDEX_ENTRY = 16  # uint64 offset + uint64 length per chunk
ZARR = "zarr's own reads, "  # label prefix of the loader modes that read through Zarr
CRC = 4


def raw_pass(store: str) -> tuple[int, float]:
    """Read + decompress every cbed/potential chunk of every done shard; (samples, seconds)."""
    stemdl_store = open_stemdl_store(store)
    codecs = {name: (Zstd(), np.dtype(stemdl_store.schema[name].dtype))
              for name in ("cbed", "potential")}
    shards = available_shards(stemdl_store)
    began = time.perf_counter()
    samples = 0
    for shard in shards:
        start, stop = stemdl_store.shard_range(shard)
        for name, (zstd, dtype) in codecs.items():
            with open(file_url(stemdl_store.url, shard_key(stemdl_store.array(name), shard)),
                      "rb") as handle:
                data = handle.read()
            index = np.frombuffer(data[-(INDEX_ENTRY * stemdl_store.shard_size + CRC):-CRC],
                                  dtype="<u8").reshape(-1, 2)
            for offset, length in index[: stop - start]:
                chunk = data[offset: offset + length - CRC]  # the chunk's trailing crc32c
                np.frombuffer(zstd.decode(chunk), dtype=dtype)
        samples += stop - start
    return samples, time.perf_counter() - began


def reader_pass(store: str, zarr_reads: bool) -> tuple[int, float]:
    """Every cbed/potential sample of every done shard decoded by the loader's reader, one
    process, nothing else (no checksum, conversion or normalization): the hand decoder
    (`datasets/shard_files.py`) or Zarr's own reads (a small shard as `array[start:stop]`,
    in one call). (samples, seconds)."""
    from stemdl.datasets.loader import _ShardReader

    stemdl_store = open_stemdl_store(store)
    reader = _ShardReader(stemdl_store, zarr_reads=zarr_reads)
    shards = available_shards(stemdl_store)
    began = time.perf_counter()
    samples = 0
    for shard in shards:
        start, stop = stemdl_store.shard_range(shard)
        for name in ("cbed", "potential"):
            sample = reader.open(name, shard)
            for row in range(stop - start):
                sample(row)
        samples += stop - start
    return samples, time.perf_counter() - began


def stage_times(store: str, cfg) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Milliseconds per sample of each step of the inline loader, over every shard: the
    loader's own functions, called one step at a time."""
    import torch

    from stemdl.datasets.loader import _ShardReader
    from stemdl.datasets.transforms import normalize_inputs, normalize_targets, to_float32

    torch.set_num_threads(1)
    stemdl_store = open_stemdl_store(store)
    reader = _ShardReader(stemdl_store)
    times = dict.fromkeys(("read + checksum + decompress", "float16 -> float32 into the batch",
                           "normalize in the batch (sqrt_min, standardize)"), 0.0)
    labels = list(times)
    samples = 0
    batch_cbed = batch_potential = np.empty(0, np.float32)
    for shard in available_shards(stemdl_store):
        start, stop = stemdl_store.shard_range(shard)
        rows = np.arange(stop - start)
        t0 = time.perf_counter()
        samples_of = {name: reader.open(name, shard) for name in ("cbed", "potential")}
        cbed = [samples_of["cbed"](row) for row in rows]
        potential = [samples_of["potential"](row) for row in rows]
        t1 = time.perf_counter()
        if batch_cbed.shape != (len(rows), *cbed[0].shape):  # reused, like the loader's ring
            batch_cbed = np.zeros((len(rows), *cbed[0].shape), np.float32)
            batch_potential = np.zeros((len(rows), *potential[0].shape), np.float32)
        for row in rows:
            to_float32(cbed[row], out=batch_cbed[row])
            to_float32(potential[row], out=batch_potential[row])
        t2 = time.perf_counter()
        for row in rows:
            normalize_inputs(batch_cbed[row], cfg.input_transform, cfg.standardize_inputs,
                             inplace=True)
            normalize_targets(batch_potential[row], cfg.standardize_targets, inplace=True)
        t3 = time.perf_counter()
        for label, seconds in zip(labels, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            times[label] += seconds
        samples += len(rows)
    return {label: 1e3 * seconds / samples for label, seconds in times.items()}


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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs-per-round", type=int, default=6,
                        help="epochs (and raw passes) timed together in each round")
    args = parser.parse_args()

    if not Path(args.store, "zarr.json").exists():
        from stemdl.datasets.generate import generate

        print(f"generating {args.store} with the {args.config} preset …", flush=True)
        report = generate(load_config(args.config), args.store, progress=False)
        print(report.summary(), flush=True)
    store = open_stemdl_store(args.store)
    # The preset's current loader settings (the store's recorded ones may be older: the loader
    # section does not change the stored data, so a store is reused across loader changes).
    loader_cfg = load_config(args.config).loader
    cbed = store.array("cbed")
    shards = len(available_shards(store))

    modes = {
        "inline (num_workers=0)": {"num_workers": 0, "decode_threads": 0},
        "1 worker process": {"num_workers": 1, "decode_threads": 0},
        "2 worker processes": {"num_workers": 2, "decode_threads": 0},
        f"{args.threads} decode threads, no workers": {
            "num_workers": 0, "decode_threads": args.threads},
        ZARR + "inline (num_workers=0)": {"num_workers": 0, "decode_threads": 0},
        ZARR + "2 worker processes": {"num_workers": 2, "decode_threads": 0},
    }
    loaders = {}
    for label, update in modes.items():
        cfg = loader_cfg.model_copy(update=update)
        loaders[label] = make_dataloader(args.store, cfg, split=None,
                                         batch_size=args.batch_size, drop_last=False)
        # Set before the first iteration: the persistent workers start with this dataset.
        loaders[label].dataset.zarr_reads = label.startswith(ZARR)
        loaders[label].dataset.set_epoch(0)
        loader_pass(loaders[label])  # start-up: worker processes, page cache, imports
    raw_pass(args.store)
    passes = {"hand decoder (datasets/shard_files.py), 1 process": False,
              "zarr's own reads (array[start:stop] per shard), 1 process": True}
    for zarr_reads in passes.values():
        reader_pass(args.store, zarr_reads)
    # Interleave the measurements so that every mode sees the same machine load (the VM is
    # shared); report medians over rounds and the median of the per-round ratios.
    load_before = os.getloadavg()
    raw_rates: list[float] = []
    rates: dict[str, list[float]] = {label: [] for label in modes}
    pass_rates: dict[str, list[float]] = {label: [] for label in passes}
    epoch = 0
    for _ in range(args.rounds):
        n = seconds = 0.0
        for _ in range(args.epochs_per_round):
            k, s = raw_pass(args.store)
            n, seconds = n + k, seconds + s
        raw_rates.append(n / seconds)
        for label, zarr_reads in passes.items():
            n = seconds = 0.0
            for _ in range(args.epochs_per_round):
                k, s = reader_pass(args.store, zarr_reads)
                n, seconds = n + k, seconds + s
            pass_rates[label].append(n / seconds)
        for label, loader in loaders.items():
            n = seconds = 0.0
            for _ in range(args.epochs_per_round):
                epoch += 1
                loader.dataset.set_epoch(epoch)
                k, s = loader_pass(loader)
                n, seconds = n + k, seconds + s
            rates[label].append(n / seconds)
    load_after = os.getloadavg()
    raw = statistics.median(raw_rates)
    cfg = loader_cfg
    print(f"Store `{Path(store.url).name}`: {shards} shards of {store.shard_size}, "
          f"cbed {cbed.shape[1:]} {cbed.dtype} + potential {store.array('potential').shape[1:]} "
          f"{store.array('potential').dtype}, codec {store.config.dataset.cbed.codec}; "
          f"{os.cpu_count()} cores; loader input_transform={cfg.input_transform}, "
          f"standardize_inputs={cfg.standardize_inputs}, "
          f"standardize_targets={cfg.standardize_targets}, prefetch_factor={cfg.prefetch_factor}, "
          f"batch {args.batch_size}; "
          f"{args.rounds} rounds of {args.epochs_per_round} epochs, medians. "
          f"Load average (1/5/15 min) before {fmt_load(load_before)}, "
          f"after {fmt_load(load_after)}.")
    print()
    print("| mode | samples/s | ratio to raw (goal >= 0.80) |")
    print("|---|---:|---:|")
    print(f"| raw read + zstd decompress (1 process, baseline) | {raw:.0f} | 1.00 |")
    for label, values in {**pass_rates, **rates}.items():
        ratio = statistics.median(v / r for v, r in zip(values, raw_rates, strict=True))
        name = label if label in pass_rates else f"loader, {label}"
        print(f"| {name} | {statistics.median(values):.0f} | {ratio:.2f} |")
    print()
    print("Zarr's own reads against the hand decoder, per round (samples/s ratio, zarr / hand):")
    print()
    hand, zarr_ = (pass_rates[label] for label in passes)
    pairs = {"1 process, reads only": (zarr_, hand)}
    for mode in ("inline (num_workers=0)", "2 worker processes"):
        pairs[f"loader, {mode}"] = (rates[ZARR + mode], rates[mode])
    print("| comparison | per round | median |")
    print("|---|---|---:|")
    for label, (zs, hs) in pairs.items():
        ratios = [z / h for z, h in zip(zs, hs, strict=True)]
        print(f"| {label} | {', '.join(f'{r:.2f}' for r in ratios)} | "
              f"{statistics.median(ratios):.2f} |")
    steps = [stage_times(args.store, cfg) for _ in range(3)]
    print()
    print(f"Where one process's time goes (median of 3 passes; raw loop: {1e3 / raw:.3f}):")
    print()
    print("| step | ms/sample |")
    print("|---|---:|")
    for label in steps[0]:
        print(f"| {label} | {statistics.median(step[label] for step in steps):.3f} |")
    print(f"| total | {statistics.median(sum(step.values()) for step in steps):.3f} |")
    return 0


def fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{value:.2f}" for value in load)


if __name__ == "__main__":
    sys.exit(main())

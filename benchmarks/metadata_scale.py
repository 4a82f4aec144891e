"""The store's own metadata at 10⁵, 10⁶ and 10⁷ samples, without simulating (issue 21, item 3).

    python -m benchmarks.metadata_scale [--sizes 1e5 1e6 1e7] [--source STORE] [--work DIR]

What it builds, per size N (`build_store`): a store planned by the real code
(`datasets/plan.plan_store`: the group attributes with the config, the split table, the
catalogue fingerprint; every array's `zarr.json`), with the layout of `--source` (default: the
`small` store of `benchmarks/loader_throughput.py`, whose real simulated samples and catalogue
it reuses) and the paper preset's shard size (64 samples, `--shard-size`): 10⁷ samples are
156,250 shards. It is measured twice:

* *absent*: planned, no shard written or marked done (a generation that has not started);
* *done*: every shard written and marked done. The first `templates` shards (enough to hold
  every source sample once, and the short last shard) are written by the real code
  (`datasets/shard.write_block`: records packed by `datasets/records.pack`, the source's
  `cbed` and `potential` bytes and its checksums, with `index` renumbered); every other shard's
  files are hard links of a template's files (byte for byte what `write_block` writes, except
  that their `index` column repeats the template's: nothing timed here reads it). The done
  mask's chunks of the templates are written by Zarr, the others are hard links of them.

Timed per state and size, each in a fresh process (`python -m benchmarks.metadata_scale
--child OP STORE`), which reports its wall time and its peak RSS above the RSS it had after
its imports (the peak reset before the op: /proc/self/clear_refs, read as VmHWM):

* `open`: `open_stemdl_store`;
* `inspect`: `datasets.inspect.summarize`, what `stemdl inspect STORE` prints;
* `verify plan`: opening, the schema check and `datasets.verify.plan_verification` (which
  shards to check), not the checks of each shard's bytes;
* `stage plan`: `datasets.stage.node_plan` for node 7 of 1000 (shards and which are not done);
* `loader partition`: `ShardStream` for rank 0 of 27,600 (train split, 4 DataLoader
  workers: its shards, their rows, checksums and file checks) and each worker's shards of
  epoch 0: what every one of 27,600 ranks does before it reads a sample (rank 0 holds the
  most shards, ceil(K / 27,600)).

and, as the baseline the done mask had before `datasets/done_mask.py`, `shard_done[:]` read
through Zarr (every operation but `open` reads the mask).

Goal: each grows at most linearly in N, and none takes more than 10 s or 2 GiB at 10⁷.
Prints a markdown block for benchmarks/RESULTS.md. `measure_sizes` is the core the test
(`tests/datasets/test_metadata_scale.py`) runs at small N.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from stemdl.datasets.schema import SCHEMA_VERSION, column_index, shard_range, sharded_arrays
from stemdl.datasets.store import StemdlStore, open_stemdl_store

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO / "benchmarks" / "cache" / f"small-v{SCHEMA_VERSION}.zarr"
OPS = ("open", "inspect", "verify plan", "stage plan", "loader partition")
BASELINE = "done mask through Zarr"  # what every op above paid before datasets/done_mask.py
STAGE_NODE, STAGE_NODES = 7, 1000
RANKS, WORKERS = 27_600, 4
LIMIT_S, LIMIT_BYTES = 10.0, 2 * 2**30


# ---------------------------------------------------------------- building the metadata

def _source_block(source: StemdlStore) -> dict[str, np.ndarray]:
    """Every per-sample array of the source store, whole (a small simulated store)."""
    return {spec.name: np.asarray(source.array(spec.name)[:])
            for spec in sharded_arrays(source.schema)}


def _template_block(rows: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """Samples [start, stop) of the big store, taken round-robin from the source's samples,
    `index` renumbered to the global index."""
    n = len(rows["cbed"])
    picked = np.arange(start, stop) % n
    block = {name: values[picked] for name, values in rows.items()}
    block["record_int"] = block["record_int"].copy()
    block["record_int"][:, column_index("record_int")["index"]] = np.arange(start, stop)
    return block


def plan_scaled(source: StemdlStore, url: str, num_samples: int, shard_size: int) -> StemdlStore:
    """Plan a store of `num_samples` samples with the source's simulation section and
    catalogue (built by the real code, as `stemdl simulate` builds it)."""
    from stemdl.datasets.plan import plan_store
    from stemdl.datasets.shard import catalogue_for

    config = source.config.model_copy(update={"dataset": source.config.dataset.model_copy(
        update={"num_samples": num_samples, "shard_size": shard_size})})
    config = type(config).model_validate(config.to_dict())
    return plan_store(config, url, catalogue_for(config))


def fill_done(store: StemdlStore, source: StemdlStore) -> dict[str, float]:
    """Write every shard (templates by `write_block`, the rest as hard links of their files)
    and mark every shard done; seconds of each part."""
    from stemdl.datasets.shard import write_block
    from stemdl.datasets.storage import shard_key

    rows = _source_block(source)
    size, k_all = store.shard_size, store.num_shards
    templates = min(k_all, max(1, math.ceil(len(rows["cbed"]) / size)))
    last = k_all - 1
    began = time.perf_counter()
    written = sorted({*range(templates), last})
    for shard in written:
        start, stop = shard_range(shard, size, store.num_samples)
        write_block(store, start, _template_block(rows, start, stop))
    wrote = time.perf_counter()
    root = Path(store.url)
    keys = {spec.name: store.array(spec.name) for spec in sharded_arrays(store.schema)}
    for shard in range(templates, last):
        template = shard % templates
        for array in keys.values():
            target = root / shard_key(array, shard)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(root / shard_key(array, template), target)
    linked = time.perf_counter()
    done = store.array("shard_done")
    done[: templates] = np.ones(templates, dtype=np.uint8)  # by Zarr, then linked like the rest
    done[last] = 1
    for shard in range(templates, last):
        target = root / shard_key(done, shard)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(root / shard_key(done, shard % templates), target)  # ext4: ≤ 65,000 links
    marked = time.perf_counter()
    return {"templates": float(len(written)), "write_block_s": wrote - began,
            "links_s": linked - wrote, "done_mask_s": marked - linked}


# ---------------------------------------------------------------- the timed operations

def run_op(op: str, url: str) -> dict[str, Any]:
    """Run one operation on the store at `url`; a small dict that shows it did the work."""
    if op == "open":
        store = open_stemdl_store(url)
        return {"num_shards": store.num_shards}
    if op == "inspect":
        from stemdl.datasets.inspect import summarize

        summary = summarize(url)
        return {"shards_done": summary["shards_done"], "samples_ok": summary["samples_ok"],
                "per_split": {s: v["samples"] for s, v in summary["splits"].items()}}
    if op == "verify plan":
        from stemdl.datasets.verify import VerifyReport, _check_schema, plan_verification

        store = open_stemdl_store(url)
        report = VerifyReport(store.url, num_shards=store.num_shards)
        report.problems += _check_schema(store)
        plan_verification(store, report)
        return {"to_check": len(report.shards_done), "incomplete": len(report.shards_incomplete),
                "problems": [str(p) for p in report.problems]}
    if op == "stage plan":
        from stemdl.datasets.stage import node_plan

        assigned, not_done = node_plan(open_stemdl_store(url), STAGE_NODE, STAGE_NODES)
        return {"assigned": len(assigned), "not_done": len(not_done)}
    if op == "loader partition":
        from stemdl.configs.dataset import LoaderConfig
        from stemdl.datasets.loader import ShardStream
        from stemdl.datasets.partition import epoch_order, worker_shards

        stream = ShardStream(url, LoaderConfig(num_workers=WORKERS), split="train",
                             rank=0, world_size=RANKS, allow_partial=True)
        order = epoch_order(stream.shards, seed=stream.seed, epoch=0, rank=stream.rank,
                            shuffle=True)
        per_worker = [len(worker_shards(order, w, WORKERS)) for w in range(WORKERS)]
        return {"rank_shards": len(stream.shards), "rank_samples": stream.num_samples(),
                "worker_shards": per_worker}
    if op == BASELINE:
        done = np.asarray(open_stemdl_store(url).array("shard_done")[:]) == 1
        return {"done": int(done.sum())}
    raise ValueError(f"unknown operation {op!r}; known: {OPS}")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ≥ 4.0: `5` to /proc/self/clear_refs), so that
    the peak after an op is the op's, not that of the imports before it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    """VmHWM of /proc/self/status (the peak since the last reset), else getrusage's."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _import_all() -> None:
    """Import the modules every op uses, so that times and memory exclude the imports (and
    every op's process starts from the same RSS)."""
    import stemdl.datasets.inspect
    import stemdl.datasets.loader
    import stemdl.datasets.stage
    import stemdl.datasets.verify  # noqa: F401


def child(op: str, url: str) -> dict[str, Any]:
    """In a fresh process: import what `op` needs, then time it and its peak RSS (above
    the RSS before it ran)."""
    _import_all()
    run_op("open", url)  # the first read of the group (file cache warm)
    base = _rss_bytes()
    reset = _reset_peak_rss()
    began = time.perf_counter()
    result = run_op(op, url)
    seconds = time.perf_counter() - began
    peak = _peak_rss_bytes()
    return {"op": op, "seconds": seconds, "rss_peak_bytes": peak,
            "rss_growth_bytes": peak - base if reset else None, "result": result}


def measure(op: str, url: str, timeout_s: float = 600) -> dict[str, Any]:
    """`child` in a subprocess (`python -m benchmarks.metadata_scale --child`)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.metadata_scale", "--child", op, url],
            cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"op": op, "seconds": float("inf"), "rss_peak_bytes": None,
                "rss_growth_bytes": None, "result": {"error": f"over {timeout_s:.0f} s"}}
    if done.returncode != 0:
        raise RuntimeError(f"{op} on {url} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_sizes(source_url: str, work: Path, sizes: list[int], shard_size: int = 64,
                  ops: tuple[str, ...] = (*OPS, BASELINE), timeout_s: float = 600,
                  log: Any = print) -> list[dict[str, Any]]:
    """For each size: plan a store, time `ops` (absent), fill it, time `ops` (done), remove
    it. One row per (size, state, op), with the build times."""
    source = open_stemdl_store(source_url)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        url = str(work / f"scale-{n}.zarr")
        shutil.rmtree(url, ignore_errors=True)
        began = time.perf_counter()
        store = plan_scaled(source, url, n, shard_size)
        build = {"plan_s": time.perf_counter() - began}
        for state in ("absent", "done"):
            if state == "done":
                build.update(fill_done(store, source))
                log(f"  N={n}: built in {json.dumps({k: round(v, 2) for k, v in build.items()})}")
            for op in ops:
                row = measure(op, url, timeout_s)
                row.update(samples=n, shards=store.num_shards, state=state)
                rows.append(row)
                log(f"  N={n} {state:6} {op:17} {row['seconds']:8.3f} s  "
                    f"+{_mib(row['rss_growth_bytes'])} MiB  {json.dumps(row['result'])[:160]}")
        rows.append({"op": "build", "samples": n, "state": "done", "result": build})
        shutil.rmtree(url, ignore_errors=True)
    return rows


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def growth(rows: list[dict[str, Any]], op: str, state: str, key: str) -> list[float]:
    """Ratio of `key` between consecutive sizes, divided by the ratio of the sizes (≤ 1:
    at most linear)."""
    picked = sorted((r for r in rows if r["op"] == op and r["state"] == state),
                    key=lambda r: r["samples"])
    out = []
    for a, b in itertools.pairwise(picked):
        if a[key] and b[key] is not None and a[key] > 0:
            out.append((b[key] / a[key]) / (b["samples"] / a["samples"]))
    return out


def table(rows: list[dict[str, Any]]) -> str:
    sizes = sorted({r["samples"] for r in rows})
    head = " | ".join(f"N = {n:.0e}: s, MiB" for n in sizes)
    lines = [f"| state | operation | {head} |", "|---|---|" + "---:|" * len(sizes)]
    for state in ("absent", "done"):
        for op in (*OPS, BASELINE):
            cells = []
            for n in sizes:
                row = next((r for r in rows if (r["op"], r["state"], r["samples"]) ==
                            (op, state, n)), None)
                cells.append("-" if row is None else
                             f"{row['seconds']:.3f}, {_mib(row['rss_growth_bytes'])}")
            lines.append(f"| {state} | {op} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("OP", "STORE"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--source", default=str(DEFAULT_SOURCE))
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "cache" / "metadata-scale"))
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", help="also write every row to this file")
    parser.add_argument("--ops", nargs="+", default=[*OPS, BASELINE], choices=[*OPS, BASELINE],
                        help="operations to time (default: all, and the baseline)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    if not Path(args.source, "zarr.json").exists():
        from stemdl.configs import load_config
        from stemdl.datasets.generate import generate

        print(f"generating {args.source} with the small preset …", flush=True)
        generate(load_config("small"), args.source, progress=False)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes]
    load = os.getloadavg()
    rows = measure_sizes(args.source, work, sizes, args.shard_size, tuple(args.ops),
                         timeout_s=args.timeout, log=lambda line: print(line, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print()
    print(f"{time.strftime('%Y-%m-%d', time.gmtime())}, {platform.node()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}; source "
          f"`{Path(args.source).name}`, shards of {args.shard_size}; load average before "
          f"{'/'.join(f'{v:.2f}' for v in load)}. Seconds and peak RSS above the process's "
          "RSS after its imports (MiB), each operation in a fresh process:")
    print()
    print(table(rows))
    print()
    print("Growth per step of 10× in N (time ratio / N ratio; ≤ 1 is at most linear):")
    for state in ("absent", "done"):
        for op in (*OPS, BASELINE):
            ratios = growth(rows, op, state, "seconds")
            print(f"- {state} {op}: {', '.join(f'{r:.2f}' for r in ratios)}")
    largest = max(sizes)
    over = [r for r in rows if r["samples"] == largest and r["op"] in OPS and (
        r["seconds"] > LIMIT_S or (r["rss_growth_bytes"] or 0) > LIMIT_BYTES)]
    print()
    print(f"Over {LIMIT_S:.0f} s or {LIMIT_BYTES / 2**30:.0f} GiB at N = {largest:.0e}: "
          + (", ".join(f"{r['state']} {r['op']}" for r in over) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

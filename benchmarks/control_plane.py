"""Coordinator vs response cache, measured: step time and control traffic on 2–8 gloo ranks.

    python -m benchmarks.control_plane                       # 2, 4, 8 ranks; both models
    python -m benchmarks.control_plane --worlds 2 --steps 8  # quicker

Why: the paper's claim is that decentralized orchestration (a response cache: no rank asks a
coordinator what to reduce) scales where a coordinator does not. On a 2-core machine the
step times cannot show scale, but the *control path* can be counted exactly (collectives per
step, bytes through rank 0) and its software costs measured, which is what
`benchmarks/scaling_model.py` extrapolates from. Variants, interleaved one step each per
round, in the same processes, on the same data:

- `local`: no communication (the floor).
- `per-tensor`: after backward, one blocking allreduce per gradient tensor (no fusion, no
  overlap: Horovod with fusion off, and what the α–β model must reproduce).
- `ddp`: torch DistributedDataParallel, `bucket_cap_mb` = the groups' size.
- `grouped`: stemdl's `GroupedAllreduce` (cached schedule, overlapped groups).
- `coordinator`: `benchmarks.coordinator.CoordinatorAllreduce` (same groups, rank 0
  negotiates every `--cycle-ms`).

Also measured in every run, for the model: an allreduce sweep over message sizes (α–β fit
per run, so a check compares a step time with a sweep made under the same machine load), the time of each variant's collectives alone (so `hidden` = 1 − wait after
backward / collectives alone), and the cost of one bare coordinator cycle (gather + broadcast
of the ready bits) vs one bit-vector MIN-allreduce.

Results go to stdout and to `--out` (JSON), which `scaling_model.py` and the tests read.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from benchmarks.coordinator import HOROVOD_CYCLE_TIME_S, CoordinatorAllreduce
from stemdl.configs import load_config
from stemdl.train.arrangements import build_model_from_config
from stemdl.train.grouped_allreduce import GroupedAllreduce
from stemdl.train.local_ranks import run_local_ranks

WARMUP = 2
SWEEP_BYTES = [2**k for k in range(8, 23, 2)]  # 256 B … 4 MiB
DEFAULT_OUT = Path(__file__).with_name("control_plane.json")


# ---------------------------------------------------------------------------- models


class DeepMLP(nn.Module):
    """50 Linear layers = 100 parameter tensors: many small tensors, where per-tensor
    collectives and per-tensor negotiation cost the most."""

    def __init__(self, width: int = 128, layers: int = 50) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


def build_workload(name: str, batch: int, rank: int, steps: int
                   ) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """(model, per-step batches of this rank) for `small` (FC-DenseNet preset) or `mlp100`."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(rank)
    if name == "mlp100":
        model: nn.Module = DeepMLP()
        x_shape, y_shape = (batch * 32, 128), (batch * 32, 128)
    else:
        config = load_config(name)
        shape = config.simulation.sample_shape
        model = build_model_from_config(config)
        x_shape = (batch, *shape.input_shape)
        y_shape = (batch, shape.out_channels, *shape.target_px)
    data = [(torch.randn(x_shape, generator=gen), torch.randn(y_shape, generator=gen))
            for _ in range(steps)]
    return model, data


# ---------------------------------------------------------------------------- variants


class Variant:
    """A model copy, its optimizer, and what finishes the step after backward."""

    def __init__(self, model: nn.Module, finish: Callable[[], None]) -> None:
        self.model, self.finish = model, finish
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        self.step_s: list[float] = []
        self.wait_s: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor, record: bool) -> None:
        dist.barrier()  # all ranks start together
        start = time.perf_counter()
        F.mse_loss(self.model(x), y).backward()
        backward_done = time.perf_counter()
        self.finish()
        finished = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if record:
            self.step_s.append(time.perf_counter() - start)
            self.wait_s.append(finished - backward_done)


def per_tensor_finish(model: nn.Module, world: int) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]

    def finish() -> None:
        for p in params:  # one blocking collective per tensor, in registration order
            dist.all_reduce(p.grad)
            p.grad.div_(world)

    return finish


# ---------------------------------------------------------------------------- measurements


def _median_time(fn: Callable[[], None], reps: int) -> float:
    times = []
    for _ in range(reps):
        dist.barrier()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def allreduce_sweep(reps: int, burst: int = 20,
                    sizes: Sequence[int] = tuple(SWEEP_BYTES)) -> dict[int, float]:
    """Median seconds of one blocking fp32 allreduce per message size (bytes).

    Timed as bursts of `burst` back-to-back allreduces of *distinct* tensors after a
    barrier, divided by `burst`: what a sequence of per-tensor gradient allreduces sees,
    without the skew of ranks leaving the barrier at different times that a single timed
    collective carries.
    """
    out = {}
    for nbytes in sizes:
        bufs = [torch.ones(nbytes // 4) for _ in range(burst)]
        dist.all_reduce(bufs[0])  # warm the connection pair for this size

        def run(bufs: list[torch.Tensor] = bufs) -> None:
            for buf in bufs:
                dist.all_reduce(buf)

        out[nbytes] = _median_time(run, reps) / burst
    return out


def launch_cost(count: int = 32) -> float:
    """CPU seconds to *issue* one asynchronous allreduce (the software cost σ per collective,
    independent of the network): issue `count`, time only the issuing, then wait."""
    bufs = [torch.ones(16) for _ in range(count)]
    dist.barrier()
    start = time.perf_counter()
    works = [dist.all_reduce(b, async_op=True) for b in bufs]
    issued = time.perf_counter() - start
    for work in works:
        work.wait()
    return issued / count


def collectives_alone(sizes_bytes: list[int], blocking: bool, reps: int) -> float:
    """Seconds for this list of fp32 allreduces with nothing else running."""
    bufs = [torch.ones(max(1, n // 4)) for n in sizes_bytes]

    def run() -> None:
        if blocking:
            for b in bufs:
                dist.all_reduce(b)
        else:
            for w in [dist.all_reduce(b, async_op=True) for b in bufs]:
                w.wait()

    return _median_time(run, reps)


def control_round_costs(n_params: int, n_groups: int, reps: int) -> dict[str, float]:
    """One bare coordinator cycle (gather to rank 0 + broadcast) vs one bit-vector MIN."""
    request = torch.ones(n_params + 1, dtype=torch.uint8)
    response = torch.ones(n_groups + 1, dtype=torch.uint8)
    rank, world = dist.get_rank(), dist.get_world_size()
    gather_list = [torch.empty_like(request) for _ in range(world)] if rank == 0 else None

    def cycle() -> None:
        dist.gather(request, gather_list=gather_list, dst=0)
        if rank == 0:
            torch.stack(gather_list).min(dim=0)
        dist.broadcast(response, src=0)

    bits = torch.ones(n_params + n_groups, dtype=torch.uint8)
    return {"coordinator_cycle_s": _median_time(cycle, reps),
            "launch_s": statistics.median(launch_cost() for _ in range(3)),
            "bitvector_allreduce_s": _median_time(
                lambda: dist.all_reduce(bits, op=dist.ReduceOp.MIN), reps)}


def bench_rank(rank: int, world: int, workload: str, steps: int, batch: int, group_kib: int,
               cycle_s: float, sweep: bool) -> dict[str, Any]:
    """Everything measured on one rank for one (world, workload)."""
    torch.set_num_threads(1)
    base, data = build_workload(workload, batch, rank, steps)
    params = [p for p in base.parameters() if p.requires_grad]
    n = len(params)
    group_bytes = group_kib * 1024
    variants: dict[str, Variant] = {"local": Variant(copy.deepcopy(base), lambda: None)}
    flat = copy.deepcopy(base)
    variants["per-tensor"] = Variant(flat, per_tensor_finish(flat, world))
    ddp = nn.parallel.DistributedDataParallel(copy.deepcopy(base),
                                              bucket_cap_mb=group_bytes / 2**20)
    variants["ddp"] = Variant(ddp, lambda: None)
    grouped_model = copy.deepcopy(base)
    grouped = GroupedAllreduce(grouped_model, group_bytes=group_bytes)
    variants["grouped"] = Variant(grouped_model, grouped.synchronize)
    coord_model = copy.deepcopy(base)
    coordinator = CoordinatorAllreduce(coord_model, group_bytes=group_bytes, cycle_time_s=cycle_s)
    variants["coordinator"] = Variant(coord_model, coordinator.synchronize)

    for i, (x, y) in enumerate(data):
        for variant in variants.values():
            variant.step(x, y, record=i >= WARMUP)
    timed = steps - WARMUP
    coord_before = coordinator.snapshot()
    coordinator.close()

    assert grouped.groups is not None and coordinator.groups is not None
    group_sizes = [g.numel * 4 for g in grouped.groups]
    tensor_sizes = [p.numel() * 4 for p in params]
    g_stats = grouped.snapshot()
    result: dict[str, Any] = {name: {"step_s": v.step_s, "wait_s": v.wait_s}
                              for name, v in variants.items()}
    # Counts per *cached* step: the reducers' first step (schedule learning) is left out.
    learn = 1
    result["per-tensor"].update(data_collectives=n, control_collectives=0, control_bytes_rank0=0)
    logged = ddp._get_ddp_logging_data()  # buckets as rebuilt after the first step
    buckets = logged.get("rebuilt_bucket_sizes") or logged.get("bucket_sizes", "")
    result["ddp"].update(data_collectives=len([b for b in str(buckets).split(",") if b.strip()]),
                         control_collectives=0, control_bytes_rank0=0)
    result["grouped"].update(
        data_collectives=g_stats.groups, control_collectives=1,
        control_bytes_rank0=n + g_stats.groups,  # its share of one uint8 MIN-allreduce
        collectives_counted=(g_stats.collectives_launched - 1 - g_stats.groups * learn)
        / (g_stats.steps - learn))
    c_steps = coord_before.steps - learn
    result["coordinator"].update(
        data_collectives=coord_before.data_collectives / coord_before.steps,
        control_collectives=coord_before.control_collectives / c_steps,
        control_bytes_rank0=coord_before.control_bytes_rank0 / c_steps,
        cycles=coord_before.cycles / c_steps,
        launched_before_backward_end=coord_before.launched_early / c_steps)
    reps = max(5, timed)
    alone_groups = collectives_alone(group_sizes, blocking=False, reps=reps)
    alone_tensors = collectives_alone(tensor_sizes, blocking=True, reps=reps)
    for name in ("grouped", "coordinator", "ddp"):
        result[name]["comm_alone_s"] = alone_groups
    result["per-tensor"]["comm_alone_s"] = alone_tensors
    result["meta"] = {
        "workload": workload, "world": world, "params": sum(p.numel() for p in params),
        "tensors": n, "groups": len(grouped.groups), "group_bytes": group_bytes,
        "tensor_bytes": tensor_sizes, "group_sizes_bytes": group_sizes, "batch": batch,
        "timed_steps": timed, "cycle_s": cycle_s,
        **control_round_costs(n, len(grouped.groups), reps=3 * reps),
    }
    if sweep:
        result["sweep"] = allreduce_sweep(reps=max(3, reps // 2))
    grouped.remove()
    return result


def merge_ranks(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Per step: the step time of the slowest rank (a step ends when the last rank ends) and
    the wait of the rank that finished backward last (the others also wait for *it*: that is
    load imbalance, not communication); then medians over steps. Counts from rank 0."""
    merged = copy.deepcopy(per_rank[0])
    for name, row in merged.items():
        if name in ("meta", "sweep"):
            continue
        steps = zip(*(r[name]["step_s"] for r in per_rank), strict=True)
        waits = zip(*(r[name]["wait_s"] for r in per_rank), strict=True)
        row["step_s"] = statistics.median(max(s) for s in steps)
        row["wait_s"] = statistics.median(min(w) for w in waits)
        if "comm_alone_s" in row:
            row["comm_alone_s"] = max(r[name]["comm_alone_s"] for r in per_rank)
    if "sweep" in merged:
        merged["sweep"] = {str(k): max(r["sweep"][k] for r in per_rank) for k in merged["sweep"]}
    for key in ("coordinator_cycle_s", "bitvector_allreduce_s", "launch_s"):
        merged["meta"][key] = max(r["meta"][key] for r in per_rank)
    return merged


def format_table(run: dict[str, Any]) -> str:
    meta = run["meta"]
    lines = [f"{meta['world']} ranks, `{meta['workload']}`: {meta['tensors']} tensors, "
             f"{meta['params']:,} parameters, {meta['groups']} groups of "
             f"{meta['group_bytes'] // 1024} KiB; coordinator cycle alone "
             f"{meta['coordinator_cycle_s'] * 1e3:.2f} ms, bit-vector MIN alone "
             f"{meta['bitvector_allreduce_s'] * 1e3:.2f} ms",
             "| variant | step s | vs ddp | wait after backward s | collectives alone s | "
             "hidden | data colls/step | control colls/step | control B at rank 0/step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ddp = run["ddp"]["step_s"]
    for name in ("local", "per-tensor", "ddp", "grouped", "coordinator"):
        row = run[name]
        if name == "local":
            lines.append(f"| local | {row['step_s']:.4f} | {row['step_s'] / ddp:.2f} | – | – | – "
                         "| 0 | 0 | 0 |")
            continue
        hidden = "n/a (inside backward)" if name == "ddp" else \
            f"{1 - row['wait_s'] / row['comm_alone_s']:.2f}"
        lines.append(
            f"| {name} | {row['step_s']:.4f} | {row['step_s'] / ddp:.2f} | "
            f"{row['wait_s']:.4f} | {row['comm_alone_s']:.4f} | {hidden} | "
            f"{row['data_collectives']:.0f} | {row['control_collectives']:.1f} | "
            f"{row['control_bytes_rank0']:,.0f} |")
    return "\n".join(lines)


def markdown_summary(runs: list[dict[str, Any]]) -> str:
    """All recorded runs as one Markdown table (for RESULTS.md)."""
    lines = ["| ranks | model | variant | step s | vs DDP | wait after backward s | "
             "collectives alone s | hidden | data colls/step | control colls/step | "
             "control B through rank 0/step |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"
             "---:|---:|"]
    for run in sorted(runs, key=lambda r: (r["meta"]["workload"] != "small",
                                           r["meta"]["workload"], r["meta"]["world"])):
        meta, ddp = run["meta"], run["ddp"]["step_s"]
        for name in ("per-tensor", "ddp", "grouped", "coordinator"):
            row = run[name]
            hidden = "–" if name == "ddp" else f"{1 - row['wait_s'] / row['comm_alone_s']:.2f}"
            wait = "–" if name == "ddp" else f"{row['wait_s']:.4f}"
            lines.append(
                f"| {meta['world']} | {meta['workload']} | {name} | {row['step_s']:.3f} | "
                f"{row['step_s'] / ddp:.2f} | {wait} | {row['comm_alone_s']:.4f} | {hidden} | "
                f"{row['data_collectives']:.0f} | {row['control_collectives']:.1f} | "
                f"{row['control_bytes_rank0']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--workloads", nargs="+", default=["small", "mlp100"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--group-kib", type=int, default=64)
    parser.add_argument("--cycle-ms", type=float, default=HOROVOD_CYCLE_TIME_S * 1e3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--append", action="store_true",
                        help="keep --out's runs of other (world, workload) pairs")
    parser.add_argument("--report", action="store_true",
                        help="measure nothing: print --out's runs as one Markdown table")
    args = parser.parse_args()
    if args.report:
        print(markdown_summary(json.loads(args.out.read_text())["runs"]))
        return
    runs = []
    for world in args.worlds:
        for workload in args.workloads:
            began = time.perf_counter()
            per_rank = run_local_ranks(
                bench_rank, world, (workload, args.steps, args.batch, args.group_kib,
                                    args.cycle_ms / 1e3, True), timeout_s=600)
            run = merge_ranks(per_rank)
            run["meta"]["wall_s"] = time.perf_counter() - began
            runs.append(run)
            print(format_table(run), flush=True)
            print(flush=True)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    if args.append and args.out.exists():
        new = {(r["meta"]["world"], r["meta"]["workload"]) for r in runs}
        kept = [r for r in json.loads(args.out.read_text())["runs"]
                if (r["meta"]["world"], r["meta"]["workload"]) not in new]
        runs = sorted(kept + runs, key=lambda r: (r["meta"]["world"], r["meta"]["workload"]))
    args.out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cpus": os.cpu_count(),
                    "loadavg_after": load},
        "settings": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

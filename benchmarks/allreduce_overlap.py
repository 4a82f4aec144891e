"""Step time of GroupedAllreduce against PyTorch DDP on real gloo ranks (CPU), FC-DenseNet.

    python -m benchmarks.allreduce_overlap                  # 2 ranks, `small` preset model
    python -m benchmarks.allreduce_overlap --world 2 --steps 12 --batch 2 --group-kib 64

Every rank trains the same FC-DenseNet on its own random batch with SGD. Variants, run one
after the other in the same processes (median step time over the timed steps):

- `local`: no communication at all (the floor; not data-parallel).
- `after-backward`: one flat allreduce of all gradients after backward (no overlap).
- `ddp`: torch.nn.parallel.DistributedDataParallel (its C++ reducer, bucket_cap_mb matched).
- `grouped`: GroupedAllreduce, groups of --group-kib, launched during backward.
- `grouped-fp16`: the same with fp16 compression.

The variants are interleaved (one step of each per round) so that load changes on the machine
affect all of them alike. `wait s` is the time spent in synchronize() (after backward).

On one CPU machine the ranks share cores with the gloo threads, so overlap can only hide
communication behind compute where cores are free; the numbers are for comparing variants on
the same machine, not for predicting a GPU cluster.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from stemdl.configs import load_config
from stemdl.train.arrangements import build_model
from stemdl.train.grouped_allreduce import GroupedAllreduce
from stemdl.train.local_ranks import run_local_ranks

WARMUP = 2


class Variant:
    """One way of averaging gradients: a model copy, its optimizer, and what ends backward."""

    def __init__(self, model: torch.nn.Module, finish: Callable[[], None]) -> None:
        self.model, self.finish = model, finish
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.times: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor, record: bool) -> None:
        dist.barrier()  # every rank starts the step together
        start = time.perf_counter()
        F.mse_loss(self.model(x), y).backward()
        self.finish()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if record:
            self.times.append(time.perf_counter() - start)


def _flat_after_backward(model: torch.nn.Module, world: int) -> Callable[[], None]:
    params = list(model.parameters())

    def finish() -> None:
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    return finish


def bench_rank(rank: int, world: int, preset: str, steps: int, batch: int, group_kib: int,
               threads: int) -> dict[str, dict[str, float]]:
    """Interleaved: each round runs one step of every variant, so load drift hits all alike."""
    torch.set_num_threads(threads)
    config = load_config(preset)
    shape = config.simulation.sample_shape
    torch.manual_seed(0)
    base = build_model(config.model, shape)
    gen = torch.Generator().manual_seed(rank)
    batches = [(torch.randn(batch, *shape.input_shape, generator=gen),
                torch.randn(batch, shape.out_channels, *shape.target_px, generator=gen))
               for _ in range(steps)]
    variants: dict[str, Variant] = {"local": Variant(copy.deepcopy(base), lambda: None)}
    flat = copy.deepcopy(base)
    variants["after-backward"] = Variant(flat, _flat_after_backward(flat, world))
    ddp = torch.nn.parallel.DistributedDataParallel(copy.deepcopy(base),
                                                    bucket_cap_mb=group_kib / 1024)
    variants["ddp"] = Variant(ddp, lambda: None)
    reducers = {}
    for name, compression in (("grouped", None), ("grouped-fp16", "fp16")):
        model = copy.deepcopy(base)
        reducers[name] = GroupedAllreduce(model, group_bytes=group_kib * 1024,
                                          compression=compression)
        variants[name] = Variant(model, reducers[name].synchronize)
    for i, (x, y) in enumerate(batches):
        for variant in variants.values():
            variant.step(x, y, record=i >= WARMUP)
    results: dict[str, dict[str, float]] = {
        name: {"step_s": statistics.median(v.times)} for name, v in variants.items()}
    for name, reducer in reducers.items():
        stats = reducer.snapshot()
        results[name].update({"groups": stats.groups, "wait_s": stats.seconds_waited / stats.steps,
                              "collectives_per_step": stats.collectives_launched / stats.steps,
                              "bytes_per_step": stats.bytes_per_step})
    results["model"] = {"parameters": sum(p.numel() for p in base.parameters()),
                        "gradient_bytes": 4 * sum(p.numel() for p in base.parameters())}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=22)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--group-kib", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    args = parser.parse_args()
    per_rank = run_local_ranks(bench_rank, args.world, (args.preset, args.steps, args.batch,
                                                        args.group_kib, args.threads),
                               timeout_s=1200)
    model = per_rank[0].pop("model")
    print(f"{args.world} gloo ranks, `{args.preset}` FC-DenseNet ({model['parameters']:,} "
          f"parameters, {model['gradient_bytes'] / 2**20:.2f} MiB of fp32 gradients), batch "
          f"{args.batch}/rank, {args.threads} thread(s)/rank, groups of {args.group_kib} KiB, "
          f"median of {args.steps - WARMUP} interleaved steps (slowest rank):")
    print(f"{'variant':>15} {'step s':>9} {'vs ddp':>7} {'groups':>7} {'wait s':>8} "
          f"{'colls/step':>10} {'bytes/step':>11}")
    ddp = max(r["ddp"]["step_s"] for r in per_rank)
    for name in per_rank[0]:
        step = max(r[name]["step_s"] for r in per_rank)
        row = per_rank[0][name]
        extra = ""
        if "groups" in row:
            extra = (f"{row['groups']:>7} {row['wait_s']:>8.4f} "
                     f"{row['collectives_per_step']:>10.1f} {row['bytes_per_step']:>11,}")
        print(f"{name:>15} {step:>9.4f} {step / ddp:>7.2f} {extra}")


if __name__ == "__main__":
    main()

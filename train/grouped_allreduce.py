"""Decentralized grouped allreduce: data-parallel gradient averaging for any `nn.Module`.

How it works
------------
This is the communication scheme of Laanait et al. (2019) (Horovod with a response cache and
graph-aware tensor grouping), rebuilt on `torch.distributed`. The reducer never wraps the model:
it hooks every parameter with `register_post_accumulate_grad_hook`, which fires once per
backward pass, right after the parameter's `.grad` has been accumulated.

*First step: learn the grouping.* During the first backward pass nothing is reduced; the hooks
record the order in which gradients become ready. In the first `synchronize()`, rank 0's order
is broadcast (ranks could differ, e.g. through data-dependent control flow, and the launch order
must be identical everywhere) and cut into *groups*: consecutive gradients of one dtype, closed
at `group_bytes` (or `num_groups` equal groups). A group is numbered by when its last member
becomes ready. Shared parameters appear once. Before any of this, at construction, every rank
checks its parameter fingerprint (names, shapes, dtypes) and settings against rank 0's; a rank
whose model differs makes every rank raise at once, naming the parameter and the rank.

*Every later step: no coordinator.* The grouping is the response cache: it is reused as is, and
no rank asks anyone what to reduce. When a hook fires, its group's count of outstanding members
drops; a group whose members are all ready is flattened into its fused buffer and launched as
one asynchronous allreduce, while backward goes on computing the layers below. Groups launch
strictly in group order: a ready group waits until every earlier group has been launched, so
all ranks issue the same collectives in the same order (a collective matches its peers by
position in that sequence; two ranks that launched different groups first would deadlock or,
worse, sum the wrong buffers).

*Unused parameters.* A parameter may produce no gradient in a step (an unused branch, on some
ranks or on all). Then its group never becomes ready during backward, which is why the order
rule above matters: `synchronize()` launches every group not launched yet, in order, with the
missing gradients zero-filled, so every rank has launched the same groups. Only then do the
ranks agree, with one MIN-allreduce over a uint8 vector, on two sets of bits:

- per parameter, "unused here": the MIN is a bitwise AND, true only if no rank used it. Those
  parameters keep their `.grad` untouched (None stays None), exactly as DDP does; every other
  parameter receives the average, with zeros from the ranks that did not use it.
- per group, "not stale here": false on a rank where a gradient arrived after its group had
  been packed (possible only for parameters no rank had used in the previous step, which a group
  does not wait for, see below). Groups stale on any rank are reduced once more, in group
  order, on every rank.

The agreed "unused everywhere" bits of one step become the next step's expectations: a group
does not wait for parameters that no rank used last time, and a group of only such parameters
is not reduced at all unless someone used one. A model with a branch that is never taken thus
keeps full overlap, and still gets correct gradients on the step the branch is taken.

*After the collectives.* `synchronize()` waits for every group, turns each sum into the average
(via the compression plug-in) and writes it back into `.grad`. The optimizer step follows.
`no_sync()` skips all of this for gradient accumulation: gradients accumulate locally and the
next backward outside the context reduces the sum, as DDP's `no_sync` does.

Compression is a plug-in (`train.compression`), not a branch in this loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn

from stemdl.train.allreduce_grouping import (
    Group,
    agree_on_model,
    broadcast_ready_order,
    complete_order,
    cut_into_groups,
    fingerprint,
)
from stemdl.train.compression import GradientCompression, get_compression

DEFAULT_GROUP_BYTES = 8 * 2**20


@dataclass
class AllreduceStats:
    """Counters since construction; `last_wait_s` is the latest step's time in synchronize()."""

    groups: int = 0
    bytes_per_step: int = 0  # on the wire, all groups, once each
    steps: int = 0
    collectives_launched: int = 0  # group allreduces + agreements + corrections
    corrections: int = 0  # groups reduced twice because a gradient came late
    seconds_waited: float = 0.0
    last_wait_s: float = 0.0


@dataclass
class _InFlight:
    work: dist.Work
    wire: torch.Tensor


class GroupedAllreduce:
    """Average gradients over `process_group` with fused, overlapped, cached-order allreduces.

    Use: `loss.backward(); reducer.synchronize(); optimizer.step()`. With no process group
    initialized, it is a no-op (one process), so a training loop needs no special case.
    """

    def __init__(
        self,
        model: nn.Module,
        process_group: dist.ProcessGroup | None = None,
        group_bytes: int = DEFAULT_GROUP_BYTES,
        num_groups: int | None = None,
        compression: str | GradientCompression | None = None,
        broadcast_parameters: bool = True,
    ) -> None:
        if group_bytes < 1 or (num_groups is not None and num_groups < 1):
            raise ValueError("group_bytes and num_groups must be positive")
        self._process_group = process_group
        if self._process_group is None and dist.is_available() and dist.is_initialized():
            self._process_group = dist.group.WORLD
        self.world_size = dist.get_world_size(self._process_group) if self._process_group is not None else 1
        self.rank = dist.get_rank(self._process_group) if self._process_group is not None else 0
        self.group_bytes, self.num_groups = group_bytes, num_groups
        self.compression = get_compression(compression)

        named: list[tuple[str, nn.Parameter]] = []
        seen: set[int] = set()
        for name, param in model.named_parameters(remove_duplicate=False):
            if param.requires_grad and id(param) not in seen:  # shared parameters once
                seen.add(id(param))
                named.append((name, param))
        self._names = [name for name, _ in named]
        self._params = [param for _, param in named]
        n = len(self._params)

        self.stats = AllreduceStats()
        self.groups: list[Group] | None = None
        self._group_of: list[int] = []
        self._buffers: list[torch.Tensor] = []
        self._ready_order: list[int] = []  # first backward: when each gradient arrived
        self._ready_seen: set[int] = set()
        self._device = self._params[0].device if self._params else torch.device("cpu")
        self._expected = [True] * n  # used by some rank in the previous step
        self._accumulating = False
        self._reset_step()
        if self._process_group is not None:
            settings = {"group_bytes": group_bytes, "num_groups": num_groups,
                        "compression": self.compression.name}
            agree_on_model(fingerprint(named), settings, self._process_group)
            if broadcast_parameters:
                self._broadcast_state(model)
        self._hooks = [p.register_post_accumulate_grad_hook(self._make_hook(i))
                       for i, p in enumerate(self._params)]

    # ----------------------------------------------------------------- public API

    def synchronize(self) -> None:
        """Finish this step's reduction: afterwards every `.grad` holds the average over ranks."""
        if self._process_group is None:
            self._reset_step()
            self.stats.steps += 1
            return
        if self._accumulating:
            raise RuntimeError("GroupedAllreduce.synchronize() called inside no_sync()")
        start = time.perf_counter()
        if self.groups is None:
            self._build_grouping()
        assert self.groups is not None
        for g in range(self._next_group, len(self.groups)):  # same launches on every rank
            if self._group_expected[g] and self._in_flight[g] is None:
                self._launch(g)
        self._next_group = len(self.groups)
        unused_everywhere, stale_somewhere = self._agree_on_readiness()
        for g in stale_somewhere:  # ascending, hence the same order on every rank
            if self._in_flight[g] is not None:
                self._in_flight[g].work.wait()
            self._launch(g)
            self.stats.corrections += 1
        for g, flight in enumerate(self._in_flight):
            if flight is not None:
                flight.work.wait()
                self._write_back(g, flight, unused_everywhere)
        self._set_expectations(unused_everywhere)
        waited = time.perf_counter() - start
        self.stats.last_wait_s = waited
        self.stats.seconds_waited += waited
        self.stats.steps += 1
        self._reset_step()

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients locally; the next backward outside reduces the sum."""
        previous, self._accumulating = self._accumulating, True
        try:
            yield
        finally:
            self._accumulating = previous

    def remove(self) -> None:
        """Detach the hooks; the reducer is unusable afterwards."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def snapshot(self) -> AllreduceStats:
        """A copy of the counters."""
        return replace(self.stats)

    # ----------------------------------------------------------------- construction

    @torch.no_grad()
    def _broadcast_state(self, model: nn.Module) -> None:
        """Start every rank from rank 0's weights and buffers, as DDP does."""
        src = dist.get_global_rank(self._process_group, 0)
        for tensor in [*self._params, *model.buffers()]:
            dist.broadcast(tensor.data, src=src, group=self._process_group)

    def _build_grouping(self) -> None:
        order = broadcast_ready_order(self._ready_order, self._process_group)
        order = complete_order(order, len(self._params))
        self.groups = cut_into_groups(order, self._params, group_bytes=self.group_bytes,
                                      num_groups=self.num_groups)
        self._group_of = [0] * len(self._params)
        for group in self.groups:
            for p in group.members:
                self._group_of[p] = group.index
        self._buffers = [torch.zeros(g.numel, dtype=g.dtype, device=self._device)
                         for g in self.groups]
        self.stats.groups = len(self.groups)
        self.stats.bytes_per_step = sum(
            g.numel * self.compression.compress(buf[:1].clone(), self.world_size).element_size()
            for g, buf in zip(self.groups, self._buffers, strict=True)
        )
        self._set_expectations([False] * len(self._params))
        self._reset_groups()  # keep _used: it records the first backward

    # ----------------------------------------------------------------- per step

    def _reset_step(self) -> None:
        n = len(self._params)
        self._used = [False] * n  # produced a gradient since the last synchronize()
        self._fired = [False] * n  # ... in a backward pass outside no_sync()
        self._reset_groups()

    def _reset_groups(self) -> None:
        n_groups = len(self.groups) if self.groups is not None else 0
        self._in_flight: list[_InFlight | None] = [None] * n_groups
        self._stale = [False] * n_groups  # a gradient arrived after the group was packed
        self._next_group = 0  # groups below this one are launched (or skipped)
        self._pending = list(self._expected_count) if self.groups is not None else []

    def _set_expectations(self, unused_everywhere: list[bool]) -> None:
        assert self.groups is not None
        self._expected = [not u for u in unused_everywhere]
        self._expected_count = [sum(self._expected[p] for p in g.members) for g in self.groups]
        self._group_expected = [count > 0 for count in self._expected_count]

    def _make_hook(self, index: int) -> Callable[[torch.Tensor], None]:
        def hook(_: torch.Tensor) -> None:
            self._on_gradient(index)

        return hook

    def _on_gradient(self, p: int) -> None:
        """A parameter's gradient is accumulated: count it, launch what is ready, in order."""
        if self._process_group is None:
            return
        self._used[p] = True
        if self.groups is None or self._accumulating:
            if self.groups is None and p not in self._ready_seen:
                self._ready_seen.add(p)
                self._ready_order.append(p)
            return
        if self._fired[p]:
            raise RuntimeError(
                f"GroupedAllreduce (rank {self.rank}): parameter {self._names[p]!r} produced a "
                "gradient twice since the last synchronize(). Call synchronize() after every "
                "backward, or run the earlier backward passes inside no_sync()."
            )
        self._fired[p] = True
        g = self._group_of[p]
        if self._in_flight[g] is not None:
            self._stale[g] = True  # packed before this gradient arrived
            return
        if self._expected[p]:
            self._pending[g] -= 1
            self._launch_ready_groups()

    def _launch_ready_groups(self) -> None:
        assert self.groups is not None
        while self._next_group < len(self.groups):
            g = self._next_group
            if self._group_expected[g]:
                if self._pending[g] > 0:
                    return
                self._launch(g)
            self._next_group += 1

    def _launch(self, g: int) -> None:
        """Flatten the group's gradients (zeros where none) and start one async allreduce."""
        assert self.groups is not None
        group, flat = self.groups[g], self._buffers[g]
        group.pack(flat, self._params, self._names)
        with torch.no_grad():
            wire = self.compression.compress(flat, self.world_size)
        work = dist.all_reduce(wire, op=dist.ReduceOp.SUM, group=self._process_group, async_op=True)
        self._in_flight[g] = _InFlight(work, wire)
        self.stats.collectives_launched += 1

    def _agree_on_readiness(self) -> tuple[list[bool], list[int]]:
        """One MIN-allreduce: [unused here (per parameter)] + [not stale here (per group)]."""
        assert self.groups is not None
        stale = list(self._stale)
        for group in self.groups:
            if not self._group_expected[group.index] and any(self._used[p] for p in group.members):
                stale[group.index] = True  # skipped group, but this rank has a gradient for it
        bits = [not u for u in self._used] + [not s for s in stale]
        flags = torch.tensor(bits, dtype=torch.uint8, device=self._device)
        dist.all_reduce(flags, op=dist.ReduceOp.MIN, group=self._process_group)
        self.stats.collectives_launched += 1
        agreed = flags.tolist()
        n = len(self._params)
        unused_everywhere = [bool(b) for b in agreed[:n]]
        stale_somewhere = [g for g, fresh in enumerate(agreed[n:]) if not fresh]
        return unused_everywhere, stale_somewhere

    @torch.no_grad()
    def _write_back(self, g: int, flight: _InFlight, unused_everywhere: list[bool]) -> None:
        assert self.groups is not None
        group, flat = self.groups[g], self._buffers[g]
        self.compression.decompress(flight.wire, flat, self.world_size)
        for p, param, average in group.views(flat, self._params):
            if unused_everywhere[p]:
                continue  # no rank produced a gradient: leave .grad as it is (DDP does the same)
            if param.grad is None:
                param.grad = torch.empty_like(param).copy_(average)
            else:
                param.grad.copy_(average)

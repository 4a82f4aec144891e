"""Baseline for the scaling study: the grouped, overlapped reduction *with a coordinator*.

Why this exists
---------------
`train.grouped_allreduce.GroupedAllreduce` never asks anyone what to reduce: the grouping
learned in the first step is the response cache, groups launch in a fixed order during
backward, and one bit-vector MIN-allreduce per step agrees on unused/late gradients. Horovod
before its response cache (the scheme Laanait et al. 2019 replaced) ran a background
*negotiation cycle* instead: every `cycle_time` each rank sent rank 0 the list of tensors it
had ready, rank 0 intersected the lists and broadcast which (fused) tensors to reduce, and
only then did every rank launch them. Rank 0 handles P−1 messages per cycle, so its cost
grows with the number of ranks; that is the term the scaling model extrapolates.

To make the comparison fair, everything else is the same as in `GroupedAllreduce`: the same
ready order learned in the first backward, the same groups (`cut_into_groups`, same
`group_bytes`), one fused asynchronous allreduce per group on the same process group, the
same averaging. Only *who decides when a group goes* differs. It lives in `benchmarks/`,
not in the product: it is a measuring stick, and it supports only what the benchmark needs
(no `no_sync`, no compression; a parameter without a gradient is reduced as zeros).

The negotiation runs on a separate gloo process group (a side channel, as Horovod's MPI
control messages were separate from NCCL's data), in one background thread per rank:

    cycle:  rank r  --gather-->  rank 0 : uint8[n_params + 1]  (ready bits, "backward done")
            rank 0  --broadcast-> all   : uint8[n_groups + 1]  (launch bits, "step finished")
            every rank launches the flagged groups in index order, then sleeps the rest of
            `cycle_time_s` (Horovod's HOROVOD_CYCLE_TIME: 5 ms until v0.21, 1 ms after).

Counted per step: cycles, control collectives (2 a cycle), control bytes through rank 0
((P−1)·(n_params+1) received + (P−1)·(n_groups+1) sent a cycle), data collectives (groups).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn

from stemdl.train.allreduce_grouping import (
    Group,
    broadcast_ready_order,
    complete_order,
    cut_into_groups,
)

HOROVOD_CYCLE_TIME_S = 0.005  # Horovod's default before v0.21.0 (horovod/horovod#2468)


@dataclass
class CoordinatorStats:
    """Counters since construction (the first, grouping-learning step included in `steps`)."""

    groups: int = 0
    steps: int = 0
    cycles: int = 0  # negotiation cycles, all steps
    control_collectives: int = 0  # gather + broadcast per cycle
    control_bytes_rank0: int = 0  # bytes rank 0 received and sent on the side channel
    data_collectives: int = 0  # fused group allreduces
    launched_early: int = 0  # groups launched while this rank's backward was still running
    seconds_waited: float = 0.0  # in synchronize(), after backward


class CoordinatorAllreduce:
    """Average gradients over ranks; rank 0 decides each cycle which groups are reduced.

    Use exactly like `GroupedAllreduce`: `loss.backward(); reducer.synchronize(); step()`.
    Needs an initialized process group; call `close()` before the process group is destroyed.
    """

    def __init__(self, model: nn.Module, group_bytes: int,
                 cycle_time_s: float = HOROVOD_CYCLE_TIME_S,
                 process_group: dist.ProcessGroup | None = None) -> None:
        if not dist.is_initialized():
            raise RuntimeError("CoordinatorAllreduce needs an initialized process group")
        self._process_group = process_group or dist.group.WORLD
        # Every rank must create the side channel at the same point (new_group is collective).
        self._control = dist.new_group(backend="gloo")
        self.world_size = dist.get_world_size(self._process_group)
        self.rank = dist.get_rank(self._process_group)
        self.group_bytes = group_bytes
        self.cycle_time_s = cycle_time_s
        seen: set[int] = set()
        self._params: list[nn.Parameter] = []
        self._names: list[str] = []
        for name, param in model.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                self._params.append(param)
                self._names.append(name)
        with torch.no_grad():  # start from rank 0's weights, as GroupedAllreduce and DDP do
            for tensor in [*self._params, *model.buffers()]:
                dist.broadcast(tensor.data, src=dist.get_global_rank(self._process_group, 0),
                               group=self._process_group)
        self.stats = CoordinatorStats()
        self.groups: list[Group] | None = None
        self._buffers: list[torch.Tensor] = []
        self._ready_order: list[int] = []
        self._ready = [False] * len(self._params)
        self._backward_done = False
        self._works: list[dist.Work | None] = []
        self._lock = threading.Lock()
        self._step_started = threading.Event()
        self._step_finished = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._hooks = [p.register_post_accumulate_grad_hook(self._make_hook(i))
                       for i, p in enumerate(self._params)]

    # ----------------------------------------------------------------- public API

    def synchronize(self) -> None:
        """Finish this step's reduction: afterwards every `.grad` holds the average."""
        start = time.perf_counter()
        if self.groups is None:
            self._first_step()
        else:
            with self._lock:
                self._backward_done = True  # the next cycle reports it; missing grads are zeros
            self._step_started.set()  # a step with no gradient at all still negotiates
            self._step_finished.wait()
            self._step_finished.clear()
            if self._thread_error is not None:
                raise RuntimeError("coordinator thread failed") from self._thread_error
            for g, work in enumerate(self._works):
                assert work is not None
                work.wait()
                self._write_back(g)
        waited = time.perf_counter() - start
        self.stats.seconds_waited += waited
        self.stats.steps += 1
        self._ready = [False] * len(self._params)
        self._backward_done = False
        self._works = [None] * len(self.groups or [])

    def close(self) -> None:
        """Stop the negotiation thread and detach the hooks."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        if self._thread is not None:
            self._stop = True
            self._step_started.set()
            self._thread.join(timeout=30)
            self._thread = None

    def snapshot(self) -> CoordinatorStats:
        return replace(self.stats)

    # ----------------------------------------------------------------- first step

    def _first_step(self) -> None:
        """Learn the grouping exactly as GroupedAllreduce does, reduce every group, start."""
        order = complete_order(broadcast_ready_order(self._ready_order, self._process_group),
                               len(self._params))
        self.groups = cut_into_groups(order, self._params, group_bytes=self.group_bytes,
                                      num_groups=None)
        self._buffers = [torch.zeros(g.numel, dtype=g.dtype) for g in self.groups]
        self.stats.groups = len(self.groups)
        self._works = [None] * len(self.groups)
        for g in range(len(self.groups)):
            self._launch(g)
        for g, work in enumerate(self._works):
            assert work is not None
            work.wait()
            self._write_back(g)
        self._thread = threading.Thread(target=self._negotiate_forever, daemon=True,
                                        name=f"coordinator-rank{self.rank}")
        self._thread.start()

    # ----------------------------------------------------------------- hooks and cycles

    def _make_hook(self, index: int) -> Callable[[torch.Tensor], None]:
        def hook(_: torch.Tensor) -> None:
            if self.groups is None:
                self._ready_order.append(index)
                return
            with self._lock:
                self._ready[index] = True
            self._step_started.set()

        return hook

    def _negotiate_forever(self) -> None:
        try:
            while True:
                self._step_started.wait()
                if self._stop:
                    return
                self._negotiate_one_step()
                # Cleared only now: hooks of this step set it again while it ran, and the next
                # step's hooks fire only after synchronize() has seen `_step_finished`.
                self._step_started.clear()
                self._step_finished.set()
        except BaseException as error:  # surface it in synchronize() instead of hanging
            self._thread_error = error
            self._step_finished.set()

    def _negotiate_one_step(self) -> None:
        """Cycles until rank 0 says every group of this step has been launched."""
        assert self.groups is not None
        n, n_groups, world = len(self._params), len(self.groups), self.world_size
        root = dist.get_global_rank(self._control, 0)
        launched = [False] * n_groups
        while True:
            began = time.perf_counter()
            with self._lock:
                request = torch.tensor([*self._ready, self._backward_done], dtype=torch.uint8)
            if self.rank == 0:
                requests = [torch.empty_like(request) for _ in range(world)]
                dist.gather(request, gather_list=requests, dst=root, group=self._control)
                everyone = torch.stack(requests).min(dim=0).values.tolist()
                response = torch.zeros(n_groups + 1, dtype=torch.uint8)
                for g, group in enumerate(self.groups):
                    ready = everyone[n] or all(everyone[p] for p in group.members)
                    if not launched[g] and ready:
                        response[g] = 1
                        launched[g] = True
                response[n_groups] = all(launched)
            else:
                dist.gather(request, dst=root, group=self._control)
                response = torch.empty(n_groups + 1, dtype=torch.uint8)
            dist.broadcast(response, src=root, group=self._control)
            self.stats.cycles += 1
            self.stats.control_collectives += 2
            self.stats.control_bytes_rank0 += (world - 1) * (n + 1 + n_groups + 1)
            flags = response.tolist()
            with self._lock:
                early = not self._backward_done
            for g in range(n_groups):  # index order: identical on every rank
                if flags[g]:
                    launched[g] = True
                    self._launch(g)
                    self.stats.launched_early += early
            if flags[n_groups]:
                return
            rest = self.cycle_time_s - (time.perf_counter() - began)
            if rest > 0:
                time.sleep(rest)

    # ----------------------------------------------------------------- data path

    def _launch(self, g: int) -> None:
        assert self.groups is not None
        group, flat = self.groups[g], self._buffers[g]
        group.pack(flat, self._params, self._names)
        self._works[g] = dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self._process_group,
                                         async_op=True)
        self.stats.data_collectives += 1

    @torch.no_grad()
    def _write_back(self, g: int) -> None:
        assert self.groups is not None
        group, flat = self.groups[g], self._buffers[g]
        flat.div_(self.world_size)
        for _, param, average in group.views(flat, self._params):
            if param.grad is None:
                param.grad = average.clone()
            else:
                param.grad.copy_(average)
